"""Running a pool's adapter health check where its workers will run (env or host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import PoolConfig
from .builder import bridge_dir, env_dir, env_python, needs_env

HEALTH_TIMEOUT_S = 60.0
VERSIONS_PROBE = """
import json, sys
import importlib.metadata as m
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    tools: tuple[str, ...]
    error: str
    python: str


def worker_command(config: PoolConfig, state_dir: Path, base: Path) -> tuple[str, dict[str, str]]:
    """(python, environment) a pool's worker process gets."""
    env = dict(os.environ)
    env.update(config.worker_env())
    if needs_env(config):
        env.pop("PYTHONHOME", None)
        env["PYTHONPATH"] = os.pathsep.join([str(bridge_dir(state_dir)), str(base)])
        return str(env_python(env_dir(state_dir, config.name))), env
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(base), env.get("PYTHONPATH", "")) if p)
    return sys.executable, env


def health_check(config: PoolConfig, state_dir: Path, base: Path) -> Health:
    python, env = worker_command(config, state_dir, base)
    if not os.path.exists(python):
        return Health(False, (), f"{python} does not exist (env not built)", python)
    try:
        out = subprocess.run([python, "-m", "runtime.worker", "--health-check", "--adapter",
                              config.adapter], capture_output=True, text=True, env=env,
                             cwd=base, timeout=HEALTH_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Health(False, (), f"health check did not run: {exc}", python)
    try:
        report = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return Health(False, (), " / ".join(tail) or f"exit {out.returncode}", python)
    if not report.get("ok"):
        return Health(False, (), report.get("error", "failed"), python)
    return Health(True, tuple(t["name"] for t in report.get("tools", [])), "", python)


def package_versions(config: PoolConfig, state_dir: Path, base: Path,
                     names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of ``names`` where the pool's workers run (None: missing)."""
    python, env = worker_command(config, state_dir, base)
    try:
        out = subprocess.run([python, "-c", VERSIONS_PROBE, *names], capture_output=True,
                             text=True, env=env,
                             timeout=HEALTH_TIMEOUT_S, stdin=subprocess.DEVNULL)
        return dict(json.loads(out.stdout))
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {n: None for n in names}


def command_check(config: PoolConfig, state_dir: Path, base: Path) -> Health:
    """A command-started pool (worker = "command" or "snakepit"): its command exists, and
    Snakepit's bridge passes its own ``--health-check`` (its gRPC packages and the adapter
    import in its interpreter)."""
    import shutil

    from ..pool.transport import command_argv

    python, env = worker_command(config, state_dir, base)
    try:
        argv = command_argv(config.command, python=python, port=0, adapter=config.adapter,
                            host_pid=os.getpid(), run_id="doctor", token="doctor")
    except ValueError as exc:
        return Health(False, (), str(exc), "")
    exe = shutil.which(argv[0]) or (argv[0] if os.access(argv[0], os.X_OK) else None)
    if exe is None:
        return Health(False, (), f"{argv[0]!r} is not an executable file or on PATH", "")
    if config.worker != "snakepit":
        return Health(True, (), "", exe)
    try:
        out = subprocess.run([*argv, "--health-check", "--adapter", config.adapter],
                             capture_output=True, text=True, env=env, cwd=base,
                             timeout=HEALTH_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Health(False, (), f"the bridge's health check did not run: {exc}", exe)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return Health(False, (), " / ".join(tail) or f"exit {out.returncode}", exe)
    return Health(True, (), "", exe)
