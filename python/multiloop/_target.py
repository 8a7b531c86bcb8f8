"""How a function reaches the workers: by reference (``--python
module:function``) when they can import it, else pickled by value with
cloudpickle into a file that ``multiloop._byvalue`` loads in each worker."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, Dict, Mapping, Optional

from ._results import SendError


def _kind_class() -> Any:
    try:
        from ._kinds import Kind  # the worker runtime's

        return Kind
    except ImportError:
        import multiloop

        return getattr(multiloop, "Kind", None)


def _reference(fn: Any) -> Optional[str]:
    """``module:attr`` when workers can import exactly this object, else None."""
    kind_cls = _kind_class()
    target = fn.handle if kind_cls is not None and isinstance(fn, kind_cls) else fn
    module_name = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", "")
    if not module_name or module_name in ("__main__", "__mp_main__", "builtins"):
        return None
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) is None:
        return None  # not loaded from a file the workers could find
    if fn is target and "." not in qualname and "<" not in qualname:
        if getattr(module, qualname, None) is fn:
            return f"{module_name}:{qualname}"
        return None
    for name, value in vars(module).items():  # a Kind: find the name it is bound to
        if value is fn:
            return f"{module_name}:{name}"
    return None


class Target:
    """What ``--python`` runs for one map: a spec, maybe a pickle file."""

    def __init__(self, fn: Any, options: Mapping[str, Any]) -> None:
        self.path: Optional[str] = None
        self.by_value = False
        setup, teardown = options.get("setup"), options.get("teardown")
        if isinstance(fn, str):
            if setup or teardown:
                raise TypeError("setup/teardown go with a function, not with a spec string")
            self.args = [("--task" if options.get("worker") else "--python"), fn]
            return
        if options.get("worker"):
            raise TypeError("with worker=PATH, name the kind as a string: gather('sim', items, worker=...)")
        if not callable(fn):
            raise TypeError(f"expected a function, a multiloop.Kind or a 'module:function' spec, not {type(fn).__name__}")
        kind_cls = _kind_class()
        spec = None if (setup or teardown) else _reference(fn)
        if spec is not None:
            self.args = ["--python", spec]
            return
        if kind_cls is not None and isinstance(fn, kind_cls):
            if setup or teardown:
                raise TypeError(f"{fn!r} already is a multiloop.Kind: give setup/teardown to it, not here")
            obj = fn
        elif kind_cls is not None:
            obj = kind_cls(fn, setup=setup, teardown=teardown, name=getattr(fn, "__name__", None))
        elif setup or teardown:
            raise RuntimeError("setup/teardown need the multiloop worker runtime (multiloop.Kind)")
        else:
            obj = fn
        data = _pickle(fn, obj)
        handle, self.path = tempfile.mkstemp(prefix="multiloop-", suffix=".pkl")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        self.by_value = True
        self.args = ["--python", "multiloop._byvalue:kind"]

    def env(self) -> Dict[str, str]:
        return {"MULTILOOP_BY_VALUE": self.path} if self.path else {}

    def cleanup(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None


def _pickle(fn: Any, obj: Any) -> bytes:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    try:
        import cloudpickle
    except ImportError:
        raise SendError(
            f"{name} is defined in __main__ or a notebook, so it is sent by value, which needs "
            "cloudpickle: pip install cloudpickle (or move it to an importable module)"
        ) from None
    try:
        return cloudpickle.dumps(obj)
    except Exception as error:
        raise SendError(
            f"cannot send {name} to the workers by value: {type(error).__name__}: {error}. "
            "Everything the function refers to is pickled with it; create sockets, clients "
            "and locks inside it or in setup=, or define it in an importable module"
        ) from error
