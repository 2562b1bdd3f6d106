"""Hardware detection (cached per process) and device selection for pools."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .cpu import CpuInfo, cpu_info
from .gpus import Accelerators, Gpu, mps, nvidia, rocm

__all__ = ["Accelerators", "CpuInfo", "DeviceChoice", "Gpu", "Hardware", "accelerators",
           "detect", "device_env", "resolve_device", "select_device"]


@dataclass(frozen=True, slots=True)
class Hardware:
    cpu: CpuInfo
    accelerators: tuple[Accelerators, ...]


@functools.lru_cache(maxsize=1)
def accelerators() -> tuple[Accelerators, ...]:
    """GPUs of every kind (cached; fast: no CPU probing)."""
    return (nvidia(), rocm(), mps())


def detect() -> Hardware:
    return Hardware(cpu_info(), accelerators())


@dataclass(frozen=True, slots=True)
class DeviceChoice:
    kind: str  # "cuda" | "rocm" | "mps" | "cpu"
    index: int | None
    reason: str

    @property
    def name(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def select_device(prefer: tuple[str, ...] = ("cuda", "rocm", "mps", "cpu"),
                  min_memory_mb: int | None = None,
                  hardware: Hardware | None = None) -> DeviceChoice:
    """The first preferred kind with a device (with enough free memory); cpu as fallback."""
    accs = hardware.accelerators if hardware else accelerators()
    skipped: list[str] = []
    for kind in prefer:
        if kind == "cpu":
            return DeviceChoice("cpu", None, "; ".join(skipped) or "cpu preferred")
        acc = next((a for a in accs if a.kind == kind), None)
        if acc is None or not acc.available:
            skipped.append(f"{kind}: {acc.reason if acc else 'not probed'}")
            continue
        for gpu in acc.devices:
            if min_memory_mb is None or (gpu.memory_free_mb or 0) >= min_memory_mb:
                return DeviceChoice(kind, gpu.index, f"{gpu.name} ({acc.reason})")
        skipped.append(f"{kind}: no device with {min_memory_mb} MiB free")
    return DeviceChoice("cpu", None, "; ".join(skipped) + "; falling back to cpu")


def resolve_device(setting: str, hardware: Hardware | None = None) -> DeviceChoice:
    """A pool's ``device`` setting ("auto", "cpu", "cuda", "cuda:1", ...) -> a choice.

    Raises ValueError when a named device does not exist."""
    if setting == "auto":
        return select_device(hardware=hardware)
    if setting == "cpu":
        return DeviceChoice("cpu", None, "configured")
    kind, _, index = setting.partition(":")
    accs = hardware.accelerators if hardware else accelerators()
    acc = next((a for a in accs if a.kind == kind), None)
    if acc is None or not acc.available:
        raise ValueError(f"device = {setting!r}, but {kind}: "
                         f"{acc.reason if acc else 'unknown kind'}")
    wanted = int(index) if index else acc.devices[0].index
    if wanted not in {g.index for g in acc.devices}:
        raise ValueError(f"device = {setting!r}, but only {kind} devices "
                         f"{[g.index for g in acc.devices]} exist")
    return DeviceChoice(kind, wanted, "configured")


def device_env(choice: DeviceChoice, explicit: bool) -> dict[str, str]:
    """Environment a pool's workers get: PIT_DEVICE always; a configured (not "auto")
    device also limits what CUDA/HIP may see."""
    env = {"PIT_DEVICE": choice.name}
    if not explicit:
        return env
    if choice.kind == "cuda" and choice.index is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(choice.index)
    elif choice.kind == "rocm" and choice.index is not None:
        env["HIP_VISIBLE_DEVICES"] = str(choice.index)
    elif choice.kind == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env
