"""What an ML library's error message says, read on the host (Snakepit's ``Error.Parser``).

`parse(remote_type, message)` turns a tool's exception type name and message into one of four
frozen values, or None when the message is not one it knows:

    ShapeMismatch   the shapes involved      mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)
    DTypeMismatch   the dtypes involved      expected scalar type Float but found Double
    DeviceMismatch  the devices involved     ... found at least two devices, cuda:0 and cpu!
    OutOfMemory     device, bytes requested  CUDA out of memory. Tried to allocate 2.00 GiB ...
                    and available (if stated)

Formats of PyTorch, NumPy, JAX/XLA and TensorFlow (tests/unit/test_ml_errors.py holds the table
of real messages). Pure: no imports of those libraries, no state. A shape is a tuple of ints
(None for a dimension written as ``?`` or ``None``); sizes are bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

Shape = tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class ShapeMismatch:
    category: ClassVar[str] = "shape_mismatch"
    shapes: tuple[Shape, ...]
    framework: str

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, **asdict(self)}


@dataclass(frozen=True, slots=True)
class DTypeMismatch:
    category: ClassVar[str] = "dtype_mismatch"
    dtypes: tuple[str, ...]
    framework: str

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, **asdict(self)}


@dataclass(frozen=True, slots=True)
class DeviceMismatch:
    category: ClassVar[str] = "device_mismatch"
    devices: tuple[str, ...]
    framework: str

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, **asdict(self)}


@dataclass(frozen=True, slots=True)
class OutOfMemory:
    category: ClassVar[str] = "out_of_memory"
    device: str | None
    requested_bytes: int | None
    available_bytes: int | None
    framework: str

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, **asdict(self)}


MLError = ShapeMismatch | DTypeMismatch | DeviceMismatch | OutOfMemory

_UNITS = {"": 1, "B": 1, "BYTES": 1, "KB": 1000, "KIB": 1 << 10, "K": 1 << 10,
          "MB": 1000**2, "MIB": 1 << 20, "M": 1 << 20, "GB": 1000**3, "GIB": 1 << 30,
          "G": 1 << 30, "TB": 1000**4, "TIB": 1 << 40, "T": 1 << 40}
_SIZE = r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|[KMGT]|B|bytes)?"


def _bytes(number: str, unit: str | None) -> int:
    return int(float(number) * _UNITS[(unit or "").upper()])


def _shape(text: str) -> Shape:
    """``3x4``, ``(3, 4)``, ``[3,4]``, ``(3,)``, ``f32[3,4]``, ``torch.Size([3, 4])``."""
    inner = re.sub(r"^[a-z0-9]*\[|^torch\.Size\(\[|\]\)$|[()\[\]]", "", text.strip())
    parts = [p for p in re.split(r"[x,\s]+", inner) if p]
    return tuple(None if p in ("?", "None", "-1") else int(p) for p in parts)


def _torch_dtype(name: str) -> str:
    return {"Float": "float32", "Double": "float64", "Half": "float16", "BFloat16": "bfloat16",
            "Long": "int64", "Int": "int32", "Short": "int16", "Char": "int8", "Byte": "uint8",
            "Bool": "bool", "ComplexFloat": "complex64",
            "ComplexDouble": "complex128"}.get(name, name.removeprefix("torch.").lower())


_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], "MLError"]]
_TF_ITEM = {"float": 4, "double": 8, "half": 2, "bfloat16": 2, "int32": 4, "int64": 8,
            "int8": 1, "uint8": 1, "int16": 2, "bool": 1, "complex64": 8, "complex128": 16}


def _tf_oom(m: re.Match[str]) -> OutOfMemory:
    shape = _shape(m[1])
    size = _TF_ITEM.get(m[2])
    requested = None
    if size and shape and None not in shape:
        requested = size
        for dim in shape:
            requested *= dim or 0
    device = m[3].rpartition("device:")[2] if m[3] else None
    return OutOfMemory(device, requested, None, "tensorflow")


def _all(pattern: str, text: str) -> tuple[str, ...]:
    return tuple(re.findall(pattern, text))


_RULES: list[_Rule] = [
    # --- out of memory (first: an OOM message may mention shapes too) ------------------------
    (re.compile(r"(CUDA|HIP) out of memory\. Tried to allocate " + _SIZE +
                r"(?:.*?GPU (\d+))?(?:.*?" + _SIZE + r"(?: is)? free)?", re.S),
     lambda m: OutOfMemory(f"{m[1].lower()}:{m[4]}" if m[4] else m[1].lower(),
                           _bytes(m[2], m[3]), _bytes(m[5], m[6]) if m[5] else None,
                           "torch")),
    (re.compile(r"MPS backend out of memory \(MPS allocated: [^)]*\)\. "
                r"Tried to allocate " + _SIZE),
     lambda m: OutOfMemory("mps", _bytes(m[1], m[2]), None, "torch")),
    (re.compile(r"DefaultCPUAllocator: (?:can't allocate memory|not enough memory): "
                r"you tried to allocate (\d+) bytes"),
     lambda m: OutOfMemory("cpu", int(m[1]), None, "torch")),
    (re.compile(r"RESOURCE_EXHAUSTED: Out of memory while trying to allocate (\d+) bytes"),
     lambda m: OutOfMemory(None, int(m[1]), None, "jax")),
    (re.compile(r"OOM when allocating tensor with shape\s*(\[[^\]]*\]) and type (\w+)"
                r"(?: on (\S+))?"),
     _tf_oom),
    (re.compile(r"Unable to allocate " + _SIZE + r" for an array with shape"),
     lambda m: OutOfMemory("cpu", _bytes(m[1], m[2]), None, "numpy")),
    (re.compile(r"CUBLAS_STATUS_ALLOC_FAILED|CUDA_ERROR_OUT_OF_MEMORY|"
                r"cudaErrorMemoryAllocation"),
     lambda m: OutOfMemory("cuda", None, None, "cuda")),
    # --- device --------------------------------------------------------------------------
    (re.compile(r"Expected all tensors to be on the same device, but found at least two "
                r"devices, (\S+?) and (\S+?)[!,. ]"),
     lambda m: DeviceMismatch((m[1], m[2]), "torch")),
    (re.compile(r"Expected all tensors to be on the same device, but got \w+ is on (\S+), "
                r"different from other tensors on (\S+?)[\s,.)]"),
     lambda m: DeviceMismatch((m[1], m[2]), "torch")),
    (re.compile(r"Input type \((\S+)\) and weight type \((\S+)\) should be the same"),
     lambda m: (DeviceMismatch((m[1], m[2]), "torch")
                if ("cuda" in m[1]) != ("cuda" in m[2])
                else DTypeMismatch((m[1], m[2]), "torch"))),
    (re.compile(r"[Rr]eceived incompatible devices for jitted computation\. Got argument "
                r".*? device ids \[(\d+)\] on platform (\w+) and argument .*? "
                r"device ids \[(\d+)\] on platform (\w+)"),
     lambda m: DeviceMismatch((f"{m[2].lower()}:{m[1]}", f"{m[4].lower()}:{m[3]}"), "jax")),
    # --- dtype ---------------------------------------------------------------------------
    (re.compile(r"expected scalar type (\w+) but found (\w+)"),
     lambda m: DTypeMismatch((_torch_dtype(m[1]), _torch_dtype(m[2])), "torch")),
    (re.compile(r"expected (?:m1 and m2|mat1 and mat2) to have the same dtype, "
                r"but got: (\S+) != (\S+)"),
     lambda m: DTypeMismatch((m[1], m[2]), "torch")),
    (re.compile(r"Cannot cast ufunc '\w+' output from dtype\('(\w+)'\) to "
                r"dtype\('(\w+)'\)"),
     lambda m: DTypeMismatch((m[1], m[2]), "numpy")),
    (re.compile(r"ufunc '\w+' did not contain a loop with signature matching types "
                r"\(((?:dtype\('[^']*'\),? ?)+)\)"),
     lambda m: DTypeMismatch(_all(r"dtype\('([^']*)'\)", m[1]), "numpy")),
    (re.compile(r"cannot compute \w+ as input #\d+\(zero-based\) was expected to be a "
                r"(\w+) tensor but is a (\w+) tensor", re.I),
     lambda m: DTypeMismatch((m[1], m[2]), "tensorflow")),
    (re.compile(r"requires arguments to have the same dtypes, got (\w+(?:, \w+)+)"),
     lambda m: DTypeMismatch(tuple(m[1].split(", ")), "jax")),
    # --- shape ---------------------------------------------------------------------------
    (re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+x\d+) and (\d+x\d+)\)"),
     lambda m: ShapeMismatch((_shape(m[1]), _shape(m[2])), "torch")),
    (re.compile(r"The size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\) "
                r"at non-singleton dimension (\d+)"),
     lambda m: ShapeMismatch(((int(m[1]),), (int(m[2]),)), "torch")),
    (re.compile(r"shape '(\[[^\]]*\])' is invalid for input of size (\d+)"),
     lambda m: ShapeMismatch((_shape(m[1]), (int(m[2]),)), "torch")),
    (re.compile(r"shapes (\([^)]*\)) and (\([^)]*\)) not aligned"),
     lambda m: ShapeMismatch((_shape(m[1]), _shape(m[2])), "numpy")),
    (re.compile(r"operands could not be broadcast together with shapes ((?:\([^)]*\) ?)+)"),
     lambda m: ShapeMismatch(tuple(_shape(s) for s in _all(r"\([^)]*\)", m[1])), "numpy")),
    (re.compile(r"matmul: Input operand 1 has a mismatch in its core dimension 0, with "
                r"gufunc signature \S+ \(size (\d+) is different from (\d+)\)"),
     lambda m: ShapeMismatch(((int(m[2]),), (int(m[1]),)), "numpy")),
    (re.compile(r"cannot reshape array of size (\d+) into shape (\([^)]*\))"),
     lambda m: ShapeMismatch(((int(m[1]),), _shape(m[2])), "numpy")),
    (re.compile(r"dot_general requires contracting dimensions to have the same shape, got "
                r"(\([^)]*\)) and (\([^)]*\))"),
     lambda m: ShapeMismatch((_shape(m[1]), _shape(m[2])), "jax")),
    (re.compile(r"[Ii]ncompatible shapes for broadcasting: (?:shapes=\[)?"
                r"((?:\([^)]*\)(?:, )?)+)"),
     lambda m: ShapeMismatch(tuple(_shape(s) for s in _all(r"\([^)]*\)", m[1])), "jax")),
    (re.compile(r"Incompatible shapes: (\[[^\]]*\]) vs\. (\[[^\]]*\])"),
     lambda m: ShapeMismatch((_shape(m[1]), _shape(m[2])), "tensorflow")),
    (re.compile(r"Matrix size-incompatible: In\[0\]: (\[[^\]]*\]), In\[1\]: (\[[^\]]*\])"),
     lambda m: ShapeMismatch((_shape(m[1]), _shape(m[2])), "tensorflow")),
    (re.compile(r"Shapes (\([^)]*\)) and (\([^)]*\)) are incompatible"),
     lambda m: ShapeMismatch((_shape(m[1]), _shape(m[2])), "tensorflow")),
]
# Types that say enough by their name when the message matches nothing above.
_BY_TYPE = {"OutOfMemoryError": OutOfMemory("cuda", None, None, "torch"),
            "MemoryError": OutOfMemory("cpu", None, None, "python"),
            "ResourceExhaustedError": OutOfMemory(None, None, None, "tensorflow")}


def parse(remote_type: str, message: str) -> MLError | None:
    """The ML failure a tool's exception describes, or None (a plain error)."""
    text = message or ""
    if len(text) > 20_000:  # the facts are in the first lines; a huge repr is not
        text = text[:20_000]
    for pattern, build in _RULES:
        match = pattern.search(text)
        if match:
            try:
                return build(match)
            except (ValueError, KeyError):  # a shape or size we cannot read: not this rule
                continue
    return _BY_TYPE.get((remote_type or "").rpartition(".")[2])
