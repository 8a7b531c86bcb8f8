"""The driver's vocabulary for what comes back: the records the supervisor
writes, read into :class:`Result` objects, and the errors a run raises.

The record format belongs to the supervisor (``crates/supervisor/src/record.rs``);
:func:`parse_records` reads it as JSON, whatever the order of its fields, and
``python/tests/test_contracts.py`` holds it to the golden records Rust writes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, Generator, List, Optional, Union

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
    ``return_exceptions=True``). ``index`` is the item's position (None for
    a task a handler added: ``path`` names it)."""

    def __init__(self, result: "Result") -> None:
        error = result.error
        assert error is not None
        if result.index is not None:
            what = f"item {result.index}"
        else:
            what = f"task {result.path} (added by {result.parent})"
        super().__init__(f"{what} {error.kind}: {error.message}")
        self.kind = error.kind
        self.message = error.message
        self.index = result.index
        self.path = result.path
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
    ``attempts``, ``ms``, ``key`` and the ``item`` itself.

    A task a handler added (``multiloop.add``) has a path for ``seq`` and
    ``path`` (``"5.3"``: the third task that item 4, line 5, added), no
    ``index``, the added task as ``item`` and the key it was added with as
    ``key`` (when the driver read its parent's record), its ``parent``'s
    path and its ``depth``. A parent's own ``added`` and ``kept_out`` say
    what it offered and what dedupe and the limits refused."""

    __slots__ = ("record", "item", "_key")

    def __init__(self, record: Dict[str, Any], item: Any = None, key: Any = None) -> None:
        self.record = record
        self.item = item
        self._key = key

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
        """The input line (an int) or, for an added task, its path (a str)."""
        seq = self.record["seq"]
        return seq if isinstance(seq, str) else int(seq)

    @property
    def path(self) -> str:
        """The task's identity as text, the same after any resume: ``"5"``
        for input line 5, ``"5.3"`` for the third task it added,
        ``"5.3.1"`` for the first task *that* one added."""
        return str(self.record["seq"])

    @property
    def index(self) -> Optional[int]:
        """The item's position in the items; None for an added task."""
        seq = self.record["seq"]
        return None if isinstance(seq, str) else int(seq) - 1

    @property
    def parent(self) -> Optional[str]:
        """The :attr:`path` of the task that added this one; None for an item."""
        parent = self.record.get("parent")
        return None if parent is None else str(parent)

    @property
    def depth(self) -> int:
        """Additions away from an item: 0 for an item, 1 for what it added, ..."""
        return int(self.record.get("depth", 0))

    @property
    def added(self) -> int:
        """How many tasks this one added that the run accepted (its children)."""
        return len(self.record.get("added") or ())

    @property
    def kept_out(self) -> Dict[str, int]:
        """What this task offered to add and the run refused, by reason:
        ``seen`` (dedupe), ``max_depth``, ``max_tasks``; empty when nothing."""
        return dict(self.record.get("kept_out") or {})

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
        """The dedupe key: an item's ``key`` field, or the key an added
        task was added with."""
        key = self.record.get("key")
        return self._key if key is None else key

    def unwrap(self) -> Any:
        """The value, or :class:`TaskFailed` raised."""
        if "error" in self.record:
            raise TaskFailed(self)
        return self.record.get("ok")

    def __repr__(self) -> str:
        what = f"value={self.value!r}" if self.ok else f"error={self.error!r}"
        if isinstance(self.record.get("seq"), str):
            where = f"path={self.path!r}, parent={self.parent!r}, depth={self.depth}"
        else:
            where = f"index={self.index}"
        return f"Result({where}, {what}, worker={self.worker}, attempts={self.attempts})"


class ResultStream:
    """How a map is read, whatever runs it (a supervisor of its own,
    ``MapRun``, or a pool's warm fleet, ``FleetMap``): ``async for`` its
    :class:`Result` objects as tasks complete, ``await`` it for its
    values. A map defines ``batches()`` and ``values()``."""

    if TYPE_CHECKING:

        def batches(self) -> AsyncIterator[List[Result]]: ...

        async def values(self, return_exceptions: bool = False) -> List[Any]: ...

    def __aiter__(self) -> AsyncIterator[Result]:
        return self._each()

    async def _each(self) -> AsyncIterator[Result]:
        async for batch in self.batches():
            for result in batch:
                yield result

    def __await__(self) -> Generator[Any, None, List[Any]]:
        return self.values().__await__()


def value_or_failure(result: Result, return_exceptions: bool) -> Any:
    """What a map's ``values()`` holds for a task: its value, or for an
    error record its :class:`TaskFailed`, in the value's place with
    ``return_exceptions`` and raised without. Hot loops place an ok
    record's ``record.get("ok")`` themselves and call this for the rest,
    so an ok record costs no call and no :class:`Result`."""
    record = result.record
    if "error" not in record:
        return record.get("ok")
    failed = TaskFailed(result)
    if return_exceptions:
        return failed
    raise failed


def parse_records(chunk: bytes) -> List[Dict[str, Any]]:
    """Records from whole lines joined by newlines. Records are single lines,
    so a chunk is one JSON array: one C-level decode for all of them."""
    return json.loads(b"[" + chunk.replace(b"\n", b",") + b"]")
