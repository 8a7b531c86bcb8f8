#!/usr/bin/env python3
"""Queue benchmark: many supervisors on one Redis Streams queue.

  throughput  N trivial tasks (default 200,000): `queue push` + one consuming
              node (--workers 2) vs the same file run locally, in the same
              run. Reports tasks/s for push, consume, push+consume, local.
              Target: >= 100,000 tasks/s through Redis.
  scaling     M CPU tasks (~1 ms each, `gen_tasks.py --preset cpu`): two
              nodes with --workers 1 on this machine vs one. Target >= 1.8x.

Starts its own redis-server (no persistence, 127.0.0.1, a free port) in a
temporary directory. Every output is checked: all lines, once (merge
--queue for two nodes). Prints a table with median and spread over --runs
and appends it to scripts/results/queue-<date>.txt.

  scripts/bench_queue.py [--tasks N] [--cpu-tasks M] [--runs R]
"""

import argparse
import datetime
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))
import provenance  # noqa: E402
SUPERVISOR = ROOT / "target" / "release" / "supervisor"
PY = sys.executable or "python3"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(tmp):
    exe = shutil.which("redis-server")
    if not exe:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(7) == b"+PONG\r\n":
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def run(cmd, **kw):
    started = time.perf_counter()
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    took = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return took, done


def lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def gen(args, path):
    subprocess.run([PY, SCRIPTS / "gen_tasks.py", *args, "-o", path], check=True)


def stats(values):
    med = statistics.median(values)
    return med, (min(values), max(values))


def throughput(tmp, port, n, runs):
    tasks = Path(tmp) / "trivial.jsonl"
    gen(["--preset", "trivial", "--count", str(n)], tasks)
    rows = {"push": [], "consume": [], "push+consume": [], "push||consume": [], "local": []}
    for r in range(runs):
        out = Path(tmp) / f"local-{r}.jsonl"
        took, _ = run([SUPERVISOR, "--input", tasks, "--output", out, "--workers", "2", "-q"])
        assert lines(out) == n, "local output incomplete"
        rows["local"].append(n / took)

        url = f"redis://127.0.0.1:{port}/bench-{r}-{os.getpid()}"
        push, _ = run([SUPERVISOR, "queue", "push", "--queue", url, "--input", tasks])
        out = Path(tmp) / f"queue-{r}.jsonl"
        consume, _ = run([SUPERVISOR, "--queue", url, "--output", out, "--workers", "2", "-q"])
        assert lines(out) == n, "queue output incomplete"
        rows["push"].append(n / push)
        rows["consume"].append(n / consume)
        rows["push+consume"].append(n / (push + consume))

        # The usual way: the node starts while the push is still running.
        url = f"redis://127.0.0.1:{port}/overlap-{r}-{os.getpid()}"
        out = Path(tmp) / f"overlap-{r}.jsonl"
        started = time.perf_counter()
        pusher = subprocess.Popen([str(SUPERVISOR), "queue", "push", "--queue", url, "--input", str(tasks)],
                                  stderr=subprocess.DEVNULL)
        while subprocess.run([str(SUPERVISOR), "queue", "status", "--queue", url],
                             capture_output=True).returncode != 0:
            time.sleep(0.005)
        run([SUPERVISOR, "--queue", url, "--output", out, "--workers", "2", "-q"])
        pusher.wait()
        took = time.perf_counter() - started
        assert lines(out) == n, "overlapped queue output incomplete"
        rows["push||consume"].append(n / took)
    return rows


def scaling(tmp, port, m, runs):
    tasks = Path(tmp) / "cpu.jsonl"
    gen(["--preset", "cpu", "--count", str(m)], tasks)
    # A small window so that a node does not hoard lines the other could
    # run: the tail is what a late or idle node cannot help with.
    node = ["--workers", "1", "--window", "16", "-q"]
    one, two = [], []
    for r in range(runs):
        url = f"redis://127.0.0.1:{port}/one-{r}-{os.getpid()}"
        run([SUPERVISOR, "queue", "push", "--queue", url, "--input", tasks])
        out = Path(tmp) / f"one-{r}.jsonl"
        took, _ = run([SUPERVISOR, "--queue", url, "--output", out, *node])
        assert lines(out) == m
        one.append(m / took)

        url = f"redis://127.0.0.1:{port}/two-{r}-{os.getpid()}"
        run([SUPERVISOR, "queue", "push", "--queue", url, "--input", tasks])
        outs = [Path(tmp) / f"two-{r}-{i}.jsonl" for i in range(2)]
        started = time.perf_counter()
        procs = [
            subprocess.Popen([str(SUPERVISOR), "--queue", url, "--output", str(o), *node], stderr=subprocess.PIPE)
            for o in outs
        ]
        for p in procs:
            if p.wait() != 0:
                sys.exit(f"a node failed: {p.stderr.read().decode()[-2000:]}")
        took = time.perf_counter() - started
        merged = Path(tmp) / f"two-{r}.jsonl"
        with open(merged, "w") as f:
            done = subprocess.run(
                [str(SUPERVISOR), "merge", "--queue", *map(str, outs), "--input", str(tasks)],
                stdout=f,
                stderr=subprocess.PIPE,
                text=True,
            )
        if done.returncode != 0:
            sys.exit(f"merge failed: {done.stderr}")
        assert lines(merged) == m
        two.append(m / took)
    return one, two


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=200_000)
    p.add_argument("--cpu-tasks", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--allow-dirty", action="store_true",
                   help="run on a tree with uncommitted changes; results are marked DIRTY (not for the README)")
    a = p.parse_args()
    commit = provenance.check_tree(str(ROOT), a.allow_dirty)
    if not SUPERVISOR.exists():
        sys.exit("build first: cargo build --release --bins")
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    load = os.getloadavg()[0]
    header = (
        f"# queue benchmark {datetime.datetime.now().isoformat(timespec='seconds')} "
        f"commit {commit} | {cpu.partition(':')[2].strip() or platform.processor()} "
        f"x{os.cpu_count()} | load {load:.1f} | {a.runs} runs, median [min-max]"
    )
    out = [header]
    with tempfile.TemporaryDirectory() as tmp:
        redis, port = start_redis(tmp)
        try:
            rows = throughput(tmp, port, a.tasks, a.runs)
            out.append(f"throughput: {a.tasks:,} trivial tasks, --workers 2 (tasks/s)")
            for name, values in rows.items():
                med, (lo, hi) = stats(values)
                out.append(f"  {name:<14} {med:>10,.0f}   [{lo:,.0f} - {hi:,.0f}]")
            one, two = scaling(tmp, port, a.cpu_tasks, a.runs)
            ratios = [t / o for o, t in zip(one, two)]
            out.append(f"scaling: {a.cpu_tasks:,} CPU tasks of ~1 ms, nodes with --workers 1 --window 16 (tasks/s)")
            for name, values in (("one node", one), ("two nodes", two), ("ratio", ratios)):
                med, (lo, hi) = stats(values)
                fmt = "{:>10.2f}x   [{:.2f} - {:.2f}]" if name == "ratio" else "{:>10,.0f}   [{:,.0f} - {:,.0f}]"
                out.append(f"  {name:<14} " + fmt.format(med, lo, hi))
        finally:
            redis.kill()
            redis.wait()
    text = "\n".join(out)
    print(text)
    if not a.no_save:
        results = SCRIPTS / "results"
        results.mkdir(exist_ok=True)
        with open(results / f"queue-{datetime.date.today().isoformat()}.txt", "a") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
