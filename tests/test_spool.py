"""The spool on its own: chunks come out in the order and shape they went in, from memory,
the spool's own file and the spill file a worker writes, and the front-wide counts of
what is held in memory and on disk stay exact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from apps import open_files_in
from wsgipool._front.budget import BufferBudget
from wsgipool._front.spool import MEMORY_PER_SPOOL, Spool, SpoolError


def drain(spool: Spool) -> list[bytes]:
    return list(iter(spool.get, None))


def open_files(directory: Path) -> int:
    return len(open_files_in(str(directory)))


def test_small_chunks_stay_in_memory(tmp_path: Path) -> None:
    budget = BufferBudget(1 << 20)
    spool = Spool(budget, str(tmp_path))
    for chunk in (b"a", b"", b"bc"):
        spool.put(chunk)
    assert (spool.size, budget.used, budget.on_disk, spool.on_disk) == (3, 3, 0, False)
    assert drain(spool) == [b"a", b"", b"bc"]
    assert (spool.size, budget.used) == (0, 0)
    assert open_files(tmp_path) == 0  # no file was needed


def test_past_its_memory_share_a_spool_writes_to_a_file(tmp_path: Path) -> None:
    budget = BufferBudget(64 << 20)
    spool = Spool(budget, str(tmp_path))
    chunks = [bytes([n]) * 300_000 for n in range(8)]  # 2.4 MB: past MEMORY_PER_SPOOL
    for chunk in chunks:
        spool.put(chunk)
    in_memory = MEMORY_PER_SPOOL // 300_000 * 300_000
    assert spool.on_disk
    assert budget.on_disk == len(chunks) * 300_000 - in_memory
    assert drain(spool) == chunks
    assert (budget.used, budget.on_disk, spool.size) == (0, 0, 0)
    assert open_files(tmp_path) == 1
    spool.close()
    assert open_files(tmp_path) == 0


def test_with_the_budget_spent_chunks_go_to_the_file(tmp_path: Path) -> None:
    budget = BufferBudget(0)
    spool = Spool(budget, str(tmp_path))
    spool.put(b"x" * 10)
    assert spool.on_disk
    assert (budget.used, budget.on_disk) == (0, 10)
    spool.put(b"y")
    assert drain(spool) == [b"x" * 10, b"y"]
    spool.close()


def test_spilled_chunks_are_read_from_the_spill_file_in_order(tmp_path: Path) -> None:
    budget = BufferBudget(0)
    spool = Spool(budget, str(tmp_path))
    spool.put(b"own-1")
    fd = spool.spill_file()
    assert spool.spill_file() == fd  # made once
    # What a worker does with the file it was named: writes from its start, says how much.
    with open(f"/proc/self/fd/{fd}", "wb", buffering=0) as worker_end:
        worker_end.write(b"spill-1spill-22")
    spool.adopt(7)
    spool.adopt(8)
    spool.put(b"own-2")  # a chunk that came through the pipe after the spill ended
    assert (spool.size, budget.on_disk) == (25, 25)
    assert drain(spool) == [b"own-1", b"spill-1", b"spill-22", b"own-2"]
    assert (budget.used, budget.on_disk) == (0, 0)
    spool.close()
    assert open_files(tmp_path) == 0


def test_close_forgets_what_is_held_and_frees_both_files(tmp_path: Path) -> None:
    budget = BufferBudget(1 << 20)
    spool = Spool(budget, str(tmp_path))
    spool.put(b"m" * 1000)
    spool.put(b"d" * MEMORY_PER_SPOOL)  # past the spool's share: to the file
    spool.spill_file()
    spool.adopt(100)
    assert open_files(tmp_path) == 2
    spool.close()
    spool.close()  # idempotent
    assert (budget.used, budget.on_disk, spool.size) == (0, 0, 0)
    assert open_files(tmp_path) == 0
    assert spool.get() is None


def test_a_spill_file_that_ends_early_is_a_spool_error(tmp_path: Path) -> None:

    spool = Spool(BufferBudget(0), str(tmp_path))
    spool.spill_file()
    spool.adopt(10)  # a worker said 10 bytes, wrote none
    with pytest.raises(SpoolError, match="ended early"):
        spool.get()
    spool.close()


def test_hand_over_names_the_file_part_of_a_request_body(tmp_path: Path) -> None:
    budget = BufferBudget(4)
    spool = Spool(budget, str(tmp_path))
    spool.put(b"abc")
    spool.put(b"defgh")  # over the budget: the file
    chunks, region = spool.hand_over()
    assert chunks == [b"abc"]
    assert region is not None
    fd, offset, size = region
    assert os.pread(fd, size, offset) == b"defgh"
    assert (budget.used, budget.on_disk, spool.size) == (0, 0, 0)
    spool.close()


def test_a_body_spool_joins_small_chunks_in_memory_and_on_disk(tmp_path: Path) -> None:
    # A request body may come as millions of 1-byte messages: a spool that keeps no
    # boundaries holds them as a few large pieces, not one object (or file region) each.
    budget = BufferBudget(64 << 20)
    spool = Spool(budget, str(tmp_path), merge=True)
    data = bytes(range(256)) * 12_000  # 3 MB, past MEMORY_PER_SPOOL
    for start in range(0, len(data), 100):
        spool.put(data[start : start + 100])
    chunks = drain(spool)
    assert b"".join(chunks) == data
    assert all(type(chunk) is bytes for chunk in chunks)
    assert len(chunks) <= len(data) // (64 * 1024) + 4  # 64 KiB pieces in memory, 1 MiB on disk
    assert (spool.size, budget.used, budget.on_disk) == (0, 0, 0)
    spool.close()


def test_a_merged_body_is_handed_over_whole(tmp_path: Path) -> None:
    budget = BufferBudget(64 << 20)
    spool = Spool(budget, str(tmp_path), merge=True)
    data = os.urandom(MEMORY_PER_SPOOL + 5000)
    for start in range(0, len(data), 1000):
        spool.put(data[start : start + 1000])
    chunks, region = spool.hand_over()
    assert region is not None
    fd, offset, size = region
    assert b"".join(chunks) + os.pread(fd, size, offset) == data
    spool.close()


def test_get_with_a_limit_splits_a_chunk_and_keeps_the_rest_first(tmp_path: Path) -> None:
    budget = BufferBudget(1 << 20)
    spool = Spool(budget, str(tmp_path))
    spool.put(b"abcdefgh")
    spool.put(b"ij")
    assert (spool.get(3), spool.split) == (b"abc", True)
    assert (spool.get(3), spool.split) == (b"def", True)
    assert (spool.get(3), spool.split) == (b"gh", False)
    assert budget.used == 2  # the first chunk's memory is given back once it is all out
    assert (spool.get(), spool.size, budget.used) == (b"ij", 0, 0)


def test_spilled_chunks_merge_and_are_read_in_pieces(tmp_path: Path) -> None:
    budget = BufferBudget(0)
    spool = Spool(budget, str(tmp_path))
    fd = spool.spill_file()
    data = os.urandom(300_000)
    os.pwrite(fd, data, 0)
    merged = [spool.adopt(100_000, merge=True) for _ in range(3)]
    assert merged == [False, True, True]  # one entry for three contiguous chunks
    assert budget.on_disk == spool.size == 300_000
    pieces = []
    while (piece := spool.get(64 * 1024)) is not None:
        pieces.append(piece)
    assert b"".join(pieces) == data
    assert max(map(len, pieces)) == 64 * 1024
    assert (spool.size, budget.on_disk) == (0, 0)
    spool.close()
