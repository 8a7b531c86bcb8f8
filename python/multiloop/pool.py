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

The driver is split by reason to change: :mod:`multiloop._options` (the
keywords), :mod:`multiloop._binary` (finding the binary),
:mod:`multiloop._target` (by reference or by value), :mod:`multiloop._run`
(one run), :mod:`multiloop._results` (records and errors); this module is
the pool and the public surface. ``import multiloop`` loads none of it until
a driver name is used, so a worker process never does.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _options
from ._binary import find_supervisor
from ._options import check_options
from ._results import Drained, ErrorInfo, Result, SendError, SupervisorError, TaskFailed
from ._run import Items, MapRun
from ._fleet import Fleet, calls_can_run, fleet_options
from ._fleet_map import FleetMap
from ._executor import Executor

__all__ = [
    "Pool",
    "Executor",
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

# Where these lived before the split; scripts and tests use them here.
OPTIONS = _options.OPTIONS
DRIVER_OPTIONS = _options.DRIVER_OPTIONS
supervisor_args = _options.supervisor_args


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

    :meth:`apply`, :meth:`submit`, :meth:`map`, :meth:`starmap` and
    :meth:`gather` run on one warm supervisor and its workers, started by
    the first call and kept until :meth:`close`. At most ``max_in_flight``
    calls (default 10,000) are out at once, maps' items included: past it
    ``submit`` and the maps wait for a place, and an ``apply`` call (a
    future at once) waits, encoded, to be sent. A map with options of its own,
    or on a pool with a run-only option (``output``, ``resume``, ``key``,
    ``setup``...), is a supervisor run of its own. Leaving the
    ``async with`` closes the pool: normally the calls in flight finish
    (within ``grace``); on an exception every run stops at once; on
    ``KeyboardInterrupt`` or cancellation they drain. It waits until the
    processes are gone.
    """

    def __init__(self, workers: Union[int, str] = "auto", **options: Any) -> None:
        options["workers"] = workers
        check_options(options)
        self._options = options
        self._runs: List[Union[FleetMap, MapRun]] = []
        self._fleet: Optional[Fleet] = None
        self._closed = False

    # ---- calls on the warm fleet

    def _warm(self) -> Fleet:
        if self._closed:
            raise RuntimeError("the pool is closed")
        if self._fleet is None:
            why = fleet_options(self._options)
            if why is not None:
                raise TypeError(
                    f"a pool with {why}= runs each map as its own supervisor run; "
                    "apply/submit/starmap need a pool without it"
                )
            self._fleet = Fleet(self._options)
        return self._fleet

    def apply(self, fn: Any, /, *args: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        """``fn(*args, **kwargs)`` in a worker of this pool's warm fleet:
        ``await`` it for the value, or :class:`TaskFailed`. A future, not a
        coroutine, so ``asyncio.gather`` of many calls makes no task per call.
        Sent at once while fewer than ``max_in_flight`` calls are out, else it
        waits its turn (encoded, in the driver: to bound what a producer
        holds, ``await pool.submit`` instead)."""
        try:
            fleet = self._warm()
        except (RuntimeError, TypeError) as error:
            failed: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            return failed
        return fleet.apply(fn, args, kwargs)

    async def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        """Sends ``fn(*args, **kwargs)`` to the warm fleet and returns the
        future of its value (or :class:`TaskFailed`): ``future = await
        pool.submit(...)``. The ``await`` is the back-pressure: it waits for
        a slot while ``max_in_flight`` calls are out, then returns at once."""
        return await self._warm().submit(fn, args, kwargs)

    @property
    def in_flight(self) -> int:
        """Calls on the warm fleet written to its supervisor and not yet
        answered (at most ``max_in_flight``)."""
        return 0 if self._fleet is None else self._fleet.in_flight

    # ---- maps: on the warm fleet, or a supervisor run of their own

    def map(self, fn: Any, items: Items, **options: Any) -> Union[FleetMap, MapRun]:
        """Runs ``fn`` on every item; ``async for`` the :class:`Result`
        objects as calls complete, or ``await`` for the values in order.

        On the pool's warm fleet, through its ``max_in_flight`` window,
        beside any other maps and calls. A map of its own (a supervisor run,
        as :func:`gather`) when ``options`` are given, when the pool has a
        run-only option (``output``, ``resume``, ``key``, ``setup``...), or
        when ``fn`` cannot run as a call (a built-in kind, a
        :class:`multiloop.Kind` with ``setup``/``teardown``)."""
        if options or fleet_options(self._options) is not None or not calls_can_run(fn):
            run_ = MapRun(fn, items, {**self._run_options(), **options})
            self._track(run_)
            return run_
        return self._fleet_map(fn, items, spread=False)

    async def starmap(
        self, fn: Any, arguments: Iterable[Sequence[Any]], *, return_exceptions: bool = False
    ) -> List[Any]:
        """``fn(*args)`` for each ``args``, on the warm fleet; the values in
        input order (an error raises :class:`TaskFailed`, or takes its
        place with ``return_exceptions=True``)."""
        return await self._fleet_map(fn, arguments, spread=True).values(return_exceptions)

    async def gather(self, fn: Any, items: Items, *, return_exceptions: bool = False, **options: Any) -> List[Any]:
        """The values of :meth:`map` in input order, like ``asyncio.gather``."""
        return await self.map(fn, items, **options).values(return_exceptions)

    def _fleet_map(self, fn: Any, items: Items, spread: bool) -> FleetMap:
        fleet = self._warm()
        fleet.name(fn)  # a function that cannot be sent fails here, not when awaited
        run_ = FleetMap(fleet, fn, items, spread, self._options.get("progress", "auto"))
        self._track(run_)
        return run_

    def _track(self, run_: Union[FleetMap, MapRun]) -> None:
        self._runs = [r for r in self._runs if not r._finished]
        self._runs.append(run_)

    def _run_options(self) -> Dict[str, Any]:
        return {k: v for k, v in self._options.items() if k not in ("max_in_flight",)}

    async def gather(
        self, fn: Any, items: Items, *, return_exceptions: bool = False, results: bool = False, **options: Any
    ) -> List[Any]:
        """The values of :meth:`map` in input order, like ``asyncio.gather``.
        ``results=True``: every :class:`Result` instead, added tasks' too,
        from a run of its own (as :meth:`MapRun.results`)."""
        if results:
            run_ = MapRun(fn, items, {**self._run_options(), **options})
            self._track(run_)
            return await run_.results()
        return await self.map(fn, items, **options).values(return_exceptions)

    async def close(self, grace: Optional[float] = None) -> None:
        """Stops every run still going; the warm fleet finishes the calls in
        flight (within ``grace``) and exits."""
        self._closed = True
        runs, self._runs = self._runs, []
        for run_ in runs:
            await run_.aclose()
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            await fleet.close(grace)

    async def __aenter__(self) -> "Pool":
        return self

    async def __aexit__(self, kind: Any, error: Any, traceback: Any) -> None:
        self._closed = True
        if kind is not None and issubclass(kind, (KeyboardInterrupt, asyncio.CancelledError)):
            runs, self._runs = self._runs, []
            for run_ in runs:
                await run_.drain_and_wait()
            fleet, self._fleet = self._fleet, None
            if fleet is not None:
                await fleet.drain_and_wait()
        elif kind is not None:
            runs, self._runs = self._runs, []
            for run_ in runs:
                await run_.aclose()
            fleet, self._fleet = self._fleet, None
            if fleet is not None:
                await fleet.kill()
        else:
            await self.close()


async def gather(
    fn: Any, items: Items, *, return_exceptions: bool = False, results: bool = False, **options: Any
) -> List[Any]:
    """``fn`` over ``items`` on every core; the values in input order, like
    ``asyncio.gather(*(fn(x) for x in items))``, then those of the tasks
    ``fn`` added with ``multiloop.add`` (in path order). An error raises
    :class:`TaskFailed` (or takes its place with ``return_exceptions=True``).
    ``results=True`` returns every task's :class:`Result` in that order
    instead (``index``/``item``, or ``path``/``parent``/``depth``; errors
    inside, never raised). Keywords: as for :class:`Pool`."""
    check_options(options)
    # One batch: one supervisor run, streamed (cheaper per item than calls
    # on a warm fleet, and a handler may add tasks).
    run_ = MapRun(fn, items, dict(options))
    try:
        return await (run_.results() if results else run_.values(return_exceptions))
    finally:
        await run_.aclose()


def run(
    fn: Any, items: Items, *, return_exceptions: bool = False, results: bool = False, **options: Any
) -> List[Any]:
    """:func:`gather` for code that is not async: scripts, and notebooks
    (where an event loop is already running in this thread). A crawl is a
    handler that calls ``multiloop.add`` and a list of seeds:
    ``multiloop.run(crawl, seeds, key="url", results=True)``.

    The run gets its own event loop in a helper thread. Ctrl-C (or a
    notebook's interrupt) drains the run, then raises ``KeyboardInterrupt``;
    a second one stops it at once.
    """
    check_options(options)
    box: Dict[str, Any] = {}
    ready = threading.Event()
    done = threading.Event()

    async def main() -> None:
        box["loop"] = asyncio.get_running_loop()
        run_ = box["run"] = MapRun(fn, items, dict(options))
        ready.set()
        try:
            box["value"] = await (run_.results() if results else run_.values(return_exceptions))
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
