"""Per-pool virtualenvs, built by uv from the pool's ``python`` and ``requirements``.

    .pit/envs/<pool>/            the venv (uv venv --python <resolved interpreter>)
        lock.txt                 `uv pip freeze` after the install
        identity.json            python version, platform, sha256 of the interpreter
        fingerprint              written LAST: an env counts as ready only when it matches
    .pit/bridge/<version>/runtime/   the worker bridge (runtime.worker + protocol + adapters),
                                     put on the worker's PYTHONPATH: the env gets grpcio,
                                     protobuf and orjson, never the host's CLI dependencies

Fingerprint = sha256 of (interpreter version and path, requirements and the contents of
requirement files, the bridge's pinned dependencies, pit's version). A matching env is not
rebuilt; a missing or different one is rebuilt from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..config import PoolConfig, ensure_state_dir
from ..errors import EnvironmentProblem, PitError
from . import uv as uvtool
from .interpreters import Interpreter, resolve

BRIDGE_PACKAGES = ("grpcio", "protobuf", "orjson")
BRIDGE_PARTS = ("__init__.py", "version.py", "lazy.py", "errors.py", "worker", "protocol",
                "adapters")
FINGERPRINT = "fingerprint"
MAX_PARALLEL_BUILDS = 2

Phase = Callable[[str, str], None]  # (pool, what it is doing now), e.g. "installing 4 packages"
Output = Callable[[str, str], None]  # (pool, one line uv wrote about its progress)


@dataclass(frozen=True, slots=True)
class EnvStatus:
    pool: str
    state: str  # "host" (no env needed) | "ready" | "missing" | "stale" | "error"
    path: str | None
    python: str | None
    detail: str = ""


def needs_env(config: PoolConfig) -> bool:
    """Does the pool run in an env of its own on this host? (A Ray pool's requirements are
    built by Ray on the cluster's nodes: `pool.ray_env`.)"""
    return config.backend != "ray" and (config.python is not None or bool(config.requirements))


def env_dir(state_dir: Path, pool: str) -> Path:
    return state_dir / "envs" / pool


def env_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def bridge_pins() -> list[str]:
    """The host's exact versions of what the worker bridge imports."""
    from importlib import metadata  # ~20 ms (email.*): not on every host's import path

    return [f"{name}=={metadata.version(name)}" for name in BRIDGE_PACKAGES]


def split_requirements(config: PoolConfig, base: Path) -> tuple[list[str], list[Path]]:
    reqs = config.requirements
    items = [reqs] if isinstance(reqs, str) else list(reqs or ())
    strings: list[str] = []
    files: list[Path] = []
    for item in items:
        path = (base / item).resolve()
        if item.endswith(".txt") or (("/" in item or item.startswith(".")) and path.exists()):
            if not path.is_file():
                raise EnvironmentProblem(f"pool {config.name!r}: requirements file {path} "
                                         "does not exist")
            files.append(path)
        else:
            strings.append(item)
    return strings, files


def fingerprint(interp: Interpreter, strings: list[str], files: list[Path]) -> str:
    from ..version import __version__

    h = hashlib.sha256()
    h.update(json.dumps([interp.version_text, interp.path, sorted(strings), bridge_pins(),
                         __version__]).encode())
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def bridge_dir(state_dir: Path) -> Path:
    """The worker bridge for this pit version, copied once into the state dir."""
    src = Path(__file__).resolve().parent.parent  # the runtime package
    ensure_state_dir(state_dir)
    digest = hashlib.sha256()
    files = []
    for part in BRIDGE_PARTS:
        p = src / part
        for f in sorted([p] if p.is_file() else p.rglob("*.py*")):
            if f.suffix in (".py", ".pyi") and "__pycache__" not in f.parts:
                files.append(f)
                digest.update(str(f.relative_to(src)).encode() + f.read_bytes())
    dest = state_dir / "bridge" / digest.hexdigest()[:16]
    if not (dest / "runtime" / "worker" / "__init__.py").exists():
        # A copy of its own for every caller: `pit setup` builds and health-checks pools on
        # several threads of one process, which a ".tmp<pid>" name made share (and race on).
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{dest.name}.tmp", dir=dest.parent))
        for f in files:
            target = tmp / "runtime" / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        try:
            tmp.rename(dest)
        except OSError:  # another host made it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def status(config: PoolConfig, state_dir: Path, base: Path) -> EnvStatus:
    """Is this pool's env built and current? (Resolves the interpreter; builds nothing.)"""
    if not needs_env(config):
        return EnvStatus(config.name, "host", None, sys.executable)
    path = env_dir(state_dir, config.name)
    try:
        interp = resolve(config.python, sys.executable)
        strings, files = split_requirements(config, base)
    except PitError as exc:
        return EnvStatus(config.name, "error", str(path), None, exc.message)
    stored = path / FINGERPRINT
    if not stored.exists():
        return EnvStatus(config.name, "missing", str(path), interp.version_text,
                         "not built yet")
    if stored.read_text().strip() != fingerprint(interp, strings, files):
        return EnvStatus(config.name, "stale", str(path), interp.version_text,
                         "python or requirements changed since it was built")
    return EnvStatus(config.name, "ready", str(path), interp.version_text)


def build(config: PoolConfig, state_dir: Path, base: Path, *, force: bool = False,
          on_phase: Phase | None = None, on_output: Output | None = None) -> EnvStatus:
    """Build (or keep) one pool's env; returns its status. Raises EnvironmentProblem.
    ``on_phase`` hears each step as it starts; ``on_output`` gets uv's own progress lines
    (uv runs without --quiet then)."""
    if not needs_env(config):
        return EnvStatus(config.name, "host", None, sys.executable)

    def phase(text: str) -> None:
        if on_phase is not None:
            on_phase(config.name, text)

    def output(line: str) -> None:
        if on_output is not None:
            on_output(config.name, line)

    phase(f"finding Python {config.python}" if config.python else "finding Python")
    interp = resolve(config.python, sys.executable)
    strings, files = split_requirements(config, base)
    path = env_dir(ensure_state_dir(state_dir), config.name)
    wanted = fingerprint(interp, strings, files)
    stored = path / FINGERPRINT
    if not force and stored.exists() and stored.read_text().strip() == wanted:
        return EnvStatus(config.name, "ready", str(path), interp.version_text, "up to date")
    uv = uvtool.find_uv()
    if stored.exists():
        stored.unlink()  # from here on the env is not ready until the new fingerprint lands
    path.parent.mkdir(parents=True, exist_ok=True)
    quiet, lines = on_output is None, (None if on_output is None else output)
    phase(f"creating venv with Python {interp.version_text}")
    uvtool.run(uvtool.venv_argv(uv, path, interp.path, quiet=quiet), on_line=lines)
    python = env_python(path)
    packages = [*bridge_pins(), *strings]
    phase(f"installing {len(packages)} packages" + (
        f" and {', '.join(f.name for f in files)}" if files else ""))
    uvtool.run(uvtool.install_argv(uv, python, packages, files, quiet=quiet), on_line=lines)
    phase("recording the installed versions (lock.txt)")
    (path / "lock.txt").write_text(uvtool.run(uvtool.freeze_argv(uv, python)))
    (path / "identity.json").write_text(json.dumps(identity(interp), indent=2))
    stored.write_text(wanted)  # last: the env is ready
    return EnvStatus(config.name, "ready", str(path), interp.version_text, "built")


def identity(interp: Interpreter) -> dict[str, str]:
    real = os.path.realpath(interp.path)
    with open(real, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    return {"python": interp.version_text, "implementation": interp.implementation,
            "interpreter": real, "sha256": digest, "platform": platform.platform()}


def build_all(configs: list[PoolConfig], state_dir: Path, base: Path, *, force: bool = False,
              on_done: Callable[[EnvStatus], None] | None = None,
              on_phase: Phase | None = None, on_output: Output | None = None,
              ) -> list[EnvStatus]:
    """Build every env, MAX_PARALLEL_BUILDS at a time; a failure is an "error" status.
    ``on_phase`` / ``on_output``: see `build`."""
    def one(config: PoolConfig) -> EnvStatus:
        try:
            result = build(config, state_dir, base, force=force, on_phase=on_phase,
                           on_output=on_output)
        except Exception as exc:  # noqa: BLE001 - one pool's failure is its row, not a crash
            exc = exc if isinstance(exc, PitError) else EnvironmentProblem(
                f"{type(exc).__name__}: {exc}")
            result = EnvStatus(config.name, "error", str(env_dir(state_dir, config.name)),
                               None, exc.message)
        if on_done is not None:
            on_done(result)
        return result

    with ThreadPoolExecutor(MAX_PARALLEL_BUILDS) as pool:
        return list(pool.map(one, configs))


def worker_python(config: PoolConfig, state_dir: Path, base: Path) -> tuple[str, Path | None]:
    """(python to run the pool's workers with, bridge dir or None), building the env if it
    is missing or stale."""
    if not needs_env(config):
        return sys.executable, None
    st = build(config, state_dir, base)
    return str(env_python(Path(st.path or ""))), bridge_dir(state_dir)
