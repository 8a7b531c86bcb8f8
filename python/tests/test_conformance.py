"""One conformance suite, two runtimes: every scenario runs against the
Rust ``worker`` (``--task chaos``) and against Python workers running the
``multiloop.builtin`` chaos fixture, through the real supervisor."""

from __future__ import annotations

import json
import os
import random
import signal
from typing import Dict, List

import pytest

from conftest import LONG, Run, by_seq, expected_sum, is_gone, rust_worker, sim_lines, wait_until

RUNTIMES = ["rust", "python"]


def chaos(runtime: str) -> List[str]:
    """The flags that run the chaos kind on `runtime`."""
    if runtime == "rust":
        return ["--worker", str(rust_worker()), "--task", "chaos"]
    return ["--python", "multiloop.builtin", "--task", "chaos"]


def restarts(stderr: str) -> int:
    line = next((l for l in stderr.splitlines() if "worker restarts" in l), None)
    assert line is not None, f"no summary in:\n{stderr}"
    return int(line.rsplit(" worker restarts", 1)[0].rsplit(" ", 1)[-1])


def assert_all_sums(records: List[dict], n: int, iters) -> None:
    seen = by_seq(records)
    assert sorted(seen) == list(range(1, n + 1)), "every line exactly once"
    for seq, record in seen.items():
        assert record.get("ok") == {"sum": expected_sum(iters(seq - 1))}, record


@pytest.fixture(params=RUNTIMES)
def runtime(request) -> str:
    return request.param


def test_exactly_once_under_random_sigkills_of_workers(run_in, runtime):
    n = 3_000
    rng = random.Random(9)
    run = run_in(
        ["--workers", "2", "--concurrency", "100", *chaos(runtime)],
        sim_lines(n, lambda i: 20, lambda i: i),
    )
    killed = []
    for threshold in (200, 900, 1_600):
        run.wait_for_output(threshold)
        victim = rng.choice(run.wait_for_busy_workers(1))
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        wait_until("the killed worker to be gone", lambda: is_gone(victim))
    assert run.wait() == 0, run.stderr()
    assert_all_sums(run.records(), n, lambda i: i)
    stderr = run.stderr()
    for pid in killed:
        assert f"(pid {pid}) died: signal SIGKILL" in stderr, stderr
    assert any(r["attempts"] >= 2 for r in run.records()), stderr


def test_a_poison_task_is_found_and_reported_crashed_with_every_other_ok(run_in, runtime):
    n, poison = 2_000, 1_234
    lines = [
        json.dumps({"sleep_ms": 20, "iters": 1, "fault": "abort"})
        if i + 1 == poison
        else json.dumps({"sleep_ms": 20, "iters": i % 500})
        for i in range(n)
    ]
    run = run_in(
        ["--workers", "2", "--concurrency", "200", "--window", "200", *chaos(runtime)],
        "\n".join(lines) + "\n",
    )
    assert run.wait() == 1, run.stderr()
    records = by_seq(run.records())
    assert len(records) == n
    crashed = [r for r in records.values() if "error" in r]
    assert [r["seq"] for r in crashed] == [poison]
    assert crashed[0]["error"]["kind"] == "crashed"
    assert "SIGABRT" in crashed[0]["error"]["message"], crashed[0]
    for seq, record in records.items():
        if seq != poison:
            assert record["ok"] == {"sum": expected_sum((seq - 1) % 500)}, record
    # 1 crash to find the group, log2(200) ~ 8 to narrow it, 2 alone.
    assert restarts(run.stderr()) <= 12


def test_a_blocked_loop_is_detected(run_in, runtime):
    """A loop blocked without CPU past --worker-timeout: both runtimes send
    heartbeats from a watchdog thread that names the task holding the loop
    (protocol v2 `held`), so the supervisor kills the worker as stuck and
    blames exactly that task; the tasks that shared the worker run again as
    innocent and complete."""
    n = 300
    lines = sim_lines(n, lambda i: 10, lambda i: i)
    lines += json.dumps({"iters": 1, "fault": "block"}) + "\n"
    run = run_in(
        ["--workers", "2", "--concurrency", "20", "--worker-timeout", "1500ms", *chaos(runtime)],
        lines,
    )
    assert run.wait() == 1, run.stderr()
    records = by_seq(run.records())
    assert len(records) == n + 1
    error = records[n + 1]["error"]
    assert error["kind"] == "crashed", records[n + 1]
    assert f"seq {n + 1} blocked the event loop for " in error["message"], records[n + 1]
    assert "without using CPU" in error["message"], records[n + 1]
    assert all("ok" in records[s] for s in range(1, n + 1))
    assert "stuck: seq" in run.stderr()
    assert "hung: no heartbeat for" not in run.stderr()


def test_max_worker_rss_recycles_a_leaking_handler(run_in, runtime):
    lines = sim_lines(100, lambda i: 5, lambda i: i)
    lines += json.dumps({"iters": 3, "fault": "leak:200"}) + "\n"
    lines += sim_lines(500, lambda i: 50, lambda i: i)
    run = run_in(
        ["--workers", "1", "--max-worker-rss", "100MiB", "--concurrency", "20", *chaos(runtime)],
        lines,
    )
    assert run.wait() == 0, run.stderr()
    assert len(by_seq(run.records())) == 601
    assert "over --max-worker-rss" in run.stderr()
    assert restarts(run.stderr()) == 0, "recycling is not restarting"


def test_bad_input_becomes_records_and_the_run_goes_on(run_in, runtime):
    lines = [
        '{"iters":4}',
        "not json",
        "",
        '{"iters":"four"}',
        '{"iters":-1}',
        '{"iters":1,"fault":"nope"}',
        "[1,2]",
        '{"iters":5}',
    ]
    run = run_in(["--workers", "2", *chaos(runtime)], "\n".join(lines) + "\n")
    assert run.wait() == 1, run.stderr()
    records = by_seq(run.records())
    assert sorted(records) == [1, 2, 4, 5, 6, 7, 8], "the blank line is no task"
    assert records[1]["ok"] == {"sum": 6}
    assert records[8]["ok"] == {"sum": 10}
    for seq in (2, 4, 5, 6, 7):
        error = records[seq]["error"]
        assert error["kind"] == "bad_input", records[seq]
        assert error["message"].startswith(f"line {seq}: "), error
    assert "unknown fault" in records[6]["error"]["message"]


def test_panic_stall_and_timeout_are_records_and_the_worker_lives_on(run_in, runtime):
    lines = [
        '{"iters":4,"fault":"panic"}',
        '{"iters":4,"fault":"stall"}',
        '{"iters":5}',
    ]
    run = run_in(
        ["--workers", "1", "--task-timeout", "300ms", *chaos(runtime)], "\n".join(lines) + "\n"
    )
    assert run.wait() == 1, run.stderr()
    records = by_seq(run.records())
    assert records[1]["error"]["kind"] == "panicked"
    assert "chaos: panic requested" in records[1]["error"]["message"]
    assert records[2]["error"] == {"kind": "timeout", "message": "task took longer than 300 ms"}
    assert records[3]["ok"] == {"sum": 10}
    assert restarts(run.stderr()) == 0


def test_stdout_goes_to_stderr_and_garbage_on_the_pipe_is_blamed(run_in, runtime):
    lines = sim_lines(200, lambda i: 5, lambda i: i)
    lines += '{"iters":2,"fault":"stdout"}\n'
    lines += '{"iters":1,"fault":"garbage"}\n'
    run = run_in(["--workers", "2", *chaos(runtime)], lines)
    assert run.wait() == 1, run.stderr()
    records = by_seq(run.records())
    assert len(records) == 202
    assert records[201]["ok"] == {"sum": 1}
    assert records[202]["error"]["kind"] == "crashed"
    assert "protocol violation" in records[202]["error"]["message"], records[202]
    stderr = run.stderr()
    assert "] chaos: this line goes to stdout, not to the result pipe" in stderr, stderr
    line = next(l for l in stderr.splitlines() if "this line goes to stdout" in l)
    assert line.split()[0].startswith("[w"), line


def test_exit_with_a_status_is_a_crash_named_by_it(run_in, runtime):
    lines = sim_lines(50, lambda i: 5, lambda i: i) + '{"iters":1,"fault":"exit:7"}\n'
    run = run_in(["--workers", "1", *chaos(runtime)], lines)
    assert run.wait() == 1, run.stderr()
    records = by_seq(run.records())
    assert records[51]["error"]["kind"] == "crashed"
    assert "7" in records[51]["error"]["message"], records[51]
    assert all("ok" in records[s] for s in range(1, 51))


def test_killed_supervisor_resumed_ends_with_every_line_once(run_in, runtime, tmp_path):
    n = 2_000
    lines = sim_lines(n, lambda i: 5 + i % 20, lambda i: i * 13)
    args = ["--workers", "2", "--concurrency", "64", *chaos(runtime)]
    run = run_in(args, lines)
    run.wait_for_output(700)
    workers = run.workers()
    run.kill_tree()
    wait_until("workers to die with their supervisor", lambda: all(is_gone(p) for p in workers))
    resumed = Run(run.dir, args, lines, resume=True)
    try:
        assert resumed.wait() == 0, resumed.stderr()
    finally:
        if resumed.proc.poll() is None:
            resumed.kill_tree()
    assert_all_sums(resumed.records(), n, lambda i: i * 13)
    assert "already done" in resumed.stderr(), resumed.stderr()


def test_sigint_to_a_worker_is_ignored(run_in, runtime):
    n = 600
    run = run_in(
        ["--workers", "2", "--concurrency", "50", *chaos(runtime)],
        sim_lines(n, lambda i: 20, lambda i: i),
    )
    run.wait_for_output(50)
    for pid in run.wait_for_busy_workers(2):
        os.kill(pid, signal.SIGINT)
    assert run.wait() == 0, run.stderr()
    assert_all_sums(run.records(), n, lambda i: i)
    if runtime == "python":
        # The Rust worker has no SIGINT handler of its own: the supervisor
        # counts on process groups there. A Python worker ignores it.
        assert restarts(run.stderr()) == 0, run.stderr()


def tree(runtime: str) -> List[str]:
    """The flags that run the tree kind (a task that adds tasks) on `runtime`."""
    if runtime == "rust":
        return ["--worker", str(rust_worker()), "--task", "tree"]
    return ["--python", "multiloop.builtin", "--task", "tree"]


def tree_nodes(root: str, levels: int, fanout: int, seed: int) -> List[str]:
    """The tree kind's rule, again: every node under `root`, root included."""

    def fnv(seed: int, node: str) -> int:
        h = 0xCBF29CE484222325 ^ seed
        for byte in node.encode():
            h = ((h ^ byte) * 0x100000001B3) & ((1 << 64) - 1)
        return h

    nodes, todo = [root], [(root, levels)]
    while todo:
        node, left = todo.pop()
        if left == 0:
            continue
        for i in range(fnv(seed, node) % (fanout + 1)):
            nodes.append(f"{node}/{i}")
            todo.append((f"{node}/{i}", left - 1))
    return nodes


def test_a_crawl_runs_every_added_task_once_even_when_parents_crash(run_in, runtime, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    lines, expected = "", []
    for r in range(3):
        root = {"node": f"r{r}", "levels": 5, "fanout": 4, "seed": 11, "crash_once": str(markers)}
        lines += json.dumps(root) + "\n"
        expected += tree_nodes(root["node"], 5, 4, 11)
    run = run_in(["--workers", "2", "--key", "node", "--max-crashes", "3", *tree(runtime)], lines)
    assert run.wait() == 0, run.stderr()
    records = run.records()
    assert sorted(r["ok"]["node"] for r in records) == sorted(expected), "every node exactly once"
    assert any(markers.iterdir()), "no parent crashed its worker"
    by_id = {str(r["seq"]): r for r in records}
    for record in records:
        if isinstance(record["seq"], int):
            assert "parent" not in record, record
            continue
        parent, n = record["seq"].rsplit(".", 1)
        assert str(record["parent"]) == parent and record["depth"] == record["seq"].count("."), record
        assert by_id[parent]["added"][int(n) - 1]["task"]["node"] == record["ok"]["node"], record
    assert f"{len(expected) - 3} tasks added by tasks" in run.stderr(), run.stderr()
