"""The pool names `runtime` exports (Pool, Pools, AsyncPool, current_pools, execute,
stream), reached through here so that the pool's fork server starts first
(`warm_zygote.prestart`): its imports then run beside the host's own, below."""

from __future__ import annotations

from . import warm_zygote

warm_zygote.prestart()

from .async_pool import AsyncPool  # noqa: E402 - after the prestart, on purpose
from .current import current_pools, execute, stream  # noqa: E402
from .sync_pool import Pool, Pools  # noqa: E402

__all__ = ["AsyncPool", "Pool", "Pools", "current_pools", "execute", "stream"]
