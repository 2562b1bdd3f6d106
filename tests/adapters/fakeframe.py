"""A stand-in array framework for the DLPack tests (torch is not a test dependency): its
`Tensor` keeps a NumPy array and speaks DLPack, `from_dlpack` rebuilds one, as torch's does."""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.worker import Adapter, tool


class Tensor:
    def __init__(self, data: Any, device: tuple[int, int] = (1, 0)) -> None:
        self.data = np.asarray(data)
        self.device = device

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.data.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device

    def cpu(self) -> Tensor:
        """A copy in CPU memory, as torch's ``Tensor.cpu()``."""
        return Tensor(self.data.copy())


def from_dlpack(x: Any) -> Tensor:
    return Tensor(np.from_dlpack(x))


class TensorTools(Adapter):
    @tool
    def double(self, t: Any) -> Any:
        """Gets a Tensor (this module is loaded here), returns one."""
        assert isinstance(t, Tensor), type(t)
        return Tensor(t.data * 2)

    @tool
    def on_gpu(self) -> Any:
        return Tensor(np.zeros(3), device=(2, 0))
