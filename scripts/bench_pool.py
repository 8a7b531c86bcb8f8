#!/usr/bin/env python3
"""The persistent pool (issue #25): single calls on one warm fleet.

Measures, each contender with --workers processes:

* round trip of one call (``await``-ed one after another, --latency calls):
  p50 and p99;
* throughput of --calls concurrent calls of a trivial async function
  (``asyncio.gather`` of them all);

for ``multiloop.Pool.apply``, ``loop.run_in_executor(multiloop.Executor)``,
aiomultiprocess ``Pool.apply`` (when installed) and ``ProcessPoolExecutor``
+ ``run_in_executor`` (a plain function: it cannot await); then --maps maps
of --items items on one ``multiloop.Pool`` (``pool.gather``) against as many
separate ``multiloop.run`` calls (a supervisor each).

    pip install . aiomultiprocess        # into the venv that runs this
    scripts/bench_pool.py [--calls 100000] [--latency 2000] [--maps 100] [--items 100]

Appends its table to scripts/results/pool-<date>.txt (not with --no-save).
"""

import argparse
import asyncio
import concurrent.futures
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
sys.path.insert(0, str(HERE))
import provenance  # noqa: E402
import seed  # noqa: E402


# -- contenders: an async context giving `call(x)` -> awaitable of x -----------


class Multiloop:
    name = "multiloop Pool.apply"

    def __init__(self, workers):
        import multiloop

        self.pool = multiloop.Pool(workers=workers, concurrency=1000, progress=False)

    async def __aenter__(self):
        return lambda x: self.pool.apply(seed.trivial, x)

    async def __aexit__(self, *exc):
        await self.pool.close()


class MultiloopExecutor:
    name = "multiloop Executor"

    def __init__(self, workers):
        import multiloop

        self.executor = multiloop.Executor(workers=workers, concurrency=1000)

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        return lambda x: loop.run_in_executor(self.executor, seed.trivial, x)

    async def __aexit__(self, *exc):
        await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown)


class Aiomultiprocess:
    name = "aiomultiprocess apply"

    def __init__(self, workers):
        import aiomultiprocess

        self.pool = aiomultiprocess.Pool(processes=workers)

    async def __aenter__(self):
        return lambda x: self.pool.apply(seed.trivial, (x,))

    async def __aexit__(self, *exc):
        self.pool.close()
        await self.pool.join()


class ProcessPool:
    name = "ProcessPoolExecutor"

    def __init__(self, workers):
        self.executor = concurrent.futures.ProcessPoolExecutor(max_workers=workers)

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        return lambda x: loop.run_in_executor(self.executor, seed.trivial_sync, x)

    async def __aexit__(self, *exc):
        self.executor.shutdown(wait=True)


CONTENDERS = [Multiloop, MultiloopExecutor, Aiomultiprocess, ProcessPool]


async def measure(cls, workers, latency_calls, calls):
    """(p50 ms, p99 ms, calls/s, all correct) for one contender."""
    async with cls(workers) as call:
        for x in range(min(100, latency_calls)):  # warm: every process started
            await call(x)
        rounds = []
        for x in range(latency_calls):
            began = time.perf_counter()
            assert await call(x) == x
            rounds.append(time.perf_counter() - began)
        began = time.perf_counter()
        got = await asyncio.gather(*(call(x) for x in range(calls)))
        wall = time.perf_counter() - began
    rounds.sort()
    p50 = rounds[len(rounds) // 2] * 1000
    p99 = rounds[min(len(rounds) - 1, int(len(rounds) * 0.99))] * 1000
    return p50, p99, calls / wall, got == list(range(calls))


async def maps_on_one_pool(workers, maps, items):
    import multiloop

    began = time.perf_counter()
    async with multiloop.Pool(workers=workers, progress=False) as pool:
        for _ in range(maps):
            assert await pool.gather(seed.trivial, range(items)) == list(range(items))
    return time.perf_counter() - began


def separate_runs(workers, maps, items):
    import multiloop

    began = time.perf_counter()
    for _ in range(maps):
        assert multiloop.run(seed.trivial, list(range(items)), workers=workers, progress=False) == list(range(items))
    return time.perf_counter() - began


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--latency", type=int, default=2_000)
    parser.add_argument("--maps", type=int, default=100)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--no-save", action="store_true", help="print only; append nothing to scripts/results/")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run on a tree with uncommitted changes; results are marked DIRTY (not for the README)")
    args = parser.parse_args()
    commit = provenance.check_tree(str(HERE.parent), args.allow_dirty)

    lines = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    say(f"# bench_pool {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, commit {commit}")
    say(f"# {os.cpu_count()} cores ({cpu_model}), load average at start {os.getloadavg()[0]:.1f}, "
        f"Python {sys.version.split()[0]}, {args.workers} workers, {args.latency} sequential calls, "
        f"{args.calls} concurrent calls")
    say(f"{'contender':<24} {'p50 ms':>9} {'p99 ms':>9} {'calls/s':>11}  correct")
    rates = {}
    for cls in CONTENDERS:
        try:
            p50, p99, rate, correct = asyncio.run(measure(cls, args.workers, args.latency, args.calls))
        except ImportError as error:
            say(f"{cls.name:<24} skipped: {error}")
            continue
        rates[cls.name] = rate
        say(f"{cls.name:<24} {p50:9.3f} {p99:9.3f} {rate:11.0f}  {correct}")
    for peer in ("aiomultiprocess apply", "ProcessPoolExecutor"):
        if peer in rates and "multiloop Pool.apply" in rates:
            say(f"multiloop Pool.apply vs {peer}: {rates['multiloop Pool.apply'] / rates[peer]:.1f}x calls/s")
    say()
    one = asyncio.run(maps_on_one_pool(args.workers, args.maps, args.items))
    many = separate_runs(args.workers, args.maps, args.items)
    say(f"{args.maps} maps of {args.items} items: one Pool {one:.2f}s, separate multiloop.run {many:.2f}s "
        f"({many / one:.1f}x)")
    if not args.no_save:
        results = HERE / "results" / f"pool-{datetime.date.today()}.txt"
        with open(results, "a") as f:
            f.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
