"""The driver's vocabulary for what comes back: the records the supervisor
writes, read into :class:`Result` objects, and the errors a run raises.

The record format belongs to the supervisor (``crates/supervisor/src/record.rs``);
:func:`parse_records` reads it as JSON, whatever the order of its fields, and
``python/tests/test_contracts.py`` holds it to the golden records Rust writes.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Union

# -- errors -----------------------------------------------------------------


class SendError(TypeError):
    """A function or an item that cannot be sent to the workers (not picklable,
    not JSON-encodable); the message names which one and why."""


class SupervisorError(RuntimeError):
    """The supervisor ended without finishing the run: a usage or setup error
    (status 2), a fleet that could not make progress (3), a signal from
    outside. ``status`` is its exit status (negative: killed by that signal),
    ``last_line`` its last line on stderr."""

    def __init__(self, message: str, status: Optional[int], last_line: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.last_line = last_line


class Drained(Exception):
    """The run was drained (Ctrl-C, :meth:`MapRun.drain`) before every item
    had a result; :func:`run` turns it into ``KeyboardInterrupt``."""


class TaskFailed(Exception):
    """A task whose record is an error, raised by :func:`gather` and
    :meth:`Result.unwrap` (or returned in its place with
    ``return_exceptions=True``)."""

    def __init__(self, result: "Result") -> None:
        error = result.error
        assert error is not None
        super().__init__(f"item {result.index} {error.kind}: {error.message}")
        self.kind = error.kind
        self.message = error.message
        self.index = result.index
        self.item = result.item
        self.result = result


# -- results ----------------------------------------------------------------


class ErrorInfo:
    """Why a task has no value: ``kind`` is ``timeout``, ``failed``,
    ``panicked``, ``crashed`` or ``bad_input``; ``message`` says more."""

    __slots__ = ("kind", "message")

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"ErrorInfo(kind={self.kind!r}, message={self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErrorInfo) and (self.kind, self.message) == (other.kind, other.message)


class Result:
    """One task's record: ``ok`` and ``value``, or ``error``; plus ``index``
    (position in the items), ``seq`` (input line, ``index + 1``), ``worker``,
    ``attempts``, ``ms``, ``key`` and the ``item`` itself. A task a handler
    added (``multiloop.add``) has a path for ``seq`` (``"5.3"``), no
    ``index`` or ``item``, and its ``parent`` and ``depth``."""

    __slots__ = ("record", "item")

    def __init__(self, record: Dict[str, Any], item: Any = None) -> None:
        self.record = record
        self.item = item

    @property
    def ok(self) -> bool:
        return "error" not in self.record

    @property
    def value(self) -> Any:
        """The handler's return value (None for an error)."""
        return self.record.get("ok")

    @property
    def error(self) -> Optional[ErrorInfo]:
        error = self.record.get("error")
        if error is None:
            return None
        return ErrorInfo(str(error.get("kind", "failed")), str(error.get("message", "")))

    @property
    def seq(self) -> Union[int, str]:
        seq = self.record["seq"]
        return seq if isinstance(seq, str) else int(seq)

    @property
    def index(self) -> Optional[int]:
        seq = self.record["seq"]
        return None if isinstance(seq, str) else int(seq) - 1

    @property
    def parent(self) -> Union[int, str, None]:
        """The task that added this one (None for an item)."""
        return self.record.get("parent")

    @property
    def depth(self) -> int:
        """Additions away from an item: 0 for an item, 1 for what it added, ..."""
        return int(self.record.get("depth", 0))

    @property
    def worker(self) -> Optional[int]:
        return self.record.get("worker")

    @property
    def attempts(self) -> int:
        return int(self.record.get("attempts", 0))

    @property
    def ms(self) -> Optional[float]:
        return self.record.get("ms")

    @property
    def key(self) -> Any:
        return self.record.get("key")

    def unwrap(self) -> Any:
        """The value, or :class:`TaskFailed` raised."""
        if "error" in self.record:
            raise TaskFailed(self)
        return self.record.get("ok")

    def __repr__(self) -> str:
        what = f"value={self.value!r}" if self.ok else f"error={self.error!r}"
        return f"Result(index={self.index}, {what}, worker={self.worker}, attempts={self.attempts})"


def parse_records(chunk: bytes) -> List[Dict[str, Any]]:
    """Records from whole lines joined by newlines. Records are single lines,
    so a chunk is one JSON array: one C-level decode for all of them."""
    return json.loads(b"[" + chunk.replace(b"\n", b",") + b"]")
