"""House rules the linters do not check, for `make lint` (CONVENTIONS #5):

1. No import cycle inside `runtime/`, counting every import: at module level, inside
   functions, and under `if TYPE_CHECKING:` (a cycle there is still two modules that cannot be
   understood one without the other).
2. No module reads another module's private names: ``from .mod import _name``, or
   ``obj._name`` where ``obj`` is not ``self``/``cls`` and ``_name`` is not defined in the same
   module (as ``self._name``, a ``_name`` method or class attribute). Pass a narrow protocol or
   a callback instead.

Usage: python scripts/check_structure.py [ROOT]   (exit 1 and a list when a rule is broken)
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

GENERATED = "_pb2"


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        if GENERATED in path.name:
            continue
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, tree: ast.Module, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{a.name}" for a in node.names} & known.keys()
            # `from . import sibling` depends on the sibling, not on the package's __init__
            if len(submodules) < len(node.names) and target in known:
                submodules.add(target)
            out.update(submodules - {name})
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known and a.name != name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def defined_privates(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            names.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent.parent / "runtime"
    known = modules(root)
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in known.items()}
    graph = defaultdict(set, {n: imports(n, known[n], t, known) for n, t in trees.items()})
    own = {name: defined_privates(tree) for name, tree in trees.items()}
    everyone = set().union(*own.values())
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "")
                                                     .startswith(root.name)):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        problems.append(f"{known[name]}:{node.lineno}: imports another "
                                        f"module's private {alias.name}")
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in everyone and node.attr not in own[name]:
                problems.append(f"{known[name]}:{node.lineno}: reads another module's private "
                                f"{ast.unparse(node)}")
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
