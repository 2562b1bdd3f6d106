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

# A key is secret when one of its word parts (split at ``_``, ``-``, ``.`` and camelCase) says
# so. Parts, not substrings, so that ``keyboard``, ``monkey``, ``max_tokens`` or ``author``
# stay readable while ``pwd``, ``session_key``, ``X-Api-Key`` or ``accessToken`` are masked.
_KEY_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_SECRET_PART = re.compile(
    r"pass|password|passwd|passphrase|passcode|pwd|creds?|"
    r"secret\w*|credential\w*|cookie\w*|"
    r"auth(?!or(?!iz))\w*|"          # auth, authorization, authToken; not author(s), authority
    r"\w*token|"                      # token, access_token, authtoken; not tokens, tokenizer
    r"(api|access|private|session)keys?")  # the one-word spellings of *_key
_KEY_WORDS = ("key", "keys")            # as a last part after another: api_key, sessionKey


def is_secret_key(name: str) -> bool:
    """Whether a mapping key or ``name=value`` name looks like it holds a secret: a word part
    of it is a password word (``password``, ``pwd``, ``passphrase``), starts with ``secret``,
    ``auth``, ``credential`` or ``cookie``, is a ``token``, or its last part is ``key``
    (``api_key``, ``private-key``, ``sessionKey``; a bare ``key`` is not)."""
    parts = [p.lower() for p in _KEY_PARTS.findall(name)]
    if len(parts) > 1 and parts[-1] in _KEY_WORDS:
        return True
    return any(_SECRET_PART.fullmatch(p) for p in parts)


# ``key=value``, ``key: value``, ``"key": value``; the key is judged by is_secret_key and the
# value is found by _value_end, so that a list or dict value is masked whole.
_KEY_VALUE = re.compile(r"""(?P<q>["']?)(?P<name>[\w.-]+)(?P=q)[ \t]*(?P<sep>[:=])[ \t]*""")
_STRING_START = re.compile(r"""[bBrRuU]{0,2}["']""")    # Python reprs: b'...', r"..."
_AUTH_SCHEME = re.compile(r"(?:Bearer|Basic|Token|Digest)[ \t]+", re.I)
_BARE = re.compile(r"""[^\s"',;}]*""")
# Header lines whose value is a whole list of secrets ("Cookie: a=1; sid=2") or a scheme and a
# credential ("Authorization: Token abc"): masked to the end of the line.
_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")

_PATTERNS = [
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.I), r"\1 ***"),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{16,}"), "***"),        # OpenAI/Stripe style keys
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), "***"),            # GitHub tokens
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "***"),             # AWS access key ids
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),            # user:password@ in URLs
]


def _string_end(text: str, i: int) -> int:
    """Index past the quoted string opening at ``text[i]``; an unclosed one runs to the end."""
    quote, j = text[i], i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text[j] == quote:
            return j + 1
        else:
            j += 1
    return len(text)


def _bracket_end(text: str, i: int) -> int:
    """Index past the list/dict/tuple opening at ``text[i]``, nested ones and quoted brackets
    included; an unclosed one (a message cut short) runs to the end."""
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
            if depth == 0:
                return j + 1
        elif c in "\"'":
            j = _string_end(text, j)
            continue
        j += 1
    return len(text)


def _value_end(text: str, i: int, header: bool) -> int:
    """Index past the value starting at ``text[i]``, whatever its JSON or Python type."""
    if header:
        eol = text.find("\n", i)
        return len(text) if eol < 0 else eol
    string = _STRING_START.match(text, i)
    if string:
        return _string_end(text, string.end() - 1)
    if text[i:i + 1] in ("[", "{", "("):
        return _bracket_end(text, i)
    scheme = _AUTH_SCHEME.match(text, i)
    bare = _BARE.match(text, scheme.end() if scheme else i)
    return bare.end() if bare else i


def _mask_key_values(text: str) -> str:
    """``text`` with the value of every secret-named key replaced by ``***``."""
    out: list[str] = []
    done = 0
    for m in _KEY_VALUE.finditer(text):
        if m.start() < done or not is_secret_key(m["name"]):
            continue
        header = not m["q"] and m["sep"] == ":" and m["name"].lower() in _HEADERS
        end = _value_end(text, m.end(), header)
        if end > m.end():
            out += [text[done:m.end()], "***"]
            done = end
    return "".join(out) + text[done:]


def logger(category: str) -> logging.Logger:
    """The logger of one category (``pit.pool``, ``pit.worker``, ...)."""
    return logging.getLogger(f"pit.{category}")


def redact_text(text: str) -> str:
    """``text`` with secrets in common patterns replaced by ``***``: the whole value of a
    secret-named key (string, number, list or dict), bearer tokens, well-known key formats and
    URL passwords."""
    text = _mask_key_values(text)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact(value: Any) -> Any:
    """A copy of call arguments fit for a log: secret-named keys and secret-looking strings
    masked, long values shortened."""
    if isinstance(value, Mapping):
        return {k: "***" if isinstance(k, str) and is_secret_key(k) else redact(v)
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
