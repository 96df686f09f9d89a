"""Shareable recipe bundles: ``qfk recipe pack`` / ``qfk recipe unpack``.

A bundle is a zip that lets someone else run the same recipe on the same data:

=========================  ==================================================================
``bundle.json``            format, kit and library versions, the recipe's name and sha256, the
                           KEY=VALUE overrides given to pack, for every dataset the recipe uses:
                           its registry entry (and the base entry of a ``NAME__nN`` mix entry),
                           the summary of its qfk manifest (source ids and revisions, conversion
                           options, sha256 of the converted files); every other member with its
                           sha256 and size
``recipe.yaml``            the recipe text, byte for byte
``dataset_info.json``      the registry entries (a subset of the packer's ``dataset_info.json``)
``data/...``               the qfk manifests, and with ``--with-data`` the converted files, at
                           their paths relative to the recipe's ``dataset_dir``
``files/...``              files the recipe refers to (its DeepSpeed config)
=========================  ==================================================================

The zip is deterministic (members sorted, fixed timestamps and modes): the same inputs give the
same bytes. :func:`unpack` treats a bundle as untrusted input: it checks every member name, mode
and size before it writes anything, reads YAML with ``yaml.safe_load`` only, and refuses recipe
values and registry entries that point outside the destination unless told otherwise. Datasets
are re-converted from their recorded sources (or taken from the bundle), every converted file is
checked against the sha256 in its manifest, and only then is anything registered.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import secrets
import shutil
import stat
import unicodedata
import zipfile
import zlib
from pathlib import Path
from typing import Any

from ..errors import QfkError
from .document import MODEL_KEYS, PATH_KEYS, recipe_datasets

FORMAT = 1
BUNDLE_JSON = "bundle.json"
RECIPE_MEMBER = "recipe.yaml"
INFO_MEMBER = "dataset_info.json"
DATA_PREFIX = "data/"
FILES_PREFIX = "files/"

#: fixed zip metadata: the same inputs give byte-identical bundles
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
ZIP_MODE = 0o100644

DEFAULT_MAX_MEMBER_BYTES = 4 << 30   # one member (a converted data file) at most 4 GiB uncompressed
DEFAULT_MAX_TOTAL_BYTES = 16 << 30   # all members together at most 16 GiB uncompressed
TEXT_LIMIT = 16 << 20                # bundle.json, recipe, registry, manifests, DeepSpeed configs
MAX_MEMBERS = 10_000
MAX_RATIO = 250                      # uncompressed / compressed, for members above RATIO_FLOOR
RATIO_FLOOR = 1 << 20
CHUNK = 1 << 20

#: registry entry keys that make LLaMA-Factory run code or read from outside the data dir
OUTSIDE_ENTRY_KEYS = ("script_url", "cloud_file_name")
REMOTE_ENTRY_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
_RECIPE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$")
_HUB_REV_RE = re.compile(r"^[A-Za-z0-9_.\-/]+$")
_TRUE = ("true", "1", "yes", "on", "y")


# =============================================================================================
# shared helpers
# =============================================================================================
def _bad(message: str, hint: str | None = None) -> QfkError:
    return QfkError(message, hint or "the bundle was damaged or made by hand; ask for a fresh one (qfk recipe pack)")


def _json_bytes(obj: Any, *, sort_keys: bool = True) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n").encode("utf-8")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_true(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    return isinstance(value, str) and value.strip().lower() in _TRUE


def _looks_like_path(value: str) -> bool:
    """A hub id is ``owner/name``; anything else with a separator, a dot start or a drive is a path."""
    v = value.strip()
    return (v.startswith(("/", "~", ".")) or "\\" in v or bool(_DRIVE_RE.match(v)) or v.count("/") > 1
            or ".." in v.split("/"))


def _outside(value: str, base: Path, root: Path) -> str | None:
    """Why path ``value`` (relative to ``base``, which is inside ``root``) leaves ``root``, else None."""
    v = value.strip()
    if not v:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        return "has control characters"
    if v.startswith("~"):
        return "starts with ~ (a home folder)"
    if "\\" in v or _DRIVE_RE.match(v):
        return "is a Windows path (backslash or drive letter)"
    if v.startswith("/") or os.path.isabs(v):
        return "is absolute"
    rel_base = os.path.relpath(os.path.abspath(base), os.path.abspath(root)).replace(os.sep, "/")
    norm = posixpath.normpath(posixpath.join(rel_base, v))
    if norm == ".." or norm.startswith("../"):
        return "escapes with '..'"
    try:
        (base / v).resolve().relative_to(root.resolve())
    except ValueError:
        return "resolves outside through a symbolic link"
    return None


def _relpath_in(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` (posix), lexically; None when it is not inside."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(folder)).replace(os.sep, "/")
    return None if rel == ".." or rel.startswith("../") or os.path.isabs(rel) else rel


def _data_splits(manifest: dict) -> dict[str, dict]:
    outs = manifest.get("outputs")
    return {k: v for k, v in outs.items() if k != "rejects"} if isinstance(outs, dict) else {}


def _accepted_options(converter: str) -> set[str]:
    """The keyword arguments convert() passes on for ``converter``: run options + constructor arguments."""
    import inspect

    from ..convert import CONVERTERS, RUN_OPTIONS

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


# =============================================================================================
# pack
# =============================================================================================
def _zinfo(name: str, size: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.create_system = 3
    zi.external_attr = ZIP_MODE << 16
    zi.file_size = size
    return zi


def _write_zip(output: Path, members: dict[str, bytes | Path]) -> tuple[int, str]:
    """Write ``members`` (name -> bytes or a file to stream) sorted, with fixed metadata, atomically."""
    from ..io.atomic import _fsync_dir, sha256_file

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name in sorted(members):
                    src = members[name]
                    if isinstance(src, bytes):
                        zf.writestr(_zinfo(name, len(src)), src)
                        continue
                    size = src.stat().st_size
                    with open(src, "rb") as inp, zf.open(_zinfo(name, size), "w", force_zip64=size > (1 << 31)) as out:
                        shutil.copyfileobj(inp, out, CHUNK)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output)
        _fsync_dir(output.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output.stat().st_size, sha256_file(output)


def _manifest_summary(manifest: dict, member: str, manifest_file: Path, split: str) -> dict:
    src = dict(manifest.get("source") or {})
    summary = {"member": member, "name": manifest.get("name"), "split": split, "converter": manifest.get("converter"),
               "options": manifest.get("options"), "source": src, "outputs": manifest.get("outputs"),
               "versions": manifest.get("versions")}
    if src.get("kind") == "local" and isinstance(src.get("path"), str):
        summary["source_path"] = os.path.normpath(os.path.join(manifest_file.parent.resolve(), src["path"]))
    return summary


def pack(recipe_path: str | os.PathLike, output_zip: str | os.PathLike, *, overrides: list[str] | tuple[str, ...] | None = None,
         with_data: bool = False, force: bool = False) -> dict:
    """Write a bundle of the recipe at ``recipe_path`` (run from the folder the recipe runs from:
    ``dataset_dir`` and ``deepspeed`` are relative to it) to ``output_zip``; returns a summary."""
    from .. import __version__
    from ..convert.core import versions
    from ..io.atomic import sha256_file
    from ..registry import Registry, manifest_path, resolve_file
    from .build import MIXED_RE, _extra_files
    from .document import load_recipe

    recipe = Path(recipe_path)
    args = load_recipe(recipe, list(overrides or ()))
    text = recipe.read_bytes()
    name = recipe.stem
    if not _RECIPE_NAME_RE.match(name):
        raise QfkError(f"recipe name '{name}' cannot travel in a bundle", "rename the file to letters, digits, '.', '_' or '-' (e.g. sft.yaml)")
    out = Path(output_zip)
    if out.exists() and not force:
        raise QfkError(f"{out} exists", "choose another -o, or add --force to replace it")
    warnings: list[str] = []
    for key in ("trust_remote_code",):
        if _is_true(args.get(key)):
            warnings.append(f"the recipe sets {key}: true; unpack needs --trust-remote-code")
    for key in (*PATH_KEYS, *MODEL_KEYS):
        v = args.get(key)
        if key in MODEL_KEYS and isinstance(v, str) and not _looks_like_path(v):
            continue
        if isinstance(v, str) and (v.startswith(("/", "~")) or os.path.isabs(v) or ".." in v.replace("\\", "/").split("/")):
            warnings.append(f"{key}={v} points outside the run folder: unpack needs --allow-outside")

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

    members: dict[str, bytes | Path] = {}
    info: dict[str, dict] = {}        # the dataset_info.json subset
    records: dict[str, dict] = {}     # bundle.json "datasets"
    relocated: dict[str, str] = {}    # data file (absolute) -> member name, for files outside the data dir
    hashed: dict[Path, str] = {}      # data file -> its sha256
    wanted: list[tuple[str, str | None]] = []
    for n in names:
        m = MIXED_RE.match(n)
        base = m["base"] if m and m["base"] in registry else None
        if base and base not in names:
            wanted.append((base, None))
        wanted.append((n, base))

    def member_for(path: Path) -> tuple[str, bool]:
        rel = _relpath_in(path, data_dir)
        if rel is not None:
            return DATA_PREFIX + rel, False
        key = os.path.abspath(path)
        if key not in relocated:
            member = DATA_PREFIX + path.name
            if member in relocated.values():
                raise QfkError(f"two datasets outside {data_dir} are both named {path.name}", "rename one of them")
            relocated[key] = member
        return relocated[key], True

    for n, base in wanted:
        if n in records:
            continue
        entry = registry[n]
        rec: dict[str, Any] = {"entry": entry}
        if base:
            rec.update(base=base, base_entry=registry[base])
        if not entry.get("file_name"):
            if not any(entry.get(k) for k in REMOTE_ENTRY_KEYS):
                raise QfkError(f"dataset '{n}' in {reg.path} has no file_name and no hub url", "fix the entry: qfk datasets check")
            rec.update(kind="remote", included=False, manifest=None)
            if any(entry.get(k) for k in OUTSIDE_ENTRY_KEYS):
                warnings.append(f"dataset {n} uses {'/'.join(k for k in OUTSIDE_ENTRY_KEYS if entry.get(k))}: unpack needs --allow-outside")
            else:
                warnings.append(f"dataset {n} is a hub entry: LLaMA-Factory downloads it; the bundle carries only the entry")
            info[n], records[n] = entry, rec
            continue
        path = resolve_file(entry, data_dir)
        if path is None or not path.exists():
            raise QfkError(f"dataset '{n}': File {path} not found", f"convert it again, or: qfk datasets remove {n}")
        target, moved = member_for(path)
        if moved:
            entry = {**entry, "file_name": target[len(DATA_PREFIX):]}
            rec.update(entry=entry, relocated_from=registry[n]["file_name"])
            warnings.append(f"dataset {n}: {registry[n]['file_name']} is outside {data_dir}; the bundle places it at "
                            f"{dataset_dir}/{entry['file_name']}")
        rec.update(kind="file", file=target)
        manifest = manifest_file = None
        split = None
        if path.is_file():
            sha = hashed[path] = sha256_file(path)  # once: the member listing reuses it
            rec.update(sha256=sha, bytes=path.stat().st_size)
            manifest_file = manifest_path(path)
            if manifest_file is not None:
                try:
                    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    manifest = None
            if isinstance(manifest, dict):
                split = next((s for s, o in _data_splits(manifest).items() if isinstance(o, dict) and o.get("file") == path.name), None)
            why = None
            if manifest_file is None or not isinstance(manifest, dict):
                why = "has no qfk manifest (registered by hand?)"
            elif split is None:
                why = f"is not an output of its manifest {manifest_file.name}"
            elif manifest["outputs"][split].get("sha256") != sha:
                why = (f"changed since it was converted (sha256 {sha[:12]}..., its manifest {manifest_file.name} says "
                       f"{str(manifest['outputs'][split].get('sha256'))[:12]}...)")
            if why:
                if not with_data:
                    raise QfkError(f"dataset '{n}' ({path}) {why}: it cannot be re-made from its source",
                                   "pack it with --with-data, or convert it again with qfk convert")
                warnings.append(f"dataset {n} {why}: packed as data only")
                manifest = None
        else:
            if not with_data:
                raise QfkError(f"dataset '{n}' is a folder ({path}) without a qfk manifest", "pack it with --with-data")
        if manifest is not None:
            m_member = posixpath.join(posixpath.dirname(target), manifest_file.name)
            members[m_member] = manifest_file
            rec["manifest"] = _manifest_summary(manifest, m_member, manifest_file, split)
            src = rec["manifest"]["source"]
            if src.get("kind") == "local" and not with_data and not Path(rec["manifest"]["source_path"]).exists():
                warnings.append(f"the source of {n} ({rec['manifest']['source_path']}) is missing here: "
                                f"unpack needs --source {manifest.get('name') or n}=PATH")
        else:
            rec["manifest"] = None
        rec["included"] = bool(with_data)
        if with_data:
            if path.is_file():
                members[target] = path
                rec["members"] = [target]
            else:
                files = sorted(p for p in path.rglob("*") if p.is_file())
                if not files:
                    raise QfkError(f"dataset '{n}': folder {path} is empty", "point file_name at a file")
                rec["members"] = []
                for p in files:
                    mname = target + "/" + p.relative_to(path).as_posix()
                    members[mname] = p
                    rec["members"].append(mname)
        info[n], records[n] = entry, rec
    for rec in records.values():
        if rec.get("base"):
            rec["base_entry"] = info[rec["base"]]  # as the bundle registers it (file_name relocated with its file)

    files: dict[str, str] = {}
    ds = args.get("deepspeed")
    if isinstance(ds, str) and ds.strip() and not ds.strip().startswith("{"):
        rel = posixpath.normpath(ds.strip().replace("\\", "/"))
        local = Path(ds)
        if os.path.isabs(ds) or rel.startswith(".."):
            warnings.append(f"deepspeed={ds} is outside the run folder: not packed")
        elif local.is_file():
            members[FILES_PREFIX + rel] = local
            files["deepspeed"] = FILES_PREFIX + rel
        elif _extra_files(args):
            members[FILES_PREFIX + rel] = Path(next(iter(_extra_files(args).values())))
            files["deepspeed"] = FILES_PREFIX + rel
        else:
            warnings.append(f"deepspeed={ds} does not exist here: not packed")

    members[RECIPE_MEMBER] = text
    members[INFO_MEMBER] = _json_bytes(info, sort_keys=False)  # entries as registered: names and keys in order
    listing = []
    for mname in sorted(members):
        src = members[mname]
        if isinstance(src, bytes):
            listing.append({"name": mname, "sha256": _sha(src), "bytes": len(src)})
        else:
            listing.append({"name": mname, "sha256": hashed.get(src) or sha256_file(src), "bytes": src.stat().st_size})
    bundle = {
        "qfk_bundle": FORMAT,
        "kit_version": __version__,
        "created_by": versions(),
        "recipe": {"name": name, "member": RECIPE_MEMBER, "sha256": _sha(text), "bytes": len(text),
                   "overrides": list(overrides or ()), "dataset_dir": dataset_dir},
        "with_data": bool(with_data),
        "datasets": records,
        "files": files,
        "members": listing,
    }
    members[BUNDLE_JSON] = _json_bytes(bundle)
    size, digest = _write_zip(out, members)
    return {"output": str(out), "bytes": size, "sha256": digest, "recipe": name, "with_data": bool(with_data),
            "datasets": {n: {"kind": r["kind"], "included": r["included"], "manifest": bool(r.get("manifest")),
                             **({"base": r["base"]} if r.get("base") else {})} for n, r in records.items()},
            "members": listing + [{"name": BUNDLE_JSON, "sha256": _sha(members[BUNDLE_JSON]), "bytes": len(members[BUNDLE_JSON])}],
            "warnings": warnings}


# =============================================================================================
# unpack: reading a bundle safely
# =============================================================================================
def _member_name_problem(name: str) -> str | None:
    if not name:
        return "has an empty name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "has control characters in its name"
    if "\\" in name:
        return "has a backslash in its name"
    if name.startswith("/") or _DRIVE_RE.match(name) or ":" in name:
        return "is an absolute path or names a drive"
    parts = name.split("/")
    if ".." in parts:
        return "has a '..' component"
    if name.endswith("/"):
        return "is a directory entry"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' component"
    return None


class _Budget:
    """Uncompressed bytes actually read, against the per-member and total limits."""

    def __init__(self, max_member: int, max_total: int):
        self.max_member, self.max_total, self.total = max_member, max_total, 0

    def read(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, sink, *, limit: int | None = None) -> tuple[int, str]:
        """Stream one member into ``sink`` (a callable taking bytes); returns (bytes, sha256)."""
        cap = min(self.max_member, limit) if limit else self.max_member
        sha, n = hashlib.sha256(), 0
        try:
            with zf.open(info) as fh:
                while block := fh.read(CHUNK):
                    n += len(block)
                    self.total += len(block)
                    if n > cap:
                        raise _bad(f"bundle member {info.filename!r} is larger than {cap} bytes when decompressed; nothing was written",
                                   "if you trust the bundle, raise the limit (--max-member-bytes)")
                    if self.total > self.max_total:
                        raise _bad(f"the bundle's members add up to more than {self.max_total} bytes when decompressed; "
                                   "nothing was written", "if you trust the bundle, raise the limit (--max-total-bytes)")
                    sha.update(block)
                    sink(block)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise _bad(f"bundle member {info.filename!r} cannot be read ({type(exc).__name__}: {str(exc)[:120]})") from None
        return n, sha.hexdigest()

    def text(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, expected: dict | None) -> bytes:
        buf = io.BytesIO()
        n, digest = self.read(zf, info, buf.write, limit=TEXT_LIMIT)
        if expected is not None:
            _check_listed(info.filename, n, digest, expected)
        return buf.getvalue()


def _check_listed(name: str, n: int, digest: str, expected: dict) -> None:
    if digest != expected.get("sha256") or n != expected.get("bytes"):
        raise _bad(f"bundle member {name!r} does not match bundle.json: sha256 expected {expected.get('sha256')}, "
                   f"actual {digest} ({n} bytes); nothing was written")


def _scan_members(zf: zipfile.ZipFile, max_member: int, max_total: int) -> dict[str, zipfile.ZipInfo]:
    """Check every member's name, type, flags and declared size; before anything is read or written."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _bad(f"the bundle has {len(infos)} members (at most {MAX_MEMBERS})")
    seen: dict[str, zipfile.ZipInfo] = {}
    folded: set[str] = set()
    declared = 0
    for info in infos:
        name = info.filename
        why = _member_name_problem(name) or (_member_name_problem(info.orig_filename) if info.orig_filename != name else None)
        if why:
            raise _bad(f"bundle member {name!r} {why}: refused, nothing was written")
        if name in seen:
            raise _bad(f"bundle member {name!r} appears twice: refused, nothing was written")
        key = unicodedata.normalize("NFC", name).casefold()
        if key in folded:
            raise _bad(f"bundle member {name!r} differs from another only in case or Unicode form: refused, nothing was written")
        folded.add(key)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise _bad(f"bundle member {name!r} is a symbolic link: refused, nothing was written")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG) or info.is_dir():
            raise _bad(f"bundle member {name!r} is not a regular file: refused, nothing was written")
        if info.flag_bits & 0x1:
            raise _bad(f"bundle member {name!r} is encrypted: refused, nothing was written")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _bad(f"bundle member {name!r} uses compression method {info.compress_type}: refused (stored or deflate only)")
        if info.file_size > max_member:
            raise _bad(f"bundle member {name!r} is {info.file_size} bytes uncompressed, over the limit of {max_member}: "
                       "refused, nothing was written", "if you trust the bundle, raise the limit (--max-member-bytes)")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise _bad(f"bundle member {name!r} expands {info.file_size // max(info.compress_size, 1)}x "
                       f"({info.compress_size} -> {info.file_size} bytes): refused as a zip bomb, nothing was written")
        declared += info.file_size
        if declared > max_total:
            raise _bad(f"the bundle's members add up to more than {max_total} bytes uncompressed: refused, nothing was written",
                       "if you trust the bundle, raise the limit (--max-total-bytes)")
        seen[name] = info
    return seen


def _need(cond: Any, what: str) -> None:
    if not cond:
        raise _bad(f"bundle.json is malformed: {what}; nothing was written")


def _parse_json(data: bytes, member: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _bad(f"bundle member {member} is not valid JSON ({str(exc)[:120]}); nothing was written") from None


def _walk_strings(obj: Any, depth: int = 0):
    if depth > 50:
        raise _bad("the recipe nests too deeply; nothing was written")
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_strings(k, depth + 1)
            yield from _walk_strings(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk_strings(v, depth + 1)


def safe_recipe_args(data: bytes, overrides: list[str]) -> dict:
    """The recipe's arguments (with the bundle's overrides) read without running anything:
    plain YAML only (no tags beyond the standard ones, no anchors), no OmegaConf interpolation."""
    import yaml

    from .document import parse_overrides

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the bundle's recipe is not UTF-8 text: refused, nothing was written") from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise _bad("the bundle's recipe uses YAML anchors/aliases: refused, nothing was written",
                           "a recipe is a flat YAML mapping of LLaMA-Factory keys")
        args = yaml.safe_load(text)
    except RecursionError:
        raise _bad("the bundle's recipe nests too deeply: refused, nothing was written") from None
    except yaml.YAMLError as exc:
        first = str(exc).replace("\n", " ")[:200]
        raise _bad(f"the bundle's recipe is not plain YAML ({first}): refused, nothing was written",
                   "python tags such as !!python/object run code when loaded unsafely; do not use this bundle") from None
    if args is None:
        args = {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise _bad("the bundle's recipe is not a YAML mapping of keys: refused, nothing was written")
    if not all(isinstance(o, str) for o in overrides):
        raise _bad("bundle.json overrides must be KEY=VALUE strings; nothing was written")
    merged = {**args, **parse_overrides(overrides)}
    for s in _walk_strings(merged):
        if "${" in s:
            raise _bad(f"the bundle's recipe uses an OmegaConf interpolation ({s[:80]!r}): refused, nothing was written",
                       "interpolations can read environment variables and run resolvers; write the value itself")
    return merged


def _check_recipe_args(args: dict, dest: Path, *, trust_remote_code: bool, allow_outside: bool) -> None:
    if _is_true(args.get("trust_remote_code")) and not trust_remote_code:
        raise QfkError("the bundle's recipe sets trust_remote_code: true (it runs code from the model repository): refused, "
                       "nothing was written", "if you trust the model and the bundle, add --trust-remote-code")
    if allow_outside:
        return
    for key in (*PATH_KEYS, *MODEL_KEYS):
        value = args.get(key)
        if not isinstance(value, str):
            continue
        values = value.split(",") if key == "adapter_name_or_path" else [value]
        for v in values:
            if key == "deepspeed" and v.strip().startswith("{"):
                continue
            if key in MODEL_KEYS and not _looks_like_path(v):
                continue
            why = _outside(v, dest, dest)
            if why:
                raise QfkError(f"the bundle's recipe sets {key}: {v!r}, which {why} and points outside {dest}: refused, "
                               "nothing was written", "if you trust the bundle, add --allow-outside")


def _check_entries(info: dict, data_dir: Path, dest: Path, *, allow_outside: bool) -> dict[str, str]:
    """Validate registry entries from a bundle; returns {name: why} for entries that point outside."""
    from ..registry import validate_entry

    outside: dict[str, str] = {}
    for name, entry in info.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise _bad(f"the bundle registers a dataset named {name!r}: refused, nothing was written")
        if not isinstance(entry, dict):
            raise _bad(f"the bundle's entry {name!r} is not an object: refused, nothing was written")
        validate_entry(name, entry)
        for key in OUTSIDE_ENTRY_KEYS:
            if entry.get(key):
                if not allow_outside:
                    raise QfkError(f"the bundle's dataset '{name}' uses {key}: {entry[key]!r} (LLaMA-Factory would run or read "
                                   "it from outside the bundle): refused, nothing was written",
                                   "if you trust the bundle, add --allow-outside")
                outside[name] = key
        fn = entry.get("file_name")
        if isinstance(fn, str):
            why = _outside(fn, data_dir, data_dir)
            if why:
                if not allow_outside:
                    raise QfkError(f"the bundle's dataset '{name}' has file_name {fn!r}, which {why}: refused, nothing was written",
                                   "if you trust the bundle, add --allow-outside")
                outside[name] = f"file_name {why}"
    return outside


def _check_manifest(manifest: Any, member: str) -> None:
    from ..convert import CONVERTERS

    _need(isinstance(manifest, dict), f"manifest {member} is not an object")
    _need(manifest.get("converter") in CONVERTERS, f"manifest {member} names an unknown converter {manifest.get('converter')!r}")
    _need(isinstance(manifest.get("name"), str) and manifest["name"], f"manifest {member} has no name")
    _need(isinstance(manifest.get("options"), dict), f"manifest {member} has no options")
    src = manifest.get("source")
    _need(isinstance(src, dict) and src.get("kind") in ("local", "modelscope", "hf"), f"manifest {member} has no usable source")
    files = src.get("files")
    _need(isinstance(files, list) and files and all(isinstance(f, dict) and isinstance(f.get("path"), str)
                                                    and _SHA_RE.match(str(f.get("sha256"))) for f in files),
          f"manifest {member} lists no source files with sha256")
    if src["kind"] == "local":
        _need(isinstance(src.get("path"), str), f"manifest {member} has no source path")
    else:
        _need(isinstance(src.get("dataset_id"), str) and _HUB_ID_RE.match(src["dataset_id"]),
              f"manifest {member} has a bad hub dataset id")
        _need(src.get("revision") is None or (isinstance(src["revision"], str) and _HUB_REV_RE.match(src["revision"])),
              f"manifest {member} has a bad hub revision")
    splits = _data_splits(manifest)
    _need("train" in splits, f"manifest {member} has no train output")
    for s, out in splits.items():
        _need(s in ("train", "val", "test") and isinstance(out, dict), f"manifest {member} has an unknown output {s!r}")
        fname = out.get("file")
        _need(isinstance(fname, str) and _member_name_problem(fname) is None and "/" not in fname,
              f"manifest {member} output {s} is not a plain file name")
        _need(_SHA_RE.match(str(out.get("sha256"))), f"manifest {member} output {s} has no sha256")
    from ..convert.core import output_paths

    train = splits["train"]["file"]
    _need(train.lower().endswith((".jsonl", ".json")), f"manifest {member} train output is not .jsonl")
    expect = output_paths(Path(train))
    _need(posixpath.basename(member) == expect["manifest"].name, f"manifest {member} is not named after its output {train}")
    for s, out in splits.items():
        _need(out["file"] == expect[s].name, f"manifest {member} output {s} is not {expect[s].name}")


def _parse_sources(sources: dict | None) -> dict[str, str]:
    out = {}
    for k, v in (sources or {}).items():
        if not isinstance(k, str) or not k or not isinstance(v, (str, os.PathLike)):
            raise QfkError(f"--source {k}={v} is not NAME=PATH", "for example: --source demo_medical=/data/rows.jsonl")
        out[k] = str(v)
    return out


# =============================================================================================
# unpack
# =============================================================================================
def unpack(bundle_zip: str | os.PathLike, dest_dir: str | os.PathLike, *, trust_remote_code: bool = False,
           allow_outside: bool = False, sources: dict[str, str] | None = None,
           max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
           force: bool = False, cache_dir: str | os.PathLike | None = None) -> dict:
    """Unpack a bundle into ``dest_dir`` (the folder the recipe runs from): the recipe as
    ``DEST/NAME.yaml``, the datasets in ``DEST/<dataset_dir>`` (taken from the bundle, or
    re-converted from their recorded sources and checked against their manifests), registered in
    ``DEST/<dataset_dir>/dataset_info.json``. Everything is checked before anything is written."""
    bundle_path = Path(bundle_zip)
    dest = Path(dest_dir)
    if not bundle_path.is_file():
        raise QfkError(f"bundle {bundle_path} not found", "make one with: qfk recipe pack recipe.yaml -o bundle.zip")
    if dest.exists() and not dest.is_dir():
        raise QfkError(f"{dest} exists and is not a folder", "give a folder to unpack into")
    source_map = _parse_sources(sources)
    try:
        zf = zipfile.ZipFile(bundle_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise QfkError(f"{bundle_path} is not a zip file ({exc})", "make one with: qfk recipe pack recipe.yaml -o bundle.zip") from None
    with zf:
        return _unpack(zf, bundle_path, dest, trust_remote_code=trust_remote_code, allow_outside=allow_outside,
                       sources=source_map, budget=_Budget(max_member_bytes, max_total_bytes), force=force, cache_dir=cache_dir)


def _unpack(zf: zipfile.ZipFile, bundle_path: Path, dest: Path, *, trust_remote_code: bool, allow_outside: bool,
            sources: dict[str, str], budget: _Budget, force: bool, cache_dir) -> dict:
    from ..registry import Registry

    # ---- 1. members: names, types, sizes; then the listing in bundle.json ------------------
    infos = _scan_members(zf, budget.max_member, budget.max_total)
    if BUNDLE_JSON not in infos:
        raise _bad(f"{bundle_path} has no bundle.json: it is not a qfk recipe bundle",
                   "make one with: qfk recipe pack recipe.yaml -o bundle.zip")
    bundle = _parse_json(budget.text(zf, infos[BUNDLE_JSON], None), BUNDLE_JSON)
    _need(isinstance(bundle, dict), "not an object")
    if bundle.get("qfk_bundle") != FORMAT:
        raise QfkError(f"{bundle_path} is bundle format {bundle.get('qfk_bundle')!r}; this kit reads format {FORMAT}",
                       "unpack it with the kit version that made it: " + str(bundle.get("kit_version")))
    listing = bundle.get("members")
    _need(isinstance(listing, list) and all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in listing),
          "members is not a list of {name, sha256, bytes}")
    listed = {m["name"]: m for m in listing}
    _need(len(listed) == len(listing), "members lists a name twice")
    for name in listed:
        why = _member_name_problem(name)
        if why:
            raise _bad(f"bundle.json lists a member {name!r} that {why}: refused, nothing was written")
        if name not in (RECIPE_MEMBER, INFO_MEMBER) and not name.startswith((DATA_PREFIX, FILES_PREFIX)):
            raise _bad(f"bundle member {name!r} is not a part of a recipe bundle: refused, nothing was written")
    unexpected = sorted(set(infos) - set(listed) - {BUNDLE_JSON})
    if unexpected:
        raise _bad(f"bundle member {unexpected[0]!r} is not listed in bundle.json: refused, nothing was written")
    absent = sorted(set(listed) - set(infos))
    if absent:
        raise _bad(f"bundle.json lists {absent[0]!r} but the zip lacks it; nothing was written")
    for name in (RECIPE_MEMBER, INFO_MEMBER):
        _need(name in listed, f"no {name} member")

    # ---- 2. the recipe -----------------------------------------------------------------------
    recipe = bundle.get("recipe")
    _need(isinstance(recipe, dict), "no recipe record")
    rname = recipe.get("name")
    if not isinstance(rname, str) or not _RECIPE_NAME_RE.match(rname):
        raise _bad(f"the bundle's recipe name {rname!r} is not a plain file name: refused, nothing was written")
    overrides = recipe.get("overrides") or []
    _need(isinstance(overrides, list), "recipe overrides is not a list")
    recipe_bytes = budget.text(zf, infos[RECIPE_MEMBER], listed[RECIPE_MEMBER])
    _need(recipe.get("sha256") == listed[RECIPE_MEMBER].get("sha256"), "the recipe's sha256 differs from its member's")
    args = safe_recipe_args(recipe_bytes, overrides)
    _check_recipe_args(args, dest, trust_remote_code=trust_remote_code, allow_outside=allow_outside)
    dataset_dir = args.get("dataset_dir") or "data"
    if not isinstance(dataset_dir, str) or dataset_dir == "ONLINE":
        raise _bad(f"the bundle's recipe has dataset_dir {dataset_dir!r}, which a bundle cannot fill: refused")
    data_dir = Path(dataset_dir).expanduser() if os.path.isabs(dataset_dir) or dataset_dir.startswith("~") else dest / dataset_dir
    recipe_out = dest / f"{rname}.yaml"

    # ---- 3. the registry entries and the datasets ---------------------------------------------
    info = _parse_json(budget.text(zf, infos[INFO_MEMBER], listed[INFO_MEMBER]), INFO_MEMBER)
    _need(isinstance(info, dict), "dataset_info.json is not an object")
    outside = _check_entries(info, data_dir, dest, allow_outside=allow_outside)
    records = bundle.get("datasets")
    _need(isinstance(records, dict) and all(isinstance(r, dict) for r in records.values()), "datasets is not an object")
    names = recipe_datasets(args)
    lacking = [n for n in names if n not in records or n not in info]
    if lacking:
        raise _bad(f"the recipe names dataset {lacking[0]!r} but the bundle does not carry it; nothing was written")
    if set(records) != set(info):
        odd = min(set(records) ^ set(info))
        raise _bad(f"dataset {odd!r} is in only one of bundle.json and dataset_info.json; nothing was written")
    for n, rec in records.items():
        _need(rec.get("entry") == info[n], f"dataset {n}: its entry differs from dataset_info.json's")
        if rec.get("base") is not None:
            _need(rec["base"] in info and rec.get("base_entry") == info[rec["base"]], f"dataset {n}: base entry mismatch")
        if n not in names and not any(r.get("base") == n for r in records.values()):
            raise _bad(f"the bundle carries dataset {n!r}, which the recipe does not use: refused, nothing was written")

    # which data members each dataset brings, which manifests, which conversions
    expected_data: set[str] = set()
    manifests: dict[str, dict] = {}        # member -> parsed manifest
    groups: dict[str, dict] = {}           # manifest member -> {"manifest", "names", "convert", "hint"}
    plan: dict[str, dict] = {}             # dataset -> how it is made
    for n, rec in records.items():
        entry = info[n]
        if n in outside or not entry.get("file_name"):
            _need(not rec.get("included"), f"dataset {n}: included data for an entry outside the destination")
            plan[n] = {"how": "external" if n in outside else "remote"}
            continue
        fn = posixpath.normpath(entry["file_name"])
        target = DATA_PREFIX + fn
        _need(rec.get("file") == target, f"dataset {n}: file {rec.get('file')!r} is not {target!r}")
        msum = rec.get("manifest")
        mmember = None
        if msum is not None:
            _need(isinstance(msum, dict) and isinstance(msum.get("member"), str), f"dataset {n}: bad manifest record")
            mmember = msum["member"]
            _need(mmember in listed and mmember.startswith(DATA_PREFIX), f"dataset {n}: manifest {mmember!r} is not a member")
            _need(posixpath.dirname(mmember) == posixpath.dirname(target), f"dataset {n}: manifest {mmember!r} is not beside its file")
            if mmember not in manifests:
                m = _parse_json(budget.text(zf, infos[mmember], listed[mmember]), mmember)
                _check_manifest(m, mmember)
                manifests[mmember] = m
            expected_data.add(mmember)
            if not any(o.get("file") == posixpath.basename(fn) for o in _data_splits(manifests[mmember]).values()):
                raise _bad(f"dataset {n}: {fn} is not an output of its manifest {mmember}; nothing was written")
        if rec.get("included"):
            mem = rec.get("members")
            _need(isinstance(mem, list) and mem and all(isinstance(x, str) for x in mem), f"dataset {n}: no members")
            for x in mem:
                _need(x in listed and (x == target or x.startswith(target + "/")), f"dataset {n}: member {x!r} is not under {target}")
                expected_data.add(x)
            plan[n] = {"how": "included", "file": fn, "manifest": mmember}
        else:
            if mmember is None:
                raise _bad(f"dataset {n} carries neither its data nor a manifest to re-make it; nothing was written")
            g = groups.setdefault(mmember, {"names": [], "hint": msum.get("source_path")})
            g["names"].append(n)
            plan[n] = {"how": "converted", "file": fn, "manifest": mmember}
    files_map = bundle.get("files") or {}
    _need(isinstance(files_map, dict), "files is not an object")
    for key, member in files_map.items():
        _need(key == "deepspeed" and isinstance(member, str) and member in listed and member.startswith(FILES_PREFIX),
              f"files entry {key!r} is not a DeepSpeed config member")
        value = args.get("deepspeed")
        _need(isinstance(value, str) and posixpath.normpath(value.strip().replace("\\", "/")) == member[len(FILES_PREFIX):],
              f"the DeepSpeed member {member!r} is not what the recipe names")
    extra = sorted(n for n in listed if n.startswith(DATA_PREFIX) and n not in expected_data)
    extra += sorted(n for n in listed if n.startswith(FILES_PREFIX) and n not in files_map.values())
    if extra:
        raise _bad(f"bundle member {extra[0]!r} is not used by any dataset of the recipe: refused, nothing was written")
    aliases: dict[str, str] = {}
    for mmember, g in groups.items():
        for alias in (manifests[mmember]["name"], *g["names"]):
            aliases.setdefault(alias, mmember)
    unknown = sorted(set(sources) - set(aliases))
    if unknown:
        choices = ", ".join(sorted(aliases)) or "none: every dataset is in the bundle"
        raise QfkError(f"--source {unknown[0]}: no dataset of the bundle is re-converted under that name",
                       f"names that take --source: {choices}")

    # ---- 4. where things go; conflicts ---------------------------------------------------------
    if not allow_outside:
        try:
            data_dir.resolve().relative_to(dest.resolve())
        except ValueError:
            raise QfkError(f"dataset_dir {dataset_dir!r} resolves outside {dest}: refused, nothing was written",
                           "if you trust the bundle, add --allow-outside") from None
    if recipe_out.exists() and recipe_out.stat().st_size and recipe_out.read_bytes() != recipe_bytes and not force:
        raise QfkError(f"{recipe_out} exists: refused to overwrite it", "unpack into another folder, or add --force to replace it")
    reg = Registry(data_dir)
    current = reg.read()
    to_register = {n: info[n] for n in info}
    clash = [n for n, e in to_register.items() if n in current and current[n] != e]
    if clash and not force:
        raise QfkError(f"dataset '{clash[0]}' is already registered differently in {reg.path}",
                       "unpack into another folder, or add --force to replace the entries")
    expected_sha: dict[str, str] = {}   # data-dir relative file -> sha256 its manifest records
    for mmember, m in manifests.items():
        d = posixpath.dirname(mmember[len(DATA_PREFIX):])
        for out in _data_splits(m).values():
            expected_sha[posixpath.join(d, out["file"])] = out["sha256"]
    writes: dict[str, str] = {}         # data files this unpack writes -> their sha256
    for mmember in groups:
        d = posixpath.dirname(mmember[len(DATA_PREFIX):])
        writes.update({posixpath.join(d, o["file"]): o["sha256"] for o in _data_splits(manifests[mmember]).values()})
    for member in expected_data - set(manifests):
        writes[member[len(DATA_PREFIX):]] = listed[member].get("sha256")
    if not force:
        from ..io.atomic import sha256_file

        for rel, sha in sorted(writes.items()):
            existing = data_dir / rel
            if existing.is_file() and sha256_file(existing) != sha:
                raise QfkError(f"{existing} exists with other content: refused to overwrite it",
                               "unpack into another folder, or add --force to replace it")
    ds_bytes: dict[str, bytes] = {}
    for member in files_map.values():
        ds_bytes[member] = budget.text(zf, infos[member], listed[member])
        target = dest / member[len(FILES_PREFIX):]
        if target.exists() and target.read_bytes() != ds_bytes[member] and not force:
            raise QfkError(f"{target} exists with other content: refused to overwrite it", "add --force to replace it")

    # ---- 5. stage (inside the data dir), convert, verify --------------------------------------
    created = [p for p in (data_dir, *data_dir.parents) if not p.exists()]  # deepest first: removed on failure
    if not dest.exists() and dest not in created:
        created.append(dest)
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".qfk-unpack-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    ok = False
    conversions: dict[str, dict] = {}
    warnings: list[str] = []
    try:
        for mmember in sorted(expected_data - set(manifests)):
            _extract(zf, infos[mmember], listed[mmember], staging / mmember[len(DATA_PREFIX):], budget)
        for mmember in manifests:
            if mmember not in groups:  # with the data: the packer's manifest, verbatim
                _extract(zf, infos[mmember], listed[mmember], staging / mmember[len(DATA_PREFIX):], budget)
        for n, p in plan.items():  # included files with a manifest must be what it records
            if p["how"] == "included" and p["manifest"] and p["file"] in expected_sha:
                staged = staging / p["file"]
                if staged.is_file():
                    _verify(staged, expected_sha[p["file"]], f"{p['file']} (dataset {n}) in the bundle")
        for mmember, g in sorted(groups.items()):
            conversions[manifests[mmember]["name"]] = _reconvert(
                manifests[mmember], mmember, g, staging, data_dir, sources, aliases, cache_dir, warnings)
        # ---- 6. move into place, write the recipe and files, register --------------------------
        for p in sorted(x for x in staging.rglob("*") if x.is_file()):
            rel = p.relative_to(staging)
            final = data_dir / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, final)
        from ..io.atomic import atomic_write_bytes

        atomic_write_bytes(recipe_out, recipe_bytes)
        for member, data in ds_bytes.items():
            atomic_write_bytes(dest / member[len(FILES_PREFIX):], data)

        order = [n for n in info if any(r.get("base") == n for r in records.values())] + [n for n in info]

        def change(data: dict) -> list[str]:
            now = [n for n in dict.fromkeys(order) if n in data and data[n] != info[n]]
            if now and not force:
                raise QfkError(f"dataset '{now[0]}' was registered differently in {reg.path} meanwhile", "add --force to replace it")
            for n in dict.fromkeys(order):
                data[n] = info[n]
            return list(dict.fromkeys(order))

        registered = reg.update(change)
        ok = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not ok:
            for p in created:  # deepest first
                try:
                    p.rmdir()
                except OSError:
                    pass

    for n, p in plan.items():
        if p["how"] == "external":
            warnings.append(f"dataset {n} points outside {dest} ({outside[n]}): registered as it is, its data was not written")
    run_over = " ".join(overrides)
    return {
        "bundle": str(bundle_path), "dir": str(dest), "recipe": str(recipe_out), "dataset_dir": dataset_dir,
        "data_dir": str(data_dir), "kit_version": bundle.get("kit_version"), "with_data": bool(bundle.get("with_data")),
        "datasets": {n: {**p, **({"base": records[n]["base"]} if records[n].get("base") else {})} for n, p in plan.items()},
        "conversions": conversions, "registered": registered, "overrides": overrides,
        "files": [str(dest / m[len(FILES_PREFIX):]) for m in files_map.values()], "warnings": warnings,
        "next": f"cd {dest} && qfk recipe check {rname}.yaml{' ' + run_over if run_over else ''} && "
                f"qfk train {rname}.yaml{' ' + run_over if run_over else ''}",
    }


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, expected: dict, path: Path, budget: _Budget) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        n, digest = budget.read(zf, info, fh.write)
    _check_listed(info.filename, n, digest, expected)


def _verify(path: Path, expected: str, what: str) -> None:
    from ..io.atomic import sha256_file

    actual = sha256_file(path)
    if actual != expected:
        raise QfkError(f"{what}: sha256 mismatch, expected {expected}, actual {actual}; nothing was registered",
                       "the data differs from what the bundle's manifest records: do not train on it; ask for a fresh bundle")


def _source_files(src: dict) -> list[tuple[str, str]]:
    """(path relative to the source root, sha256) of every recorded source file."""
    out = []
    for f in src["files"]:
        if src["kind"] == "local":
            rel = os.path.relpath(posixpath.normpath(f["path"]), posixpath.normpath(src["path"])).replace(os.sep, "/")
        else:
            rel = posixpath.normpath(f["path"])
        if rel != "." and (_member_name_problem(rel) or rel.startswith("..")):
            raise _bad(f"a source file of the bundle, {f['path']!r}, is not inside its source {src.get('path')!r}")
        out.append((rel, f["sha256"]))
    return out


def _reconvert(manifest: dict, mmember: str, group: dict, staging: Path, data_dir: Path, sources: dict[str, str],
               aliases: dict[str, str], cache_dir, warnings: list[str]) -> dict:
    """Re-run a recorded conversion into the staging folder and check its outputs' sha256."""
    import orjson

    from ..convert import convert
    from ..io.atomic import sha256_file
    from ..io.sources import resolve_source

    name = manifest["name"]
    src = manifest["source"]
    given = next((sources[a] for a in sources if aliases.get(a) == mmember), None)
    shown = next((a for a in sources if aliases.get(a) == mmember), name)
    files = _source_files(src)
    if given is not None:
        root = Path(given).expanduser()
        if not root.exists():
            raise QfkError(f"--source {shown}={given}: no such file or folder", "give the path of a local copy of the source")
        resolved = resolve_source(str(root))
    elif src["kind"] == "local":
        candidates = [c for c in (group.get("hint"), src.get("spec")) if isinstance(c, str) and os.path.isabs(c)]
        root = next((Path(c) for c in candidates if Path(c).exists()), None)
        if root is None:
            where = candidates[0] if candidates else src.get("spec")
            raise QfkError(f"the source of dataset {name} ({where}) is not on this machine",
                           f"point at a copy: --source {name}=PATH (its sha256 is {files[0][1]})")
        resolved = resolve_source(str(root))
    else:
        rev = src.get("revision")
        spec = f"{'modelscope' if src['kind'] == 'modelscope' else 'hf'}://{src['dataset_id']}" + (f"@{rev}" if rev else "")
        resolved = resolve_source(spec, cache_dir=cache_dir)
        root = resolved.path
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
    options, dropped = conversion_options(manifest)
    splits = _data_splits(manifest)
    reldir = posixpath.dirname(mmember[len(DATA_PREFIX):])
    out_dir = staging / reldir if reldir else staging
    out_dir.mkdir(parents=True, exist_ok=True)
    res = convert(manifest["converter"], resolved, output=str(out_dir / splits["train"]["file"]), name=name,
                  register=False, **options)
    produced = {s: Path(v["path"]).name for s, v in res.splits.items()}
    if set(produced) != set(splits):
        raise QfkError(f"re-converting {name} gave the splits {sorted(produced)}, its manifest records {sorted(splits)}; "
                       "nothing was registered", "ask for a bundle made with --with-data")
    for s, out in splits.items():
        _verify(out_dir / out["file"], out["sha256"], f"{posixpath.join(reldir, out['file'])} (re-converted {name}, {s})")
    # the new manifest's local source paths are relative to the staging folder: make them relative to the data dir
    mpath = out_dir / posixpath.basename(mmember)
    new = json.loads(mpath.read_text(encoding="utf-8"))
    if new.get("source", {}).get("kind") == "local":
        old_base, new_base = out_dir.resolve(), (data_dir / reldir).resolve()

        def rebase(p: str) -> str:
            return os.path.relpath(os.path.normpath(os.path.join(old_base, p)), new_base)

        new["source"]["path"] = rebase(new["source"]["path"])
        for f in new["source"].get("files", []):
            f["path"] = rebase(f["path"])
        mpath.write_bytes(orjson.dumps(new, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    if manifest.get("versions", {}).get("qwen_factory_kit") != new.get("versions", {}).get("qwen_factory_kit"):
        warnings.append(f"{name} was converted by qfk {manifest.get('versions', {}).get('qwen_factory_kit')} "
                        f"and re-converted by {new.get('versions', {}).get('qwen_factory_kit')} (outputs verified identical)")
    return {"converter": manifest["converter"], "source": str(root), "kind": resolved.kind, "rows": res.rows_out,
            "outputs": {s: {"file": posixpath.join(reldir, o["file"]), "sha256": o["sha256"]} for s, o in splits.items()},
            "options_not_passed": dropped, "datasets": group["names"]}
