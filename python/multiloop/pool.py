"""Drive the supervisor from Python code: :class:`Pool`, :func:`gather`, :func:`run`.

The driver starts the real ``supervisor`` binary (installed next to this
Python by the wheel) as a child process, streams the items into its stdin as
JSON lines, and reads its records back, so blame, restarts, recycling,
heartbeats, ``supervisor ctl``/``top`` and ``--stats`` all work unchanged.

How a function reaches the workers:

* **by reference** — a module-level function of an importable module
  (``jobs.handle``) runs as ``--python jobs:handle``; each worker imports it.
* **by value** — a function defined in ``__main__``, a notebook cell, or a
  closure, or any function given with ``setup``/``teardown``, is pickled with
  cloudpickle (as Ray and Dask do) into a temporary file, and the workers run
  ``--python multiloop._byvalue:kind`` which loads it.

Items and results cross processes as JSON, so both must be JSON-encodable.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import datetime
import difflib
import fcntl
import gc
import json
import os
import re
import reprlib
import shutil
import signal
import sys
import tempfile
import threading
import weakref
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Deque,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

__all__ = [
    "Pool",
    "MapRun",
    "Result",
    "ErrorInfo",
    "TaskFailed",
    "SupervisorError",
    "SendError",
    "Drained",
    "gather",
    "run",
    "find_supervisor",
]

Items = Union[Iterable[Any], AsyncIterable[Any]]

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


_MISSING = object()


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


# -- options ----------------------------------------------------------------

# keyword -> (flag, how the value is written). Every supervisor option has a
# keyword, except --input, --demo and --queue/--claim-after (the items are
# the input) and --lines
# (items are JSON-encoded here, so a str item already arrives as a string).
_FLAG = "flag"
_VALUE = "value"
_DURATION = "duration"
_SIZE = "size"
OPTIONS: Dict[str, Tuple[str, str]] = {
    "workers": ("--workers", _VALUE),
    "task": ("--task", _VALUE),
    "worker": ("--worker", _VALUE),
    "worker_args": ("--worker-arg", "repeat"),
    "concurrency": ("--concurrency", _VALUE),
    "task_timeout": ("--task-timeout", _DURATION),
    "keep_order": ("--keep-order", _FLAG),
    "window": ("--window", _VALUE),
    "max_frame": ("--max-frame", _SIZE),
    "worker_timeout": ("--worker-timeout", _DURATION),
    "grace": ("--grace", _DURATION),
    "max_restarts": ("--max-restarts", _VALUE),
    "restart_window": ("--restart-window", _DURATION),
    "max_crashes": ("--max-crashes", _VALUE),
    "retries": ("--retries", _VALUE),
    "retry_backoff": ("--retry-backoff", _DURATION),
    "max_tasks_per_worker": ("--max-tasks-per-worker", _VALUE),
    "max_worker_rss": ("--max-worker-rss", _SIZE),
    "settings": ("--set", "settings"),
    "per_host": ("--per-host", _VALUE),
    "retry_status": ("--retry-status", "statuses"),
    "output": ("--output", _VALUE),
    "resume": ("--resume", _FLAG),
    "resume_failed": ("--resume-failed", _FLAG),
    "key": ("--key", _VALUE),
    "shard": ("--shard", _VALUE),
    "shard_count": ("--shard-count", _VALUE),
    "stats": ("--stats", _VALUE),
    "verbose": ("-v", "count"),
    "quiet": ("--quiet", _FLAG),
}
# Options of the driver itself, not passed to the supervisor as such.
DRIVER_OPTIONS = (
    "setup",
    "teardown",
    "progress",
    "python",
    "supervisor",
    "env",
    "cwd",
    "extra_args",
)


def _check_options(options: Mapping[str, Any]) -> None:
    known = list(OPTIONS) + list(DRIVER_OPTIONS)
    for name in options:
        if name not in OPTIONS and name not in DRIVER_OPTIONS:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"unknown multiloop option {name!r}{hint}")


def _duration(name: str, value: Any) -> str:
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected seconds or a duration like '30s', not {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name}: {value} is negative")
        return f"{round(value * 1000)}ms"
    return str(value)


def _size(name: str, value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected bytes or a size like '512MiB', not {value!r}")
    return str(value)


def supervisor_args(options: Mapping[str, Any]) -> List[str]:
    """The supervisor's command-line options for these keywords."""
    args: List[str] = []
    for name, value in options.items():
        if name in DRIVER_OPTIONS or value is None or value is False:
            continue
        flag, how = OPTIONS[name]
        if how == _FLAG:
            args.append(flag)
        elif how == _VALUE:
            args += [flag, str(value)]
        elif how == _DURATION:
            args += [flag, _duration(name, value)]
        elif how == _SIZE:
            args += [flag, _size(name, value)]
        elif how == "count":
            args += [flag] * (1 if value is True else int(value))
        elif how == "repeat":
            for each in [value] if isinstance(value, str) else value:
                args += [flag, str(each)]
        elif how == "settings":
            for key, setting in dict(value).items():
                args += [flag, f"{key}={setting}"]
        elif how == "statuses":
            text = value if isinstance(value, str) else ",".join(str(v) for v in value)
            args += [flag, text]
    args += [str(a) for a in options.get("extra_args") or ()]
    return args


# -- binaries and functions ---------------------------------------------------


def find_supervisor() -> str:
    """``MULTILOOP_SUPERVISOR``, else ``supervisor`` next to this Python (a
    venv's bin/), else ``supervisor`` on PATH."""
    explicit = os.environ.get("MULTILOOP_SUPERVISOR")
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(sys.executable), "supervisor")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("supervisor")
    if found:
        return found
    raise FileNotFoundError(
        "no supervisor binary: not next to "
        f"{sys.executable} nor on PATH (pip install multiloop, or set MULTILOOP_SUPERVISOR)"
    )


def _kind_class() -> Any:
    try:
        from ._kinds import Kind  # the worker runtime's

        return Kind
    except ImportError:
        import multiloop

        return getattr(multiloop, "Kind", None)


def _reference(fn: Any) -> Optional[str]:
    """``module:attr`` when workers can import exactly this object, else None."""
    kind_cls = _kind_class()
    target = fn.handle if kind_cls is not None and isinstance(fn, kind_cls) else fn
    module_name = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", "")
    if not module_name or module_name in ("__main__", "__mp_main__", "builtins"):
        return None
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) is None:
        return None  # not loaded from a file the workers could find
    if fn is target and "." not in qualname and "<" not in qualname:
        if getattr(module, qualname, None) is fn:
            return f"{module_name}:{qualname}"
        return None
    for name, value in vars(module).items():  # a Kind: find the name it is bound to
        if value is fn:
            return f"{module_name}:{name}"
    return None


class _Target:
    """What ``--python`` runs for one map: a spec, maybe a pickle file."""

    def __init__(self, fn: Any, options: Mapping[str, Any]) -> None:
        self.path: Optional[str] = None
        self.by_value = False
        setup, teardown = options.get("setup"), options.get("teardown")
        if isinstance(fn, str):
            if setup or teardown:
                raise TypeError("setup/teardown go with a function, not with a spec string")
            self.args = [("--task" if options.get("worker") else "--python"), fn]
            return
        if options.get("worker"):
            raise TypeError("with worker=PATH, name the kind as a string: gather('sim', items, worker=...)")
        if not callable(fn):
            raise TypeError(f"expected a function, a multiloop.Kind or a 'module:function' spec, not {type(fn).__name__}")
        kind_cls = _kind_class()
        spec = None if (setup or teardown) else _reference(fn)
        if spec is not None:
            self.args = ["--python", spec]
            return
        if kind_cls is not None and isinstance(fn, kind_cls):
            if setup or teardown:
                raise TypeError(f"{fn!r} already is a multiloop.Kind: give setup/teardown to it, not here")
            obj = fn
        elif kind_cls is not None:
            obj = kind_cls(fn, setup=setup, teardown=teardown, name=getattr(fn, "__name__", None))
        elif setup or teardown:
            raise RuntimeError("setup/teardown need the multiloop worker runtime (multiloop.Kind)")
        else:
            obj = fn
        data = _pickle(fn, obj)
        handle, self.path = tempfile.mkstemp(prefix="multiloop-", suffix=".pkl")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        self.by_value = True
        self.args = ["--python", "multiloop._byvalue:kind"]

    def env(self) -> Dict[str, str]:
        return {"MULTILOOP_BY_VALUE": self.path} if self.path else {}

    def cleanup(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None


def _pickle(fn: Any, obj: Any) -> bytes:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    try:
        import cloudpickle
    except ImportError:
        raise SendError(
            f"{name} is defined in __main__ or a notebook, so it is sent by value, which needs "
            "cloudpickle: pip install cloudpickle (or move it to an importable module)"
        ) from None
    try:
        return cloudpickle.dumps(obj)
    except Exception as error:
        raise SendError(
            f"cannot send {name} to the workers by value: {type(error).__name__}: {error}. "
            "Everything the function refers to is pickled with it; create sockets, clients "
            "and locks inside it or in setup=, or define it in an importable module"
        ) from error


# -- JSON -------------------------------------------------------------------


def _not_json(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# The C encoder made once, without json.dumps's per-call set-up: compact,
# ASCII, NaN refused (it is not JSON).
if c_make_encoder is not None:
    _encode_c = c_make_encoder(None, _not_json, encode_basestring_ascii, None, ":", ",", False, False, False)

    def _encode(item: Any) -> str:
        if item.__class__ is str:
            return encode_basestring_ascii(item)
        return "".join(_encode_c(item, 0))

else:  # a Python without the _json accelerator
    _encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _item_error(index: int, item: Any, error: Exception) -> SendError:
    return SendError(
        f"item {index} is not JSON-encodable ({error}): {reprlib.repr(item)}; "
        "items and results cross processes as JSON"
    )


# -- one run of the supervisor ------------------------------------------------

#: A successful record without a key, as the supervisor writes it.
_OK_RECORD = re.compile(rb'^\{"seq":(\d+),"worker":\d+,"attempts":\d+,"ms":[^,"]*,"ok":(.*)\}$', re.M)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic GC off while a batch of fresh containers is decoded: none
    of them can be garbage yet, and collections triggered by their count cost
    about a third of the decode."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_LIVE: "weakref.WeakSet[MapRun]" = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for run_ in list(_LIVE):
        run_._kill_now()


class MapRun:
    """One ``pool.map``: a supervisor process and the items streaming into it.

    ``async for result in run`` yields :class:`Result` objects as tasks
    complete; ``await run`` gives the values in input order (raising
    :class:`TaskFailed` for the first error, like ``aiomultiprocess``).
    """

    def __init__(self, fn: Any, items: Items, options: Dict[str, Any]) -> None:
        _check_options(options)
        self._fn = fn
        self._items = items
        self._options = options
        self._proc: Optional[asyncio.subprocess.Process] = None
        self._exit: Optional["asyncio.Future[int]"] = None
        self._target: Optional[_Target] = None
        self._feeder: Optional["asyncio.Task[None]"] = None
        self._stderr_task: Optional["asyncio.Task[None]"] = None
        self._feed_error: Optional[BaseException] = None
        self._sequence: Optional[Sequence[Any]] = items if isinstance(items, (list, tuple)) else None
        self._pending: Dict[int, Any] = {}
        self._stderr_tail: Deque[str] = collections.deque(maxlen=20)
        self._stopping = False
        self._draining = False
        self._started = False
        self._finished = False
        self._old: List[Result] = []
        self._file: Any = None
        self._bar: Any = None
        self.total: Optional[int] = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        self.status: Optional[int] = None

    # ---- lifecycle

    @property
    def pid(self) -> Optional[int]:
        """The supervisor's process id (for ``supervisor ctl``), once started."""
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        """Starts the supervisor (the first iteration does it too)."""
        if self._started:
            return
        if self._draining:
            raise Drained("the run was drained before it started")
        self._started = True
        options = self._options
        self._target = _Target(self._fn, options)
        output = options.get("output")
        binary = str(options["supervisor"]) if options.get("supervisor") else find_supervisor()
        args = [binary, *self._target.args, "--input", "-", "--progress", "never"]
        args += supervisor_args(options)
        if options.get("quiet") is None and not options.get("verbose"):
            # The bar is ours; warnings and errors still come through.
            args.append("--quiet")
        env = dict(os.environ)
        env.update(self._target.env())
        env.setdefault("MULTILOOP_PYTHON", str(options.get("python") or sys.executable))
        if options.get("python"):
            env["MULTILOOP_PYTHON"] = str(options["python"])
        # The workers import by-reference functions the way this process
        # did: from its sys.path (a script's own directory included).
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.update({k: str(v) for k, v in (options.get("env") or {}).items()})
        try:
            if output is not None:
                self._prepare_output(str(output))
            self._proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL if output is not None else asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=options.get("cwd"),
                # Its own session: a terminal's Ctrl-C (or a notebook's
                # interrupt, sent to the process group) reaches this process
                # only, which then drains the supervisor with one signal.
                start_new_session=True,
                limit=1 << 20,
            )
        except BaseException:
            self._target.cleanup()
            if self._file is not None:
                self._file.close()
            raise
        _LIVE.add(self)
        self._exit = asyncio.ensure_future(self._proc.wait())
        self._stderr_task = asyncio.ensure_future(self._read_stderr())
        self._feeder = asyncio.ensure_future(self._feed())
        self._bar = _progress_bar(options.get("progress", "auto"), self.total)
        if self._draining:  # Ctrl-C while the supervisor was starting
            self._draining = False
            self.drain()
        if self._bar is not None and self._old:
            self._bar.update(len(self._old))

    def _prepare_output(self, path: str) -> None:
        """Old records to yield again (resume), and where new ones start."""
        resume = self._options.get("resume") or self._options.get("resume_failed")
        offset = 0
        if resume and os.path.exists(path):
            with open(path, "rb") as file:
                data = file.read()
            offset = data.rfind(b"\n") + 1  # the supervisor cuts a torn last line
            last: Dict[Any, Dict[str, Any]] = {}
            ident = "key" if self._options.get("key") else "seq"
            for line in data[:offset].splitlines():
                if line.strip():
                    record = json.loads(line)
                    last[record.get(ident)] = record
            keep = [r for r in last.values() if not (self._options.get("resume_failed") and "error" in r)]
            if ident == "key" and self._sequence is not None:
                # Old records' seq numbered an older input; renumber by key.
                field = self._options["key"]
                where = {
                    json.dumps(item.get(field)) if isinstance(item, dict) else None: i
                    for i, item in enumerate(self._sequence)
                }
                for record in keep:
                    index = where.get(json.dumps(record.get("key")))
                    if index is not None:
                        record["seq"] = index + 1
            self._old = [self._result(r) for r in keep]
        else:
            # Emptied here, not by the supervisor, so the tail below never
            # reads an older run's records; refused while another run holds it.
            with open(path, "ab") as file:
                try:
                    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise SupervisorError(f"{path} is in use by another run", None) from None
                file.truncate(0)
        self._file = open(path, "rb")
        self._file.seek(offset)

    def _result(self, record: Dict[str, Any]) -> Result:
        seq = record.get("seq", 0)
        if isinstance(seq, str):
            return Result(record)  # added by a handler: not one of the items
        if self._sequence is not None:
            item = self._sequence[seq - 1] if 0 < seq <= len(self._sequence) else None
        else:
            item = self._pending.pop(seq, None)
        return Result(record, item)

    async def _feed(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        stdin = proc.stdin
        keep = self._sequence is None
        pending = self._pending
        lines: List[str] = []
        index = 0
        try:
            if hasattr(self._items, "__aiter__"):
                async for item in self._items:  # type: ignore[union-attr]
                    lines.append(self._encode_one(index, item))
                    if keep:
                        pending[index + 1] = item
                    index += 1
                    if len(lines) >= 512:
                        stdin.write(("\n".join(lines) + "\n").encode())
                        lines.clear()
                        await stdin.drain()
            else:
                encode = _encode
                for item in self._items:  # type: ignore[union-attr]
                    try:
                        lines.append(encode(item))
                    except (TypeError, ValueError, RecursionError) as error:
                        raise _item_error(index, item, error) from None
                    if keep:
                        pending[index + 1] = item
                    index += 1
                    if len(lines) >= 2048:
                        stdin.write(("\n".join(lines) + "\n").encode())
                        lines.clear()
                        await stdin.drain()
            if lines:
                stdin.write(("\n".join(lines) + "\n").encode())
                await stdin.drain()
            if self.total is None:
                self.total = index
                if self._bar is not None:
                    self._bar.total = index + len(self._old)
                    self._bar.refresh()
        except (BrokenPipeError, ConnectionResetError):
            return  # the supervisor ended; its exit status tells why
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self._feed_error = error
            self._kill_now()
            return
        finally:
            if not stdin.is_closing():
                stdin.close()

    @staticmethod
    def _encode_one(index: int, item: Any) -> str:
        try:
            return _encode(item)
        except (TypeError, ValueError, RecursionError) as error:
            raise _item_error(index, item, error) from None

    async def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        tail = self._stderr_tail
        while True:
            line = await proc.stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\n")
            if text.strip():
                tail.append(text)
            if self._bar is not None:
                self._bar.write(text, file=sys.stderr)
            else:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()

    # ---- results

    async def _read(self) -> bytes:
        proc = self._proc
        assert proc is not None
        if self._file is None:
            assert proc.stdout is not None
            return await proc.stdout.read(1 << 18)
        while True:
            data = self._file.read(1 << 18)
            if data:
                return data
            if proc.returncode is not None:
                return self._file.read(1 << 18)
            # The supervisor flushes once its queue is empty; a file has no
            # readiness to wait on, so look again shortly or at its exit.
            assert self._exit is not None
            await asyncio.wait({self._exit}, timeout=0.02)

    async def _chunks(self) -> AsyncIterator[bytes]:
        """New records as they arrive: whole lines, joined by newlines."""
        await self.start()
        rest = b""
        bar = self._bar
        while True:
            data = await self._read()
            if not data:
                break
            if rest:
                data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            chunk = data[:cut]
            if bar is not None:
                bar.update(chunk.count(b"\n") + 1)
            yield chunk
        await self._finish()

    async def batches(self) -> AsyncIterator[List[Result]]:
        """Results in batches as they arrive (cheaper than one at a time)."""
        await self.start()
        if self._old:
            old, self._old = self._old, []
            yield old
        make = self._result
        async for chunk in self._chunks():
            with _no_gc():
                # Records are single lines, so a chunk is one JSON array: one
                # C-level decode instead of one call per record.
                records = json.loads(b"[" + chunk.replace(b"\n", b",") + b"]")
                batch = [make(r) for r in records]
            yield batch

    async def _finish(self) -> None:
        proc = self._proc
        assert proc is not None
        status = await proc.wait()
        if self._stderr_task is not None:
            await self._stderr_task
        if self._feeder is not None:
            await asyncio.gather(self._feeder, return_exceptions=True)
        self.status = status
        self._close_local()
        if self._feed_error is not None:
            raise self._feed_error
        if self._draining:
            return
        if status in (0, 1):
            return
        last = self._last_error_line()
        if status < 0:
            try:
                how = f"was killed by {signal.Signals(-status).name}"
            except ValueError:
                how = f"was killed by signal {-status}"
        else:
            how = f"exited with status {status}"
        raise SupervisorError(f"the supervisor {how}" + (f": {last}" if last else ""), status, last)

    def _last_error_line(self) -> str:
        """The supervisor's last error line on stderr (clap ends a usage
        error with a hint line, so an ``error`` line wins), else its last."""
        for line in reversed(self._stderr_tail):
            if "error" in line.lower():
                return line.strip()
        return self._stderr_tail[-1].strip() if self._stderr_tail else ""

    def __aiter__(self) -> AsyncIterator[Result]:
        return self._each()

    async def _each(self) -> AsyncIterator[Result]:
        async for batch in self.batches():
            for result in batch:
                yield result

    def __await__(self) -> Generator[Any, None, List[Any]]:
        return self.values().__await__()

    async def values(self, return_exceptions: bool = False) -> List[Any]:
        """Values in input order; the first error raises :class:`TaskFailed`
        (or takes its place with ``return_exceptions=True``)."""
        if self._sequence is None:
            # Order needs the length and the items; a generator is read here.
            items = self._items
            if hasattr(items, "__aiter__"):
                items = [x async for x in items]  # type: ignore[union-attr]
            self._items = self._sequence = list(items)  # type: ignore[arg-type]
            self.total = len(self._sequence)
        out: List[Any] = [_MISSING] * len(self._sequence)

        def place(record: Dict[str, Any]) -> None:
            if isinstance(record.get("seq"), str):
                return  # added by a handler: values are the items' only
            if "error" in record:
                result = self._result(record)
                if not return_exceptions:
                    raise TaskFailed(result)
                out[record["seq"] - 1] = TaskFailed(result)
            else:
                out[record["seq"] - 1] = record.get("ok")

        try:
            await self.start()
            old, self._old = self._old, []
            for result in old:
                place(result.record)
            async for chunk in self._chunks():
                with _no_gc():
                    # Only the values are needed here: cut them out of the
                    # records and decode them alone (about half the work);
                    # any line of another shape (an error, a key) sends the
                    # chunk through the full decode.
                    found = _OK_RECORD.findall(chunk)
                    if len(found) == chunk.count(b"\n") + 1:
                        values = json.loads(b"[" + b",".join([v for _, v in found]) + b"]")
                        for (seq, _), value in zip(found, values):
                            out[int(seq) - 1] = value
                    else:
                        for record in json.loads(b"[" + chunk.replace(b"\n", b",") + b"]"):
                            place(record)
        finally:
            await self.aclose()
        if self._draining:
            raise Drained("the run was drained before every item had a result")
        missing = [i for i, v in enumerate(out) if v is _MISSING]
        if missing and not self._options.get("shard"):
            raise SupervisorError(
                f"the supervisor ended without results for {len(missing)} items "
                f"(first: item {missing[0]})",
                self.status,
            )
        return [None if v is _MISSING else v for v in out]

    # ---- stopping

    def _kill_now(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                # Not proc.kill(): this also runs at exit, after the loop
                # has closed. Its workers die with it (PR_SET_PDEATHSIG).
                os.kill(proc.pid, signal.SIGKILL)
            except OSError:
                pass

    def _close_local(self) -> None:
        if self._finished:
            return
        self._finished = True
        _LIVE.discard(self)
        if self._target is not None:
            self._target.cleanup()
        if self._file is not None:
            self._file.close()
        if self._bar is not None:
            self._bar.close()

    async def _wait(self, seconds: float) -> bool:
        assert self._exit is not None
        done, _ = await asyncio.wait({self._exit}, timeout=seconds)
        return bool(done)

    async def _discard_stdout(self) -> None:
        proc = self._proc
        if proc is not None and proc.stdout is not None:
            while await proc.stdout.read(1 << 18):
                pass

    def drain(self) -> None:
        """Ctrl-C: the supervisor stops reading, finishes the tasks in flight
        within ``grace`` and writes their records; the results read
        afterwards end with ``KeyboardInterrupt``."""
        proc = self._proc
        if self._draining:
            return
        self._draining = True  # before the start: the run never starts
        if proc is None or proc.returncode is not None:
            return
        if self._feeder is not None:
            self._feeder.cancel()
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass

    async def aclose(self) -> None:
        """Stops the supervisor and its workers now (``break``, an error) and
        waits until they are gone. Finished runs are left as they are."""
        proc = self._proc
        if proc is None:
            self._close_local()
            return
        try:
            if proc.returncode is None:
                self._stopping = True
                if self._feeder is not None:
                    self._feeder.cancel()
                discard = asyncio.ensure_future(self._discard_stdout())
                try:
                    # Twice = stop now (once would drain). Apart, so the two
                    # signals cannot merge into one pending signal.
                    proc.send_signal(signal.SIGTERM)
                    if not await self._wait(0.05):
                        proc.send_signal(signal.SIGTERM)
                        if not await self._wait(10.0):
                            proc.kill()
                    await proc.wait()
                finally:
                    discard.cancel()
            if self._stderr_task is not None:
                await asyncio.gather(self._stderr_task, return_exceptions=True)
            if self._feeder is not None:
                await asyncio.gather(self._feeder, return_exceptions=True)
        except BaseException:
            self._kill_now()
            raise
        finally:
            self._close_local()

    async def drain_and_wait(self) -> None:
        """Drain (as on Ctrl-C) and wait for the supervisor to finish."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            self._close_local()
            return
        try:
            self.drain()
            discard = asyncio.ensure_future(self._discard_stdout())
            grace = self._options.get("grace")
            limit = 30.0 if grace is None else _seconds(grace)
            if not await self._wait(limit + 10.0):
                proc.kill()
            await proc.wait()
            discard.cancel()
        except BaseException:
            self._kill_now()
            raise
        finally:
            self._close_local()


def _seconds(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    text = str(value).strip()
    for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * scale
            except ValueError:
                break
    return 30.0


def _progress_bar(progress: Any, total: Optional[int]) -> Any:
    """A tqdm bar (terminal or Jupyter widget) when asked for and possible:
    ``"auto"`` shows it in a terminal or a notebook, True always."""
    if progress is not True and progress != "auto":
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    if progress == "auto":
        in_kernel = "ipykernel" in sys.modules
        if not (in_kernel or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())):
            return None
    return tqdm(total=total, unit="task", smoothing=0.1, dynamic_ncols=True)


# -- the public surface -------------------------------------------------------


class Pool:
    """A pool of worker processes run by the supervisor, for ``async with``.

    Every keyword is a supervisor option (``workers``, ``concurrency``,
    ``retries``, ``task_timeout``, ``output``, ``resume``...; durations in
    seconds or as text like ``"30s"``), or one of ``setup``/``teardown`` (run
    once per worker process), ``progress`` (``"auto"``, True, False),
    ``python`` (the workers' interpreter), ``supervisor`` (binary path),
    ``env``, ``cwd``, ``extra_args``. :meth:`map` takes the same keywords
    for one call.

    Each :meth:`map` is one supervisor run. Leaving the ``async with`` stops
    any run still going (``break``, an exception) and waits until its
    processes are gone; on ``KeyboardInterrupt`` or cancellation it drains
    them first.
    """

    def __init__(self, workers: Union[int, str] = "auto", **options: Any) -> None:
        options["workers"] = workers
        _check_options(options)
        self._options = options
        self._runs: List[MapRun] = []

    def map(self, fn: Any, items: Items, **options: Any) -> MapRun:
        """Runs ``fn`` on every item; ``async for`` the :class:`Result`
        objects as tasks complete, or ``await`` for the values in order."""
        run_ = MapRun(fn, items, {**self._options, **options})
        self._runs = [r for r in self._runs if not r._finished]
        self._runs.append(run_)
        return run_

    async def gather(self, fn: Any, items: Items, *, return_exceptions: bool = False, **options: Any) -> List[Any]:
        """The values in input order, like ``asyncio.gather``."""
        return await self.map(fn, items, **options).values(return_exceptions)

    async def close(self) -> None:
        """Stops every run still going."""
        runs, self._runs = self._runs, []
        for run_ in runs:
            await run_.aclose()

    async def __aenter__(self) -> "Pool":
        return self

    async def __aexit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if kind is not None and issubclass(kind, (KeyboardInterrupt, asyncio.CancelledError)):
            runs, self._runs = self._runs, []
            for run_ in runs:
                await run_.drain_and_wait()
        else:
            await self.close()


async def gather(fn: Any, items: Items, *, return_exceptions: bool = False, **options: Any) -> List[Any]:
    """``fn`` over ``items`` on every core; the values in input order, like
    ``asyncio.gather(*(fn(x) for x in items))``. An error raises
    :class:`TaskFailed` (or takes its place with ``return_exceptions=True``).
    Keywords: as for :class:`Pool`."""
    async with Pool(**options) as pool:
        return await pool.gather(fn, items, return_exceptions=return_exceptions)


def run(fn: Any, items: Items, *, return_exceptions: bool = False, **options: Any) -> List[Any]:
    """:func:`gather` for code that is not async: scripts, and notebooks
    (where an event loop is already running in this thread).

    The run gets its own event loop in a helper thread. Ctrl-C (or a
    notebook's interrupt) drains the run, then raises ``KeyboardInterrupt``;
    a second one stops it at once.
    """
    _check_options(options)
    box: Dict[str, Any] = {}
    ready = threading.Event()
    done = threading.Event()

    async def main() -> None:
        box["loop"] = asyncio.get_running_loop()
        run_ = box["run"] = MapRun(fn, items, dict(options))
        ready.set()
        try:
            box["value"] = await run_.values(return_exceptions)
        finally:
            await run_.aclose()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:  # handed to the caller's thread
            box["error"] = error
        finally:
            ready.set()
            done.set()

    thread = threading.Thread(target=thread_main, name="multiloop-run", daemon=True)
    thread.start()
    interrupts = 0
    while True:
        try:
            done.wait()
            break
        except KeyboardInterrupt:
            interrupts += 1
            ready.wait()
            loop, run_ = box.get("loop"), box.get("run")
            if loop is not None and run_ is not None:
                action = run_.drain if interrupts == 1 else run_._kill_now
                try:
                    loop.call_soon_threadsafe(action)
                except RuntimeError:
                    pass  # the loop has closed: the run is over
    thread.join()
    if interrupts:
        raise KeyboardInterrupt
    if "error" in box:
        raise box["error"]
    return box["value"]
