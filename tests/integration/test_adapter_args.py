"""adapter_args: one adapter class, two pools, two settings (initialize(**adapter_args))."""

from __future__ import annotations

import pytest

import runtime
from runtime import ConfigError, Pool, Pools, load_config

CONFIGURED = "tests.adapters.sample:Configured"


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_two_pools_of_one_adapter_get_their_own_settings(tmp_path, start_method: str) -> None:
    path = tmp_path / "pit.toml"
    path.write_text(f"""
[pools.en]
adapter = "{CONFIGURED}"
size = 1
start_method = "{start_method}"
adapter_args = {{ greeting = "hello", scale = 2 }}

[pools.fr]
adapter = "{CONFIGURED}"
size = 1
start_method = "{start_method}"
adapter_args = {{ greeting = "bonjour", scale = 10 }}
""")
    with Pools(load_config(path)) as pools:
        assert pools["en"].execute("greet", {"name": "Ada"}) == "hello, Ada"
        assert pools["fr"].execute("greet", {"name": "Ada"}) == "bonjour, Ada"
        assert pools["fr"].execute("scaled", {"x": 3}) == 30


def test_args_the_adapter_does_not_take_are_a_start_error_naming_them() -> None:
    with pytest.raises(runtime.WorkerStartError, match=r"adapter_args \['colour'\]"):
        Pool(adapter=CONFIGURED, size=1, adapter_args={"colour": "red"},
             startup_timeout_ms=15_000).start()


def test_a_list_is_only_for_command_started_workers() -> None:
    with pytest.raises(ConfigError, match="only a command-started worker"):
        Pool(adapter=CONFIGURED, size=1, adapter_args=["--verbose"])
