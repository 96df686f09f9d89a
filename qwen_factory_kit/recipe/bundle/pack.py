"""``qfk recipe pack``: a recipe, the registry entries and qfk manifests of its datasets (and with
``--with-data`` the converted files), and its DeepSpeed config, in one deterministic zip.

A mix entry travels with its base dataset: ``NAME__nN`` as an entry, ``NAME__tN`` (a token mix's
file) as an entry with its sha256 that unpack makes again from the base's rows (never its rows:
``--with-data`` or not, the base carries them), or, when its base changed since, as data only."""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import QfkError
from ...redact import secret_keys
from ..document import MODEL_KEYS, PATH_KEYS, recipe_datasets
from .format import (
    BUNDLE_JSON,
    DATA_PREFIX,
    FILES_PREFIX,
    FORMAT,
    INFO_MEMBER,
    OUTSIDE_ENTRY_KEYS,
    RECIPE_MEMBER,
    RECIPE_NAME_RE,
    REMOTE_ENTRY_KEYS,
    data_splits,
    json_bytes,
    sha,
    write_zip,
)
from .untrusted import is_true, looks_like_path


@dataclass
class _Contents:
    """What goes into the bundle, gathered dataset by dataset."""

    dataset_dir: str
    data_dir: Path
    registry: dict[str, dict]           # the packer's dataset_info.json
    registry_path: Path
    with_data: bool
    warnings: list[str]
    members: dict[str, bytes | Path] = field(default_factory=dict)  # member -> bytes or a file to stream
    info: dict[str, dict] = field(default_factory=dict)      # the dataset_info.json subset
    records: dict[str, dict] = field(default_factory=dict)   # bundle.json "datasets"
    files: dict[str, str] = field(default_factory=dict)      # bundle.json "files"
    relocated: dict[str, str] = field(default_factory=dict)  # data file (absolute) -> member, for files outside the data dir
    hashed: dict[Path, str] = field(default_factory=dict)    # data file -> its sha256 (hashed once)

    def member_for(self, path: Path) -> tuple[str, bool]:
        """The member a data file travels as, and whether it was moved into the data dir."""
        rel = _relpath_in(path, self.data_dir)
        if rel is not None:
            return DATA_PREFIX + rel, False
        key = os.path.abspath(path)
        if key not in self.relocated:
            member = DATA_PREFIX + path.name
            if member in self.relocated.values():
                raise QfkError(f"two datasets outside {self.data_dir} are both named {path.name}", "rename one of them")
            self.relocated[key] = member
        return self.relocated[key], True


def pack(recipe_path: str | os.PathLike, output_zip: str | os.PathLike, *, overrides: list[str] | tuple[str, ...] | None = None,
         with_data: bool = False, force: bool = False) -> dict:
    """Write a bundle of the recipe at ``recipe_path`` (run from the folder the recipe runs from:
    ``dataset_dir`` and ``deepspeed`` are relative to it) to ``output_zip``; returns a summary."""
    from ..document import load_recipe

    recipe = Path(recipe_path)
    overrides = list(overrides or ())
    args = load_recipe(recipe, overrides)
    _refuse_secrets(recipe, args)
    text = recipe.read_bytes()
    out = _check_names(recipe, Path(output_zip), force)
    warnings = _recipe_warnings(args)
    c, names = _contents_for(recipe, args, with_data, warnings)
    for n, base in _wanted(names, c.registry):
        if n not in c.records:
            _add_dataset(c, n, base)
    for rec in c.records.values():
        if rec.get("base"):
            rec["base_entry"] = c.info[rec["base"]]  # as the bundle registers it (file_name relocated with its file)
    _add_deepspeed(c, args)
    c.members[RECIPE_MEMBER] = text
    c.members[INFO_MEMBER] = json_bytes(c.info, sort_keys=False)  # entries as registered: names and keys in order
    listing = _listing(c)
    c.members[BUNDLE_JSON] = json_bytes(_bundle_json(recipe.stem, text, overrides, c, listing))
    size, digest = write_zip(out, c.members)
    return {"output": str(out), "bytes": size, "sha256": digest, "recipe": recipe.stem, "with_data": bool(with_data),
            "datasets": {n: {"kind": r["kind"], "included": r["included"], "manifest": bool(r.get("manifest")),
                             **({"base": r["base"]} if r.get("base") else {})} for n, r in c.records.items()},
            "members": listing + [{"name": BUNDLE_JSON, "sha256": sha(c.members[BUNDLE_JSON]), "bytes": len(c.members[BUNDLE_JSON])}],
            "warnings": c.warnings}


def _check_names(recipe: Path, out: Path, force: bool) -> Path:
    if not RECIPE_NAME_RE.match(recipe.stem):
        raise QfkError(f"recipe name '{recipe.stem}' cannot travel in a bundle",
                       "rename the file to letters, digits, '.', '_' or '-' (e.g. sft.yaml)")
    if out.exists() and not force:
        raise QfkError(f"{out} exists", "choose another -o, or add --force to replace it")
    return out


def _refuse_secrets(recipe: Path, args: dict) -> None:
    """A bundle is made to be shared: a recipe (or override) that sets a token or key is not packed."""
    found = secret_keys(args)
    if found:
        raise QfkError(f"the recipe sets {found[0]}, a secret that a shared bundle would carry: refused, nothing was written",
                       f"remove {found[0]} from the recipe and the overrides; give it when training "
                       f"(qfk train {recipe.name} {found[0]}=...) or through the environment (HF_TOKEN)")


def _recipe_warnings(args: dict) -> list[str]:
    """What unpack will refuse unless allowed: trust_remote_code, paths outside the run folder."""
    warnings = []
    if is_true(args.get("trust_remote_code")):
        warnings.append("the recipe sets trust_remote_code: true; unpack needs --trust-remote-code")
    for key in (*PATH_KEYS, *MODEL_KEYS):
        v = args.get(key)
        if key in MODEL_KEYS and isinstance(v, str) and not looks_like_path(v):
            continue
        if isinstance(v, str) and (v.startswith(("/", "~")) or os.path.isabs(v) or ".." in v.replace("\\", "/").split("/")):
            warnings.append(f"{key}={v} points outside the run folder: unpack needs --allow-outside")
    return warnings


def _contents_for(recipe: Path, args: dict, with_data: bool, warnings: list[str]) -> tuple[_Contents, list[str]]:
    """The recipe's data dir and registry, and the datasets it names (all registered)."""
    from ...registry import Registry

    dataset_dir = str(args.get("dataset_dir") or "data")
    if dataset_dir == "ONLINE":
        raise QfkError("dataset_dir: ONLINE recipes load every dataset from a hub: there is nothing to pack",
                       "share the recipe file itself")
    data_dir = Path(dataset_dir)
    names = recipe_datasets(args)
    if not names:
        raise QfkError(f"{recipe} names no dataset (dataset / eval_dataset)", "a bundle carries a recipe with its data")
    reg = Registry(data_dir)
    registry = reg.read()
    missing = [n for n in names if n not in registry]
    if missing:
        raise QfkError(f"dataset(s) {', '.join(missing)} are not registered in {reg.path}",
                       "run pack from the folder the recipe runs from (dataset_dir is relative to it), or convert them first")
    return _Contents(dataset_dir, data_dir, registry, reg.path, with_data, warnings), names


def _wanted(names: list[str], registry: dict) -> list[tuple[str, str | None]]:
    """(dataset, its base) in packing order: the base entry of a ``NAME__nN`` or ``NAME__tN`` mix entry comes first."""
    from ...registry import mix_entry

    wanted: list[tuple[str, str | None]] = []
    for n in names:
        m = mix_entry(n)
        base = m["base"] if m and m["base"] in registry else None
        if base and base not in names:
            wanted.append((base, None))
        wanted.append((n, base))
    return wanted


def _add_dataset(c: _Contents, n: str, base: str | None) -> None:
    """Dataset ``n``'s entry, record, manifest and (with the data) files."""
    from ...registry import resolve_file

    entry = c.registry[n]
    rec: dict[str, Any] = {"entry": entry}
    if base:
        rec.update(base=base, base_entry=c.registry[base])
    if not entry.get("file_name"):
        _add_remote(c, n, entry, rec)
        return
    path = resolve_file(entry, c.data_dir)
    if path is None or not path.exists():
        raise QfkError(f"dataset '{n}': File {path} not found", f"convert it again, or: qfk datasets remove {n}")
    target, moved = c.member_for(path)
    if moved:
        entry = {**entry, "file_name": target[len(DATA_PREFIX):]}
        rec.update(entry=entry, relocated_from=c.registry[n]["file_name"])
        c.warnings.append(f"dataset {n}: {c.registry[n]['file_name']} is outside {c.data_dir}; the bundle places it at "
                          f"{c.dataset_dir}/{entry['file_name']}")
    rec.update(kind="file", file=target)
    if base and _add_picked(c, n, path, rec):
        c.info[n], c.records[n] = entry, rec
        return
    manifest, manifest_file, split = _manifest_to_pack(c, n, path, rec)
    rec["manifest"] = None if manifest is None else _add_manifest(c, n, manifest, manifest_file, split, target)
    rec["included"] = bool(c.with_data)
    if c.with_data:
        rec["members"] = _add_data(c, n, path, target)
    c.info[n], c.records[n] = entry, rec


def _add_picked(c: _Contents, n: str, path: Path, rec: dict) -> bool:
    """A token mix's ``NAME__tN`` file (its base is packed too): recorded with its sha256 for unpack to
    make it again from the base, or, when the base changed since it was picked, packed as data
    (``--with-data``; refused without). False when ``n`` is not a token mix's file."""
    from ...io.atomic import sha256_file
    from ...registry import PICKED_RE
    from ..tokenmix.picks import read_manifest, staleness

    m = PICKED_RE.match(n)
    if m is None or read_manifest(c.registry[n], c.data_dir) is None:
        return False
    why = staleness(n, c.registry[n], c.data_dir)
    if why and not c.with_data:
        raise QfkError(f"dataset '{n}': {why}: unpack could not make its rows again from {m['base']}",
                       "make the recipe again (qfk recipe new ... --mix-by tokens --force), or pack it with --with-data")
    digest = c.hashed[path] = sha256_file(path)
    rec.update(sha256=digest, bytes=path.stat().st_size, manifest=None)
    if why:
        c.warnings.append(f"dataset {n}: {why}: packed as data only")
        rec.update(included=True, members=_add_data(c, n, path, rec["file"]))
    else:
        rec.update(kind="picked", included=False, count=int(m["count"]))
    return True


def _add_remote(c: _Contents, n: str, entry: dict, rec: dict) -> None:
    if not any(entry.get(k) for k in REMOTE_ENTRY_KEYS):
        raise QfkError(f"dataset '{n}' in {c.registry_path} has no file_name and no hub url", "fix the entry: qfk datasets check")
    rec.update(kind="remote", included=False, manifest=None)
    if any(entry.get(k) for k in OUTSIDE_ENTRY_KEYS):
        c.warnings.append(f"dataset {n} uses {'/'.join(k for k in OUTSIDE_ENTRY_KEYS if entry.get(k))}: unpack needs --allow-outside")
    else:
        c.warnings.append(f"dataset {n} is a hub entry: LLaMA-Factory downloads it; the bundle carries only the entry")
    c.info[n], c.records[n] = entry, rec


def _manifest_to_pack(c: _Contents, n: str, path: Path, rec: dict) -> tuple[dict | None, Path | None, str | None]:
    """The manifest that re-makes data file ``path`` (None when it cannot: then only --with-data packs it),
    its file and the split ``path`` is."""
    from ...io.atomic import sha256_file
    from ...registry import manifest_path

    if not path.is_file():
        if not c.with_data:
            raise QfkError(f"dataset '{n}' is a folder ({path}) without a qfk manifest", "pack it with --with-data")
        return None, None, None
    digest = c.hashed[path] = sha256_file(path)  # once: the member listing reuses it
    rec.update(sha256=digest, bytes=path.stat().st_size)
    manifest_file = manifest_path(path)
    manifest = None
    if manifest_file is not None:
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            manifest = None
    split = None
    if isinstance(manifest, dict):
        split = next((s for s, o in data_splits(manifest).items() if isinstance(o, dict) and o.get("file") == path.name), None)
    why = _why_not_remade(manifest, manifest_file, split, digest)
    if isinstance(manifest, dict) and manifest.get("converter") == "decontaminate":  # what it was cleaned against
        rec["decontaminated_against"] = (manifest.get("options") or {}).get("decontaminated_against")
    if why:
        if not c.with_data:
            raise QfkError(f"dataset '{n}' ({path}) {why}: it cannot be re-made from its source",
                           "pack it with --with-data, or convert it again with qfk convert")
        c.warnings.append(f"dataset {n} {why}: packed as data only")
        return None, manifest_file, split
    return manifest, manifest_file, split


def _why_not_remade(manifest: Any, manifest_file: Path | None, split: str | None, digest: str) -> str | None:
    from ..tokenmix.picks import KEY

    if manifest_file is None or not isinstance(manifest, dict):
        return "has no qfk manifest (registered by hand?)"
    if isinstance(manifest.get(KEY), dict):
        return f"is a token mix of {manifest[KEY].get('base')}, which is not registered: only its rows re-make it"
    if manifest.get("converter") == "decontaminate":
        against = [s.get("name") for s in (manifest.get("options") or {}).get("decontaminated_against") or []
                   if isinstance(s, dict)]
        return (f"was decontaminated against {', '.join(map(str, against)) or 'eval sets'} (qfk datasets decontaminate): "
                "only its rows re-make it")
    if split is None:
        return f"is not an output of its manifest {manifest_file.name}"
    recorded = manifest["outputs"][split].get("sha256")
    if recorded != digest:
        return (f"changed since it was converted (sha256 {digest[:12]}..., its manifest {manifest_file.name} says "
                f"{str(recorded)[:12]}...)")
    return None


def _add_manifest(c: _Contents, n: str, manifest: dict, manifest_file: Path, split: str, target: str) -> dict:
    """Pack the manifest beside its data member; returns its summary for bundle.json."""
    member = posixpath.join(posixpath.dirname(target), manifest_file.name)
    c.members[member] = manifest_file
    src = dict(manifest.get("source") or {})
    summary = {"member": member, "name": manifest.get("name"), "split": split, "converter": manifest.get("converter"),
               "options": manifest.get("options"), "source": src, "outputs": manifest.get("outputs"),
               "versions": manifest.get("versions")}
    if src.get("kind") == "local" and isinstance(src.get("path"), str):
        summary["source_path"] = os.path.normpath(os.path.join(manifest_file.parent.resolve(), src["path"]))
    if src.get("kind") == "local" and not c.with_data and not Path(summary["source_path"]).exists():
        c.warnings.append(f"the source of {n} ({summary['source_path']}) is missing here: "
                          f"unpack needs --source {manifest.get('name') or n}=PATH")
    return summary


def _add_data(c: _Contents, n: str, path: Path, target: str) -> list[str]:
    """Pack the data file (or every file of the data folder) at ``path``; returns the members."""
    if path.is_file():
        c.members[target] = path
        return [target]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise QfkError(f"dataset '{n}': folder {path} is empty", "point file_name at a file")
    added = []
    for p in files:
        member = target + "/" + p.relative_to(path).as_posix()
        c.members[member] = p
        added.append(member)
    return added


def _add_deepspeed(c: _Contents, args: dict) -> None:
    """The recipe's DeepSpeed config file (from the run folder, or the one the kit ships)."""
    from ..build import _extra_files

    ds = args.get("deepspeed")
    if not isinstance(ds, str) or not ds.strip() or ds.strip().startswith("{"):
        return
    rel = posixpath.normpath(ds.strip().replace("\\", "/"))
    local = Path(ds)
    if os.path.isabs(ds) or rel.startswith(".."):
        c.warnings.append(f"deepspeed={ds} is outside the run folder: not packed")
    elif local.is_file():
        c.members[FILES_PREFIX + rel] = local
        c.files["deepspeed"] = FILES_PREFIX + rel
    elif _extra_files(args):
        c.members[FILES_PREFIX + rel] = Path(next(iter(_extra_files(args).values())))
        c.files["deepspeed"] = FILES_PREFIX + rel
    else:
        c.warnings.append(f"deepspeed={ds} does not exist here: not packed")


def _listing(c: _Contents) -> list[dict]:
    """bundle.json "members": every member but bundle.json, sorted, with its sha256 and size."""
    from ...io.atomic import sha256_file

    listing = []
    for name in sorted(c.members):
        src = c.members[name]
        if isinstance(src, bytes):
            listing.append({"name": name, "sha256": sha(src), "bytes": len(src)})
        else:
            listing.append({"name": name, "sha256": c.hashed.get(src) or sha256_file(src), "bytes": src.stat().st_size})
    return listing


def _bundle_json(name: str, text: bytes, overrides: list[str], c: _Contents, listing: list[dict]) -> dict:
    from ... import __version__
    from ...convert.sinks import versions

    return {
        "qfk_bundle": FORMAT,
        "kit_version": __version__,
        "created_by": versions(),
        "recipe": {"name": name, "member": RECIPE_MEMBER, "sha256": sha(text), "bytes": len(text),
                   "overrides": overrides, "dataset_dir": c.dataset_dir},
        "with_data": bool(c.with_data),
        "datasets": c.records,
        "files": c.files,
        "members": listing,
    }


def _relpath_in(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` (posix), lexically; None when it is not inside."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(folder)).replace(os.sep, "/")
    return None if rel == ".." or rel.startswith("../") or os.path.isabs(rel) else rel
