"""The worker's interrupt at a timeout, as its handler sees it: raised only while the app
runs, once per request, and never in the middle of a write to the channel (held until the
write is done). The handler is called as Python would call it, in this thread."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from wsgipool import RequestTimeout
from wsgipool._worker.debug import Signals


@pytest.fixture
def signals() -> Iterator[Signals]:
    made = Signals()
    yield made
    os.close(made.read_fd)
    os.close(made.write_fd)


def interrupt(signals: Signals) -> None:
    signals._interrupt(signal.SIGUSR1, None)


def test_raised_only_while_the_app_runs_and_once(signals: Signals) -> None:
    interrupt(signals)  # between requests: nothing
    signals.arm()
    with pytest.raises(RequestTimeout):
        interrupt(signals)
    interrupt(signals)  # once per request
    signals.disarm()
    signals.arm()  # the next request may be interrupted again
    with pytest.raises(RequestTimeout):
        interrupt(signals)


def test_held_during_a_write_and_raised_when_it_is_done(signals: Signals) -> None:
    signals.arm()
    assert signals.hold()
    interrupt(signals)  # mid-write: not now
    with pytest.raises(RequestTimeout):
        signals.release()
    assert signals.hold()
    signals.release()  # raised once only


def test_a_write_after_the_app_is_done_drops_a_held_interrupt(signals: Signals) -> None:
    signals.arm()
    assert signals.hold()
    interrupt(signals)
    signals.disarm()  # e.g. the write that ends the response, after the app returned
    signals.release()


def test_another_threads_write_holds_nothing(signals: Signals) -> None:
    held: list[bool] = []
    thread = threading.Thread(target=lambda: held.append(signals.hold()))
    thread.start()
    thread.join()
    assert held == [False]
    assert not signals.held


def test_the_stack_pipe_never_blocks_the_worker(signals: Signals) -> None:
    assert not os.get_blocking(signals.write_fd)
