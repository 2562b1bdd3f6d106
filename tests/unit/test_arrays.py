"""DLPack arrays of other frameworks (`arrays.framed` / `rebuild`), without the frameworks."""

from __future__ import annotations

import sys
import types

import pytest

from runtime.protocol import arrays

np = pytest.importorskip("numpy")


class Foreign:
    """An array class of a framework called `fakefw.core` (a torch stand-in)."""

    __module__ = "fakefw.core"

    def __init__(self, data: object, device: tuple[int, int] = (1, 0)) -> None:
        self.data, self.device = np.asarray(data), device

    def __dlpack__(self, **kw: object) -> object:
        return self.data.__dlpack__(**kw)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device


def test_a_foreign_array_round_trips_through_raw_bytes() -> None:
    f = arrays.framed(Foreign(np.arange(6.0).reshape(2, 3)))
    assert f is not None and f.framework == "fakefw.core" and f.nbytes == 48
    data, layout = arrays.to_raw(f)
    back = arrays.from_raw(bytes(data), 0, layout)
    # the framework is not loaded here: a NumPy array, nothing imported on the peer's say-so
    assert isinstance(back, np.ndarray) and back.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert "fakefw" not in sys.modules and "fakefw.core" not in sys.modules


def test_a_loaded_framework_rebuilds_from_its_package() -> None:
    pkg = types.ModuleType("fakefw")
    pkg.from_dlpack = lambda x: ("rebuilt", np.from_dlpack(x).tolist())  # type: ignore
    sys.modules["fakefw"] = pkg
    try:
        assert arrays.rebuild(np.arange(2.0), "fakefw.core") == ("rebuilt", [0.0, 1.0])
    finally:
        del sys.modules["fakefw"]


def test_numpy_bytes_and_gpu_arrays() -> None:
    assert arrays.framed(np.zeros(2)) is None and arrays.framed(b"x") is None
    assert arrays.framed({"a": 1}) is None
    with pytest.raises(ValueError, match="fakefw.core.Foreign on rocm:1 cannot be sent"):
        arrays.framed(Foreign([1.0], device=(10, 1)))


class OnDevice(Foreign):
    """A device array whose framework moves it by the array API's ``to_device``."""

    __module__ = "fakefw.core"

    def to_device(self, device: str) -> Foreign:
        assert device == "cpu"
        return Foreign(self.data.copy())


def test_device_copy_moves_a_gpu_array_to_the_cpu_by_its_frameworks_way() -> None:
    f = arrays.framed(OnDevice([1.0, 2.0], device=(2, 0)), device_copy=True)
    assert f is not None and f.framework == "fakefw.core" and f.array.tolist() == [1.0, 2.0]


def test_device_copy_names_the_array_it_cannot_move() -> None:
    with pytest.raises(ValueError, match=r"Foreign on cuda:1 cannot be copied to the CPU"):
        arrays.framed(Foreign([1.0], device=(2, 1)), device_copy=True)
