"""The asyncio pipe reader on a real pipe: frames that come before their reader.

The pool writes a queued request into its worker's pipe as it hands the worker over, so
an answer can arrive before the request's task reads. It must wait, whole, for that read,
and the reader must read no further meanwhile: the rest stays in the pipe, which is what
holds back a worker whose consumer is slow.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
from collections.abc import Callable

from wsgipool._errors import WorkerGoneError
from wsgipool._pool.readers import AsyncioPipeReader
from wsgipool._wire import frames as proto


def in_pipe(fd: int) -> int:
    """Bytes written to the pipe and not read yet."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


async def spin_until(done: Callable[[], bool], turns: int = 1000) -> None:
    """Let the loop run its callbacks until ``done()`` holds (bounded, never timed)."""
    for _ in range(turns):
        if done():
            return
        await asyncio.sleep(0)


def test_an_answer_before_its_reader_waits_and_holds_the_rest_back() -> None:
    async def test() -> None:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        reader = AsyncioPipeReader(rfd, "worker 1")
        try:
            first = proto.start_frame(200, []) + proto.END_FRAME
            assert await reader.read(0) is None  # registers with the loop; nothing yet
            os.write(wfd, first)
            await spin_until(lambda: in_pipe(rfd) == 0)  # read by the loop, unasked
            second = b"".join(bytes(p) for p in proto.body_frames(b"later"))
            os.write(wfd, second)
            await spin_until(lambda: False, 50)  # the loop has every chance to read it
            assert in_pipe(rfd) == len(second)  # it did not: nobody took the first yet
            frames = await reader.read(1)
            assert [type(f) for f in frames or []] == [proto.Start, proto.End]
            frames = await reader.read(1)
            assert [type(f) for f in frames or []] == [proto.Body]
            os.close(wfd)
            wfd = -1
            try:
                await reader.read(1)
            except WorkerGoneError:
                pass
            else:
                raise AssertionError("the end of the pipe was not reported")
        finally:
            reader.close()
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)

    asyncio.run(asyncio.wait_for(test(), 10))
