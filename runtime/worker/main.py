"""Worker process entry point: ``python -m runtime.worker --adapter pkg.mod:Class ...``.

Start-up: import the adapter, instantiate it, run ``initialize()``, bind the gRPC server on the
unix socket, then write the ready file atomically (JSON: address, pid, protocol, tools). The
host reads that file to know the worker can serve. The worker dies with its host: Linux
parent-death signal, plus a watchdog on the parent pid everywhere.

On TCP (a Ray-placed worker: ``--listen HOST:0 --require-secret``, the port it bound goes in
the ready file) every RPC and every lane connection must carry the pool's secret, which it takes
from $PIT_WORKER_SECRET at start (`protocol.secret`). With ``--tls`` it serves gRPC and its lane
over TLS, with the certificate and key it takes from $PIT_WORKER_TLS_CERT / _KEY
(`protocol.tls`).

A Snakepit host launches it as it launches Snakepit's ``grpc_server.py`` (``--port``,
``--elixir-address``, ...): see `snakepit_launch` for what that changes.

Exit codes: 0 clean stop, 1 health check failed, 2 bad command line, 3 adapter failed to load
or initialize; launched by a Snakepit host, 4 the host never answered, 5 the port was not bound.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import importlib
import json
import logging
import os
import signal
import sys
import traceback
from concurrent import futures
from typing import Any

from ..protocol import graceful, secret, tls
from . import snakepit_launch
from .snakepit_launch import SnakepitLaunch

MAX_QUEUED_RPCS_PER_THREAD = 8
DEPENDENT_TIMEOUT_S = 10.0
EXIT_ADAPTER_FAILED = 3
PRELOADED_TOOLS: dict[type, Any] = {}  # adapter class -> its tools, filled by the fork server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return argument_parser().parse_args(argv)


@functools.cache
def argument_parser() -> argparse.ArgumentParser:
    """Built once (~10 ms, it imports shutil): the fork server builds it for its workers."""
    p = argparse.ArgumentParser(prog="python -m runtime.worker",
                                description="A pit worker: serves one adapter over gRPC.")
    p.add_argument("--adapter", required=True,
                   help="pkg.module:Class of the adapter (or Snakepit's pkg.module.Class)")
    p.add_argument("--listen", help="address to bind, e.g. unix:/path/worker.sock")
    p.add_argument("--ready-file", help="where to write the ready JSON once serving")
    p.add_argument("--run-id", default="", help="marker of the host run that owns this worker")
    p.add_argument("--instance-token", default="", help="token of the owning host instance")
    p.add_argument("--host-address", default=None, help="host BridgeService for host tools")
    p.add_argument("--host-pid", type=int, default=0, help="exit when this process is gone")
    p.add_argument("--worker-id", default="", help="the host's name for this worker")
    p.add_argument("--adapter-args", type=_json_table, default={},
                   help="a JSON object: the adapter's initialize(**args) (adapter_args)")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickled parameters")
    p.add_argument("--strict-results", action="store_true",
                   help="a result JSON cannot hold fails the call (default: converted, or a "
                        "marker; see runtime/protocol/graceful.py)")
    p.add_argument("--unserializable-detail", choices=graceful.DETAILS, default=None,
                   help="what a marker says of the value (default: $"
                        f"{graceful.ENV_DETAIL}, else none)")
    p.add_argument("--unserializable-repr-maxlen", type=int, default=None,
                   help="longest repr a marker carries, at most "
                        f"{graceful.REPR_MAXLEN_MAX} (default: ${graceful.ENV_REPR_MAXLEN}, "
                        f"else {graceful.REPR_MAXLEN_DEFAULT})")
    p.add_argument("--tolist-max-elements", type=int, default=None,
                   help="an array or sparse matrix larger than this is not expanded by "
                        f"tolist() (default: ${graceful.ENV_TOLIST_MAX}, else "
                        f"{graceful.TOLIST_MAX_ELEMENTS_DEFAULT:_})")
    p.add_argument("--allow-device-copy", action="store_true",
                   help="a GPU array result is copied to the CPU (default: the call fails, "
                        "naming the device)")
    p.add_argument("--max-message-mb", type=int, default=512)
    p.add_argument("--max-sessions", type=int, default=10_000,
                   help="sessions opened with InitializeSession this worker keeps at most")
    p.add_argument("--session-ttl", type=float, default=3600.0,
                   help="seconds after its last use a session is forgotten")
    p.add_argument("--threads", type=int, default=1,
                   help="calls run at once (thread profile); needs a thread_safe adapter")
    p.add_argument("--independent", action="store_true",
                   help="do not exit with the host (debugging; orphans need `pit cleanup`)")
    p.add_argument("--dependent-timeout", type=float, default=DEPENDENT_TIMEOUT_S,
                   help="exit when the host has not answered a heartbeat for this many s")
    p.add_argument("--host-pings", type=float, default=0.0,
                   help="the host pings this worker every this many s: its silence for "
                        "--dependent-timeout means it is wedged (no heartbeat of our own)")
    p.add_argument("--stack-file", help="where SIGUSR1 dumps every thread's Python stack")
    p.add_argument("--progress-file", help="16 bytes shared with the host: the lane call "
                                           "running now and the last one finished")
    p.add_argument("--lane-socket", help="also serve the call lane on this unix socket path "
                                         "(framed protobuf, no gRPC: much faster)")
    p.add_argument("--require-secret", action="store_true",
                   help=f"refuse to start without ${secret.ENV}: every RPC must then carry "
                        "it (a worker listening on TCP, e.g. one placed by Ray)")
    p.add_argument("--tls", action="store_true",
                   help=f"serve gRPC and the lane over TLS with the PEM certificate chain in "
                        f"${tls.ENV_CERT} and the key in ${tls.ENV_KEY} (both taken out of "
                        "the environment); refuse to start without them")
    p.add_argument("--no-call-lane", action="store_true",
                   help="serve only Snakepit's RPCs (tests the host's unary fallback)")
    p.add_argument("--health-check", action="store_true",
                   help="import the adapter, print its tools as JSON and exit")
    p.add_argument("--zygote", action="store_true",
                   help="run as the pool's fork server (see runtime/worker/zygote.py)")
    p.add_argument("--control-fd", type=int, default=-1, help="the fork server's socket")
    p.add_argument("--warm", type=int, default=0, metavar="HOST_PID",
                   help="fork server started by host HOST_PID before its pool: import, then "
                        "wait for the pool's adapter and environment on --control-fd "
                        "(runtime/pool/warm_zygote.py)")
    p.add_argument("--forked", action="store_true",
                   help="this worker was forked by the fork server (watch --host-pid)")
    snakepit_launch.add_arguments(p)
    return p


def load_adapter_class(spec: str) -> type:
    """The class ``spec`` names: pit's ``package.module:Class`` or Snakepit's dotted
    ``package.module.Class``. An adapter written for Snakepit's bridge comes back as the pit
    adapter that hosts it (runtime/worker/snakepit_adapters.py)."""
    from . import snakepit_adapters

    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"adapter {spec!r} must look like 'package.module:ClassName' "
                         "(or Snakepit's 'package.module.ClassName')")
    snakepit_adapters.alias_bridge_protocol()  # before the bridge imports its own stubs
    module = importlib.import_module(module_name)
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(cls, type):
        raise ValueError(f"{spec!r} is not a class")
    return snakepit_adapters.host_class(cls) if snakepit_adapters.is_bridge_adapter(cls) \
        else cls


def result_policy(ns: argparse.Namespace,
                  report: graceful.Reporter | None = None) -> graceful.ResultPolicy:
    """The worker's `graceful.ResultPolicy`: its flags (the pool's config), else Snakepit's
    environment variables, else the defaults."""
    return graceful.resolve(strict=ns.strict_results, detail=ns.unserializable_detail,
                            repr_maxlen=ns.unserializable_repr_maxlen,
                            tolist_max_elements=ns.tolist_max_elements, report=report,
                            device_copy=ns.allow_device_copy)


def _json_table(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _initialize(adapter: Any, spec: str, args: dict[str, Any]) -> None:
    """``adapter.initialize(**args)``; an adapter whose initialize does not take the pool's
    adapter_args gets an error that says so (not a bare TypeError from deep inside)."""
    if not args:
        adapter.initialize()
        return
    import inspect

    try:
        inspect.signature(adapter.initialize).bind(**args)
    except TypeError as exc:
        raise TypeError(f"adapter {spec!r}: initialize() does not take the pool's adapter_args "
                        f"{sorted(args)}: {exc}. Add them as keyword parameters of "
                        "initialize(), or remove them from adapter_args") from None
    adapter.initialize(**args)


def _write_ready(path: str, payload: dict[str, Any]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def serve(ns: argparse.Namespace, launch: SnakepitLaunch | None = None) -> int:
    import grpc

    from ..protocol import PROTOCOL_VERSION, pb, pb_grpc, shm
    from .adapter import collect_tools
    from .context import HostClient
    from .lifetime import StopSignal, die_with_parent, heartbeat_host, watch_host_contact
    from .runner import ToolRunner
    from .servicer import WorkerServicer
    from .sessions import SessionTable
    from .specs import tool_spec
    from .telemetry import buffer, buffer_events, unserializable_results

    buffer.size = buffer_events()  # this worker's environment, not its fork server's start
    pool_secret = secret.take_from_env()  # first, so no tool ever sees it
    if ns.require_secret and not pool_secret:
        sys.stderr.write(f"pit worker: --require-secret but ${secret.ENV} is not set: "
                         "refusing to serve a TCP port without it\n")
        return 2
    worker_tls = tls.take_from_env()
    if ns.tls and worker_tls is None:
        sys.stderr.write(f"pit worker: --tls but ${tls.ENV_CERT} and ${tls.ENV_KEY} are not "
                         "both set: refusing to serve without TLS\n")
        return 2
    if not ns.tls:
        worker_tls = None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the host's to handle
    stop = StopSignal()
    if launch is not None:
        stop.also_on(signal.SIGINT)  # as Snakepit's bridge
    # A forked worker starts with SIGTERM blocked (zygote._fork): one sent meanwhile lands now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    # A fatal signal (SIGSEGV in a C extension, SIGABRT, SIGBUS ...) prints the Python stack
    # to stderr, which is the pipe the host keeps the tail of: the crash's WorkerExit then
    # names the line that crashed instead of showing nothing. Only the crashing thread's: the
    # host keeps the last 40 lines (worker_handle.OUTPUT_TAIL_LINES), and the stacks of a
    # worker's ~6 idle threads would push the error and the crashing line out of them.
    faulthandler.enable(file=sys.stderr, all_threads=False)
    # Log records of adapter code that configured no logging go to stderr (what the host keeps,
    # and `pit run` forwards) with their level and logger: "WARNING mymodule: disk full".
    # Python's last-resort handler, so an adapter's own logging.basicConfig still applies.
    if logging.lastResort is not None:
        logging.lastResort.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if ns.stack_file:
        # Dumped from the C signal handler: works even while a tool holds the GIL.
        stacks = open(ns.stack_file, "w")  # noqa: SIM115 - open for the process's lifetime
        faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    if ns.independent:
        sys.stderr.write("pit worker: running independent of its host (dependent = false): "
                         "it will not exit when the host dies\n")
    elif launch is None:  # a Snakepit host's workers find it lost by their heartbeats
        die_with_parent(ns.host_pid, ns.forked)
    if launch is not None:  # the bridge waits for its host before it binds
        code = snakepit_launch.before_binding(launch, stop.pause, lambda: stop.requested)
        if code is not None:
            return code

    try:
        cls = load_adapter_class(ns.adapter)
        tools = PRELOADED_TOOLS.get(cls) or collect_tools(cls)
        if ns.threads > 1 and not getattr(cls, "thread_safe", False):
            sys.stderr.write(
                f"pit worker: adapter {ns.adapter!r} is not thread_safe, so it cannot run "
                f"{ns.threads} calls at once (profile = \"thread\").\nRemediation: set "
                "`thread_safe = True` on the class if its tools may run concurrently (mark "
                "tools that may not with @tool(thread_sensitive=True)), or use profile = "
                "\"process\".\n")
            return EXIT_ADAPTER_FAILED
        adapter = cls()
        _initialize(adapter, ns.adapter, ns.adapter_args)
    except BaseException:  # noqa: BLE001 - report any start-up failure, then exit
        sys.stderr.write(f"pit worker: adapter {ns.adapter!r} failed to start:\n"
                         f"{traceback.format_exc()}")
        return EXIT_ADAPTER_FAILED

    runner = ToolRunner(adapter, tools, host=HostClient(ns.host_address),
                        allow_pickle=ns.allow_pickle, threads=ns.threads,
                        session_table=SessionTable(ns.max_sessions, ns.session_ttl),
                        result_policy=result_policy(ns, unserializable_results))
    # Shared-memory paths in a call's metadata are followed only from the host's own unix
    # socket in the 0700 run dir, or on TCP from callers that hold the pool's secret when this
    # worker sees the host's /dev/shm (its probe): on TCP without a secret (a Snakepit
    # launch) any local user could name another process's arena and have it read or written.
    probe = os.environ.pop(shm.PROBE_ENV, None)
    runner.shm_paths = launch is None and bool(ns.listen) and (
        ns.listen.startswith("unix:") or bool(pool_secret) and shm.sees_probe(probe))
    if ns.progress_file:
        import mmap

        from .runner import PROGRESS_SIZE

        with open(ns.progress_file, "w+b") as fh:
            fh.write(b"\0" * PROGRESS_SIZE)
            fh.flush()
            runner.progress = mmap.mmap(fh.fileno(), PROGRESS_SIZE)
    limit = ns.max_message_mb * 1024 * 1024
    server_threads = 8 + ns.threads
    specs = {n: tool_spec(t, pb) for n, t in tools.items()}
    if launch is None:
        servicer = WorkerServicer(runner, specs, limit, server_threads)
    else:
        from .snakepit_servicer import SnakepitServicer

        servicer = SnakepitServicer(
            runner, specs, limit, server_threads, host=runner.host.stub(),
            host_address=launch.host_address, heartbeat=launch.heartbeat,
            on_host_lost=stop.abandon_host, adapter_cls=cls,
            worker_id=ns.worker_id or f"python-{os.getpid()}")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=server_threads, thread_name_prefix="pit-rpc"),
        options=[("grpc.max_send_message_length", limit),
                 ("grpc.max_receive_message_length", limit)],
        # RPCs past this are refused (RESOURCE_EXHAUSTED) instead of queueing without bound
        maximum_concurrent_rpcs=MAX_QUEUED_RPCS_PER_THREAD * server_threads,
        interceptors=[secret.SecretCheck(pool_secret)] if pool_secret else None)
    pb_grpc.add_BridgeServiceServicer_to_server(servicer, server)
    port = 0  # the TCP port a Snakepit launch bound
    if launch is None:
        bound = server.add_insecure_port(ns.listen) if worker_tls is None else \
            server.add_secure_port(ns.listen, worker_tls.server_credentials())
        if not ns.listen.startswith("unix:") and ns.listen.endswith(":0"):
            ns.listen = f"{ns.listen[:-2]}:{bound}"  # the port it was given: in the ready file
    else:
        port = snakepit_launch.bind(server, launch)
        if not port:
            return snakepit_launch.EXIT_NOT_BOUND
        ns.listen = launch.listen_address(port)
    server.start()
    lane = None
    if ns.lane_socket and not ns.no_call_lane:
        from .lane_socket import LaneSocket

        lane = LaneSocket(ns.lane_socket, servicer, limit, pool_secret,
                          None if worker_tls is None else worker_tls.server_context())
    host_watch = "none"  # how a wedged host is noticed (a dead one: see die_with_parent)
    if launch is not None:
        cfg = launch.heartbeat
        host_watch = "snakepit_heartbeat" if cfg.enabled and cfg.dependent else "none"
        if launch.ready_file:
            snakepit_launch.write_port(launch.ready_file, port)
    elif not ns.independent and ns.host_pings and ns.dependent_timeout >= 3 * ns.host_pings:
        watch_host_contact(servicer, ns.dependent_timeout, stop)
        host_watch = "pings"
    elif ns.host_address and not ns.independent:
        heartbeat_host(ns.host_address, ns.dependent_timeout, stop)
        host_watch = "heartbeat"
    if ns.ready_file:
        _write_ready(ns.ready_file, {
            "address": ns.listen, "pid": os.getpid(), "protocol": PROTOCOL_VERSION,
            "features": ([] if ns.no_call_lane else ["call_lane"])
            + (["shm"] if shm.available() and runner.shm_paths else [])
            # its lane socket serves several connections: it can be lent to a blocking caller
            + (["lane_connections"] if lane is not None else [])
            + ["telemetry_control"],  # acknowledges TelemetryControl messages
            "worker_id": ns.worker_id,
            "lane_socket": lane.address if lane is not None else None,
            "python": sys.version.split()[0], "executable": sys.executable,
            "threads": ns.threads, "host_watch": host_watch,
            "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(),
            "tools": [t.to_dict() for t in tools.values()],
        })

    stop.wait()
    servicer.close()  # the telemetry stream would otherwise hold server.stop for the grace
    if lane is not None:
        lane.close(stop.grace)
    server.stop(stop.grace).wait(stop.grace + 1)
    try:
        adapter.cleanup()
    except Exception:  # noqa: BLE001
        sys.stderr.write(f"pit worker: cleanup() failed:\n{traceback.format_exc()}")
    return 0


def health_check(spec: str) -> int:
    from .adapter import collect_tools

    try:
        tools = collect_tools(load_adapter_class(spec))
    except BaseException as exc:  # noqa: BLE001
        print(json.dumps({"ok": False, "adapter": spec,
                          "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"ok": True, "adapter": spec,
                      "tools": [t.to_dict() for t in tools.values()]}, default=repr))
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.health_check:
        return health_check(ns.adapter)
    try:
        launch = snakepit_launch.launch(ns, os.environ)
    except snakepit_launch.LaunchError as exc:
        print(f"pit worker: {exc}", file=sys.stderr)
        return 2
    if not ns.listen:
        print("pit worker: --listen (or Snakepit's --port) is required (unless "
              "--health-check)", file=sys.stderr)
        return 2
    return serve(ns, launch)
