#!/usr/bin/env python3
"""Python peer: one asyncio event loop on one core, a semaphore bounding the
tasks in flight. Reads the JSONL task list lazily, writes one record per task
(completion order) in multiloop's output shape:
{"seq":N,"worker":0,"attempts":1,"ms":F,"ok":{"sum":N}}
"""

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, error_record, ok_record, open_io, read_lines, sim  # noqa: E402


async def run(source, sink, concurrency, iters_scale):
    limit = asyncio.Semaphore(concurrency) if concurrency > 0 else None
    pending = set()
    counts = [0, 0]  # tasks, bad input

    async def one(seq, sleep_ms, iters):
        try:
            started = time.perf_counter()
            total = await sim(sleep_ms, iters)
            ms = (time.perf_counter() - started) * 1000
            sink.write(ok_record(seq, 0, ms, total))
            counts[0] += 1
        finally:
            if limit is not None:
                limit.release()

    for seq, task, error in read_lines(source, iters_scale):
        if task is None:
            sink.write(error_record(seq, 0, error))
            counts[0] += 1
            counts[1] += 1
            continue
        if limit is not None:
            await limit.acquire()
        t = asyncio.create_task(one(seq, *task))
        pending.add(t)
        t.add_done_callback(pending.discard)
    while pending:
        await asyncio.gather(*list(pending))
    return counts


def main():
    args = base_parser(__doc__, 1024).parse_args()
    source, sink = open_io(args)
    started = time.perf_counter()
    tasks, bad = asyncio.run(run(source, sink, args.concurrency, args.iters_scale))
    sink.flush()
    secs = time.perf_counter() - started
    print(
        f"asyncio_single: {tasks} tasks ({bad} bad input) in {secs:.3f} s = "
        f"{tasks / max(secs, 1e-9):.0f} tasks/s (1 loop, concurrency {args.concurrency})",
        file=sys.stderr,
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
