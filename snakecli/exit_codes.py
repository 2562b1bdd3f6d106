"""The exit codes `pit` commands map error categories to (README: "Exit codes").

The library only names categories (`runtime.errors.PitError.category`); which number a
category becomes is the CLI's business.
"""

from __future__ import annotations

EXIT_CODES: dict[str, int] = {  # what `pit run` (and setup, doctor ...) map start-up errors to
    "config": 2,
    "environment": 4,
    "pool_not_found": 2,
    "worker_start": 5,
    "pool_not_ready": 5,
}
EXIT_NO_HOST = 3  # the commands that talk to a running host: none runs (or several, unnamed)


def exit_code(category: str, default: int) -> int:
    """The exit code of a command that talks to running hosts, for an error of ``category``."""
    return EXIT_NO_HOST if category == "no_instance" else EXIT_CODES.get(category, default)
