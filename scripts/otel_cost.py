"""What OpenTelemetry costs a serial no-op call: p50 of N serial ``pool.execute("ping")``
with OTel absent (not importable), present but off (imported, no tracer provider set) and on
(an SDK provider exporting to memory in batches), each run in a fresh process, the modes
taking turns ROUNDS times so that a busy machine slows them alike.

    .venv/bin/python scripts/otel_cost.py [--calls 5000] [--rounds 3] [--modes absent,off]

Prints one line per mode (median of the rounds' p50s, in µs) and the ratio to "absent".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("absent", "off", "on")

CHILD = r"""
import importlib.abc, json, statistics, sys, time
mode, calls = sys.argv[1], int(sys.argv[2])
if mode == "absent":
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"{name} is blocked (OTel absent)")
            return None
    sys.meta_path.insert(0, Blocker())
elif mode == "off":
    import opentelemetry.trace  # imported (by some library, say), no provider set
else:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(provider)
from runtime import Pool
with Pool(size=1) as pool:
    for _ in range(500):
        pool.execute("ping")
    took = []
    for _ in range(calls):
        t0 = time.perf_counter()
        pool.execute("ping")
        took.append(time.perf_counter() - t0)
print(json.dumps({"p50_us": statistics.median(took) * 1e6,
                  "otel_loaded": "opentelemetry.trace" in sys.modules}))
"""


def run(mode: str, calls: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(calls)], cwd=ROOT,
                         check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["otel_loaded"] == (mode != "absent"), result
    return float(result["p50_us"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES),
                        help="which of absent,off,on to run (absent always runs: the base)")
    args = parser.parse_args()
    modes = ["absent", *(m for m in MODES[1:] if m in args.modes.split(","))]
    p50s: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            p50s[mode].append(run(mode, args.calls))
    base = statistics.median(p50s["absent"])
    for mode in modes:
        mid = statistics.median(p50s[mode])
        rounds = ", ".join(f"{v:.1f}" for v in p50s[mode])
        print(f"{mode:>6}: p50 {mid:7.1f} µs  ({mid / base:.3f}x absent; rounds: {rounds})")


if __name__ == "__main__":
    main()
