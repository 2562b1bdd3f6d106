"""The public API type-checks in a user's code: `mypy --strict` passes on a script using
Pool, AsyncPool, Pools, PoolExecutor, execute, stream, Adapter, tool, the errors and the
pytest plugin's PoolFixture (tests/fixtures/typed_user_script.py), and fails on a script that
misuses them, so the names are really typed, not Any."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "fixtures" / "typed_user_script.py"
MYPY_TIMEOUT_S = 300
MISUSE = """\
from runtime import Adapter, Pool, tool

class A(Adapter):
    @tool
    def twice(self, x: int) -> int:
        return 2 * x

n: str = A().twice(2)
Pool(size=1).execute(42)
"""


def test_mypy_strict_passes_a_user_script_and_fails_a_misuse(tmp_path: Path) -> None:
    shutil.copy(SCRIPT, tmp_path / "user.py")
    (tmp_path / "misuse.py").write_text(MISUSE)
    run = subprocess.run(  # one run for both: mypy's start-up is most of its time
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(tmp_path / ".mypy_cache"), "user.py", "misuse.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=MYPY_TIMEOUT_S)
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert errors and all(line.startswith("misuse.py:") for line in errors), run.stdout
    assert 'Incompatible types in assignment (expression has type "int", variable has type ' \
           '"str")' in run.stdout
    assert 'Argument 1 to "execute" of "Pool" has incompatible type "int"' in run.stdout
    assert len(errors) == 2, run.stdout


def test_every_lazy_export_is_seen_by_type_checkers() -> None:
    """runtime/__init__ resolves its names lazily; a name missing from its TYPE_CHECKING
    imports is Any to mypy (and an error under --strict where a class is subclassed)."""
    import runtime

    tree = ast.parse(Path(runtime.__file__).read_text())
    typed = {alias.asname or alias.name
             for node in tree.body
             if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
             for imp in node.body if isinstance(imp, ast.ImportFrom)
             for alias in imp.names}
    assert typed == set(runtime._EXPORTS)
