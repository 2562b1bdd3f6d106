"""Adapters and their tools: the user-facing worker API.

An adapter is a class deriving from `Adapter` whose methods marked `@tool` can be called by
name from the host. One instance lives in each worker process: `initialize()` runs once before
the first call (load models there), `cleanup()` at shutdown.

    class Greeter(Adapter):
        @tool
        def hello(self, name: str, excited: bool = False) -> str:
            return f"hello {name}{'!' if excited else ''}"

Tool kinds follow the function: plain, ``async def``, generator (streams its yields) and async
generator. A parameter named ``ctx`` receives the call's `SessionContext`.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

_MARK = "__pit_tool__"
_SIMPLE = {int: "integer", float: "float", str: "string", bool: "boolean", bytes: "bytes",
           list: "list", dict: "map", tuple: "list"}


class Adapter:
    """Base class for adapters. Override `initialize` / `cleanup` as needed."""

    #: The adapter's tools may run concurrently in one process (required by profile="thread").
    thread_safe: bool = False
    #: Workers may be forked from the pool's fork server (start_method = "forkserver"). Set
    #: False when importing the adapter's module starts threads or opens connections that a
    #: forked child must not share: the pool then spawns fresh interpreters.
    fork_safe: bool = True

    @classmethod
    def preload(cls) -> None:
        """Called once in the fork server, before any worker is forked: import or load what
        every worker shares read-only (large modules, static data); children inherit it
        copy-on-write. Per-worker state (models on a GPU, connections) belongs in
        `initialize`."""

    def initialize(self) -> None:
        """Called once in the worker before it reports ready."""

    def cleanup(self) -> None:
        """Called once when the worker shuts down gracefully."""

    def on_session_end(self, session_id: str, state: dict[str, Any]) -> None:
        """Called when a session ends (closed by the host, or expired) with its ctx.session."""


@dataclass(frozen=True, slots=True)
class _ToolMark:
    name: str | None
    description: str | None
    thread_sensitive: bool = False


ToolFn = TypeVar("ToolFn", bound=Callable[..., Any])


@overload
def tool(fn: ToolFn, *, name: str | None = None, description: str | None = None,
         thread_sensitive: bool = False) -> ToolFn: ...
@overload
def tool(fn: None = None, *, name: str | None = None, description: str | None = None,
         thread_sensitive: bool = False) -> Callable[[ToolFn], ToolFn]: ...
def tool(fn: ToolFn | None = None, *, name: str | None = None,
         description: str | None = None,
         thread_sensitive: bool = False) -> ToolFn | Callable[[ToolFn], ToolFn]:
    """Mark an adapter method as callable from the host: ``@tool`` or ``@tool(name=...)``.

    ``thread_sensitive=True``: in the thread profile, calls to this tool never overlap (they
    run one at a time, in order of arrival), while other tools run concurrently.
    """

    def mark(f: ToolFn) -> ToolFn:  # the method's own signature stays for type checkers
        setattr(f, _MARK, _ToolMark(name, description, thread_sensitive))
        return f

    return mark(fn) if fn is not None else mark


class ArgumentError(ValueError):
    """Arguments that do not fit a tool's signature; the message names the parameter."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str
    required: bool
    default: Any = None
    check: Any = None  # a type or tuple of types for isinstance, or None (anything goes)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if not self.required:
            d["default"] = self.default
        return d


@dataclass(frozen=True, slots=True)
class ToolInfo:
    name: str
    description: str
    kind: str  # "sync" | "async" | "gen" | "agen"
    params: tuple[Param, ...]
    fn: Callable[..., Any]
    wants_ctx: bool
    accepts_any: bool = False  # has **kwargs
    thread_sensitive: bool = False
    names: frozenset[str] = field(default_factory=frozenset)

    @property
    def streaming(self) -> bool:
        return self.kind in ("gen", "agen")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "streaming": self.streaming, "thread_sensitive": self.thread_sensitive,
                "parameters": [p.to_dict() for p in self.params]}

    def bind(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate call arguments; raise ArgumentError naming the parameter at fault."""
        if not self.accepts_any:
            unknown = [k for k in args if k not in self.names]
            if unknown:
                accepted = ", ".join(p.name for p in self.params) or "none"
                raise ArgumentError(
                    f"tool {self.name!r} got unknown parameter {unknown[0]!r} "
                    f"(accepted: {accepted})")
        for p in self.params:
            if p.name not in args:
                if p.required:
                    raise ArgumentError(
                        f"tool {self.name!r} is missing required parameter {p.name!r} ({p.type})")
                continue
            value = args[p.name]
            if p.check is not None and value is not None and not _fits(value, p.check):
                raise ArgumentError(
                    f"tool {self.name!r}: parameter {p.name!r} must be {p.type}, "
                    f"got {type(value).__name__} {_short(value)}")
            if p.check is not None and value is None and p.required and not _optional(p):
                raise ArgumentError(f"tool {self.name!r}: parameter {p.name!r} must not be null")
        return args


def _optional(p: Param) -> bool:
    return p.type.endswith("?")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fits(value: Any, check: Any) -> bool:
    if isinstance(value, bool) and bool not in (check if isinstance(check, tuple) else (check,)):
        return False  # True is an int in Python, but not an integer argument
    if isinstance(value, int) and float in (check if isinstance(check, tuple) else (check,)):
        return True
    return isinstance(value, check)


def _describe(annotation: Any) -> tuple[str, Any]:
    """(wire type name, isinstance check or None) for an annotation."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "any", None
    if annotation in _SIMPLE:
        return _SIMPLE[annotation], annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        described = [_describe(a) for a in members]
        if any(check is None for _, check in described):
            return "any", None
        name = "|".join(n for n, _ in described)
        checks = tuple(c for _, c in described)
        nullable = len(members) < len(typing.get_args(annotation))
        return name + ("?" if nullable else ""), checks
    if origin in _SIMPLE:
        return _SIMPLE[origin], origin
    return getattr(annotation, "__name__", str(annotation)), None


def _kind_of(fn: Callable[..., Any]) -> str:
    if inspect.isasyncgenfunction(fn):
        return "agen"
    if inspect.iscoroutinefunction(fn):
        return "async"
    if inspect.isgeneratorfunction(fn):
        return "gen"
    return "sync"


def describe_tool(attr: str, fn: Callable[..., Any]) -> ToolInfo:
    mark: _ToolMark = getattr(fn, _MARK)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolved forward refs: fall back to no type checks
        hints = {}
    params: list[Param] = []
    wants_ctx = accepts_any = False
    for i, p in enumerate(inspect.signature(fn).parameters.values()):
        if i == 0 and p.name == "self":
            continue
        if p.name == "ctx":
            wants_ctx = True
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_any = True
            continue
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        type_name, check = _describe(hints.get(p.name, p.annotation))
        required = p.default is inspect.Parameter.empty
        params.append(Param(p.name, type_name, required,
                            None if required else p.default, check))
    doc = inspect.getdoc(fn) or ""
    return ToolInfo(
        name=mark.name or attr,
        description=mark.description or (doc.splitlines()[0] if doc else ""),
        kind=_kind_of(fn),
        params=tuple(params),
        fn=fn,
        wants_ctx=wants_ctx,
        accepts_any=accepts_any,
        thread_sensitive=mark.thread_sensitive,
        names=frozenset(p.name for p in params),
    )


def collect_tools(adapter_cls: type) -> dict[str, ToolInfo]:
    """All `@tool` methods of an adapter class (including inherited ones), by tool name."""
    tools: dict[str, ToolInfo] = {}
    for klass in reversed(adapter_cls.__mro__):
        for attr, fn in vars(klass).items():
            if callable(fn) and hasattr(fn, _MARK):
                info = describe_tool(attr, fn)
                tools[info.name] = info
    return tools
