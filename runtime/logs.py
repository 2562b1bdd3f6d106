"""pit's logging: quiet by default, one logger per category, secrets redacted.

Loggers are ``pit.<category>`` for CATEGORIES. As a library pit only adds a ``NullHandler`` to
``pit`` and never touches the root logger; your own logging config decides what you see.
`configure()` (called by the CLI, and by the first pool a host starts when ``PIT_LOG_LEVEL``
is set) puts one stderr handler on ``pit``. Levels: ``PIT_LOG_LEVEL=debug`` or per category,
``PIT_LOG_LEVEL=error,pool=debug,worker=info``. Worker stdout/stderr goes to ``pit.worker``
at debug level, prefixed with ``[pool/worker-id]``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

CATEGORIES = ("pool", "worker", "grpc", "lifecycle", "env", "cli", "telemetry")
ENV_VAR = "PIT_LOG_LEVEL"
DEFAULT_LEVEL = "error"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}

logging.getLogger("pit").addHandler(logging.NullHandler())

SECRET_KEY = re.compile(r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|auth(orization)?|"
                        r"credential|private[_-]?key|access[_-]?key)", re.I)
_PATTERNS = [
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.I), r"\1 ***"),
    # key=value / key: value / "key": "value" with a secret-looking key
    (re.compile(r"""(?P<k>["']?[\w-]*(?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|"""
                r"""authorization|credential|private[_-]?key|access[_-]?key)[\w-]*["']?"""
                r"""\s*[:=]\s*)(?P<v>"[^"]*"|'[^']*'|(?!Bearer |Basic )[^\s"',;}]+)""",
                re.I),
     r"\g<k>***"),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{16,}"), "***"),        # OpenAI/Stripe style keys
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), "***"),            # GitHub tokens
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "***"),             # AWS access key ids
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),            # user:password@ in URLs
]


def logger(category: str) -> logging.Logger:
    """The logger of one category (``pit.pool``, ``pit.worker``, ...)."""
    return logging.getLogger(f"pit.{category}")


def redact_text(text: str) -> str:
    """``text`` with secrets in common patterns replaced by ``***``."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact(value: Any) -> Any:
    """A copy of call arguments fit for a log: secret-named keys and secret-looking strings
    masked, long values shortened."""
    if isinstance(value, Mapping):
        return {k: "***" if isinstance(k, str) and SECRET_KEY.search(k) else redact(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value[:20]] + (["..."] if len(value) > 20 else [])
    if isinstance(value, str):
        text = redact_text(value)
        return text if len(text) <= 200 else text[:200] + "..."
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    return value


class RedactingFilter(logging.Filter):
    """Masks secrets in the final message of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def parse_levels(spec: str) -> dict[str, int]:
    """``"error,pool=debug"`` -> {"": ERROR, "pool": DEBUG}; raises ValueError naming the bad
    part."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        category, _, level = part.rpartition("=")
        level = level.lower()
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r} in {spec!r}; use one of "
                             f"{', '.join(LEVELS)}")
        if category and category not in CATEGORIES:
            raise ValueError(f"unknown log category {category!r} in {spec!r}; categories: "
                             f"{', '.join(CATEGORIES)}")
        out[category] = LEVELS[level]
    return out


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (tests and tools swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


_handler: logging.Handler | None = None


def configure(spec: str | None = None) -> None:
    """Send pit's logs to stderr at the levels of ``spec`` (default: $PIT_LOG_LEVEL, else
    errors only). Touches only the ``pit`` logger tree; calling again replaces the levels."""
    global _handler
    levels = parse_levels(spec or os.environ.get(ENV_VAR) or DEFAULT_LEVEL)
    root = logging.getLogger("pit")
    if _handler is None:
        _handler = _StderrHandler()
        _handler.setFormatter(logging.Formatter("pit %(levelname)s %(name)s: %(message)s"))
        _handler.addFilter(RedactingFilter())
        root.addHandler(_handler)
        root.propagate = False  # we print it; the user's root handlers would print it twice
    root.setLevel(levels.get("", LEVELS[DEFAULT_LEVEL]))
    for category in CATEGORIES:
        logger(category).setLevel(levels.get(category, logging.NOTSET))


def configure_from_env() -> None:
    """`configure()` when $PIT_LOG_LEVEL is set and nothing configured pit yet."""
    if _handler is None and os.environ.get(ENV_VAR):
        try:
            configure()
        except ValueError as exc:
            logging.getLogger("pit").warning("ignoring %s: %s", ENV_VAR, exc)
