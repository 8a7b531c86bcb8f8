"""The persistent pool (``apply``/``submit``/``map``/``starmap``/``gather``
on one warm supervisor) and ``multiloop.Executor``, through the real
supervisor binary and real Python workers; every wait has a deadline."""

import asyncio
import collections
import os
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # pool_jobs, imported by reference

import multiloop  # noqa: E402
import pool_jobs  # noqa: E402
from test_pool import DEADLINE, children, gone, pids_with, run_script, wait_for  # noqa: E402


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, DEADLINE))


class Started:
    """A datagram socket the ``pool_jobs.hold`` calls report to: ``await
    started.next()`` is the pid of the worker where a call has started."""

    def __init__(self, tmp_path):
        self.address = str(tmp_path / "started.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.sock.setblocking(False)

    async def next(self):
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 64), DEADLINE)
        return int(data)

    def close(self):
        self.sock.close()


async def fleet_pids(pool):
    """The supervisor's pid and its workers' (known once each has answered)."""
    workers = set()
    end = time.monotonic() + DEADLINE
    while len(workers) < 2:
        assert time.monotonic() < end, f"only workers {workers} answered"
        workers.update(await asyncio.gather(*(pool.apply(pool_jobs.pid) for _ in range(20))))
    return pool._fleet.pid, workers


# -- calls ----------------------------------------------------------------------


def test_mixed_functions_run_on_one_warm_fleet():
    scale = 3

    async def times(x):  # a closure: by value
        await asyncio.sleep(0.001)
        return x * scale

    def add(a, b=0):  # plain, by value
        return a + b

    async def main():
        async with multiloop.Pool(workers=2, progress=False) as pool:
            assert await pool.apply(times, 2) == 6
            first = pool._fleet.pid
            got = await asyncio.gather(
                pool.starmap(add, [(i, i) for i in range(100)]),
                pool.gather(times, range(100)),
                pool.gather(pool_jobs.sim, [{"n": i, "iters": 10} for i in range(100)]),
                await pool.submit(add, 1, b=41),
                *(pool.apply(add, i, b=1) for i in range(50)),
            )
            assert got[0] == [2 * i for i in range(100)]
            assert got[1] == [3 * i for i in range(100)]
            assert got[2] == [{"sum": 45, "n": i} for i in range(100)]
            assert got[3] == 42
            assert got[4:] == [i + 1 for i in range(50)]
            assert pool._fleet.pid == first, "every call ran on the one supervisor"
            # Each by-value function was pickled once, not once per call.
            assert len(list(Path(pool._fleet._dir).glob("*.pkl"))) == 2
            with pytest.raises(multiloop.TaskFailed) as failed:
                await pool.apply(add, "x", b=1)
            assert failed.value.kind == "failed" and "TypeError" in failed.value.message
            assert await pool.apply(add, 1) == 1, "a failed call leaves the pool up"

    run(main())


def test_maps_run_on_the_warm_fleet_beside_calls():
    scale = 3

    async def times(x):  # a closure: by value
        await asyncio.sleep(0.001)
        return x * scale

    def items():  # read lazily, through the window
        yield from ({"n": i, "iters": 10} for i in range(300))

    async def main():
        async with multiloop.Pool(workers=2, concurrency=50, max_in_flight=64, progress=False) as pool:
            await pool.apply(pool_jobs.pid)
            first = pool._fleet.pid
            maps = [pool.map(times, range(500)), pool.map(pool_jobs.sim, items())]
            assert all(m.pid == first for m in maps), "a map is on the warm fleet"
            got = await asyncio.gather(
                maps[0],
                maps[1],
                pool.starmap(divmod, [(i, 7) for i in range(200)]),
                *(pool.apply(pool_jobs.echo, i) for i in range(100)),
            )
            assert got[0] == [3 * i for i in range(500)]
            assert got[1] == [{"sum": 45, "n": i} for i in range(300)]
            assert got[2] == [list(divmod(i, 7)) for i in range(200)]
            assert got[3:] == list(range(100))
            # As they complete, with the item and its index; failures per item.
            items_ = [{"n": i, "fault": "raise"} if i % 10 == 3 else {"n": i} for i in range(50)]
            seen = {}
            async for result in pool.map(pool_jobs.sim, items_):
                seen[result.index] = result
            assert sorted(seen) == list(range(50))
            for index, result in seen.items():
                assert result.item == items_[index]
                assert result.ok == (index % 10 != 3), result
            assert seen[3].error.kind == "failed" and "bad item 3" in seen[3].error.message
            with pytest.raises(multiloop.TaskFailed) as failed:
                await pool.gather(pool_jobs.sim, items_)
            assert failed.value.index % 10 == 3 and failed.value.item == items_[failed.value.index]
            with pytest.raises(multiloop.SendError, match="item 1 is not JSON-encodable"):
                await pool.gather(pool_jobs.echo, [1, {1, 2}, 3])
            for _ in range(5):
                assert await pool.gather(pool_jobs.echo, range(20)) == list(range(20))
            assert pool._fleet.pid == first, "one supervisor for every map"
            supervisors = [p for p in pids_with("multiloop._calls:kind") if p in children(os.getpid())]
            assert supervisors == [first], supervisors
            assert pool._fleet.most_in_flight <= 64

    run(main())


def test_a_worker_sigkilled_during_a_map_loses_nothing(tmp_path):
    started = Started(tmp_path)

    async def main():
        async with multiloop.Pool(workers=2, concurrency=50, progress=False) as pool:
            supervisor, _ = await fleet_pids(pool)
            run_ = asyncio.ensure_future(pool.starmap(pool_jobs.hold, [(started.address, 300, i) for i in range(60)]))
            victim = await started.next()
            os.kill(victim, signal.SIGKILL)
            assert await run_ == list(range(60))
            assert await pool.gather(pool_jobs.echo, range(10)) == list(range(10))
            assert pool._fleet.pid == supervisor

    try:
        run(main())
    finally:
        started.close()


def test_maps_and_calls_stay_within_max_in_flight():
    bound = 7
    seen = []

    async def main():
        async with multiloop.Pool(workers=2, concurrency=100, max_in_flight=bound, progress=False) as pool:

            def items():
                for i in range(3000):
                    # The map reads an item only once a call has finished.
                    seen.append(pool.in_flight)
                    yield i

            async def producer(base):
                for i in range(300):
                    value = await pool.submit(pool_jobs.echo, base + i)  # waits at the bound
                    seen.append(pool.in_flight)
                    assert pool.in_flight <= bound
                    await value

            got = await asyncio.gather(pool.gather(pool_jobs.echo, items()), producer(0), producer(1000))
            assert got[0] == list(range(3000))
            assert pool._fleet.most_in_flight == bound, "the window was used, and never passed"
            # A slow reader holds the items back: results do not pile up.
            run_ = pool.map(pool_jobs.echo, range(400))
            read = 0
            async for _ in run_:
                read += 1
                ahead = run_._sent - read
                assert ahead <= 2 * bound, f"{ahead} items sent ahead of the reader"
                await asyncio.sleep(0.001)  # a reader slower than the fleet
            assert read == 400

    run(main())
    assert max(seen) <= bound, max(seen)


def test_recycling_by_task_count_with_one_worker_replaces_the_process():
    # A worker due for recycling used to take tasks until its replacement was
    # up, so one Python worker (slow to start) served a whole short run.
    async def main():
        async with multiloop.Pool(workers=1, max_tasks_per_worker=10, progress=False) as pool:
            return await pool.gather(pool_jobs.pid_of, range(200))

    for pids in (run(main()), multiloop.run(pool_jobs.pid_of, list(range(200)), workers=1, max_tasks_per_worker=10)):
        counts = collections.Counter(pids)
        # --max-tasks-per-worker is jittered by up to 10 %.
        assert max(counts.values()) <= 11, counts
        assert len(counts) >= 18, counts


def test_a_thousand_concurrent_apply_calls():
    async def main():
        async with multiloop.Pool(workers=2, concurrency=100, progress=False) as pool:
            got = await asyncio.gather(*(pool.apply(pool_jobs.echo, {"i": i}) for i in range(1000)))
            assert got == [{"i": i} for i in range(1000)]

    run(main())


def test_calls_out_are_bounded_by_max_in_flight(tmp_path):
    started = Started(tmp_path)

    async def main():
        pool = multiloop.Pool(workers=1, concurrency=100, max_in_flight=5, progress=False)
        calls = [asyncio.ensure_future(pool.apply(pool_jobs.hold, started.address, 60_000, i)) for i in range(20)]
        for _ in range(5):
            await started.next()
        assert pool._fleet._lines == 5 and len(pool._fleet._calls) == 5
        assert not any(call.done() for call in calls)
        await pool._fleet.kill()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, (multiloop.SupervisorError, RuntimeError)) for r in results), results

    try:
        run(main())
    finally:
        started.close()


def test_calls_past_max_in_flight_wait_in_the_driver_and_close_finishes_them(tmp_path):
    started = Started(tmp_path)

    async def main():
        pool = multiloop.Pool(workers=1, concurrency=100, max_in_flight=3, progress=False)
        held = [pool.apply(pool_jobs.hold, started.address, 300, i) for i in range(3)]
        waiting = [pool.apply(pool_jobs.echo, i) for i in range(10)]
        # apply returns a future at once, sent or not: no task per call.
        assert all(isinstance(f, asyncio.Future) for f in held + waiting)
        waiting[4].cancel()  # cancelled while it waits: never sent
        for _ in range(3):
            await started.next()
        fleet = pool._fleet
        assert fleet._lines == 3 and not any(f.done() for f in held), "three out, the rest wait"
        await pool.close(grace=30)
        assert [f.result() for f in held] == [0, 1, 2]
        assert [f.result() for i, f in enumerate(waiting) if i != 4] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
        assert waiting[4].cancelled()
        assert fleet._lines == 12, "every call sent once, the cancelled one never"
        assert fleet.most_in_flight == 3
        failed = pool.apply(pool_jobs.echo, 1)
        with pytest.raises(RuntimeError, match="closed"):
            await failed

    try:
        run(main())
    finally:
        started.close()


@pytest.mark.parametrize("waiter", ["cancelled apply", "submit", "map"])
def test_close_does_not_wait_for_what_will_never_be_sent(tmp_path, waiter):
    # One call holds the only place; behind it waits something that close()
    # will never send. close() returns when the held call is done, not
    # after its grace.
    started = Started(tmp_path)

    async def main():
        pool = multiloop.Pool(workers=1, concurrency=10, max_in_flight=1, progress=False)
        held = pool.apply(pool_jobs.hold, started.address, 300, "held")
        await started.next()
        if waiter == "cancelled apply":
            behind = pool.apply(pool_jobs.echo, 1)
            behind.cancel()
        elif waiter == "submit":
            behind = asyncio.ensure_future(pool.submit(pool_jobs.echo, 1))
        else:
            behind = asyncio.ensure_future(pool.gather(pool_jobs.echo, range(5)))
        while not pool._fleet._slots.waiting:  # (under run()'s deadline)
            await asyncio.sleep(0)  # one turn of the loop: the waiter queues
        await asyncio.wait_for(pool.close(grace=60), 20)
        assert held.result() == "held"
        if waiter == "cancelled apply":
            assert behind.cancelled()
        else:
            with pytest.raises(RuntimeError, match="closed"):
                await behind

    try:
        run(main())
    finally:
        started.close()


def test_a_keyword_argument_named_fn_reaches_the_function():
    def takes_fn(fn, x=0):
        return [fn, x]

    async def main():
        async with multiloop.Pool(workers=1, progress=False) as pool:
            assert await pool.apply(takes_fn, fn="f", x=1) == ["f", 1]
            assert await (await pool.submit(takes_fn, fn="g")) == ["g", 0]

    run(main())
    with multiloop.Executor(workers=1) as executor:
        futures = [executor.submit(takes_fn, fn="h", x=i) for i in range(3)]
        assert [f.result(timeout=DEADLINE) for f in futures] == [["h", i] for i in range(3)]


# -- failures ---------------------------------------------------------------------


def test_a_worker_sigkilled_during_single_calls_loses_none(tmp_path):
    started = Started(tmp_path)

    async def main():
        async with multiloop.Pool(workers=2, concurrency=50, progress=False) as pool:
            calls = [asyncio.ensure_future(pool.apply(pool_jobs.hold, started.address, 300, i)) for i in range(40)]
            victim = await started.next()
            os.kill(victim, signal.SIGKILL)
            assert await asyncio.gather(*calls) == list(range(40))
            assert await pool.apply(pool_jobs.echo, 7) == 7

    try:
        run(main())
    finally:
        started.close()


def test_a_call_that_crashes_its_worker_fails_alone():
    async def main():
        async with multiloop.Pool(workers=2, progress=False) as pool:
            others = [asyncio.ensure_future(pool.apply(pool_jobs.echo, i)) for i in range(100)]
            with pytest.raises(multiloop.TaskFailed) as failed:
                await pool.apply(pool_jobs.crash)
            assert failed.value.kind == "crashed", failed.value.message
            assert await asyncio.gather(*others) == list(range(100))
            assert await pool.apply(pool_jobs.echo, "after") == "after"

    run(main())


def test_a_supervisor_writing_garbage_fails_the_calls_with_a_clear_error(tmp_path):
    # A stand-in for the binary that answers the first call line with a line
    # that is not a record, then waits for its stdin to close.
    fake = tmp_path / "supervisor"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        sys.stdin.readline()
        sys.stdout.write("this is not a record\\n")
        sys.stdout.flush()
        sys.stdin.read()
    """))
    fake.chmod(0o755)

    async def main():
        pool = multiloop.Pool(workers=1, supervisor=str(fake), progress=False)
        calls = [pool.apply(pool_jobs.echo, i) for i in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, multiloop.SupervisorError) for r in results), results
        assert "not JSON" in str(results[0]), results[0]
        # The fleet is of no more use: its process is stopped at once.
        await asyncio.wait_for(asyncio.shield(pool._fleet._serving), DEADLINE)
        assert gone(pool._fleet.pid), "the supervisor outlived its garbage"
        with pytest.raises(multiloop.SupervisorError):
            await pool.apply(pool_jobs.echo, 1)
        await pool.close()

    run(main())


def test_a_sigkilled_supervisor_fails_pending_calls_within_a_second(tmp_path):
    started = Started(tmp_path)

    async def main():
        pool = multiloop.Pool(workers=2, concurrency=20, progress=False)
        supervisor, workers = await fleet_pids(pool)
        calls = [asyncio.ensure_future(pool.apply(pool_jobs.hold, started.address, 60_000, i)) for i in range(10)]
        await started.next()
        os.kill(supervisor, signal.SIGKILL)
        began = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 1.0)
        assert time.monotonic() - began < 1.0
        assert all(isinstance(r, multiloop.SupervisorError) for r in results), results
        with pytest.raises(multiloop.SupervisorError):
            await pool.apply(pool_jobs.echo, 1)
        await pool.close()
        wait_for(lambda: all(gone(p) for p in workers), "the workers to die with their supervisor")

    try:
        run(main())
    finally:
        started.close()


def test_close_drains_calls_in_flight_and_leaves_no_process(tmp_path):
    started = Started(tmp_path)

    async def main():
        pool = multiloop.Pool(workers=2, concurrency=20, progress=False)
        supervisor, workers = await fleet_pids(pool)
        calls = [asyncio.ensure_future(pool.apply(pool_jobs.hold, started.address, 200, i)) for i in range(10)]
        await started.next()
        await pool.close(grace=30)
        assert [call.result() for call in calls] == list(range(10))
        for pid in [supervisor, *workers]:
            assert gone(pid), f"process {pid} is still there after close()"
        assert all(gone(p) for p in children(os.getpid()))
        with pytest.raises(RuntimeError, match="closed"):
            await pool.apply(pool_jobs.echo, 1)

    try:
        run(main())
    finally:
        started.close()


def test_ctrl_c_inside_async_with_drains_the_calls_in_flight(tmp_path):
    log = tmp_path / "finished.txt"
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(HERE)!r})
        import multiloop, pool_jobs

        async def main():
            async with multiloop.Pool(workers=2, concurrency=10, progress=False) as pool:
                await asyncio.gather(*(pool.apply(pool_jobs.log_after, {str(log)!r}, 300, i) for i in range(600)))

        asyncio.run(main())
    """))
    proc = run_script(script)
    try:
        def lines():
            return log.read_text().count("\n") if log.exists() else 0

        wait_for(lambda: lines() >= 20, "the first calls to finish")
        supervisors = [p for p in pids_with("multiloop._calls:kind") if p in children(proc.pid)]
        at_signal = lines()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in stderr, stderr
    assert supervisors and all(gone(p) for p in supervisors)
    assert at_signal < lines() < 600, "the calls in flight were not drained"


# -- the Executor -------------------------------------------------------------------


def test_run_in_executor_from_sync_and_async_code():
    async def triple(x):  # by value, awaited in the worker
        await asyncio.sleep(0.001)
        return x * 3

    executor = multiloop.Executor(workers=2)
    try:
        # From synchronous code: submit and map, as with ProcessPoolExecutor.
        assert executor.submit(pool_jobs.echo, 5).result(DEADLINE) == 5
        assert list(executor.map(triple, range(20), timeout=DEADLINE)) == [3 * x for x in range(20)]

        async def main():
            loop = asyncio.get_running_loop()
            # The line of the pattern this replaces, unchanged but for the executor.
            got = await asyncio.gather(*(loop.run_in_executor(executor, pool_jobs.echo, i) for i in range(200)))
            assert got == list(range(200))
            assert await loop.run_in_executor(executor, triple, 7) == 21
            with pytest.raises(multiloop.TaskFailed):
                await loop.run_in_executor(executor, pool_jobs.crash)

        run(main())
        supervisor = executor._pool._fleet.pid
    finally:
        executor.shutdown(wait=True)
    assert gone(supervisor)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(pool_jobs.echo, 1)


def test_executor_as_a_context_manager_bounds_submit(tmp_path):
    with multiloop.Executor(workers=1, max_in_flight=3) as executor:
        futures = [executor.submit(pool_jobs.echo, i) for i in range(50)]
        assert [f.result(DEADLINE) for f in futures] == list(range(50))
        assert executor._pool._fleet.max_in_flight == 3
        # map keeps a window of futures, not one per item.
        got = []
        for value in executor.map(pool_jobs.echo, range(500), timeout=DEADLINE):
            got.append(value)
            assert len(executor._futures) <= 3
        assert got == list(range(500))
        assert list(executor.map(divmod, [7, 8], [2, 3])) == [[3, 1], [2, 2]]


# -- notebooks ------------------------------------------------------------------------


def test_a_pool_is_reused_across_notebook_cells():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        """
        import asyncio, multiloop

        async def double(x):          # defined in the notebook: sent by value
            await asyncio.sleep(0.001)
            return x * 2

        pool = multiloop.Pool(workers=2)
        assert await pool.apply(double, 21) == 42
        first = pool._fleet.pid
        """,
        """
        def add(a, b):
            return a + b

        got = await asyncio.gather(pool.gather(double, range(50)), pool.starmap(add, [(1, 2)] * 10))
        assert got == [[x * 2 for x in range(50)], [3] * 10]
        assert pool._fleet.pid == first
        """,
        """
        executor = multiloop.Executor(workers=2)
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(executor, add, 2, 3) == 5
        executor.shutdown()
        await pool.close()
        print("notebook ok")
        """,
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    nbclient.NotebookClient(nb, timeout=int(DEADLINE), kernel_name="python3").execute()
    outputs = nb.cells[-1].outputs
    assert any("notebook ok" in o.get("text", "") for o in outputs), outputs


def test_a_kind_with_setup_runs_as_a_map_of_its_own():
    def setup(settings):
        return {"n": 10}

    kind = multiloop.Kind(lambda x, state: x + state["n"], setup=setup)

    async def main():
        async with multiloop.Pool(workers=1, progress=False) as pool:
            assert await pool.gather(kind, [1, 2]) == [11, 12]  # a run of its own
            with pytest.raises(TypeError, match="setup/teardown"):
                await pool.apply(kind, 1)
            with pytest.raises(multiloop.TaskFailed, match=r"divmod\(\) failed: ZeroDivisionError"):
                await pool.apply(divmod, 1, 0)

    run(main())


def test_the_pool_options_apply_to_single_calls_and_maps(tmp_path):
    async def main():
        async with multiloop.Pool(workers=1, task_timeout=0.3, retries=2, retry_backoff=0, progress=False) as pool:
            with pytest.raises(multiloop.TaskFailed) as failed:
                await pool.apply(pool_jobs.log_after, str(tmp_path / "never.txt"), 30_000, 0)
            assert failed.value.kind == "timeout", failed.value.message
            assert failed.value.result.attempts == 3, failed.value.result.record
            with pytest.raises(multiloop.TaskFailed) as failed:
                await pool.apply(pool_jobs.sim, {"fault": "raise", "n": 1})
            assert failed.value.kind == "failed" and failed.value.result.attempts == 3
            # And to a map's items on the fleet.
            items = [{"n": 0}, {"fault": "raise", "n": 1}]
            got = [r async for r in pool.map(pool_jobs.sim, items)]
            assert pool._fleet.pid is not None and all(r.index in (0, 1) for r in got)
            failed_ = next(r for r in got if not r.ok)
            assert failed_.index == 1 and failed_.attempts == 3 and failed_.error.kind == "failed"

    run(main())


def test_gather_on_the_fleet_names_the_failed_item():
    async def main():
        async with multiloop.Pool(workers=1, progress=False) as pool:
            items = [{"n": 0}, {"n": 1, "fault": "raise"}, {"n": 2}]
            got = await pool.gather(pool_jobs.sim, items, return_exceptions=True)
            assert got[0] == {"sum": 0, "n": 0} and got[2] == {"sum": 0, "n": 2}
            assert isinstance(got[1], multiloop.TaskFailed)
            assert got[1].index == 1 and got[1].item == items[1] and "bad item 1" in got[1].message

    run(main())


# -- idle -----------------------------------------------------------------------


def _cpu_seconds(pid):
    """CPU time of every thread of `pid` so far, in seconds (schedstat: ns)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as file:
            total += int(file.read().split()[0])
    return total / 1e9


def test_an_idle_pool_uses_no_cpu():
    # Before the worker's ticker stopped between tasks, each idle Python
    # worker spent 55-114 ms of CPU per 3 s waking its loop every 10 ms;
    # now an idle worker wakes only for its heartbeats (about 2 ms per 3 s).
    window = 3.0

    async def main():
        async with multiloop.Pool(workers=2, progress=False) as pool:
            supervisor, workers = await fleet_pids(pool)
            pids = [supervisor, *workers]
            before = {pid: _cpu_seconds(pid) for pid in pids}
            # A measurement window, not a wait for an event: nothing runs.
            await asyncio.sleep(window)
            used = {pid: _cpu_seconds(pid) - before[pid] for pid in pids}
            # Still warm afterwards.
            assert await pool.apply(pool_jobs.pid) in workers
            return supervisor, used

    supervisor, used = run(main())
    shown = {pid: f"{seconds * 1000:.1f} ms" for pid, seconds in used.items()}
    for pid, seconds in used.items():
        limit = 0.030 if pid == supervisor else 0.020
        assert seconds < limit, f"idle for {window} s, CPU used per process: {shown}"
