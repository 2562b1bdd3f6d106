"""What killed a worker: exit code, signal and likely cause, from evidence the host can read.

Pure functions (tests feed them recorded outputs). Causes:

    oom        SIGKILL while the cgroup's oom_kill counter went up
    segfault   SIGSEGV          abort      SIGABRT          bus_error  SIGBUS
    gpu        CUDA/ROCm error text in the worker's last output
    killed     SIGKILL without OOM evidence (someone killed it)
    terminated SIGTERM / SIGINT from outside
    exit       it exited with a code (os._exit, sys.exit in a thread, ...)
    hung       the host killed it after missed heartbeats
    cancel_timeout  the host killed it: a cancelled (timed-out) call did not stop in time
    node_lost, actor_died  a Ray-placed worker's node, or its actor's process, died (Ray's
               word: `ray_cluster.death_cause`); oom too when Ray's memory monitor killed it

Only causes a call can plausibly have provoked count towards poison calls and the circuit
breaker (`ATTRIBUTABLE`): a worker killed from outside is nobody's call's fault.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

TAIL_BYTES = 4096
ATTRIBUTABLE = frozenset({"oom", "segfault", "abort", "bus_error", "gpu", "exit", "hung",
                          "cancel_timeout"})
_GPU = re.compile(r"CUDA error|cudaError|CUBLAS_STATUS|CUDNN_STATUS|NCCL error|"
                  r"CUDA out of memory|hipError|HIP error|ROCm", re.I)
_CGROUP_EVENTS = (Path("/sys/fs/cgroup/memory.events"),)


def oom_kill_count(paths: tuple[Path, ...] = _CGROUP_EVENTS) -> int | None:
    """The cgroup v2 ``oom_kill`` counter, or None where it is not readable."""
    for path in paths:
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def classify(code: int | None, tail: str, *, oom_before: int | None = None,
             oom_after: int | None = None, hung: bool = False, forced: str = "") -> str:
    """The likely cause; ``forced`` (the host's own reason for killing it) wins."""
    if forced:
        return forced
    if hung:
        return "hung"
    if _GPU.search(tail):
        return "gpu"
    if code is None:
        return "killed"
    if code >= 0:
        return "exit"
    sig = -code
    if sig == signal.SIGKILL:
        if oom_before is not None and oom_after is not None and oom_after > oom_before:
            return "oom"
        return "killed"
    by_signal = {int(signal.SIGSEGV): "segfault", int(signal.SIGABRT): "abort",
                 int(signal.SIGBUS): "bus_error", int(signal.SIGTERM): "terminated",
                 int(signal.SIGINT): "terminated"}
    return by_signal.get(sig, "killed")


def describe(code: int | None, cause: str) -> str:
    """``exited with code 3`` / ``was killed by SIGSEGV (-11): segfault``."""
    if code is None:  # a Ray actor that died: Ray's word for why
        ray_notes = {"node_lost": "its Ray node was lost", "oom": "out of memory (Ray)",
                     "actor_died": "its Ray actor's process died"}
        return f"is gone: {ray_notes[cause]}" if cause in ray_notes else "is gone"
    if code >= 0:
        text = f"exited with code {code}"
    else:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        text = f"was killed by {name} ({code})"
    notes = {"oom": "out of memory (the kernel's OOM killer)", "segfault": "segfault",
             "abort": "abort", "bus_error": "bus error", "gpu": "GPU error in its output"}
    return f"{text}: {notes[cause]}" if cause in notes else text


def tail_text(lines: list[str], limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a worker's output lines."""
    text = "\n".join(lines)
    data = text.encode("utf-8", "replace")
    return data[-limit:].decode("utf-8", "replace") if len(data) > limit else text
