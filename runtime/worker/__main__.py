import os
import sys

from .main import main, parse_args

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
