"""The task kind a driver sent by value: ``--python multiloop._byvalue:kind``.

:class:`multiloop.Pool` pickles a function that workers could not import
(one defined in ``__main__``, a notebook cell, or a closure) with cloudpickle
into a file and names it in ``MULTILOOP_BY_VALUE``; each worker process
imports this module, which loads that file once, at import, before its
event loop starts. The file holds a ``multiloop.Kind`` (handler with its
setup and teardown) or a plain function.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

ENV = "MULTILOOP_BY_VALUE"


def _load() -> Any:
    path = os.environ.get(ENV)
    if not path:
        raise ImportError(
            f"multiloop._byvalue runs a function sent by multiloop.Pool; {ENV} is not set"
        )
    try:
        with open(path, "rb") as file:
            # The pickle names cloudpickle's own helpers, so plain pickle
            # loads it as long as cloudpickle is installed here too.
            return pickle.load(file)
    except FileNotFoundError:
        raise ImportError(f"{ENV}={path}: no such file (the driver that wrote it has ended)") from None
    except ModuleNotFoundError as error:
        raise ImportError(
            f"cannot load the function sent by value from {path}: no module {error.name!r} "
            "in the worker's Python (install it, or cloudpickle, in the same environment)"
        ) from None
    except Exception as error:  # a pickle from another Python version, a torn file
        raise ImportError(
            f"cannot load the function sent by value from {path}: {type(error).__name__}: {error}"
        ) from None


#: What the runtime runs: the unpickled ``multiloop.Kind`` or function.
kind = _load()
