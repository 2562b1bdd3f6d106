"""Where a pool's workers run (``backend``) and the keys that go with a Ray backend, checked
for `config.make_pool_config`: ``ray_address``, ``resources``, ``placement``, ``ray_calls`` (see
runtime/pool/ray_process.py for what a Ray-placed worker is)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

BACKENDS = ("local", "ray")
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory_mb", "custom")
RAY_CALLS = ("auto", "direct", "actor")  # how the host reaches a Ray worker (ray_process)


def resources_problem(value: Any) -> str | None:
    """What is wrong with a pool's ``resources`` table, or None."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0

    if not isinstance(value, Mapping):
        return "not a table"
    for key, v in value.items():
        if key not in RESOURCE_KEYS:
            return f"unknown key {key!r}"
        if key == "custom":
            if not isinstance(v, Mapping) or not all(
                    isinstance(k, str) and number(x) for k, x in v.items()):
                return "custom must be a table of name = number"
        elif not number(v) or (key == "memory_mb" and not isinstance(v, int)):
            return f"{key} = {v!r}"
    return None


def check_backend(values: dict[str, Any], where: str) -> None:
    """Check ``backend`` against the keys that go with it (in place)."""
    values["resources"] = dict(values.get("resources") or {})
    if values.get("backend", "local") == "local":
        for key in ("ray_address", "resources", "placement", "ray_calls"):
            if values.get(key) and (key != "ray_calls" or values[key] != "auto"):
                raise ConfigError(f"{where}: {key} applies to backend = \"ray\" only",
                                  hint=f'set backend = "ray", or remove {key}')
        return
    kind = values.get("worker", "pit")
    if kind != "pit":
        raise ConfigError(f"{where}: backend = \"ray\" runs pit's own worker in each Ray "
                          f"actor, not worker = {kind!r}",
                          hint='remove worker (and command), or use backend = "local"')
    # python and requirements are Ray's business (`pool.ray_env`): the cluster's Python, the
    # requirements as the actors' runtime_env
    if values.get("allow_pickle"):
        raise ConfigError(f"{where}: allow_pickle cannot be used with backend = \"ray\"",
                          hint="Ray workers listen on TCP: pickled values are refused there")
