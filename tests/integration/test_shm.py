"""Shared-memory payloads through real workers: large bytes both ways, arena reuse and
release, failures, and cleanup of what a killed host left in /dev/shm."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runtime
from runtime import CallTimeout, Pool
from runtime.cleanup import cleanup
from runtime.protocol import shm
from tests.conftest import ROOT, wait_until

MIB = 1 << 20
pytestmark = pytest.mark.skipif(not shm.available(), reason="no writable /dev/shm")


def arenas(pool: Pool) -> list[str]:
    return glob.glob(f"{shm.PREFIX}{pool.instance.id}-*")


def test_large_bytes_travel_through_reused_arenas_both_ways() -> None:
    with Pool(size=1, max_message_mb=64) as pool:
        for n in (2 * MIB, 16 * MIB, 3 * MIB):
            data = os.urandom(n)
            for _ in range(3):
                assert pool.execute("bytes_echo", {"data": data}) == data
        assert pool.execute("bytes_echo", {"data": bytearray(b"a" * 2 * MIB)}) == b"a" * 2 * MIB
        view = memoryview(bytes(range(256)) * 8192)  # 2 MiB
        assert pool.execute("bytes_echo", {"data": view}) == view.tobytes()
        made = arenas(pool)
        # an argument arena and a result arena, reused: not one file per call
        assert 2 <= len(made) <= 4, made
        assert pool.execute("bytes_echo", {"data": b"small"}) == b"small"  # inline
    assert arenas(pool) == []


def test_a_tool_that_returns_large_bytes_learns_an_arena() -> None:
    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1) as pool:
        results = [pool.execute("make_bytes", {"n": 3 * MIB}) for _ in range(3)]
        assert all(r == b"x" * 3 * MIB for r in results)
        assert len(arenas(pool)) == 1  # the result arena (the arguments were small)


def test_threshold_zero_sends_everything_inline() -> None:
    with Pool(size=1, shm_threshold_kb=0) as pool:
        data = os.urandom(2 * MIB)
        assert pool.execute("bytes_echo", {"data": data}) == data
        assert arenas(pool) == []


def test_a_timed_out_call_never_lends_its_arena_again() -> None:
    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1) as pool:
        data = os.urandom(2 * MIB)
        assert pool.execute("slow_echo", {"data": data, "seconds": 0}) == data
        before = set(arenas(pool))
        with pytest.raises(CallTimeout):
            pool.execute("slow_echo", {"data": data, "seconds": 1.0}, timeout=0.3)
        # the worker may still write into them: dropped, never handed to the next call
        assert not (before & set(arenas(pool)))
        assert pool.execute("slow_echo", {"data": data, "seconds": 0}) == data
    assert arenas(pool) == []


HOST = textwrap.dedent("""
    import os, sys, time
    from runtime import Pool
    pool = Pool(size=1).start()
    pool.execute("bytes_echo", {"data": os.urandom(2 << 20)})
    print(pool.instance.id, flush=True)
    time.sleep(60)
""")


def test_cleanup_removes_the_arenas_of_a_killed_host(state_dir: Path) -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PIT_STATE_DIR": str(state_dir)})
    try:
        instance = host.stdout.readline().strip()  # type: ignore[union-attr]
        left = glob.glob(f"{shm.PREFIX}{instance}-*")
        assert left
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        report = cleanup(state_dir)
        assert {i.target for i in report.items if i.kind == "shm"} == set(left)
        assert glob.glob(f"{shm.PREFIX}{instance}-*") == []
        assert wait_until(lambda: all(not os.path.exists(p) for p in left))
    finally:
        host.kill()


def test_references_outside_pit_arenas_are_refused() -> None:
    with pytest.raises(ValueError, match="not a pit arena"):
        shm.parse("/etc/passwd:0:10")
    with pytest.raises(ValueError, match="not a pit arena"):
        shm.parse(f"{shm.PREFIX}x/../../etc/passwd:0:10")


def test_numpy_arrays_keep_dtype_shape_and_order_both_ways() -> None:
    np = pytest.importorskip("numpy")
    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1) as pool:
        c = np.random.default_rng(1).random((512, 512))  # 2 MiB, C order
        info = pool.execute("array_info", {"arr": c})
        assert info == {"type": "ndarray", "dtype": "float64", "shape": [512, 512],
                        "fortran": False, "writeable": True, "sum": pytest.approx(c.sum())}
        f = np.asfortranarray(np.ones((1000, 600), dtype=np.float32))
        assert pool.execute("array_info", {"arr": f})["fortran"] is True
        strided = np.arange(1600 * 800, dtype=np.int64).reshape(1600, 800)[::2]
        got = pool.execute("array_info", {"arr": strided})
        assert got["shape"] == [800, 800] and got["sum"] == float(strided.sum())
        for _ in range(4):  # the second call on learns a result arena
            out = pool.execute("array_scale", {"arr": c, "k": 2.0})
            assert isinstance(out, np.ndarray) and out.dtype == np.float64
            assert np.array_equal(out, c * 2) and out.flags.writeable
        # arenas are reused: at most the arguments' one and two for results taking turns
        # (each result is a view that holds its arena until the next one replaces `out`)
        assert 2 <= len(arenas(pool)) <= 3
        # below shm_threshold_kb arrays travel as JSON lists: the tool gets a list
        assert pool.execute("array_scale", {"arr": np.arange(3), "k": 2}) == [0, 1, 2] * 2
    assert arenas(pool) == []


@pytest.mark.parametrize("direct_calls", [True, False])
def test_arrays_under_the_threshold_travel_raw_from_10_kb(direct_calls: bool) -> None:
    # Snakepit's binary threshold: from 10 KB an array is raw bytes in the message (no JSON
    # list); smaller ones stay JSON and arrive as lists
    np = pytest.importorskip("numpy")
    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1,
              direct_calls=direct_calls) as pool:
        a = np.random.default_rng(2).random(100_000)  # 800 KB: under the 1 MiB threshold
        assert pool.execute("array_info", {"arr": a})["type"] == "ndarray"
        out = pool.execute("array_scale", {"arr": a, "k": 2.0})
        assert isinstance(out, np.ndarray) and np.array_equal(out, a * 2)
        assert arenas(pool) == []  # in the message, not through shared memory
        small = np.arange(100, dtype=np.float64)  # 800 bytes: a JSON list
        with pytest.raises(runtime.RemoteError):  # a list has no .dtype: it came as JSON
            pool.execute("array_info", {"arr": small})


def test_array_results_are_views_whose_arena_is_held_while_they_live() -> None:
    np = pytest.importorskip("numpy")
    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1) as pool:
        n = 512 * 1024  # 4 MiB of float64
        pool.execute("make_array", {"n": n})  # learns that the tool returns a large array
        kept = pool.execute("make_array", {"n": n})
        assert not kept.flags.owndata and kept.flags.writeable  # a view over the arena
        part = kept[10:20]  # a view of the view keeps the arena too
        del kept
        for _ in range(5):  # later results must never land in the arena `part` reads
            assert pool.execute("array_scale", {"arr": np.ones(n), "k": 7.0})[0] == 7.0
        assert part.tolist() == [float(i) for i in range(10, 20)]
        held = len(arenas(pool))
        del part
        for _ in range(5):  # once the views are gone, their arena is used again
            pool.execute("array_scale", {"arr": np.ones(n), "k": 7.0})
        assert len(arenas(pool)) <= held
        pid = pool.pids()[0]
        last = pool.execute("make_array", {"n": n})
        os.kill(pid, signal.SIGKILL)  # a view outlives its worker (the file is unlinked)
        assert wait_until(lambda: pid not in pool.pids())
        assert last[-1] == n - 1 and last.sum() == n * (n - 1) / 2
    assert arenas(pool) == []
    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1, shm_views=False) as pool:
        pool.execute("make_array", {"n": n})
        copy = pool.execute("make_array", {"n": n})
        assert copy.flags.owndata and copy[-1] == n - 1


def test_a_worker_without_shared_memory_gets_large_values_inline() -> None:
    np = pytest.importorskip("numpy")
    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1,
              env={"PIT_NO_SHM": "1"}) as pool:  # the worker does not offer the feature
        data = os.urandom(2 * MIB)
        assert pool.execute("slow_echo", {"data": data, "seconds": 0}) == data
        c = np.random.default_rng(2).random((512, 512))
        out = pool.execute("array_scale", {"arr": c, "k": 3.0})
        assert isinstance(out, np.ndarray) and np.array_equal(out, c * 3)
        assert arenas(pool) == []
    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1, shm_threshold_kb=0) as pool:
        # shared memory off: arrays are JSON lists both ways
        assert pool.execute("make_array", {"n": 3}) == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("n", [3, 300_000])  # inline, and through shared memory (2.4 MB)
def test_dlpack_arrays_of_another_framework_travel_raw_and_come_back_as_themselves(
        n: int) -> None:
    np = pytest.importorskip("numpy")
    from tests.adapters import fakeframe

    with Pool(adapter="tests.adapters.fakeframe:TensorTools", size=1) as pool:
        t = fakeframe.Tensor(np.arange(n, dtype=np.float32))
        out = pool.execute("double", {"t": t})
        assert isinstance(out, fakeframe.Tensor)  # loaded here: rebuilt with its from_dlpack
        assert np.array_equal(out.data, np.arange(n, dtype=np.float32) * 2)
        with pytest.raises(runtime.InvalidArgument, match="cuda:0 cannot be sent"):
            pool.execute("double", {"t": fakeframe.Tensor(np.zeros(2), device=(2, 0))})
        with pytest.raises(runtime.ResultError, match="cuda:0 cannot be sent"):
            pool.execute("on_gpu")


def test_allow_device_copy_moves_gpu_arrays_to_the_cpu_both_ways() -> None:
    """A stand-in GPU tensor (DLPack device cuda:0, torch's ``.cpu()``): copied, not refused."""
    np = pytest.importorskip("numpy")
    from tests.adapters import fakeframe

    with Pool(adapter="tests.adapters.fakeframe:TensorTools", size=1,
              allow_device_copy=True) as pool:
        out = pool.execute("double", {"t": fakeframe.Tensor(np.ones(4), device=(2, 0))})
        assert isinstance(out, fakeframe.Tensor) and out.device == (1, 0)
        assert out.data.tolist() == [2.0] * 4
        back = pool.execute("on_gpu")  # the worker copies its result to the CPU
        assert isinstance(back, fakeframe.Tensor) and back.data.tolist() == [0.0] * 3


@pytest.mark.parametrize("rows", [10, 200_000])  # inline, and through shared memory (4.8 MB)
def test_arrow_tables_travel_as_ipc_and_come_back_as_tables(rows: int) -> None:
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"a": pa.array(range(rows), pa.float64()),
                      "b": pa.array(range(rows), pa.int64()), "c": ["x"] * rows})
    with Pool(adapter="tests.adapters.sample:ArrowTools", size=1) as pool:
        assert pool.execute("describe", {"table": table}) == {
            "type": "Table", "rows": rows, "columns": ["a", "b", "c"]}
        for _ in range(3):  # the second call on is offered an arena for its large result
            out = pool.execute("add_column", {"table": table})
            assert isinstance(out, pa.Table) and out.column_names == ["a", "b", "c", "total"]
            assert out["total"].to_pylist()[-1] == 2 * (rows - 1)
        batch = table.to_batches()[0]
        assert pool.execute("describe", {"table": batch})["type"] == "RecordBatch"
        # a table the tool kept is its own: the next call's arguments do not change it
        assert pool.execute("keep", {"table": table}) == rows
        pool.execute("describe", {"table": pa.table({"a": [7.0] * rows, "b": [0] * rows,
                                                     "c": ["y"] * rows})})
        assert pool.execute("kept_sum") == sum(range(rows))


def test_pandas_frames_go_through_arrow() -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10, 20, 30]}, index=["x", "y", "z"])
    with Pool(adapter="tests.adapters.sample:ArrowTools", size=1) as pool:
        out = pool.execute("frame_mean", {"df": df})
        assert isinstance(out, pd.DataFrame)
        assert out["mean"].to_dict() == {"a": 2.0, "b": 20.0}


def test_two_pools_of_one_host_keep_their_arenas_apart() -> None:
    # Worker ids are per pool (both pools have a worker-1): arenas named by instance and
    # worker id alone collided, and the second pool's large call failed (FileExistsError)
    import asyncio

    from runtime import AsyncPool
    from runtime.config import state_dir
    from runtime.pool.host.instance import HostInstance

    async def main() -> None:
        instance = HostInstance(state_dir())
        await instance.start()
        pools = []
        try:
            for name in ("a", "b"):
                pools.append(await AsyncPool(name=name, size=1, instance=instance).start())
            data = os.urandom(2 * MIB)
            for pool in pools:
                assert await pool.execute("bytes_echo", {"data": data}) == data
            made = glob.glob(f"{shm.PREFIX}{instance.id}-*")
            assert any("-a-" in p for p in made) and any("-b-" in p for p in made), made
        finally:
            for pool in pools:
                await pool.close()
            await instance.close()

    asyncio.run(main())
