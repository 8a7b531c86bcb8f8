#!/usr/bin/env python3
"""Memory of the crawl seen-set: the supervisor's peak RSS on a run of N
input lines with distinct `--key` values (every key goes into the seen-set,
as a 64-bit fingerprint) against the same run without `--key`; the
difference over N is the memory per seen key (goal: under 32 bytes).

    scripts/bench_seen.py [--keys 10000000] [--workers 2] [--bin-dir target/release]

Input lines are streamed to the supervisor's stdin, so neither run holds
the input; the output goes to a temporary file. Peak RSS is the
supervisor's own VmHWM from /proc, read until it exits. Prints its table;
results worth keeping go to scripts/results/ from a clean tree.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def feed(stdin, keys: int) -> None:
    batch = 100_000
    for start in range(0, keys, batch):
        end = min(keys, start + batch)
        stdin.write("".join(f'{{"id":"key-{i}","iters":0}}\n' for i in range(start, end)).encode())
    stdin.close()


def run(supervisor: str, keys: int, workers: int, with_key: bool, deadline_s: float) -> int:
    """Peak RSS (KiB) of one run."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [supervisor, "--task", "sim", "--workers", str(workers), "--quiet",
                "--input", "-", "--output", os.path.join(tmp, "out.jsonl")]
        if with_key:
            args += ["--key", "id"]
        proc = subprocess.Popen(args, stdin=subprocess.PIPE)
        feeder = threading.Thread(target=feed, args=(proc.stdin, keys), daemon=True)
        feeder.start()
        peak = 0
        deadline = time.monotonic() + deadline_s
        while proc.poll() is None:
            peak = max(peak, vm_hwm_kib(proc.pid))
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit(f"bench_seen: the run took longer than {deadline_s:.0f}s")
            time.sleep(0.05)
        feeder.join(timeout=10)
        if proc.returncode != 0:
            sys.exit(f"bench_seen: supervisor exited with {proc.returncode}")
        return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    parser.add_argument("--deadline", type=float, default=3600, help="seconds per run")
    args = parser.parse_args()
    supervisor = os.path.join(args.bin_dir, "supervisor")
    without = run(supervisor, args.keys, args.workers, False, args.deadline)
    with_keys = run(supervisor, args.keys, args.workers, True, args.deadline)
    per_key = (with_keys - without) * 1024 / args.keys
    print(f"keys                 {args.keys}")
    print(f"peak RSS without key {without / 1024:.1f} MiB")
    print(f"peak RSS with --key  {with_keys / 1024:.1f} MiB")
    print(f"per seen key         {per_key:.1f} bytes")


if __name__ == "__main__":
    main()
