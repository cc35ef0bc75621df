"""The front-wide disk budget on its own: responses with a real spool (files under the
test's ``tmp_path``), a fake client side, no worker or server. Who pays when a write
would pass the budget: the response whose client would take longest to read what it
holds at its pace so far, whether it asks or not; a request body is refused."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wsgipool._config import Config
from wsgipool._front.budget import BufferBudget, disk_budget
from wsgipool._front.guard import Refusals
from wsgipool._front.response import Response
from wsgipool._front.spool import DiskBudgetSpent, Spool
from wsgipool._serve.edge import Sheddable
from wsgipool._wire import frames as proto

MIB = 1024 * 1024
CHUNK = b"x" * (256 * 1024)


@dataclass
class Client:
    config: Config
    budget: BufferBudget
    refusals: Refusals = field(default_factory=Refusals)
    client: object = None
    disconnected: bool = False
    refused_with: int = 0
    failure: BaseException | None = None
    request_line: str = "GET /big"
    shares_files: bool = True


def streamed(budget: BufferBudget, tmp_path: Path, age: float = 0.0) -> Response:
    """A response on its streamed path, begun ``age`` seconds ago."""
    config = Config.from_options({"workers": 1, "buffer_dir": str(tmp_path)})
    response = Response(Client(config, budget))
    response.take([proto.Start(200, [])])
    response.stream()
    response._began -= age
    return response


def fill(response: Response, size: int) -> None:
    for _ in range(size // len(CHUNK)):
        response.take([proto.Body(CHUNK)])


def test_the_reader_furthest_behind_pays_not_the_one_asking(tmp_path: Path) -> None:
    budget = BufferBudget(0, disk_limit=4 * MIB)  # no memory: every byte on disk
    stalled = streamed(budget, tmp_path, age=10)  # holds 3 MiB, has read nothing in 10 s
    fill(stalled, 3 * MIB)
    fresh = streamed(budget, tmp_path)
    fill(fresh, 2 * MIB)  # would pass the budget: the stalled one is cut for it
    assert stalled.client.disconnected
    assert stalled.shed_for_disk
    assert stalled.spool is not None
    assert stalled.spool.size == 0
    assert not fresh.client.disconnected
    assert budget.on_disk == 2 * MIB <= budget.disk_limit
    assert stalled.client.refusals.connections == {"disk budget": 1}
    fresh.close()
    stalled.close()
    assert budget.on_disk == 0
    assert not budget.holders


def test_a_client_that_keeps_up_is_not_cut_the_asker_pays(tmp_path: Path) -> None:
    budget = BufferBudget(0, disk_limit=4 * MIB)
    keeping_up = streamed(budget, tmp_path, age=1)
    fill(keeping_up, 3 * MIB)
    while keeping_up.spool is not None and keeping_up.spool.size > MIB:
        keeping_up.next()  # 2 MiB read in a second: it keeps up
        keeping_up.sent()
    stalled = streamed(budget, tmp_path, age=10)
    fill(stalled, 4 * MIB)  # it reads nothing: past the budget it pays itself
    assert stalled.client.disconnected
    assert not keeping_up.client.disconnected
    assert budget.on_disk <= 4 * MIB


def test_a_request_body_is_refused_when_no_response_can_pay(tmp_path: Path) -> None:
    budget = BufferBudget(0, disk_limit=MIB)
    body = Spool(budget, str(tmp_path), merge=True)
    body.put(b"a" * MIB)
    with pytest.raises(DiskBudgetSpent):
        body.put(b"a")
    body.close()
    assert budget.on_disk == 0


def test_a_worker_is_granted_a_share_of_the_room_left(tmp_path: Path) -> None:
    budget = BufferBudget(0, disk_limit=64 * MIB)
    spool = Spool(budget, str(tmp_path))
    assert spool.reserve(1024 * MIB) == 16 * MIB  # a quarter of what is left
    assert budget.disk_room() == 48 * MIB
    spool.adopt(MIB)  # what the worker wrote comes out of the reservation
    assert (budget.on_disk, budget.reserved) == (MIB, 15 * MIB)
    spool.close()
    assert (budget.on_disk, budget.reserved) == (0, 0)


def test_the_disk_budget_fits_the_free_space(tmp_path: Path) -> None:
    assert disk_budget(None, str(tmp_path)) is None
    assert disk_budget(MIB, str(tmp_path)) == MIB
    assert disk_budget(1 << 60, str(tmp_path)) < 1 << 60  # no disk has an exbibyte free


class Conn:
    pass


def test_what_makes_room_at_the_bound() -> None:
    """Refused first, then the head begun longest ago, then the slowest upload under the
    floor; None when all do real work."""
    a, b, c, d = Conn(), Conn(), Conn(), Conn()
    found = Sheddable()
    found.consider_upload(a, rate=10.0, floor=240)
    found.consider_upload(b, rate=5.0, floor=240)
    found.consider_upload(c, rate=10_000.0, floor=240)  # a fair upload: real work
    assert found.pick() == (b, "shed upload")
    found.consider_head(c, since=time.monotonic())
    found.consider_head(d, since=time.monotonic() - 5)
    assert found.pick() == (d, "shed head")
    found.refused = a
    assert found.pick() == (a, "shed refused")
    fair = Sheddable()
    fair.consider_upload(c, rate=10_000.0, floor=240)
    assert fair.pick() is None
