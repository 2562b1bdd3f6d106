"""`pit gen adapter`'s files (runtime.scaffold): templates found in a checkout, and the
first adapter made the config's default_pool."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runtime.config import load_config
from runtime.errors import ConfigError
from runtime.scaffold import generate_adapter, template_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_the_templates_are_found_in_a_checkout() -> None:
    assert (template_dir() / "test_adapter.py.tmpl").is_file()


def test_the_first_adapter_becomes_the_default_pool(tmp_path: Path) -> None:
    generate_adapter("weather", tmp_path)
    generate_adapter("other", tmp_path)
    data = tomllib.loads((tmp_path / "pit.toml").read_text())
    assert data["default_pool"] == "weather"
    assert list(data["pools"]) == ["weather", "other"]
    assert load_config(cwd=tmp_path).default_pool == "weather"


def test_default_pool_opens_a_config_that_had_no_pool(tmp_path: Path) -> None:
    (tmp_path / "pit.toml").write_text("# mine\n[telemetry]\nprometheus_port = 0\n")
    generate_adapter("weather", tmp_path)
    text = (tmp_path / "pit.toml").read_text()
    assert text.startswith('default_pool = "weather"\n')
    assert "# mine\n[telemetry]" in text  # the user's lines stay as they were
    assert load_config(cwd=tmp_path).default_pool == "weather"


def test_an_existing_pool_table_is_not_given_a_default(tmp_path: Path) -> None:
    (tmp_path / "pit.toml").write_text("[pools.a]\nsize = 1\n[pools.b]\nsize = 1\n")
    generate_adapter("weather", tmp_path)
    assert "default_pool" not in tomllib.loads((tmp_path / "pit.toml").read_text())


def test_a_bad_name_says_what_a_name_may_be(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a Python identifier") as caught:
        generate_adapter("my-adapter", tmp_path)
    assert caught.value.hint and "underscores" in caught.value.hint
