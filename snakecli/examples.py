"""The "Examples" epilog of every `pit` command's --help (a test checks each has one)."""

from __future__ import annotations

EXAMPLES: dict[str, list[str]] = {
    "pit": ["pit setup && pit run app.py",
            "pit call default add '{\"a\": 1, \"b\": 2}'",
            "pit status --watch",
            "pit --version"],
    "run": ["pit run app.py",
            "pit run -p gpu train.py --epochs 3",
            "pit run -m mypackage.main --verbose"],
    "call": ["pit call default add '{\"a\": 1, \"b\": 2}'",
             "pit call default ping",
             "pit call --instance 3f2a default echo '{\"x\": [1, 2]}'"],
    "stop": ["pit stop",
             "pit stop --instance 3f2a",
             "pit stop --all"],
    "cleanup": ["pit cleanup --dry-run",
                "pit cleanup",
                "pit cleanup --force --yes",
                "pit cleanup --ray-address auto"],
    "setup": ["pit setup",
              "pit -v setup --pool gpu --force",
              "pit setup --check"],
    "doctor": ["pit doctor",
               "pit doctor --json"],
    "hardware": ["pit hardware",
                 "pit hardware --json",
                 "pit hardware --ray auto"],
    "gen": ["pit gen adapter weather"],
    "gen adapter": ["pit gen adapter weather",
                    "pit gen adapter weather --force"],
    "status": ["pit status",
               "pit status --watch --pool default",
               "pit status --json --instance 3f2a"],
    "profile-inspector": ["pit profile-inspector --recommendations",
                          "pit profile-inspector --detailed --pool default --json"],
    "version": ["pit version",
                "pit --version"],
    "logs": ["pit logs",
             "pit logs -f --pool default",
             "pit logs --worker worker-1 --since 5m --json"],
    "export": ["pit export grafana > pit.json"],
    "export grafana": ["pit export grafana > pit.json"],
}


def epilog(command: str) -> str:
    """The epilog of ``command`` (its path after `pit`, "pit" for pit itself). Click rewraps
    help paragraphs; the \\b line keeps each example on its own line."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])
