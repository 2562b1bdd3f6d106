"""What `pit setup` does: build (or check) every pool's env, then prove each one works by
running the adapter health check inside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from ..config import PitConfig
from ..errors import ConfigError
from .builder import EnvStatus, Output, Phase, build_all, status
from .health import health_check


@dataclass(frozen=True, slots=True)
class SetupRow:
    pool: str
    python: str | None
    env: str  # host | ready | missing | stale | error
    healthy: bool | None  # None: not checked (--check)
    tools: int
    detail: str

    @property
    def ok(self) -> bool:
        return self.env in ("host", "ready") and self.healthy is not False


def setup(cfg: PitConfig, *, pools: list[str] | None = None, check: bool = False,
          force: bool = False,
          on_progress: Callable[[SetupRow], None] | None = None,
          on_phase: Phase | None = None, on_output: Output | None = None) -> list[SetupRow]:
    """Build or check the envs of ``pools`` (default: all). Never raises for one pool.
    ``on_progress`` gets each pool's row as soon as it is final: its env built and its
    adapter health-checked (not called with ``check``); ``on_phase`` hears each pool's steps
    as they start (pool, "installing 4 packages"), ``on_output`` gets uv's own progress
    lines (pool, line)."""
    unknown = [p for p in pools or [] if p not in cfg.pools]
    if unknown:
        raise ConfigError(f"no pool named {unknown[0]!r} in {cfg.path or 'the defaults'}",
                          hint=f"pools: {', '.join(cfg.pools)}")
    chosen = [cfg.pools[n] for n in (pools or list(cfg.pools))]
    base = cfg.path.parent if cfg.path else Path.cwd()
    if check:
        statuses = [status(p, cfg.state_dir, base) for p in chosen]
        return [SetupRow(s.pool, s.python, s.state, None, 0, s.detail) for s in statuses]
    rows: dict[str, SetupRow] = {}

    def finish(st: EnvStatus) -> None:
        # Health-checked here, in the pool's build thread, before anything is reported: a
        # progress line must not say "ok" for a pool whose adapter then fails its check.
        if st.state not in ("host", "ready"):
            row = SetupRow(st.pool, st.python, st.state, None, 0, st.detail)
        else:
            if on_phase is not None:
                on_phase(st.pool, "health check")
            h = health_check(cfg.pools[st.pool], cfg.state_dir, base)
            row = SetupRow(st.pool, st.python, st.state, h.ok, len(h.tools),
                           st.detail if h.ok else h.error)
        rows[st.pool] = row
        if on_progress is not None:
            on_progress(row)

    build_all(chosen, cfg.state_dir, base, force=force, on_done=finish, on_phase=on_phase,
              on_output=on_output)
    return [rows[pool.name] for pool in chosen]


STARTER = {"pools": {"default": {"adapter": "runtime.adapters.showcase:ShowcaseAdapter",
                                 "size": 2}}}


def write_starter_config(directory: Path) -> Path | None:
    """Write a starter pit.toml; None when one exists already (it is never overwritten)."""
    path = directory / "pit.toml"
    if path.exists():
        return None
    path.write_text("# pit configuration: see the README's configuration reference.\n"
                    + tomli_w.dumps(STARTER))
    return path
