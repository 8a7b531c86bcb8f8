"""The Python driver (multiloop.Pool / map / gather / run) through the real
supervisor binary and real Python workers."""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))  # pool_jobs, imported by reference

import multiloop  # noqa: E402
import pool_jobs  # noqa: E402
from multiloop import pool as driver  # noqa: E402
from multiloop._target import Target  # noqa: E402

# A checkout without `pip install .`: the freshly built binary and the
# in-tree package (for subprocesses such as the notebook kernel).
if "MULTILOOP_SUPERVISOR" not in os.environ and not (Path(sys.executable).parent / "supervisor").exists():
    os.environ["MULTILOOP_SUPERVISOR"] = str(REPO / "target" / "release" / "supervisor")
_PACKAGE_DIR = str(Path(multiloop.__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_PACKAGE_DIR, str(HERE), os.environ.get("PYTHONPATH")) if p
)

DEADLINE = 60.0

#: Longest a whole driver run may take in a test (a loaded CI machine).
RUN_DEADLINE = 3 * DEADLINE


def run_async(coroutine):
    """`asyncio.run` with a deadline: a hang fails the test instead of CI."""
    return asyncio.run(asyncio.wait_for(coroutine, RUN_DEADLINE))


def within(call, *args, limit=RUN_DEADLINE, **kwargs):
    """`call(*args, **kwargs)` in a helper thread, failing the test if it has
    not returned within `limit` seconds (a hang must not stall CI)."""
    box = {}

    def target():
        try:
            box["value"] = call(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = error

    thread = threading.Thread(target=target, name="test-within", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        pytest.fail(f"{getattr(call, '__name__', call)}{args!r} did not return within {limit} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# -- process helpers ----------------------------------------------------------


def state(pid):
    """The /proc state letter, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()[0]


def gone(pid):
    return state(pid) in (None, "Z")


def children(pid):
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def pids_with(text):
    """Processes whose command line mentions ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def wait_for(predicate, what, timeout=DEADLINE):
    """Waits for an event (a condition becoming true) with a deadline."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def tasks(n, sleep_ms=0, iters=50, **extra):
    return [{"n": i, "sleep_ms": sleep_ms, "iters": iters, **extra} for i in range(n)]


def expected(task):
    return {"sum": task["iters"] * (task["iters"] - 1) // 2, "n": task["n"]}


# -- results --------------------------------------------------------------------


def test_gather_equals_asyncio_gather_on_10000_items():
    items = [{"n": i, "sleep_ms": i % 3, "iters": (i * 7919) % 2000} for i in range(10_000)]

    async def both():
        plain = await asyncio.gather(*(pool_jobs.sim(t) for t in items))
        ours = await multiloop.gather(pool_jobs.sim, items, workers=2, progress=False)
        return plain, ours

    plain, ours = run_async(both())
    assert ours == plain


def test_map_yields_results_with_their_items_and_workers():
    async def main():
        seen = []
        async with multiloop.Pool(workers=2, progress=False) as pool:
            async for r in pool.map(pool_jobs.sim, iter(tasks(300, sleep_ms=1))):
                seen.append(r)
        return seen

    seen = run_async(main())
    assert sorted(r.index for r in seen) == list(range(300))
    for r in seen:
        assert r.ok and r.error is None
        assert r.value == expected(r.item)
        assert r.seq == r.index + 1 and r.attempts == 1 and r.worker in (0, 1)


def test_map_yields_the_tasks_a_handler_added_with_parent_and_depth():
    async def main():
        async with multiloop.Pool(workers=2, progress=False) as pool:
            return [r async for r in pool.map(pool_jobs.crawl, [{"n": 1, "max": 40}], key="n")]

    seen = run_async(main())
    assert sorted(r.value for r in seen) == list(range(1, 41)), "every node once"
    by_seq = {str(r.seq): r for r in seen}
    for r in seen:
        if r.value == 1:
            assert r.index == 0 and r.parent is None and r.depth == 0
            continue
        assert r.index is None and r.item == {"n": r.value, "max": 40} and r.key == str(r.value)
        assert r.depth == r.value.bit_length() - 1
        assert by_seq[r.parent].value == r.value // 2 and r.path == r.seq


def reachable(seeds, size):
    """The nodes a crawl of pool_jobs.graph from ``seeds`` must run, by BFS."""
    seen, todo = set(seeds), list(seeds)
    while todo:
        n = todo.pop()
        for child in pool_jobs.graph_children(n, size):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def check_crawl(results, seeds, size):
    """Every reachable node exactly once; items first in input order; each
    added task's parent is a task that links to it, one level up."""
    assert [r.value for r in results[: len(seeds)]] == seeds
    values = [r.value for r in results]
    assert len(values) == len(set(values)), "a node ran twice"
    assert set(values) == reachable(seeds, size), "every reachable node"
    by_path = {r.path: r for r in results}
    for i, r in enumerate(results):
        assert r.ok, r.error
        if i < len(seeds):
            assert (r.index, r.path, r.parent, r.depth) == (i, str(i + 1), None, 0), r
            continue
        assert r.index is None and r.item == {"n": r.value, "size": size} and r.key == str(r.value), r
        parent = by_path[r.parent]
        assert r.path.rsplit(".", 1)[0] == r.parent and r.depth == parent.depth + 1, r
        assert r.value in pool_jobs.graph_children(parent.value, size), r
    paths = [tuple(map(int, r.path.split("."))) for r in results[len(seeds):]]
    assert paths == sorted(paths), "added tasks in path order"


def test_run_returns_the_added_tasks_results_once_each_with_parents_and_depths(tmp_path):
    seeds, size = [1, 5], 60
    items = [{"n": n, "size": size} for n in seeds]
    out = tmp_path / "crawl.jsonl"
    results = within(
        multiloop.run, pool_jobs.graph, items, key="n", workers=2, results=True, output=out, progress=False
    )
    check_crawl(results, seeds, size)
    # Every link offered is either a child or kept out as seen: none lost.
    for r in results:
        assert r.added + r.kept_out.get("seen", 0) == 5, r.record
    values = within(multiloop.run, pool_jobs.graph, items, key="n", workers=2, progress=False)
    assert values[:2] == seeds and sorted(values) == sorted(reachable(seeds, size))
    # A resumed run that finds everything done returns the same results,
    # read back from its output (parents' additions name the children).
    again = within(
        multiloop.run, pool_jobs.graph, items, key="n", workers=2, results=True, output=out, resume=True,
        progress=False,
    )
    assert [(r.path, r.value, r.item, r.key) for r in again] == [(r.path, r.value, r.item, r.key) for r in results]


def test_crawl_limits_keep_tasks_out_and_say_how_many():
    seeds, size = [1, 5], 60
    items = [{"n": n, "size": size} for n in seeds]

    async def main(**limits):
        async with multiloop.Pool(workers=2, progress=False) as pool:
            run = pool.map(pool_jobs.graph, items, key="n", **limits)
            return await run.results(), run

    results, run = run_async(main(max_depth=1))
    assert {r.depth for r in results} == {0, 1}
    assert sorted(r.value for r in results) == sorted(
        set(seeds) | {c for n in seeds for c in pool_jobs.graph_children(n, size)}
    )
    assert run.kept_out["max_depth"] > 0 and run.kept_out["max_depth"] == sum(
        r.kept_out.get("max_depth", 0) for r in results
    )
    assert run.added_tasks == len(results) - len(seeds)
    for r in results:
        assert r.added + sum(r.kept_out.values()) == 5, r.record

    results, run = run_async(main(max_tasks=10))
    assert len(results) == 10, "input plus added tasks, at most --max-tasks"
    assert run.kept_out["max_tasks"] > 0
    assert sum(r.added + sum(r.kept_out.values()) for r in results) == 5 * len(results)


def test_a_worker_sigkilled_mid_crawl_still_runs_every_task_once():
    seeds, size = [1, 2], 400
    items = [{"n": n, "size": size, "sleep_ms": 30} for n in seeds]

    async def main():
        results, killed, at_kill = [], None, 0
        async with multiloop.Pool(workers=2, concurrency=8, progress=False) as pool:
            run = pool.map(pool_jobs.graph, items, key="n")
            async for r in run:
                results.append(r)
                if killed is None and len(results) >= 30:
                    workers = children(run.pid)
                    assert workers, "the supervisor has no workers"
                    killed, at_kill = workers[0], len(results)
                    os.kill(killed, signal.SIGKILL)
        return results, killed, at_kill

    results, killed, at_kill = run_async(main())
    assert killed is not None and gone(killed)
    assert len(results) > at_kill + 100, "the kill came mid-crawl"
    values = [r.value for r in results]
    assert len(values) == len(set(values)), "a node ran twice"
    assert set(values) == reachable(seeds, size)
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]


def test_a_call_on_the_warm_pool_that_adds_tasks_fails_saying_what_to_use():
    async def main():
        async with multiloop.Pool(workers=1, progress=False) as pool:
            with pytest.raises(multiloop.TaskFailed) as failed:
                await pool.gather(pool_jobs.graph, [{"n": 1, "size": 10}])
            return failed.value

    failed = run_async(main())
    assert "not available in a call on a warm pool" in str(failed) and "pool.map" in str(failed)


def test_key_names_a_field():
    with pytest.raises(TypeError, match="names the field"):
        multiloop.run(pool_jobs.graph, [{"n": 1}], key=lambda item: item["n"])


def test_results_stream_out_while_cpu_heavy_steps_hold_the_loop():
    # Twenty steps of 40 ms become ready in one loop iteration: the first
    # results must reach the caller while the later steps still run, not
    # when the whole iteration ends.
    async def main():
        arrivals = []
        async with multiloop.Pool(workers=1, progress=False) as pool:
            items = [{"n": 20, "ms": 40} for _ in range(20)]
            async for r in pool.map(pool_jobs.busy_together, items):
                assert r.ok, r.error
                arrivals.append((time.monotonic(), r.value))
        return arrivals

    arrivals = run_async(main())
    first_arrival = min(arrived for arrived, _ in arrivals)
    last_finish = max(finished for _, finished in arrivals)
    assert first_arrival < last_finish, "results were held until the loop iteration ended"


def test_await_map_gives_values_in_order_like_aiomultiprocess():
    async def main():
        async with multiloop.Pool(workers=2, progress=False) as pool:
            return await pool.map(pool_jobs.echo, list(range(1000)))

    assert run_async(main()) == list(range(1000))


def test_run_is_sync_and_a_main_function_goes_by_value_with_setup_and_teardown(tmp_path):
    marker = tmp_path / "teardown"

    async def setup(settings):
        return {"offset": int(settings["offset"])}

    async def teardown(state):
        with open(marker, "a") as file:
            file.write(f"{os.getpid()}\n")

    async def add(x, state):  # a closure: only by value can reach the workers
        return x + state["offset"]

    out = within(multiloop.run,
        add, range(500), workers=2, setup=setup, teardown=teardown,
        settings={"offset": 1000}, progress=False,
    )
    assert out == [x + 1000 for x in range(500)]
    assert len(set(marker.read_text().split())) == 2  # once per worker process


def test_run_writes_its_report_and_a_notebook_shows_it(tmp_path):
    page = tmp_path / "run.html"
    assert multiloop.run(pool_jobs.echo, range(50), workers=2, report=page, progress=False) == list(range(50))
    text = page.read_text()
    assert "uPlot" in text and '"end":{' in text
    shown = multiloop.show_report(page)._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and "&lt;html" in shown


def test_by_reference_and_by_value_are_chosen_as_documented():
    assert Target(pool_jobs.sim, {}).args == ["--python", "pool_jobs:sim"]

    async def local(task):
        return task

    target = Target(local, {})
    try:
        assert target.args == ["--python", "multiloop._byvalue:kind"]
        assert target.by_value and os.path.exists(target.path)
    finally:
        target.cleanup()


#: The driver's modules: a worker process must load none of them.
DRIVER_MODULES = {
    "multiloop.pool", "multiloop._run", "multiloop._options", "multiloop._binary",
    "multiloop._target", "multiloop._results",
}


def test_a_worker_process_does_not_load_the_driver():
    def by_value(task):
        import sys

        return sorted(name for name in sys.modules if name.split(".")[0] == "multiloop")

    for fn in (pool_jobs.multiloop_modules, by_value):
        [loaded] = multiloop.run(fn, [0], workers=1, progress=False)
        assert "multiloop._runtime" in loaded, loaded  # it did run in a worker
        assert DRIVER_MODULES & set(loaded) == set(), loaded


def test_the_driver_is_imported_on_first_use():
    code = (
        "import json, sys, multiloop\n"
        "before = sorted(m for m in sys.modules if m.startswith('multiloop.'))\n"
        "multiloop.Pool\n"
        "after = sorted(m for m in sys.modules if m.startswith('multiloop.'))\n"
        "print(json.dumps([before, after]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=DEADLINE)
    before, after = json.loads(out.stdout)
    assert DRIVER_MODULES & set(before) == set(), before
    assert DRIVER_MODULES <= set(after), after


# -- faults -------------------------------------------------------------------


def test_a_worker_sigkilled_mid_map_loses_nothing():
    items = tasks(400, sleep_ms=100)

    async def main():
        results = []
        killed = None
        async with multiloop.Pool(workers=2, concurrency=20, progress=False) as pool:
            run = pool.map(pool_jobs.sim, items)
            async for r in run:
                results.append(r)
                if killed is None and len(results) >= 40:
                    workers = children(run.pid)
                    assert workers, "the supervisor has no workers"
                    killed = workers[0]
                    os.kill(killed, signal.SIGKILL)
        return results, killed

    results, killed = run_async(main())
    assert killed is not None
    assert sorted(r.index for r in results) == list(range(400))
    assert all(r.ok and r.value == expected(r.item) for r in results)
    assert any(r.attempts > 1 for r in results), "no task was re-run after the kill"


def test_a_poison_item_is_an_error_result_and_the_rest_succeed():
    items = tasks(200, sleep_ms=2)
    items[57] = {"n": 57, "fault": "abort"}
    items[91] = {"n": 91, "fault": "raise"}
    items[123] = {"n": 123, "fault": "not_json"}

    async def main():
        async with multiloop.Pool(workers=2, max_crashes=2, progress=False) as pool:
            return [r async for r in pool.map(pool_jobs.sim, items)]

    results = {r.index: r for r in run_async(main())}
    assert len(results) == 200
    assert results[57].error.kind == "crashed"
    assert results[91].error.kind == "failed" and "ValueError: bad item 91" in results[91].error.message
    assert results[123].error.kind == "failed"
    for i, r in results.items():
        if i not in (57, 91, 123):
            assert r.ok and r.value == expected(items[i])
    # gather raises the first error like asyncio.gather, or returns it in place.
    with pytest.raises(multiloop.TaskFailed) as caught:
        within(multiloop.run, pool_jobs.sim, items[85:95], workers=2, progress=False)
    assert caught.value.kind == "failed" and caught.value.item == items[91]
    mixed = within(multiloop.run, pool_jobs.sim, items[85:95], workers=2, progress=False, return_exceptions=True)
    assert isinstance(mixed[6], multiloop.TaskFailed) and mixed[5] == expected(items[90])


def test_break_out_of_map_leaves_no_process():
    async def main():
        async with multiloop.Pool(workers=2, progress=False) as pool:
            run = pool.map(pool_jobs.sim, tasks(5000, sleep_ms=200))
            async for _ in run:
                supervisor = run.pid
                workers = children(supervisor)
                break
        return supervisor, workers

    supervisor, workers = run_async(main())
    assert len(workers) == 2
    assert state(supervisor) is None, "the supervisor is still there (or an unreaped zombie)"
    wait_for(lambda: all(gone(p) for p in workers), "the workers to exit")


def run_script(script):
    """Runs a script as a terminal would: with Python's own Ctrl-C handler.
    A test run from a background job inherits SIGINT ignored, and Python
    keeps an ignored SIGINT ignored, so the script would never see Ctrl-C."""
    return subprocess.Popen(
        [sys.executable, str(script)],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_in_a_script_drains_raises_and_resume_finishes(tmp_path):
    out = tmp_path / "run.jsonl"
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        import multiloop, pool_jobs
        items = [{{"n": i, "sleep_ms": 300, "iters": 10}} for i in range(600)]
        multiloop.run(pool_jobs.sim, items, workers=2, concurrency=20, output={str(out)!r}, progress=False)
    """))
    proc = run_script(script)
    try:
        def lines():
            return out.read_text().count("\n") if out.exists() else 0

        wait_for(lambda: lines() >= 20, "the first records")
        supervisors = [p for p in pids_with(str(out)) if p != proc.pid]
        at_signal = lines()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert supervisors and all(gone(p) for p in supervisors)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all("ok" in r for r in records), "a drained task was cut off"
    assert at_signal < len(records) < 600, "tasks in flight were not drained"
    assert len({r["seq"] for r in records}) == len(records)

    items = [{"n": i, "sleep_ms": 300, "iters": 10} for i in range(600)]
    done = within(multiloop.run,
        pool_jobs.sim, items, workers=2, concurrency=50, output=str(out), resume=True, progress=False
    )
    assert done == [expected(t) for t in items]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["seq"] for r in records) == list(range(1, 601))


def test_ctrl_c_inside_async_with_pool_drains_and_raises(tmp_path):
    out = tmp_path / "run.jsonl"
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(HERE)!r})
        import multiloop, pool_jobs

        async def main():
            items = [{{"n": i, "sleep_ms": 300, "iters": 10}} for i in range(600)]
            async with multiloop.Pool(workers=2, concurrency=20, output={str(out)!r}, progress=False) as pool:
                async for r in pool.map(pool_jobs.sim, items):
                    assert r.ok

        asyncio.run(main())
    """))
    proc = run_script(script)
    try:
        def lines():
            return out.read_text().count("\n") if out.exists() else 0

        wait_for(lambda: lines() >= 20, "the first records")
        supervisors = [p for p in pids_with(str(out)) if p != proc.pid]
        at_signal = lines()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in stderr
    assert supervisors and all(gone(p) for p in supervisors)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all("ok" in r for r in records)
    assert at_signal < len(records) < 600, "tasks in flight were not drained"


def test_a_crashed_supervisor_raises_with_its_status_and_last_line():
    with pytest.raises(multiloop.SupervisorError) as caught:
        within(multiloop.run, pool_jobs.sim, tasks(10), workers=2, progress=False, extra_args=["--max-frame", "lots"])
    assert caught.value.status == 2
    assert "lots" in str(caught.value) and "status 2" in str(caught.value)

    async def main():
        async with multiloop.Pool(workers=2, progress=False) as pool:
            run = pool.map(pool_jobs.sim, tasks(2000, sleep_ms=100))
            killed = False
            async for _ in run:  # the rest of the batch in hand still comes
                if not killed:
                    os.kill(run.pid, signal.SIGKILL)
                    killed = True

    with pytest.raises(multiloop.SupervisorError, match="killed by SIGKILL") as caught:
        asyncio.run(asyncio.wait_for(main(), DEADLINE))
    assert caught.value.status == -signal.SIGKILL


# -- what cannot be sent -------------------------------------------------------


def test_an_unpicklable_function_is_refused_by_name():
    sock = socket.socket()
    try:
        async def send(task):
            return sock.send(b"x")

        with pytest.raises(multiloop.SendError, match="cannot send .*send.* by value.*socket"):
            within(multiloop.run, send, [1, 2], workers=1, progress=False)
    finally:
        sock.close()


def test_an_item_that_is_not_json_is_named():
    items = [1, 2, {"when": object()}, 4]
    with pytest.raises(multiloop.SendError, match=r"item 2 is not JSON-encodable.*object"):
        within(multiloop.run, pool_jobs.echo, items, workers=1, progress=False)
    with pytest.raises(multiloop.SendError, match=r"item 1 is not JSON-encodable"):
        within(multiloop.run, pool_jobs.echo, iter([1.0, float("nan")]), workers=1, progress=False)


# -- options ------------------------------------------------------------------


def test_every_supervisor_option_has_a_keyword():
    help_text = subprocess.run(
        [driver.find_supervisor(), "--help"], capture_output=True, text=True, check=True
    ).stdout
    flags = set(re.findall(r"^\s+(?:-\w, )?(--[a-z-]+)", help_text, re.M))
    covered = {flag for flag, _ in driver.OPTIONS.values()} | {"--verbose"}
    # The items are the input, encoded here as JSON (so --lines is moot);
    # --python/--python-interpreter are how the driver runs the function;
    # --progress is the driver's own bar (progress=); --queue/--claim-after
    # pull the input from Redis, where the driver's items are the input.
    by_driver = {
        "--input", "--demo", "--lines", "--progress", "--help", "--version",
        "--python", "--python-interpreter", "--queue", "--claim-after",
    }
    assert flags - covered - by_driver == set()


def test_keywords_become_flags_and_unknown_ones_are_refused():
    args = driver.supervisor_args({
        "workers": 3, "task_timeout": 1.5, "grace": "5s", "max_worker_rss": "512MiB",
        "settings": {"a": "1"}, "retry_status": [429, "500-599"], "keep_order": True,
        "resume": False, "verbose": 2,
    })
    assert args == [
        "--workers", "3", "--task-timeout", "1500ms", "--grace", "5s", "--max-worker-rss", "512MiB",
        "--set", "a=1", "--retry-status", "429,500-599", "--keep-order", "-v", "-v",
    ]
    with pytest.raises(TypeError, match="did you mean 'concurrency'"):
        multiloop.Pool(concurency=5)


# -- notebooks ----------------------------------------------------------------


def test_a_notebook_defined_function_runs():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    source = textwrap.dedent("""
        import asyncio, multiloop

        async def double(x):          # defined in the notebook: sent by value
            await asyncio.sleep(0.001)
            return x * 2

        assert multiloop.run(double, list(range(300)), workers=2) == [x * 2 for x in range(300)]

        async with multiloop.Pool(workers=2) as pool:   # the kernel's own loop
            got = sorted([r.value async for r in pool.map(double, range(50))])
        assert got == [x * 2 for x in range(50)]
        print("notebook ok")
    """)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nbclient.NotebookClient(nb, timeout=int(DEADLINE), kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert any("notebook ok" in o.get("text", "") for o in outputs), outputs
