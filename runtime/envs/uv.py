"""uv, the one external tool for environments: where it is, and the argv of each call.

Argv builders are pure (tests assert on them); `run` executes one with a timeout and raises
EnvironmentProblem naming the command and its output when it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import EnvironmentProblem
from ..logs import logger

log = logger("env")

PIT_UV = "PIT_UV"  # path of the uv binary to use
UV_TIMEOUT_S = 900.0


_find_lock = threading.Lock()


def find_uv() -> str:
    """``$PIT_UV``, else the `uv` package's binary, else `uv` on PATH."""
    # The uv package reads sysconfig, whose lazy first initialisation is not thread-safe
    # (two env builds at once saw EXE = None): one lookup at a time.
    with _find_lock:
        return _find_uv()


def _find_uv() -> str:
    explicit = os.environ.get(PIT_UV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise EnvironmentProblem(f"{PIT_UV}={explicit} is not an executable file",
                                     hint=f"point {PIT_UV} at a uv binary or unset it")
        return explicit
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found:
        return found
    raise EnvironmentProblem("uv was not found (PIT_UV, the uv package, PATH)",
                             hint="python3 -m pip install uv")


def venv_argv(uv: str, path: Path, python: str, *, quiet: bool = True) -> list[str]:
    return [uv, "venv", *(["--quiet"] if quiet else []), "--clear", "--python", python,
            str(path)]


def install_argv(uv: str, venv_python: Path, requirements: list[str],
                 requirement_files: list[Path], *, quiet: bool = True) -> list[str]:
    # --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (containers often do), modules
    # without a .pyc are compiled again by every worker and fork server that imports them
    argv = [uv, "pip", "install", *(["--quiet"] if quiet else []), "--compile-bytecode",
            "--python", str(venv_python), *requirements]
    for f in requirement_files:
        argv += ["-r", str(f)]
    return argv


def freeze_argv(uv: str, venv_python: Path) -> list[str]:
    return [uv, "pip", "freeze", "--python", str(venv_python)]


def find_python_argv(uv: str, request: str) -> list[str]:
    return [uv, "python", "find", "--no-python-downloads", request]


def version_argv(uv: str) -> list[str]:
    return [uv, "--version"]


def run(argv: list[str], *, timeout: float = UV_TIMEOUT_S,
        on_line: Callable[[str], None] | None = None) -> str:
    """Run a uv command; its stdout, or EnvironmentProblem with its output. ``on_line``
    gets each line uv writes to stderr (its own progress) as it comes."""
    env = {**os.environ, "UV_NO_PROGRESS": "1"}
    log.info("running %s", " ".join(argv))
    try:
        out = (subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL) if on_line is None else
               _streamed(argv, timeout, env, on_line))
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"`{' '.join(argv)}` did not finish within {timeout:g} s",
                                 hint="check the network to the package index") from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot run {argv[0]}: {exc}") from None
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-15:]
        raise EnvironmentProblem(f"`{' '.join(argv)}` failed (exit {out.returncode}):\n"
                                 + "\n".join(tail),
                                 hint="fix the requirement or interpreter named above")
    return out.stdout


def _streamed(argv: list[str], timeout: float, env: dict[str, str],
              on_line: Callable[[str], None]) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` with stderr handed to ``on_line`` line by line as uv writes it;
    raises TimeoutExpired after ``timeout`` s (uv killed)."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout, proc.stderr
        stdout: list[str] = []
        reader = threading.Thread(target=lambda: stdout.append(out.read()), daemon=True)
        reader.start()
        timer = threading.Timer(timeout, expire)
        timer.start()
        stderr: list[str] = []
        try:
            for line in err:
                stderr.append(line)
                on_line(line.rstrip("\n"))
            proc.wait()
        except BaseException:  # Ctrl-C, or on_line failed: uv must not run on (nor be
            proc.kill()  # waited for), as subprocess.run kills it
            raise
        finally:
            timer.cancel()
        reader.join()
    if expired.is_set():
        raise subprocess.TimeoutExpired(argv, timeout)
    return subprocess.CompletedProcess(argv, proc.returncode, "".join(stdout), "".join(stderr))
