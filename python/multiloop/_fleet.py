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
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ._calls import ENV
from ._options import seconds
from ._results import Drained, SendError, SupervisorError, parse_records
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
    """``max_in_flight`` places for calls, handed to waiters in the order
    they came, at O(1) per release. Not ``asyncio.Semaphore``: in Python
    3.11 its release scans the waiters it already woke (they leave the
    queue only when they run), so a burst of results releasing places to
    thousands of waiting calls cost quadratic time: 21 million
    ``Future.done`` calls for 50,000 calls, 70 % of the driver's CPU."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, places: int) -> None:
        self._free = places
        self._waiters: "collections.deque[asyncio.Future[None]]" = collections.deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        place: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._waiters.append(place)
        try:
            await place  # release() handed its place to this waiter
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():
                self.release()  # handed over, then cancelled: pass it on
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            place = waiters.popleft()
            if not place.done():  # a cancelled waiter is skipped
                place.set_result(None)
                return
        self._free += 1

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
        # seq -> where its record goes (see send()).
        self._calls: Dict[int, Any] = {}
        #: The most calls that were ever out at once (at most max_in_flight).
        self.most_in_flight = 0
        self._out: List[str] = []
        self._wake = asyncio.Event()
        self._slots: Optional[Places] = None
        self._lines = 0
        self._closing = False
        self._serving: Optional["asyncio.Task[None]"] = None
        self._failure: Optional[BaseException] = None

    # ---- functions

    def name(self, fn: Any) -> str:
        """What a call line says for ``fn``: ``module:name``, or ``=digest``
        after writing its pickle once (atomically, so a worker never reads
        a torn file)."""
        if isinstance(fn, str):
            if ":" not in fn:
                raise TypeError(f"a function spec is 'module:function', not {fn!r}")
            return fn
        if not callable(fn):
            raise TypeError(f"expected a function or a 'module:function' spec, not {type(fn).__name__}")
        if not calls_can_run(fn):
            raise TypeError(
                f"{fn!r} has setup/teardown, so its handler takes their state: "
                "run it with pool.map or multiloop.gather (a run of its own)"
            )
        try:
            known = self._names.get(fn)
        except TypeError:  # an unhashable callable: pickled each time
            known = None
        if known is not None:
            return known
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

    def line(self, name: str, args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The stdin line of one call of the function named ``name``."""
        call: Dict[str, Any] = {"f": name}
        if args:
            call["a"] = list(args)
        if kwargs:
            call["k"] = dict(kwargs)
        try:
            return _encode(call)
        except (TypeError, ValueError, RecursionError) as error:
            raise SendError(
                f"the arguments of a call to {name} are not JSON-encodable ({error}); "
                "arguments and results cross processes as JSON"
            ) from None

    async def slot(self) -> None:
        """Waits until fewer than ``max_in_flight`` calls are out and takes
        that place; :meth:`send` must follow (or :meth:`give_back`)."""
        self._check_open()
        if self._slots is None:
            self._slots = Places(self.max_in_flight)
        await self._slots.acquire()
        try:
            self._check_open()
        except BaseException:
            self._slots.release()
            raise

    def give_back(self) -> None:
        """A slot taken by :meth:`slot` that no call will use."""
        assert self._slots is not None
        self._slots.release()

    def send(self, line: str, sink: Any) -> None:
        """Writes one call (a slot is held); its record goes to ``sink``:
        an asyncio Future, or a ``(map, index, item)`` tuple whose map is
        told with ``map.record(index, item, record)``."""
        self._lines += 1
        calls = self._calls
        calls[self._lines] = sink
        if len(calls) > self.most_in_flight:
            self.most_in_flight = len(calls)
        self._out.append(line)
        self._wake.set()
        if self._serving is None:
            self._serving = asyncio.ensure_future(self._serve())

    async def call(self, fn: Any, args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> "asyncio.Future[Record]":
        """Sends one call, waiting for a slot first; the future of its record."""
        line = self.line(self.name(fn), args, kwargs)  # errors before a slot is taken
        await self.slot()
        future: "asyncio.Future[Record]" = asyncio.get_running_loop().create_future()
        self.send(line, future)
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
        assert self._slots is not None
        self._slots.release()
        if sink.__class__ is tuple:
            sink[0].record(sink[1], sink[2], record)
        elif not sink.done():
            sink.set_result(record)

    def _fail_all(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        calls, self._calls = self._calls, {}
        for sink in calls.values():
            assert self._slots is not None
            self._slots.release()
            if sink.__class__ is tuple:
                sink[0].failed(error)
            elif not sink.done():
                sink.set_exception(error)

    # ---- the supervisor's pipes

    async def _feed(self) -> None:
        """Writes the calls as they come, many lines per write when they come
        faster than the pipe takes them; sleeps on an event while idle."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        stdin = proc.stdin
        try:
            while True:
                if not self._out:
                    if self._closing:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                lines, self._out = self._out, []
                stdin.write(("\n".join(lines) + "\n").encode())
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return  # the supervisor ended; _serve says why
        finally:
            if not stdin.is_closing():
                stdin.close()

    async def _finish(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()  # it may be asleep waiting for calls
        await super()._finish()

    async def _serve(self) -> None:
        """Reads records until the supervisor ends, then fails what is left;
        its exit (seen by the child watcher, not by polling) fails them too
        if its output does not end soon after (a worker holding the pipe)."""
        watcher: Optional["asyncio.Task[None]"] = None
        error: BaseException = SupervisorError("the supervisor ended with calls pending", None)
        try:
            await self.start()
            watcher = asyncio.ensure_future(self._on_exit(asyncio.current_task()))
            async for chunk in self._chunks():
                with _no_gc():
                    for record in parse_records(chunk):
                        self._settle(record)
            if self._draining:
                error = Drained("the pool was drained before this call ran")
            elif self.status not in (0, 1, None):
                error = SupervisorError(f"the supervisor exited with status {self.status}", self.status)
        except asyncio.CancelledError:
            error = SupervisorError("the pool was closed with calls pending", None)
            raise
        except BaseException as failure:  # noqa: B036 - every pending call hears why
            error = failure
        finally:
            if watcher is not None:
                watcher.cancel()
            self._fail_all(error)
            self._cleanup_dir()

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
        self._wake.set()
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
        self._wake.set()
        await self.aclose()
        if self._serving is not None:
            await asyncio.gather(self._serving, return_exceptions=True)
        else:
            self._cleanup_dir()
