"""The Python worker runtime: one asyncio (or uvloop) event loop serving
tasks from the supervisor on fd 3 and sending results on fd 4, with the
same contract as the Rust runtime (``crates/worker``).

Started by the supervisor as ``python -m multiloop.worker SPEC <worker args>``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextvars
import inspect
import json
import logging
import os
import resource
import signal
import stat
import sys
import threading
import time
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import _protocol as proto
from ._kinds import Kind, SpecError, TaskError, input_check, load

#: Exit status of a worker that could not serve (bad arguments, no pipes,
#: a broken protocol, a failed setup); the supervisor reports it as a crash.
EXIT_CANNOT_SERVE = 2

#: Frames of a handler's traceback kept in a `failed` record's message.
TRACEBACK_FRAMES = 5

#: Longest traceback text kept in a `failed` record's message, in characters.
TRACEBACK_CHARS = 2000

#: The loop's ticker: a timer this often, whose lateness is the loop's lag
#: and whose silence tells the watchdog that one step holds the loop. It
#: runs only while tasks are in the worker: an idle worker (a warm pool
#: between calls) wakes for nothing but its heartbeats.
TICK = 0.010

#: How often the watchdog thread looks at the loop. A step that holds the
#: loop longer than this is reported as `held` (Rust samples every 10 ms; a
#: Python thread needs the GIL to look, so it looks less often).
SAMPLE = 0.020

#: Longest time a finished task's result waits in the worker. Results of
#: one loop iteration go out together, but one iteration of CPU-heavy steps
#: can last seconds; past this they go out mid-iteration, so the
#: supervisor's credit, progress and a crash's losses stay current.
FLUSH_EVERY = 0.010

#: Settings values that turn an option off.
_OFF = ("0", "false", "no", "off")

#: Python 3.12+: a task starts in the callback that read it (an eager task,
#: ``asyncio.current_task()`` and all), so one that completes without
#: waiting, such as a warm pool's trivial call, never waits for a turn of
#: the loop. 3.11 has no eager start; there each task waits for one.
EAGER = sys.version_info >= (3, 12)

_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_json_loads = json.loads

_RETRY: contextvars.ContextVar[List[bool]] = contextvars.ContextVar("multiloop_retry")


#: The spec of a warm pool's workers (``multiloop._calls``): their tasks are
#: calls, and an added task would be read as a call line, so ``add`` is
#: refused there with this message instead.
CALLS_SPEC = "multiloop._calls:kind"
NO_ADDS_IN_CALLS = (
    "multiloop.add is not available in a call on a warm pool (apply, submit, and "
    "map/starmap/gather without run options): run a handler that adds tasks with "
    "multiloop.run or multiloop.gather, or give pool.map/pool.gather a run option "
    "such as key= or max_depth= (a supervisor run of its own)"
)


class _Additions:
    """The tasks one attempt added, and the room its result frame leaves them."""

    __slots__ = ("items", "size", "room", "max_payload", "refused")

    def __init__(self, room: int, max_payload: int, refused: Optional[str] = None) -> None:
        self.items: List[proto.Added] = []
        self.size = 0
        self.room = room
        self.max_payload = max_payload
        self.refused = refused


_ADDS: contextvars.ContextVar[_Additions] = contextvars.ContextVar("multiloop_adds")


def add(item: Any, key: Optional[str] = None) -> None:
    """Inside a running handler: queue a follow-up task. ``item`` is encoded
    as JSON as the new task's input; ``key``, when given, dedupes it against
    every key the run has seen (input ``--key`` values and earlier
    additions). The additions travel with this attempt's result and count
    only if it returns an output: an attempt that raises, times out or whose
    worker dies adds nothing.

    Raises :class:`TaskError` (``bad_input``) for an item that does not
    encode or is over the frame limit, or when the additions no longer fit
    in the result frame, and (``failed``) in a call on a warm pool, whose
    tasks are calls; ``RuntimeError`` outside a handler."""
    adds = _ADDS.get(None)
    if adds is None:
        raise RuntimeError("multiloop.add called outside a handler")
    if adds.refused is not None:
        raise TaskError(adds.refused)
    try:
        data = _json_dumps(item).encode()
    except (TypeError, ValueError, RecursionError) as error:
        raise TaskError(f"added task does not encode: {_error_text(error)}", "bad_input") from None
    if len(data) > adds.max_payload:
        raise TaskError(
            f"added task of {len(data)} bytes is over the frame limit ({adds.max_payload} bytes)",
            "bad_input",
        )
    if key is not None and not isinstance(key, str):
        raise TaskError(f"an added task's key must be a str, not {type(key).__name__}", "bad_input")
    size = adds.size + proto.ADDED_OVERHEAD + len(data) + (len(key.encode()) if key else 0)
    if size > adds.room:
        raise TaskError(
            f"the {len(adds.items) + 1} tasks added so far take {size} bytes, "
            f"over the frame limit ({adds.room} bytes)"
        )
    adds.size = size
    adds.items.append(proto.Added(data, key))


def request_retry() -> None:
    """Asks the supervisor to run the current task again, as long as
    ``--retries`` allow; the output of the last attempt is what is recorded.
    For results that are not errors but are worth another try, like an HTTP
    503. Outside a handler it does nothing."""
    cell = _RETRY.get(None)
    if cell is not None:
        cell[0] = True


# -- the command line -------------------------------------------------------


def _setting(text: str) -> Tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m multiloop.worker",
        description="A multiloop Python worker. Started by `supervisor --python SPEC`, "
        "which passes these options and opens the task and result pipes on fds 3 and 4.",
    )
    parser.add_argument("spec", metavar="SPEC", help="MODULE:FUNCTION, MODULE:KIND or MODULE")
    parser.add_argument("--list-kinds", action="store_true", help="print the kinds and exit")
    parser.add_argument("--kind", help="the task kind to run")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--supervisor-pid", type=int)
    parser.add_argument("--concurrency", type=int, default=1024)
    parser.add_argument("--task-timeout-ms", type=int, default=0)
    parser.add_argument("--heartbeat-ms", type=int, default=500)
    parser.add_argument("--max-frame", type=int, default=proto.DEFAULT_MAX_FRAME)
    parser.add_argument("--set", dest="settings", action="append", type=_setting, default=[])
    return parser.parse_args(argv)


# -- the operating system ---------------------------------------------------


def _inherited_pipe(fd: int, role: str, spec: str) -> None:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        mode = 0
    if not stat.S_ISFIFO(mode):
        raise SpecError(
            f"fd {fd} ({role}) is not a pipe: a worker is started by the multiloop "
            f"supervisor (try `supervisor --python {spec}`)"
        )
    # Not for a handler's subprocesses: one that outlived us would hold the
    # pipe open and hide our death from the supervisor.
    os.set_inheritable(fd, False)


def _set_process_name(index: int) -> None:
    """Names the process `multiloop-w3` for `top` (the supervisor keeps the
    interpreter's argv[0], which Python needs to find its environment)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_NAME = 15
        libc.prctl(PR_SET_NAME, f"multiloop-w{index}".encode()[:15], 0, 0, 0)
    except Exception:  # a name for `top` is not worth failing over
        pass


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _current_rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _usage() -> proto.Usage:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return proto.Usage(
        user_us=int(ru.ru_utime * 1e6),
        system_us=int(ru.ru_stime * 1e6),
        # Linux reports ru_maxrss in KiB.
        max_rss_bytes=ru.ru_maxrss * 1024,
    )


class FrameWriter:
    """Whole frames onto the result pipe. The loop and the watchdog thread both
    write; the lock keeps one frame from landing inside another."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.broken = False
        # Blocking writes: a full pipe means the supervisor is behind, and
        # waiting for it is the back-pressure we want.
        os.set_blocking(fd, True)

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.broken:
                raise BrokenPipeError("the result pipe is closed")
            view = memoryview(data)
            try:
                while view:
                    n = os.write(self.fd, view)
                    view = view[n:]
            except OSError:
                self.broken = True
                raise


# -- the runtime ------------------------------------------------------------


class Runtime:
    """One worker process's serving loop. Counters are plain attributes: the
    loop thread writes them and the watchdog thread only reads them."""

    def __init__(
        self,
        kind: Kind,
        kind_names: List[str],
        args: argparse.Namespace,
        loop: asyncio.AbstractEventLoop,
        runtime_name: str,
    ) -> None:
        self.kind = kind
        self.kind_names = kind_names
        self.settings: Dict[str, str] = dict(args.settings)
        self.concurrency = max(1, args.concurrency)
        self.timeout = args.task_timeout_ms / 1000 if args.task_timeout_ms > 0 else None
        self.heartbeat = max(1, args.heartbeat_ms) / 1000
        self.max_frame = args.max_frame
        self.max_output = proto.max_result_payload(args.max_frame)
        self.max_added = proto.max_task_payload(args.max_frame)
        self.adds_refused = NO_ADDS_IN_CALLS if args.spec == CALLS_SPEC else None
        self.loop = loop
        self.runtime_name = runtime_name
        self.out = FrameWriter(proto.RESULT_FD)
        self.reader = proto.FrameReader(args.max_frame)
        self.pending: Deque[Tuple[int, bytes]] = collections.deque()
        self.results: List[proto.TaskResult] = []
        self.flush_scheduled = False
        self.last_flush = time.monotonic()
        self.reading = False
        # Inside _start_pending: a task that completes as it starts (eager,
        # 3.12+) calls _complete, which must neither start tasks again (the
        # loop there goes on) nor flush its result alone.
        self.starting = False
        self.eof = False
        self.received = 0
        self.done = 0
        self.running = 0
        self.finished: Optional[asyncio.Future[None]] = None
        self.fatal: Optional[BaseException] = None
        self.state: Any = None
        self.handle: Callable[..., Any] = kind.handle
        self.with_state = kind.setup is not None
        self.is_async = inspect.iscoroutinefunction(inspect.unwrap(kind.handle))
        self.check = input_check(kind.handle)
        # The ticker's view of the loop, read by the watchdog thread.
        self.ticks = 0
        self.last_tick = time.monotonic()
        self.tick_due = self.last_tick + TICK
        self.ticking = False
        self.last_lag = 0.0
        self.max_lag = 0.0
        self.loop_thread = threading.get_ident()

    # -- serving --------------------------------------------------------

    async def serve(self) -> None:
        if self.kind.setup is not None:
            try:
                self.state = await _maybe_await(self.kind.setup(dict(self.settings)))
            except Exception as error:
                raise SpecError(
                    f"setting up kind {self.kind.name!r}: {_error_text(error)}"
                ) from error
        self.out.write(
            proto.encode_hello(proto.Hello(os.getpid(), self.kind_names, self.runtime_name))
        )
        self.finished = self.loop.create_future()
        watchdog = Watchdog(self)
        watchdog.start()
        try:
            os.set_blocking(proto.TASK_FD, False)
            self._resume_reading()
            await self.finished
            self._flush()
        finally:
            watchdog.stop()
        if self.kind.teardown is not None:
            try:
                await _maybe_await(self.kind.teardown(self.state))
            except Exception as error:
                # Every result is already out: a failed teardown is worth a
                # line, not a crash that would look like lost work.
                print(
                    f"worker: teardown of kind {self.kind.name!r} failed: {_error_text(error)}",
                    file=sys.stderr,
                )
        self.out.write(proto.encode_bye(_usage()))

    def _resume_reading(self) -> None:
        if not self.reading and not self.eof:
            self.loop.add_reader(proto.TASK_FD, self._on_readable)
            self.reading = True

    def _pause_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(proto.TASK_FD)
            self.reading = False

    def _fail(self, error: BaseException) -> None:
        if self.finished is not None and not self.finished.done():
            self.finished.set_exception(error)

    def _on_readable(self) -> None:
        try:
            data = os.read(proto.TASK_FD, 1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._fail(SpecError(f"task pipe: {error}"))
            return
        if not data:
            self._pause_reading()
            self.eof = True
            if self.reader.buffered:
                # A torn last frame: the supervisor died mid-write, and
                # nothing more is coming. The tasks we have still finish.
                pass
            self._maybe_finish()
            return
        try:
            for payload in self.reader.feed(data):
                self.pending.extend(proto.decode_tasks(payload))
        except proto.ProtocolError as error:
            self._pause_reading()
            self._fail(SpecError(f"task pipe: {error}"))
            return
        self._start_pending()

    def _start_pending(self) -> None:
        if self.starting:
            return  # a task that completed as it started: the loop below goes on
        pending = self.pending
        run_task = self._run_task
        loop = self.loop
        if pending and not self.ticking and self.running < self.concurrency:
            # Before the tasks start: an eager one may hold the loop from
            # here on, and the watchdog measures the hold from the ticks.
            self._start_ticker()
        self.starting = True
        try:
            while pending and self.running < self.concurrency:
                task_id, payload = pending.popleft()
                self.running += 1
                self.received += 1
                if EAGER:
                    asyncio.Task(run_task(task_id, payload), loop=loop, eager_start=True)
                else:
                    loop.create_task(run_task(task_id, payload))
        finally:
            self.starting = False
        if self.results and not self.running:
            self._flush()  # every task of the batch completed as it started
        # Tasks beyond --concurrency wait here; stop reading until they
        # start, as the Rust runtime waits on its semaphore.
        if pending:
            self._pause_reading()
        else:
            self._resume_reading()

    def _maybe_finish(self) -> None:
        if self.eof and not self.running and not self.pending:
            if self.finished is not None and not self.finished.done():
                self.finished.set_result(None)

    async def _run_task(self, task_id: int, payload: bytes) -> None:
        # The watchdog finds this frame, by its code object, under whatever
        # step holds the loop, and reads `task_id` from it: naming the task
        # costs the loop nothing.
        started = time.perf_counter()
        retry = [False]
        _RETRY.set(retry)
        adds = _Additions(self.max_output, self.max_added, self.adds_refused)
        _ADDS.set(adds)
        result = proto.TaskResult(task_id, 0)
        try:
            try:
                value = _json_loads(payload)
            except ValueError as error:
                raise TaskError(f"input does not decode: {error}", "bad_input") from None
            if self.check is not None:
                value = self.check(value)
            if self.with_state:
                output = self.handle(value, self.state)
            else:
                output = self.handle(value)
            if self.is_async or inspect.isawaitable(output):
                if self.timeout is None:
                    output = await output
                else:
                    output = await self._with_timeout(output)
            try:
                data = _json_dumps(output).encode()
            except (TypeError, ValueError, RecursionError) as error:
                raise TaskError(f"output does not encode as JSON: {_error_text(error)}") from None
            if len(data) > self.max_output:
                raise TaskError(
                    f"output of {len(data)} bytes is over the frame limit "
                    f"({self.max_output} bytes)"
                )
            if len(data) + adds.size > self.max_output:
                raise TaskError(
                    f"output of {len(data)} bytes and added tasks of {adds.size} bytes are "
                    f"over the frame limit ({self.max_output} bytes)"
                )
            result.ok = data
            # Only an output carries additions: an error adds nothing.
            result.added = adds.items
        except TaskError as error:
            result.error_kind = proto.ERROR_KINDS.index(error.kind)
            result.message = _truncate(str(error.message), self.max_output)
        except asyncio.CancelledError:
            # Only our own timeout cancels a task (it is caught in
            # _with_timeout); anything else is the loop going down.
            raise
        except BaseException as error:  # noqa: B036 - SystemExit in a handler must not end the worker
            result.error_kind = proto.FAILED
            try:
                message = _failure_message(error)
            except Exception:  # an exception whose str() raises: the task still gets its record
                message = f"{type(error).__name__} (its message could not be read)"
            result.message = _truncate(message, self.max_output)
        result.micros = int((time.perf_counter() - started) * 1e6)
        result.retry = retry[0]
        self._complete(result)

    async def _with_timeout(self, awaitable: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        fired = [False]

        def expire() -> None:
            fired[0] = True
            task.cancel()

        timer = self.loop.call_later(self.timeout, expire)  # type: ignore[arg-type]
        try:
            return await awaitable
        except asyncio.CancelledError:
            if not fired[0]:
                raise
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()
            raise TaskError(
                f"task took longer than {int(self.timeout * 1000)} ms", "timeout"  # type: ignore[operator]
            ) from None
        finally:
            timer.cancel()

    def _complete(self, result: proto.TaskResult) -> None:
        self.running -= 1
        self.done += 1
        self.results.append(result)
        if (self.running == 0 and not self.starting) or time.monotonic() - self.last_flush >= FLUSH_EVERY:
            # The last task in flight: nothing else can join this batch, so
            # it goes now rather than a turn of the loop later.
            self._flush()
        elif not self.flush_scheduled:
            # Results of one loop iteration go out in one frame: batching
            # without a timer.
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        if self.pending:
            self._start_pending()
        elif self.eof:
            self._maybe_finish()

    def _flush(self) -> None:
        self.flush_scheduled = False
        self.last_flush = time.monotonic()
        results, self.results = self.results, []
        if not results:
            return
        # The Rust runtime's packing, by the protocol's worst-case bounds:
        # each frame stays within the limit.
        budget = self.max_frame - proto.BATCH_OVERHEAD
        chunks = []
        chunk: List[proto.TaskResult] = []
        size = 0
        for result in results:
            data = result.ok if result.ok is not None else result.message.encode()
            n = proto.RESULT_OVERHEAD + proto.ADDITIONS_OVERHEAD + len(data)
            if result.added:
                n += sum(proto.ADDED_OVERHEAD + len(a.payload) + len((a.key or "").encode()) for a in result.added)
            if size + n > budget and chunk:
                chunks.append(proto.encode_results(chunk))
                chunk, size = [], 0
            size += n
            chunk.append(result)
        chunks.append(proto.encode_results(chunk))
        try:
            self.out.write(b"".join(chunks))
        except OSError as error:
            self._fail(SpecError(f"result pipe: {error}"))

    def _start_ticker(self) -> None:
        """Tasks arrived at an idle worker: measure the loop again."""
        self.last_tick = time.monotonic()
        self.tick_due = self.last_tick + TICK
        self.ticking = True
        self.loop.call_at(self.loop.time() + TICK, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        lag = now - self.tick_due
        if lag < 0:
            lag = 0.0
        self.last_lag = lag
        if lag > self.max_lag:
            self.max_lag = lag
        self.last_tick = now
        self.tick_due = now + TICK
        self.ticks += 1
        if not self.running and not self.pending:
            # Idle: nothing to measure until a task comes (_start_pending).
            self.ticking = False
            return
        self.loop.call_at(self.loop.time() + TICK, self._tick)


class Watchdog(threading.Thread):
    """Sends heartbeats from beside the loop, so they keep coming while a
    step blocks it, saying which task holds the loop and for how long."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(name="multiloop-watchdog", daemon=True)
        self.rt = runtime
        self.stopping = threading.Event()
        self.run_task_code = Runtime._run_task.__code__
        # The hold in progress: (task id or None, since when).
        self.hold: Optional[Tuple[Optional[int], float]] = None
        self.blocked_closed = 0.0

    def stop(self) -> None:
        self.stopping.set()
        self.join()

    def run(self) -> None:
        rt = self.rt
        next_beat = time.monotonic()
        last_ticks = -1
        last_sample = time.monotonic()
        while True:
            now = time.monotonic()
            ticks = rt.ticks
            if not rt.ticking or ticks != last_ticks:
                # The loop turned since the last look: a hold, if any, ended
                # before its last tick.
                if self.hold is not None:
                    self.blocked_closed += max(0.0, rt.last_tick - self.hold[1])
                    self.hold = None
                last_ticks = ticks
            elif now - rt.tick_due > SAMPLE:
                task = self._current_task()
                if self.hold is None:
                    self.hold = (task, rt.last_tick)
                elif self.hold[0] != task:
                    self.blocked_closed += max(0.0, last_sample - self.hold[1])
                    self.hold = (task, last_sample)
            last_sample = now
            if now >= next_beat:
                next_beat = now + rt.heartbeat
                try:
                    rt.out.write(proto.encode_heartbeat(self._heartbeat(now)))
                except OSError:
                    return
            # An idle loop holds nothing: sleep until the next heartbeat. A
            # task that blocks the loop right after it arrives is still seen
            # then, from the tick that started it (rt.last_tick).
            look = SAMPLE if rt.ticking else rt.heartbeat
            if self.stopping.wait(min(look, max(0.0, next_beat - time.monotonic()))):
                return

    def _heartbeat(self, now: float) -> proto.Heartbeat:
        rt = self.rt
        lag = rt.last_lag if rt.ticking else 0.0
        overdue = now - rt.tick_due if rt.ticking else 0.0
        if overdue > lag:
            lag = overdue
        held = None
        blocked = self.blocked_closed
        if self.hold is not None:
            held = proto.Held(self.hold[0], int((now - self.hold[1]) * 1e6))
            blocked += now - self.hold[1]
        done = rt.done
        return proto.Heartbeat(
            lag_us=int(lag * 1e6),
            max_lag_us=int(max(lag, rt.max_lag) * 1e6),
            in_flight=max(0, rt.received - done) + len(rt.pending),
            done=done,
            cpu_us=time.process_time_ns() // 1000,
            rss_bytes=_current_rss(),
            held=held,
            blocked_us=int(blocked * 1e6),
        )

    def _current_task(self) -> Optional[int]:
        """The id of the task whose step holds the loop thread, from its stack."""
        frame = sys._current_frames().get(self.rt.loop_thread)
        code = self.run_task_code
        while frame is not None:
            if frame.f_code is code:
                task_id = frame.f_locals.get("task_id")
                return task_id if isinstance(task_id, int) else None
            frame = frame.f_back
        return None


# -- helpers ----------------------------------------------------------------


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _error_text(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _failure_message(error: BaseException) -> str:
    """`TypeName: message`, then the traceback's last frames, capped."""
    head = _error_text(error)
    frames = traceback.extract_tb(error.__traceback__)
    # Our own frame is not the user's business.
    frames = traceback.StackSummary.from_list(
        [f for f in frames if not f.filename.endswith(os.path.join("multiloop", "_runtime.py"))]
    )
    if not frames:
        return head
    shown = traceback.StackSummary.from_list(frames[-TRACEBACK_FRAMES:])
    lines = "".join(shown.format()).rstrip()
    more = len(frames) - len(shown)
    title = "Traceback (most recent call last" + (f", {more} earlier frames omitted" if more else "") + "):"
    tail = f"{title}\n{lines}"
    if len(tail) > TRACEBACK_CHARS:
        tail = "..." + tail[-TRACEBACK_CHARS:]
    return f"{head}\n{tail}"


def _truncate(message: str, limit: int) -> str:
    data = message.encode()
    if len(data) <= limit:
        return message
    return data[: max(0, limit - 3)].decode("utf-8", "ignore") + "..."


def _configure_output() -> None:
    """print() and logging go to the supervisor's stderr, line by line,
    prefixed with the worker index there; never into the protocol."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
        except (AttributeError, ValueError):
            pass
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
        )


def _new_loop(settings: Dict[str, str]) -> Tuple[asyncio.AbstractEventLoop, str]:
    """uvloop when it is installed, unless `--set uvloop=off` or
    MULTILOOP_UVLOOP=0; plain asyncio otherwise."""
    python = "python " + ".".join(str(n) for n in sys.version_info[:3])
    wanted = settings.get("uvloop", os.environ.get("MULTILOOP_UVLOOP", "on")).lower()
    if wanted not in _OFF:
        try:
            import uvloop  # type: ignore[import-not-found]

            return uvloop.new_event_loop(), f"{python} uvloop {uvloop.__version__}"
        except ImportError:
            pass
    return asyncio.new_event_loop(), f"{python} asyncio"


def main(argv: Optional[List[str]] = None) -> int:
    """The worker process: parse, load the kind, serve until the task pipe ends."""
    # The supervisor drains its workers itself; a Ctrl-C that reaches one
    # (or a stray `kill -INT`) must not cut tasks short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # `python -m` puts the working directory on sys.path; make sure of it
    # for `jobs:handle` when started any other way.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    _configure_output()
    try:
        kinds = load(args.spec)
        names = [k.name for k in kinds]
        if args.list_kinds:
            print("\n".join(names))
            return 0
        if args.kind is None:
            if len(kinds) != 1:
                raise SpecError(f"--kind is required; {args.spec} serves: {', '.join(names)}")
            kind = kinds[0]
        else:
            found = [k for k in kinds if k.name == args.kind]
            if not found:
                raise SpecError(
                    f"unknown task kind {args.kind!r}; {args.spec} serves: {', '.join(names)}"
                )
            kind = found[0]
        _inherited_pipe(proto.TASK_FD, "task pipe", args.spec)
        _inherited_pipe(proto.RESULT_FD, "result pipe", args.spec)
        _set_process_name(args.index)
        loop, runtime_name = _new_loop(dict(args.settings))
        asyncio.set_event_loop(loop)
        runtime = Runtime(kind, names, args, loop, runtime_name)
        try:
            loop.run_until_complete(runtime.serve())
        finally:
            asyncio.set_event_loop(None)
        return 0
    except SpecError as error:
        print(f"worker: {error}", file=sys.stderr)
        return EXIT_CANNOT_SERVE
    except BrokenPipeError:
        # The supervisor is gone; there is nobody to tell.
        return EXIT_CANNOT_SERVE
