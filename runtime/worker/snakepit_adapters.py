"""Snakepit adapters inside pit's worker: a class written for Snakepit's Python bridge
(`snakepit_bridge`, Snakepit 0.13's ``priv/python``) runs unmodified in a pit pool.

    [pools.showcase]
    adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"   # Snakepit's dotted form
    env = { PYTHONPATH = "/path/to/snakepit/priv/python" }           # where the bridge is

`runtime.worker.main.load_adapter_class` hands such a class (one that is not a pit `Adapter`
and has ``execute_tool`` or the bridge's ``get_tools``/``set_session_context``) to
`host_class`, which builds the pit adapter that hosts it: one generated `@tool` method per tool
found, so the runner, the call lane, shared memory and the fork server serve it like any pit
adapter, and pit's own adapters pay nothing for it.

Covered, as Snakepit's ``grpc_server.py`` does it:
- A fresh adapter instance per call: ``set_session_context(ctx)``, ``initialize()``, the tool,
  ``cleanup()`` (its failure is printed, never raised); each of them may be ``async``. State
  that outlives a call lives at module or class level, as in Snakepit.
- Dispatch: ``execute_tool(tool_name=, arguments=, context=)`` when the class has it, else the
  tool's method, as the bridge's ``call_tool`` does (where ``grpc_server.py`` would refuse the
  call).
- The catalogue: the bridge's ``get_tools()`` registrations (``@tool(description=,
  supports_streaming=)``; the ``execute_tool`` entry it adds for legacy adapters is a marker,
  not a tool), plus, for an ``execute_tool`` adapter, the tools of its ``handlers`` whose
  ``get_tools()`` returns ``{name: Tool}`` (the showcase's layout). pit's host refuses tool
  names outside the catalogue, so a name only ``execute_tool`` knows cannot be called.
  Arguments are checked against the signature of the function found, as for pit's tools.
- Streaming: a tool registered with ``supports_streaming=True`` (or a generator function)
  streams whatever iterable or async iterable the call returns (a str, bytes or dict is one
  item); ``StreamChunk``-like items (``.data`` and ``.is_final``) are unwrapped to their
  ``.data``. A tool not registered as streaming that returns a generator fails with TypeError
  (Snakepit answers ``{"error": ...}`` as its result).
- The session context: ``session_id``, ``request_metadata``, ``elixir_tools`` (pit's host
  tools, `SessionContext.host_tools`), ``call_elixir_tool(name, **kwargs)`` (onto
  ``ctx.call_host_tool``; an unknown tool raises ValueError, a failed call HostToolError, a
  RuntimeError as in Snakepit), ``cleanup()`` (a no-op: pit's host owns sessions),
  context-manager use; plus ``pit``, the call's `runtime.SessionContext` (deadline,
  cancellation, per-session state).
- ``snakepit_bridge.telemetry.emit``/``span`` reach pit's telemetry bus (``adapter.<event>``)
  unless the adapter installed a backend of its own; ``get_correlation_id()`` is the call's.
- ``__thread_safe__ = True`` is pit's ``thread_safe`` (profile = "thread").
- The bridge's ``snakepit_bridge_pb2`` modules are pit's generated ones (a superset of
  Snakepit 0.13's protocol): both register ``snakepit_bridge.proto`` and cannot be loaded
  side by side.

Not covered: results are encoded as pit encodes its own (ints stay ints; what JSON cannot
hold is converted or marked as Snakepit's serializer does, `runtime.protocol.graceful`);
per-chunk metadata and ``is_final`` flags of a stream; ``register_with_session`` (the worker
announces its tools once, not per session); ``required_variables``; the context's ``stub``
(None: pit's host is not Snakepit's BridgeServer); Snakepit's per-session heartbeats, OTel
spans and ``SNAKEPIT_THREAD_SENSITIVE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .adapter import Adapter, tool
from .context import SessionContext, current_call

_HOSTS: dict[type, type[Adapter]] = {}  # Snakepit class -> its pit host (the zygote's survive)
_LOOPS = threading.local()  # per thread: the event loop async adapter methods run on
_NOT_ITERATED = (str, bytes, bytearray, memoryview, dict)


def alias_bridge_protocol() -> None:
    """Make ``import snakepit_bridge_pb2`` (and ``_grpc``) give pit's generated modules."""
    from ..protocol import pb, pb_grpc

    sys.modules.setdefault("snakepit_bridge_pb2", pb)
    sys.modules.setdefault("snakepit_bridge_pb2_grpc", pb_grpc)


def is_bridge_adapter(cls: type) -> bool:
    """Whether ``cls`` is an adapter written for Snakepit's bridge rather than for pit."""
    if issubclass(cls, Adapter):
        return False
    return callable(getattr(cls, "execute_tool", None)) or (
        callable(getattr(cls, "get_tools", None))
        and callable(getattr(cls, "set_session_context", None)))


class BridgeSessionContext:
    """What a Snakepit adapter knows as its ``SessionContext``, over pit's call context."""

    __slots__ = ("pit", "session_id", "request_metadata", "stub", "_elixir_tools")

    def __init__(self, ctx: SessionContext) -> None:
        self.pit = ctx
        self.session_id = ctx.session_id
        self.request_metadata = ctx.metadata
        self.stub = None
        self._elixir_tools: dict[str, Any] | None = None

    @property
    def elixir_tools(self) -> dict[str, Any]:
        """The host's tools by name (``name``, ``description``, ``parameters``); empty when
        they cannot be listed, as in Snakepit."""
        if self._elixir_tools is None:
            try:
                self._elixir_tools = self.pit.host_tools
            except Exception as exc:  # noqa: BLE001 - Snakepit logs and carries on
                sys.stderr.write(f"pit worker: host tools cannot be listed: {exc}\n")
                self._elixir_tools = {}
        return self._elixir_tools

    def call_elixir_tool(self, tool_name: str, **kwargs: Any) -> Any:
        if tool_name not in self.elixir_tools:
            raise ValueError(f"Elixir tool {tool_name!r} not found. Available tools: "
                             f"{list(self.elixir_tools)}")
        return self.pit.call_host_tool(tool_name, **kwargs)

    def cleanup(self) -> None:
        """A hint in Snakepit; pit's host ends sessions itself (`pool.close_session`)."""

    def __enter__(self) -> BridgeSessionContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"SessionContext(session_id={self.session_id!r})"


def settle(value: Any) -> Any:
    """``value``, or what it resolves to when awaitable (run on this thread's own loop)."""
    if not inspect.isawaitable(value):
        return value
    loop = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = _LOOPS.loop = asyncio.new_event_loop()
    task = asyncio.ensure_future(value, loop=loop)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():  # interrupted (the call was cancelled): end the task, or the loop
            task.cancel()
            try:
                loop.run_until_complete(task)
            except BaseException:  # noqa: BLE001 - the first error is the one to report
                _LOOPS.loop = None
                with contextlib.suppress(Exception):
                    loop.close()
        raise


def _items(stream: Any) -> Iterator[Any]:
    """What a streaming call produced, item by item (``grpc_server.py``'s reading of it)."""
    if hasattr(stream, "__aiter__"):
        it = stream.__aiter__()
        while True:
            try:
                yield settle(it.__anext__())
            except StopAsyncIteration:
                return
    elif hasattr(stream, "__iter__") and not isinstance(stream, _NOT_ITERATED):
        yield from stream
    else:
        yield stream


def _close(stream: Any) -> None:
    with contextlib.suppress(Exception):
        if hasattr(stream, "aclose"):
            settle(stream.aclose())
        elif hasattr(stream, "close"):
            stream.close()


class BridgeHost(Adapter):
    """Hosts one Snakepit adapter class (`host_class` makes a subclass per class)."""

    bridge_class: type = object
    legacy = False  # dispatch through execute_tool (else the tool's method)
    # which of the per-call steps the class has (looked up once: a missing attribute costs)
    has_context = has_initialize = has_cleanup = False
    _telemetry: Any = None  # the bridge's telemetry module, once initialize() found it

    def initialize(self) -> None:
        self._telemetry = _telemetry_module()
        if self._telemetry is not None and self._telemetry.get_backend() is None:
            self._telemetry.set_backend(_pit_telemetry_backend(self._telemetry))

    def _begin(self, name: str, arguments: dict[str, Any]) -> tuple[Any, Any, Any]:
        """A fresh Snakepit adapter for one call, its context set and initialize() run."""
        ctx = current_call.get()
        assert ctx is not None  # the runner sets it around every call
        session = BridgeSessionContext(ctx)
        token = (self._telemetry.set_correlation_id(ctx.correlation_id)
                 if self._telemetry is not None and ctx.correlation_id else None)
        adapter = None
        try:
            adapter = self.bridge_class()
            if self.has_context:
                adapter.set_session_context(session)
            if self.has_initialize:
                settle(adapter.initialize())
            if self.legacy:
                out = adapter.execute_tool(tool_name=name, arguments=arguments, context=session)
            else:  # what BaseAdapter.call_tool does, without its clash with a "tool_name"
                out = getattr(adapter, name)(**arguments)
            return adapter, settle(out), token
        except BaseException:
            self._end(adapter, token)
            raise

    def _end(self, adapter: Any, token: Any) -> None:
        if self.has_cleanup and adapter is not None:
            try:
                settle(adapter.cleanup())
            except Exception:  # noqa: BLE001 - Snakepit logs a failed cleanup and goes on
                sys.stderr.write(f"pit worker: cleanup() of {type(adapter).__name__} failed:"
                                 f"\n{traceback.format_exc()}")
        if token is not None:
            with contextlib.suppress(ValueError):  # a stream closed from another context
                self._telemetry.reset_correlation_id(token)

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        adapter, result, token = self._begin(name, arguments)
        try:
            if inspect.isgenerator(result) or inspect.isasyncgen(result):
                _close(result)
                raise TypeError(f"tool {name!r} returned a generator, but it is not registered "
                                "as streaming: mark it @tool(supports_streaming=True) and call "
                                "it with stream()")
            return result
        finally:
            self._end(adapter, token)

    def stream(self, name: str, arguments: dict[str, Any]) -> Iterator[Any]:
        adapter, result, token = self._begin(name, arguments)
        try:
            for item in _items(result):
                if hasattr(item, "data") and hasattr(item, "is_final"):
                    item = item.data  # a StreamChunk
                yield item
        finally:
            _close(result)
            self._end(adapter, token)


def host_class(cls: type) -> type[Adapter]:
    """The pit adapter hosting Snakepit adapter class ``cls`` (made once per process)."""
    host = _HOSTS.get(cls)
    if host is None:
        legacy = callable(getattr(cls, "execute_tool", None))
        attrs: dict[str, Any] = {
            "__module__": cls.__module__, "__doc__": cls.__doc__, "bridge_class": cls,
            "legacy": legacy, "thread_safe": bool(getattr(cls, "__thread_safe__", False)),
            **{f"has_{step}": callable(getattr(cls, name, None)) for step, name in (
                ("context", "set_session_context"), ("initialize", "initialize"),
                ("cleanup", "cleanup"))},
            "fork_safe": bool(getattr(cls, "fork_safe", True))}
        for i, (name, (fn, description, streaming)) in enumerate(_catalogue(cls, legacy)):
            attrs[f"_bridge_tool_{i}"] = _tool_method(name, fn, description, streaming)
        host = _HOSTS[cls] = type(cls.__name__, (BridgeHost,), attrs)
    return host


def _catalogue(cls: type, legacy: bool) -> list[tuple[str, tuple[Any, str, bool]]]:
    """(name, (function to mirror or None, description, streams)) for each tool of ``cls``,
    from an instance (as the bridge's registration API needs one)."""
    probe = cls()
    found: dict[str, tuple[Any, str, bool]] = {}
    get_tools = getattr(probe, "get_tools", None)
    for reg in (get_tools() if callable(get_tools) else ()):
        fn = inspect.getattr_static(cls, reg.name, None)
        if reg.name == "execute_tool" and not hasattr(fn, "_tool_metadata"):
            continue  # the bridge's marker for legacy dispatch, not a tool
        fn = fn if inspect.isfunction(fn) else None
        found[reg.name] = (fn or reg, reg.description,
                           bool(reg.supports_streaming) or _is_generator(fn))
    handlers = getattr(probe, "handlers", None) if legacy else None
    for handler in (handlers.values() if isinstance(handlers, Mapping) else ()):
        tools = getattr(handler, "get_tools", None)
        tools = tools() if callable(tools) else None
        for name, entry in (tools.items() if isinstance(tools, Mapping) else ()):
            func = getattr(entry, "func", entry)
            if name not in found and callable(func):
                doc = inspect.getdoc(func) or ""
                found[name] = (func, doc.splitlines()[0] if doc else "", _is_generator(func))
    return sorted(found.items())


def _is_generator(fn: Any) -> bool:
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def _tool_method(name: str, source: Any, description: str,
                 streaming: bool) -> Callable[..., Any]:
    """A pit tool method that runs Snakepit tool ``name``, with the signature of ``source``
    (a function, whose first parameter, self or ctx, is dropped; or a ToolRegistration)."""
    if streaming:
        def method(self: BridgeHost, **arguments: Any) -> Iterator[Any]:
            yield from self.stream(name, arguments)
    else:
        def method(self: BridgeHost, **arguments: Any) -> Any:  # type: ignore[misc]
            return self.call(name, arguments)
    params, annotations = _mirrored(source)
    if params is not None:
        self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
        method.__signature__ = inspect.Signature([self_param, *params])  # type: ignore[attr-defined]
        method.__annotations__ = annotations
        if inspect.isfunction(source) or inspect.ismethod(source):
            method.__wrapped__ = source  # type: ignore[attr-defined]  # string annotations
    method.__name__ = method.__qualname__ = name
    return tool(method, name=name, description=description or None)


def _mirrored(source: Any) -> tuple[list[inspect.Parameter] | None, dict[str, Any]]:
    """The parameters a call passes to ``source`` (keyword-only) and their annotations;
    (None, {}): unknown, anything goes."""
    if hasattr(source, "parameters") and hasattr(source, "supports_streaming"):
        return _from_registration(source), {}
    try:
        sig = inspect.signature(source)
    except (TypeError, ValueError):
        return None, {}
    params = list(sig.parameters.values())[1:]  # self (unbound method) or ctx (handler tool)
    if any(p.name in ("self", "ctx") or p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL)
           for p in params):
        return None, {}  # cannot be mirrored as keywords: let the adapter bind them
    out = [p.replace(kind=p.KEYWORD_ONLY) if p.kind is p.POSITIONAL_OR_KEYWORD else p
           for p in params]
    names = {p.name for p in out}
    raw = getattr(source, "__annotations__", {})
    return out, {k: v for k, v in raw.items() if k in names}


def _from_registration(reg: Any) -> list[inspect.Parameter] | None:
    import json

    out = []
    for spec in reg.parameters:
        default: Any = inspect.Parameter.empty
        if not spec.required:
            try:
                default = json.loads(spec.validation_json or "{}").get("default")
            except (ValueError, AttributeError):
                default = None
        out.append(inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY,
                                     default=default))
    return [*out, inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]


def _telemetry_module() -> Any:
    """The bridge's telemetry module when the adapter's bridge has one loaded, else None."""
    module = sys.modules.get("snakepit_bridge.telemetry")
    needed = ("get_backend", "set_backend", "set_correlation_id", "reset_correlation_id")
    return module if module is not None and all(hasattr(module, n) for n in needed) else None


def _pit_telemetry_backend(module: Any) -> Any:
    """A backend of the bridge's telemetry that forwards events to pit's telemetry bus."""
    from . import telemetry

    base = getattr(getattr(module, "backends", None), "base", None)
    parent: type = getattr(base, "TelemetryBackend", object)

    class PitBackend(parent):  # type: ignore[valid-type,misc]
        def emit(self, event_name: str, measurements: dict[str, Any],
                 metadata: dict[str, Any] | None = None,
                 correlation_id: str | None = None) -> None:
            with contextlib.suppress(Exception):  # telemetry never fails the tool
                telemetry.emit(event_name, measurements, metadata)

    return PitBackend()
