#!/usr/bin/env python3
"""Write a JSONL list of `sim` tasks: {"sleep_ms":u64,"iters":u64} per line.

Values are drawn uniformly (inclusive ranges) from a seeded RNG, so the same
arguments always give the same list. Presets:

  demo     10,000 tasks, sleep 200-1000 ms, iters 1,000,000-5,000,000
  trivial  {"sleep_ms":0,"iters":0} lines (default count 1,000,000)
  cpu      sleep 0, iters = CPU_ITERS (~1 ms of CPU in Rust on the reference
           machine; see scripts/README.md), default count 20,000

Explicit options override the preset. `--iters-scale F` multiplies every
iters value by F *after* drawing, so a scaled list keeps the same sleeps and
the same relative CPU costs as the unscaled one; compare runs only on the
same (scaled) file.

Examples:
  gen_tasks.py --preset demo -o demo.jsonl
  gen_tasks.py --preset demo --iters-scale 0.01 -o demo-0.01.jsonl
  gen_tasks.py --count 10000000 --preset trivial | supervisor --input - ...
"""

import argparse
import random
import sys

# ~1 ms of CPU per task for multiloop_tasks::sim in a release build, measured
# with `inprocess_baseline --threads 1` on the 2-core AMD EPYC reference box
# (5,000 tasks: 1.75M iters -> 0.99 ms, 1.8M -> 1.00 ms; ~0.56 ns/iter).
CPU_ITERS = 1_800_000

PRESETS = {
    "demo": dict(count=10_000, sleep_ms=(200, 1000), iters=(1_000_000, 5_000_000)),
    "trivial": dict(count=1_000_000, sleep_ms=(0, 0), iters=(0, 0)),
    "cpu": dict(count=20_000, sleep_ms=(0, 0), iters=(CPU_ITERS, CPU_ITERS)),
}


def parse_range(text):
    """'LO-HI' or 'N' -> (lo, hi); underscores and commas allowed in numbers."""
    clean = text.replace("_", "").replace(",", "")
    lo, sep, hi = clean.partition("-")
    try:
        lo = int(lo)
        hi = int(hi) if sep else lo
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or LO-HI")
    if lo < 0 or hi < lo:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= LO <= HI")
    return lo, hi


def parse_count(text):
    try:
        n = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if n < 0:
        raise argparse.ArgumentTypeError("count must be >= 0")
    return n


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--count", type=parse_count, help="number of tasks")
    p.add_argument("--seed", type=int, default=1, help="RNG seed (default 1)")
    p.add_argument("--sleep-ms", type=parse_range, metavar="LO-HI")
    p.add_argument("--iters", type=parse_range, metavar="LO-HI")
    p.add_argument(
        "--iters-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply each iters value by F after drawing (e.g. 0.01 for Python peers)",
    )
    p.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    a = p.parse_args(argv)

    base = PRESETS.get(a.preset, dict(count=None, sleep_ms=(0, 0), iters=(0, 0)))
    count = a.count if a.count is not None else base["count"]
    if count is None:
        p.error("--count is required without --preset")
    sleep_lo, sleep_hi = a.sleep_ms or base["sleep_ms"]
    iters_lo, iters_hi = a.iters or base["iters"]
    scale = a.iters_scale
    if scale < 0:
        p.error("--iters-scale must be >= 0")

    out = sys.stdout.buffer if a.output == "-" else open(a.output, "wb")
    try:
        if sleep_lo == sleep_hi and iters_lo == iters_hi:
            # Constant lines: write them in large chunks, so a pipe into the
            # supervisor is limited by the supervisor, not by this script.
            line = b'{"sleep_ms":%d,"iters":%d}\n' % (sleep_lo, round(iters_lo * scale))
            chunk_lines = 65536
            chunk = line * chunk_lines
            full, rest = divmod(count, chunk_lines)
            for _ in range(full):
                out.write(chunk)
            out.write(line * rest)
        else:
            rng = random.Random(a.seed)
            randint = rng.randint
            buf = []
            for i in range(count):
                sleep = randint(sleep_lo, sleep_hi)
                iters = randint(iters_lo, iters_hi)
                if scale != 1.0:
                    iters = round(iters * scale)
                buf.append(f'{{"sleep_ms":{sleep},"iters":{iters}}}\n')
                if len(buf) >= 8192:
                    out.write("".join(buf).encode())
                    buf.clear()
            out.write("".join(buf).encode())
        out.flush()
    except BrokenPipeError:
        # The consumer stopped reading (e.g. `| head`): not an error here.
        sys.stderr.close()
        return 0
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
