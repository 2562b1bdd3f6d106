"""The exit codes `pit` commands map error categories to (README: "Exit codes").

The library only names categories (`runtime.errors.PitError.category`); which number a
category becomes is the CLI's business.
"""

from __future__ import annotations

EXIT_CODES: dict[str, int] = {
    "config": 2,
    "environment": 4,
    "pool_not_found": 2,
    "worker_start": 5,
    "pool_not_ready": 5,
}
