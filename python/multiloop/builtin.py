"""``sim`` and ``chaos``, the Python twins of the ``worker`` binary's kinds
(``crates/tasks/src/{sim,chaos}.rs``), for tests, drills and benchmarks::

    supervisor --python multiloop.builtin --task chaos -i tasks.jsonl

``sim``: ``{"sleep_ms": N, "iters": N}`` -> ``{"sum": 0+1+...+(iters-1) mod 2^64}``
after sleeping. ``chaos``: the same plus an optional ``"fault"``: ``abort``,
``exit:N``, ``block`` (blocks the event loop without using CPU), ``stall``, ``panic``, ``stdout``,
``garbage``, ``leak:MIB``. ``tree``: the twin of ``crates/tasks/src/tree.rs``, a
node that adds its children (by a seeded rule) and itself again, for crawl tests.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ._kinds import BadInput, Kind, TaskError
from ._runtime import add
from ._protocol import RESULT_FD

_MASK = (1 << 64) - 1


@dataclass
class SimInput:
    """``{"sleep_ms": 300, "iters": 2000000}``; both default to 0."""

    sleep_ms: int = 0
    iters: int = 0


@dataclass
class ChaosInput:
    """A ``sim`` line with an optional ``"fault"``."""

    sleep_ms: int = 0
    iters: int = 0
    fault: Optional[str] = None


def _check_u64(name: str, value: int) -> None:
    # The Rust kinds take u64: a negative number does not decode there.
    if not 0 <= value <= _MASK:
        raise BadInput(f"field `{name}`: {value} is not an unsigned 64-bit integer")


def iterative_sum(iters: int) -> int:
    """The CPU part, step by step, as the seed article's Python code does it."""
    result = 0
    for i in range(iters):
        result += i
    return result & _MASK


def expected_sum(iters: int) -> int:
    """The closed form ``iters * (iters - 1) / 2 mod 2^64``, for checking results."""
    return (iters * max(iters - 1, 0) // 2) & _MASK


async def _sim(task: SimInput) -> Dict[str, int]:
    _check_u64("sleep_ms", task.sleep_ms)
    _check_u64("iters", task.iters)
    if task.sleep_ms > 0:
        await asyncio.sleep(task.sleep_ms / 1000)
    return {"sum": iterative_sum(task.iters)}


_leaked: List[Any] = []


def _parse_fault(text: str) -> tuple:
    name, sep, arg = text.partition(":")
    if sep and name in ("exit", "leak"):
        try:
            return name, int(arg)
        except ValueError:
            raise BadInput(f"fault {text!r}: the part after ':' is not a number") from None
    if not sep and name in ("abort", "block", "stall", "panic", "stdout", "garbage"):
        return name, None
    raise BadInput(
        f"unknown fault {text!r} (expected abort, exit:N, block, stall, panic, "
        "stdout, garbage or leak:MIB)"
    )


async def _chaos(task: ChaosInput) -> Dict[str, int]:
    if task.fault is None:
        return await _sim(SimInput(task.sleep_ms, task.iters))
    fault, arg = _parse_fault(task.fault)
    _check_u64("sleep_ms", task.sleep_ms)
    _check_u64("iters", task.iters)
    if task.sleep_ms > 0:
        await asyncio.sleep(task.sleep_ms / 1000)
    if fault == "abort":
        os.abort()
    elif fault == "exit":
        sys.stdout.flush()
        os._exit(arg)
    elif fault == "block":
        while True:  # blocks the loop thread without CPU: "stuck"
            time.sleep(3600)
    elif fault == "stall":
        await asyncio.get_running_loop().create_future()
    elif fault == "panic":
        raise TaskError("handler panicked: chaos: panic requested", "panicked")
    elif fault == "stdout":
        print("chaos: this line goes to stdout, not to the result pipe")
    elif fault == "garbage":
        os.write(RESULT_FD, bytes([0, 0, 0, 5, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]))
    elif fault == "leak":
        # Touch every page so the memory is resident, then keep it.
        _leaked.append(b"\x01" * (arg << 20))
    return {"sum": iterative_sum(task.iters)}


def _fnv(seed: int, node: str) -> int:
    h = 0xCBF29CE484222325 ^ seed
    for byte in node.encode():
        h ^= byte
        h = (h * 0x100000001B3) & _MASK
    return h


async def _tree(task: Dict[str, Any]) -> Dict[str, Any]:
    node, levels, fanout = task["node"], task["levels"], task["fanout"]
    seed = task.get("seed", 0)
    if task.get("sleep_ms"):
        await asyncio.sleep(task["sleep_ms"] / 1000)
    count = 0 if levels == 0 else _fnv(seed, node) % (fanout + 1)
    for i in range(count):
        child = dict(task, node=f"{node}/{i}", levels=levels - 1)
        add(child, key=child["node"])
    add(task, key=node)
    crash_dir = task.get("crash_once")
    if crash_dir and _fnv(seed ^ 0x5EED, node) % 7 == 0:
        try:
            fd = os.open(os.path.join(crash_dir, node.replace("/", "_")), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            os.abort()
    return {"node": node, "children": count}


sim = Kind(_sim, name="sim")
chaos = Kind(_chaos, name="chaos")
tree = Kind(_tree, name="tree")
