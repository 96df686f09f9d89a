"""``--shard I/N``: one contiguous part of a source, converted on its own; the set of parts is one dataset.

Part I of N (I from 0) holds the source rows ``[I*T//N, (I+1)*T//N)`` (T: the rows of the whole
source, its files in order), so the parts in order are the unsharded output byte for byte: the
data files, and the rejects files too.

What works with shards: ``--limit`` (the seeded selection is drawn over the whole source, so
each part keeps the rows the unsharded run keeps), ``--max-tokens``, every converter option,
``--workers``. What cannot be exact, and is refused: ``--val-size``/``--test-size`` (their sizes
are of the rows accepted in every part), ``--dedup`` (a duplicate may sit in another part;
moses drops duplicates by default: pass ``--no-dedup``) and ``--near-dedup`` (so may a near duplicate).

Layout, for the output ``data/NAME.jsonl``: part I of N writes ``data/NAME/part-0000I-of-0000N.jsonl``
(a folder that holds the data files alone: LLaMA-Factory loads every file of a folder given as
``file_name``) and its rejects and manifest in ``data/NAME.shards/``. When every part is written,
``qfk datasets add data/NAME --name NAME`` registers the set (:func:`shard_set` checks it first).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import QfkError

PART_RE = re.compile(r"^part-(\d{5,})-of-(\d{5,})\.jsonl$")
SIDECARS = ".shards"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``I/N`` with 0 <= I < N."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise QfkError(f"--shard must be I/N with 0 <= I < N, not '{text}'",
                           "for example --shard 0/4, --shard 1/4, --shard 2/4 and --shard 3/4 for four parts")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def part(self) -> str:
        return f"part-{self.index:05d}-of-{self.count:05d}"

    def bounds(self, total: int) -> tuple[int, int]:
        """The source rows of this part: ``[start, end)``."""
        return self.index * total // self.count, (self.index + 1) * total // self.count

    def paths(self, output: Path) -> dict[str, Path]:
        """Where this part of the dataset ``output`` (``data/NAME.jsonl``) goes (see the module docstring)."""
        stem = output.with_suffix("")
        folder, sidecars = stem, stem.with_name(stem.name + SIDECARS)
        return {"train": folder / f"{self.part}.jsonl", "val": sidecars / f"{self.part}_val.jsonl",
                "test": sidecars / f"{self.part}_test.jsonl", "rejects": sidecars / f"{self.part}.rejects.jsonl",
                "manifest": sidecars / f"{self.part}.manifest.json"}

    def describe(self, total: int) -> dict:
        start, end = self.bounds(total)
        return {"index": self.index, "count": self.count, "first_row": start + 1, "last_row": end}


def check_options(shard: Shard, *, val_size, test_size, dedup: bool, converter: str, near_dedup: float | None = None) -> None:
    """Refuse what a part cannot do exactly on its own."""
    if val_size or test_size:
        raise QfkError("--val-size/--test-size cannot be used with --shard: a split's size counts the rows accepted in "
                       "every part", "convert the parts without splits, or convert the whole source once with the splits")
    if dedup:
        raise QfkError(f"--shard cannot drop duplicates exactly: a row's duplicate may sit in another part"
                       f"{' (' + converter + ' drops duplicates by default)' if converter else ''}",
                       "pass --no-dedup with --shard, or convert the whole source once to drop duplicates")
    if near_dedup is not None:
        raise QfkError("--near-dedup cannot be used with --shard: a row's near duplicate may sit in another part",
                       "convert the parts without --near-dedup, or convert the whole source once with --near-dedup")


def no_rows(shard: Shard, total: int) -> QfkError:
    return QfkError(f"shard {shard.index}/{shard.count} holds no rows: the source has {total}",
                    f"use at most {max(total, 1)} parts")


@dataclass
class ShardSet:
    """A complete set of parts written by ``--shard``: the folder to register and what the parts' manifests say."""

    folder: Path
    parts: list[Path]
    manifest: dict  # part 0's


def shard_set(spec: str) -> ShardSet | None:
    """The shard set ``spec`` names (a folder of ``part-*-of-*`` files, or a comma-separated list of
    them), checked: every part of the set is there, alone in its folder, with its manifest, from the
    same source and options, and unchanged since written. None when ``spec`` is not a shard set."""
    items = [Path(p.strip()) for p in spec.split(",") if p.strip()]
    if len(items) == 1 and items[0].is_dir():
        folder = items[0]
        names = sorted(p.name for p in folder.iterdir())
        if not names or not all(PART_RE.match(n) for n in names):
            return None
        parts = [folder / n for n in names]
    elif len(items) > 1 or (items and PART_RE.match(items[0].name)):
        parts = sorted(items, key=lambda p: p.name)
        folder = _one_folder(parts)
    else:
        return None
    return ShardSet(folder, parts, _checked(folder, parts))


def _one_folder(parts: list[Path]) -> Path:
    folders = {p.resolve().parent for p in parts}
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise QfkError(f"no such file: {missing[0]}", "list the part files of one --shard run, separated by commas")
    if len(folders) != 1:
        raise QfkError("the parts are in different folders: a dataset of several files is a folder holding them alone",
                       "move the parts into one folder and register the folder")
    folder = folders.pop()
    others = sorted(p.name for p in folder.iterdir() if p.name not in {q.name for q in parts})
    if others:
        raise QfkError(f"{folder} holds other files besides the parts ({', '.join(others[:3])}): LLaMA-Factory loads "
                       "every file of the folder", "keep the parts alone in their folder")
    return folder


def _checked(folder: Path, parts: list[Path]) -> dict:
    """Part 0's manifest, once every part is present and agrees with it."""
    counts = {int(PART_RE.match(p.name).group(2)) for p in parts if PART_RE.match(p.name)}
    if len(counts) > 1:
        sets = ", ".join(f"{sum(p.name.endswith(f'-of-{n:05d}.jsonl') for p in parts)} of {n}" for n in sorted(counts))
        raise QfkError(f"{folder} holds parts of runs with different part counts ({sets})",
                       f"remove the parts of the run you do not want (rm {folder}/part-*-of-NNNNN.jsonl), "
                       "or convert every part again with the same --shard I/N count")
    if len(parts) != next(iter(counts)):
        have = ", ".join(p.name for p in parts)
        raise QfkError(f"incomplete shard set in {folder}: {have}",
                       "every part I of --shard I/N must be written (part-0000I-of-0000N.jsonl) before the set is registered")
    sidecars = folder.with_name(folder.name + SIDECARS)
    first = None
    for p in parts:
        mpath = sidecars / (p.name.removesuffix(".jsonl") + ".manifest.json")
        if not mpath.is_file():
            raise QfkError(f"{p.name} has no manifest ({mpath})", "convert that part again with qfk convert ... --shard")
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        _check_part(p, manifest, first)
        first = first or manifest
    return first


def _check_part(part: Path, manifest: dict, first: dict | None) -> None:
    from ..io.atomic import sha256_file

    if manifest["outputs"]["train"]["sha256"] != sha256_file(part):
        raise QfkError(f"{part} changed after it was written (its sha256 is not its manifest's)",
                       "convert that part again")
    if first is None:
        return
    same = ("converter", "source", "dataset")
    options = {k: v for k, v in manifest["options"].items() if k != "shard"}
    first_options = {k: v for k, v in first["options"].items() if k != "shard"}
    if any(manifest.get(k) != first.get(k) for k in same) or options != first_options:
        raise QfkError(f"{part.name} was converted from another source or with other options than part 0",
                       "convert every part of the set with the same command, changing only --shard I/N")


def add_shard_set(reg, shards: ShardSet, name: str, *, formatting: str | None = None, ranking: bool | None = None,
                  columns: dict | None = None, force: bool = False) -> dict:
    """Register the folder of a checked shard set under ``name``, shaped as its parts' manifests say."""
    from ..registry import add_path

    ds = shards.manifest.get("dataset", {})
    return add_path(reg, shards.folder, name, formatting=formatting or ds.get("formatting"),
                    ranking=ds.get("ranking", False) if ranking is None else ranking,
                    columns={**ds.get("columns", {}), **(columns or {})}, force=force)
