"""The front's handle on the preload template, which forks workers on request.

With ``preload=True`` one process imports the app once; each worker is then a fork of it.
The front never forks: it creates the new worker's two pipes itself and hands their far
ends to the template over a unix socket (SCM_RIGHTS); the reply is the new worker's pid.
"""

from __future__ import annotations

import contextlib
import os
import socket

import anyio

from .._errors import ProtocolError, WorkerStartError
from .._wire import frames as proto
from .process import ForkedChild, WorkerProcess
from .spawner import channel_pipes


class Template(WorkerProcess):
    """The preload template: it imported the app once and forks workers on request.

    Fork requests travel over a unix socket, carrying the new worker's two pipe ends as
    SCM_RIGHTS; the reply is the new pid. The front itself never forks.
    """

    sock: socket.socket
    forking = False

    @classmethod
    async def start(cls, hello: proto.Hello, env: dict[str, str] | None) -> Template:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            hello = {**hello, "fork_fd": theirs.fileno()}
            template = await cls.spawn(0, hello, env, pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        template.sock = ours
        return template

    async def fork(self, worker_id: int) -> WorkerProcess:
        """A new worker forked from the template, with its own pair of pipes.

        Replies carry the worker id they answer, so a reply left over from a fork request
        that was cancelled or timed out is skipped, never taken for this one's.
        """
        while self.forking:  # one request at a time
            await anyio.sleep(0.005)
        self.forking = True
        ends: tuple[int, ...] = ()
        try:
            ends = to_child_r, to_child_w, from_child_r, from_child_w = channel_pipes()
            socket.send_fds(self.sock, [proto.fork_request(worker_id)], [to_child_r, from_child_w])
            with anyio.fail_after(30):
                pid = await self._reply_for(worker_id)
        except BaseException as exc:
            for fd in ends:  # the orphaned child, if any, sees EOF and exits
                os.close(fd)
            if isinstance(exc, (OSError, TimeoutError, ProtocolError)):
                raise WorkerStartError(f"the preload template did not fork: {exc}") from exc
            raise
        finally:
            self.forking = False
        os.close(to_child_r)  # the child's ends, now the child's alone
        os.close(from_child_w)
        worker = WorkerProcess(worker_id, ForkedChild(pid), from_child_r, to_child_w)
        worker.template = self
        return worker

    async def _reply_for(self, worker_id: int) -> int:
        while True:
            await anyio.wait_readable(self.sock)
            reply = self.sock.recv(16)
            if not reply:
                raise OSError("the preload template closed its socket")
            answered, pid = proto.read_fork_reply(reply)
            if answered == worker_id:
                return pid

    def close_pipes(self) -> None:
        super().close_pipes()
        with contextlib.suppress(AttributeError):
            self.sock.close()
