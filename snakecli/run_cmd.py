"""`pit run`: start pools, run a script (or, with -m, a module) as __main__ in this process,
stop the pools."""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import queue
import runpy
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from runtime.errors import PitError
from runtime.logs import logger

from .exit_codes import EXIT_CODES

if TYPE_CHECKING:
    from runtime.pool.host.worker_output import OutputLine

log = logger("cli")

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _print_error(exc: BaseException, debug: bool = False) -> None:
    """`render.print_error`, imported only when there is an error: Rich costs the quick
    `pit run` path (snakecli.entry) ~13 ms it otherwise never needs."""
    from .render import print_error

    print_error(exc, debug=debug)


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that pools shut down gracefully."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def run_script(script: Path | None, args: list[str], *, pools: list[str],
               config: Path | None, wait: bool, debug: bool, module: str | None = None,
               forward_workers: bool = True) -> int:
    """Run ``script``, or with ``module`` that module (as python -m: found from the current
    directory), with the pools up; the exit code `pit run` ends with. ``forward_workers``:
    the workers' output goes to our stderr, prefixed."""
    from runtime.pool import warm_zygote

    warm_zygote.prestart()  # the fork server imports beside the host's imports below
    from runtime.config import load_config
    from runtime.pool.current import set_current_pools
    from runtime.pool.sync_pool import Pools

    if module is not None:
        problem = _missing_module(module)
        if problem:
            _print_error(ModuleNotFoundError(problem))
            return 2
        home = Path.cwd()
    elif script is None or not script.is_file():
        _print_error(FileNotFoundError(f"script {str(script)!r} does not exist"))
        return 2
    else:
        script = script.resolve()
        home = script.parent
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    running = None
    forward: _Forwarder | None = None
    try:
        try:
            cfg = load_config(config)
            log.info("config %s; pools %s", cfg.path or "(defaults)", ", ".join(cfg.pools))
            running = Pools(cfg, only=pools or None, python_path=[str(home)])
            # Before start: a worker's start-up output shows too. Not when pit.worker's debug
            # log already prints every line (--log-level worker=debug).
            if forward_workers and not logger("worker").isEnabledFor(logging.DEBUG):
                forward = _Forwarder()
                running.instance.output.subscribe(forward)
            started = time.monotonic()
            running.start(wait=wait)
            log.info("pools started in %.2f s; running %s", time.monotonic() - started,
                     module or script)
        except PitError as exc:
            _print_error(exc, debug=debug)
            return EXIT_CODES.get(exc.category, 1)
        for name, failure in running.failed.items():
            from . import render

            render.print_error(failure, debug=debug)
            render.err_console.print(f"[yellow]warning[/]: pool {render.escape(repr(name))} did "
                                     "not start; calls to it raise pool_not_ready. The other "
                                     "pools run.")
        set_current_pools(running)
        # What is loaded now is pit's (grpc, protobuf, the pools): the garbage collector need
        # not walk it again. The interpreter's exit took ~37 ms, mostly its collections over
        # that heap, ~9 ms with it frozen; the script's own objects are collected as ever.
        gc.freeze()
        return _run_main(script, args, module=module, home=home)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except _Terminated:
        return EXIT_TERMINATED
    finally:
        # The close is under way (or about to be): a second SIGTERM (`pit stop` twice, a kill
        # during the drain) must not raise in it and leave the pools half closed.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        set_current_pools(None)
        if running is not None:
            try:
                running.close()
            except KeyboardInterrupt:
                running.close(grace=0)
        if forward is not None:
            forward.close()  # what the workers said up to their end, before we exit
        signal.signal(signal.SIGTERM, previous)


class _Forwarder:
    """Workers' output lines to our stderr, prefixed, as Ray prints its actors'. The pools'
    loop only queues a line (subscribers run there: a stderr nobody reads must not stall
    every call); a thread of its own writes them, flushing when it has caught up."""

    CLOSE_WAIT_S = 2.0

    def __init__(self) -> None:
        self._lines: queue.SimpleQueue[OutputLine | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="pit-forward", daemon=True)
        self._thread.start()

    def __call__(self, line: OutputLine) -> None:
        self._lines.put(line)

    def _write(self) -> None:
        while (line := self._lines.get()) is not None:
            try:
                sys.stderr.write(f"{line.prefix} {line.text}\n")
                if self._lines.empty():
                    sys.stderr.flush()
            except (OSError, ValueError):  # stderr closed: the script's business, not ours
                pass

    def close(self) -> None:
        """Write what is queued (at most CLOSE_WAIT_S: a stderr that blocks does not hold
        the exit), then stop."""
        self._lines.put(None)
        self._thread.join(self.CLOSE_WAIT_S)


def _missing_module(module: str) -> str:
    """Why python -m ``module`` could not run it ("" when it can), found as python -m finds
    it: from the current directory first."""
    sys.path.insert(0, os.getcwd())
    try:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None and \
                importlib.util.find_spec(f"{module}.__main__") is None:
            return (f"{module!r} is a package with no __main__ module, so it cannot be run: "
                    f"name a module in it (pit run -m {module}.main) or add a __main__.py "
                    "to it")
    except (ImportError, ValueError) as exc:
        return f"module {module!r} cannot be found: {exc}"
    finally:
        sys.path.pop(0)
    if spec is None:
        return (f"no module named {module!r} (looked in the current directory and on "
                "sys.path)")
    return ""


def _run_main(script: Path | None, args: list[str], *, module: str | None, home: Path) -> int:
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script or module), *args]
    sys.path.insert(0, str(home))
    try:
        if module is not None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(str(script), run_name="__main__")
        return 0
    except SystemExit as exc:
        return _exit_code(exc.code)
    except (KeyboardInterrupt, _Terminated):
        raise
    except BaseException:  # noqa: BLE001 - the script's error, reported like python would
        etype, value, tb = sys.exc_info()
        # Drop pit's and runpy's frames so the traceback starts in the user's code.
        start = tb
        while start is not None and start.tb_frame.f_code.co_filename in _OWN_FILES:
            start = start.tb_next
        traceback.print_exception(etype, value, start or tb)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


_OWN_FILES = frozenset({__file__, runpy.run_path.__code__.co_filename})


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
