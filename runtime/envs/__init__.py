"""Per-pool environments: uv, interpreter discovery, venv builds with fingerprints."""

from .builder import EnvStatus, build, build_all, needs_env, status, worker_python
from .interpreters import Interpreter, discover, resolve

__all__ = ["EnvStatus", "Interpreter", "build", "build_all", "discover", "needs_env",
           "resolve", "status", "worker_python"]
