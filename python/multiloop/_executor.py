"""``multiloop.Executor``: a ``concurrent.futures.Executor`` on a warm fleet,
for ``loop.run_in_executor(executor, fn, arg)`` and for code without asyncio.

A background thread runs an event loop that owns one :class:`multiloop.Pool`;
``submit`` hands the call to that loop and returns a
``concurrent.futures.Future``. ``submit`` blocks while ``max_in_flight``
calls are out, so a producer cannot buffer without limit, and ``map`` keeps
at most ``max_in_flight`` futures, submitting the next item as it yields a
result, so a map of millions of items holds no more.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

from ._fleet import MAX_IN_FLIGHT
from ._options import check_options

#: What a call submitted after shutdown fails with (the stdlib's words).
SHUT_DOWN = "cannot schedule new futures after shutdown"


class Executor(concurrent.futures.Executor):
    """Runs calls on one warm fleet of worker processes.

    Keywords: as for :class:`multiloop.Pool` (``concurrency``,
    ``task_timeout``, ``retries``, ``max_tasks_per_worker``, ``grace``,
    ``max_in_flight``...). Functions go by reference when the workers can
    import them, else by value (cloudpickle), once per function; arguments
    and results cross as JSON. ``async def`` functions are awaited in the
    worker's event loop.
    """

    def __init__(self, workers: Union[int, str] = "auto", **options: Any) -> None:
        from .pool import Pool  # the driver, loaded on first use

        options.setdefault("progress", False)
        check_options(options)
        limit = options.get("max_in_flight")
        self._limit = MAX_IN_FLIGHT if limit is None else int(limit)
        self._slots = threading.BoundedSemaphore(self._limit)
        self._pool = Pool(workers, **options)
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._shutdown = False
        self._loop_ended = False
        self._futures: Set["concurrent.futures.Future[Any]"] = set()
        # Calls submitted and not yet handed to the loop thread.
        self._handed: List[Tuple["concurrent.futures.Future[Any]", Any, Tuple[Any, ...], Dict[str, Any]]] = []
        self._hand_over_due = False
        self._thread = threading.Thread(target=self._run_loop, name="multiloop-executor", daemon=True)
        self._thread.start()

    def _run_loop(self) -> None:
        self._loop.run_forever()
        # Stopped by shutdown: a call that came in after the last hand-over
        # (a submit blocked for a place across shutdown) fails, not hangs.
        with self._lock:
            self._loop_ended = True
            handed, self._handed = self._handed, []
        for future, *_ in handed:
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError(SHUT_DOWN))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "concurrent.futures.Future[Any]":
        with self._lock:
            if self._shutdown:
                raise RuntimeError(SHUT_DOWN)
        self._slots.acquire()
        future: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        future.add_done_callback(self._done)
        with self._lock:
            if self._loop_ended:
                future.set_exception(RuntimeError(SHUT_DOWN))
                return future
            self._futures.add(future)
            self._handed.append((future, fn, args, kwargs))
            wake = not self._hand_over_due
            self._hand_over_due = True
        if wake:
            # One wake-up of the loop thread for every call submitted before
            # it runs, not one (and a task) per call.
            try:
                self._loop.call_soon_threadsafe(self._hand_over)
            except RuntimeError:  # the loop has closed: shut down meanwhile
                future.set_exception(RuntimeError(SHUT_DOWN))
        return future

    def _hand_over(self) -> None:
        """On the loop thread: the calls submitted since the last hand-over
        go to the pool; each one's future follows its call's."""
        with self._lock:
            handed, self._handed = self._handed, []
            self._hand_over_due = False
        for future, fn, args, kwargs in handed:
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it was handed over: never sent
            try:
                call = self._pool.apply(fn, *args, **kwargs)
            except BaseException as error:  # noqa: B036 - this call fails, not the batch after it
                future.set_exception(error)
            else:
                call.add_done_callback(functools.partial(_follow, future))

    def map(  # type: ignore[override]
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None, chunksize: int = 1
    ) -> Iterator[Any]:
        """``fn(*args)`` for each ``args`` of ``zip(*iterables)``, the values
        in order, as ``concurrent.futures.Executor.map`` (``timeout`` counts
        from this call; ``chunksize`` is accepted and unused: calls already
        go in batches). Unlike it, at most ``max_in_flight`` items are
        submitted ahead of the values yielded, so memory stays flat."""
        end = None if timeout is None else time.monotonic() + timeout
        arguments = zip(*iterables)
        window: Deque["concurrent.futures.Future[Any]"] = collections.deque()
        for args in arguments:  # the first window now, as the stdlib does
            window.append(self.submit(fn, *args))
            if len(window) >= self._limit:
                break

        def values() -> Iterator[Any]:
            try:
                while window:
                    future = window.popleft()
                    left = None if end is None else end - time.monotonic()
                    value = future.result(left)
                    following = next(arguments, None)
                    if following is not None:
                        window.append(self.submit(fn, *following))
                    yield value
            finally:
                for future in window:
                    future.cancel()

        return values()

    def _done(self, future: "concurrent.futures.Future[Any]") -> None:
        self._slots.release()
        with self._lock:
            self._futures.discard(future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False, grace: Optional[float] = None) -> None:
        """No new calls; the fleet finishes the calls out (within ``grace``)
        and exits. With ``wait``, returns once its processes are gone."""
        with self._lock:
            if self._shutdown:
                already = True
            else:
                already = False
                self._shutdown = True
            pending = list(self._futures)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if already:
            if wait:
                self._thread.join()
            return
        closing = asyncio.run_coroutine_threadsafe(self._pool.close(grace), self._loop)

        def stop(_: Any) -> None:
            self._loop.call_soon_threadsafe(self._loop.stop)

        closing.add_done_callback(stop)
        if wait:
            self._thread.join()
            self._loop.close()
            closing.result()


def _follow(future: "concurrent.futures.Future[Any]", call: "asyncio.Future[Any]") -> None:
    """Settles an Executor's future as its call on the pool settled."""
    if call.cancelled():
        future.set_exception(concurrent.futures.CancelledError())
    elif call.exception() is not None:
        future.set_exception(call.exception())
    else:
        future.set_result(call.result())
