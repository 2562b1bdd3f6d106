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


@pytest.mark.parametrize("text", [
    # every JSON type of value, in JSON and in Python's repr (call arguments are logged so)
    '{"password": ["CREDVAL77", "x"], "n": 1}',
    '{"password": {"inner": "CREDVAL77", "deep": [1, {"x": "CREDVAL77"}]}, "n": 1}',
    '{"pwd": 7777, "n": 1}',
    "{'session_key': ['CREDVAL77'], 'n': 1}",
    "{'cookie': {'sid': 'CREDVAL77'}, 'n': 1}",
    "{'creds': b'CREDVAL77', 'n': 1}",
    "{'secret_sauce': ('CREDVAL77',), 'n': 1}",
    "private_key='CRED\\'VAL77' n=1",
    "authToken=CREDVAL77 n=1",
    "X-Api-Key: CREDVAL77",
    "clientCredentials: [CREDVAL77] n=1",
    "Cookie: theme=dark; sid=CREDVAL77",
    "Authorization: Token CREDVAL77",
    "auth=Bearer CREDVAL77 n=1",
    '{"password": ["CREDVAL77", "cut short by the log',
])
def test_a_secret_named_key_is_masked_whole_whatever_its_value(text: str) -> None:
    clean = logs.redact_text(text)
    assert "77" not in clean and "***" in clean
    if "n=1" in text or "'n': 1" in text or '"n": 1' in text:
        assert "n=1" in clean or "'n': 1" in clean or '"n": 1' in clean   # the rest stays


@pytest.mark.parametrize("name", [
    "password", "passwd", "pwd", "DB_PASSWORD", "passphrase", "secret", "client_secret",
    "secretKey", "token", "access_token", "refreshToken", "auth", "authorization",
    "Proxy-Authorization", "credential", "credentials", "cookie", "set-cookie", "api_key",
    "apiKey", "apikey", "x-api-key", "session_key", "private-key", "encryption_key"])
def test_secret_names(name: str) -> None:
    assert logs.is_secret_key(name)


@pytest.mark.parametrize("name", [
    "keyboard", "monkey", "key", "key_id", "tokens", "tokens_count", "max_tokens",
    "tokenizer", "author", "authors", "authority", "user", "session_id", "compass", "n"])
def test_harmless_names_stay_readable(name: str) -> None:
    assert not logs.is_secret_key(name)
    assert logs.redact_text(f"{name}=visible") == f"{name}=visible"


def test_redact_masks_every_secret_named_argument_whatever_its_type() -> None:
    out = logs.redact({"pwd": ["CREDVAL77"], "session_key": {"a": "CREDVAL77"}, "cookie": 7,
                       "keyboard": "qwerty", "max_tokens": 5})
    assert out == {"pwd": "***", "session_key": "***", "cookie": "***",
                   "keyboard": "qwerty", "max_tokens": 5}


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
        logs.logger("pool").debug("call login(%s)", {"session_key": ["CREDVAL77"]})
        logs.logger("worker").debug("not shown")
        logs.logger("env").error("uv failed token=abc123")
        err = capsys.readouterr().err
        assert "pit DEBUG pit.pool: call login" in err and "hunter2" not in err
        assert "CREDVAL77" not in err
        assert "not shown" not in err and "token=***" in err
    finally:
        logs.configure("error")
