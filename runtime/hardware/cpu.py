"""CPU facts: model, vendor, arch, cores, usable CPUs (affinity, cgroup quota), SIMD flags."""

from __future__ import annotations

import functools
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import psutil

FLAGS = ("sse4_2", "avx", "avx2", "avx512f", "neon", "asimd")


@dataclass(frozen=True, slots=True)
class CpuInfo:
    model: str
    vendor: str
    arch: str
    physical_cores: int | None
    logical_cores: int
    usable_cpus: int
    usable_reason: str
    flags: tuple[str, ...]


def cgroup_cpu_limit(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> float | None:
    """CPUs allowed by a cgroup v2 quota ("max 100000" -> None, "200000 100000" -> 2.0)."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """Detected once per process (py-cpuinfo takes a moment)."""
    try:
        import cpuinfo

        raw = cpuinfo.get_cpu_info()
    except Exception:  # noqa: BLE001 - detection never raises for absence
        raw = {}
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = logical
    quota = cgroup_cpu_limit()
    usable, reason = logical, "all logical CPUs"
    if affinity < usable:
        usable, reason = affinity, "CPU affinity mask"
    if quota is not None and math.ceil(quota) < usable:
        usable, reason = max(1, math.ceil(quota)), f"cgroup quota ({quota:g} CPUs)"
    flags = tuple(f for f in FLAGS if f in set(raw.get("flags", ())))
    return CpuInfo(
        model=raw.get("brand_raw") or platform.processor() or "unknown",
        vendor=raw.get("vendor_id_raw", "unknown"),
        arch=raw.get("arch_string_raw") or platform.machine(),
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=logical, usable_cpus=usable, usable_reason=reason, flags=flags)
