"""What a Ray pool's workers run in: its ``requirements`` become the actors' Ray
``runtime_env`` (uv), and its ``python`` is held to Ray's rule (the cluster's Python, which is
also this host's: Ray refuses a driver whose Python differs from the cluster's).

    requirements = ["inflection==0.5.1", "extra.txt"]
        --> runtime_env = {"uv": {"packages": [the strings, the files' lines]}}
        Ray builds one virtualenv per distinct list on each node (a clone of the cluster's
        Python env, so Ray and pit stay importable) and installs the packages there with uv,
        before the actor starts: the first worker on a node waits for the build
        (startup_timeout_ms must cover it), later ones reuse it.
    a failed build --> Ray's RuntimeEnvSetupError --> WorkerStartError with Ray's words
    python = "3.12" (or a path) on a cluster of 3.11 --> WorkerStartError at start, a failed
        `pit doctor` check

Ray's uv plugin needs the ``virtualenv`` and ``uv`` Python packages in the cluster's Python
(CLUSTER_PACKAGES; the ``ray`` extra installs both). Ray's pip plugin is not used: it runs
``python -m pip`` in the clone, and an env made by uv has no pip.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import PoolConfig

CLUSTER_PACKAGES = ("virtualenv", "uv")  # what Ray's uv plugin imports / runs on a node
SETUP_ERROR_LINES = 12  # the last lines of Ray's RuntimeEnvSetupError that a start error keeps


def requirement_lines(config: PoolConfig, base: Path) -> list[str]:
    """The pool's requirements as lines of a requirements file: its strings, then the lines
    of its files (relative to ``base``), less comments and blank lines."""
    from ..envs.builder import split_requirements

    strings, files = split_requirements(config, base)
    lines = list(strings)
    for path in files:
        for line in path.read_text().splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def runtime_env(config: PoolConfig, base: Path) -> dict[str, Any] | None:
    """The actors' ``runtime_env`` for the pool's requirements (None without any)."""
    lines = requirement_lines(config, base) if config.requirements else []
    return {"uv": {"packages": lines}} if lines else None


def cluster_python() -> str:
    """The cluster's Python ("3.11"): this host's, since Ray runs a driver only on the same."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def python_problem(request: str | None, cluster: str) -> str | None:
    """Why a pool's ``python`` cannot run on a cluster of Python ``cluster`` ("3.11"), or
    None. A version ("3.11", "3") must match it; a path must be an interpreter of that
    version here (its path means nothing on the cluster's nodes: Ray runs their Python)."""
    if request is None:
        return None
    if "/" in request or request.startswith("."):
        from ..envs.interpreters import probe

        found = probe(str(Path(request).expanduser()))
        if found is None:
            return f"python = {request!r} does not run as Python here"
        have = ".".join(map(str, found.version[:2]))
    else:
        have = request
    want, got = cluster.split("."), have.split(".")
    if got[:2] != want[:len(got[:2])]:
        return (f"python = {request!r} is Python {have}, but the cluster runs Python "
                f"{cluster} (Ray runs every actor with the cluster's Python)")
    return None


def setup_error(exc: BaseException) -> str | None:
    """Ray's words when ``exc`` says it could not build an actor's runtime_env, else None."""
    if type(exc).__name__ != "RuntimeEnvSetupError" and \
            "RuntimeEnvSetupError" not in str(exc).split("\n", 1)[0]:
        return None
    lines = [line for line in str(exc).splitlines() if line.strip()]
    # the installer's own output (uv: "error: No solution found ..."), when Ray quotes it
    marks = [i for i, line in enumerate(lines) if line.startswith("Last ") and
             line.rstrip().endswith("of stdout:")]
    if marks:
        lines = lines[marks[-1] + 1:]
    return "\n".join(lines[-SETUP_ERROR_LINES:])
