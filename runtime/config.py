"""Configuration: ``pit.toml`` or ``[tool.pit]`` in ``pyproject.toml``, found from the working
directory upward, into typed, validated dataclasses. All defaults live here.

    [pools.default]
    adapter = "myproject.adapters:MyAdapter"
    size = 4

Unknown keys and bad values raise `ConfigError` naming the file, the key and what is accepted.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import string
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_backend import BACKENDS, RAY_CALLS, check_backend, resources_problem, tls_paths
from .errors import ConfigError
from .telemetry.control import TelemetryControl

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

PIT_CONFIG = "PIT_CONFIG"  # path of the config file to use instead of searching
PIT_STATE_DIR = "PIT_STATE_DIR"  # where registries, run dirs and envs live (default .pit/)
DEFAULT_ADAPTER = "runtime.adapters.showcase:ShowcaseAdapter"
DEFAULT_POOL = "default"
DEFAULT_THREADS = 4
AFFINITY_MODES = ("hint", "strict_queue", "strict_fail_fast")
# runtime.protocol.graceful.DETAILS (not imported: the config loads without gRPC)
UNSERIALIZABLE_DETAILS = ("none", "type", "repr_truncated", "repr_redacted_truncated")
# Native math libraries spawn one thread per core in every worker unless told otherwise.
THREAD_LIMIT_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


# (call, stream, queue) timeouts in ms per profile; 0 = no deadline. Explicit *_timeout_ms win.
# Snakepit 0.13's values, so that a pool moved over keeps its deadlines.
WORKER_KINDS = ("pit", "command", "snakepit")
COMMAND_PLACEHOLDERS = ("python", "port", "adapter", "host_pid", "run_id", "token")
TIMEOUT_PROFILES: dict[str, tuple[int, int, int]] = {
    "balanced": (300_000, 900_000, 10_000),
    "production": (300_000, 900_000, 10_000),
    "production_strict": (60_000, 300_000, 5_000),
    "development": (900_000, 3_600_000, 60_000),
    "ml_inference": (900_000, 3_600_000, 60_000),
    "batch": (3_600_000, 0, 300_000),
}


def default_size() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One pool. Constructor keywords of `runtime.Pool` are these fields."""

    name: str = DEFAULT_POOL
    adapter: str = DEFAULT_ADAPTER
    size: int = field(default_factory=default_size)
    python: str | None = None
    requirements: tuple[str, ...] | str = ()
    device: str = "auto"
    env: Mapping[str, str] = field(default_factory=dict)
    # Settings for the adapter: a table reaches a pit adapter as initialize(**adapter_args);
    # a list is extra command-line arguments, for workers started by a command.
    adapter_args: Mapping[str, Any] | tuple[str, ...] = ()
    max_queue: int = 1000
    profile: str = "process"
    threads_per_worker: int = 0  # 0: 1 in the process profile, 4 in the thread profile
    affinity: str = "hint"
    max_sessions: int = 10_000
    session_ttl_s: float = 3600.0
    timeout_profile: str = "balanced"
    queue_timeout_ms: int | None = None  # None: the timeout profile's value
    call_timeout_ms: int | None = None
    stream_timeout_ms: int | None = None
    startup_timeout_ms: int = 30_000
    shutdown_grace_ms: int = 5_000
    allow_pickle: bool = False
    allow_device_copy: bool = False  # GPU arrays are copied to the CPU, not refused (DLPack)
    # Results JSON cannot hold (runtime/protocol/graceful.py): converted, else a marker; with
    # strict_results the call fails as it used to. None: the worker's SNAKEPIT_* environment
    # variable, else the default (none, 500, 1_000_000).
    strict_results: bool = False
    unserializable_detail: str | None = None
    unserializable_repr_maxlen: int | None = None
    tolist_max_elements: int | None = None
    max_message_mb: int = 512
    pipeline_depth: int = 16
    shm_threshold_kb: int = 1024  # bytes this large travel through shared memory (0: never)
    shm_views: bool = True  # array results: views over shared memory (no copy), see pool/shm.py
    call_lane: bool = True  # false: one unary ExecuteTool RPC per call, as Snakepit does
    lane_socket: bool = True  # the lane as frames on a unix socket; false: a gRPC stream
    direct_calls: bool = True  # blocking execute() does its own I/O on a lent idle worker
    # What kind of worker (see runtime/pool/transport.py): "pit" (pit's own), "command" (any
    # process started by `command` that serves BridgeService on 127.0.0.1:{port}), or
    # "snakepit" (Snakepit's Python bridge, `command` = [python, ".../grpc_server.py"], launched
    # with Snakepit's flags and environment). Placeholders in `command`: {python} {port}
    # {adapter} {host_pid} {run_id} {token}.
    worker: str = "pit"
    command: tuple[str, ...] = ()
    # "forkserver": workers are forked by a per-pool zygote (Linux); "spawn": fresh processes
    start_method: str = "forkserver" if sys.platform.startswith("linux") else "spawn"
    dependent: bool = True
    dependent_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    heartbeat_timeout_ms: int = 10_000
    heartbeat_max_missed: int = 3
    max_requests: int = 0
    # true: a worker being recycled serves on until its replacement is ready (no downtime);
    # false: it takes no call past the one that triggered it, so max_requests is exact
    # (PoolExecutor's max_tasks_per_child) and calls wait for the replacement.
    recycle_overlap: bool = True
    ttl_s: float = 0.0
    max_memory_mb: int = 0
    max_retries: int = 2
    idempotent_tools: tuple[str, ...] = ()
    poison_after: int = 2
    circuit_threshold: int = 5
    circuit_window_s: float = 30.0
    circuit_reset_s: float = 10.0
    start_batch: int = 8
    # Which worker events the workers send (`runtime.telemetry.control`); at run time too:
    # `pool.telemetry_control(...)`. In pit.toml: [pools.<name>.telemetry] sample = 0.1 ...
    telemetry: TelemetryControl = TelemetryControl()
    # Where workers run: "local" (processes of this host) or "ray" (Ray actors placed on a
    # cluster, see runtime/pool/ray_process.py). ray_address: "auto" (a running cluster),
    # "ray://host:port" (Ray Client) or "local" (a private Ray instance for the host's
    # lifetime, loopback only). resources: what each worker's actor asks of Ray.
    backend: str = "local"
    ray_address: str = "local"
    resources: Mapping[str, Any] = field(default_factory=dict)
    # "spread" / "pack": the pool's workers in one Ray placement group of `size` bundles (one
    # worker's resources each), spread across nodes or packed on few; "": Ray places each.
    placement: str = ""
    # TLS for a Ray pool's connections: {cert, key, ca} PEM files (absolute paths once
    # checked) and server_name, the name in the workers' certificate. {}: none (the secret
    # alone). See runtime/protocol/tls.py.
    tls: Mapping[str, str] = field(default_factory=dict)
    # How the host reaches a Ray worker: "direct" (TCP, the fast path), "actor" (Ray actor
    # method calls through the worker's actor: slower, for a worker the host cannot reach) or
    # "auto" (direct when the worker's address answers at ready, else through its actor).
    ray_calls: str = "auto"

    def timeouts(self) -> tuple[float | None, float | None, float]:
        """(call, stream, queue) timeouts in seconds; None means no deadline."""
        call, stream, queue = TIMEOUT_PROFILES[self.timeout_profile]
        call = call if self.call_timeout_ms is None else self.call_timeout_ms
        stream = stream if self.stream_timeout_ms is None else self.stream_timeout_ms
        queue = queue if self.queue_timeout_ms is None else self.queue_timeout_ms
        return (call / 1000 if call else None, stream / 1000 if stream else None,
                queue / 1000)

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024

    @property
    def capacity(self) -> int:
        """Calls one worker runs at once."""
        if self.profile == "thread":
            return self.threads_per_worker or DEFAULT_THREADS
        return 1

    def worker_env(self) -> dict[str, str]:
        """Extra environment for this pool's workers: thread limits (1, or the worker's
        thread count in the thread profile), then the pool's env."""
        env = {name: str(self.capacity) for name in THREAD_LIMIT_VARS}
        env.update(self.env)
        return env


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    prometheus_port: int = 0  # 0: no exporter; else serve /metrics on 127.0.0.1:<port>
    # true: trace calls with OpenTelemetry, exported with OTLP as the OTEL_* environment
    # says, unless the application set a tracer provider (`runtime.telemetry.tracing`)
    otel: bool = False


MIN_TOKEN_CHARS = 16


@dataclass(frozen=True, slots=True)
class ToolBridgeConfig:
    """``[tool_bridge]``: other programs calling the pools' tools over loopback TCP. With a
    token the host serves its BridgeService (ExecuteTool included) on 127.0.0.1:<tcp_port>
    to calls that carry gRPC metadata ``authorization: Bearer <token>``; without one, only
    host.sock (0700) serves ExecuteTool (the TCP listener for Snakepit's bridge never does)."""

    token: str = field(default="", repr=False)
    tcp_port: int = 0  # with a token: the listener's port on 127.0.0.1 (0: any free port)


@dataclass(frozen=True, slots=True)
class PitConfig:
    path: Path | None
    state_dir: Path
    pools: Mapping[str, PoolConfig]
    telemetry: TelemetryConfig = TelemetryConfig()
    tool_bridge: ToolBridgeConfig = ToolBridgeConfig()
    default_pool: str | None = None  # the top-level key: the pool runtime.execute() calls


def _json_able(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def _int(lo: int, hi: int | None = None) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (
            hi is None or v <= hi)
    return ok, f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")


def _adapter_ok(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    if ":" in v:  # pit's form
        return v.count(":") == 1 and all(v.split(":"))
    return "." in v and all(part.isidentifier() for part in v.split("."))  # Snakepit's


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "adapter": (_adapter_ok, "a string 'package.module:ClassName' (or Snakepit's "
                             "'package.module.ClassName')"),
    "size": _int(1, 1024),
    "python": (lambda v: v is None or (isinstance(v, str) and bool(v)),
               "an interpreter path or a version like \"3.12\""),
    "requirements": (lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and all(
        isinstance(x, str) for x in v)), "a list of PEP 508 strings or a requirements file"),
    "device": (lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda", "rocm", "mps")
                                                 or v.startswith(("cuda:", "rocm:"))),
               '"auto", "cpu", "cuda", "cuda:N", "rocm", "rocm:N" or "mps"'),
    "env": (lambda v: isinstance(v, Mapping) and all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
        "a table of string = string"),
    "adapter_args": (lambda v: (isinstance(v, Mapping) and all(
        isinstance(k, str) and k.isidentifier() for k in v) and _json_able(v)) or (
        isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
        "a table of name = value (JSON values; initialize(**adapter_args)), or a list of "
        "command-line strings for command-started workers"),
    "max_queue": _int(0),
    "profile": (lambda v: v in ("process", "thread"), '"process" or "thread"'),
    "threads_per_worker": _int(1, 1024),
    "affinity": (lambda v: v in AFFINITY_MODES, "one of " + ", ".join(AFFINITY_MODES)),
    "max_sessions": _int(1),
    "session_ttl_s": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                      and v > 0, "a number of seconds > 0"),
    "timeout_profile": (lambda v: v in TIMEOUT_PROFILES,
                        "one of " + ", ".join(TIMEOUT_PROFILES)),
    "queue_timeout_ms": _int(1),
    "call_timeout_ms": _int(0),
    "stream_timeout_ms": _int(0),
    "startup_timeout_ms": _int(1),
    "shutdown_grace_ms": _int(0),
    "allow_pickle": (lambda v: isinstance(v, bool), "true or false"),
    "allow_device_copy": (lambda v: isinstance(v, bool), "true or false"),
    "strict_results": (lambda v: isinstance(v, bool), "true or false"),
    "unserializable_detail": (lambda v: v is None or v in UNSERIALIZABLE_DETAILS,
                              "one of " + ", ".join(UNSERIALIZABLE_DETAILS)),
    "unserializable_repr_maxlen": ((lambda v: v is None or _int(0, 2000)[0](v)),
                                   "an integer >= 0 and <= 2000"),
    "tolist_max_elements": (lambda v: v is None or _int(0)[0](v), "an integer >= 0"),
    "call_lane": (lambda v: isinstance(v, bool), "true or false"),
    "lane_socket": (lambda v: isinstance(v, bool), "true or false"),
    "direct_calls": (lambda v: isinstance(v, bool), "true or false"),
    "worker": (lambda v: v in WORKER_KINDS, "one of " + ", ".join(WORKER_KINDS)),
    "command": (_command := (lambda v: isinstance(v, (list, tuple)) and all(
        isinstance(x, str) and x for x in v)), "a command line: a list of strings"),
    "worker_command": (_command, "a command line with a {port} placeholder (the older "
                                 "spelling of worker = \"command\" with command = [...])"),
    "shm_threshold_kb": _int(0),
    "shm_views": (lambda v: isinstance(v, bool), "true or false"),
    "start_method": (lambda v: v in ("forkserver", "spawn"), '"forkserver" or "spawn"'),
    "max_message_mb": _int(1, 2047),
    "pipeline_depth": _int(0, 1024),
    "dependent": (lambda v: isinstance(v, bool), "true or false"),
    "dependent_timeout_ms": _int(1000),
    "heartbeat_interval_ms": _int(0),
    "heartbeat_timeout_ms": _int(10),
    "heartbeat_max_missed": _int(1),
    "max_requests": _int(0),
    "recycle_overlap": (lambda v: isinstance(v, bool), "true or false"),
    "ttl_s": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
              "a number of seconds >= 0 (0: never)"),
    "max_memory_mb": _int(0),
    "max_retries": _int(0, 100),
    "idempotent_tools": (lambda v: isinstance(v, (list, tuple)) and all(
        isinstance(x, str) for x in v), "a list of tool names"),
    "poison_after": _int(1),
    "circuit_threshold": _int(0),
    "circuit_window_s": (_positive := (lambda v: isinstance(v, (int, float))
                                       and not isinstance(v, bool) and v > 0),
                         "a number of seconds > 0"),
    "circuit_reset_s": (_positive, "a number of seconds > 0"),
    "start_batch": _int(1, 1024),
    # checked in full (and converted) by TelemetryControl.from_table: see make_pool_config
    "telemetry": (lambda v: isinstance(v, (Mapping, TelemetryControl)),
                  "a table with keys enabled, sample, allow, deny"),
    "backend": (lambda v: v in BACKENDS, "one of " + ", ".join(BACKENDS)),
    "ray_address": (lambda v: isinstance(v, str) and (v in ("auto", "local") or bool(
        re.fullmatch(r"(ray://)?[\w.\-]+:\d{1,5}", v))),
        '"auto", "local", "ray://host:port" (Ray Client) or "host:port" (a head node\'s GCS)'),
    "placement": (lambda v: v in ("", "spread", "pack"), '"spread" or "pack"'),
    "ray_calls": (lambda v: v in RAY_CALLS, ", ".join(f'"{c}"' for c in RAY_CALLS)),
    "resources": (lambda v: resources_problem(v) is None,
                  "a table with num_cpus, num_gpus (numbers >= 0), memory_mb (an integer "
                  ">= 0) and custom (a table of name = number >= 0)"),
    "tls": (lambda v: isinstance(v, Mapping),  # its keys: config_backend.check_tls
            "a table with cert, key, ca (PEM files) and server_name"),
}
POOL_KEYS = tuple(_RULES)
TOP_KEYS = ("default_pool", "pools", "state_dir", "telemetry", "tool_bridge")
TELEMETRY_KEYS = ("prometheus_port", "otel")
TOOL_BRIDGE_KEYS = ("token", "tcp_port")


def _unknown(key: str, accepted: tuple[str, ...], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, accepted, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"{where}: unknown key {key!r}; {hint}accepted keys: "
                       f"{', '.join(accepted)}", details={"key": key},
                       hint=f"accepted keys are: {', '.join(accepted)}")


def make_pool_config(name: str = DEFAULT_POOL, where: str | None = None,
                     **values: Any) -> PoolConfig:
    """Validate ``values`` (config keys) and build a PoolConfig; errors name ``where``."""
    where = where or f"pool {name!r}"
    if not isinstance(name, str) or not name or not name.replace("_", "").replace(
            "-", "").isalnum():
        raise ConfigError(f"{where}: pool name {name!r} must be letters, digits, '-' or '_'")
    for key, value in values.items():
        if key not in _RULES:
            raise _unknown(key, POOL_KEYS, where)
        ok, accepted = _RULES[key]
        if not ok(value):
            raise ConfigError(f"{where}: {key} = {value!r} is invalid; expected {accepted}",
                              details={"key": key, "value": repr(value)},
                              hint=f"set {key} to {accepted}")
    if values.get("env") is not None:
        values["env"] = dict(values["env"])
    if "telemetry" in values:
        try:
            values["telemetry"] = TelemetryControl.from_table(values["telemetry"])
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}", details={"key": "telemetry"},
                              hint="e.g. telemetry = { sample = 0.1, deny = [\"adapter.cache.*\"] }"
                              ) from None
    _worker_kind(values, where)
    if isinstance(values.get("adapter_args"), (list, tuple)):
        values["adapter_args"] = tuple(values["adapter_args"])
        if values["adapter_args"] and values.get("worker", "pit") == "pit":
            raise ConfigError(
                f"{where}: adapter_args = {list(values['adapter_args'])!r} is a list, which "
                "only a command-started worker can take (as command-line arguments)",
                hint="give pit's worker a table instead: adapter_args = { name = value }, "
                     "passed as initialize(**adapter_args)")
    elif isinstance(values.get("adapter_args"), Mapping):
        values["adapter_args"] = dict(values["adapter_args"])
    if values.get("threads_per_worker", 1) > 1 and values.get("profile", "process") != "thread":
        raise ConfigError(f"{where}: threads_per_worker = {values['threads_per_worker']} "
                          "needs profile = \"thread\"",
                          hint='set profile = "thread" (the adapter must be thread_safe)')
    check_backend(values, where)
    if isinstance(values.get("requirements"), list):
        values["requirements"] = tuple(values["requirements"])
    if values.get("idempotent_tools") is not None:
        values["idempotent_tools"] = tuple(values["idempotent_tools"])
    return PoolConfig(name=name, **values)


PLACEHOLDER_HINT = ("placeholders: " + ", ".join("{" + p + "}" for p in COMMAND_PLACEHOLDERS)
                    + "; write a literal brace twice: {{ }}")


def command_problem(command: Any) -> str | None:
    """What is wrong with a ``command``'s placeholders (None: nothing): an unknown name or a
    stray brace. `transport.command_argv` fills them."""
    for part in command:
        try:
            names = {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(part)
                     if f is not None}
        except ValueError as exc:
            return f"command part {part!r}: {exc}"
        unknown = sorted(names - set(COMMAND_PLACEHOLDERS))
        if unknown:
            return f"command part {part!r}: {{{unknown[0]}}} is not a placeholder"
    return None


def _worker_kind(values: dict[str, Any], where: str) -> None:
    """Check ``worker`` against ``command`` (in place); ``worker_command`` is the older
    spelling of worker = "command"."""
    if values.get("worker_command"):
        if values.get("command") or values.get("worker", "command") != "command":
            raise ConfigError(f"{where}: worker_command is the older spelling of worker = "
                              "\"command\" with command = [...]; give one or the other",
                              hint="remove worker_command")
        values["worker"], values["command"] = "command", values["worker_command"]
    values.pop("worker_command", None)
    kind = values.get("worker", "pit")
    command = values["command"] = tuple(values.get("command", ()))
    if kind == "pit":
        if command:
            raise ConfigError(f"{where}: command = {list(command)!r} needs worker = "
                              "\"command\" or \"snakepit\" (pit's own worker is started by pit)",
                              hint='set worker = "snakepit" for Snakepit\'s grpc_server.py')
        return
    if not command:
        raise ConfigError(f"{where}: worker = {kind!r} needs a command",
                          hint='e.g. command = ["python3", "/path/to/priv/python/grpc_server.py"]'
                          if kind == "snakepit" else
                          'e.g. command = ["my-worker", "--port", "{port}"]')
    problem = command_problem(command)
    if problem:
        raise ConfigError(f"{where}: {problem}", hint=PLACEHOLDER_HINT)
    if kind == "command" and "{port}" not in " ".join(command):
        raise ConfigError(f"{where}: command = {list(command)!r} has no {{port}} placeholder: "
                          "a command-started worker must be told where to listen",
                          hint="add e.g. \"--port\", \"{port}\" to the command")
    if values.get("strict_results"):
        raise ConfigError(f"{where}: strict_results applies to pit's own worker, not to "
                          f"worker = {kind!r}", hint="remove strict_results")
    if values.get("allow_pickle"):
        raise ConfigError(f"{where}: allow_pickle cannot be used with worker = {kind!r}",
                          hint="a worker on a TCP port could be impersonated by another "
                               "local user, and unpickling its answer runs its code; "
                               "use pit's own worker (unix sockets) for pickled values")


def find_config(start: Path | None = None) -> Path | None:
    """``$PIT_CONFIG``, else the nearest pit.toml or pyproject.toml with [tool.pit]."""
    explicit = os.environ.get(PIT_CONFIG)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{PIT_CONFIG}={explicit} does not exist",
                              hint=f"point {PIT_CONFIG} at a pit.toml or unset it")
        return path.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pit.toml"
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "tool" in _read(pyproject) and "pit" in _read(
                pyproject)["tool"]:
            return pyproject
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None


def load_config(path: str | Path | None = None, *, cwd: Path | None = None) -> PitConfig:
    """Load and validate the config; with no file at all, one default showcase pool."""
    found = Path(path).resolve() if path else find_config(cwd)
    data: dict[str, Any] = {}
    if found is not None:
        raw = _read(found)
        data = raw.get("tool", {}).get("pit", {}) if found.name == "pyproject.toml" else raw
    where = str(found) if found else "defaults"
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown(key, TOP_KEYS, where)
    pools_raw = data.get("pools", {})
    if not isinstance(pools_raw, Mapping):
        raise ConfigError(f"{where}: 'pools' must be a table of [pools.<name>] tables")
    pools: dict[str, PoolConfig] = {}
    for name, table in pools_raw.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [pools.{name}] must be a table")
        values = dict(table)
        python = values.get("python")
        if isinstance(python, str) and found is not None and ("/" in python):
            values["python"] = str((found.parent / python).resolve()) if not Path(
                python).is_absolute() else python
        if found is not None and "tls" in values:
            values["tls"] = tls_paths(values.get("tls"), found.parent)
        pools[name] = make_pool_config(name, where=f"{where}: [pools.{name}]", **values)
    if not pools:
        pools[DEFAULT_POOL] = PoolConfig()
    default = data.get("default_pool")
    if default is not None and default not in pools:
        raise ConfigError(f"{where}: default_pool = {default!r} names no pool; pools: "
                          f"{', '.join(pools)}", details={"key": "default_pool"},
                          hint="set default_pool to one of those pools' names, or remove it")
    return PitConfig(path=found, state_dir=state_dir(found, data.get("state_dir")),
                     pools=pools, telemetry=_telemetry(data.get("telemetry", {}), where),
                     tool_bridge=_tool_bridge(data.get("tool_bridge", {}), where),
                     default_pool=default)


def _table(table: Any, name: str, keys: tuple[str, ...], where: str) -> None:
    """A top-level table of the config: a table, with only ``keys``."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: '{name}' must be a table ([{name}])")
    for key in table:
        if key not in keys:
            raise _unknown(key, keys, f"{where}: [{name}]")


def _telemetry(table: Any, where: str) -> TelemetryConfig:
    _table(table, "telemetry", TELEMETRY_KEYS, where)
    port = _port(table, "telemetry", "prometheus_port", "none", where)
    otel = table.get("otel", False)
    if not isinstance(otel, bool):
        raise ConfigError(f"{where}: [telemetry] otel must be true or false, got {otel!r}")
    return TelemetryConfig(prometheus_port=port, otel=otel)


def _port(table: Mapping[str, Any], name: str, key: str, zero: str, where: str) -> int:
    """A TCP port setting of a top-level table (0 means ``zero``)."""
    port = table.get(key, 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{where}: [{name}] {key} must be a TCP port (1-65535, 0 for "
                          f"{zero}), got {port!r}")
    return port


def _tool_bridge(table: Any, where: str) -> ToolBridgeConfig:
    _table(table, "tool_bridge", TOOL_BRIDGE_KEYS, where)
    token = table.get("token", "")
    if not isinstance(token, str) or (token and (len(token) < MIN_TOKEN_CHARS
                                                 or token != token.strip())):
        raise ConfigError(f"{where}: [tool_bridge] token must be a string of at least "
                          f"{MIN_TOKEN_CHARS} characters without surrounding spaces",
                          hint='make one with: python -c "import secrets; '
                               'print(secrets.token_urlsafe(32))"')
    port = _port(table, "tool_bridge", "tcp_port", "any free one", where)
    if port and not token:
        raise ConfigError(f"{where}: [tool_bridge] tcp_port = {port} needs a token: without "
                          "one, ExecuteTool is not served over TCP",
                          hint="add token = \"...\" to [tool_bridge], or remove tcp_port")
    return ToolBridgeConfig(token=token, tcp_port=port)


@dataclass(frozen=True, slots=True)
class StateDirGuess:
    """The state dir `pit cleanup` uses when the config cannot be loaded."""

    path: Path
    source: str  # "PIT_STATE_DIR" | "the config's state_dir" | "the default"
    error: ConfigError  # why the config could not be loaded


def state_dir_despite(error: ConfigError, cwd: Path | None = None) -> StateDirGuess:
    """Where the state dir is although loading the config raised ``error``: cleaning up
    orphans must not depend on a config that may have been broken since they were started.

    ``PIT_STATE_DIR``; else the config's top-level ``state_dir`` when its TOML still parses;
    else ``.pit/`` beside the config (or in ``cwd``). A guess other than ``PIT_STATE_DIR``
    counts only when that directory exists; otherwise ``error`` is raised again (with a hint
    to name the state dir), since a cleanup that finds nothing would hide where the orphans
    really are."""
    env = os.environ.get(PIT_STATE_DIR)
    if env:
        return StateDirGuess(Path(env).resolve(), PIT_STATE_DIR, error)
    try:
        found = find_config(cwd)
    except ConfigError:
        found = None  # PIT_CONFIG names no file, or a pyproject.toml on the way is broken
    configured: Any = None
    if found is not None:
        try:
            raw = _read(found)
            data = raw.get("tool", {}).get("pit", {}) if found.name == "pyproject.toml" else raw
            configured = data.get("state_dir") if isinstance(data, Mapping) else None
        except ConfigError:
            pass  # not even TOML: only the default is left
    base = found.parent if found is not None else (cwd or Path.cwd())
    if isinstance(configured, str):
        guess = StateDirGuess((base / configured).resolve(), "the config's state_dir", error)
    else:
        guess = StateDirGuess((base / ".pit").resolve(), "the default", error)
    if not guess.path.is_dir():
        raise ConfigError(error.message, details=error.details, hint=(
            error.hint or f"fix the config, or name the state dir: --state-dir DIR or "
                          f"{PIT_STATE_DIR}=DIR")) from error
    return guess


def ensure_state_dir(path: Path) -> Path:
    """Create the state dir when missing. One pit creates gets a ``.gitignore`` of ``*``: its
    venvs, sockets and registry never belong in the project's repository."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError), (path / ".gitignore").open("x") as fh:
            fh.write("# made by pit: nothing in its state dir belongs in version control\n*\n")
    return path


def state_dir(config_path: Path | None = None, configured: Any = None) -> Path:
    env = os.environ.get(PIT_STATE_DIR)
    if env:
        return Path(env).resolve()
    base = config_path.parent if config_path else Path.cwd()
    if configured is not None:
        if not isinstance(configured, str):
            raise ConfigError(f"{config_path}: state_dir must be a string path")
        return (base / configured).resolve()
    return (base / ".pit").resolve()
