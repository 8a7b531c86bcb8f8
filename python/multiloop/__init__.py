"""multiloop: your own ``async def`` on every core.

Write a handler, run it with the supervisor::

    # jobs.py
    async def handle(task):
        ...
        return {"sum": 45}

    $ supervisor --workers auto --python jobs:handle -i tasks.jsonl -o out.jsonl

Per-worker state and several kinds per module come from :class:`Kind` (or the
:func:`kind` decorator); :func:`request_retry` asks for another attempt;
:class:`TaskError` / :class:`BadInput` choose a record's error kind.

The driver (:class:`Pool`, :func:`gather`, :func:`run`, from
:mod:`multiloop.pool`) is imported on first use of one of its names, so a
worker process, which imports this package too, never loads it.
"""

import importlib
from typing import Any, List

from ._kinds import BadInput, Kind, TaskError, kind
from ._runtime import add, request_retry

__version__ = "0.1.0"

# The HTML report of a run (report="run.html"), inline in Jupyter: small,
# no driver imports, so it loads eagerly.
from .report import Report, show_report  # noqa: E402

#: The driver's public names, served lazily from multiloop.pool.
_DRIVER = (
    "Drained",
    "ErrorInfo",
    "Executor",
    "MapRun",
    "Pool",
    "Result",
    "SendError",
    "SupervisorError",
    "TaskFailed",
    "gather",
    "run",
)

__all__ = [
    "BadInput",
    "Kind",
    "Report",
    "add",
    "TaskError",
    "kind",
    "request_retry",
    "show_report",
    *_DRIVER,
]


def __getattr__(name: str) -> Any:
    if name == "pool" or name in _DRIVER:
        # Not `from . import pool`: that asks this hook for `pool` again.
        pool = importlib.import_module(".pool", __name__)
        value = pool if name == "pool" else getattr(pool, name)
        globals()[name] = value  # later uses skip this hook
        return value
    raise AttributeError(f"module 'multiloop' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_DRIVER))
