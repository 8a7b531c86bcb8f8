"""The wire protocol in pure Python: postcard frames on fds 3 and 4.

This is the twin of the Rust crate ``multiloop-protocol``: a frame is a
4-byte big-endian length and a postcard payload (unsigned integers as
LEB128 varints, enums as a varint variant index, sequences and byte strings
with a varint length, ``Option`` and ``bool`` as one byte). Both
implementations encode and decode the same golden frames
(``crates/protocol/golden/frames.txt``), so they cannot drift apart.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union

#: Version of the wire protocol; must equal ``PROTOCOL_VERSION`` in Rust.
PROTOCOL_VERSION = 3

#: Bytes of the big-endian length prefix in front of every frame.
LENGTH_PREFIX = 4

#: Frame limit when none is configured (the supervisor always passes one).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024

#: File descriptor on which a worker reads task frames.
TASK_FD = 3

#: File descriptor on which a worker writes result frames.
RESULT_FD = 4

# ErrorKind variants, in the order of the Rust enum.
TIMEOUT, FAILED, PANICKED, CRASHED, BAD_INPUT = range(5)
ERROR_KINDS = ("timeout", "failed", "panicked", "crashed", "bad_input")

_LENGTH = struct.Struct(">I")

#: Postcard's worst case around a batch, a task, and an added task (as the
#: Rust crate's ``BATCH_OVERHEAD``, ``TASK_OVERHEAD``, ``ADDED_OVERHEAD``).
BATCH_OVERHEAD = 5 + 10
TASK_OVERHEAD = 10 + 10
ADDED_OVERHEAD = 10 + 1 + 10


def max_task_payload(max_frame: int) -> int:
    """The longest task payload that fits a frame of ``max_frame`` bytes alone."""
    return max(0, max_frame - BATCH_OVERHEAD - TASK_OVERHEAD)


class ProtocolError(Exception):
    """A frame that is too long, truncated or does not decode."""


# -- messages ---------------------------------------------------------------


@dataclass
class Task:
    """One task: the supervisor's id and the input line as JSON bytes."""

    id: int
    payload: bytes


@dataclass
class Hello:
    """A worker's handshake: the first frame it sends."""

    pid: int
    kinds: List[str]
    runtime: str
    version: int = PROTOCOL_VERSION


@dataclass
class Added:
    """A task a handler added: its input line as JSON bytes and an optional dedupe key."""

    payload: bytes
    key: Optional[str] = None


@dataclass
class TaskResult:
    """The result of one task: ``ok`` JSON bytes, or an error kind and message;
    with ``ok``, the tasks the handler added."""

    id: int
    micros: int
    ok: Optional[bytes] = None
    error_kind: int = FAILED
    message: str = ""
    retry: bool = False
    added: List[Added] = field(default_factory=list)


@dataclass
class Held:
    """The step holding the event loop: which task (None: outside any) and for how long."""

    task: Optional[int]
    for_us: int


@dataclass
class Heartbeat:
    """Liveness and load, sent every heartbeat interval by the watchdog thread."""

    lag_us: int = 0
    max_lag_us: int = 0
    in_flight: int = 0
    done: int = 0
    cpu_us: int = 0
    rss_bytes: int = 0
    held: Optional[Held] = None
    blocked_us: int = 0


@dataclass
class Usage:
    """A worker's own resource usage, sent in its goodbye frame."""

    user_us: int = 0
    system_us: int = 0
    max_rss_bytes: int = 0


FromWorker = Union[Hello, List[TaskResult], Heartbeat, Usage]


# -- primitives -------------------------------------------------------------


def put_varint(out: bytearray, n: int) -> None:
    """Appends ``n`` (unsigned) as a LEB128 varint."""
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def get_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    """Reads a LEB128 varint at ``pos``; returns it and the position after it."""
    try:
        byte = buf[pos]
        if byte < 0x80:
            return byte, pos + 1
        value = byte & 0x7F
        shift = 7
        while True:
            pos += 1
            byte = buf[pos]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos + 1
            shift += 7
            if shift > 63:
                raise ProtocolError("varint longer than 10 bytes")
    except IndexError:
        raise ProtocolError("frame ends inside a varint") from None


def _put_bytes(out: bytearray, data: bytes) -> None:
    put_varint(out, len(data))
    out += data


def _put_str(out: bytearray, text: str) -> None:
    _put_bytes(out, text.encode("utf-8"))


def _get_bytes(buf: bytes, pos: int) -> Tuple[bytes, int]:
    n, pos = get_varint(buf, pos)
    end = pos + n
    if end > len(buf):
        raise ProtocolError(f"a field of {n} bytes runs past the end of the frame")
    return bytes(buf[pos:end]), end


def _get_str(buf: bytes, pos: int) -> Tuple[str, int]:
    data, pos = _get_bytes(buf, pos)
    try:
        return data.decode("utf-8"), pos
    except UnicodeDecodeError:
        raise ProtocolError("a string is not UTF-8") from None


def _get_bool(buf: bytes, pos: int) -> Tuple[bool, int]:
    if pos >= len(buf):
        raise ProtocolError("frame ends inside a bool")
    byte = buf[pos]
    if byte > 1:
        raise ProtocolError(f"{byte} is not a bool")
    return byte == 1, pos + 1


def frame(payload: bytes) -> bytes:
    """Prefixes ``payload`` with its length."""
    return _LENGTH.pack(len(payload)) + payload


# -- supervisor to worker ---------------------------------------------------


def encode_tasks(tasks: List[Task]) -> bytes:
    """A whole ``ToWorker::Tasks`` frame (the supervisor's side; for tests)."""
    out = bytearray(b"\x00")
    put_varint(out, len(tasks))
    for task in tasks:
        put_varint(out, task.id)
        _put_bytes(out, task.payload)
    return frame(bytes(out))


def decode_tasks(payload: bytes) -> List[Tuple[int, bytes]]:
    """Decodes a ``ToWorker`` payload into ``(id, json_bytes)`` pairs."""
    variant, pos = get_varint(payload, 0)
    if variant != 0:
        raise ProtocolError(f"unknown supervisor message (variant {variant})")
    count, pos = get_varint(payload, pos)
    end_of_frame = len(payload)
    if count > end_of_frame:
        raise ProtocolError(f"{count} tasks cannot fit in a frame of {end_of_frame} bytes")
    tasks = []
    append = tasks.append
    for _ in range(count):
        task_id, pos = get_varint(payload, pos)
        n, pos = get_varint(payload, pos)
        end = pos + n
        if end > end_of_frame:
            raise ProtocolError(f"a payload of {n} bytes runs past the end of the frame")
        append((task_id, payload[pos:end]))
        pos = end
    if pos != end_of_frame:
        raise ProtocolError(f"{end_of_frame - pos} bytes left over after the tasks")
    return tasks


# -- worker to supervisor ---------------------------------------------------


def encode_hello(hello: Hello) -> bytes:
    out = bytearray(b"\x00")
    put_varint(out, hello.version)
    put_varint(out, hello.pid)
    put_varint(out, len(hello.kinds))
    for kind in hello.kinds:
        _put_str(out, kind)
    _put_str(out, hello.runtime)
    return frame(bytes(out))


def encode_results(results: List[TaskResult]) -> bytes:
    out = bytearray(b"\x01")
    put_varint(out, len(results))
    for result in results:
        put_varint(out, result.id)
        put_varint(out, result.micros)
        if result.ok is not None:
            out.append(0)
            _put_bytes(out, result.ok)
        else:
            out.append(1)
            put_varint(out, result.error_kind)
            _put_str(out, result.message)
        out.append(1 if result.retry else 0)
        put_varint(out, len(result.added))
        for added in result.added:
            _put_bytes(out, added.payload)
            if added.key is None:
                out.append(0)
            else:
                out.append(1)
                _put_str(out, added.key)
    return frame(bytes(out))


def encode_heartbeat(beat: Heartbeat) -> bytes:
    out = bytearray(b"\x02")
    for n in (beat.lag_us, beat.max_lag_us, beat.in_flight, beat.done, beat.cpu_us, beat.rss_bytes):
        put_varint(out, n)
    if beat.held is None:
        out.append(0)
    else:
        out.append(1)
        if beat.held.task is None:
            out.append(0)
        else:
            out.append(1)
            put_varint(out, beat.held.task)
        put_varint(out, beat.held.for_us)
    put_varint(out, beat.blocked_us)
    return frame(bytes(out))


def encode_bye(usage: Usage) -> bytes:
    out = bytearray(b"\x03")
    for n in (usage.user_us, usage.system_us, usage.max_rss_bytes):
        put_varint(out, n)
    return frame(bytes(out))


def encode_from_worker(message: FromWorker) -> bytes:
    """Any worker-to-supervisor message as a whole frame."""
    if isinstance(message, Hello):
        return encode_hello(message)
    if isinstance(message, Heartbeat):
        return encode_heartbeat(message)
    if isinstance(message, Usage):
        return encode_bye(message)
    return encode_results(message)


def decode_from_worker(payload: bytes) -> FromWorker:
    """Decodes a worker-to-supervisor payload (the supervisor's side; for tests)."""
    variant, pos = get_varint(payload, 0)
    if variant == 0:
        version, pos = get_varint(payload, pos)
        pid, pos = get_varint(payload, pos)
        count, pos = get_varint(payload, pos)
        kinds = []
        for _ in range(count):
            kind, pos = _get_str(payload, pos)
            kinds.append(kind)
        runtime, pos = _get_str(payload, pos)
        message: FromWorker = Hello(pid=pid, kinds=kinds, runtime=runtime, version=version)
    elif variant == 1:
        count, pos = get_varint(payload, pos)
        results = []
        for _ in range(count):
            task_id, pos = get_varint(payload, pos)
            micros, pos = get_varint(payload, pos)
            outcome, pos = get_varint(payload, pos)
            if outcome == 0:
                ok, pos = _get_bytes(payload, pos)
                result = TaskResult(task_id, micros, ok=ok)
            elif outcome == 1:
                kind, pos = get_varint(payload, pos)
                if kind >= len(ERROR_KINDS):
                    raise ProtocolError(f"unknown error kind {kind}")
                text, pos = _get_str(payload, pos)
                result = TaskResult(task_id, micros, error_kind=kind, message=text)
            else:
                raise ProtocolError(f"unknown outcome (variant {outcome})")
            result.retry, pos = _get_bool(payload, pos)
            n_added, pos = get_varint(payload, pos)
            if n_added > len(payload):
                raise ProtocolError(f"{n_added} added tasks cannot fit in a frame of {len(payload)} bytes")
            for _ in range(n_added):
                task, pos = _get_bytes(payload, pos)
                has_key, pos = _get_bool(payload, pos)
                key = None
                if has_key:
                    key, pos = _get_str(payload, pos)
                result.added.append(Added(task, key))
            results.append(result)
        message = results
    elif variant == 2:
        numbers = []
        for _ in range(6):
            n, pos = get_varint(payload, pos)
            numbers.append(n)
        has_held, pos = _get_bool(payload, pos)
        held = None
        if has_held:
            has_task, pos = _get_bool(payload, pos)
            task = None
            if has_task:
                task, pos = get_varint(payload, pos)
            for_us, pos = get_varint(payload, pos)
            held = Held(task=task, for_us=for_us)
        blocked_us, pos = get_varint(payload, pos)
        message = Heartbeat(*numbers, held=held, blocked_us=blocked_us)
    elif variant == 3:
        numbers = []
        for _ in range(3):
            n, pos = get_varint(payload, pos)
            numbers.append(n)
        message = Usage(*numbers)
    else:
        raise ProtocolError(f"unknown worker message (variant {variant})")
    if pos != len(payload):
        raise ProtocolError(f"{len(payload) - pos} bytes left over after the message")
    return message


class FrameReader:
    """Splits a byte stream into frame payloads, checking the limit before buffering a body."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> List[bytes]:
        """Adds ``data``; returns the payloads of the frames now complete."""
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        end = len(buf)
        while end - pos >= LENGTH_PREFIX:
            (n,) = _LENGTH.unpack_from(buf, pos)
            if n > self._max:
                raise ProtocolError(f"frame of {n} bytes is over the limit of {self._max} bytes")
            if end - pos - LENGTH_PREFIX < n:
                break
            start = pos + LENGTH_PREFIX
            frames.append(bytes(buf[start : start + n]))
            pos = start + n
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)
