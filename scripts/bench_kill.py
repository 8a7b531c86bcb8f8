#!/usr/bin/env python3
"""Supervision under fire: time from a worker's death to its replacement
taking tasks, and throughput lost while one worker per second is killed
(as a ratio to an undisturbed run of the same list, measured in the same
invocation).

    scripts/bench_kill.py [--count 20000] [--iters 1800000] [--sleep-ms 5]
                          [--concurrency 64] [--repeat 3] [--bin-dir target/release]

Undisturbed and killed runs alternate (--repeat pairs); the table gives
medians with min-max, and the ratio of each pair (the machine's speed
drifts between pairs, less within one).

Appends its table to scripts/results/kill-<date>.txt.
"""

import argparse
import datetime
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import provenance  # noqa: E402


def children(pid):
    """Worker pids of the supervisor `pid` (not the --list-kinds probe)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(p) for p in f.read().split())
    except OSError:
        return []
    workers = []
    for child in sorted(set(out)):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"--index" in f.read():
                    workers.append(child)
        except OSError:
            pass
    return workers


def run(supervisor, args, tasks, kill_every=None, log=None):
    """Runs the supervisor; kills a random worker every `kill_every` s.
    Returns (wall seconds, kills, stderr text)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.jsonl")
        err_path = os.path.join(tmp, "err.txt")
        with open(err_path, "w") as err:
            env = dict(os.environ, RUST_LOG="debug")
            start = time.perf_counter()
            proc = subprocess.Popen(
                [supervisor, *args, "--input", tasks, "--output", out, "--progress", "never"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
            kills = 0
            rng = random.Random(7)
            next_kill = start + kill_every if kill_every else None
            while proc.poll() is None:
                time.sleep(0.01)
                if next_kill and time.perf_counter() >= next_kill:
                    workers = children(proc.pid)
                    if workers:
                        try:
                            os.kill(rng.choice(workers), 9)
                            kills += 1
                        except ProcessLookupError:
                            pass
                    next_kill += kill_every
            wall = time.perf_counter() - start
        with open(err_path) as f:
            stderr = f.read()
        with open(out) as f:
            lines = sum(1 for _ in f)
    if proc.returncode != 0:
        sys.exit(f"supervisor exited {proc.returncode}:\n{stderr[-2000:]}")
    return wall, kills, lines, stderr


STAMP = re.compile(r"^(\S+Z)\s+\S+\s+(.*)$")


def replacement_latencies(stderr):
    """Seconds from each 'worker N (pid P) died' to 'worker N (pid Q) is up'."""
    died = {}
    latencies = []
    for line in stderr.splitlines():
        m = STAMP.match(line.strip())
        if not m:
            continue
        when = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
        text = m.group(2)
        d = re.match(r"worker (\d+) \(pid \d+\) died", text)
        if d:
            died[d.group(1)] = when
            continue
        u = re.match(r"worker (\d+) \(pid \d+\) is up", text)
        if u and u.group(1) in died:
            latencies.append(when - died.pop(u.group(1)))
    return latencies


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--iters", type=int, default=1800000)
    ap.add_argument("--sleep-ms", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--workers", default="2")
    ap.add_argument("--repeat", type=int, default=3, help="undisturbed/killed pairs (default 3)")
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--allow-dirty", action="store_true",
                    help="run on a tree with uncommitted changes; results are marked DIRTY (not for the README)")
    a = ap.parse_args()
    git = provenance.check_tree(ROOT, a.allow_dirty)
    supervisor = os.path.join(a.bin_dir, "supervisor")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for _ in range(a.count):
            f.write(f'{{"sleep_ms":{a.sleep_ms},"iters":{a.iters}}}\n')
        tasks = f.name
    args = ["--workers", a.workers, "--concurrency", str(a.concurrency)]
    calms, roughs, ratios, kills_seen, lat = [], [], [], [], []
    for _ in range(a.repeat):
        calm, _, lines_calm, _ = run(supervisor, args, tasks)
        rough, kills, lines_rough, stderr = run(supervisor, args, tasks, kill_every=1.0)
        for lines in (lines_calm, lines_rough):
            if lines != a.count:
                sys.exit(f"{lines} records for {a.count} tasks")
        calms.append(calm)
        roughs.append(rough)
        ratios.append(calm / rough)
        kills_seen.append(kills)
        lat.extend(replacement_latencies(stderr))
    os.unlink(tasks)
    lat.sort()
    nproc = os.cpu_count()

    def spread(values, fmt):
        return f"{fmt(statistics.median(values))} [{fmt(min(values))}-{fmt(max(values))}]"

    seconds = lambda v: f"{v:.2f} s"  # noqa: E731
    report = [
        f"=== kill  {datetime.datetime.now().isoformat(timespec='seconds')}  git {git}  nproc={nproc}",
        f"{a.count} tasks (sleep {a.sleep_ms} ms, iters {a.iters}), --workers {a.workers} --concurrency {a.concurrency}, "
        f"{a.repeat} alternating pairs, median [min-max]",
        f"undisturbed: {spread(calms, seconds)} ({a.count / statistics.median(calms):,.0f} tasks/s), every record present",
        f"one worker SIGKILLed per second: {spread(roughs, seconds)} ({a.count / statistics.median(roughs):,.0f} tasks/s), "
        f"{sum(kills_seen)} kills, every record present",
        f"throughput under kills / undisturbed, per pair: {spread(ratios, lambda v: f'{v:.2f}x')}",
    ]
    if lat:
        mid = lat[len(lat) // 2]
        report.append(
            f"death -> replacement taking tasks: median {mid * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms "
            f"over {len(lat)} deaths (includes the 20 ms minimum restart backoff)")
    else:
        report.append("death -> replacement: no pair of log lines found (log format changed?)")
    text = "\n".join(report)
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", f"kill-{datetime.date.today()}.txt"), "a") as f:
        f.write(text + "\n\n")


if __name__ == "__main__":
    main()
