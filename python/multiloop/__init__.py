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
"""

from ._kinds import BadInput, Kind, TaskError, kind
from ._runtime import add, request_retry

__all__ = ["BadInput", "Kind", "TaskError", "add", "kind", "request_retry"]
__version__ = "0.1.0"

# --- driver (multiloop.pool: Pool, map, gather, run) ---------------------------
from .pool import (  # noqa: E402
    Drained,
    ErrorInfo,
    MapRun,
    Pool,
    Result,
    SendError,
    SupervisorError,
    TaskFailed,
    gather,
    run,
)

__all__ = list(globals().get("__all__", [])) + [
    "Drained",
    "ErrorInfo",
    "MapRun",
    "Pool",
    "Result",
    "SendError",
    "SupervisorError",
    "TaskFailed",
    "gather",
    "run",
]
