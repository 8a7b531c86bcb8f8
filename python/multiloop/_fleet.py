"""A persistent pool's one supervisor run: :class:`Fleet` keeps the
supervisor and its workers up for the pool's life and feeds it one call per
stdin line, matching each record to its call by ``seq`` (the line number).
Single calls and maps' items (:mod:`multiloop._fleet_map`) share it and its
window: at most ``max_in_flight`` calls are out at once.

The workers run ``--python multiloop._calls:kind``, which runs the function a
line names (see :mod:`multiloop._calls`). A function the workers cannot
import is pickled once per pool into a private directory, named by its
digest; the lines name the digest.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ._calls import ENV
from ._options import seconds
from ._results import Drained, Result, SendError, SupervisorError, TaskFailed, parse_records
from ._run import MapRun, _encode, _no_gc
from ._target import _kind_class, _pickle, _reference

SPEC = "multiloop._calls:kind"

#: Options that belong to one run of one function over one input, not to a
#: pool of calls: a pool with them runs each map as its own supervisor run.
RUN_ONLY = (
    "task",
    "worker",
    "worker_args",
    "output",
    "resume",
    "resume_failed",
    "key",
    "shard",
    "shard_count",
    "keep_order",
    "setup",
    "teardown",
    # A crawl's: added tasks belong to a run (the warm fleet's are calls).
    "max_tasks",
    "max_depth",
    "frontier_memory",
    "follow",
    "scope",
    "allow",
    "deny",
    "follow_nofollow",
)

#: Calls written to the supervisor and not yet answered, at most, by default:
#: past it ``apply`` waits (and the Executor's ``submit`` blocks).
MAX_IN_FLIGHT = 10_000

Record = Dict[str, Any]


def fleet_options(options: Mapping[str, Any]) -> Optional[str]:
    """Why these options need a run per map (the first run-only one), or None."""
    for name in RUN_ONLY:
        if options.get(name) not in (None, False):
            return name
    return None


def calls_can_run(fn: Any) -> bool:
    """Whether single calls can run ``fn``: a function, or a
    ``module:function`` spec; not a ``multiloop.Kind`` with ``setup`` or
    ``teardown`` (its handler takes the state), nor a built-in kind."""
    if isinstance(fn, str):
        return ":" in fn
    kind_cls = _kind_class()
    if kind_cls is not None and isinstance(fn, kind_cls):
        return fn.setup is None and fn.teardown is None
    return callable(fn)


class Places:
    """``max_in_flight`` places for calls, handed out in the order they were
    asked for, at O(1) per release. Two kinds of ask wait in one queue: a
    coroutine awaiting :meth:`acquire` (``submit``, a map's feeder), and a
    call already encoded (``apply``: see :meth:`Fleet.apply`), which the
    release sends itself, so a waiting ``apply`` costs no task.

    Not ``asyncio.Semaphore``: in Python 3.11 its release scans the waiters
    it already woke (they leave the queue only when they run), so a burst of
    results releasing places to thousands of waiting calls cost quadratic
    time: 21 million ``Future.done`` calls for 50,000 calls, 70 % of the
    driver's CPU."""

    __slots__ = ("_free", "_waiters", "_send")

    def __init__(self, places: int, send: Callable[[str, "Sink"], None]) -> None:
        self._free = places
        #: asyncio Futures (a coroutine waiting) or (line, sink) pairs.
        self._waiters: "collections.deque[Any]" = collections.deque()
        self._send = send

    def take(self) -> bool:
        """Takes a free place now if one is free and nobody waits for one."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.take():
            return
        place: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._waiters.append(place)
        try:
            await place  # release() handed its place to this waiter
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():
                self.release()  # handed over, then cancelled: pass it on
            raise

    @property
    def waiting(self) -> bool:
        """Whether anything waits for a place."""
        return bool(self._waiters)

    def queue(self, line: str, sink: "Sink") -> None:
        """Sends ``line`` when its turn for a place comes."""
        self._waiters.append((line, sink))

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if waiter.__class__ is tuple:
                if not waiter[1][1].done():  # a call cancelled while it waited is skipped
                    self._send(*waiter)
                    return
            elif not waiter.done():  # a cancelled waiter is skipped
                waiter.set_result(None)
                return
        self._free += 1

    def fail(self, error: BaseException) -> None:
        """Fails the calls waiting with ``error`` and wakes the coroutines
        waiting (they find the fleet failed)."""
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if waiter.__class__ is tuple:
                sink = waiter[1]
                sink[0].failed(sink[1], sink[2], error)
            elif not waiter.done():
                waiter.set_result(None)


class _Calls:
    """Where single calls' records go: a sink ``(CALLS, future, (fn, args))``
    settles the future with the call's value or its :class:`TaskFailed`."""

    @staticmethod
    def record(future: "asyncio.Future[Any]", call: Tuple[Any, Tuple[Any, ...]], record: Record) -> None:
        if future.done():  # cancelled by its caller
            return
        if "error" in record:
            future.set_exception(call_failed(call[0], call[1], record))
        else:
            future.set_result(record.get("ok"))

    @staticmethod
    def failed(future: "asyncio.Future[Any]", call: Any, error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)


CALLS = _Calls()

#: Where one call's record goes: ``(target, a, b)``, told with
#: ``target.record(a, b, record)`` or ``target.failed(a, b, error)``: a
#: single call's future (:data:`CALLS`), or a map's item (``FleetMap``).
Sink = Tuple[Any, Any, Any]


def call_failed(fn: Any, args: Tuple[Any, ...], record: Record) -> TaskFailed:
    """The error a failed call raises, naming the function (a call has no
    item index)."""
    failed = TaskFailed(Result(record, list(args)))
    name = fn if isinstance(fn, str) else getattr(fn, "__qualname__", repr(fn))
    failed.args = (f"{name}() {failed.kind}: {failed.message}",)
    return failed


class Fleet(MapRun):
    """The supervisor of a persistent pool and the calls in flight on it."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        opts = dict(options)
        limit = opts.pop("max_in_flight", None)
        self.max_in_flight = MAX_IN_FLIGHT if limit is None else int(limit)
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {limit!r}")
        self._dir = tempfile.mkdtemp(prefix="multiloop-calls-")
        opts["env"] = {**(opts.get("env") or {}), ENV: self._dir}
        if opts.get("progress", "auto") == "auto":
            # A bar for a pool's whole life would sit in a terminal or a
            # notebook cell doing nothing; shown only when asked for.
            opts["progress"] = False
        super().__init__(SPEC, (), opts)
        self._sequence = None
        self.total = None
        self._names: Dict[Any, str] = {}
        self._heads: Dict[str, str] = {}
        # seq -> where its record goes (see send()).
        self._calls: Dict[int, Any] = {}
        #: The most calls that were ever out at once (at most max_in_flight).
        self.most_in_flight = 0
        self._out: List[str] = []
        self._stdin: Optional[asyncio.StreamWriter] = None
        self._records_fd: Optional[int] = None
        self._records_child: Optional[int] = None
        self._records_end: "Optional[asyncio.Future[None]]" = None
        self._rest = b""
        self._flush_due = False
        self._slots = Places(self.max_in_flight, self.send)
        self._lines = 0
        self._closing = False
        self._serving: Optional["asyncio.Task[None]"] = None
        self._failure: Optional[BaseException] = None

    # ---- functions

    def name(self, fn: Any) -> str:
        """What a call line says for ``fn``: ``module:name``, or ``=digest``
        after writing its pickle once (atomically, so a worker never reads
        a torn file)."""
        self._check_open()  # a closed fleet's directory is gone
        if isinstance(fn, str):
            if ":" not in fn:
                raise TypeError(f"a function spec is 'module:function', not {fn!r}")
            return fn
        if not callable(fn):
            raise TypeError(f"expected a function or a 'module:function' spec, not {type(fn).__name__}")
        try:
            known = self._names.get(fn)
        except TypeError:  # an unhashable callable: pickled each time
            known = None
        if known is not None:
            return known
        if not calls_can_run(fn):
            raise TypeError(
                f"{fn!r} has setup/teardown, so its handler takes their state: "
                "run it with pool.map or multiloop.gather (a run of its own)"
            )
        name = _reference(fn)
        if name is None:
            data = _pickle(fn, fn)
            digest = hashlib.sha256(data).hexdigest()
            path = os.path.join(self._dir, digest + ".pkl")
            if not os.path.exists(path):
                handle, scratch = tempfile.mkstemp(dir=self._dir, suffix=".part")
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                os.replace(scratch, path)
            name = "=" + digest
        try:
            self._names[fn] = name
        except TypeError:
            pass
        return name

    # ---- calls

    def head(self, name: str) -> str:
        """What every call line of the function named ``name`` starts with,
        up to its arguments: ``{"f": name, "a":``."""
        head = self._heads.get(name)
        if head is None:
            head = self._heads[name] = '{"f":' + _encode(name) + ',"a":'
        return head

    def line(self, name: str, args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The stdin line of one call of the function named ``name``:
        ``{"f": name, "a": [args], "k": {kwargs}}``, its head made once per
        function (this is per call, and the driver's busiest code)."""
        head = self.head(name)
        try:
            if kwargs:
                return head + _encode(args) + ',"k":' + _encode(kwargs) + "}"
            return head + _encode(args) + "}"
        except (TypeError, ValueError, RecursionError) as error:
            raise SendError(
                f"the arguments of a call to {name} are not JSON-encodable ({error}); "
                "arguments and results cross processes as JSON"
            ) from None

    async def slot(self) -> None:
        """Waits until fewer than ``max_in_flight`` calls are out and takes
        that place; :meth:`send` must follow (or :meth:`give_back`)."""
        self._check_open()
        await self._slots.acquire()
        try:
            self._check_open()
        except BaseException:
            self._slots.release()
            raise

    def give_back(self) -> None:
        """A slot taken by :meth:`slot` that no call will use."""
        self._slots.release()
        if self._closing:
            self._flush_soon()

    def send(self, line: str, sink: Sink) -> None:
        """Writes one call (a place is held); its record goes to ``sink``."""
        self._lines += 1
        calls = self._calls
        calls[self._lines] = sink
        if len(calls) > self.most_in_flight:
            self.most_in_flight = len(calls)
        self._out.append(line)
        if len(calls) == 1 and not self._flush_due and self._stdin is not None:
            self._flush()  # the only call out: nothing to wait for
        else:
            self._flush_soon()
        if self._serving is None:
            self._serving = asyncio.ensure_future(self._serve())

    def apply(self, fn: Any, args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> "asyncio.Future[Any]":
        """The future of one call's value (or its :class:`TaskFailed`). The
        call is sent now if a place is free, else it waits, encoded, for its
        turn: no coroutine or task per call, so a burst of calls costs the
        driver little more than their encoding. A call that cannot be sent
        (a closed pool, arguments that are not JSON) fails its future."""
        future: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        try:
            self._check_open()
            line = self.line(self.name(fn), args, kwargs)
        except Exception as error:  # noqa: BLE001 - raised where it is awaited
            future.set_exception(error)
            return future
        sink = (CALLS, future, (fn, args))
        if self._slots.take():
            self.send(line, sink)
        else:
            self._slots.queue(line, sink)
        return future

    async def submit(self, fn: Any, args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> "asyncio.Future[Any]":
        """Sends one call once a place is free (the wait is the
        back-pressure); the future of its value."""
        line = self.line(self.name(fn), args, kwargs)  # errors before a place is taken
        await self.slot()
        future: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        self.send(line, (CALLS, future, (fn, args)))
        return future

    @property
    def in_flight(self) -> int:
        """Calls written to the supervisor and not yet answered."""
        return len(self._calls)

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing or self._draining:
            raise RuntimeError("the pool is closed")

    def _settle(self, record: Record) -> None:
        sink = self._calls.pop(record.get("seq", 0), None)
        if sink is None:
            return
        self._slots.release()
        if self._closing:
            # The release may have sent nothing (a cancelled call, a
            # submit that will find the pool closed): stdin closes once
            # nothing waits, whichever release that is.
            self._flush_soon()
        sink[0].record(sink[1], sink[2], record)

    def _fail_all(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        self._slots.fail(error)
        calls, self._calls = self._calls, {}
        for sink in calls.values():
            sink[0].failed(sink[1], sink[2], error)

    # ---- the supervisor's pipes

    async def _feed(self) -> None:
        """The supervisor is up: what waited for it goes out now, the rest as
        it comes (see :meth:`_flush`)."""
        self._stdin = self._proc.stdin if self._proc is not None else None
        self._flush()

    def _flush_soon(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Writes the calls sent since the last flush in one write. Scheduled
        with ``call_soon`` by the first of them: every call made in one turn
        of the event loop goes out together, with no task to wake in between
        (a call sent while no other is out goes at once). No ``drain``:
        at most ``max_in_flight`` lines are out, which bounds the buffer."""
        self._flush_due = False
        stdin = self._stdin
        if stdin is None:  # not started yet: _feed flushes when it is
            return
        if self._out:
            lines, self._out = self._out, []
            stdin.write(("\n".join(lines) + "\n").encode())
        if self._closing and not self._slots.waiting and not stdin.is_closing():
            stdin.close()  # the supervisor finishes what is out and exits

    def _child_stdout(self) -> Any:
        # A pipe of its own, read by a callback (_on_records) rather than a
        # StreamReader and a task: a record settles its call in the turn of
        # the loop it arrives in.
        self._records_fd, write_end = os.pipe()
        self._records_child = write_end
        return write_end

    async def _serve(self) -> None:
        """Reads records until the supervisor ends, then fails what is left;
        its exit (seen by the child watcher, not by polling) fails them too
        if its output does not end soon after (a worker holding the pipe)."""
        watcher: Optional["asyncio.Task[None]"] = None
        error: BaseException = SupervisorError("the supervisor ended with calls pending", None)
        loop = asyncio.get_running_loop()
        try:
            try:
                await self.start()
            finally:
                if self._records_child is not None:
                    os.close(self._records_child)  # the supervisor holds it now
                    self._records_child = None
            watcher = asyncio.ensure_future(self._on_exit(asyncio.current_task()))
            self._records_end = loop.create_future()
            os.set_blocking(self._records_fd, False)
            loop.add_reader(self._records_fd, self._on_records)
            await self._records_end
            await self._finish()
            if self._draining:
                error = Drained("the pool was drained before this call ran")
            elif self.status not in (0, 1, None):
                error = SupervisorError(f"the supervisor exited with status {self.status}", self.status)
        except asyncio.CancelledError:
            error = SupervisorError("the pool was closed with calls pending", None)
            raise
        except BaseException as failure:  # noqa: B036 - every pending call hears why
            error = failure
            self._fail_all(error)
            if isinstance(failure, Exception):
                # Records that cannot be read: the fleet is of no more use,
                # and its processes go now, not at close().
                await self.aclose()
        finally:
            if watcher is not None:
                watcher.cancel()
            self._close_records(loop)
            self._fail_all(error)
            self._cleanup_dir()

    def _on_records(self) -> None:
        """The records pipe is readable: settles the calls whose records
        arrived (whole lines; a torn last line waits for its end)."""
        try:
            data = os.read(self._records_fd, 1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._end_records(SupervisorError(f"reading the supervisor's records: {error}", None))
            return
        if not data:
            self._end_records(None)
            return
        if self._rest:
            data = self._rest + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._rest = data
            return
        self._rest = data[cut + 1 :]
        chunk = data[:cut]
        if self._bar is not None:
            self._bar.update(chunk.count(b"\n") + 1)
        try:
            with _no_gc():
                records = parse_records(chunk)
        except ValueError as error:
            self._end_records(SupervisorError(f"the supervisor wrote a record that is not JSON: {error}", None))
            return
        try:
            for record in records:
                self._settle(record)
        except Exception as error:  # noqa: BLE001 - a callback must not swallow it: every call hears
            self._end_records(error)

    def _end_records(self, error: Optional[BaseException]) -> None:
        end = self._records_end
        if end is not None and not end.done():
            if error is None:
                end.set_result(None)
            else:
                end.set_exception(error)
        self._close_records(asyncio.get_running_loop())

    def _close_records(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._records_fd is not None:
            loop.remove_reader(self._records_fd)
            os.close(self._records_fd)
            self._records_fd = None

    async def _on_exit(self, serving: Any) -> None:
        assert self._exit is not None
        status = await self._exit
        done, _ = await asyncio.wait({serving}, timeout=0.5)
        if not done:
            self._fail_all(SupervisorError(f"the supervisor ended (status {status}) with calls pending", status))

    def _cleanup_dir(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- stopping

    async def close(self, grace: Optional[float] = None) -> None:
        """No new calls; the supervisor finishes those in flight (within
        ``grace``, default the pool's ``grace`` option or 30 s) and exits."""
        self._closing = True
        self._flush()
        serving = self._serving
        if serving is None:
            self._close_local()
            self._cleanup_dir()
            return
        if grace is None:
            option = self._options.get("grace")
            grace = 30.0 if option is None else seconds(option)
        done, _ = await asyncio.wait({serving}, timeout=grace + 5.0)
        if not done:
            await self.aclose()
        await asyncio.gather(serving, return_exceptions=True)

    async def drain_and_wait(self) -> None:
        self._closing = True
        await super().drain_and_wait()
        if self._serving is not None:
            await asyncio.gather(self._serving, return_exceptions=True)
        else:
            self._cleanup_dir()

    async def kill(self) -> None:
        """Stops the supervisor now (an error leaving ``async with``)."""
        self._closing = True
        self._flush()
        await self.aclose()
        if self._serving is not None:
            await asyncio.gather(self._serving, return_exceptions=True)
        else:
            self._cleanup_dir()
