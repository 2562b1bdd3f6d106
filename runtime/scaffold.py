"""`pit gen adapter NAME`: render adapters_template/ into a project."""

from __future__ import annotations

import keyword
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from .errors import ConfigError, EnvironmentProblem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_SITE = Path(__file__).resolve().parent.parent  # site-packages, or the repo's root
# Installed from the wheel, the templates are inside the CLI package (pyproject's
# force-include); in a checkout (editable install included) they are the repo's own folder.
TEMPLATE_DIRS = (_SITE / "snakecli" / "templates", _SITE / "adapters_template")


def template_dir() -> Path:
    """The folder holding ``adapter.py.tmpl`` and ``test_adapter.py.tmpl``."""
    for folder in TEMPLATE_DIRS:
        if (folder / "adapter.py.tmpl").is_file():
            return folder
    raise EnvironmentProblem(
        "the templates of `pit gen adapter` are missing: looked in "
        + " and ".join(str(d) for d in TEMPLATE_DIRS),
        hint="reinstall pit-pools (pip install --force-reinstall pit-pools)")


@dataclass(frozen=True, slots=True)
class Generated:
    module: Path
    test: Path
    config: Path
    adapter: str  # "module:Class", as written into pit.toml


def generate_adapter(name: str, project: Path, *, force: bool = False) -> Generated:
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise ConfigError(f"adapter name {name!r} is not a Python identifier",
                          hint="use letters, digits and underscores, starting with a letter")
    cls = "".join(part.capitalize() for part in name.split("_")) + "Adapter"
    values = {"name": name, "cls": cls, "module": name}
    module, test = project / f"{name}.py", project / "tests" / f"test_{name}.py"
    config = project / "pit.toml"
    existing = [p for p in (module, test) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} exists; not overwritten",
                          hint="pass --force to overwrite it")
    existing_config: dict[str, Any] = {}
    if config.exists():
        existing_config = tomllib.loads(config.read_text())
    pools = existing_config.get("pools", {})
    if name in pools and not force:
        raise ConfigError(f"{config} already has [pools.{name}]",
                          hint="pick another name, or --force to keep the entry as it is")
    templates = template_dir()
    for template, target in (("adapter.py.tmpl", module), ("test_adapter.py.tmpl", test)):
        text = string.Template((templates / template).read_text()).substitute(values)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if name not in pools:
        # Appended as text: the file's existing content and comments stay as they are.
        entry = tomli_w.dumps({"pools": {name: {"adapter": f"{name}:{cls}", "size": 2}}})
        old = config.read_text() if config.exists() else ""
        if not pools and "default_pool" not in existing_config:
            # The first adapter is the one runtime.execute() calls once a second pool exists;
            # a top-level key goes before any table, so it opens the file.
            old = tomli_w.dumps({"default_pool": name}) + ("\n" if old else "") + old
        sep = "" if not old or old.endswith("\n\n") else ("\n" if old.endswith("\n") else "\n\n")
        config.write_text(old + sep + entry)
    return Generated(module, test, config, f"{name}:{cls}")
