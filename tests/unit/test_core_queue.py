"""PoolCore's queue of calls waiting for a worker, driven without processes."""

from __future__ import annotations

import asyncio

import pytest

from runtime.config import make_pool_config
from runtime.errors import ShutdownError
from runtime.pool.core import PoolCore


def test_a_call_that_would_queue_on_a_closing_pool_fails_at_once() -> None:
    """The close empties the queue once (ShutdownError for each waiter): a call queued after
    that (dispatched late, or run again after its worker died) waited out its queue timeout,
    for ever on the sync API's loop, stopped by then."""
    async def main() -> None:
        core = PoolCore(make_pool_config("t", size=1, queue_timeout_ms=60_000))
        for state in ("closing", "closed"):
            core.state = state
            slot = core.grant("ping", None)
            assert slot.done()
            with pytest.raises(ShutdownError):
                slot.result()
        assert len(core.queued) == 0

    asyncio.run(asyncio.wait_for(main(), 10))
