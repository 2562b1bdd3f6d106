"""Lines `pit` prints as plain text, shared by the Typer commands and the entry's quick
answers (`entry`) so that both say the same words: what `pit status` says of hosts it did not
find, and `pit --version`. Imports nothing: the quick answers must stay light."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~10 ms here (re, enum); type checkers read this name
if TYPE_CHECKING:
    from runtime.versions import Versions


def orphan_note(n: int) -> str:
    return f"{n} orphaned worker{'s' if n != 1 else ''}: run `pit cleanup`"


def no_host_text(instance: str | None, orphans: int) -> str:
    """What `pit status` prints on stderr when no host (or no host ``instance``) runs."""
    what = f"instance {instance!r}" if instance else "pit host"
    return (f"no running {what} on this machine (start one with `pit run script.py`, or add "
            "--wait to wait for one)" + (f"; {orphan_note(orphans)}" if orphans else ""))


def versions_text(v: Versions) -> str:
    """`pit --version`: one line per thing (scripts read it)."""
    return (f"pit {v.pit}\nPython {v.python} {v.python_path}\ngrpcio {v.grpcio}\n"
            + (f"{v.uv} {v.uv_path}" if v.uv_path else f"uv {v.uv}"))
