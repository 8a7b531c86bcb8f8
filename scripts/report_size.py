#!/usr/bin/env python3
"""Check that a run's --report page stays small and opens fast.

  report_size.py [--tasks N] [--workers W] [--max-mb 5] [--max-open-s 2]

Runs N `sim` tasks (no sleep, a few iterations: the run is about the
report, not the work) with --report, checks the page's size against
--max-mb, then opens it in headless Chromium and reads the time from
navigation start to every chart drawn (the page writes it into
`data-render-ms`), against --max-open-s. The page holds no per-task data
(histogram buckets and the 20 slowest tasks), so its size does not grow
with N: `--tasks 10000000` shows it on a quiet machine; the default is a
small run that proves the script works. Exit 0 when both hold.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEADLINE_S = 3600


def browser():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("report_size: chromium is not installed (apt-get install chromium)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--max-mb", type=float, default=5.0)
    parser.add_argument("--max-open-s", type=float, default=2.0)
    parser.add_argument("--supervisor", default=os.path.join(ROOT, "target", "release", "supervisor"))
    args = parser.parse_args()
    chromium = browser()
    with tempfile.TemporaryDirectory() as tmp:
        tasks = os.path.join(tmp, "tasks.jsonl")
        with open(tasks, "w") as f:
            line = '{"sleep_ms":0,"iters":%d}\n'
            for i in range(args.tasks):
                f.write(line % (i % 1000))
        page = os.path.join(tmp, "run.html")
        started = time.monotonic()
        subprocess.run(
            [args.supervisor, "--task", "sim", "--workers", args.workers, "--input", tasks,
             "--output", os.path.join(tmp, "out.jsonl"), "--report", page, "--quiet"],
            check=True, timeout=DEADLINE_S,
        )
        run_s = time.monotonic() - started
        size_mb = os.path.getsize(page) / 1e6
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={os.path.join(tmp, 'profile')}", "--window-size=1280,2400",
             "--dump-dom", "file://" + page],
            check=True, capture_output=True, text=True, timeout=120,
        ).stdout
        root = re.search(r"<html[^>]*>", dom).group(0)
        if "data-errors" in root:
            sys.exit(f"report_size: the page has script errors: {root}")
        rendered = re.search(r'data-render-ms="(\d+)"', root)
        if not rendered:
            sys.exit(f"report_size: the page did not finish drawing: {root}")
        open_s = int(rendered.group(1)) / 1000
        print(f"tasks {args.tasks}, workers {args.workers}: run {run_s:.1f} s, "
              f"page {size_mb:.2f} MB (limit {args.max_mb}), opens in {open_s:.2f} s (limit {args.max_open_s})")
        if size_mb > args.max_mb or open_s > args.max_open_s:
            sys.exit("report_size: over the limit")


if __name__ == "__main__":
    main()
