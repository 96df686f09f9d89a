"""A recipe as a document: LLaMA-Factory keys in commented groups, rendered as YAML that
``llamafactory-cli`` reads as it is, and loaded back the way LLaMA-Factory loads it
(OmegaConf, then ``key=value`` overrides merged on top).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import QfkError

#: recipe keys holding paths (relative to the folder the recipe runs from); the one list that
#: ``recipe check`` (spaces break torchrun) and bundles (paths must stay inside) share
PATH_KEYS = ("output_dir", "dataset_dir", "adapter_name_or_path", "export_dir", "deepspeed", "cache_dir",
             "tokenized_path", "media_dir", "logging_dir", "resume_from_checkpoint")
#: recipe keys holding a hub id or a local path
MODEL_KEYS = ("model_name_or_path", "ref_model", "reward_model")

_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./,:@+\-]*")


def scalar(value: Any) -> str:
    """One YAML scalar that both PyYAML (YAML 1.1) and OmegaConf read back as ``value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QfkError(f"{value} cannot go into a recipe")
        if value != 0 and abs(value) < 1e-3:
            mant, exp = f"{value:.6e}".split("e")
            mant = mant.rstrip("0")
            mant = mant + "0" if mant.endswith(".") else mant
            return f"{mant}e{int(exp):+03d}"  # 1.0e-05: a dot and a signed exponent (YAML 1.1 float)
        return repr(value)
    if isinstance(value, str):
        import yaml

        if _PLAIN.fullmatch(value):
            try:
                from omegaconf import OmegaConf

                if yaml.safe_load(value) == value and OmegaConf.to_container(OmegaConf.create(f"k: {value}"))["k"] == value:
                    return value  # plain only when PyYAML and OmegaConf (which reads 1e-5 as a float) agree
            except Exception:  # noqa: BLE001 - any parse trouble: quote it
                pass
        return json.dumps(value, ensure_ascii=False)
    raise QfkError(f"a recipe value must be a scalar, not {type(value).__name__}: {value!r}")


@dataclass
class Recipe:
    """LLaMA-Factory arguments in ordered, titled groups, with a comment header."""

    kind: str = "train"                                  # train | predict | merge
    header: list[str] = field(default_factory=list)
    sections: list[tuple[str, dict]] = field(default_factory=list)
    comments: dict[str, str] = field(default_factory=dict)  # key -> inline comment
    info: dict = field(default_factory=dict)              # what the kit decided and why (for --json)

    @property
    def args(self) -> dict:
        out: dict = {}
        for _, keys in self.sections:
            out.update(keys)
        return out

    def section(self, title: str) -> dict:
        for t, keys in self.sections:
            if t == title:
                return keys
        keys: dict = {}
        self.sections.append((title, keys))
        return keys

    def set(self, key: str, value: Any, *, comment: str | None = None, default_section: str = "training") -> None:
        """Set ``key`` where it already is, else in ``default_section``."""
        for _, keys in self.sections:
            if key in keys:
                keys[key] = value
                break
        else:
            self.section(default_section)[key] = value
        if comment is not None:
            self.comments[key] = comment

    def remove(self, key: str) -> None:
        for _, keys in self.sections:
            keys.pop(key, None)
        self.comments.pop(key, None)

    def render(self) -> str:
        lines = [f"# {h}".rstrip() for h in self.header]
        for title, keys in self.sections:
            if not keys:
                continue
            lines += ["", f"### {title}"]
            for key, value in keys.items():
                text = f"{key}: {scalar(value)}"
                note = self.comments.get(key)
                lines.append(f"{text}  # {note}" if note else text)
        return "\n".join(lines).lstrip("\n") + "\n"


def split_names(value: Any) -> list[str]:
    """Dataset names in a ``dataset`` / ``eval_dataset`` value: a comma-separated string or a list."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return [str(i).strip() for i in items if str(i).strip()]


def recipe_datasets(args: dict) -> list[str]:
    """Every dataset a recipe names (``dataset`` then ``eval_dataset``), each once, in order."""
    return list(dict.fromkeys(split_names(args.get("dataset")) + split_names(args.get("eval_dataset"))))


def recipe_data_dir(args: dict, run_from: str | os.PathLike | None = None) -> Path:
    """A recipe's ``dataset_dir`` (LLaMA-Factory's default: ``data``). Like every :data:`PATH_KEYS`
    path, a relative one is from the folder the recipe runs from: ``run_from`` when given, else
    left relative (the current folder, where LLaMA-Factory reads it)."""
    path = Path(str(args.get("dataset_dir") or "data"))
    return path if run_from is None or path.is_absolute() else Path(run_from) / path


def parse_overrides(items: list[str] | tuple[str, ...] | None) -> dict:
    """``key=value`` items typed the way ``llamafactory-cli`` types them (OmegaConf)."""
    if not items:
        return {}
    from omegaconf import OmegaConf

    bad = [i for i in items if "=" not in i or not i.split("=", 1)[0].strip()]
    if bad:
        raise QfkError(f"'{bad[0]}' is not key=value", "overrides look like: learning_rate=5.0e-6 num_train_epochs=3")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)))
    except Exception as exc:  # omegaconf's grammar errors
        raise QfkError(f"cannot read the overrides {list(items)}: {exc}", "write them as key=value, one per argument") from None


def load_recipe(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] | None = None) -> dict:
    """The arguments LLaMA-Factory would see for ``llamafactory-cli train PATH k=v ...``."""
    import yaml
    from omegaconf import OmegaConf

    p = Path(path)
    if not p.is_file():
        raise QfkError(f"recipe {p} not found", "write one with: qfk recipe new ... -o recipe.yaml, or qfk recipe ls")
    if p.suffix.lower() not in (".yaml", ".yml"):
        raise QfkError(f"{p} is not a .yaml file: llamafactory-cli only treats *.yaml/*.yml as a recipe",
                       f"rename it to {p.with_suffix('.yaml').name}")
    try:
        text = p.read_text(encoding="utf-8")
        yaml.safe_load(text)  # plain YAML only: no python tags
        base = OmegaConf.create(OmegaConf.to_container(OmegaConf.load(p)))
    except (yaml.YAMLError, UnicodeDecodeError, Exception) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise QfkError(f"{p} is not a valid recipe{where}: {str(exc).splitlines()[0]}",
                       "a recipe is a flat YAML mapping of LLaMA-Factory keys") from None
    data = OmegaConf.to_container(base)
    if not isinstance(data, dict):
        raise QfkError(f"{p} is not a YAML mapping", "a recipe is a flat YAML mapping of LLaMA-Factory keys")
    over = parse_overrides(overrides)
    data.update(over)
    return data


def read_header(path: str | os.PathLike) -> list[str]:
    """The comment header of a recipe file (its first ``#`` lines, up to the first blank line or key,
    ``# `` taken off), as :meth:`Recipe.render` wrote it; [] when the file cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        out.append(line[1:].removeprefix(" "))
    return out


def write_text(path: str | os.PathLike, text: str, *, force: bool = False) -> Path:
    from ..io.atomic import atomic_write_bytes

    p = Path(path)
    if p.exists() and not force:
        raise QfkError(f"{p} exists", "choose another -o, or add --force to replace it")
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, text.encode("utf-8"))
    return p
