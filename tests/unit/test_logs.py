"""pit's logging: levels per category, redaction, and a library that configures nothing."""

from __future__ import annotations

import logging

import pytest

from runtime import logs


@pytest.mark.parametrize("text, leaked", [
    ("password=hunter2 user=bob", "hunter2"),
    ('{"api_key": "abc123def456", "n": 1}', "abc123def456"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
    ("key sk-proj-0123456789abcdefghij in text", "0123456789abcdefghij"),
    ("token ghp_0123456789abcdefghijABCDEFGHIJ", "ghp_0123456789"),
    ("aws AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"),
    ("postgres://app:s3cret@db:5432/x", "s3cret"),
    ("DB_PASSWORD: 'pa ss'", "'pa"),
])
def test_secrets_in_common_patterns_are_redacted(text: str, leaked: str) -> None:
    clean = logs.redact_text(text)
    assert leaked not in clean and "***" in clean


def test_redact_masks_secret_named_arguments_and_keeps_the_rest() -> None:
    args = {"user": "bob", "password": "hunter2", "opts": {"apiKey": "x", "n": 3},
            "blob": b"\0" * 10, "items": list(range(30))}
    out = logs.redact(args)
    assert out["user"] == "bob" and out["password"] == "***" and out["opts"] == {
        "apiKey": "***", "n": 3}
    assert out["blob"] == "<10 bytes>" and out["items"][-1] == "..."


def test_parse_levels_per_category_and_clear_errors() -> None:
    assert logs.parse_levels("error,pool=debug") == {"": logging.ERROR, "pool": logging.DEBUG}
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        logs.parse_levels("loud")
    with pytest.raises(ValueError, match="unknown log category 'pol'.*categories: pool"):
        logs.parse_levels("pol=debug")


def test_library_adds_only_a_null_handler_and_never_touches_root() -> None:
    root_handlers = list(logging.getLogger().handlers)
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("pit").handlers)
    import runtime.pool.async_pool  # noqa: F401 - importing the host side configures nothing

    assert logging.getLogger().handlers == root_handlers


def test_configure_routes_categories_and_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        logs.configure("error,pool=debug")
        logs.logger("pool").debug("call login(%s)", {"password": "hunter2"})
        logs.logger("worker").debug("not shown")
        logs.logger("env").error("uv failed token=abc123")
        err = capsys.readouterr().err
        assert "pit DEBUG pit.pool: call login" in err and "hunter2" not in err
        assert "not shown" not in err and "token=***" in err
    finally:
        logs.configure("error")
