"""Hardware parsers against recorded outputs (there is no GPU on the test machine)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from runtime.hardware import Hardware, device_env, gpus, resolve_device, select_device
from runtime.hardware.cpu import CpuInfo, cgroup_cpu_limit
from runtime.hardware.gpus import nvidia, parse_rocm_smi

FIXTURES = Path(__file__).parent.parent / "fixtures"
CPU = CpuInfo("x", "y", "x86_64", 2, 2, 2, "all", ())


class RecordedNvml:
    """NVML answers as nvidia-ml-py returns them (bytes, milliwatts, version ints, bytes or str
    names), for two H100-like devices. Written by hand: no GPU was available to record one."""

    devices = [
        dict(name=b"NVIDIA H100 80GB HBM3", uuid="GPU-5d4f7a0e-6c1b-4f0e-9a3e-2b7d1c9e8f10",
             mem=(85520809984, 84915355648, 605454336), util=0, temp=31, power=69870),
        dict(name="NVIDIA H100 80GB HBM3", uuid="GPU-8a2c6b1d-3e4f-4a5b-8c9d-0e1f2a3b4c5d",
             mem=(85520809984, 40802189312, 44718620672), util=87, temp=58, power=412330),
    ]

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str: return "550.90.07"
    def nvmlSystemGetCudaDriverVersion_v2(self) -> int: return 12040
    def nvmlDeviceGetCount(self) -> int: return len(self.devices)
    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict: return self.devices[i]
    def nvmlDeviceGetName(self, h: dict) -> object: return h["name"]
    def nvmlDeviceGetUUID(self, h: dict) -> str: return h["uuid"]

    def nvmlDeviceGetMemoryInfo(self, h: dict) -> SimpleNamespace:
        total, free, used = h["mem"]
        return SimpleNamespace(total=total, free=free, used=used)

    def nvmlDeviceGetUtilizationRates(self, h: dict) -> SimpleNamespace:
        return SimpleNamespace(gpu=h["util"], memory=0)

    def nvmlDeviceGetTemperature(self, h: dict, sensor: int) -> int: return h["temp"]
    def nvmlDeviceGetPowerUsage(self, h: dict) -> int: return h["power"]


class BrokenNvml(RecordedNvml):
    def nvmlInit(self) -> None:
        raise RuntimeError("NVML Shared Library Not Found")


def test_nvml_devices_from_recorded_values() -> None:
    acc = nvidia(RecordedNvml())
    assert acc.available and acc.driver == "550.90.07" and acc.runtime == "12.4"
    first, second = acc.devices
    assert first.name == "NVIDIA H100 80GB HBM3" and first.memory_total_mb == 81559
    assert second.memory_free_mb == 38912 and second.utilization_pct == 87
    assert second.temperature_c == 58 and second.power_w == pytest.approx(412.33)


def test_nvml_absence_is_a_result() -> None:
    acc = nvidia(BrokenNvml())
    assert not acc.available and "Shared Library Not Found" in acc.reason


def test_no_nvidia_driver_means_no_nvml_import(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setattr(gpus, "NVIDIA_DRIVER_PATHS", (str(tmp_path / "nvidiactl"),))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # importing it would raise
    acc = nvidia()
    assert not acc.available and "no NVIDIA driver" in acc.reason
    (tmp_path / "nvidiactl").touch()  # a driver: NVML is asked (here: not importable)
    assert "not installed" in nvidia().reason


def test_rocm_smi_json() -> None:
    acc = parse_rocm_smi((FIXTURES / "rocm_smi.json").read_text())
    assert acc.available and acc.driver == "6.7.0"
    assert [g.index for g in acc.devices] == [0, 1]
    assert acc.devices[0].name == "AMD Instinct MI210"
    assert acc.devices[1].memory_free_mb == (68702699520 - 60129542144) // 2**20
    assert acc.devices[1].utilization_pct == 97
    assert not parse_rocm_smi("not json").available


def hw_with_gpus() -> Hardware:
    rocm = parse_rocm_smi((FIXTURES / "rocm_smi.json").read_text())
    return Hardware(CPU, (nvidia(RecordedNvml()), rocm))


def test_select_device_prefers_and_falls_back() -> None:
    hw = hw_with_gpus()
    assert select_device(hardware=hw).name == "cuda:0"
    assert select_device(min_memory_mb=50_000, hardware=hw).name == "cuda:0"
    assert select_device(prefer=("rocm", "cpu"), min_memory_mb=20_000,
                         hardware=hw).name == "rocm:0"
    choice = select_device(min_memory_mb=100_000, hardware=hw)
    assert choice.name == "cpu" and "no device with 100000 MiB free" in choice.reason
    none = Hardware(CPU, (nvidia(BrokenNvml()),))
    assert select_device(hardware=none).name == "cpu"


def test_resolve_device_settings() -> None:
    hw = hw_with_gpus()
    assert resolve_device("cuda:1", hw).name == "cuda:1"
    assert resolve_device("cuda", hw).name == "cuda:0"
    with pytest.raises(ValueError, match=r"only cuda devices \[0, 1\] exist"):
        resolve_device("cuda:5", hw)
    with pytest.raises(ValueError, match="not available|NVML"):
        resolve_device("cuda", Hardware(CPU, (nvidia(BrokenNvml()),)))
    assert device_env(resolve_device("cuda:1", hw), explicit=True) == {
        "PIT_DEVICE": "cuda:1", "CUDA_VISIBLE_DEVICES": "1"}
    assert device_env(resolve_device("auto", hw), explicit=False) == {"PIT_DEVICE": "cuda:0"}


def test_cgroup_cpu_quota(tmp_path: Path) -> None:
    f = tmp_path / "cpu.max"
    f.write_text("150000 100000\n")
    assert cgroup_cpu_limit(f) == 1.5
    f.write_text("max 100000\n")
    assert cgroup_cpu_limit(f) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_hardware_command_json() -> None:
    from typer.testing import CliRunner

    from snakecli.app import app

    result = CliRunner().invoke(app, ["hardware", "--json"])
    data = json.loads(result.output)
    assert result.exit_code == 0 and data["cpu"]["usable_cpus"] >= 1
    assert {a["kind"] for a in data["accelerators"]} == {"cuda", "rocm", "mps"}
