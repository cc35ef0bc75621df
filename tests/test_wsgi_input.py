"""``wsgi.input`` (InputStream) on its own: every read method, over chunks cut at every
place (empty chunks included), answers what ``io.BytesIO`` over the whole body answers,
pulls chunks only when a read needs them, and stays at EOF once there."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wsgipool._worker.wsgi import InputStream

BODY = b"first line\nsecond\n\n\nno newline at the end"


class Source:
    """The front's side: hands out ``chunks`` one per pull, then None (end of body)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.pulls = 0
        self.after_end = 0

    def pull(self) -> bytes | None:
        self.pulls += 1
        if not self.chunks:
            self.after_end += 1
            return None
        return self.chunks.pop(0)


def stream(chunks: list[bytes]) -> tuple[InputStream, Source]:
    source = Source(chunks)
    return InputStream(source.pull), source


def cuttings(data: bytes) -> Iterator[list[bytes]]:
    """``data`` as one chunk, cut in two at every place, and in three with an empty chunk."""
    yield [data]
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]
    for a, b in itertools.combinations(range(0, len(data) + 1, 3), 2):
        yield [data[:a], b"", data[a:b], data[b:], b""]


Op = Callable[[Any], object]

OPS: dict[str, Op] = {
    "read()": lambda f: f.read(),
    "read(-1)": lambda f: f.read(-1),
    "read(None)": lambda f: f.read(None),
    "read(0)": lambda f: f.read(0),
    "read(1)": lambda f: f.read(1),
    "read(5)": lambda f: f.read(5),
    "read(12)": lambda f: f.read(12),
    "read(1000)": lambda f: f.read(1000),
    "readline()": lambda f: f.readline(),
    "readline(-1)": lambda f: f.readline(-1),
    "readline(None)": lambda f: f.readline(None),
    "readline(0)": lambda f: f.readline(0),
    "readline(1)": lambda f: f.readline(1),
    "readline(4)": lambda f: f.readline(4),
    "readline(11)": lambda f: f.readline(11),
    "readline(12)": lambda f: f.readline(12),
    "readlines()": lambda f: f.readlines(),
    "readlines(0)": lambda f: f.readlines(0),
    "readlines(-1)": lambda f: f.readlines(-1),
    "readlines(None)": lambda f: f.readlines(None),
    "readlines(1)": lambda f: f.readlines(1),
    "readlines(11)": lambda f: f.readlines(11),
    "readlines(12)": lambda f: f.readlines(12),
    "iter": lambda f: list(f),
    "next": lambda f: next(iter(f), b"<end>"),
    "readinto(7)": lambda f: _readinto(f, 7),
    "readinto(0)": lambda f: _readinto(f, 0),
}

#: Sequences of reads, each run against every cutting of BODY.
PROGRAMS = [
    ["read()", "read()", "read(1)", "readline()", "readlines()"],
    ["read(-1)"],
    ["read(None)", "read(None)"],
    ["read(0)", "read(5)", "read(0)", "read(12)", "read(1000)", "read(1)"],
    ["read(1)"] * 50,
    ["readline()"] * 8,
    ["readline(None)", "readline(-1)", "readline(0)", "readline()"],
    ["readline(4)", "readline(4)", "readline(4)", "readline(4)", "readline(12)"],
    ["readline(1)", "readline(11)", "readline(12)", "readline(11)", "read()"],
    ["readlines()", "readlines()"],
    ["readlines(0)"],
    ["readlines(-1)"],
    ["readlines(None)"],
    ["readlines(1)", "readlines(11)", "readlines(12)", "readlines(1)"],
    ["read(5)", "iter"],
    ["next", "next", "next", "read()", "next"],
    ["readinto(7)"] * 8,
    ["readinto(0)", "readinto(7)", "readline()", "readinto(7)"],
]


def _readinto(f: Any, size: int) -> tuple[int, bytes]:
    buffer = bytearray(size)
    count = f.readinto(buffer)
    return count, bytes(buffer[:count])


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: ",".join(p))
def test_reads_match_bytesio_over_every_cutting(program: list[str]) -> None:
    reference = io.BytesIO(BODY)
    expected = [OPS[op](reference) for op in program]
    for chunks in cuttings(BODY):
        wsgi_input, _ = stream(chunks)
        got = [OPS[op](wsgi_input) for op in program]
        assert got == expected, chunks


def test_read_zero_pulls_nothing() -> None:
    wsgi_input, source = stream([b"abc"])
    assert wsgi_input.read(0) == b""
    assert wsgi_input.readline(0) == b""
    assert wsgi_input.readinto(bytearray(0)) == 0
    assert source.pulls == 0


def test_reads_pull_only_what_they_need() -> None:
    wsgi_input, source = stream([b"ab\ncd", b"ef\n", b"gh"])
    assert wsgi_input.read(2) == b"ab"
    assert source.pulls == 1
    assert wsgi_input.readline() == b"\n"  # still in the first chunk
    assert source.pulls == 1
    assert wsgi_input.readline() == b"cdef\n"
    assert source.pulls == 2
    assert wsgi_input.read() == b"gh"
    assert source.pulls == 4  # the last pull said "end of body"


def test_empty_chunks_are_skipped_not_taken_for_the_end() -> None:
    wsgi_input, source = stream([b"", b"", b"a", b"", b"\n", b"", b"b"])
    assert wsgi_input.readline() == b"a\n"
    assert wsgi_input.read(1) == b"b"
    assert wsgi_input.read(1) == b""
    assert source.after_end == 1


def test_eof_is_remembered() -> None:
    wsgi_input, source = stream([b"only"])
    assert wsgi_input.read() == b"only"
    for _ in range(3):
        assert wsgi_input.read() == b""
        assert wsgi_input.read(10) == b""
        assert wsgi_input.readline() == b""
        assert wsgi_input.readlines() == []
        assert list(wsgi_input) == []
        assert wsgi_input.readinto(bytearray(4)) == 0
    assert source.after_end == 1  # the front is asked past the end only once


def test_empty_body() -> None:
    wsgi_input, source = stream([])
    assert wsgi_input.read() == b""
    assert wsgi_input.readline() == b""
    assert list(wsgi_input) == []
    assert source.pulls == 1


def test_readinto_takes_any_writable_buffer() -> None:
    wsgi_input, _ = stream([b"abc", b"defgh"])
    into = memoryview(bytearray(4))
    assert wsgi_input.readinto(into) == 4
    assert bytes(into) == b"abcd"
    array = bytearray(10)
    assert wsgi_input.readinto(array) == 4
    assert array[:4] == b"efgh"


def test_a_whole_chunk_is_handed_on_without_a_copy() -> None:
    chunk = b"x" * 100_000
    wsgi_input, _ = stream([chunk])
    assert wsgi_input.read() is chunk
