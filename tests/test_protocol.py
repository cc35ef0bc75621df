"""The frame reader over a real pipe: buffer growth and compaction, frames split across
reads, and every kind of malformed frame; frames built by the helpers both sides use."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator

import msgpack
import pytest

from wsgipool._errors import ProtocolError
from wsgipool._wire import frames as proto
from wsgipool._wire.reader import FrameReader


class Pipe:
    """A real pipe; the write end may be closed early (EOF for the reader)."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()

    def close_writer(self) -> None:
        os.close(self.wfd)
        self.wfd = -1


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    pipe = Pipe()
    yield pipe
    os.close(pipe.rfd)
    if pipe.wfd >= 0:
        os.close(pipe.wfd)


def raw(kind: int, payload: bytes) -> bytes:
    """A frame with any payload, well-formed or not."""
    return struct.pack(">IB", len(payload), kind) + payload


def fields(kind: int, *values: object) -> bytes:
    return raw(kind, msgpack.packb(list(values), use_bin_type=True))


def read_all(reader: FrameReader, rfd: int) -> tuple[list[proto.Frame], int]:
    """Read until the end of the pipe: the frames, and the largest the buffer was."""
    frames: list[proto.Frame] = []
    largest = reader.capacity
    while True:
        try:
            frames += reader.read_from(rfd)
        except EOFError:
            return frames, largest
        largest = max(largest, reader.capacity)


def write_then_close(pipe: Pipe, data: bytes) -> threading.Thread:
    """Write all of ``data`` from a thread (more than a pipe holds), then close."""

    def run() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(pipe.wfd, view) :]
        pipe.close_writer()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


SAMPLE = [
    (proto.start_frame(200, [(b"content-type", b"text/plain")]),
     proto.Start(200, [(b"content-type", b"text/plain")])),
    (b"".join(proto.body_frames(b"hello")), proto.Body(b"hello")),
    (b"".join(proto.body_frames(b"")), proto.Body(b"")),
    (proto.pack(proto.LOG, 30, "a line"), proto.Log(30, "a line")),
    (proto.END_FRAME, proto.End()),
    (proto.pack(proto.READY, 1234, 5), proto.Ready(1234, 5)),
    (proto.pack(proto.FAILED, "boom", "tb"), proto.Failed("boom", "tb")),
    (proto.pack(proto.ERROR, "failed", None), proto.Error("failed", None)),
    (proto.pack(proto.ERROR, "failed", b"\x80"), proto.Error("failed", b"\x80")),
    (proto.request_frame({"PATH_INFO": "/"}), proto.Request({"PATH_INFO": "/"})),
    (proto.EOF_FRAME, proto.Eof()),
    (proto.ABORT_FRAME, proto.Abort()),
]  # fmt: skip
SAMPLE_BYTES = b"".join(data for data, _ in SAMPLE)
SAMPLE_FRAMES = [frame for _, frame in SAMPLE]


def test_every_kind_round_trips(pipe: Pipe) -> None:
    rfd, wfd = pipe.rfd, pipe.wfd
    hello: proto.Hello = {"app": ["apps", "hello"], "sys_path": ["/x"], "worker_id": 3,
                          "log_level": "INFO", "fork_fd": 7}  # fmt: skip
    os.write(wfd, proto.hello_frame(hello) + SAMPLE_BYTES)
    frames = FrameReader().read_from(rfd)
    assert frames == [proto.HelloFrame(hello), *SAMPLE_FRAMES]


def test_frames_split_across_reads_at_every_byte(pipe: Pipe) -> None:
    rfd, wfd = pipe.rfd, pipe.wfd
    for cut in range(1, len(SAMPLE_BYTES)):
        reader = FrameReader()
        os.write(wfd, SAMPLE_BYTES[:cut])
        frames = reader.read_from(rfd)
        os.write(wfd, SAMPLE_BYTES[cut:])
        frames += reader.read_from(rfd)
        assert frames == SAMPLE_FRAMES, cut


def test_frames_one_byte_per_read(pipe: Pipe) -> None:
    rfd, wfd = pipe.rfd, pipe.wfd
    reader = FrameReader()
    frames = []
    for byte in SAMPLE_BYTES:
        os.write(wfd, bytes([byte]))
        frames += reader.read_from(rfd)
    assert frames == SAMPLE_FRAMES


def test_partial_frames_are_compacted_without_growing(pipe: Pipe) -> None:
    # 1005-byte frames written 60000 bytes at a time: nearly every read ends inside a
    # frame, and far more than the buffer's size passes through it.
    rfd, wfd = pipe.rfd, pipe.wfd
    bodies = [bytes([i % 251]) * 1000 for i in range(2000)]
    stream = b"".join(b"".join(proto.body_frames(body)) for body in bodies)
    assert len(stream) > 4 * FrameReader.SIZE
    reader = FrameReader()
    frames: list[proto.Frame] = []
    for start in range(0, len(stream), 60000):
        os.write(wfd, stream[start : start + 60000])
        frames += reader.read_from(rfd)
        assert reader.capacity == FrameReader.SIZE
    assert frames == [proto.Body(body) for body in bodies]


def test_buffer_grows_for_a_large_frame_and_shrinks_back(pipe: Pipe) -> None:
    rfd = pipe.rfd
    big = os.urandom(FrameReader.SHRINK_ABOVE + 12345)
    data = b"".join(proto.body_frames(big)) + proto.END_FRAME
    writer = write_then_close(pipe, data)
    reader = FrameReader()
    frames, largest = read_all(reader, rfd)
    writer.join()
    assert frames == [proto.Body(big), proto.End()]
    assert largest >= len(big) + 5
    assert reader.capacity == FrameReader.SIZE


def test_frame_at_the_limit_is_read_one_over_is_refused(pipe: Pipe) -> None:
    rfd, wfd = pipe.rfd, pipe.wfd
    reader = FrameReader(max_frame=1000)
    os.write(wfd, raw(proto.BODY, b"x" * 1000))
    assert reader.read_from(rfd) == [proto.Body(b"x" * 1000)]
    os.write(wfd, struct.pack(">IB", 1001, proto.BODY))  # the header alone is enough
    with pytest.raises(ProtocolError, match="exceeds the 1000 byte limit"):
        reader.read_from(rfd)


def test_spill_frames_round_trip() -> None:
    frames = FrameReader().feed(proto.spill_frame("/proc/7/fd/9", 1 << 30) + proto.spilled_frame(5))
    assert frames == [proto.Spill("/proc/7/fd/9", 1 << 30), proto.Spilled(5)]


def test_body_larger_than_a_chunk_is_split_into_frames() -> None:
    body = os.urandom(proto.MAX_CHUNK + 10)
    pieces = proto.body_frames(body)
    assert len(pieces) == 4  # two headers, two parts
    frames = FrameReader().feed(b"".join(pieces))
    assert frames == [proto.Body(body[: proto.MAX_CHUNK]), proto.Body(body[proto.MAX_CHUNK :])]


MALFORMED = {
    "unknown kind": (raw(99, b""), "unknown frame kind 99"),
    "oversized length": (struct.pack(">IB", proto.MAX_FRAME + 1, proto.BODY), "exceeds"),
    "bad msgpack": (raw(proto.START, b"\xc1"), "undecodable"),
    "truncated msgpack": (raw(proto.LOG, b"\x92\x14"), "undecodable"),
    "not an array": (raw(proto.LOG, msgpack.packb({"level": 20})), "malformed frame payload"),
    "missing field": (fields(proto.LOG, 20), "LOG frame with 1 fields, expected 2"),
    "extra field": (fields(proto.READY, 1, 2, 3), "READY frame with 3 fields, expected 2"),
    "no fields": (fields(proto.ERROR), "ERROR frame with 0 fields"),
    "level not int": (fields(proto.LOG, "20", "x"), "LOG frame field of type str"),
    "message not str": (fields(proto.LOG, 20, b"x"), "LOG frame field of type bytes"),
    "pid bool": (fields(proto.READY, True, 5), "READY frame field of type bool"),
    "environ not a map": (fields(proto.REQUEST, ["PATH_INFO"]), "REQUEST frame field"),
    "hello not a map": (fields(proto.HELLO, 1), "HELLO frame field"),
    "failed traceback": (fields(proto.FAILED, "boom", None), "FAILED frame field"),
    "status str": (fields(proto.START, "200", []), "bad status"),
    "status out of range": (fields(proto.START, 42, []), "bad status"),
    "headers not a list": (fields(proto.START, 200, 5), "malformed headers"),
    "header not a pair": (fields(proto.START, 200, [[b"a"]]), "malformed headers"),
    "header str": (fields(proto.START, 200, [["a", "b"]]), "header not bytes"),
    "payload on END": (raw(proto.END, b"\x90"), "unexpected payload"),
    "payload on EOF": (raw(proto.EOF, b"x"), "unexpected payload"),
    "payload on ABORT": (raw(proto.ABORT, b"x"), "unexpected payload"),
    "spill allowance str": (fields(proto.SPILL, "/proc/1/fd/3", "9"), "SPILL frame field"),
    "spilled nothing": (fields(proto.SPILLED, 0), "SPILLED frame of 0 bytes"),
    "spilled too much": (fields(proto.SPILLED, proto.MAX_CHUNK + 1), "SPILLED frame of"),
    "spilled negative": (fields(proto.SPILLED, -5), "SPILLED frame of -5 bytes"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_frame_is_a_protocol_error(pipe: Pipe, case: str) -> None:
    rfd, wfd = pipe.rfd, pipe.wfd
    data, message = MALFORMED[case]
    os.write(wfd, proto.END_FRAME + data)
    with pytest.raises(ProtocolError, match=message):
        FrameReader().read_from(rfd)


def test_end_of_pipe_is_eof(pipe: Pipe) -> None:
    rfd, wfd = pipe.rfd, pipe.wfd
    reader = FrameReader()
    os.write(wfd, proto.END_FRAME + proto.END_FRAME[:3])
    assert reader.read_from(rfd) == [proto.End()]
    pipe.close_writer()
    with pytest.raises(EOFError):
        reader.read_from(rfd)


def test_nonblocking_pipe_with_nothing_to_read(pipe: Pipe) -> None:
    rfd = pipe.rfd
    os.set_blocking(rfd, False)
    with pytest.raises(BlockingIOError):
        FrameReader().read_from(rfd)


def test_fork_messages() -> None:
    assert proto.read_fork_request(proto.fork_request(7)) == 7
    assert proto.read_fork_reply(proto.fork_reply(7, 4321)) == (7, 4321)
    with pytest.raises(ProtocolError, match="malformed fork reply"):
        proto.read_fork_reply(b"\x00\x01")
