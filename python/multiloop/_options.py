"""The driver's keywords: which supervisor option each one is and how its
value is written on the command line."""

from __future__ import annotations

import datetime
import difflib
from typing import Any, Dict, List, Mapping, Tuple

# keyword -> (flag, how the value is written). Every supervisor option has a
# keyword, except --input, --demo and --queue/--claim-after (the items are
# the input) and --lines
# (items are JSON-encoded here, so a str item already arrives as a string).
_FLAG = "flag"
_VALUE = "value"
_DURATION = "duration"
_SIZE = "size"
OPTIONS: Dict[str, Tuple[str, str]] = {
    "workers": ("--workers", _VALUE),
    "task": ("--task", _VALUE),
    "worker": ("--worker", _VALUE),
    "worker_args": ("--worker-arg", "repeat"),
    "concurrency": ("--concurrency", _VALUE),
    "task_timeout": ("--task-timeout", _DURATION),
    "keep_order": ("--keep-order", _FLAG),
    "window": ("--window", _VALUE),
    "max_frame": ("--max-frame", _SIZE),
    "worker_timeout": ("--worker-timeout", _DURATION),
    "grace": ("--grace", _DURATION),
    "max_restarts": ("--max-restarts", _VALUE),
    "restart_window": ("--restart-window", _DURATION),
    "max_crashes": ("--max-crashes", _VALUE),
    "retries": ("--retries", _VALUE),
    "retry_backoff": ("--retry-backoff", _DURATION),
    "max_tasks_per_worker": ("--max-tasks-per-worker", _VALUE),
    "max_worker_rss": ("--max-worker-rss", _SIZE),
    "settings": ("--set", "settings"),
    "per_host": ("--per-host", _VALUE),
    "retry_status": ("--retry-status", "statuses"),
    "output": ("--output", _VALUE),
    "resume": ("--resume", _FLAG),
    "resume_failed": ("--resume-failed", _FLAG),
    "key": ("--key", _VALUE),
    "shard": ("--shard", _VALUE),
    "shard_count": ("--shard-count", _VALUE),
    "stats": ("--stats", _VALUE),
    "report": ("--report", _VALUE),
    "max_tasks": ("--max-tasks", _VALUE),
    "max_depth": ("--max-depth", _VALUE),
    "frontier_memory": ("--frontier-memory", _SIZE),
    "follow": ("--follow", _FLAG),
    "scope": ("--scope", _VALUE),
    "allow": ("--allow", "repeat"),
    "deny": ("--deny", "repeat"),
    "follow_nofollow": ("--follow-nofollow", _FLAG),
    "verbose": ("-v", "count"),
    "quiet": ("--quiet", _FLAG),
}
# Options of the driver itself, not passed to the supervisor as such.
DRIVER_OPTIONS = (
    "setup",
    "teardown",
    "progress",
    "python",
    "supervisor",
    "env",
    "cwd",
    "extra_args",
    "max_in_flight",
)


def check_options(options: Mapping[str, Any]) -> None:
    known = list(OPTIONS) + list(DRIVER_OPTIONS)
    for name in options:
        if name not in OPTIONS and name not in DRIVER_OPTIONS:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"unknown multiloop option {name!r}{hint}")
    key = options.get("key")
    if key is not None and not isinstance(key, str):
        # --key names a field; a computed key would need the item changed.
        raise TypeError(
            f"key= names the field of each item that holds its dedupe key (--key FIELD), "
            f"not {type(key).__name__}; to key by something computed, put it in the item"
        )


def _duration(name: str, value: Any) -> str:
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected seconds or a duration like '30s', not {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name}: {value} is negative")
        return f"{round(value * 1000)}ms"
    return str(value)


def _size(name: str, value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected bytes or a size like '512MiB', not {value!r}")
    return str(value)


def supervisor_args(options: Mapping[str, Any]) -> List[str]:
    """The supervisor's command-line options for these keywords."""
    args: List[str] = []
    for name, value in options.items():
        if name in DRIVER_OPTIONS or value is None or value is False:
            continue
        flag, how = OPTIONS[name]
        if how == _FLAG:
            args.append(flag)
        elif how == _VALUE:
            args += [flag, str(value)]
        elif how == _DURATION:
            args += [flag, _duration(name, value)]
        elif how == _SIZE:
            args += [flag, _size(name, value)]
        elif how == "count":
            args += [flag] * (1 if value is True else int(value))
        elif how == "repeat":
            for each in [value] if isinstance(value, str) else value:
                args += [flag, str(each)]
        elif how == "settings":
            for key, setting in dict(value).items():
                args += [flag, f"{key}={setting}"]
        elif how == "statuses":
            text = value if isinstance(value, str) else ",".join(str(v) for v in value)
            args += [flag, text]
    args += [str(a) for a in options.get("extra_args") or ()]
    return args


def seconds(value: Any) -> float:
    """A duration keyword in seconds, for the driver's own waits (30 when unreadable)."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    text = str(value).strip()
    for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * scale
            except ValueError:
                break
    return 30.0
