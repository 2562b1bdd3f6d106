"""Accelerators: NVIDIA via NVML (nvidia-ml-py), AMD via `rocm-smi --json`, Apple MPS.

Each probe returns an `Accelerators` result; absence (no library, no driver, no device, no
tool) is a result with a reason, never an exception. The parsers take the NVML module or the
rocm-smi output as arguments, so tests feed them recorded values.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Gpu:
    kind: str  # "cuda" | "rocm" | "mps"
    index: int
    name: str
    uuid: str = ""
    memory_total_mb: int | None = None
    memory_free_mb: int | None = None
    memory_used_mb: int | None = None
    utilization_pct: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None


@dataclass(frozen=True, slots=True)
class Accelerators:
    kind: str
    available: bool
    reason: str  # why not, or what was found
    driver: str = ""
    runtime: str = ""  # CUDA / ROCm version
    devices: tuple[Gpu, ...] = field(default_factory=tuple)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - one unsupported query must not hide the device
        return None


# Linux: without one of these there is no NVIDIA driver to ask (/dev/dxg: WSL2's GPU). Looking
# first spares every pool start the ~60 ms import of pynvml on machines without one.
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg")


def nvidia(nvml: Any = None) -> Accelerators:
    """Query NVML; ``nvml`` is the pynvml module (or a recorded stand-in in tests)."""
    if nvml is None and sys.platform.startswith("linux") and not any(
            os.path.exists(p) for p in NVIDIA_DRIVER_PATHS):
        return Accelerators("cuda", False, "no NVIDIA driver (none of "
                            f"{', '.join(NVIDIA_DRIVER_PATHS)} exists)")
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return Accelerators("cuda", False, "nvidia-ml-py (pynvml) is not installed")
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no driver / no GPU
        return Accelerators("cuda", False, f"NVML unavailable: {exc}")
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = _try(nvml.nvmlSystemGetCudaDriverVersion_v2) or _try(
            nvml.nvmlSystemGetCudaDriverVersion)
        cuda_text = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
        devices = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = _try(nvml.nvmlDeviceGetMemoryInfo, h)
            util = _try(nvml.nvmlDeviceGetUtilizationRates, h)
            power = _try(nvml.nvmlDeviceGetPowerUsage, h)  # milliwatts
            devices.append(Gpu(
                "cuda", i, _text(nvml.nvmlDeviceGetName(h)),
                uuid=_text(_try(nvml.nvmlDeviceGetUUID, h) or ""),
                memory_total_mb=mem.total // 2**20 if mem else None,
                memory_free_mb=mem.free // 2**20 if mem else None,
                memory_used_mb=mem.used // 2**20 if mem else None,
                utilization_pct=util.gpu if util else None,
                temperature_c=_try(nvml.nvmlDeviceGetTemperature, h, 0),  # 0 = GPU sensor
                power_w=power / 1000 if power is not None else None))
    finally:
        _try(nvml.nvmlShutdown)
    if not devices:
        return Accelerators("cuda", False, "NVML found no device", driver, cuda_text)
    return Accelerators("cuda", True, f"{len(devices)} device(s)", driver, cuda_text,
                        tuple(devices))


ROCM_ARGV = ["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showuse",
             "--showtemp", "--showdriverversion", "--json"]


def parse_rocm_smi(text: str) -> Accelerators:
    """Parse `rocm-smi ... --json` output (keys like "card0")."""
    try:
        data = json.loads(text)
    except ValueError:
        return Accelerators("rocm", False, "rocm-smi printed no JSON")
    driver = _text(data.get("system", {}).get("Driver version", ""))
    devices = []
    for key in sorted(k for k in data if k.startswith("card")):
        card = data[key]
        total = _num(card, "VRAM Total Memory (B)")
        used = _num(card, "VRAM Total Used Memory (B)")
        devices.append(Gpu(
            "rocm", int(key[4:]), card.get("Card series") or card.get("Card model", key),
            uuid=str(card.get("Unique ID", "")),
            memory_total_mb=total // 2**20 if total is not None else None,
            memory_used_mb=used // 2**20 if used is not None else None,
            memory_free_mb=(total - used) // 2**20 if total is not None and used is not None
            else None,
            utilization_pct=_num(card, "GPU use (%)"),
            temperature_c=_num(card, "Temperature (Sensor edge) (C)",
                               "Temperature (Sensor junction) (C)")))
    if not devices:
        return Accelerators("rocm", False, "rocm-smi listed no card", driver)
    return Accelerators("rocm", True, f"{len(devices)} device(s)", driver, "", tuple(devices))


def _num(card: dict[str, Any], *names: str) -> int | None:
    for n in names:
        if n in card:
            try:
                return int(float(card[n]))
            except (TypeError, ValueError):
                return None
    return None


def rocm() -> Accelerators:
    if shutil.which("rocm-smi") is None:
        return Accelerators("rocm", False, "rocm-smi is not on PATH")
    try:
        out = subprocess.run(ROCM_ARGV, capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Accelerators("rocm", False, f"rocm-smi failed: {exc}")
    return parse_rocm_smi(out.stdout)


def mps() -> Accelerators:
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return Accelerators("mps", False, "Apple MPS needs macOS on Apple silicon")
    return Accelerators("mps", True, "Apple silicon GPU (Metal)",
                        devices=(Gpu("mps", 0, "Apple GPU"),))
