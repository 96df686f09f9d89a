"""The curated recipes in the repository's ``recipes/`` folder: ``qfk recipe ls`` / ``qfk recipe cp``."""

from __future__ import annotations

import re
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
    """Copy curated recipe ``name`` to ``dest`` (a file, or a folder to copy into); the header's
    commands name the copy as ``dest`` gives it."""
    from .document import write_text

    src = find(name)
    target = Path(dest)
    if target.is_dir():
        target = target / src.name
    text = rename_in_header(src.read_text(encoding="utf-8"), src.name, command_path(target))
    return write_text(target, text, force=force)


def command_path(path: Path) -> str:
    """``path`` as the header's commands write it: as given (relative to the folder they run
    from), quoted for the shell when it needs to be."""
    import shlex

    return shlex.quote(path.as_posix())


def rename_in_header(text: str, old: str, new: str) -> str:
    """``text`` with every mention of the file name ``old`` in its comment header (the ``#``
    lines before the first key) replaced by ``new``; other names that merely contain ``old``
    (``x-old.yaml``, ``dir/old.yaml.bak``) and the keys are left alone."""
    if old == new:
        return text
    pattern = re.compile(rf"(?<![\w./-]){re.escape(old)}(?!\.?[\w/-])")
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break
        lines[i] = pattern.sub(lambda _: new, line)
    return "".join(lines)


@dataclass
class Copied:
    path: Path
    data_dir: str
    registered: list[str]  # the *__nN / *__tN mix entries the copy registered in data_dir


def copy_curated(name: str, dest: str, *, force: bool = False) -> Copied:
    """Copy curated recipe ``name`` to ``dest`` and register the mix entries it names (when their
    base datasets are registered in its dataset_dir)."""
    from .mix import register_mix_entries
    from .document import load_recipe

    path = copy(name, dest, force=force)
    data_dir, made = register_mix_entries(load_recipe(path))
    return Copied(path, data_dir, made)
