"""The corked transport of ``wsgipool serve``'s edge, on a real socket: what is written
arrives whole and in order, whether writes are joined, alone in their loop iteration,
large, or followed at once by a close."""

from __future__ import annotations

import asyncio
import socket

import pytest

from wsgipool._serve.corked import JOIN_UP_TO, CorkedTransport


async def corked_pair() -> tuple[CorkedTransport, socket.socket]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    theirs.setblocking(False)
    return CorkedTransport(transport, loop), theirs


async def read_until_closed(peer: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while chunk := await loop.sock_recv(peer, 1 << 20):
        data += chunk
    return bytes(data)


@pytest.mark.parametrize(
    "writes",
    [
        [b"head", b"body"],  # a small response: joined
        [b"head", b"x" * JOIN_UP_TO],  # too large to join: both, in order
        [b"x" * (JOIN_UP_TO + 1), b"tail"],  # a large write first
        [b"a", b"b", b"c", b"d", b"e"],  # pairs joined, the last one alone
        [b"", b"head", b"", b"body"],  # empty writes
        [memoryview(b"view"), bytearray(b"array")],
    ],
)
def test_writes_arrive_whole_and_in_order(writes: list[bytes]) -> None:
    async def main() -> bytes:
        transport, peer = await corked_pair()
        reading = asyncio.ensure_future(read_until_closed(peer))
        for data in writes:
            transport.write(data)
        transport.close()  # at once: what waits leaves first
        with peer:
            return await asyncio.wait_for(reading, 10)

    assert asyncio.run(main()) == b"".join(bytes(data) for data in writes)


def test_a_write_alone_in_its_iteration_leaves_at_its_end() -> None:
    async def main() -> bytes:
        transport, peer = await corked_pair()
        transport.write(b"100 continue")
        assert transport.get_write_buffer_size() == len(b"100 continue")  # held
        await asyncio.sleep(0)  # the iteration ends
        await asyncio.sleep(0)
        with peer:
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(peer, 100), 10)
        transport.abort()
        await asyncio.sleep(0)  # the transport closes its socket
        return data

    assert asyncio.run(main()) == b"100 continue"


def test_the_buffer_a_caller_reuses_is_copied_while_held() -> None:
    async def main() -> bytes:
        transport, peer = await corked_pair()
        reading = asyncio.ensure_future(read_until_closed(peer))
        buffer = bytearray(b"first")
        transport.write(buffer)
        buffer[:] = b"XXXXX"
        transport.close()
        with peer:
            return await asyncio.wait_for(reading, 10)

    assert asyncio.run(main()) == b"first"
