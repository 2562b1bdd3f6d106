"""The ML error parser against a table of real messages from PyTorch, NumPy, JAX/XLA and
TensorFlow (type name, message as the library words it, what the host should read)."""

from __future__ import annotations

import pytest

from runtime.ml_errors import DeviceMismatch, DTypeMismatch, OutOfMemory, ShapeMismatch, parse

GiB, MiB = 1 << 30, 1 << 20
TABLE = [
    # --- PyTorch ---
    ("RuntimeError", "mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)",
     ShapeMismatch(((3, 4), (5, 6)), "torch")),
    ("RuntimeError", "The size of tensor a (3) must match the size of tensor b (4) at "
     "non-singleton dimension 1", ShapeMismatch(((3,), (4,)), "torch")),
    ("RuntimeError", "shape '[2, 5]' is invalid for input of size 12",
     ShapeMismatch(((2, 5), (12,)), "torch")),
    ("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB "
     "total capacity; 12.50 GiB already allocated; 1.20 GiB free; 13.00 GiB reserved in total "
     "by PyTorch) If reserved memory is >> allocated memory try setting max_split_size_mb to "
     "avoid fragmentation.",
     OutOfMemory("cuda:0", 2 * GiB, int(1.2 * GiB), "torch")),
    ("OutOfMemoryError", "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 1 has a total "
     "capacity of 79.32 GiB of which 6.56 MiB is free. Including non-PyTorch memory, this "
     "process has 79.31 GiB memory in use.",
     OutOfMemory("cuda:1", 20 * MiB, int(6.56 * MiB), "torch")),
    ("OutOfMemoryError", "HIP out of memory. Tried to allocate 512.00 MiB (GPU 0; 63.98 GiB "
     "total capacity; 63.50 GiB already allocated)",
     OutOfMemory("hip:0", 512 * MiB, None, "torch")),
    ("RuntimeError", "MPS backend out of memory (MPS allocated: 18.04 GB, other allocations: "
     "1.23 GB, max allowed: 18.13 GB). Tried to allocate 256.00 MB on private pool.",
     OutOfMemory("mps", 256_000_000, None, "torch")),
    ("RuntimeError", "[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not "
     "enough memory: you tried to allocate 8000000000000 bytes.",
     OutOfMemory("cpu", 8_000_000_000_000, None, "torch")),
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling "
     "`cublasCreate(handle)`", OutOfMemory("cuda", None, None, "cuda")),
    ("RuntimeError", "Expected all tensors to be on the same device, but found at least two "
     "devices, cuda:0 and cpu!", DeviceMismatch(("cuda:0", "cpu"), "torch")),
    ("RuntimeError", "Expected all tensors to be on the same device, but got mat1 is on "
     "cuda:0, different from other tensors on cpu (when checking argument in method "
     "wrapper_CUDA_addmm)", DeviceMismatch(("cuda:0", "cpu"), "torch")),
    ("RuntimeError", "Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) "
     "should be the same", DeviceMismatch(("torch.cuda.FloatTensor", "torch.FloatTensor"),
                                          "torch")),
    ("RuntimeError", "expected scalar type Float but found Double",
     DTypeMismatch(("float32", "float64"), "torch")),
    ("RuntimeError", "expected mat1 and mat2 to have the same dtype, but got: float != double",
     DTypeMismatch(("float", "double"), "torch")),
    # --- NumPy ---
    ("ValueError", "shapes (3,4) and (5,6) not aligned: 4 (dim 1) != 5 (dim 0)",
     ShapeMismatch(((3, 4), (5, 6)), "numpy")),
    ("ValueError", "operands could not be broadcast together with shapes (3,) (4,) ",
     ShapeMismatch(((3,), (4,)), "numpy")),
    ("ValueError", "matmul: Input operand 1 has a mismatch in its core dimension 0, with "
     "gufunc signature (n?,k),(k,m?)->(n?,m?) (size 5 is different from 4)",
     ShapeMismatch(((4,), (5,)), "numpy")),
    ("ValueError", "cannot reshape array of size 12 into shape (5,)",
     ShapeMismatch(((12,), (5,)), "numpy")),
    ("_ArrayMemoryError", "Unable to allocate 74.5 GiB for an array with shape "
     "(100000, 100000) and data type float64", OutOfMemory("cpu", int(74.5 * GiB), None,
                                                           "numpy")),
    ("UFuncTypeError", "Cannot cast ufunc 'add' output from dtype('float64') to "
     "dtype('int64') with casting rule 'same_kind'",
     DTypeMismatch(("float64", "int64"), "numpy")),
    ("UFuncTypeError", "ufunc 'add' did not contain a loop with signature matching types "
     "(dtype('<U1'), dtype('int64')) -> None", DTypeMismatch(("<U1", "int64"), "numpy")),
    # --- JAX / XLA ---
    ("TypeError", "dot_general requires contracting dimensions to have the same shape, got "
     "(4,) and (5,).", ShapeMismatch(((4,), (5,)), "jax")),
    ("ValueError", "Incompatible shapes for broadcasting: shapes=[(3,), (4,)]",
     ShapeMismatch(((3,), (4,)), "jax")),
    ("TypeError", "add got incompatible shapes for broadcasting: (3,), (4,).",
     ShapeMismatch(((3,), (4,)), "jax")),
    ("TypeError", "lax.add requires arguments to have the same dtypes, got float32, int32. "
     "(Tip: jnp.add is a similar function that does automatic type promotion on inputs).",
     DTypeMismatch(("float32", "int32"), "jax")),
    ("XlaRuntimeError", "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123456 "
     "bytes.", OutOfMemory(None, 123456, None, "jax")),
    # --- TensorFlow / Keras ---
    ("InvalidArgumentError", "{{function_node __wrapped__AddV2_device_/job:localhost/replica:0/"
     "task:0/device:CPU:0}} Incompatible shapes: [3,4] vs. [5,6] [Op:AddV2] name: ",
     ShapeMismatch(((3, 4), (5, 6)), "tensorflow")),
    ("InvalidArgumentError", "Matrix size-incompatible: In[0]: [3,4], In[1]: [5,6] "
     "[Op:MatMul]", ShapeMismatch(((3, 4), (5, 6)), "tensorflow")),
    ("ValueError", "Shapes (None, 10) and (None, 5) are incompatible",
     ShapeMismatch(((None, 10), (None, 5)), "tensorflow")),
    ("ResourceExhaustedError", "OOM when allocating tensor with shape[1024,1024,1024] and type "
     "float on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc",
     OutOfMemory("GPU:0", 4 * GiB, None, "tensorflow")),
    ("InvalidArgumentError", "cannot compute AddV2 as input #1(zero-based) was expected to be "
     "a float tensor but is a int32 tensor [Op:AddV2]",
     DTypeMismatch(("float", "int32"), "tensorflow")),
    # --- by type alone ---
    ("MemoryError", "", OutOfMemory("cpu", None, None, "python")),
]


@pytest.mark.parametrize(("rtype", "message", "expected"), TABLE,
                         ids=[f"{e.framework}-{e.category}-{i}" for i, (_, _, e) in
                              enumerate(TABLE)])
def test_real_messages_are_read(rtype: str, message: str, expected: object) -> None:
    assert parse(rtype, message) == expected


def test_the_table_covers_every_library_and_kind() -> None:
    assert len(TABLE) >= 12
    assert {e.framework for _, _, e in TABLE} >= {"torch", "numpy", "jax", "tensorflow"}
    assert {e.category for _, _, e in TABLE} == {
        "shape_mismatch", "dtype_mismatch", "device_mismatch", "out_of_memory"}


@pytest.mark.parametrize("message", [
    "boom", "", "list index out of range", "'NoneType' object has no attribute 'shape'",
    "invalid literal for int() with base 10: 'x'", "shapes are fine", "x" * 100_000,
])
def test_other_messages_are_not_ml_errors(message: str) -> None:
    assert parse("ValueError", message) is None


def test_details_are_plain_data() -> None:
    err = parse("RuntimeError", "mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)")
    assert err is not None and err.to_dict() == {
        "category": "shape_mismatch", "shapes": ((3, 4), (5, 6)), "framework": "torch"}
