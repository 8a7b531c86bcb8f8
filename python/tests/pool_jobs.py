"""Handlers the driver tests send by reference (``pool_jobs:NAME``)."""

import asyncio
import os
import time


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


_arrived = 0
_all_here = None


async def busy_together(task):
    """Waits until ``task["n"]`` of these have arrived in this worker, so that
    all become ready in one loop iteration, then holds the loop for
    ``task["ms"]`` without awaiting; returns the monotonic time it finished."""
    global _arrived, _all_here
    if _all_here is None:
        _all_here = asyncio.Event()
    _arrived += 1
    if _arrived >= task["n"]:
        _all_here.set()
    await _all_here.wait()
    end = time.monotonic() + task["ms"] / 1000
    while time.monotonic() < end:
        pass
    return time.monotonic()


def multiloop_modules(task):
    """The multiloop modules this worker process has loaded."""
    import sys

    return sorted(name for name in sys.modules if name.split(".")[0] == "multiloop")


async def crawl(task):
    """A binary tree by number: node n adds 2n and 2n+1 below ``task["max"]``,
    each keyed by its number, and node 1 again (kept out as seen)."""
    import multiloop

    n = task["n"]
    for child in (2 * n, 2 * n + 1):
        if child <= task["max"]:
            multiloop.add({"n": child, "max": task["max"]}, key=str(child))
    multiloop.add({"n": 1, "max": task["max"]}, key="1")
    return n


def graph_children(n, size):
    """The links of node ``n`` in a graph of ``size`` nodes: duplicates
    (the same child twice), cycles (back to smaller nodes, to itself)."""
    return [(2 * n) % size, (n * n + 1) % size, (n + 7) % size, (2 * n) % size, n]


async def graph(task):
    """One node of :func:`graph_children`'s graph: adds every link keyed by
    its number (the seen-set keeps out the repeats), after ``sleep_ms``."""
    import multiloop

    await asyncio.sleep(task.get("sleep_ms", 0) / 1000)
    for child in graph_children(task["n"], task["size"]):
        multiloop.add({**task, "n": child}, key=str(child))
    return task["n"]


async def hold(address, ms, value):
    """Tells the test (a datagram to ``address``: this worker's pid; dropped
    when the test's queue is full) that the call has started, then holds it ``ms`` milliseconds; returns ``value``."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)  # a full queue drops the news, never blocks the loop
        try:
            sock.sendto(str(os.getpid()).encode(), address)
        except OSError:
            pass
    await asyncio.sleep(ms / 1000)
    return value


def pid():
    return os.getpid()


def pid_of(_item):
    return os.getpid()


def crash():
    os._exit(3)


async def log_after(path, ms, value):
    """Sleeps ``ms`` milliseconds, then appends ``value`` to ``path`` (one
    line, in one write): the calls that finished, as seen from outside."""
    await asyncio.sleep(ms / 1000)
    with open(path, "a") as file:
        file.write(f"{value}\n")
    return value
