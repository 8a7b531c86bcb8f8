#!/usr/bin/env python3
"""Python peer: the pattern multiloop replaces. One asyncio event loop per
core via a process pool:

    pool = ProcessPoolExecutor(max_workers=N)
    await asyncio.gather(*(loop.run_in_executor(pool, run_batch, b) for b in batches))

where each child runs `asyncio.run(...)` over a static batch. The whole input
is read up front and split into N equal contiguous batches; a child's results
come back only when its whole batch is done (a dead child loses its batch).
Output records have multiloop's shape, "worker" = batch index.
"""

import asyncio
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, error_record, ok_record, open_io, read_lines, sim  # noqa: E402


async def run_all(batch, concurrency):
    limit = asyncio.Semaphore(concurrency) if concurrency > 0 else None

    async def one(seq, sleep_ms, iters):
        if limit is not None:
            await limit.acquire()
        try:
            started = time.perf_counter()
            total = await sim(sleep_ms, iters)
            return seq, (time.perf_counter() - started) * 1000, total
        finally:
            if limit is not None:
                limit.release()

    return await asyncio.gather(*(one(seq, s, i) for seq, s, i in batch))


def run_batch(batch, concurrency):
    """Runs in a child process: its own event loop over its static batch."""
    return asyncio.run(run_all(batch, concurrency))


def split(items, n):
    """n contiguous batches whose sizes differ by at most one."""
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out


async def run(args, source, sink):
    tasks, bad = [], 0
    for seq, task, error in read_lines(source, args.iters_scale):
        if task is None:
            sink.write(error_record(seq, 0, error))
            bad += 1
        else:
            tasks.append((seq, *task))
    loop = asyncio.get_running_loop()
    async def tagged(index, batch):
        return index, await loop.run_in_executor(pool, run_batch, batch, args.concurrency)

    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        batches = split(tasks, args.workers)
        for done in asyncio.as_completed([tagged(i, b) for i, b in enumerate(batches)]):
            worker, results = await done
            for seq, ms, total in results:
                sink.write(ok_record(seq, worker, ms, total))
    return len(tasks) + bad, bad


def main():
    p = base_parser(__doc__, 1024)
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes = static batches (default os.cpu_count())",
    )
    args = p.parse_args()
    if args.workers < 1:
        p.error("--workers must be >= 1")
    source, sink = open_io(args)
    started = time.perf_counter()
    tasks, bad = asyncio.run(run(args, source, sink))
    sink.flush()
    secs = time.perf_counter() - started
    print(
        f"pool_asyncio: {tasks} tasks ({bad} bad input) in {secs:.3f} s = "
        f"{tasks / max(secs, 1e-9):.0f} tasks/s ({args.workers} processes, "
        f"concurrency {args.concurrency} each)",
        file=sys.stderr,
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
