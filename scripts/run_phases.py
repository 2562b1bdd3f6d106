"""Where `pit run` of a one-call script spends its time, phase by phase (issue 20).

A fresh process takes the steps `snakecli.run_cmd.run_script` takes for `pit run one.py`
(the quick entry's path: no Typer), in the same order, with a timestamp after each: the
interpreter's start, the warm fork server's prestart, the host's imports, the host instance,
the pool's start (fork server ready, workers forked and connected), the script (`import
runtime`, one `ping`), the close, and the interpreter's exit. Each phase is the median of N
runs; beside them, the real `pit run one.py` and a ProcessPoolExecutor script doing the same,
wall time, taking turns run by run. Run from a directory without pit.toml (the default pool:
the demo adapter, 2 workers); byte code is written in a first, untimed round.

Usage: python scripts/run_phases.py [-n 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "import runtime\nruntime.execute('ping')\n"
PPE_SCRIPT = ("import concurrent.futures\n"
              "if __name__ == '__main__':\n"
              "    with concurrent.futures.ProcessPoolExecutor(2) as ex:\n"
              "        ex.submit(abs, 1).result()\n")
# The steps of run_cmd.run_script, each followed by a mark (wall clock, shared with the parent).
PHASES = f"""
import sys, time
marks = [("interpreter start", time.time())]
sys.path.insert(0, {str(ROOT)!r})
from runtime.pool import warm_zygote
warm_zygote.prestart()
marks.append(("fork server prestarted", time.time()))
from runtime.config import load_config
from runtime.pool.current import set_current_pools
from runtime.pool.sync_pool import Pools
marks.append(("host imports (grpc, protobuf, asyncio, pool)", time.time()))
running = Pools(load_config(None), python_path=[sys.argv[1]])
marks.append(("host instance (bridge server, registry, index)", time.time()))
running.start(wait=True)
marks.append(("pool ready (fork server, 2 workers connected)", time.time()))
set_current_pools(running)
import gc
gc.freeze()
import runtime
runtime.execute("ping")
marks.append(("the script: import runtime, one ping", time.time()))
running.close()
marks.append(("close (drain, workers, fork server, instance)", time.time()))
print(repr(marks))
"""


def one_phases(folder: Path) -> list[tuple[str, float]]:
    started = time.time()
    out = subprocess.run([sys.executable, "-c", PHASES, str(folder)], cwd=folder, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    ended = time.time()
    marks = eval(out.strip().splitlines()[-1])  # noqa: S307 - our own child's repr
    times = [started, *(t for _, t in marks), ended]
    names = [name for name, _ in marks] + ["interpreter exit"]
    return [(name, (b - a) * 1000) for name, a, b in zip(names, times[:-1], times[1:], strict=True)]


def wall(argv: list[str], folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=folder, check=True, capture_output=True, timeout=120)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="runs (median)")
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    env_pit = Path(sys.executable).parent / "pit"
    pit = [str(env_pit)] if env_pit.exists() else [sys.executable, "-m", "snakecli"]
    with tempfile.TemporaryDirectory(prefix="pit-phases-") as tmp:
        folder = Path(tmp)
        (folder / "one.py").write_text(SCRIPT)
        (folder / "ppe.py").write_text(PPE_SCRIPT)
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # round 0 writes the byte code
        phases: dict[str, list[float]] = {}
        rows: dict[str, list[float]] = {"pit run one.py": [], "ProcessPoolExecutor script": []}
        for i in range(ns.n + 1):
            got = one_phases(folder)
            run_ms = wall([*pit, "run", "one.py"], folder)
            ppe_ms = wall([sys.executable, "ppe.py"], folder)
            if i == 0:
                continue
            for name, ms in got:
                phases.setdefault(name, []).append(ms)
            rows["pit run one.py"].append(run_ms)
            rows["ProcessPoolExecutor script"].append(ppe_ms)
    medians = {name: statistics.median(v) for name, v in phases.items()}
    walls = {name: statistics.median(v) for name, v in rows.items()}
    if ns.json:
        print(json.dumps({"phases_ms": medians, "wall_ms": walls, "runs": ns.n}))
        return 0
    print(f"`pit run one.py` phase by phase, median of {ns.n} runs (ms; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    for name, ms in medians.items():
        print(f"  {name:<50} {ms:7.1f}")
    print(f"  {'sum of the medians':<50} {sum(medians.values()):7.1f}")
    for name, ms in walls.items():
        print(f"  {name + ', wall':<50} {ms:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
