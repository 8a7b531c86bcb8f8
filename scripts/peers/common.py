"""Shared pieces of the Python peers: the `sim` task, input parsing, records.

`sim` is exactly multiloop's built-in kind: sleep `sleep_ms` (the I/O), then
the iterative sum 0 + 1 + ... + (iters - 1) mod 2^64, computed by a real
Python loop (the CPU work that follows the I/O and blocks the event loop).
"""

import argparse
import asyncio
import json
import sys

MASK = (1 << 64) - 1


async def sim(sleep_ms, iters):
    if sleep_ms > 0:
        await asyncio.sleep(sleep_ms / 1000)
    total = 0
    for i in range(iters):
        total += i
    # Python ints do not wrap; reducing once at the end equals reducing at
    # every step, since (a + b) mod m = ((a mod m) + b) mod m.
    return total & MASK


def expected_sum(iters):
    return (iters * (iters - 1) // 2) & MASK if iters > 0 else 0


def parse_task(raw, iters_scale):
    """A JSONL line -> (sleep_ms, iters); raises ValueError on bad input."""
    obj = json.loads(raw)
    if not isinstance(obj, dict):
        raise ValueError("task is not a JSON object")
    sleep_ms = obj.get("sleep_ms", 0)
    iters = obj.get("iters", 0)
    for name, value in (("sleep_ms", sleep_ms), ("iters", iters)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MASK:
            raise ValueError(f"{name} is not a u64: {value!r}")
    if iters_scale != 1.0:
        iters = round(iters * iters_scale)
    return sleep_ms, iters


def read_lines(source, iters_scale):
    """Yields (seq, task-or-None, error-or-None) lazily; seq is the 1-based
    line number, blank lines are skipped (but counted)."""
    for seq, raw in enumerate(source, 1):
        raw = raw.strip()
        if not raw:
            continue
        try:
            yield seq, parse_task(raw, iters_scale), None
        except ValueError as err:  # json.JSONDecodeError is a ValueError
            yield seq, None, str(err)


def ok_record(seq, worker, ms, total):
    return f'{{"seq":{seq},"worker":{worker},"attempts":1,"ms":{ms:.3f},"ok":{{"sum":{total}}}}}\n'


def error_record(seq, worker, message):
    error = json.dumps({"kind": "bad_input", "message": message}, separators=(",", ":"))
    return f'{{"seq":{seq},"worker":{worker},"attempts":1,"ms":0.000,"error":{error}}}\n'


def base_parser(description, default_concurrency):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("input", nargs="?", default="-", help="JSONL task file (default stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=default_concurrency,
        help=f"tasks in flight per event loop (default {default_concurrency}; 0 = unbounded)",
    )
    p.add_argument(
        "--iters-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply iters by F; prefer scaling the list with gen_tasks.py --iters-scale, "
        "so that every contender runs the same file",
    )
    return p


def open_io(args):
    source = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
    if args.output == "-":
        sink = open(sys.stdout.fileno(), "w", buffering=1 << 18, closefd=False)
    else:
        sink = open(args.output, "w", buffering=1 << 18)
    if args.iters_scale != 1.0:
        print(
            f"note: iters scaled by {args.iters_scale} inside the peer; compare only with "
            "runs of the same scaled list (gen_tasks.py --iters-scale)",
            file=sys.stderr,
        )
    return source, sink
