"""Re-making a dataset from its recorded source: find the source (``--source``, the recorded local
path, or the hub at its recorded revision), check every source file's sha256, run the recorded
conversion into the staging folder, and check each output against the sha256 its manifest records."""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import QfkError
from .format import DATA_PREFIX, data_splits
from .untrusted import bad, member_name_problem, verify_sha

if TYPE_CHECKING:
    from ...io.sources import ResolvedSource
    from .plan import Reconversion


def _accepted_options(converter: str) -> set[str]:
    """The keyword arguments convert() passes on for ``converter``: run options + constructor arguments."""
    import inspect

    from ...convert import CONVERTERS, RUN_OPTIONS

    cls = CONVERTERS[converter]
    names = {o for o in RUN_OPTIONS if o not in ("output", "name", "data_dir", "cache_dir", "progress")}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.add(p.name)
    return names


def conversion_options(manifest: dict) -> tuple[dict, list[str]]:
    """The convert() keyword arguments recorded in a manifest, and the recorded keys left out."""
    options = manifest.get("options") or {}
    accepted = _accepted_options(manifest["converter"])
    kept = {k: v for k, v in options.items() if k in accepted}
    return kept, sorted(k for k in options if k not in accepted)


def source_files(src: dict) -> list[tuple[str, str]]:
    """(path relative to the source root, sha256) of every recorded source file."""
    out = []
    for f in src["files"]:
        if src["kind"] == "local":
            rel = os.path.relpath(posixpath.normpath(f["path"]), posixpath.normpath(src["path"])).replace(os.sep, "/")
        else:
            rel = posixpath.normpath(f["path"])
        if rel != "." and (member_name_problem(rel) or rel.startswith("..")):
            raise bad(f"a source file of the bundle, {f['path']!r}, is not inside its source {src.get('path')!r}")
        out.append((rel, f["sha256"]))
    return out


def reconvert(rc: Reconversion, staging: Path, data_dir: Path, cache_dir, warnings: list[str]) -> dict:
    """Re-run a recorded conversion into the staging folder and check its outputs' sha256."""
    from ...convert import convert

    manifest, name = rc.manifest, rc.manifest["name"]
    shown = rc.source[0] if rc.source else name
    files = source_files(manifest["source"])
    root, resolved = _locate_source(rc, files, shown, cache_dir)
    _check_source_files(root, files, name, shown)
    options, dropped = conversion_options(manifest)
    splits = data_splits(manifest)
    reldir = posixpath.dirname(rc.member[len(DATA_PREFIX):])
    out_dir = staging / reldir if reldir else staging
    out_dir.mkdir(parents=True, exist_ok=True)
    res = convert(manifest["converter"], resolved, output=str(out_dir / splits["train"]["file"]), name=name,
                  register=False, **options)
    produced = {s: Path(v["path"]).name for s, v in res.splits.items()}
    if set(produced) != set(splits):
        raise QfkError(f"re-converting {name} gave the splits {sorted(produced)}, its manifest records {sorted(splits)}; "
                       "nothing was registered", "ask for a bundle made with --with-data")
    for s, out in splits.items():
        verify_sha(out_dir / out["file"], out["sha256"], f"{posixpath.join(reldir, out['file'])} (re-converted {name}, {s})")
    new = _rebase_manifest(out_dir / posixpath.basename(rc.member), out_dir, data_dir / reldir)
    old_kit, new_kit = manifest.get("versions", {}).get("qwen_factory_kit"), new.get("versions", {}).get("qwen_factory_kit")
    if old_kit != new_kit:
        warnings.append(f"{name} was converted by qfk {old_kit} and re-converted by {new_kit} (outputs verified identical)")
    return {"converter": manifest["converter"], "source": str(root), "kind": resolved.kind, "rows": res.rows_out,
            "outputs": {s: {"file": posixpath.join(reldir, o["file"]), "sha256": o["sha256"]} for s, o in splits.items()},
            "options_not_passed": dropped, "datasets": rc.names}


def _locate_source(rc: Reconversion, files: list[tuple[str, str]], shown: str, cache_dir) -> tuple[Path, ResolvedSource]:
    """The source's root here: the --source given, the recorded local path, or the hub download."""
    from ...io.sources import resolve_source

    name, src = rc.manifest["name"], rc.manifest["source"]
    if rc.source is not None:
        given = rc.source[1]
        root = Path(given).expanduser()
        if not root.exists():
            raise QfkError(f"--source {shown}={given}: no such file or folder", "give the path of a local copy of the source")
        return root, resolve_source(str(root))
    if src["kind"] == "local":
        candidates = [c for c in (rc.hint, src.get("spec")) if isinstance(c, str) and os.path.isabs(c)]
        root = next((Path(c) for c in candidates if Path(c).exists()), None)
        if root is None:
            where = candidates[0] if candidates else src.get("spec")
            raise QfkError(f"the source of dataset {name} ({where}) is not on this machine",
                           f"point at a copy: --source {name}=PATH (its sha256 is {files[0][1]})")
        return root, resolve_source(str(root))
    rev = src.get("revision")
    spec = f"{'modelscope' if src['kind'] == 'modelscope' else 'hf'}://{src['dataset_id']}" + (f"@{rev}" if rev else "")
    resolved = resolve_source(spec, cache_dir=cache_dir)
    return resolved.path, resolved


def _check_source_files(root: Path, files: list[tuple[str, str]], name: str, shown: str) -> None:
    """Every recorded source file is there with its recorded sha256 (before anything is converted)."""
    from ...io.atomic import sha256_file

    for rel, sha in files:
        p = root if rel == "." else root / rel
        if rel == "." and not root.is_file():
            raise QfkError(f"source of {name}: {root} is a folder, the bundle recorded a file", f"--source {shown}=FILE")
        if not p.is_file():
            raise QfkError(f"source of {name}: {p} is missing", f"point at a complete copy: --source {shown}=PATH")
        actual = sha256_file(p)
        if actual != sha:
            raise QfkError(f"source file {p} of dataset {name} does not match the bundle: sha256 expected {sha}, actual {actual}; "
                           "nothing was converted or registered",
                           f"point at the same data the bundle was made from: --source {shown}=PATH")


def _rebase_manifest(path: Path, out_dir: Path, final_dir: Path) -> dict:
    """The new manifest's local source paths are relative to the staging folder: make them relative
    to the folder it ends up in. Returns the manifest."""
    import orjson

    new = json.loads(path.read_text(encoding="utf-8"))
    if new.get("source", {}).get("kind") == "local":
        old_base, new_base = out_dir.resolve(), final_dir.resolve()

        def rebase(p: str) -> str:
            return os.path.relpath(os.path.normpath(os.path.join(old_base, p)), new_base)

        new["source"]["path"] = rebase(new["source"]["path"])
        for f in new["source"].get("files", []):
            f["path"] = rebase(f["path"])
        path.write_bytes(orjson.dumps(new, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    return new
