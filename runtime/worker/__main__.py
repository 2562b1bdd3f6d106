import os
import signal
import sys


def _stop_early(signum: int, frame: object) -> None:
    os._exit(0)  # told to stop before serving: nothing to finish, nothing to flush


# Until `main` installs the real handlers: a stop while the worker still imports ends it
# cleanly (exit 0), as it would once serving, instead of a KeyboardInterrupt traceback.
signal.signal(signal.SIGTERM, _stop_early)
# A Snakepit host (which passes --port: `snakepit_launch.launch`'s rule) stops its workers with
# SIGINT too.
if any(a == "--port" or a.startswith("--port=") for a in sys.argv[1:]):
    signal.signal(signal.SIGINT, _stop_early)

from .main import main, parse_args  # noqa: E402 - after the signals, on purpose

code = 1
try:
    if "--zygote" in sys.argv[1:]:  # the pool's fork server (runtime/worker/zygote.py)
        from .zygote import serve as serve_forks

        code = serve_forks(parse_args())
    else:
        code = main()
except SystemExit as exc:  # argparse refusing the command line: its code (2), not ours
    code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
finally:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the host (reading our output) may be gone
            pass
    # Exit without waiting for gRPC's pool threads: a tool still running after the stop grace
    # must not keep the process alive (the host would have to SIGKILL it).
    os._exit(code)
