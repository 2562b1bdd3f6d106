"""`pit run`: start pools, run a script as __main__ in this process, stop the pools."""

from __future__ import annotations

import logging
import runpy
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from runtime.errors import PitError
from runtime.logs import logger

from . import render
from .exit_codes import EXIT_CODES
from .render import print_error

if TYPE_CHECKING:
    from runtime.pool.host.worker_output import OutputLine

log = logger("cli")

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that pools shut down gracefully."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def run_script(script: Path, args: list[str], *, pools: list[str], config: Path | None,
               wait: bool, debug: bool, forward_workers: bool = True) -> int:
    from runtime.config import load_config
    from runtime.pool.current import set_current_pools
    from runtime.pool.sync_pool import Pools

    if not script.is_file():
        print_error(FileNotFoundError(f"script {str(script)!r} does not exist"))
        return 2
    script = script.resolve()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    running = None
    try:
        try:
            cfg = load_config(config)
            log.info("config %s; pools %s", cfg.path or "(defaults)", ", ".join(cfg.pools))
            running = Pools(cfg, only=pools or None, python_path=[str(script.parent)])
            # Before start: a worker's start-up output shows too. Not when pit.worker's debug
            # log already prints every line (--log-level worker=debug).
            if forward_workers and not logger("worker").isEnabledFor(logging.DEBUG):
                running.instance.output.subscribe(_forward)
            started = time.monotonic()
            running.start(wait=wait)
            log.info("pools started in %.2f s; running %s", time.monotonic() - started, script)
        except PitError as exc:
            print_error(exc, debug=debug)
            return EXIT_CODES.get(exc.category, 1)
        for name, failure in running.failed.items():
            print_error(failure, debug=debug)
            render.err_console.print(f"[yellow]warning[/]: pool {render.escape(repr(name))} did "
                                     "not start; calls to it raise pool_not_ready. The other "
                                     "pools run.")
        set_current_pools(running)
        return _run_main(script, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except _Terminated:
        return EXIT_TERMINATED
    finally:
        set_current_pools(None)
        if running is not None:
            try:
                running.close()
            except KeyboardInterrupt:
                running.close(grace=0)
        signal.signal(signal.SIGTERM, previous)


def _forward(line: OutputLine) -> None:
    """A worker's output line to our stderr, as Ray prints its actors' (on the pools' loop
    thread, the moment the host reads it)."""
    try:
        sys.stderr.write(f"{line.prefix} {line.text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: the script's business, not the pool's
        pass


def _run_main(script: Path, args: list[str]) -> int:
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
        return 0
    except SystemExit as exc:
        return _exit_code(exc.code)
    except (KeyboardInterrupt, _Terminated):
        raise
    except BaseException:  # noqa: BLE001 - the script's error, reported like python would
        etype, value, tb = sys.exc_info()
        # Drop pit's own frames so the traceback starts in the user's script.
        start = tb
        while start is not None and start.tb_frame.f_code.co_filename != str(script):
            start = start.tb_next
        traceback.print_exception(etype, value, start or tb)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
