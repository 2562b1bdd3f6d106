"""Finding the Python a pool asked for, among the interpreters really installed here.

A request is an interpreter path (it must exist and run) or a version like "3.12". Versions
are resolved against `uv python find` (no downloads: this may be offline) plus places uv does
not look: pyenv's versions directory (whose shims refuse non-global versions), asdf,
/usr/bin, /usr/local/bin and PATH. Every candidate is verified by running it. There is no
silent fallback to another version: no match is an error listing what was found.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import EnvironmentProblem
from . import uv as uvtool

MIN_WORKER_PYTHON = (3, 10)
# A venv's python reports the interpreter it was made from (_base_executable), so "3.11"
# resolves to the same interpreter whichever venv happens to be active.
PROBE = ("import json, os, platform, sys; print(json.dumps([list(sys.version_info[:3]), "
         "os.path.realpath(getattr(sys, '_base_executable', '') or sys.executable), "
         "platform.python_implementation()]))")


@dataclass(frozen=True, slots=True)
class Interpreter:
    path: str
    version: tuple[int, int, int]
    implementation: str

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


@functools.lru_cache(maxsize=256)
def probe(path: str) -> Interpreter | None:
    """Run ``path`` and ask it what it is (None when it does not run)."""
    try:
        out = subprocess.run([path, "-c", PROBE], capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
        version, executable, impl = json.loads(out.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if out.returncode != 0:
        return None
    return Interpreter(executable or path, tuple(version), impl)  # type: ignore[arg-type]


def candidate_paths() -> list[str]:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    asdf = os.environ.get("ASDF_DATA_DIR") or os.path.expanduser("~/.asdf")
    patterns = [f"{root}/versions/*/bin/python3", f"{asdf}/installs/python/*/bin/python3",
                "/usr/bin/python3*", "/usr/local/bin/python3*"]
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if folder and "shims" not in folder:  # pyenv shims refuse non-global versions
            patterns.append(os.path.join(folder, "python3*"))
    paths: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            name = os.path.basename(path)
            if name.endswith("-config") or not os.access(path, os.X_OK) or path in paths:
                continue
            paths.append(path)
    return paths


def discover() -> list[Interpreter]:
    """Every distinct interpreter found here, verified by running it."""
    seen: dict[str, Interpreter] = {}
    for path in candidate_paths():
        found = probe(path)
        if found is not None:
            seen.setdefault(os.path.realpath(found.path), found)
    return sorted(seen.values(), key=lambda i: i.version, reverse=True)


def supported(interp: Interpreter) -> bool:
    """Can pit's workers run on it (Python >= MIN_WORKER_PYTHON)?"""
    return interp.version[:2] >= MIN_WORKER_PYTHON


def versions_text(found: list[Interpreter]) -> str:
    """Distinct versions, oldest first, compared as numbers ("3.10" after "3.9")."""
    return ", ".join(".".join(map(str, v)) for v in sorted({i.version for i in found}))


def _matches(interp: Interpreter, request: str) -> bool:
    want = request.split(".")
    have = list(map(str, interp.version))
    return have[:len(want)] == want


def resolve(request: str | None, host_python: str) -> Interpreter:
    """The interpreter for a pool's ``python`` setting (None: the host's)."""
    if request is None:
        found = probe(host_python)
        if found is None:
            raise EnvironmentProblem(f"the host interpreter {host_python} does not run")
        return found
    if "/" in request or request.startswith("."):
        path = Path(request).expanduser()
        if not path.exists() or not os.access(path, os.X_OK):
            raise EnvironmentProblem(f"python = {request!r}: no executable file at {path}",
                                     hint="give an existing interpreter path or a version "
                                          "like \"3.12\"")
        found = probe(str(path))
        if found is None:
            raise EnvironmentProblem(f"python = {request!r}: {path} did not run as Python")
        return _check_supported(found, request)
    if not all(part.isdigit() for part in request.split(".")):
        raise EnvironmentProblem(f"python = {request!r} is neither a path nor a version "
                                 "like \"3.12\"")
    candidates: list[Interpreter] = []
    try:
        out = uvtool.run(uvtool.find_python_argv(uvtool.find_uv(), request), timeout=30)
        found = probe(out.strip())
        if found is not None:
            candidates.append(found)
    except EnvironmentProblem:
        pass  # uv found none (or is missing): pit's own discovery may still find one
    candidates += discover()
    for interp in candidates:
        if _matches(interp, request):
            return _check_supported(interp, request)
    available = versions_text([i for i in candidates if supported(i)]) or "none"
    too_old = versions_text([i for i in candidates if not supported(i)])
    raise EnvironmentProblem(
        f"python = {request!r}: no installed interpreter matches; found: {available}"
        + (f" (too old for pit workers: {too_old})" if too_old else ""),
        details={"requested": request, "found": available},
        hint="install that version (pyenv install, apt, ...) or pick one of those found; "
             "pit does not download interpreters (this machine may be offline)")


def _check_supported(interp: Interpreter, request: str) -> Interpreter:
    if not supported(interp):
        raise EnvironmentProblem(
            f"python = {request!r} resolves to Python {interp.version_text} ({interp.path}); "
            f"pit workers need Python >= {'.'.join(map(str, MIN_WORKER_PYTHON))}",
            hint="pick a newer interpreter")
    return interp
