"""scripts/check_structure.py: the import-cycle and private-access rules of `make lint`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

CHECK = [sys.executable, str(ROOT / "scripts" / "check_structure.py")]


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHECK, str(root)], capture_output=True, text=True, timeout=60)


def test_runtime_keeps_the_rules() -> None:
    out = _run(ROOT / "runtime")
    assert out.returncode == 0, out.stdout


def test_a_type_checking_cycle_and_private_reads_are_reported(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from .b import B\nclass A:\n    def __init__(self):\n"
                              "        self._secret = 1\n")
    (pkg / "b.py").write_text("from .a import A\nfrom .c import _hidden\nclass B:\n"
                              "    def peek(self, a: A) -> int:\n        return a._secret\n")
    (pkg / "c.py").write_text("def _hidden():\n    pass\nclass C:\n    def __init__(self):\n"
                              "        self._mine = 0\n    def same(self, o):\n"
                              "        return o._mine\n")
    out = _run(pkg)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert "import cycle: pkg.a <-> pkg.b" in lines
    assert any("b.py:5: reads another module's private a._secret" in ln for ln in lines)
    assert any("b.py:2: imports another module's private _hidden" in ln for ln in lines)
    assert not any("c.py" in ln for ln in lines)  # its own private, read in its own module
