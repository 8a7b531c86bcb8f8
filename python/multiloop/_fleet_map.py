"""A map on a persistent pool's warm fleet: :class:`FleetMap` sends one call
line per item through the fleet's bounded window (``max_in_flight``) and
gives the records back as :class:`Result` objects, by item.

It reads the items no faster than calls finish (and than ``async for``
takes their results), so a map of millions of items holds at most
``max_in_flight`` calls and results at once, and no future per item; any
number of maps, and single calls, share the fleet and its window.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, List, Optional

from ._fleet import Fleet, Record
from ._results import Result, ResultStream, SupervisorError, TaskFailed, value_or_failure
from ._run import Items, _encode, _item_error, _progress_bar

_MISSING = object()


class FleetMap(ResultStream):
    """One ``pool.map``/``starmap``/``gather`` on the warm fleet, with the
    surface of a run of its own: ``async for`` the :class:`Result` objects
    as calls complete, ``await`` (or :meth:`values`) for the values in
    input order. It starts when first iterated or awaited."""

    def __init__(self, fleet: Fleet, fn: Any, items: Items, spread: bool, progress: Any) -> None:
        self._fleet = fleet
        self._fn = fn
        self._items = items
        self._spread = spread
        self._progress = progress
        self._feeder: Optional["asyncio.Task[None]"] = None
        self._wake = asyncio.Event()
        self._error: Optional[BaseException] = None
        self._fed = False  # every item has been sent
        self._sent = 0
        self._done = 0
        # Results handed to the reader (or placed, for values()): the map
        # sends no more than max_in_flight items ahead of them, so a slow
        # ``async for`` holds the items back instead of piling up results.
        self._taken = 0
        self._room = asyncio.Event()
        self._results: List[Result] = []
        # In values() mode, records are placed here by index instead.
        self._out: Optional[List[Any]] = None
        self._return_exceptions = False
        self._consumed = False
        self._finished = False
        self._all_sent = False
        self.total: Optional[int] = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        self.status: Optional[int] = None

    @property
    def pid(self) -> Optional[int]:
        """The warm fleet's supervisor (shared by every call of the pool)."""
        return self._fleet.pid

    # ---- the fleet's side (see Fleet.send)

    def record(self, index: int, item: Any, record: Record) -> None:
        self._done += 1
        record["seq"] = index + 1
        out = self._out
        if out is None:
            self._results.append(Result(record, item))
        else:
            self._taken += 1
            self._room.set()
            if "error" in record:
                try:
                    out[index] = value_or_failure(Result(record, item), self._return_exceptions)
                except TaskFailed as failed:
                    # The fleet's reader calls this: values() raises it.
                    if self._error is None:
                        self._error = failed
            else:
                out[index] = record.get("ok")
        self._wake.set()

    def failed(self, index: int, item: Any, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake.set()

    # ---- feeding

    def _start(self) -> None:
        if self._consumed:
            raise RuntimeError("a map's results can be read once")
        self._consumed = True
        self._feeder = asyncio.ensure_future(self._feed())

    async def _feed(self) -> None:
        fleet = self._fleet
        try:
            head = fleet.head(fleet.name(self._fn))
            if hasattr(self._items, "__aiter__"):
                index = 0
                async for item in self._items:  # type: ignore[union-attr]
                    if not await self._send(fleet, head, index, item):
                        return
                    index += 1
            else:
                for index, item in enumerate(self._items):  # type: ignore[arg-type]
                    if not await self._send(fleet, head, index, item):
                        return
            self._all_sent = True
            if self.total is None:
                self.total = self._sent
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: B036 - the reader hears why
            if self._error is None:
                self._error = error
        finally:
            self._fed = True
            self._wake.set()

    async def _send(self, fleet: Fleet, head: str, index: int, item: Any) -> bool:
        """Sends one item once a slot is free; False once the map has failed."""
        try:
            args = _encode(list(item) if self._spread else [item])
        except (TypeError, ValueError, RecursionError) as error:
            raise _item_error(index, item, error) from None
        while self._sent - self._taken >= fleet.max_in_flight:
            self._room.clear()
            await self._room.wait()
        await fleet.slot()
        if self._error is not None:
            fleet.give_back()  # the reader is raising: no more calls
            return False
        if self._out is not None:
            self._out.append(_MISSING)
        self._sent += 1
        fleet.send(head + args + "}", (self, index, item))
        return True

    def _over(self) -> bool:
        return self._fed and self._done >= self._sent

    def _check_complete(self) -> None:
        if not self._all_sent:
            raise RuntimeError("the pool was closed before every item of the map was sent")

    # ---- reading

    async def batches(self) -> AsyncIterator[List[Result]]:
        """Results in batches as they arrive (cheaper than one at a time)."""
        self._start()
        bar = _progress_bar(self._progress, self.total)
        try:
            while True:
                # Nothing awaits between a look and the clear: no wake is lost.
                if self._results:
                    batch, self._results = self._results, []
                    self._taken += len(batch)
                    self._room.set()
                    if bar is not None:
                        bar.update(len(batch))
                    yield batch
                    continue
                if self._error is not None:
                    raise self._error
                if self._over():
                    self._check_complete()
                    return
                self._wake.clear()
                await self._wake.wait()
        finally:
            if bar is not None:
                bar.close()
            await self.aclose()

    async def values(self, return_exceptions: bool = False) -> List[Any]:
        """Values in input order; the first error raises :class:`TaskFailed`
        (or takes its place with ``return_exceptions=True``)."""
        self._out = []
        self._return_exceptions = return_exceptions
        self._start()
        bar = _progress_bar(self._progress, self.total)
        shown = 0
        try:
            while True:
                if bar is not None and self._done > shown:
                    bar.update(self._done - shown)
                    shown = self._done
                if self._error is not None:
                    raise self._error
                if self._over():
                    break
                self._wake.clear()
                await self._wake.wait()
        finally:
            if bar is not None:
                bar.close()
            await self.aclose()
        out = self._out
        self._check_complete()
        if any(v is _MISSING for v in out):
            raise SupervisorError("the pool's supervisor ended without results for every item", None)
        return out

    # ---- stopping

    async def aclose(self) -> None:
        """Stops sending items. Calls already out finish in the fleet; their
        records are dropped."""
        self._finished = True
        feeder = self._feeder
        if feeder is not None and not feeder.done():
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

    async def drain_and_wait(self) -> None:
        """Ctrl-C: no more items; the fleet's drain finishes the calls out."""
        await self.aclose()
