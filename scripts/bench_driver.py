#!/usr/bin/env python3
"""Benchmarks of the Python driver (multiloop.gather / Pool).

seed      the seed article's workload (10,000 tasks: sleep round(uniform(0.2,
          1.0), 2) s, then `for i in range(randint(100_000, 500_000)): result
          += i`; fixed seed), the same task list for every contender, in one
          run: multiloop.gather, aiomultiprocess Pool.map, and the article's
          layout (ProcessPoolExecutor + asyncio.run, 5 batches of 2,000).
          Each contender runs in its own child process, so its CPU seconds
          (user+sys of it and all its descendants) are measured apart.
overhead  the driver's own cost per item: multiloop.gather of `return task`
          over 200,000 small items; the driver process's CPU time (its own
          threads only, not the supervisor or workers) per item, and the wall
          time against the same run from the CLI (supervisor --python).

    scripts/bench_driver.py seed [--iters-scale 0.1] [--repeat 3]
    scripts/bench_driver.py overhead [--items 200000] [--repeat 5]

Needs the package installed in the running Python (pip install . or maturin
develop) with cloudpickle, and aiomultiprocess for the seed comparison.
Results are printed and appended to scripts/results/driver-<date>.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import provenance  # noqa: E402
SEED = 42


# -- the workload -------------------------------------------------------------


def seed_tasks(count: int, scale: float) -> list:
    rng = random.Random(SEED)
    return [
        {"sleep": round(rng.uniform(0.2, 1.0), 2), "iters": int(rng.randint(100_000, 500_000) * scale)}
        for _ in range(count)
    ]


async def seed_task(task):
    """The article's task, as written there."""
    await asyncio.sleep(task["sleep"])
    result = 0
    for i in range(task["iters"]):
        result += i
    return result


async def echo(task):
    return task


def expected(task) -> int:
    n = task["iters"]
    return n * (n - 1) // 2


# -- contenders (each run in its own process by `--one NAME`) --------------------


def run_multiloop(tasks, concurrency):
    import multiloop

    return multiloop.run(seed_task, tasks, concurrency=concurrency, progress=False)


def run_aiomultiprocess(tasks, concurrency):
    import aiomultiprocess

    async def main():
        # childconcurrency = multiloop's concurrency here (--concurrency),
        # so both run the same number of tasks in flight per process.
        async with aiomultiprocess.Pool(childconcurrency=concurrency) as pool:
            return await pool.map(seed_task, tasks)

    return asyncio.run(main())


def _article_batch(batch):
    async def main():
        return await asyncio.gather(*(seed_task(t) for t in batch))

    return asyncio.run(main())


def run_article(tasks, batches=5):
    """The seed article's layout: a ProcessPoolExecutor, one asyncio.run per
    static batch (5 batches of 2,000 for 10,000 tasks)."""
    size = (len(tasks) + batches - 1) // batches

    async def main():
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor() as pool:
            parts = await asyncio.gather(
                *(loop.run_in_executor(pool, _article_batch, tasks[i : i + size]) for i in range(0, len(tasks), size))
            )
        return [r for part in parts for r in part]

    return asyncio.run(main())


def one(name: str, path: str, concurrency: int) -> None:
    tasks = json.loads(Path(path).read_text())
    start = time.perf_counter()
    if name == "multiloop":
        results = run_multiloop(tasks, concurrency)
    elif name == "aiomultiprocess":
        results = run_aiomultiprocess(tasks, concurrency)
    elif name == "article":
        results = run_article(tasks)
    else:
        raise SystemExit(f"unknown contender {name}")
    wall = time.perf_counter() - start
    wrong = sum(1 for t, r in zip(tasks, results) if r != expected(t)) + abs(len(results) - len(tasks))
    print(json.dumps({"wall": wall, "wrong": wrong}))


def measured(args: list) -> dict:
    """Runs a child; its wall time, its report, and CPU of it and its descendants."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    report["total_wall"] = wall
    report["status"] = proc.returncode
    return report


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_seed(args) -> list:
    tasks = seed_tasks(args.count, args.iters_scale)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(tasks, file)
        path = file.name
    rows = {name: [] for name in args.contenders}
    try:
        for round_ in range(args.repeat):
            for name in args.contenders:
                before = children_cpu()
                report = measured([sys.executable, __file__, "--one", name, path, "--concurrency", str(args.concurrency)])
                report["cpu"] = children_cpu() - before
                rows[name].append(report)
                print(f"  round {round_ + 1} {name:16} wall {report['wall']:7.2f} s  cpu {report['cpu']:7.2f} s  "
                      f"wrong {report.get('wrong')}  status {report['status']}", file=sys.stderr)
    finally:
        os.unlink(path)
    lines = [f"seed workload: {args.count} tasks, iters x{args.iters_scale}, seed {SEED}, "
             f"{args.repeat} rounds (median [min-max])"]
    best = {name: statistics.median(r["wall"] for r in reports) for name, reports in rows.items()}
    for name, reports in rows.items():
        walls = [r["wall"] for r in reports]
        cpus = [r["cpu"] for r in reports]
        wrong = max(r.get("wrong", -1) for r in reports)
        lines.append(
            f"  {name:16} wall {statistics.median(walls):7.2f} s [{min(walls):.2f}-{max(walls):.2f}]  "
            f"cpu {statistics.median(cpus):7.2f} s [{min(cpus):.2f}-{max(cpus):.2f}]  wrong results {wrong}"
        )
    if "multiloop" in best:
        for name in best:
            if name != "multiloop":
                lines.append(f"  multiloop vs {name}: {best[name] / best['multiloop']:.2f}x faster (median wall)")
    return lines


def bench_overhead(args) -> list:
    import multiloop

    items = [{"i": i, "name": "item"} for i in range(args.items)]
    with tempfile.TemporaryDirectory() as tmp:
        spec_dir = Path(tmp)
        (spec_dir / "driver_echo.py").write_text("async def echo(task):\n    return task\n")
        inp = spec_dir / "items.jsonl"
        inp.write_text("".join(json.dumps(x) + "\n" for x in items))
        sys.path.insert(0, str(spec_dir))
        import driver_echo  # by reference, as a user's module would be

        cpu, walls, cli_walls = [], [], []
        for round_ in range(args.repeat):
            c0, w0 = time.process_time(), time.perf_counter()
            out = multiloop.run(driver_echo.echo, items, workers=2, progress=False)
            w1, c1 = time.perf_counter(), time.process_time()
            assert out == items
            cpu.append((c1 - c0) / len(items) * 1e6)
            walls.append(w1 - w0)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(spec_dir)] + sys.path),
                       MULTILOOP_PYTHON=sys.executable)
            w2 = time.perf_counter()
            subprocess.run([multiloop.pool.find_supervisor(), "--python", "driver_echo:echo", "--workers", "2",
                            "-i", str(inp), "-o", str(spec_dir / "out.jsonl"), "--quiet"], check=True, env=env)
            cli_walls.append(time.perf_counter() - w2)
            print(f"  round {round_ + 1}: driver cpu {cpu[-1]:.2f} us/item, wall {walls[-1]:.2f} s, "
                  f"cli wall {cli_walls[-1]:.2f} s", file=sys.stderr)
    extra = [(w - c) / len(items) * 1e6 for w, c in zip(walls, cli_walls)]
    return [
        f"driver overhead: {args.items} items {{\"i\":N,\"name\":\"item\"}} -> `return task`, 2 workers, "
        f"{args.repeat} rounds (median [min-max])",
        f"  driver process CPU per item   {statistics.median(cpu):6.2f} us [{min(cpu):.2f}-{max(cpu):.2f}]  (target <= 5)",
        f"  multiloop.run wall            {statistics.median(walls):6.2f} s [{min(walls):.2f}-{max(walls):.2f}]",
        f"  same run from the CLI wall    {statistics.median(cli_walls):6.2f} s [{min(cli_walls):.2f}-{max(cli_walls):.2f}]",
        f"  wall added per item           {statistics.median(extra):6.2f} us [{min(extra):.2f}-{max(extra):.2f}]",
    ]


def machine(commit: str) -> str:
    model = ""
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0]
    return (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}, {model}, "
            f"{os.cpu_count()} cpus, load {load:.1f}, Python {platform.python_version()}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        parser = argparse.ArgumentParser()
        parser.add_argument("--one", nargs=2)
        parser.add_argument("--concurrency", type=int, default=1024)
        args = parser.parse_args()
        one(args.one[0], args.one[1], args.concurrency)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", choices=["seed", "overhead"])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--iters-scale", type=float, default=0.1,
                        help="multiply each task's iters (1.0 = the article's; ~150 CPU-s of pure Python)")
    parser.add_argument("--concurrency", type=int, default=1024)
    parser.add_argument("--contenders", nargs="+", default=["multiloop", "aiomultiprocess", "article"])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run on a tree with uncommitted changes; results are marked DIRTY (not for the README)")
    args = parser.parse_args()
    commit = provenance.check_tree(str(HERE.parent), args.allow_dirty)
    lines = [machine(commit)] + (bench_seed(args) if args.bench == "seed" else bench_overhead(args))
    text = "\n".join(lines)
    print(text)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    with open(results / f"driver-{datetime.date.today()}.txt", "a") as file:
        file.write(text + "\n\n")


if __name__ == "__main__":
    main()
