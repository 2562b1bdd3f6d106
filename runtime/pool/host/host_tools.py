"""Host tools: functions of the host process that workers call by name (Snakepit's "Elixir
tools"), and that any client of the host reaches through its ExecuteTool (`tool_router`).

    pool.register_host_tool("lookup", lookup, description="Find a user",
                            parameters={"user_id": {"type": "integer",
                                                    "description": "the user's id"}})
    # in a worker:  ctx.host_tools["lookup"]  /  ctx.call_host_tool("lookup", user_id=7)

A tool is global, or scoped to one session: a scoped tool is listed and callable only for
calls of that session, and shadows a global tool of the same name for them. The registry is
written from any thread (the sync API registers from the caller's) and read on the host's
loop: writes replace its mapping whole under a lock, readers take it without one.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import types
import typing
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ...errors import InvalidArgument, ToolNotFound
from ...protocol import codec, pb

_TYPES = {int: "integer", float: "float", str: "string", bool: "boolean", bytes: "bytes",
          list: "list", dict: "map", tuple: "list"}
PARAM_KEYS = ("type", "description", "required", "default")
# register_host_tool's ``parameters``: name -> {"type", "description", "required", "default"},
# or name -> a type name
ParamSpecs = Mapping[str, "Mapping[str, Any] | str"]
_NO_DEFAULT: Any = inspect.Parameter.empty


@dataclass(frozen=True, slots=True)
class HostToolParam:
    """One parameter of a host tool as workers see it (``ctx.host_tools[...]["parameters"]``)."""

    name: str
    type: str = "any"
    description: str = ""
    required: bool = False
    default: Any = _NO_DEFAULT  # _NO_DEFAULT: none announced

    def spec(self) -> Any:
        param = pb.ParameterSpec(name=self.name, type=self.type, description=self.description,
                                 required=self.required)
        if self.default is not _NO_DEFAULT:
            try:
                value = codec.dumps(self.default, f"default of {self.name!r}")
            except codec.CodecError:
                return param  # not JSON: the default stays unannounced
            param.default_value.type_url = codec.STRING_VALUE_URL
            param.default_value.value = value
        return param


@dataclass(frozen=True, slots=True)
class HostTool:
    name: str
    fn: Callable[..., Any]
    description: str
    parameters: tuple[HostToolParam, ...]
    session_id: str = ""  # "": every session's calls see it

    @property
    def streaming(self) -> bool:
        return inspect.isgeneratorfunction(self.fn) or inspect.isasyncgenfunction(self.fn)

    def spec(self) -> Any:
        spec = pb.ToolSpec(name=self.name, description=self.description,
                           parameters=[p.spec() for p in self.parameters],
                           supports_streaming=self.streaming)
        if self.session_id:
            spec.metadata["session_id"] = self.session_id
        return spec

    async def run(self, args: dict[str, Any]) -> Any:
        """Call it: a coroutine function on the loop, anything else on a thread (so it may
        itself call into a pool, which runs on this loop)."""
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**args)
        return await asyncio.to_thread(self.fn, **args)

    async def items(self, args: dict[str, Any]) -> AsyncIterator[Any]:
        """What a streaming call yields: a generator's items (a sync one is advanced on a
        thread), or the one result of any other tool."""
        if inspect.isasyncgenfunction(self.fn):
            async for item in self.fn(**args):
                yield item
            return
        if not inspect.isgeneratorfunction(self.fn):
            yield await self.run(args)
            return
        gen = await asyncio.to_thread(self.fn, **args)
        done = object()
        while (item := await asyncio.to_thread(next, gen, done)) is not done:
            yield item


def _signature(fn: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool] | None:
    """(named parameters, takes **kwargs), or None when the signature cannot be read."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    named = {p.name: p for p in sig.parameters.values()
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return named, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _type_name(fn: Callable[..., Any], param: inspect.Parameter) -> str:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an unresolved forward reference: no type then
        hints = {}
    annotation = hints.get(param.name, param.annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # as a worker says it
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        names = [_TYPES.get(typing.get_origin(a) or a) for a in members]
        if not all(names):
            return "any"
        nullable = len(members) < len(typing.get_args(annotation))
        return "|".join(n for n in names if n) + ("?" if nullable else "")
    return _TYPES.get(typing.get_origin(annotation) or annotation, "any")


def make_host_tool(name: str, fn: Callable[..., Any], *, description: str | None = None,
                   parameters: ParamSpecs | None = None,
                   session_id: str | None = None) -> HostTool:
    """Describe ``fn`` as host tool ``name``. Without ``parameters`` they come from its
    signature (type from the annotation, required when it has no default); with them, each
    entry is ``{"type", "description", "required", "default"}`` (or just a type name), and
    what an entry leaves out is taken from the signature. ``description`` defaults to the
    first line of the docstring. Raises InvalidArgument naming what is wrong."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"a host tool's name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise InvalidArgument(f"host tool {name!r} must be callable, got {type(fn).__name__}")
    if session_id is not None and not isinstance(session_id, str):
        raise InvalidArgument(f"host tool {name!r}: session_id must be a string")
    sig = _signature(fn)
    named, any_kwargs = sig if sig is not None else ({}, True)
    if parameters is None:
        params = tuple(_from_signature(fn, p) for p in named.values())
    else:
        if not isinstance(parameters, Mapping):
            raise InvalidArgument(f"host tool {name!r}: parameters must be a mapping of "
                                  "parameter name to its spec (a dict, or a type name)")
        unknown = [p for p in parameters if p not in named]
        if unknown and not any_kwargs:
            raise InvalidArgument(
                f"host tool {name!r}: parameter {unknown[0]!r} is not one of the function's "
                f"({', '.join(named) or 'none'})", hint="fix the name, or give fn **kwargs")
        params = tuple(_from_entry(name, fn, pname, entry, named.get(pname))
                       for pname, entry in parameters.items())
    doc = inspect.getdoc(fn) or ""
    return HostTool(name=name, fn=fn, parameters=params, session_id=session_id or "",
                    description=doc.split("\n")[0] if description is None else str(description))


def _from_signature(fn: Callable[..., Any], p: inspect.Parameter) -> HostToolParam:
    return HostToolParam(p.name, _type_name(fn, p), "", p.default is p.empty, p.default)


def _from_entry(tool: str, fn: Callable[..., Any], pname: str, entry: Mapping[str, Any] | str,
                param: inspect.Parameter | None) -> HostToolParam:
    base = _from_signature(fn, param) if param is not None else HostToolParam(pname)
    if isinstance(entry, str):
        entry = {"type": entry}
    if not isinstance(entry, Mapping):
        raise InvalidArgument(f"host tool {tool!r}: the spec of parameter {pname!r} must be a "
                              f"dict with {', '.join(PARAM_KEYS)}, or a type name")
    bad = [k for k in entry if k not in PARAM_KEYS]
    if bad:
        raise InvalidArgument(f"host tool {tool!r}: parameter {pname!r} has unknown key "
                              f"{bad[0]!r}; accepted keys: {', '.join(PARAM_KEYS)}")
    return HostToolParam(pname, str(entry.get("type", base.type)),
                         str(entry.get("description", base.description)),
                         bool(entry.get("required", base.required)),
                         entry.get("default", base.default))


class HostToolRegistry:
    """The host's tools by (name, session id); "" is the global scope."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tools: Mapping[tuple[str, str], HostTool] = MappingProxyType({})

    def register(self, tool: HostTool) -> None:
        """Add ``tool``, replacing one of the same name in the same scope."""
        with self._lock:
            self._tools = MappingProxyType({**self._tools, (tool.name, tool.session_id): tool})

    def unregister(self, name: str, session_id: str = "") -> bool:
        """Remove a tool from one scope; False when it was not registered there."""
        with self._lock:
            if (name, session_id) not in self._tools:
                return False
            tools = dict(self._tools)
            del tools[(name, session_id)]
            self._tools = MappingProxyType(tools)
            return True

    def lookup(self, name: str, session_id: str = "") -> HostTool | None:
        """The tool a call of ``session_id`` means by ``name``: the session's own, else the
        global one."""
        tools = self._tools
        own = tools.get((name, session_id)) if session_id else None
        return own if own is not None else tools.get((name, ""))

    def visible(self, session_id: str = "") -> list[HostTool]:
        """The tools a call of ``session_id`` can see, by name."""
        seen: dict[str, HostTool] = {}
        for (name, scope), tool in self._tools.items():
            if scope == "" and name not in seen:
                seen[name] = tool
            elif scope and scope == session_id:
                seen[name] = tool  # the session's own shadows the global one
        return [seen[n] for n in sorted(seen)]

    def unknown(self, name: str, session_id: str = "") -> ToolNotFound:
        """The error for a host tool ``name`` a call of ``session_id`` cannot see."""
        names = ", ".join(t.name for t in self.visible(session_id)) or "none registered"
        scope = f" for session {session_id!r}" if session_id else ""
        return ToolNotFound(f"unknown host tool {name!r}{scope}; host tools: {names}",
                            details={"tool": name, "session_id": session_id})
