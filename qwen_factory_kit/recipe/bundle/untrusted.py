"""Checks of a bundle as untrusted input; none of them writes anything.

- the zip: every member's name, type, flags and declared size (:func:`scan_members`), the listing
  in ``bundle.json`` (:func:`check_listing`), and the bytes actually decompressed against the
  per-member and total limits and the listed sha256 (:class:`Budget`, :class:`Members`);
- the recipe: plain YAML only, no anchors, no OmegaConf interpolation (:func:`safe_recipe_args`),
  no ``trust_remote_code`` and no path outside the destination unless allowed
  (:func:`check_recipe_args`);
- the registry entries (:func:`check_entries`), the qfk manifests (:func:`check_manifest`) and the
  token-mix records, made again from their base (:func:`check_picked`);
- a file against the sha256 its manifest records (:func:`verify_sha`).

Every refusal is a :class:`~qwen_factory_kit.errors.QfkError` that says nothing was written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import stat
import unicodedata
import zipfile
import zlib
from pathlib import Path
from typing import Any

from ...errors import QfkError
from ..document import MODEL_KEYS, PATH_KEYS
from .format import (
    BUNDLE_JSON,
    CHUNK,
    DATA_PREFIX,
    FILES_PREFIX,
    INFO_MEMBER,
    OUTSIDE_ENTRY_KEYS,
    RECIPE_MEMBER,
    data_splits,
)

DEFAULT_MAX_MEMBER_BYTES = 4 << 30   # one member (a converted data file) at most 4 GiB uncompressed
DEFAULT_MAX_TOTAL_BYTES = 16 << 30   # all members together at most 16 GiB uncompressed
TEXT_LIMIT = 16 << 20                # bundle.json, recipe, registry, manifests, DeepSpeed configs
MAX_MEMBERS = 10_000
MAX_RATIO = 250                      # uncompressed / compressed, for members above RATIO_FLOOR
RATIO_FLOOR = 1 << 20

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$")
_HUB_REV_RE = re.compile(r"^[A-Za-z0-9_.\-/]+$")
_TRUE = ("true", "1", "yes", "on", "y")


def bad(message: str, hint: str | None = None) -> QfkError:
    """A refusal of a damaged or hand-made bundle."""
    return QfkError(message, hint or "the bundle was damaged or made by hand; ask for a fresh one (qfk recipe pack)")


def need(cond: Any, what: str) -> None:
    if not cond:
        raise bad(f"bundle.json is malformed: {what}; nothing was written")


# ---- recipe values ------------------------------------------------------------------------------
def is_true(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    return isinstance(value, str) and value.strip().lower() in _TRUE


def looks_like_path(value: str) -> bool:
    """A hub id is ``owner/name``; anything else with a separator, a dot start or a drive is a path."""
    v = value.strip()
    return (v.startswith(("/", "~", ".")) or "\\" in v or bool(_DRIVE_RE.match(v)) or v.count("/") > 1
            or ".." in v.split("/"))


def outside_reason(value: str, base: Path, root: Path) -> str | None:
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


# ---- the zip's members --------------------------------------------------------------------------
def member_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a member (or a relative file name) of a bundle, else None."""
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


class Budget:
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
                        raise bad(f"bundle member {info.filename!r} is larger than {cap} bytes when decompressed; nothing was written",
                                  "if you trust the bundle, raise the limit (--max-member-bytes)")
                    if self.total > self.max_total:
                        raise bad(f"the bundle's members add up to more than {self.max_total} bytes when decompressed; "
                                  "nothing was written", "if you trust the bundle, raise the limit (--max-total-bytes)")
                    sha.update(block)
                    sink(block)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise bad(f"bundle member {info.filename!r} cannot be read ({type(exc).__name__}: {str(exc)[:120]})") from None
        return n, sha.hexdigest()

    def text(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, expected: dict | None) -> bytes:
        """A small member (at most TEXT_LIMIT), checked against its listing ``expected`` when given."""
        buf = io.BytesIO()
        n, digest = self.read(zf, info, buf.write, limit=TEXT_LIMIT)
        if expected is not None:
            check_listed(info.filename, n, digest, expected)
        return buf.getvalue()


def check_listed(name: str, n: int, digest: str, expected: dict) -> None:
    if digest != expected.get("sha256") or n != expected.get("bytes"):
        raise bad(f"bundle member {name!r} does not match bundle.json: sha256 expected {expected.get('sha256')}, "
                  f"actual {digest} ({n} bytes); nothing was written")


def _member_problem(info: zipfile.ZipInfo, max_member: int) -> QfkError | None:
    """Why one member's type, flags or declared size is refused, else None."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return bad(f"bundle member {name!r} is a symbolic link: refused, nothing was written")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG) or info.is_dir():
        return bad(f"bundle member {name!r} is not a regular file: refused, nothing was written")
    if info.flag_bits & 0x1:
        return bad(f"bundle member {name!r} is encrypted: refused, nothing was written")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return bad(f"bundle member {name!r} uses compression method {info.compress_type}: refused (stored or deflate only)")
    if info.file_size > max_member:
        return bad(f"bundle member {name!r} is {info.file_size} bytes uncompressed, over the limit of {max_member}: "
                   "refused, nothing was written", "if you trust the bundle, raise the limit (--max-member-bytes)")
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return bad(f"bundle member {name!r} expands {info.file_size // max(info.compress_size, 1)}x "
                   f"({info.compress_size} -> {info.file_size} bytes): refused as a zip bomb, nothing was written")
    return None


def scan_members(zf: zipfile.ZipFile, max_member: int, max_total: int) -> dict[str, zipfile.ZipInfo]:
    """Check every member's name, type, flags and declared size; before anything is read or written."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise bad(f"the bundle has {len(infos)} members (at most {MAX_MEMBERS})")
    seen: dict[str, zipfile.ZipInfo] = {}
    folded: set[str] = set()
    declared = 0
    for info in infos:
        name = info.filename
        why = member_name_problem(name) or (member_name_problem(info.orig_filename) if info.orig_filename != name else None)
        if why:
            raise bad(f"bundle member {name!r} {why}: refused, nothing was written")
        if name in seen:
            raise bad(f"bundle member {name!r} appears twice: refused, nothing was written")
        key = unicodedata.normalize("NFC", name).casefold()
        if key in folded:
            raise bad(f"bundle member {name!r} differs from another only in case or Unicode form: refused, nothing was written")
        folded.add(key)
        problem = _member_problem(info, max_member)
        if problem:
            raise problem
        declared += info.file_size
        if declared > max_total:
            raise bad(f"the bundle's members add up to more than {max_total} bytes uncompressed: refused, nothing was written",
                      "if you trust the bundle, raise the limit (--max-total-bytes)")
        seen[name] = info
    return seen


def check_listing(bundle: dict, infos: dict[str, zipfile.ZipInfo]) -> dict[str, dict]:
    """``bundle.json``'s member listing against the zip: the same names, each a part of a bundle;
    returns {member: {name, sha256, bytes}}."""
    listing = bundle.get("members")
    need(isinstance(listing, list) and all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in listing),
         "members is not a list of {name, sha256, bytes}")
    listed = {m["name"]: m for m in listing}
    need(len(listed) == len(listing), "members lists a name twice")
    for name in listed:
        why = member_name_problem(name)
        if why:
            raise bad(f"bundle.json lists a member {name!r} that {why}: refused, nothing was written")
        if name not in (RECIPE_MEMBER, INFO_MEMBER) and not name.startswith((DATA_PREFIX, FILES_PREFIX)):
            raise bad(f"bundle member {name!r} is not a part of a recipe bundle: refused, nothing was written")
    unexpected = sorted(set(infos) - set(listed) - {BUNDLE_JSON})
    if unexpected:
        raise bad(f"bundle member {unexpected[0]!r} is not listed in bundle.json: refused, nothing was written")
    absent = sorted(set(listed) - set(infos))
    if absent:
        raise bad(f"bundle.json lists {absent[0]!r} but the zip lacks it; nothing was written")
    for name in (RECIPE_MEMBER, INFO_MEMBER):
        need(name in listed, f"no {name} member")
    return listed


class Members:
    """A scanned bundle's listed members, read within the budget and checked against their listing."""

    def __init__(self, zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], listed: dict[str, dict], budget: Budget):
        self.zf, self.infos, self.listed, self.budget = zf, infos, listed, budget

    def text(self, name: str) -> bytes:
        return self.budget.text(self.zf, self.infos[name], self.listed[name])

    def json(self, name: str) -> Any:
        return parse_json(self.text(name), name)

    def extract(self, name: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            n, digest = self.budget.read(self.zf, self.infos[name], fh.write)
        check_listed(name, n, digest, self.listed[name])


def parse_json(data: bytes, member: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise bad(f"bundle member {member} is not valid JSON ({str(exc)[:120]}); nothing was written") from None


# ---- the recipe ---------------------------------------------------------------------------------
def _walk_strings(obj: Any, depth: int = 0):
    if depth > 50:
        raise bad("the recipe nests too deeply; nothing was written")
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_strings(k, depth + 1)
            yield from _walk_strings(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk_strings(v, depth + 1)


def _plain_yaml(data: bytes) -> Any:
    """``data`` read as plain YAML (standard tags only, no anchors or aliases)."""
    import yaml

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("the bundle's recipe is not UTF-8 text: refused, nothing was written") from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise bad("the bundle's recipe uses YAML anchors/aliases: refused, nothing was written",
                          "a recipe is a flat YAML mapping of LLaMA-Factory keys")
        return yaml.safe_load(text)
    except RecursionError:
        raise bad("the bundle's recipe nests too deeply: refused, nothing was written") from None
    except yaml.YAMLError as exc:
        first = str(exc).replace("\n", " ")[:200]
        raise bad(f"the bundle's recipe is not plain YAML ({first}): refused, nothing was written",
                  "python tags such as !!python/object run code when loaded unsafely; do not use this bundle") from None


def safe_recipe_args(data: bytes, overrides: list[str]) -> dict:
    """The recipe's arguments (with the bundle's overrides) read without running anything:
    plain YAML only (no tags beyond the standard ones, no anchors), no OmegaConf interpolation."""
    from ..document import parse_overrides

    args = _plain_yaml(data)
    if args is None:
        args = {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise bad("the bundle's recipe is not a YAML mapping of keys: refused, nothing was written")
    if not all(isinstance(o, str) for o in overrides):
        raise bad("bundle.json overrides must be KEY=VALUE strings; nothing was written")
    merged = {**args, **parse_overrides(overrides)}
    for s in _walk_strings(merged):
        if "${" in s:
            raise bad(f"the bundle's recipe uses an OmegaConf interpolation ({s[:80]!r}): refused, nothing was written",
                      "interpolations can read environment variables and run resolvers; write the value itself")
    return merged


def check_recipe_args(args: dict, dest: Path, *, trust_remote_code: bool, allow_outside: bool) -> None:
    """Refuse ``trust_remote_code`` and recipe paths (:data:`PATH_KEYS`, local :data:`MODEL_KEYS`)
    outside ``dest`` unless allowed."""
    if is_true(args.get("trust_remote_code")) and not trust_remote_code:
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
            if key in MODEL_KEYS and not looks_like_path(v):
                continue
            why = outside_reason(v, dest, dest)
            if why:
                raise QfkError(f"the bundle's recipe sets {key}: {v!r}, which {why} and points outside {dest}: refused, "
                               "nothing was written", "if you trust the bundle, add --allow-outside")


# ---- registry entries and manifests -------------------------------------------------------------
def check_entries(info: dict, data_dir: Path, *, allow_outside: bool) -> dict[str, str]:
    """Validate registry entries from a bundle; returns {name: why} for entries that point outside."""
    from ...registry import validate_entry

    outside: dict[str, str] = {}
    for name, entry in info.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise bad(f"the bundle registers a dataset named {name!r}: refused, nothing was written")
        if not isinstance(entry, dict):
            raise bad(f"the bundle's entry {name!r} is not an object: refused, nothing was written")
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
            why = outside_reason(fn, data_dir, data_dir)
            if why:
                if not allow_outside:
                    raise QfkError(f"the bundle's dataset '{name}' has file_name {fn!r}, which {why}: refused, nothing was written",
                                   "if you trust the bundle, add --allow-outside")
                outside[name] = f"file_name {why}"
    return outside


def _check_source(src: Any, member: str) -> None:
    need(isinstance(src, dict) and src.get("kind") in ("local", "modelscope", "hf"), f"manifest {member} has no usable source")
    files = src.get("files")
    need(isinstance(files, list) and files and all(isinstance(f, dict) and isinstance(f.get("path"), str)
                                                   and _SHA_RE.match(str(f.get("sha256"))) for f in files),
         f"manifest {member} lists no source files with sha256")
    if src["kind"] == "local":
        need(isinstance(src.get("path"), str), f"manifest {member} has no source path")
    else:
        need(isinstance(src.get("dataset_id"), str) and _HUB_ID_RE.match(src["dataset_id"]),
             f"manifest {member} has a bad hub dataset id")
        need(src.get("revision") is None or (isinstance(src["revision"], str) and _HUB_REV_RE.match(src["revision"])),
             f"manifest {member} has a bad hub revision")


def _check_outputs(manifest: dict, member: str) -> None:
    from ...convert.sinks import output_paths

    splits = data_splits(manifest)
    need("train" in splits, f"manifest {member} has no train output")
    for s, out in splits.items():
        need(s in ("train", "val", "test") and isinstance(out, dict), f"manifest {member} has an unknown output {s!r}")
        fname = out.get("file")
        need(isinstance(fname, str) and member_name_problem(fname) is None and "/" not in fname,
             f"manifest {member} output {s} is not a plain file name")
        need(_SHA_RE.match(str(out.get("sha256"))), f"manifest {member} output {s} has no sha256")
    train = splits["train"]["file"]
    need(train.lower().endswith((".jsonl", ".json")), f"manifest {member} train output is not .jsonl")
    expect = output_paths(Path(train))
    need(posixpath.basename(member) == expect["manifest"].name, f"manifest {member} is not named after its output {train}")
    for s, out in splits.items():
        need(out["file"] == expect[s].name, f"manifest {member} output {s} is not {expect[s].name}")


def check_manifest(manifest: Any, member: str) -> None:
    """A qfk manifest from a bundle: a known converter, a source with sha256, plain output names."""
    from ...convert import CONVERTERS

    need(isinstance(manifest, dict), f"manifest {member} is not an object")
    need(manifest.get("converter") in CONVERTERS, f"manifest {member} names an unknown converter {manifest.get('converter')!r}")
    need(isinstance(manifest.get("name"), str) and manifest["name"], f"manifest {member} has no name")
    need(isinstance(manifest.get("options"), dict), f"manifest {member} has no options")
    _check_source(manifest.get("source"), member)
    _check_outputs(manifest, member)


def check_picked(n: str, rec: dict, info: dict, records: dict, outside: dict) -> None:
    """A token mix's ``NAME__tN`` record: made again at unpack from its base's file, beside it, so its
    name, base, count, file name and sha256 must agree, and the base must be a local file the bundle makes."""
    from ...registry import PICKED_RE

    m = PICKED_RE.match(n)
    base = rec.get("base")
    need(m is not None and m["base"] == base, f"dataset {n}: a picked record whose name is not BASE__tN of its base")
    need(isinstance(rec.get("count"), int) and not isinstance(rec["count"], bool) and rec["count"] == int(m["count"]),
         f"dataset {n}: its row count does not match its name")
    need(isinstance(rec.get("sha256"), str) and _SHA_RE.match(rec["sha256"]), f"dataset {n}: no sha256 to check its rows against")
    need(not rec.get("included") and not rec.get("manifest"), f"dataset {n}: a picked record carries data or a manifest")
    need(base in info and isinstance(records.get(base), dict), f"dataset {n}: its base {base!r} is not in the bundle")
    bfn = info[base].get("file_name")
    need(isinstance(bfn, str) and base not in outside and n not in outside and records[base].get("kind") == "file",
         f"dataset {n}: its base {base!r} is not a local file the bundle makes")
    want = posixpath.join(posixpath.dirname(posixpath.normpath(bfn)), f"{n}.jsonl")
    need(posixpath.normpath(str(info[n].get("file_name"))) == want, f"dataset {n}: its file is not {want!r}, beside its base")


def parse_sources(sources: dict | None) -> dict[str, str]:
    """``--source NAME=PATH`` options as {name: path}."""
    out = {}
    for k, v in (sources or {}).items():
        if not isinstance(k, str) or not k or not isinstance(v, (str, os.PathLike)):
            raise QfkError(f"--source {k}={v} is not NAME=PATH", "for example: --source demo_medical=/data/rows.jsonl")
        out[k] = str(v)
    return out


def verify_sha(path: Path, expected: str, what: str) -> None:
    """``path`` must be the file its manifest records."""
    from ...io.atomic import sha256_file

    actual = sha256_file(path)
    if actual != expected:
        raise QfkError(f"{what}: sha256 mismatch, expected {expected}, actual {actual}; nothing was registered",
                       "the data differs from what the bundle's manifest records: do not train on it; ask for a fresh bundle")
