"""NumPy arrays as raw bytes plus ``{"dtype", "shape", "order"}`` (pit extension).

Arrays of RAW_MIN_BYTES (10 KB, Snakepit's binary threshold) or more travel raw instead of as
JSON lists: in the message, or through shared memory where both sides can map it once they
reach the pool's ``shm_threshold_kb``. Request metadata ``pit_np:<param>`` and response
metadata ``pit_np_result`` carry the layout. A result comes back raw only when the request
says ``pit_np`` (the caller has NumPy; its value is the size from which to); smaller arrays
keep travelling as JSON lists, and arrive as lists.
C- and Fortran-ordered arrays keep their order; other strided views are sent as a C-ordered
copy (same values, new strides). The receiver gets its own writable copy, except a host
reading a result with ``shm_views`` (runtime.pool.shm): a view over the arena.
NumPy is never imported here unless an array is actually sent or received.

Any other array with ``__dlpack__`` (torch, JAX, CuPy tensors on the CPU) travels the same way
(`Framed`: viewed as a NumPy array without a copy, its framework named in the layout) and is
rebuilt on the other side with that framework's ``from_dlpack`` when that framework is already
loaded there (nothing is imported because a peer named it), else handed over as the NumPy
array. An array on another device (a GPU) is refused with an error naming the device, unless
the pool says ``allow_device_copy = true``: then it is copied to the CPU first (`to_cpu`), and
arrives as a CPU array of its framework.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from . import arrow

PARAM = "pit_np:"
RESULT = "pit_np_result"
WANTED = "pit_np"
RAW_MIN_BYTES = 10 * 1024  # arrays this large travel as raw bytes, not as JSON lists


def is_array(value: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray) and not value.dtype.hasobject


DLPACK_CPU = 1  # kDLCPU in __dlpack_device__()
DEVICES = {1: "cpu", 2: "cuda", 3: "cuda-host", 4: "opencl", 7: "vulkan", 8: "metal",
           9: "vpi", 10: "rocm", 13: "cuda-managed", 14: "oneapi"}
# where a framework keeps its from_dlpack, when not in the module its arrays' class names
FROM_DLPACK = {"jax": "jax.dlpack", "jaxlib": "jax.dlpack"}


@dataclass(frozen=True, slots=True)
class Framed:
    """A DLPack array of another framework, viewed as a NumPy ``array``."""

    array: Any
    framework: str

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)


def framed(value: Any, device_copy: bool = False) -> Framed | None:
    """``value`` as a `Framed` NumPy view when it is a non-NumPy array with ``__dlpack__``
    (None otherwise). One on another device than the CPU is copied to the CPU with
    ``device_copy``, else refused with a ValueError naming the device."""
    if not hasattr(value, "__dlpack__") or isinstance(value, (bytes, bytearray, memoryview)):
        return None
    loaded = sys.modules.get("numpy")
    if loaded is not None and isinstance(value, loaded.ndarray):
        return None
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    device = value.__dlpack_device__() if hasattr(value, "__dlpack_device__") else (1, 0)
    if int(device[0]) != DLPACK_CPU:
        where = f"{DEVICES.get(int(device[0]), device[0])}:{device[1]}"
        if not device_copy:
            raise ValueError(f"a {name} on {where} cannot be sent: only CPU memory travels; "
                             "move it to the CPU first (e.g. tensor.cpu()), or let the pool "
                             "copy it with allow_device_copy = true")
        value = to_cpu(value, f"a {name} on {where}")
    try:
        import numpy as np
    except ImportError:
        raise ValueError(f"a {name} is sent as a NumPy array over its memory, but numpy is "
                         "not installed on this side; install it") from None
    numpy: Any = np
    return Framed(numpy.from_dlpack(value), kind.__module__)


def to_cpu(value: Any, what: str) -> Any:
    """A CPU copy of a device array, by the first way its framework offers: the array API's
    ``to_device("cpu")``, torch's ``.cpu()``, CuPy's ``.get()``, JAX's ``device_get``."""
    ways = (("to_device", ("cpu",)), ("cpu", ()), ("get", ()))
    for method, args in ways:
        move = getattr(value, method, None)
        if callable(move):
            try:
                moved = move(*args)
            except Exception:  # noqa: BLE001 - not this framework's way: try the next
                continue
            if _on_cpu(moved):
                return moved
    jax = sys.modules.get("jax")
    if jax is not None and type(value).__module__.startswith(("jax", "jaxlib")):
        return jax.device_get(value)
    raise ValueError(f"{what} cannot be copied to the CPU: it has none of to_device('cpu'), "
                     ".cpu() or .get(); move it to the CPU before sending it")


def _on_cpu(value: Any) -> bool:
    device = getattr(value, "__dlpack_device__", None)
    return device is None or int(device()[0]) == DLPACK_CPU


def rebuild(arr: Any, framework: str | None) -> Any:
    """``arr`` as an array of ``framework`` (the module of the sender's array class: the
    ``from_dlpack`` of it, of a package above it, or of FROM_DLPACK's module) when that is
    already loaded here; the NumPy array itself otherwise."""
    if not framework or framework == "numpy":
        return arr
    parts = framework.split(".")
    names = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
    names.append(FROM_DLPACK.get(parts[0], ""))
    for name in names:
        from_dlpack = getattr(sys.modules.get(name), "from_dlpack", None)
        if from_dlpack is not None:
            return from_dlpack(arr)
    return arr


def to_raw(arr: Any, framework: str | None = None) -> tuple[memoryview, str]:
    """(the array's bytes, its layout as JSON) without copying when it is contiguous; a
    `Framed` array keeps its framework's name in the layout."""
    import numpy as np

    if isinstance(arr, Framed):
        arr, framework = arr.array, arr.framework

    if arr.flags.c_contiguous:
        data, order = arr, "C"
    elif arr.flags.f_contiguous:
        data, order = arr.T, "F"
    else:
        data, order = np.ascontiguousarray(arr), "C"
    raw = memoryview(data.reshape(-1).view(np.uint8))
    meta = {"dtype": arr.dtype.str, "shape": list(arr.shape), "order": order}
    if framework:
        meta["framework"] = framework
    return raw, json.dumps(meta)


def from_raw(buffer: Any, offset: int, layout: str, copy: bool = True) -> Any:
    """A writable copy of the array whose bytes start at ``offset`` of ``buffer`` (without
    ``copy``: an array over ``buffer`` itself, which it keeps alive)."""
    meta = json.loads(layout)
    if "arrow" in meta:  # an Arrow IPC stream (`arrow`), read in place: no NumPy needed
        return arrow.from_ipc(buffer, offset, meta["arrow"], int(meta["size"]), copy)
    try:
        import numpy as np
    except ImportError:
        raise ValueError("a NumPy array was sent, but numpy is not installed on this side; "
                         "install it in this environment") from None
    shape = [int(n) for n in meta["shape"]]
    dtype = np.dtype(meta["dtype"])
    flat = np.frombuffer(buffer, dtype, math.prod(shape), offset)
    arr = flat.reshape(shape[::-1]).T if meta.get("order") == "F" else flat.reshape(shape)
    return rebuild(arr.copy(order="K") if copy else arr, meta.get("framework"))
