"""The plain-text lines `pit status` says about hosts it did not find, shared by the Typer
command (`status_cmd`), its live view (`status_view`) and the entry's quick answer (`entry`),
so that each says the same words. Imports nothing: the quick answer must stay light."""

from __future__ import annotations


def orphan_note(n: int) -> str:
    return f"{n} orphaned worker{'s' if n != 1 else ''}: run `pit cleanup`"


def no_host_text(instance: str | None, orphans: int) -> str:
    """What `pit status` prints on stderr when no host (or no host ``instance``) runs."""
    what = f"instance {instance!r}" if instance else "pit host"
    return (f"no running {what} on this machine (start one with `pit run script.py`, or add "
            "--wait to wait for one)" + (f"; {orphan_note(orphans)}" if orphans else ""))
