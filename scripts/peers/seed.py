"""The seed article's workload, as every contender of bench_python.py runs it.

The article's task is

    async def task():
        await asyncio.sleep(round(uniform(0.2, 1.0), 2))
        result = 0
        for i in range(randint(100_000, 500_000)):
            result += i
        return result

Here the random draws are made once, up front, with a fixed seed, so every
contender runs exactly the same tasks: `{"sleep": 0.57, "iters": 312345}`.
"""

import asyncio
import random


def make_tasks(n, seed=2024):
    rng = random.Random(seed)
    return [
        {"sleep": round(rng.uniform(0.2, 1.0), 2), "iters": rng.randint(100_000, 500_000)}
        for _ in range(n)
    ]


async def handle(task):
    """The article's coroutine on one task line (the `supervisor --python` handler)."""
    await asyncio.sleep(task["sleep"])
    result = 0
    for i in range(task["iters"]):
        result += i
    return result


def expected(task):
    n = task["iters"]
    return n * (n - 1) // 2


async def trivial(task):
    """Dispatch overhead: nothing but the round trip."""
    return task


def trivial_sync(task):
    """:func:`trivial` for executors that call plain functions
    (``ProcessPoolExecutor`` + ``run_in_executor``)."""
    return task
