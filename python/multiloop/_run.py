"""One run of the supervisor: :class:`MapRun` starts the binary, streams the
items into its stdin as JSON lines and reads its records back."""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import fcntl
import gc
import json
import os
import reprlib
import signal
import sys
import weakref
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from ._binary import find_supervisor
from ._options import check_options, seconds, supervisor_args
from ._results import Drained, Result, ResultStream, SendError, SupervisorError, parse_records, value_or_failure
from ._target import Target

Items = Union[Iterable[Any], AsyncIterable[Any]]

_MISSING = object()


# -- items as JSON lines -------------------------------------------------------


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


def _path_key(path: str) -> Tuple[int, ...]:
    """An added task's path as numbers, so that ``"1.10"`` sorts after
    ``"1.9"`` and children after their parent (``supervisor merge``'s order)."""
    return tuple(int(part) for part in path.split("."))


class MapRun(ResultStream):
    """One ``pool.map``: a supervisor process and the items streaming into it.

    ``async for result in run`` yields :class:`Result` objects as tasks
    complete, those of the tasks a handler added (``multiloop.add``) too;
    ``await run`` gives the values in input order, then the added tasks'
    values (raising :class:`TaskFailed` for the first error, like
    ``aiomultiprocess``); :meth:`results` gives every :class:`Result`.

    ``added_tasks`` counts the additions the run accepted and ``kept_out``
    what dedupe and the limits refused, by reason (``seen``, ``max_depth``,
    ``max_tasks``), over the records read so far (a resumed run's old ones
    included).
    """

    def __init__(self, fn: Any, items: Items, options: Dict[str, Any]) -> None:
        check_options(options)
        self._fn = fn
        self._items = items
        self._options = options
        self._proc: Optional[asyncio.subprocess.Process] = None
        self._exit: Optional["asyncio.Future[int]"] = None
        self._target: Optional[Target] = None
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
        # Added tasks not yet recorded, by path: (task, key) from their
        # parent's record, which always comes first (a child is queued only
        # once its parent's record is on its way to the writer).
        self._added: Dict[str, Tuple[Any, Any]] = {}
        self.added_tasks = 0
        self.kept_out: Dict[str, int] = {}
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
        self._target = Target(self._fn, options)
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
                stdout=self._child_stdout(),
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
        if self._bar is not None and self._bar.total is not None:
            self._bar.total += self.added_tasks  # added by old records
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
                    seq = record.get("seq")
                    # Tasks a handler added are known by their path.
                    last[seq if isinstance(seq, str) else record.get(ident)] = record
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
        if "added" in record:
            self._note_additions(record)
        seq = record.get("seq", 0)
        if isinstance(seq, str):
            # Added by a handler: not one of the items; its task and key
            # are in its parent's record.
            task, key = self._added.pop(seq, (None, None))
            return Result(record, task, key)
        if self._sequence is not None:
            item = self._sequence[seq - 1] if 0 < seq <= len(self._sequence) else None
        else:
            item = self._pending.pop(seq, None)
        return Result(record, item)

    def _note_additions(self, record: Dict[str, Any]) -> None:
        """A parent's record: its children's tasks and keys, kept until
        their own records come, and the run's counts."""
        entries = record.get("added") or ()
        seq = record["seq"]
        for place, entry in enumerate(entries, 1):
            # A `bad` entry (not JSON, over --max-frame) has a path and a
            # bad_input record of its own, but no task.
            self._added[f"{seq}.{place}"] = (entry.get("task"), entry.get("key"))
        self.added_tasks += len(entries)
        for reason, count in (record.get("kept_out") or {}).items():
            self.kept_out[reason] = self.kept_out.get(reason, 0) + int(count)
        bar = self._bar
        if bar is not None and bar.total is not None and entries:
            bar.total += len(entries)
            bar.refresh()

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
                    # Every item is fed again on a resume: the items and
                    # the additions counted so far.
                    self._bar.total = index + self.added_tasks
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

    def _child_stdout(self) -> Any:
        """Where the supervisor writes its records: a pipe that
        :meth:`_chunks` reads, or nowhere when they go to an output file."""
        return asyncio.subprocess.DEVNULL if self._options.get("output") is not None else asyncio.subprocess.PIPE

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
                batch = [make(r) for r in parse_records(chunk)]
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

    async def values(self, return_exceptions: bool = False) -> List[Any]:
        """The items' values in input order, then the values of the tasks
        handlers added (``multiloop.add``) in path order (``"1.1"``,
        ``"1.1.1"``, ``"1.2"``, ``"2.1"``: children after their parent, as
        ``supervisor merge`` writes them); without additions, exactly one
        value per item. The first error raises :class:`TaskFailed` (or
        takes its place with ``return_exceptions=True``)."""
        return await self._collect(return_exceptions, False)

    async def results(self) -> List[Result]:
        """Every task's :class:`Result`, in the order of :meth:`values`: the
        items' (``index``, ``item``), then the added tasks' (``path``,
        ``parent``, ``depth``, ``item``). A task's error is in its result
        (``ok``, ``error``, ``unwrap()``), never raised."""
        return await self._collect(True, True)

    async def _collect(self, return_exceptions: bool, as_results: bool) -> List[Any]:
        if self._sequence is None:
            # Order needs the length and the items; a generator is read here.
            items = self._items
            if hasattr(items, "__aiter__"):
                items = [x async for x in items]  # type: ignore[union-attr]
            self._items = self._sequence = list(items)  # type: ignore[arg-type]
            self.total = len(self._sequence)
        out: List[Any] = [_MISSING] * len(self._sequence)
        added: List[Tuple[Tuple[int, ...], Any]] = []

        def place(result: Result) -> None:
            entry = result if as_results else value_or_failure(result, return_exceptions)
            seq = result.record["seq"]
            if isinstance(seq, str):
                added.append((_path_key(seq), entry))
            else:
                out[seq - 1] = entry

        try:
            await self.start()
            old, self._old = self._old, []
            for result in old:
                place(result)
            make = self._result
            async for chunk in self._chunks():
                with _no_gc():
                    for record in parse_records(chunk):
                        seq = record["seq"]
                        if as_results or "error" in record or "added" in record or isinstance(seq, str):
                            place(make(record))  # an error, a parent or a task a handler added
                        else:
                            out[seq - 1] = record.get("ok")
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
        added.sort(key=lambda pair: pair[0])
        if as_results:
            # A shard's run has the results of its own items only.
            return [v for v in out if v is not _MISSING] + [entry for _, entry in added]
        return [None if v is _MISSING else v for v in out] + [entry for _, entry in added]

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
            limit = 30.0 if grace is None else seconds(grace)
            if not await self._wait(limit + 10.0):
                proc.kill()
            await proc.wait()
            discard.cancel()
        except BaseException:
            self._kill_now()
            raise
        finally:
            self._close_local()


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
