"""Token-mix entries ``NAME__tN``: N whole rows of dataset NAME, written as their own file so that
LLaMA-Factory trains exactly those rows.

Why a file and not ``num_samples``: for ``num_samples: N`` below the row count LLaMA-Factory 0.9.5
takes ``np.random.permutation(len(dataset))[:N]`` from numpy's global random state (seeded by the
training seed and advancing from one dataset to the next), so which rows a ``NAME__nN`` entry
trains, and how many tokens they hold, is known only once training starts. A token mix must know
its rows when the recipe is made.

Which rows: the first N of NAME's rows in :func:`pick_order` (row indexes sorted by a hash of
:data:`PICK_SEED` and the index: the same on every machine and every Python or numpy version), in
NAME's row order; past NAME's row count every row once more, then the order again. The rows are a
uniform sample of NAME whatever N is: the count is what a mix chooses, never which rows.

``NAME__tN.jsonl`` is written beside NAME's file through the atomic writer, with
``NAME__tN.manifest.json`` naming the source file and its sha256, the seed, the rows chosen and
(when the recipe measured them) their token counts, and NAME's ``converter``/``dataset``/``think``
facts. The name alone says how to make it again from NAME: ``qfk train``, ``qfk recipe cp``,
``qfk webui --recipe`` and bundles re-make a missing one (:func:`ensure_picked`) as they register a
missing ``NAME__nN``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ...errors import QfkError

#: the seed of :func:`pick_order` (fixed: the name NAME__tN then says which rows it holds)
PICK_SEED = 42
ORDER = "row indexes sorted by blake2b (8 bytes) of b'<seed>:<index>'"
#: the manifest key that marks a token-mix manifest
KEY = "token_mix"


def pick_order(rows: int, seed: int = PICK_SEED) -> list[int]:
    """Row indexes ``0 .. rows-1`` (file order) in the order a token mix takes them."""
    def key(i: int) -> bytes:
        return hashlib.blake2b(b"%d:%d" % (seed, i), digest_size=8).digest()

    return sorted(range(rows), key=key)


def chosen_indexes(rows: int, count: int, seed: int = PICK_SEED, order: list[int] | None = None) -> list[int]:
    """The row indexes ``NAME__t<count>`` holds, in file order: the first ``count`` of the order,
    every row once more for each full pass past ``rows``."""
    if rows < 1:
        raise QfkError("a token mix cannot pick rows from a dataset without rows", "convert rows into it first")
    full, rest = divmod(count, rows)
    order = order if order is not None else pick_order(rows, seed)
    return sorted([*range(rows)] * full + order[:rest])


def source_file(base: str, entry: dict, data_dir: Path) -> Path:
    """The one local file a token mix picks ``base``'s rows from, else a :class:`QfkError`."""
    from ...registry import resolve_file

    path = resolve_file(entry, data_dir) if isinstance(entry, dict) else None
    if path is None:
        raise QfkError(f"dataset '{base}' is a hub entry: a token mix picks rows of a local file",
                       "convert it with qfk convert; or mix by rows: qfk recipe new ... --mix-by rows")
    if path.is_dir():
        raise QfkError(f"dataset '{base}' is a folder ({path}): a token mix picks rows of one file",
                       "convert it into one file with qfk convert; or mix by rows: qfk recipe new ... --mix-by rows")
    if not path.is_file():
        raise QfkError(f"dataset '{base}': File {path} not found", f"convert it again, or: qfk datasets remove {base}")
    return path


@dataclass
class Picked:
    """A written ``NAME__tN``: its registry entry, file, manifest and the source rows it holds."""

    name: str
    entry: dict
    file: Path
    manifest: Path
    rows: list[int]
    sha256: str


def picked_entry(base_entry: dict, file_name: str) -> dict:
    """``base_entry`` for the picked file: its shape, no ``num_samples`` (every row is trained once)."""
    out = {k: v for k, v in base_entry.items() if k not in ("file_sha1", "num_samples")}
    out["file_name"] = file_name
    return out


def write_picked(name: str, base: str, base_entry: dict, data_dir: Path, *, count: int, tokens: dict | None = None,
                 seed: int = PICK_SEED) -> Picked:
    """Write ``name`` (``count`` rows of ``base``) and its manifest beside ``base``'s file; registers nothing.
    ``tokens``: the settings the rows were measured with and their ``trained``/``total`` counts, row by row."""
    import orjson

    from ...io.atomic import AtomicFile, atomic_write_bytes, sha256_file
    from ...io.readers import file_rows
    from ...registry import file_name_for

    src = source_file(base, base_entry, data_dir)
    out = src.parent / f"{name}.jsonl"
    if out.resolve() == src.resolve():
        raise QfkError(f"the token-mix file would overwrite {src}, the file it is read from", f"rename dataset {base}")
    positions = [pos for pos, _ in file_rows(src)]
    wanted = Counter(chosen_indexes(len(positions), count, seed))
    written: list[int] = []
    with AtomicFile(out) as fh:
        for i, (pos, row) in enumerate(file_rows(src)):
            times = wanted.get(i, 0) if row is not None else 0  # a row that cannot be parsed trains nothing
            for _ in range(times):
                fh.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
                written.append(pos)
    manifest = out.with_name(f"{name}.manifest.json")
    data = _manifest(name, base, src, out, sha256_file(src), len(positions), count, seed, written, fh.sha256, tokens,
                     base_entry, data_dir)
    atomic_write_bytes(manifest, _dumps(data))
    return Picked(name, picked_entry(base_entry, file_name_for(out, data_dir)), out, manifest, written, fh.sha256)


def _manifest(name: str, base: str, src: Path, out: Path, src_sha: str, rows: int, count: int, seed: int,
              written: list[int], sha: str, tokens: dict | None, base_entry: dict, data_dir: Path) -> dict:
    from ... import __version__
    from ...registry import manifest_for

    facts = manifest_for(base_entry, data_dir) or {}
    return {
        "name": name,
        KEY: {"base": base, "file": os.path.relpath(src, out.parent).replace(os.sep, "/"), "sha256": src_sha, "rows": rows,
              "count": count, "seed": seed, "order": ORDER},
        "rows": written,
        "tokens": tokens,
        **{k: facts[k] for k in ("converter", "dataset", "think") if k in facts},
        "outputs": {"train": {"file": out.name, "sha256": sha, "rows": len(written)}},
        "versions": {"qwen_factory_kit": __version__},
    }


def _dumps(data: dict) -> bytes:
    """Indented JSON with each list of numbers on one line (a mix's rows and tokens stay readable)."""
    import re

    text = json.dumps(data, indent=2, ensure_ascii=False)
    text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m[1].split(",")) + "]", text)
    return (text + "\n").encode("utf-8")


def read_manifest(entry: dict, data_dir: Path) -> dict | None:
    """The token-mix manifest beside an entry's file (None when it has none)."""
    from ...registry import manifest_for

    found = manifest_for(entry, data_dir) if isinstance(entry, dict) else None
    return found if isinstance(found, dict) and isinstance(found.get(KEY), dict) else None


def staleness(name: str, entry: dict, data_dir: Path) -> str | None:
    """Why ``name``'s rows are no longer the rows its manifest names (its source changed, or the file
    itself did), or None."""
    from ...io.atomic import sha256_file
    from ...registry import manifest_path, resolve_file

    path = resolve_file(entry, data_dir)
    manifest = read_manifest(entry, data_dir)
    if path is None or manifest is None or not path.is_file():
        return None
    info, where = manifest[KEY], manifest_path(path)
    src = (where.parent if where else path.parent) / str(info.get("file"))
    if not src.is_file():
        return f"its source {src} is gone"
    now = sha256_file(src)
    if now != info.get("sha256"):
        return (f"{info.get('base')} changed since {name} was picked from it (sha256 {now[:12]}..., the manifest says "
                f"{str(info.get('sha256'))[:12]}...): re-converted?")
    recorded = ((manifest.get("outputs") or {}).get("train") or {}).get("sha256")
    if recorded and sha256_file(path) != recorded:
        return f"{path.name} was changed after it was written"
    return None


def ensure_picked(name: str, base: str, registry: dict, data_dir: Path, *, count: int) -> Picked:
    """Make ``name`` again from ``base`` (registered in ``registry``) and register it."""
    from ...registry import Registry

    picked = write_picked(name, base, registry[base], data_dir, count=count)
    Registry.at(data_dir).add(name, picked.entry, force=True)
    return picked
