"""multiloop: run async tasks on every core under a supervisor."""

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
