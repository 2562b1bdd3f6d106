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
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

PARAM = "pit_np:"
RESULT = "pit_np_result"
WANTED = "pit_np"
RAW_MIN_BYTES = 10 * 1024  # arrays this large travel as raw bytes, not as JSON lists


def is_array(value: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray) and not value.dtype.hasobject


def to_raw(arr: Any) -> tuple[memoryview, str]:
    """(the array's bytes, its layout as JSON) without copying when it is contiguous."""
    import numpy as np

    if arr.flags.c_contiguous:
        data, order = arr, "C"
    elif arr.flags.f_contiguous:
        data, order = arr.T, "F"
    else:
        data, order = np.ascontiguousarray(arr), "C"
    raw = memoryview(data.reshape(-1).view(np.uint8))
    return raw, json.dumps({"dtype": arr.dtype.str, "shape": list(arr.shape), "order": order})


def from_raw(buffer: Any, offset: int, layout: str, copy: bool = True) -> Any:
    """A writable copy of the array whose bytes start at ``offset`` of ``buffer`` (without
    ``copy``: an array over ``buffer`` itself, which it keeps alive)."""
    try:
        import numpy as np
    except ImportError:
        raise ValueError("a NumPy array was sent, but numpy is not installed on this side; "
                         "install it in this environment") from None
    meta = json.loads(layout)
    shape = [int(n) for n in meta["shape"]]
    dtype = np.dtype(meta["dtype"])
    flat = np.frombuffer(buffer, dtype, math.prod(shape), offset)
    arr = flat.reshape(shape[::-1]).T if meta.get("order") == "F" else flat.reshape(shape)
    return arr.copy(order="K") if copy else arr
