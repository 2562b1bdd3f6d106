"""AsyncPool: the native asyncio API over the same core."""

from __future__ import annotations

import asyncio

import pytest

import runtime
from runtime import AsyncPool


def test_async_pool_many_concurrent_tasks() -> None:
    async def main() -> None:
        async with AsyncPool(size=2) as pool:
            results = await asyncio.gather(
                *(pool.execute("add", {"a": i, "b": i}) for i in range(300)))
            assert results == [2 * i for i in range(300)]
            chunks = [c async for c in pool.stream("stream_count", {"n": 3})]
            assert chunks == [{"i": 1}, {"i": 2}, {"i": 3}]
            with pytest.raises(runtime.RemoteError):
                await pool.execute("fail")
            assert pool.stats().ready == 2

    asyncio.run(main())


def test_cancelling_a_task_cancels_its_call() -> None:
    async def main() -> None:
        async with AsyncPool(size=1) as pool:
            task = asyncio.ensure_future(pool.execute("sleep", {"ms": 10_000}))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The worker was told to cancel: it is free again well before 10 s.
            assert (await pool.execute("ping", timeout=3))["pong"] is True

    asyncio.run(main())


def test_await_ready_and_no_wait_start() -> None:
    async def main() -> None:
        pool = AsyncPool(size=2)
        await pool.start(wait=False)
        await pool.await_ready(timeout=30)
        assert pool.stats().ready == 2
        await pool.close()
        await pool.close()

    asyncio.run(main())


def test_deadline_cancels_an_async_tools_task() -> None:
    async def main() -> None:
        async with AsyncPool(size=1) as pool:
            pid = (await pool.execute("ping"))["pid"]
            with pytest.raises(runtime.CallTimeout):
                await pool.execute("async_sleep", {"ms": 10_000}, timeout=0.3)
            started = asyncio.get_running_loop().time()
            assert (await pool.execute("ping", timeout=3))["pid"] == pid  # same worker, freed
            assert asyncio.get_running_loop().time() - started < 1.0

    asyncio.run(main())


def test_a_closed_pool_leaves_its_hosts_list_of_running_pools() -> None:
    # pit status and the host's tool router read instance.cores: a pool closed while its
    # host instance goes on must not stay listed there
    from runtime.config import state_dir
    from runtime.pool.host.instance import HostInstance

    async def main() -> None:
        instance = HostInstance(state_dir())
        await instance.start()
        try:
            a = await AsyncPool(name="a", size=1, instance=instance).start()
            b = await AsyncPool(name="b", size=1, instance=instance).start()
            assert [c.name for c in instance.cores] == ["a", "b"]
            await a.close()
            assert [c.name for c in instance.cores] == ["b"]
            assert await b.execute("add", {"a": 1, "b": 2}) == 3
            await b.close()
            assert instance.cores == []
        finally:
            await instance.close()

    asyncio.run(main())
