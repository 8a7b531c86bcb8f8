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
separate ``multiloop.run`` calls (a supervisor each). ``--repeat N`` runs
each measurement N times and reports median [min-max].

``--memory N`` is another mode: N trivial calls on one pool, submitted one
after another by 100 producers (each ``await pool.submit`` waits at
``max_in_flight``), then a map of N items read with ``async for``; the
driver's and the supervisor's RSS are sampled every N/100 calls and reported
as start/peak/end: flat memory means end ~ start, whatever N.

    pip install . aiomultiprocess        # into the venv that runs this
    scripts/bench_pool.py [--calls 100000] [--latency 2000] [--maps 100] [--items 100] [--repeat 5]
    scripts/bench_pool.py --memory 10000000

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


def spread(values, form):
    """median [min-max] of ``values``, each written with ``form``."""
    return f"{format(statistics.median(values), form)} [{format(min(values), form)}-{format(max(values), form)}]"


# -- --memory: flat memory over many calls -----------------------------------


_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib(pid):
    """Resident memory of ``pid`` in MiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE / (1 << 20)
    except (OSError, ValueError, IndexError):
        return None


class Samples:
    """RSS of the driver and the supervisor, sampled every ``every`` calls."""

    def __init__(self, every):
        self.every = every
        self.driver = []
        self.supervisor = []
        self.pid = None

    def take(self):
        self.driver.append(rss_mib(os.getpid()))
        if self.pid is not None:
            self.supervisor.append(rss_mib(self.pid))

    @staticmethod
    def line(name, values):
        values = [v for v in values if v is not None]
        if not values:
            return f"  {name:<11} no samples"
        return (f"  {name:<11} start {values[0]:7.1f} MiB  peak {max(values):7.1f} MiB  "
                f"end {values[-1]:7.1f} MiB  ({len(values)} samples)")


async def memory(workers, calls, producers=100):
    """Runs ``calls`` single calls, then a map of ``calls`` items, on one pool,
    sampling RSS as they go; (lines of report, seconds)."""
    import multiloop

    lines = []
    every = max(1, calls // 100)
    async with multiloop.Pool(workers=workers, concurrency=1000, progress=False) as pool:
        await pool.gather(seed.trivial, range(1000))  # warm: every process started
        samples = Samples(every)
        samples.pid = pool._fleet.pid
        samples.take()
        done = 0
        wrong = 0
        all_done = asyncio.Event()

        def finished(future):
            nonlocal done, wrong
            done += 1
            if future.exception() is not None:
                wrong += 1
            if done % every == 0:
                samples.take()
            if done == calls:
                all_done.set()

        async def producer(start):
            for x in range(start, calls, producers):
                (await pool.submit(seed.trivial, x)).add_done_callback(finished)

        began = time.perf_counter()
        await asyncio.gather(*(producer(p) for p in range(producers)))
        await all_done.wait()
        wall = time.perf_counter() - began
        samples.take()
        lines.append(f"{calls} calls: {producers} producers awaiting pool.submit, {wall:.1f}s "
                     f"({calls / wall:.0f} calls/s), {wrong} failed, at most {pool._fleet.most_in_flight} "
                     f"in flight (max_in_flight {pool._fleet.max_in_flight})")
        lines.append(Samples.line("driver", samples.driver))
        lines.append(Samples.line("supervisor", samples.supervisor))

        mapped = Samples(every)
        mapped.pid = pool._fleet.pid
        mapped.take()
        count = 0
        began = time.perf_counter()
        async for result in pool.map(seed.trivial, range(calls)):
            count += 1
            wrong += not result.ok
            if count % every == 0:
                mapped.take()
        wall = time.perf_counter() - began
        mapped.take()
        lines.append(f"a map of {calls} items (async for): {wall:.1f}s ({calls / wall:.0f} items/s), "
                     f"{count} results, {wrong} failed in all")
        lines.append(Samples.line("driver", mapped.driver))
        lines.append(Samples.line("supervisor", mapped.supervisor))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--latency", type=int, default=2_000)
    parser.add_argument("--maps", type=int, default=100)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of each measurement (median [min-max])")
    parser.add_argument("--memory", type=int, metavar="N",
                        help="the memory mode instead: N calls, then a map of N items, sampling RSS")
    parser.add_argument("--no-save", action="store_true", help="print only; append nothing to scripts/results/")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run on a tree with uncommitted changes; results are marked DIRTY (not for the README)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    commit = provenance.check_tree(str(HERE.parent), args.allow_dirty)

    lines = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    say(f"# bench_pool {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}")
    if args.memory is not None:
        say(f"# {os.cpu_count()} cores ({cpu_model}), load average at start {os.getloadavg()[0]:.1f}, "
            f"Python {sys.version.split()[0]}, {args.workers} workers, memory mode")
        for line in asyncio.run(memory(args.workers, args.memory)):
            say(line)
    else:
        say(f"# {os.cpu_count()} cores ({cpu_model}), load average at start {os.getloadavg()[0]:.1f}, "
            f"Python {sys.version.split()[0]}, {args.workers} workers, {args.latency} sequential calls, "
            f"{args.calls} concurrent calls, {args.repeat} rounds (median [min-max])")
        say(f"{'contender':<24} {'p50 ms':>21} {'p99 ms':>21} {'calls/s':>25}  correct")
        rates = {}
        for cls in CONTENDERS:
            rounds = []
            try:
                for _ in range(args.repeat):
                    rounds.append(asyncio.run(measure(cls, args.workers, args.latency, args.calls)))
            except ImportError as error:
                say(f"{cls.name:<24} skipped: {error}")
                continue
            p50s, p99s, rate, correct = zip(*rounds)
            rates[cls.name] = statistics.median(rate)
            say(f"{cls.name:<24} {spread(p50s, '.3f'):>21} {spread(p99s, '.3f'):>21} {spread(rate, '.0f'):>25}  "
                f"{all(correct)}")
        for peer in ("aiomultiprocess apply", "ProcessPoolExecutor"):
            if peer in rates and "multiloop Pool.apply" in rates:
                say(f"multiloop Pool.apply vs {peer}: {rates['multiloop Pool.apply'] / rates[peer]:.1f}x calls/s (medians)")
        say()
        one, many = [], []
        for _ in range(args.repeat):
            one.append(asyncio.run(maps_on_one_pool(args.workers, args.maps, args.items)))
            many.append(separate_runs(args.workers, args.maps, args.items))
        say(f"{args.maps} maps of {args.items} items: one Pool {spread(one, '.2f')} s, "
            f"separate multiloop.run {spread(many, '.2f')} s ({statistics.median(many) / statistics.median(one):.1f}x)")
    if not args.no_save:
        results = HERE / "results" / f"pool-{datetime.date.today()}.txt"
        with open(results, "a") as f:
            f.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
