"""Snakepit 0.13's own Python bridge, for interop tests and benchmarks: where it is (the
reference copy beside the project, ``../shared/snakepit-bridge/python``) and an interpreter
that can run it (a uv env with what its showcase adapter needs, built once and reused)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from runtime.envs.uv import find_uv

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = ROOT.parent / "shared" / "snakepit-bridge" / "python"
SHOWCASE = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
# What grpc_server.py and the showcase import (the stubs need grpcio >= 1.76, protobuf >= 6.31)
REQUIREMENTS = ["grpcio>=1.76", "protobuf>=6.31.1", "numpy", "psutil", "orjson"]
ENV_DIR = Path(tempfile.gettempdir()) / "pit-snakepit-bridge-env"


def bridge_python() -> tuple[str | None, str]:
    """(the env's python, "") or (None, why it cannot be had)."""
    if not (BRIDGE / "grpc_server.py").is_file():
        return None, f"Snakepit's bridge is not at {BRIDGE} (see the project README)"
    python = ENV_DIR / "bin" / "python"
    done = ENV_DIR / ".pit-ready"
    if done.is_file() and python.exists():
        return str(python), ""
    try:
        uv = find_uv()
        subprocess.run([uv, "venv", "--quiet", "--clear", str(ENV_DIR)], check=True,
                       capture_output=True, timeout=300)
        subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python),
                        *REQUIREMENTS], check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        return None, f"cannot build the bridge's env at {ENV_DIR}: {exc} {err.decode()[-300:]}"
    done.write_text("ok")
    return str(python), ""


def command(python: str) -> list[str]:
    return [python, str(BRIDGE / "grpc_server.py")]
