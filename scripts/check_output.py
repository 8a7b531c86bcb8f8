#!/usr/bin/env python3
"""Check a multiloop-shaped output file against its `sim` task list.

  check_output.py TASKS.jsonl OUTPUT.jsonl [--quick]

Full check (default): every non-blank input line has exactly one record, no
record has an unknown seq, every record is `ok` and its sum equals
iters*(iters-1)/2 mod 2^64. `--quick` only counts lines and error records
(for multi-million-line outputs). Exit 0 when everything matches.
"""

import argparse
import json
import os
import sys

MASK = (1 << 64) - 1


def count_lines(path):
    lines = errors = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 22)
            if not chunk:
                break
            lines += chunk.count(b"\n")
            errors += chunk.count(b'"error":')
    return lines, errors


def expected_sum(iters):
    return (iters * (iters - 1) // 2) & MASK if iters > 0 else 0


def check(tasks_path, output_path, quick=False, expected=None):
    """Returns (records, problems). `expected` = task count if known."""
    problems = []
    if not os.path.exists(output_path):
        return 0, [f"no output file {output_path}"]
    if quick:
        lines, errors = count_lines(output_path)
        if expected is None and tasks_path:
            expected = count_lines(tasks_path)[0]
        if expected is not None and lines != expected:
            problems.append(f"{lines} records for {expected} tasks")
        if errors:
            problems.append(f"{errors} error records")
        return lines, problems

    want = {}
    with open(tasks_path, "rb") as f:
        for seq, raw in enumerate(f, 1):
            raw = raw.strip()
            if raw:
                want[seq] = json.loads(raw).get("iters", 0)
    seen = set()
    records = 0
    with open(output_path, "rb") as f:
        for n, raw in enumerate(f, 1):
            records += 1
            try:
                rec = json.loads(raw)
                seq = rec["seq"]
            except (ValueError, KeyError, TypeError) as err:
                problems.append(f"output line {n}: not a record ({err})")
                continue
            if seq in seen:
                problems.append(f"seq {seq}: reported twice")
            seen.add(seq)
            if seq not in want:
                problems.append(f"seq {seq}: no such task")
            elif "ok" not in rec:
                problems.append(f"seq {seq}: {rec.get('error')}")
            elif rec["ok"].get("sum") != expected_sum(want[seq]):
                problems.append(f"seq {seq}: sum {rec['ok'].get('sum')} != {expected_sum(want[seq])}")
            if len(problems) > 20:
                problems.append("... (stopped after 20 problems)")
                return records, problems
    missing = len(want.keys() - seen)
    if missing:
        problems.append(f"{missing} tasks without a record")
    return records, problems


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tasks")
    p.add_argument("output")
    p.add_argument("--quick", action="store_true", help="count lines and error records only")
    a = p.parse_args()
    records, problems = check(a.tasks, a.output, a.quick)
    for line in problems:
        print(line)
    print(f"{records} records, {'OK' if not problems else 'PROBLEMS'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
