"""How long pit's command line takes to answer, beside references, in fresh processes (issue
20's rows: `import runtime`, `pit --help`, `pit status` with no host running).

Every row is the median of N fresh processes, the commands taking turns run by run (a slow
spell of a shared machine hits all of them alike); wall time and the process's user+sys CPU
time. References: `python -c pass` (the interpreter's own start, part of every Python row),
`import concurrent.futures.process` (ProcessPoolExecutor's import, the peer of `import
runtime`) and `uv --help` (a CLI in Rust). `pit status` runs with a state dir and an instance
index of its own, empty, so that it measures the no-host answer whatever else runs here.
Byte code is written in a first, untimed round (as an installed package has it), even when
PYTHONDONTWRITEBYTECODE is set.

Usage: python scripts/bench_cli.py [-n 20] [--json]   (also a section of scripts/bench.py)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60.0  # one command; a hung one fails the bench instead of stalling it


def commands() -> dict[str, list[str]]:
    """Row label -> argv."""
    py = sys.executable
    pit = Path(py).parent / "pit"
    pit_argv = [str(pit)] if pit.exists() else [py, "-m", "snakecli"]
    sys.path.insert(0, str(ROOT))
    from runtime.envs.uv import find_uv

    return {"python -c pass": [py, "-c", "pass"],
            "import concurrent.futures.process": [py, "-c", "import concurrent.futures.process"],
            "import runtime": [py, "-c", "import runtime"],
            "uv --help": [str(find_uv()), "--help"],
            "pit --help": [*pit_argv, "--help"],
            "pit --version": [*pit_argv, "--version"],  # runs `uv --version` itself
            "pit status (no host)": [*pit_argv, "status"]}


def run(n: int) -> dict[str, dict[str, float]]:
    """{label: {"wall_ms", "cpu_ms"}}: medians of ``n`` fresh processes each."""
    cmds = commands()
    with tempfile.TemporaryDirectory(prefix="pit-bench-cli-") as tmp:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONDONTWRITEBYTECODE", "PIT_LOG_LEVEL", "_PIT_COMPLETE")}
        env.update(PIT_STATE_DIR=str(Path(tmp) / "state"), PIT_INDEX_DIR=str(Path(tmp) / "index"),
                   NO_COLOR="1")
        env.pop("COLUMNS", None)
        times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in cmds}
        for round_ in range(n + 1):  # round 0 writes byte code and is not counted
            for label, argv in cmds.items():
                wall, cpu = _timed(argv, env, cwd=tmp)
                if round_:
                    times[label][0].append(wall)
                    times[label][1].append(cpu)
    return {label: {"wall_ms": statistics.median(w), "cpu_ms": statistics.median(c)}
            for label, (w, c) in times.items()}


def _timed(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    import time

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL, timeout=TIMEOUT_S, check=False)
    wall = (time.perf_counter() - t) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def print_rows(rows: dict[str, dict[str, float]], n: int) -> None:
    print(f"pit's command line, median of {n} fresh processes (wall / user+sys CPU, ms; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    for label, r in rows.items():
        print(f"  {label:<36} {r['wall_ms']:>7.1f} {r['cpu_ms']:>7.1f}")
    py = rows["python -c pass"]["wall_ms"]
    for label in ("import runtime", "pit --help", "pit status (no host)"):
        print(f"  {label}: {rows[label]['wall_ms'] - py:.1f} ms past the interpreter's start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="fresh processes per row (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    ns = parser.parse_args()
    rows = run(ns.n)
    if ns.json:
        print(json.dumps(rows, indent=2))
    else:
        print_rows(rows, ns.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
