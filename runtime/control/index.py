"""The machine-wide list of live pit hosts, so `pit status` finds every one of them.

One small JSON file per host instance in ``$PIT_INDEX_DIR`` (default
``$XDG_STATE_HOME/pit/instances``, i.e. ``~/.local/state/pit/instances``), written when the
host's control socket is up and removed when it closes. Entries of hosts that died are pruned
by readers (pid gone, or its create time differs).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import process_alive, process_create_time

PIT_INDEX_DIR = "PIT_INDEX_DIR"


@dataclass(frozen=True, slots=True)
class LiveInstance:
    instance_id: str
    pid: int
    create_time: float | None
    control_address: str
    state_dir: str
    config_path: str | None
    pools: list[str]
    started_at: float


def index_dir() -> Path:
    explicit = os.environ.get(PIT_INDEX_DIR)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "pit" / "instances"


def publish(instance: Any) -> None:
    folder = index_dir()
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = {"instance_id": instance.id, "pid": os.getpid(),
                 "create_time": process_create_time(os.getpid()),
                 "control_address": instance.host_address,
                 "state_dir": str(instance.state_dir),
                 "config_path": str(instance.config_path) if instance.config_path else None,
                 "pools": list(instance.pool_names), "started_at": time.time()}
        tmp = folder / f".{instance.id}.tmp"
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, folder / f"{instance.id}.json")


def withdraw(instance_id: str) -> None:
    with contextlib.suppress(OSError):
        (index_dir() / f"{instance_id}.json").unlink()


def live_instances() -> list[LiveInstance]:
    """Every live pit host on this machine; entries of dead hosts are removed."""
    out = []
    for path in sorted(index_dir().glob("*.json")):
        try:
            entry = LiveInstance(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if process_alive(entry.pid, entry.create_time):
            out.append(entry)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted(out, key=lambda e: e.started_at)
