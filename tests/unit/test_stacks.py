"""Reading a worker's stacks through ``/proc/<pid>/fd/<n>``: a descriptor that is no
longer the stack pipe (the app closed it and got the number back for another file) is
refused, never read without end."""

from __future__ import annotations

import os

import anyio
import pytest

from wsgipool._pool.stacks import read_stacks


class Handle:
    """What ``read_stacks`` reads of a worker, for a "worker" that is this process."""

    def __init__(self, stacks: int, dump: tuple[int, bytes] | None = None) -> None:
        self.id = 1
        self.pid = os.getpid()
        self.stacks = stacks
        self.stack_pipe = -1
        self.dumping = False
        self.signalled = False
        self.dump = dump  # what "the worker" writes, and where, when signalled

    def signal(self, sig: int) -> bool:
        self.signalled = True
        if self.dump is not None:
            os.write(*self.dump)
        return True


def stacks_of(handle: Handle) -> str | None:
    async def bounded() -> str | None:
        with anyio.fail_after(5):  # the read of /dev/zero never ended
            return await read_stacks(handle)

    return anyio.run(bounded)


@pytest.mark.parametrize("path", ["/dev/zero", __file__])
def test_a_descriptor_that_is_no_pipe_is_not_read(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        handle = Handle(fd)
        assert stacks_of(handle) is None
        assert not handle.signalled  # nothing asked of a worker whose pipe is gone
    finally:
        os.close(fd)


def test_a_dump_without_its_end_mark_is_read_once_the_pipe_is_quiet() -> None:
    read, write = os.pipe()
    try:
        handle = Handle(read, (write, b"x" * 60_000))  # a dump with no end mark
        text = stacks_of(handle)
        assert text == "x" * 60_000
    finally:
        for fd in (read, write):
            os.close(fd)
        if handle.stack_pipe >= 0:
            os.close(handle.stack_pipe)
