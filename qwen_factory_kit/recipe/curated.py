"""The curated recipes in the repository's ``recipes/`` folder: ``qfk recipe ls`` / ``qfk recipe cp``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import QfkError


def curated_dir() -> Path:
    for c in (Path(__file__).resolve().parents[2] / "recipes", Path(sys.prefix) / "share" / "qwen_factory_kit" / "recipes"):
        if c.is_dir() and any(c.glob("*.yaml")):
            return c
    raise QfkError("cannot find the curated recipes folder", "run from a clone of the repository (pip install -e .)")


def describe(path: Path) -> str:
    """The first header line after ``qfk recipe:`` (what the recipe does)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# qfk recipe:"):
            return line.split(":", 1)[1].strip()
    return ""


def curated() -> dict[str, Path]:
    return {p.stem: p for p in sorted(curated_dir().glob("*.yaml"))}


def find(name: str) -> Path:
    items = curated()
    key = name.removesuffix(".yaml")
    if key not in items:
        close = [n for n in items if key.lower() in n.lower()][:5]
        raise QfkError(f"no curated recipe '{name}'", f"did you mean {', '.join(close)}?" if close else "list them with: qfk recipe ls")
    return items[key]


def copy(name: str, dest: str, *, force: bool = False) -> Path:
    from .document import write_text

    src = find(name)
    target = Path(dest)
    if target.is_dir():
        target = target / src.name
    return write_text(target, src.read_text(encoding="utf-8"), force=force)


@dataclass
class Copied:
    path: Path
    data_dir: str
    registered: list[str]  # the *__nN mix entries the copy registered in data_dir


def copy_curated(name: str, dest: str, *, force: bool = False) -> Copied:
    """Copy curated recipe ``name`` to ``dest`` and register the mix entries it names (when their
    base datasets are registered in its dataset_dir)."""
    from .build import register_mix_entries
    from .document import load_recipe

    path = copy(name, dest, force=force)
    data_dir, made = register_mix_entries(load_recipe(path))
    return Copied(path, data_dir, made)
