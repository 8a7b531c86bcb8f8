"""Task kinds: a handler with its optional per-worker setup and teardown,
and how a ``--python SPEC`` names them."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import typing
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, TypeVar, Union

from ._protocol import ERROR_KINDS, SUPERVISOR_ONLY_ERROR_KINDS

T = TypeVar("T")
State = Any

#: What a handler may be: ``async def handle(task)`` / ``handle(task, state)``,
#: or the same as a plain function (called on the event loop).
Handler = Callable[..., Any]
Setup = Callable[[Mapping[str, str]], Awaitable[State]]
Teardown = Callable[[State], Awaitable[None]]


class TaskError(Exception):
    """Raise it from a handler to choose the error kind of the record.

    Any other exception becomes a ``failed`` record. ``kind`` is one of
    ``failed``, ``bad_input``, ``timeout`` or ``panicked``.
    """

    #: The protocol's kinds but those only the supervisor decides (``crashed``).
    KINDS = tuple(k for k in ERROR_KINDS if k not in SUPERVISOR_ONLY_ERROR_KINDS)

    def __init__(self, message: str, kind: str = "failed") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown error kind {kind!r} (expected one of {', '.join(self.KINDS)})")
        super().__init__(message)
        self.kind = kind
        self.message = message


class BadInput(TaskError):
    """Raise it from a handler when the task line cannot be used: a ``bad_input`` record."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "bad_input")


class Kind:
    """A task kind: a handler, and optionally what each worker process sets up once.

    ``setup(settings)`` runs once per worker process inside its event loop,
    with the supervisor's ``--set KEY=VALUE`` pairs; with a setup the handler
    is called as ``handle(task, state)`` (``state`` is what setup returned),
    without one as ``handle(task)``. ``teardown(state)`` runs when the worker
    exits cleanly. All three may be ``async def`` or plain functions.

    The handler's first parameter may be annotated with a dataclass, a
    ``TypedDict``, a pydantic model or a plain type (``dict``, ``list``,
    ``str``, ``int``...): a task line that type cannot take is a
    ``bad_input`` record, and the handler is not called.
    """

    def __init__(
        self,
        handle: Handler,
        *,
        setup: Optional[Callable[[Mapping[str, str]], Any]] = None,
        teardown: Optional[Callable[[Any], Any]] = None,
        name: Optional[str] = None,
    ) -> None:
        if not callable(handle):
            raise TypeError(f"a Kind's handler must be callable, not {type(handle).__name__}")
        self.handle = handle
        self.setup = setup
        self.teardown = teardown
        self.name = name or getattr(handle, "__name__", None) or "default"
        self.__doc__ = getattr(handle, "__doc__", None)
        self.__wrapped__ = handle

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the handler, so a decorated function stays usable as one."""
        return self.handle(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<multiloop.Kind {self.name!r}>"


@typing.overload
def kind(name: Handler) -> Kind: ...


@typing.overload
def kind(
    name: Optional[str] = None,
    *,
    setup: Optional[Callable[[Mapping[str, str]], Any]] = None,
    teardown: Optional[Callable[[Any], Any]] = None,
) -> Callable[[Handler], Kind]: ...


def kind(
    name: Union[str, Handler, None] = None,
    *,
    setup: Optional[Callable[[Mapping[str, str]], Any]] = None,
    teardown: Optional[Callable[[Any], Any]] = None,
) -> Union[Kind, Callable[[Handler], Kind]]:
    """Decorator form of :class:`Kind`, bare or with options::

        @multiloop.kind
        async def parse(line: str) -> dict: ...

        @multiloop.kind(setup=open_session, teardown=close_session)
        async def fetch(url: str, session) -> dict: ...
    """
    if callable(name):
        return Kind(name)

    def wrap(handle: Handler) -> Kind:
        return Kind(handle, setup=setup, teardown=teardown, name=name)

    return wrap


class SpecError(Exception):
    """A ``--python SPEC`` that names nothing runnable; the message says why."""


def load(spec: str) -> List[Kind]:
    """The kinds a ``MODULE:ATTR`` or ``MODULE`` spec names, in definition order."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise SpecError(f"{spec!r} is not MODULE:FUNCTION or MODULE")
    try:
        module = importlib.import_module(module_name)
    except SpecError:
        raise
    except BaseException as error:  # noqa: B036 - a module may even call sys.exit
        if isinstance(error, ModuleNotFoundError) and error.name == module_name.split(".")[0]:
            raise SpecError(
                f"cannot import {module_name!r}: no such module in {_where()}"
            ) from None
        raise SpecError(f"cannot import {module_name!r}: {_one_line(error)}") from error
    if attr:
        try:
            target: Any = module
            for part in attr.split("."):
                target = getattr(target, part)
        except AttributeError:
            raise SpecError(f"module {module_name!r} has no attribute {attr!r}") from None
        if isinstance(target, Kind):
            return [target]
        if callable(target):
            return [Kind(target, name=attr.rsplit(".", 1)[-1])]
        raise SpecError(f"{spec} is a {type(target).__name__}, not a function or multiloop.Kind")
    kinds = [value for value in vars(module).values() if isinstance(value, Kind)]
    if not kinds:
        raise SpecError(
            f"module {module_name!r} defines no multiloop.Kind; name a function: "
            f"--python {module_name}:FUNCTION"
        )
    seen: Dict[str, Kind] = {}
    for k in kinds:
        seen.setdefault(k.name, k)
    return list(seen.values())


def _where() -> str:
    return "the working directory or PYTHONPATH (sys.path: " + ", ".join(
        repr(p) for p in sys.path[:4]
    ) + ", ...)"


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# -- input types ------------------------------------------------------------

InputCheck = Optional[Callable[[Any], Any]]


def input_check(handle: Handler) -> InputCheck:
    """From the handler's first parameter annotation, a function that turns the
    decoded JSON into what the handler takes, raising :class:`BadInput`; None
    when there is nothing to check."""
    try:
        target = inspect.unwrap(handle)
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params or params[0].annotation is inspect.Parameter.empty:
        return None
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve is not ours to judge
        return None
    annotation = hints.get(params[0].name)
    if annotation is None or annotation is Any:
        return None
    return _converter(annotation, "input")


def _converter(tp: Any, where: str) -> Callable[[Any], Any]:
    origin = typing.get_origin(tp)
    if origin is Union:
        options = typing.get_args(tp)
        converters = [_converter(o, where) for o in options]

        def union(value: Any) -> Any:
            for convert in converters:
                try:
                    return convert(value)
                except BadInput:
                    pass
            names = " or ".join(_type_name(o) for o in options)
            raise BadInput(f"{where}: expected {names}, got {_describe(value)}")

        return union
    if tp is type(None):
        return _instance(type(None), where, "null")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp, where)
    if isinstance(tp, type) and hasattr(tp, "model_validate"):
        return _pydantic(tp, where)
    if _is_typeddict(tp):
        return _typeddict(tp, where)
    if origin in (list, List):
        return _instance(list, where, "an array")
    if origin in (dict, Dict) or tp is Mapping or origin is Mapping:
        return _instance(dict, where, "an object")
    if tp is bool:
        return _instance(bool, where, "true or false")
    if tp is int:
        return _int(where)
    if tp is float:
        return _float(where)
    simple = {str: "a string", list: "an array", dict: "an object"}
    if tp in simple:
        return _instance(tp, where, simple[tp])
    return lambda value: value


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", None) or str(tp)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _instance(tp: type, where: str, expected: str) -> Callable[[Any], Any]:
    # JSON decodes to exact types, and `bool` must not pass for `int`.
    def check(value: Any) -> Any:
        if type(value) is not tp:
            raise BadInput(f"{where}: expected {expected}, got {_describe(value)}")
        return value

    return check


def _int(where: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not int:
            raise BadInput(f"{where}: expected an integer, got {_describe(value)}")
        return value

    return check


def _float(where: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is float or type(value) is int:
            return value
        raise BadInput(f"{where}: expected a number, got {_describe(value)}")

    return check


def _dataclass(cls: type, where: str) -> Callable[[Any], Any]:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    checks = {f.name: _converter(hints.get(f.name, Any), f"field `{f.name}`") for f in fields}
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]

    def build(value: Any) -> Any:
        if type(value) is not dict:
            raise BadInput(f"{where}: expected an object, got {_describe(value)}")
        for name in required:
            if name not in value:
                raise BadInput(f"missing field `{name}`")
        # Unknown fields are ignored, as serde and pydantic do by default.
        return cls(**{k: checks[k](v) for k, v in value.items() if k in checks})

    return build


def _pydantic(cls: Any, where: str) -> Callable[[Any], Any]:
    def build(value: Any) -> Any:
        try:
            return cls.model_validate(value)
        except Exception as error:  # pydantic.ValidationError, without importing pydantic
            raise BadInput(_one_line(error)) from None

    return build


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _typeddict(tp: Any, where: str) -> Callable[[Any], Any]:
    hints = typing.get_type_hints(tp)
    checks = {name: _converter(t, f"field `{name}`") for name, t in hints.items()}
    required = sorted(tp.__required_keys__)

    def check(value: Any) -> Any:
        if type(value) is not dict:
            raise BadInput(f"{where}: expected an object, got {_describe(value)}")
        for name in required:
            if name not in value:
                raise BadInput(f"missing field `{name}`")
        for name, item in value.items():
            if name in checks:
                checks[name](item)
        return value

    return check
