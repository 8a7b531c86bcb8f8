"""The Python codec against the golden frames the Rust protocol crate
writes and reads (crates/protocol/golden/frames.txt)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import pytest

from multiloop import _protocol as proto

GOLDEN = Path(__file__).resolve().parents[2] / "crates/protocol/golden/frames.txt"


def golden() -> List[Tuple[str, bytes]]:
    frames = []
    for line in GOLDEN.read_text().splitlines():
        if line.startswith("#") or not line:
            continue
        name, hexed = line.split("\t")
        frames.append((name, bytes.fromhex(hexed)))
    return frames


def test_golden_file_is_of_our_protocol_version():
    assert f"# protocol version {proto.PROTOCOL_VERSION}\n" in GOLDEN.read_text()
    assert len(golden()) == 10


EXPECTED = {
    "hello": proto.Hello(pid=4242, kinds=["sim", "chaos"], runtime="python 3.11.7 asyncio"),
    "results_ok": [
        proto.TaskResult(7, 1234, ok=b'{"sum":45}'),
        proto.TaskResult(128, 0, ok=b"null", retry=True),
    ],
    "results_errors": [
        proto.TaskResult(1, 5_000_000, error_kind=proto.TIMEOUT, message="task took longer than 5000 ms"),
        proto.TaskResult(2, 10, error_kind=proto.FAILED, message="ValueError: bad \u00e9", retry=True),
        proto.TaskResult(3, 11, error_kind=proto.PANICKED, message="handler panicked: boom"),
        proto.TaskResult(4, 12, error_kind=proto.CRASHED, message=""),
        proto.TaskResult(5, 13, error_kind=proto.BAD_INPUT, message="missing field `iters`"),
    ],
    "results_added": [
        proto.TaskResult(
            9,
            77,
            ok=b"{}",
            added=[
                proto.Added(b'{"url":"https://a.example/x"}', "https://a.example/x"),
                proto.Added('"\u00e9t\u00e9"'.encode()),
            ],
        ),
        proto.TaskResult(10, 1, error_kind=proto.FAILED, message="no"),
    ],
    "heartbeat": proto.Heartbeat(150, 70_000, 1024, 1_000_000, 12_345_678, 52_428_800, None, 0),
    "heartbeat_held": proto.Heartbeat(
        31_000_000, 31_000_000, 3, 17, 31_500_000, 8_388_608, proto.Held(17, 31_000_000), 31_020_000
    ),
    "heartbeat_held_outside_task": proto.Heartbeat(held=proto.Held(None, 250_000)),
    "bye": proto.Usage(1_500_000, 250_000, 104_857_600),
}

TASKS = {
    "tasks": [(0, b'{"sleep_ms":1,"iters":10}'), (300, b"[1,2]"), (2**64 - 1, '"h\u00e9"'.encode())],
    "tasks_empty": [],
}


@pytest.mark.parametrize("name,frame", golden(), ids=[name for name, _ in golden()])
def test_golden_frame_decodes_and_encodes(name: str, frame: bytes):
    payload = frame[4:]
    assert int.from_bytes(frame[:4], "big") == len(payload)
    if name in TASKS:
        assert proto.decode_tasks(payload) == TASKS[name]
        assert proto.encode_tasks([proto.Task(i, p) for i, p in TASKS[name]]) == frame
    else:
        assert proto.decode_from_worker(payload) == EXPECTED[name]
        assert proto.encode_from_worker(EXPECTED[name]) == frame


def test_varints_round_trip_at_their_edges():
    for n in [0, 1, 127, 128, 255, 300, 2**32 - 1, 2**63, 2**64 - 1]:
        out = bytearray()
        proto.put_varint(out, n)
        assert proto.get_varint(bytes(out), 0) == (n, len(out))


def test_frame_reader_splits_a_stream_anywhere():
    frames = [f for _, f in golden()]
    stream = b"".join(frames)
    for step in (1, 3, 7, len(stream)):
        reader = proto.FrameReader()
        got = []
        for i in range(0, len(stream), step):
            got += reader.feed(stream[i : i + step])
        assert got == [f[4:] for f in frames]
        assert reader.buffered == 0


def test_a_frame_over_the_limit_is_refused_before_its_body_arrives():
    reader = proto.FrameReader(max_frame=1024)
    with pytest.raises(proto.ProtocolError, match="over the limit"):
        reader.feed((5000).to_bytes(4, "big"))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x01", b"\x00\x05", b"\x00\x01\x00\x09ab", b"\x00\x00junk", b"\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"],
)
def test_broken_task_frames_are_protocol_errors(payload: bytes):
    with pytest.raises(proto.ProtocolError):
        proto.decode_tasks(payload)
