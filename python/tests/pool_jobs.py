"""Handlers the driver tests send by reference (``pool_jobs:NAME``)."""

import asyncio
import os


async def sim(task):
    """The seed workload: sleep, then a pure-Python sum; faults for tests."""
    await asyncio.sleep(task.get("sleep_ms", 0) / 1000)
    fault = task.get("fault")
    if fault == "abort":
        os.abort()
    if fault == "raise":
        raise ValueError(f"bad item {task.get('n')}")
    if fault == "not_json":
        return {1, 2}
    total = 0
    for i in range(task.get("iters", 0)):
        total += i
    return {"sum": total, "n": task.get("n")}


async def echo(task):
    return task
