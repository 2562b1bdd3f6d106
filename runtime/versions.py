"""What `pit --version` reports: the versions of pit and of what it runs on (Python, grpcio,
uv), as one frozen value. Never raises for something missing: uv not found is a version that
says so."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass

from .errors import EnvironmentProblem

UV_VERSION_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Versions:
    pit: str
    python: str  # "3.12.3 (CPython)"
    python_path: str
    grpcio: str
    uv: str  # "uv 0.5.1", or why there is none: "not found: ..."
    uv_path: str | None


def versions() -> Versions:
    """The versions of pit, this Python, grpcio and the uv pit would use (`envs.uv.find_uv`)."""
    import grpc

    from . import __version__
    from .envs import uv

    try:
        path: str | None = uv.find_uv()
        found = uv.run(uv.version_argv(str(path)), timeout=UV_VERSION_TIMEOUT_S).strip()
    except EnvironmentProblem as exc:
        path, found = None, f"not found: {exc.message}"
    return Versions(pit=__version__,
                    python=f"{platform.python_version()} ({platform.python_implementation()})",
                    python_path=sys.executable, grpcio=grpc.__version__, uv=found, uv_path=path)
