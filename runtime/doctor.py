"""The checks behind `pit doctor`: each returns pass / warn / fail with one remediation line.

A check that raises pit's own error (`PitError`: a missing interpreter, a broken env) fails
with that error's message and hint; one that breaks otherwise is reported as a failed check
naming a pit bug. Neither stops the others.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PitConfig, PoolConfig, ensure_state_dir, load_config
from .errors import PitError

SOCKET_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # "pass" | "warn" | "fail"
    message: str
    remediation: str = ""


def _guard(name: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except PitError as exc:  # what the check is there to find: an ordinary failure
        return Check(name, "fail", exc.message, exc.hint or "fix what the message names")
    except Exception as exc:  # noqa: BLE001 - a broken check is a failed check
        return Check(name, "fail", f"the check itself failed: {type(exc).__name__}: {exc}",
                     "report this as a pit bug")


def run_checks(config_path: str | Path | None = None) -> list[Check]:
    checks: list[Check] = []
    try:
        cfg = load_config(config_path)
    except Exception as exc:  # noqa: BLE001 - ConfigError, or an unreadable file
        return [Check("config", "fail", str(exc), getattr(exc, "hint", None)
                      or "fix the config file")]
    checks.append(Check("config", "pass", f"{cfg.path or 'no config file (defaults)'}: "
                                          f"{len(cfg.pools)} pool(s)"))
    base = cfg.path.parent if cfg.path else Path.cwd()
    checks += [_guard("state dir", lambda: _state_dir(cfg)),
               _guard("socket paths", lambda: _socket_paths(cfg)),
               _guard("uv", _uv),
               _guard("interpreters", _interpreters)]
    for pool in cfg.pools.values():
        checks += _pool_checks(pool, cfg, base)
    checks += [_guard("fast paths", lambda: _fast_paths(cfg)),
               _guard("thread limits", lambda: _thread_limits(cfg)),
               _guard("orphans", lambda: _orphans(cfg)),
               _guard("hardware", _hardware)]
    return checks


def _state_dir(cfg: PitConfig) -> Check:
    try:
        ensure_state_dir(cfg.state_dir)
        with tempfile.NamedTemporaryFile(dir=cfg.state_dir):
            pass
    except OSError as exc:
        return Check("state dir", "fail", f"{cfg.state_dir} is not writable: {exc}",
                     "set PIT_STATE_DIR (or state_dir) to a writable directory")
    return Check("state dir", "pass", f"{cfg.state_dir} is writable")


def _socket_paths(cfg: PitConfig) -> Check:
    longest = len(str(cfg.state_dir / "run" / "12345678" / "w00000.ready.json"))
    if longest > SOCKET_LIMIT:
        return Check("socket paths", "warn",
                     f"socket paths under {cfg.state_dir} would be {longest} bytes (> "
                     f"{SOCKET_LIMIT}); run dirs fall back to {tempfile.gettempdir()}",
                     "use a shorter state_dir to keep sockets beside the project")
    return Check("socket paths", "pass", f"{longest} bytes (limit 108)")


def _uv() -> Check:
    from .envs import uv

    path = uv.find_uv()
    return Check("uv", "pass", f"{uv.run(uv.version_argv(path), timeout=10).strip()} ({path})")


def _interpreters() -> Check:
    """The interpreters a pool's ``python`` may name; older ones are set apart, since pools
    refuse them."""
    from .envs import discover
    from .envs.interpreters import MIN_WORKER_PYTHON, supported

    found = sorted(discover(), key=lambda i: i.version)  # oldest first, numerically

    def listing(interps: list[Any]) -> str:
        return ", ".join(f"{i.version_text} ({i.path})" for i in interps)

    usable = [i for i in found if supported(i)]
    old = [i for i in found if not supported(i)]
    if not old:
        return Check("interpreters", "pass", listing(usable) or "none found")
    minimum = ".".join(map(str, MIN_WORKER_PYTHON))
    return Check("interpreters", "warn",
                 f"{listing(usable) or 'none usable'}; too old for pit workers (Python < "
                 f"{minimum}), pools refuse them: {listing(old)}",
                 f"a pool's python must be {minimum} or newer; pick one of the others or "
                 "install one (pyenv install 3.12)")


def _pool_checks(pool: PoolConfig, cfg: PitConfig, base: Path) -> list[Check]:
    from . import envs
    from .envs.builder import BRIDGE_PACKAGES, bridge_pins
    from .envs.health import command_check, health_check, package_versions

    prefix = f"pool {pool.name}"
    out: list[Check] = []

    def python() -> Check:
        import sys

        interp = envs.resolve(pool.python, sys.executable)
        return Check(f"{prefix}: python", "pass", f"Python {interp.version_text} "
                                                  f"({interp.path})")

    def env() -> Check:
        st = envs.status(pool, cfg.state_dir, base)
        if st.state == "host":
            return Check(f"{prefix}: env", "pass", "runs on the host's interpreter")
        if st.state == "ready":
            import json

            ident = json.loads((Path(st.path or "") / "identity.json").read_text())
            return Check(f"{prefix}: env", "pass",
                         f"ready: {st.path} (Python {ident['python']} {ident['platform']}, "
                         f"interpreter sha256 {ident['sha256'][:12]})")
        return Check(f"{prefix}: env", "fail", f"{st.state}: {st.detail}",
                     f"run `pit setup --pool {pool.name}`")

    def grpc() -> Check:
        have = package_versions(pool, cfg.state_dir, base, BRIDGE_PACKAGES)
        want = dict(p.split("==") for p in bridge_pins())
        missing = [n for n, v in have.items() if v is None]
        if missing:
            return Check(f"{prefix}: grpc", "fail", f"missing where workers run: "
                         f"{', '.join(missing)}", f"run `pit setup --pool {pool.name}`")
        off = [f"{n} {have[n]} (host {want[n]})" for n in BRIDGE_PACKAGES if have[n] != want[n]]
        if off:
            return Check(f"{prefix}: grpc", "warn", "versions differ from the host's: "
                         + ", ".join(off), f"run `pit setup --pool {pool.name} --force`")
        return Check(f"{prefix}: grpc", "pass",
                     ", ".join(f"{n} {have[n]}" for n in BRIDGE_PACKAGES))

    def packages() -> Check:
        from packaging.requirements import InvalidRequirement, Requirement

        from .envs.builder import split_requirements

        strings, _ = split_requirements(pool, base)
        reqs = []
        for text in strings:
            try:
                reqs.append(Requirement(text))
            except InvalidRequirement as exc:
                return Check(f"{prefix}: packages", "fail", f"{text!r}: {exc}",
                             "fix the requirement (PEP 508)")
        have = package_versions(pool, cfg.state_dir, base, tuple(r.name for r in reqs))
        bad = [f"{r} (installed: {have.get(r.name) or 'missing'})" for r in reqs
               if have.get(r.name) is None
               or not r.specifier.contains(have[r.name] or "", prereleases=True)]
        if bad:
            return Check(f"{prefix}: packages", "fail", "unsatisfied: " + "; ".join(bad),
                         f"run `pit setup --pool {pool.name}`")
        return Check(f"{prefix}: packages", "pass",
                     ", ".join(f"{r.name} {have[r.name]}" for r in reqs))

    def adapter() -> Check:
        h = health_check(pool, cfg.state_dir, base)
        if h.ok:
            return Check(f"{prefix}: adapter", "pass", f"{pool.adapter}: {len(h.tools)} tools")
        return Check(f"{prefix}: adapter", "fail", f"{pool.adapter}: {h.error}",
                     f"python -m runtime.worker --health-check --adapter {pool.adapter}")

    def worker() -> Check:
        h = command_check(pool, cfg.state_dir, base)
        what = "Snakepit's bridge" if pool.worker == "snakepit" else "the command"
        if h.ok:
            return Check(f"{prefix}: worker", "pass", f"{what} runs: {' '.join(pool.command)}"
                         + (f" (adapter {pool.adapter} imports)"
                            if pool.worker == "snakepit" else ""))
        return Check(f"{prefix}: worker", "fail", f"{what}: {h.error}",
                     "check the pool's command (and that the bridge's requirements.txt is "
                     "installed in its interpreter)" if pool.worker == "snakepit" else
                     "check the pool's command")

    def device() -> Check:
        from .hardware import resolve_device

        try:
            choice = resolve_device(pool.device)
        except ValueError as exc:
            return Check(f"{prefix}: device", "fail", str(exc), "run `pit hardware`; change "
                         "the pool's device or use \"auto\"")
        return Check(f"{prefix}: device", "pass", f"{pool.device} -> {choice.name} "
                                                  f"({choice.reason})")

    if pool.backend == "ray":  # the cluster's interpreter and packages, not this host's
        out.append(_guard(f"{prefix}: ray", lambda: _ray(pool)))
        if pool.tls:
            out.append(_guard(f"{prefix}: tls", lambda: _tls(pool)))
        out.append(_guard(f"{prefix}: adapter", adapter))
        return out
    if pool.worker != "pit":  # its own interpreter and packages: what its command says
        out.append(_guard(f"{prefix}: worker", worker))
        out.append(_guard(f"{prefix}: device", device))
        return out
    resolved = _guard(f"{prefix}: python", python)
    out.append(resolved)
    if resolved.status == "pass":
        # Without its interpreter the env cannot be built: reported once, above.
        env_check = _guard(f"{prefix}: env", env)
        out.append(env_check)
        out.append(_guard(f"{prefix}: grpc", grpc))
        # A stale or missing env is reported once, above, not again as unmet requirements.
        if env_check.status == "pass" and pool.requirements and \
                not isinstance(pool.requirements, str):
            out.append(_guard(f"{prefix}: packages", packages))
        out.append(_guard(f"{prefix}: adapter", adapter))
    out.append(_guard(f"{prefix}: device", device))
    return out


def _tls(pool: PoolConfig) -> Check:
    """A Ray pool's TLS files: readable, PEM, the key the certificate's, and a handshake in
    memory the host would accept (`protocol.tls.read_pool_tls`, as at each worker's start)."""
    from .protocol import tls

    _, host = tls.read_pool_tls(pool.tls, f"pool {pool.name}")
    named = (f"for {host.server_name!r}" if host.server_name
             else "(no server_name: it must name each worker's IP address)")
    return Check(f"pool {pool.name}: tls", "pass",
                 f"{pool.tls['cert']}: issued by tls.ca {named}")


def _ray(pool: PoolConfig) -> Check:
    """A Ray pool: Ray importable here, and (unless "local") the cluster reachable, its Ray
    and Python the same as this host's, pit importable there, its resources enough for one
    worker; a pool's python and requirements against what Ray allows (`pool.ray_env`)."""
    from .pool import ray_cluster, ray_env

    ray = ray_cluster.import_ray()
    name = f"pool {pool.name}: ray"
    here = ray_env.cluster_python()
    if pool.ray_address == "local":  # the cluster is this host's Python
        import importlib.util

        missing = [m for m in ray_env.CLUSTER_PACKAGES if importlib.util.find_spec(m) is None]
        problems = _ray_env_problems(pool, here, missing)
        if problems:
            return Check(name, "fail", "; ".join(problems), _RAY_ENV_HINT)
        return Check(name, "pass", f"Ray {ray.__version__}; a private loopback instance starts "
                                   "with the host")
    info = ray_cluster.probe(pool.ray_address)
    problems = _ray_env_problems(pool, info["python"], info.get("missing", []))
    if info["ray"] != ray.__version__:
        problems.append(f"Ray {info['ray']} on the cluster, {ray.__version__} here")
    if info["python"] != here:
        problems.append(f"Python {info['python']} on the cluster, {here} here (Ray needs "
                        "the same)")
    if not info["pit"]:
        problems.append("pit's worker (runtime.worker) does not import on the cluster")
    options = ray_cluster.actor_options(dict(pool.resources))
    wanted = {"CPU": options["num_cpus"], "GPU": options["num_gpus"],
              **options.get("resources", {})}
    short = [f"{k} {v} (the cluster has {info['resources'].get(k, 0)})"
             for k, v in wanted.items() if v and info["resources"].get(k, 0) < v]
    if short:
        problems.append("one worker needs " + ", ".join(short))
    summary = (f"Ray {info['ray']}, {info['nodes']} node(s), Python {info['python']}, "
               f"CPU {info['available'].get('CPU', 0):g}/{info['resources'].get('CPU', 0):g} "
               "free")
    if problems:
        return Check(name, "fail", f"{summary}: " + "; ".join(problems),
                     "install the same Ray, Python and pit on the cluster's nodes, or change "
                     "the pool's resources or python; " + _RAY_ENV_HINT)
    return Check(name, "pass", summary)


_RAY_ENV_HINT = ("a Ray pool runs the cluster's Python (remove python or match it); its "
                 "requirements need virtualenv and uv there: pip install 'pit-pools[ray]'")


def _ray_env_problems(pool: PoolConfig, cluster_python: str, missing: list[str]) -> list[str]:
    """A Ray pool's python against the cluster's, and what its requirements need there."""
    from .pool import ray_env

    problems = []
    if (problem := ray_env.python_problem(pool.python, cluster_python)) is not None:
        problems.append(problem)
    if pool.requirements and missing:
        problems.append("its requirements become a Ray runtime_env (uv), which needs "
                        f"{' and '.join(missing)} in the cluster's Python")
    return problems


def _fast_paths(cfg: PitConfig) -> Check:
    """Fork server and shared memory: pit works without them, only slower."""
    from .pool.forkserver import supported as forkserver_supported
    from .protocol import shm

    notes, missing = [], []
    forked = [p.name for p in cfg.pools.values() if p.start_method == "forkserver"]
    if forked and not forkserver_supported():
        missing.append(f"no fork server on {sys.platform}: pools {', '.join(forked)} spawn "
                       "each worker (slower start, more memory)")
    elif forked:
        notes.append("fork server")
    if any(p.shm_threshold_kb for p in cfg.pools.values()):
        if shm.available():
            notes.append(f"shared memory in {shm.SHM_DIR}")
        else:
            missing.append(f"{shm.SHM_DIR} is not writable (or PIT_NO_SHM is set): large bytes "
                           "and arrays travel inside gRPC messages (several times slower)")
    if missing:
        return Check("fast paths", "warn", "; ".join(missing),
                     "nothing to fix for correctness; on Linux, mount a writable /dev/shm")
    return Check("fast paths", "pass", ", ".join(notes) or "none configured")


def _thread_limits(cfg: PitConfig) -> Check:
    from .config import THREAD_LIMIT_VARS
    from .hardware import cpu_info

    usable = cpu_info().usable_cpus
    notes = []
    for pool in cfg.pools.values():
        threads = pool.size * pool.capacity * int(pool.worker_env().get("OMP_NUM_THREADS", "1"))
        if threads > 4 * usable:
            notes.append(f"pool {pool.name}: {pool.size} workers x {pool.capacity} calls x "
                         f"{pool.worker_env()['OMP_NUM_THREADS']} math threads on {usable} CPUs")
    host = {v: os.environ[v] for v in THREAD_LIMIT_VARS if v in os.environ}
    if notes:
        return Check("thread limits", "warn", "; ".join(notes),
                     "lower size, threads_per_worker or OMP_NUM_THREADS in env")
    return Check("thread limits", "pass", f"{usable} usable CPUs" + (
        f"; host sets {host}" if host else ""))


def _orphans(cfg: PitConfig) -> Check:
    from .cleanup import cleanup

    report = cleanup(cfg.state_dir, dry_run=True)
    workers = [i for i in report.items if i.kind == "worker"]
    if workers:
        return Check("orphans", "fail", f"{len(workers)} worker process(es) left by dead "
                     f"hosts: pids {', '.join(i.target for i in workers)}", "run `pit cleanup`")
    if report.items:
        return Check("orphans", "warn", f"{len(report.items)} stale run dir(s) or row(s)",
                     "run `pit cleanup`")
    return Check("orphans", "pass", "no worker left by a dead host")


def _hardware() -> Check:
    from .hardware import detect

    hw = detect()
    found = [f"{a.kind}: {a.reason}" + (f" (driver {a.driver})" if a.driver else "")
             for a in hw.accelerators if a.available]
    return Check("hardware", "pass", f"{hw.cpu.model}, {hw.cpu.usable_cpus} usable CPUs "
                 f"({hw.cpu.usable_reason}); " + ("; ".join(found) or "no GPU"))
