#!/usr/bin/env python3
"""The --concurrency default: the seed workload with no flags vs in-process.

    scripts/bench_defaults.py [--repeat 3] [--no-save]

Workload (issue #10, point 6): 10,000 `sim` tasks, sleep 200-1000 ms,
iters 100,000-500,000 (gen_tasks.py, seed 1). Contenders, interleaved:

  supervisor (no flags)                 what a new user runs
  inprocess_baseline --concurrency 10000  one tokio runtime, every task at once

Target: supervisor median within 1.1x of the baseline median. Results are
appended to scripts/results/defaults-<date>.txt with the commit (a dirty
tree is marked). Build first:
  cargo build --release --bins
  cargo build --release -p multiloop-tasks --example inprocess_baseline
"""

import argparse
import datetime
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))
import provenance  # noqa: E402
from bench import machine_info, run_timed, table  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    p.add_argument("--allow-dirty", action="store_true",
                   help="run on a tree with uncommitted changes; results are marked DIRTY (not for the README)")
    args = p.parse_args()
    git = provenance.check_tree(ROOT, args.allow_dirty)
    bins = Path(args.bin_dir)
    data = SCRIPTS / "data"
    data.mkdir(exist_ok=True)
    tasks = data / "defaults-10000.jsonl"
    subprocess.run(
        [sys.executable, str(SCRIPTS / "gen_tasks.py"), "--count", "10000", "--seed", "1",
         "--sleep-ms", "200-1000", "--iters", "100000-500000", "-o", str(tasks)],
        check=True,
    )
    log = []

    def say(text=""):
        print(text, flush=True)
        log.append(text)

    m = machine_info()
    say(f"=== defaults  {m['date']}  git {git}")
    say(f"machine: {m['host']}")
    say(f"loadavg before: {m['load']}")
    say("10,000 sim tasks, sleep 200-1000 ms, iters 100k-500k (seed 1)")
    contenders = [
        ("supervisor (no flags)", [str(bins / "supervisor"), "-i", str(tasks), "-q", "-o"]),
        ("inprocess_baseline --concurrency 10000",
         [str(bins / "examples" / "inprocess_baseline"), str(tasks), "--concurrency", "10000"]),
    ]
    walls = {label: [] for label, _ in contenders}
    for _ in range(args.repeat):
        for label, cmd in contenders:
            out = data / "out-defaults.jsonl"
            if cmd[-1] == "-o":
                run = run_timed(label, cmd + [str(out)])
            else:
                run = run_timed(label, cmd, stdout_path=out)
            if run.rc != 0:
                raise SystemExit(f"{label}: exit {run.rc}: {run.summary(3)}")
            lines = sum(1 for _ in open(out))
            if lines != 10000:
                raise SystemExit(f"{label}: {lines} records")
            walls[label].append(run.wall)
    rows = []
    for label, runs in walls.items():
        rows.append([label, f"{statistics.median(runs):.3f}", f"{min(runs):.3f}-{max(runs):.3f}",
                     " ".join(f"{w:.3f}" for w in runs)])
    say(table(["contender", "median s", "min-max s", "runs"], rows))
    sup, base = (statistics.median(walls[label]) for label, _ in contenders)
    ratio = sup / base
    say(f"supervisor / baseline (medians): {ratio:.2f}x  target <= 1.10x: {'PASS' if ratio <= 1.10 else 'FAIL'}")
    if not args.no_save:
        results = SCRIPTS / "results"
        results.mkdir(exist_ok=True)
        path = results / f"defaults-{datetime.date.today().isoformat()}.txt"
        with open(path, "a") as f:
            f.write("\n".join(log) + "\n\n")
        print(f"(appended to {path.relative_to(ROOT)})")
    return 0 if ratio <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
