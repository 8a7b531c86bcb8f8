"""The task kind of a persistent :class:`multiloop.Pool`:
``--python multiloop._calls:kind``, one worker running calls of any function.

Each task line names the function and its arguments::

    {"f": "jobs:handle", "a": [1, 2], "k": {"x": 3}}    by reference
    {"f": "=<sha256>", "a": [...], "k": {...}}           by value

A function by value was pickled once by the driver into
``$MULTILOOP_CALLS_DIR/<sha256>.pkl`` (a private directory the driver owns)
before the first call naming it was written; a worker loads each file the
first time a call names it and keeps the function, so a function crosses to a
worker once, not once per call. The runtime awaits what the function returns
when it is awaitable, so ``async def`` and plain functions both work.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
from typing import Any, Callable, Dict

from ._kinds import BadInput, Kind

ENV = "MULTILOOP_CALLS_DIR"

_DIGEST = re.compile(r"=[0-9a-f]{64}\Z")
_FUNCTIONS: Dict[str, Callable[..., Any]] = {}


def _by_reference(name: str) -> Callable[..., Any]:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise BadInput(f"function {name!r} is neither 'module:name' nor '=<sha256>'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BadInput(f"function {name!r}: cannot import {module_name!r}: {error}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise BadInput(f"function {name!r}: {module_name} has no callable {attr!r}")
    return fn


def _by_value(name: str) -> Callable[..., Any]:
    directory = os.environ.get(ENV)
    if not directory:
        raise BadInput(f"function {name[:13]}... is sent by value but {ENV} is not set")
    path = os.path.join(directory, name[1:] + ".pkl")
    try:
        with open(path, "rb") as file:
            # cloudpickle's pickles name its own helpers: plain pickle loads
            # them as long as cloudpickle is installed here too.
            return pickle.load(file)  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file (the pool that wrote it has closed)") from None
    except Exception as error:  # a missing module, another Python's pickle
        raise BadInput(f"cannot load the function sent by value from {path}: {type(error).__name__}: {error}") from None


def _function(name: Any) -> Callable[..., Any]:
    fn = _FUNCTIONS.get(name)
    if fn is None:
        if not isinstance(name, str):
            raise BadInput(f"a call's \"f\" must be a string, not {type(name).__name__}")
        fn = _by_value(name) if _DIGEST.match(name) else _by_reference(name)
        if isinstance(fn, Kind) and (fn.setup is not None or fn.teardown is not None):
            raise BadInput(f"{name} is a multiloop.Kind with setup/teardown: run it with pool.map (a run of its own)")
        _FUNCTIONS[name] = fn
    return fn


def kind(call: Any) -> Any:
    """Runs one call line: ``f(*a, **k)``; the runtime awaits a coroutine."""
    if not isinstance(call, dict) or "f" not in call:
        raise BadInput('a call line is an object {"f": function, "a": [args], "k": {kwargs}}')
    args = call.get("a", [])
    kwargs = call.get("k", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise BadInput('a call\'s "a" is a list and its "k" an object')
    return _function(call["f"])(*args, **kwargs)
