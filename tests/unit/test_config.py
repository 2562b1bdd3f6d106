from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import (
    DEFAULT_ADAPTER,
    ensure_state_dir,
    find_config,
    load_config,
    make_pool_config,
)
from runtime.errors import ConfigError


def test_defaults_without_any_file(tmp_path: Path) -> None:
    cfg = load_config(cwd=tmp_path)
    assert cfg.path is None and list(cfg.pools) == ["default"]
    assert cfg.pools["default"].adapter == DEFAULT_ADAPTER


def test_pit_toml_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    (tmp_path / "pit.toml").write_text('[pools.a]\nsize = 3\nenv = {X = "1"}\n')
    sub = tmp_path / "x" / "y"
    sub.mkdir(parents=True)
    assert find_config(sub) == tmp_path / "pit.toml"
    cfg = load_config(cwd=sub)
    assert cfg.pools["a"].size == 3 and cfg.pools["a"].env == {"X": "1"}
    assert cfg.pools["a"].worker_env()["OMP_NUM_THREADS"] == "1"


def test_pyproject_tool_pit(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.pit.pools.default]\nsize = 2\n')
    cfg = load_config(cwd=tmp_path)
    assert cfg.path == tmp_path / "pyproject.toml" and cfg.pools["default"].size == 2


def test_pyproject_without_tool_pit_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_config(tmp_path) is None or find_config(tmp_path) != tmp_path / "pyproject.toml"


@pytest.mark.parametrize("body, fragments", [
    ("[pools.a]\nsise = 2\n", ["pit.toml: [pools.a]", "unknown key 'sise'", "did you mean 'size'"]),
    ("[pools.a]\nsize = 0\n", ["size = 0 is invalid", "an integer >= 1"]),
    ("[pools.a]\nadapter = \"nocolon\"\n", ["adapter", "package.module:ClassName"]),
    ("[pools.a]\nenv = {X = 1}\n", ["env", "string = string"]),
    ("[poolz.a]\n", ["unknown key 'poolz'"]),
    ("[pools.a\n", ["not valid TOML"]),
])
def test_bad_config_names_file_key_and_accepted_values(tmp_path: Path, body: str,
                                                        fragments: list[str]) -> None:
    (tmp_path / "pit.toml").write_text(body)
    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("adapter, ok", [
    ("pkg.mod:Class", True), ("mod:Class", True),
    ("pkg.mod.Class", True),  # Snakepit's dotted form (runtime/worker/snakepit_adapters.py)
    ("nocolon", False), ("pkg.mod:", False), ("a:b:C", False), ("pkg..Class", False),
    ("pkg.mod.Class-2", False),
])
def test_adapter_is_pits_form_or_snakepits_dotted_form(adapter: str, ok: bool) -> None:
    if ok:
        assert make_pool_config(adapter=adapter).adapter == adapter
    else:
        with pytest.raises(ConfigError, match="Snakepit's 'package.module.ClassName'"):
            make_pool_config(adapter=adapter)


def test_state_dir_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIT_STATE_DIR", str(tmp_path / "s"))
    assert load_config(cwd=tmp_path).state_dir == tmp_path / "s"
    monkeypatch.delenv("PIT_STATE_DIR")
    (tmp_path / "pit.toml").write_text('state_dir = "st"\n')
    assert load_config(cwd=tmp_path).state_dir == tmp_path / "st"


def test_keyword_options_are_validated_like_the_file() -> None:
    assert make_pool_config(size=4).size == 4
    with pytest.raises(ConfigError, match="unknown key 'sizee'"):
        make_pool_config(sizee=4)
    with pytest.raises(ConfigError, match="pool name"):
        make_pool_config("bad name")


def test_pit_config_env_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIT_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config()


def test_tool_bridge_takes_a_token_and_a_port(tmp_path: Path) -> None:
    assert load_config(cwd=tmp_path).tool_bridge.token == ""
    path = tmp_path / "pit.toml"
    path.write_text('[tool_bridge]\ntoken = "0123456789abcdef-long"\ntcp_port = 50777\n')
    cfg = load_config(path)
    assert (cfg.tool_bridge.token, cfg.tool_bridge.tcp_port) == ("0123456789abcdef-long", 50777)
    assert "0123456789abcdef" not in repr(cfg)  # the secret stays out of logs and tracebacks


@pytest.mark.parametrize(("table", "message"), [
    ('token = "short"', "at least 16 characters"),
    ("token = 12", "at least 16 characters"),
    ('token = " 0123456789abcdef "', "without surrounding spaces"),
    ("tcp_port = 50777", "needs a token"),
    ('token = "0123456789abcdef"\ntcp_port = 70000', "must be a TCP port"),
    ("tokn = 1", "did you mean 'token'"),
])
def test_tool_bridge_refuses_what_would_leave_tcp_open(tmp_path: Path, table: str,
                                                       message: str) -> None:
    path = tmp_path / "pit.toml"
    path.write_text(f"[tool_bridge]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_default_pool_names_the_pool_runtime_execute_calls(tmp_path: Path) -> None:
    (tmp_path / "pit.toml").write_text(
        'default_pool = "b"\n[pools.a]\nsize = 1\n[pools.b]\nsize = 1\n')
    assert load_config(cwd=tmp_path).default_pool == "b"


def test_a_default_pool_that_names_no_pool_lists_the_pools(tmp_path: Path) -> None:
    (tmp_path / "pit.toml").write_text('default_pool = "c"\n[pools.a]\n[pools.b]\n')
    with pytest.raises(ConfigError, match=r"default_pool = 'c' names no pool; pools: a, b"):
        load_config(cwd=tmp_path)


def test_a_state_dir_pit_creates_is_ignored_by_git(tmp_path: Path) -> None:
    made = ensure_state_dir(tmp_path / "project" / ".pit")
    assert (made / ".gitignore").read_text().splitlines()[-1] == "*"
    existing = tmp_path / "mine"
    existing.mkdir()
    ensure_state_dir(existing)  # a folder the user made (PIT_STATE_DIR=...) is left as it is
    assert list(existing.iterdir()) == []
