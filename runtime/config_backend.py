"""Where a pool's workers run (``backend``) and the keys that go with a Ray backend, checked
for `config.make_pool_config`: ``ray_address``, ``resources``, ``placement``, ``tls``,
``ray_calls`` (see runtime/pool/ray_process.py for what a Ray-placed worker is,
runtime/protocol/tls.py for TLS).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

BACKENDS = ("local", "ray")
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory_mb", "custom")
TLS_FILES = ("cert", "key", "ca")  # PEM files, relative to the config file's folder
TLS_KEYS = (*TLS_FILES, "server_name")
TLS_EXAMPLE = ('tls = { cert = "worker.pem", key = "worker.key", ca = "ca.pem", '
               'server_name = "pit-worker" }')
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
        if values.get("tls"):
            raise ConfigError(f"{where}: tls applies to backend = \"ray\" only: a local "
                              "pool's workers are reached over unix sockets in the host's "
                              "private (0700) run directory, never over a network",
                              details={"key": "tls"}, hint='remove tls, or set backend = "ray"')
        for key in ("ray_address", "resources", "placement", "ray_calls"):
            if values.get(key) and (key != "ray_calls" or values[key] != "auto"):
                raise ConfigError(f"{where}: {key} applies to backend = \"ray\" only",
                                  hint=f'set backend = "ray", or remove {key}')
        return
    values["tls"] = check_tls(values.get("tls") or {}, where)
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


def tls_paths(table: Any, base: Path) -> Any:
    """A ``tls`` table of a config file with its file paths made relative to ``base`` (the
    file's folder); anything else unchanged, for `check_tls` to refuse."""
    if not isinstance(table, Mapping):
        return table
    return {k: str(base / Path(v).expanduser())
            if k in TLS_FILES and isinstance(v, str) and v else v for k, v in table.items()}


def check_tls(table: Mapping[str, Any], where: str) -> dict[str, str]:
    """A Ray pool's ``tls`` table, checked (keys, and files that exist; what they hold is
    read when a worker starts: `protocol.tls.read_pool_tls`), with absolute paths
    (relative ones: from the working directory). {}: no TLS."""
    if not table:
        return {}
    for key, v in table.items():
        if key not in TLS_KEYS:
            raise ConfigError(f"{where}: tls has no key {key!r}; its keys: "
                              f"{', '.join(TLS_KEYS)}", details={"key": f"tls.{key}"},
                              hint=f"e.g. {TLS_EXAMPLE}")
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{where}: tls.{key} = {v!r} is invalid; expected "
                              f"{'a name' if key == 'server_name' else 'a file path'}",
                              details={"key": f"tls.{key}"}, hint=f"e.g. {TLS_EXAMPLE}")
    why = {"cert": "the workers serve TLS with a certificate and its key",
           "key": "the workers serve TLS with a certificate and its key",
           "ca": "the host verifies the workers' certificates against this CA"}
    for key in TLS_FILES:
        if key not in table:
            given = " and ".join(f"tls.{k}" for k in TLS_FILES if k in table) or \
                "only tls.server_name"  # the one other key it can have here
            raise ConfigError(f"{where}: tls.{key} is missing ({given} given): {why[key]}",
                              details={"key": f"tls.{key}"},
                              hint=f"add {key} = \"...\" to tls; e.g. {TLS_EXAMPLE}")
    out = {k: str(Path(v).expanduser().absolute()) if k in TLS_FILES else v
           for k, v in table.items()}
    for key in TLS_FILES:
        if not Path(out[key]).is_file():
            raise ConfigError(f"{where}: tls.{key} = {table[key]!r}: no such file "
                              f"({out[key]})", details={"key": f"tls.{key}"},
                              hint="paths in pit.toml are relative to its folder (in code: to "
                                   "the working directory); check the path")
    return out
