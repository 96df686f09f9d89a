"""LLaMA-Factory's ``dataset_info.json``: the only module that reads or writes it.

* Entries are built complete (:func:`build_entry`): a ``columns``/``tags`` block always names every
  key LLaMA-Factory would otherwise turn into None.
* Every write validates against ``dataset_info/dataset_info.schema.json`` (draft 2020-12), happens
  under a file lock (concurrent ``qfk`` processes never lose an entry), keeps the previous file as
  ``dataset_info.json.bak`` and replaces the file atomically (temp file + fsync + rename).
* Entries written by the user or other tools are kept exactly (values and key order). A malformed
  file is reported with line and column and never overwritten.
* Removing a dataset removes the entries that belong to it (its splits, its mix and filter
  entries) unless asked for one entry only, and never deletes a file a remaining entry uses.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from .catalog import resource_dir
from .errors import QfkError
from .io.atomic import atomic_write_bytes, sweep_stale_temps
from .lfformat import ALPACA_DEFAULTS, PLUGIN_FORMATTINGS, SHAREGPT_TAGS, turn_problem
from .workspace import data_dir as resolve_data_dir

INFO_NAME = "dataset_info.json"
LOADABLE_EXTENSIONS = (".arrow", ".csv", ".json", ".jsonl", ".parquet", ".txt")
LOCK_TIMEOUT_S = 60


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads((resource_dir() / "dataset_info.schema.json").read_text(encoding="utf-8"))


def validate_entry(name: str, entry: dict) -> None:
    """Raise a :class:`QfkError` when ``entry`` is not what LLaMA-Factory 0.9.5 reads."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors({name: entry}), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in list(e.absolute_path)[1:]) or "(entry)"
        raise QfkError(f"dataset_info entry '{name}' is invalid at {where}: {e.message}",
                       "see dataset_info/dataset_info.schema.json for the keys LLaMA-Factory 0.9.5 reads")


def build_entry(file_name: str, *, formatting: str = "alpaca", ranking: bool = False, columns: dict | None = None,
                tags: dict | None = None, **extra: Any) -> dict:
    """A complete entry: the ``columns`` block names every key whose LLaMA-Factory default is not
    None (so a present block never turns them into None), plus the optional columns given."""
    if formatting in PLUGIN_FORMATTINGS:  # raw rows read by the kit's plugin converter: no columns block
        entry = {"file_name": file_name, "formatting": formatting, "ranking": False}
        entry.update({k: v for k, v in extra.items() if v is not None})
        return entry
    cols: dict[str, str] = {}
    if formatting == "sharegpt":
        cols["messages"] = "conversations"
    elif ranking:
        cols.update(prompt="instruction", query="input", chosen="chosen", rejected="rejected")
    else:
        cols.update(ALPACA_DEFAULTS)
    cols.update({k: v for k, v in (columns or {}).items() if v})
    if ranking and formatting != "sharegpt":
        cols.pop("response", None)
    entry: dict[str, Any] = {"file_name": file_name, "formatting": formatting, "ranking": ranking, "columns": cols}
    if formatting == "sharegpt":
        entry["tags"] = {**SHAREGPT_TAGS, **(tags or {})}
    entry.update({k: v for k, v in extra.items() if v is not None})
    return entry


def file_name_for(path: Path, data_dir: Path) -> str:
    """Relative to the data dir when the file is inside it, absolute otherwise."""
    p, d = path.resolve(), data_dir.resolve()
    try:
        return p.relative_to(d).as_posix()
    except ValueError:
        return str(p)


#: derived entries: ``NAME__nN`` (an exact-mix entry with ``num_samples: N``, made by ``qfk recipe new
#: --mix``), ``NAME__tN`` (a token-mix entry: a file of N rows of NAME chosen by a fixed seed, made by
#: ``qfk recipe new --mix-by tokens``), ``NAME__max<N>`` (NAME without its rows over N tokens, made by
#: ``qfk datasets filter``) and ``NAME__clean`` (NAME without its rows that leak into eval sets,
#: ``qfk datasets decontaminate``)
MIXED_RE = re.compile(r"^(?P<base>.+)__n(?P<count>[1-9][0-9]*)$")
PICKED_RE = re.compile(r"^(?P<base>.+)__t(?P<count>[1-9][0-9]*)$")
FILTERED_RE = re.compile(r"^(?P<base>.+)__max(?P<tokens>[1-9][0-9]*)$")
CLEAN_RE = re.compile(r"^(?P<base>.+)__clean$")


def mixed_name(name: str, count: int) -> str:
    return f"{name}__n{count}"


def picked_name(name: str, count: int) -> str:
    """The token-mix entry of ``count`` rows of NAME: ``NAME__tN``."""
    return f"{name}__t{count}"


def mix_entry(name: str) -> re.Match | None:
    """``NAME__nN`` or ``NAME__tN`` (a mix entry, made from its base NAME alone), matched: ``base``, ``count``."""
    return MIXED_RE.match(name) or PICKED_RE.match(name)


def filtered_name(name: str, max_tokens: int) -> str:
    """The default name of NAME without its rows over ``max_tokens``: ``NAME__max<N>``."""
    return f"{name}__max{max_tokens}"


def clean_name(name: str) -> str:
    """The default name of NAME without its rows that leak into eval sets: ``NAME__clean``."""
    return f"{name}__clean"


def base_name(name: str) -> str:
    """The dataset a derived entry was made from: ``med__n100``, ``med__t100``, ``med__max2048``,
    ``med__clean`` and ``med__clean__max2048__n100`` -> ``med``."""
    while True:
        m = mix_entry(name) or FILTERED_RE.match(name) or CLEAN_RE.match(name)
        if not m:
            return name
        name = m["base"]


def resolve_file(entry: dict, data_dir: Path) -> Path | None:
    fn = entry.get("file_name")
    if not fn:
        return None
    return Path(fn) if os.path.isabs(fn) else data_dir / fn


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """``json.loads``'s object hook that refuses a key given twice (json keeps the last silently:
    a rewrite would lose the first entry)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _lines_of(text: str, key: str) -> str:
    """``lines 3, 9``: where ``"key":`` appears in ``text``."""
    lines = [text.count("\n", 0, m.start()) + 1 for m in re.finditer(re.escape(json.dumps(key)) + r"\s*:", text)]
    return f"line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines[:4]))}" if lines else "a key written with escapes"


@dataclass
class Registry:
    """``DATA_DIR/dataset_info.json`` with locked, validated, atomic updates."""

    data_dir: Path

    @classmethod
    def at(cls, data_dir: str | os.PathLike | None = None) -> "Registry":
        return cls(resolve_data_dir(data_dir))

    @property
    def path(self) -> Path:
        return self.data_dir / INFO_NAME

    def read(self) -> dict:
        """The current entries (an empty dict when the file does not exist)."""
        if not self.path.exists():
            return {}
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise QfkError(f"{self.path} is not UTF-8 text ({exc.reason} at byte {exc.start}); it was left untouched",
                           "save it as UTF-8 (LLaMA-Factory reads it as UTF-8), then run the command again") from None
        if not text.strip():
            return {}
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise QfkError(f"{self.path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; it was left untouched",
                           f"fix it by hand (the last good version may be in {self.path}.bak), then run the command again") from None
        except _DuplicateKey as dup:
            raise QfkError(f"{self.path} holds the key \"{dup.key}\" twice in one object ({_lines_of(text, dup.key)}): "
                           "JSON keeps only the last one; it was left untouched",
                           "keep one of them (rename the other), then run the command again") from None
        if not isinstance(data, dict):
            raise QfkError(f"{self.path} must hold a JSON object of dataset entries, not {type(data).__name__}",
                           "fix it by hand; it was left untouched")
        return data

    def update(self, change: Callable[[dict], Any], *, after: Callable[[Any], None] | None = None) -> Any:
        """Apply ``change`` to the entries under the lock and write the result atomically (the
        previous file kept as ``.bak``, written atomically too); then ``after(result)``, still
        under the lock. Temporary files of killed processes are swept first."""
        from filelock import FileLock, Timeout

        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S):
                sweep_stale_temps(self.data_dir)
                data = self.read()
                before = json.dumps(data, ensure_ascii=False, indent=2)
                result = change(data)
                text = json.dumps(data, ensure_ascii=False, indent=2)
                if text != before or not self.path.exists():
                    if self.path.exists():
                        atomic_write_bytes(str(self.path) + ".bak", self.path.read_bytes())
                    atomic_write_bytes(self.path, (text + "\n").encode("utf-8"))
                if after is not None:
                    after(result)
                return result
        except Timeout:
            raise QfkError(f"another process holds {self.path}.lock for more than {LOCK_TIMEOUT_S}s",
                           f"wait for it to finish, or remove {self.path}.lock if no qfk process is running") from None

    # -- operations -------------------------------------------------------------------------
    def add(self, name: str, entry: dict, *, force: bool = False) -> dict:
        validate_entry(name, entry)

        def change(data: dict) -> dict:
            if not force:
                self._refuse_conflict(name, data.get(name), entry)
            data[name] = entry
            return entry

        return self.update(change)

    def check_free(self, files: dict[str, Path], *, force: bool = False) -> None:
        """Raise :meth:`add`'s error for a name of ``files`` (name -> the file it would point to)
        that is registered for another file: the check made before writing anything."""
        if force:
            return
        data = self.read()
        for name, path in files.items():
            self._refuse_conflict(name, data.get(name), {"file_name": file_name_for(path, self.data_dir)})

    def _refuse_conflict(self, name: str, old: Any, entry: dict) -> None:
        if old is None or old == entry:
            return
        if isinstance(old, dict) and old.get("file_name") and self._same_file(old, entry):
            return
        where = old.get("file_name") or old if isinstance(old, dict) else old
        raise QfkError(f"dataset '{name}' is already registered for {where} in {self.path}",
                       "choose another --name, or pass --force to replace it")

    def _same_file(self, a: dict, b: dict) -> bool:
        pa, pb = resolve_file(a, self.data_dir), resolve_file(b, self.data_dir)
        return pa is not None and pb is not None and pa.resolve() == pb.resolve()

    def remove(self, name: str, *, only: bool = False, delete_files: bool = False) -> "Removal":
        """Remove dataset ``name`` and the entries that belong to it (:func:`related_names`), or with
        ``only`` that one entry. ``delete_files``: also delete their files (:func:`entry_files`),
        except those a remaining entry uses (after the registry is written, under its lock)."""

        def change(data: dict) -> Removal:
            if name not in data:
                raise QfkError(f"no dataset '{name}' in {self.path}", "list them with: qfk datasets list")
            related = related_names(name, data, self.data_dir)
            removed = {n: data.pop(n) for n in ([name] if only else [name, *related])}
            return Removal(removed, left=related if only else [], remaining=data)

        def delete(removal: Removal) -> None:
            removal.delete_unused(self.data_dir)

        return self.update(change, after=delete if delete_files else None)

    def get(self, name: str) -> dict:
        data = self.read()
        if name not in data:
            close = [n for n in data if name.lower() in n.lower()][:5]
            hint = f"did you mean: {', '.join(close)}?" if close else "list them with: qfk datasets list"
            raise QfkError(f"Undefined dataset '{name}' in {self.path}", hint)
        return data[name]


def split_name(name: str, split: str) -> str:
    """The registered name of a conversion's split: NAME, NAME_val, NAME_test."""
    return name if split == "train" else f"{name}_{split}"


# ---------------------------------------------------------------------------------------------
# qfk datasets remove: a dataset's related entries, and the files still in use
# ---------------------------------------------------------------------------------------------
#: the suffixes of the entries made from a dataset: a mix entry (NAME__nN, NAME__tN), a filtered one
#: (NAME__max<N>), a decontaminated one (NAME__clean)
_DERIVED_SUFFIX = r"(?:__n[1-9][0-9]*|__t[1-9][0-9]*|__max[1-9][0-9]*|__clean)+"


def _split_file(path: Path, split: str) -> Path:
    stem = path.with_suffix("")
    return stem.with_name(f"{stem.name}_{split}{path.suffix}")


def related_names(name: str, data: dict, data_dir: Path) -> list[str]:
    """The entries that belong to dataset ``name``, in registry order: its splits NAME_val and
    NAME_test (when they point to NAME's split files, as ``qfk convert`` wrote them), and the mix
    filter and decontaminated entries (``__nN``, ``__tN``, ``__max<N>``, ``__clean``, in any chain) of NAME and of
    those splits."""
    bases = [name]
    own = resolve_file(data[name], data_dir) if isinstance(data.get(name), dict) else None
    for split in ("val", "test"):
        entry = data.get(split_name(name, split))
        path = resolve_file(entry, data_dir) if isinstance(entry, dict) else None
        if own is not None and path is not None and path.resolve() == _split_file(own, split).resolve():
            bases.append(split_name(name, split))
    splits = bases[1:]
    derived = re.compile(f"^(?:{'|'.join(map(re.escape, bases))}){_DERIVED_SUFFIX}$")
    return [n for n in data if n in splits or derived.match(n)]


def entry_files(entry: Any, data_dir: Path) -> list[Path]:
    """The local files an entry uses: its data file (or folder), and for a converted file the
    manifest and rejects of its conversion (NAME_val.jsonl shares NAME's)."""
    path = resolve_file(entry, data_dir) if isinstance(entry, dict) else None
    if path is None:
        return []
    files = [path]
    manifest = manifest_path(path) if path.is_file() else None
    if manifest is not None:
        files += [manifest, manifest.with_name(manifest.name.removesuffix(".manifest.json") + ".rejects.jsonl")]
    return files


def file_users(data: dict, data_dir: Path) -> dict[Path, str]:
    """Every file (or folder) the entries of ``data`` use -> the first entry that uses it."""
    users: dict[Path, str] = {}
    for name, entry in data.items():
        for path in entry_files(entry, data_dir):
            users.setdefault(path.resolve(), name)
    return users


@dataclass
class Removal:
    """What :meth:`Registry.remove` removed, deleted, and kept."""

    removed: dict[str, dict]                  # name -> its entry; the name asked for first
    left: list[str] = field(default_factory=list)   # with only: the related entries still registered
    remaining: dict = field(default_factory=dict, repr=False)  # the registry after the removal
    deleted: list[Path] = field(default_factory=list)
    kept: dict[Path, str] = field(default_factory=dict)  # a file not deleted -> a remaining entry that uses it

    def delete_unused(self, data_dir: Path) -> None:
        """Delete the removed entries' files (never a folder), keeping those a remaining entry uses."""
        users = file_users(self.remaining, data_dir)
        for entry in self.removed.values():
            for path in entry_files(entry, data_dir):
                if not path.is_file() or path in self.deleted or path in self.kept:
                    continue
                key = path.resolve()
                user = users.get(key) or next((u for folder, u in users.items() if folder in key.parents), None)
                if user is not None:
                    self.kept[path] = user
                else:
                    path.unlink()
                    self.deleted.append(path)

    def as_dict(self) -> dict:
        return {"removed": self.removed, "still_registered": self.left, "deleted": [str(p) for p in self.deleted],
                "kept": {str(p): user for p, user in self.kept.items()}}


def check_names_free(name: str, outputs: dict[str, Path], *, data_dir: str | os.PathLike | None = None,
                     force: bool = False) -> None:
    """Fail as :func:`register_result` would, before converting: ``outputs`` maps each split to its file."""
    Registry.at(data_dir).check_free({split_name(name, s): p for s, p in outputs.items()}, force=force)


def register_result(result, *, data_dir: str | os.PathLike | None = None, force: bool = False) -> list[str]:
    """Register a conversion's outputs (train as NAME, splits as NAME_val / NAME_test)."""
    reg = Registry.at(data_dir)
    names = []
    tags = result.tags
    for split, info in result.splits.items():
        name = split_name(result.name, split)
        entry = build_entry(file_name_for(Path(info["path"]), reg.data_dir), formatting=result.formatting,
                            ranking=result.ranking, columns=result.columns, tags=tags)
        reg.add(name, entry, force=force)
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# qfk datasets check
# ---------------------------------------------------------------------------------------------
SAMPLE_ROWS = 2000


#: reader reject reasons on which LLaMA-Factory's JSON loader fails for the whole file
UNLOADABLE = ("invalid_json", "encoding_error", "not_an_object")


def _sample(path: Path) -> tuple[list[dict], str | None]:
    """The first :data:`SAMPLE_ROWS` readable rows, and where the first row LLaMA-Factory cannot load
    is (``line 7: not valid JSON ...``), or None."""
    from .io.readers import BadRecord, TableFile

    rows: list[dict] = []
    unloadable = None
    for batch in TableFile(path).batches():
        for pos, r in zip(batch.positions, batch.rows):
            if type(r) is not BadRecord:
                rows.append(r)
            elif unloadable is None and r.reason in UNLOADABLE:
                unloadable = f"{batch.unit} {pos}: {r.detail}"
        if len(rows) >= SAMPLE_ROWS:
            break
    return rows[:SAMPLE_ROWS], unloadable


def _sample_rows(path: Path) -> list[dict]:
    return _sample(path)[0]


def check_entry(name: str, entry: dict, data_dir: Path):
    """What LLaMA-Factory would trip on for this entry: schema, file, extension, columns present
    in the rows, ShareGPT roles against the tags and the turn rule, ``ranking`` against the rows.

    Each finding's ``where`` is ``name``; its ``id`` is ``entry`` (the schema, or ok), ``file``,
    ``formatting``, ``columns``, ``ranking``, ``invalid_role`` (lint's rule id) or ``turn_rule``."""
    from .findings import Finding

    try:
        validate_entry(name, entry)
    except QfkError as exc:
        return [Finding("entry", "error", name, exc.message, exc.hint or "")]
    found = _inspectable_file(name, entry, data_dir)
    if not isinstance(found, Path):
        return found
    try:
        rows, unloadable = _sample(found)
    except QfkError as exc:
        return [Finding("file", "error", name, exc.message, exc.hint or "")]
    if unloadable:
        return [Finding("file", "error", name, f"{found} {unloadable}: LLaMA-Factory's JSON loader fails on the whole file",
                        f"fix or drop that row; qfk convert rejects such rows with a reason (qfk lint {found} lists them all)")]
    if not rows:
        return [Finding("file", "error", name, f"{found} holds no readable rows: 'Cannot find valid samples'", "convert again")]
    out = _column_findings(name, entry, rows)
    if entry.get("formatting", "alpaca") == "sharegpt":
        out += _sharegpt_findings(name, entry, rows)
    if not out:
        ranking = bool(entry.get("ranking", False))
        out.append(Finding("entry", "ok", name,
                           f"{entry.get('file_name')}: {entry.get('formatting', 'alpaca')}{', ranking' if ranking else ''}, "
                           f"columns present, {len(rows)}{'+' if len(rows) == SAMPLE_ROWS else ''} rows read"))
    return out


def _inspectable_file(name: str, entry: dict, data_dir: Path):
    """The entry's first data file when its rows can be read, else the findings that end the check
    (hub entry, missing file, empty or mixed folder, plugin formatting, extension)."""
    from .findings import Finding

    path = resolve_file(entry, data_dir)
    if path is None:
        return [Finding("file", "info", name, "hub/script entry: not checked offline")]
    if not path.exists():
        picked = PICKED_RE.match(name)
        fix = (f"qfk train picks its rows from {picked['base']} again (for llamafactory-cli run once: qfk train RECIPE "
               "--dry-run)" if picked else
               f"convert again, or fix file_name; remove the entry with: qfk datasets remove {name}")
        return [Finding("file", "error", name, f"File {path} not found (LLaMA-Factory fails with the same words)", fix)]
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    exts = {p.suffix.lower() for p in files}
    if not files:
        return [Finding("file", "error", name, f"folder {path} is empty", "point file_name at a file")]
    if len(exts) > 1:
        return [Finding("file", "error", name, f"folder {path} mixes extensions {sorted(exts)}; LLaMA-Factory needs one",
                        "keep one kind of file in the folder (manifests and rejects belong elsewhere)")]
    ext = exts.pop()
    if entry.get("formatting") in PLUGIN_FORMATTINGS:
        return [Finding("formatting", "warn", name, f"raw rows with formatting {entry['formatting']}: they load under qfk train only "
                                                    "(llamafactory-cli and the WebUI fail with 'Dataset converter ... not found')",
                        f"for plain LLaMA-Factory, convert them: qfk convert {PLUGIN_FORMATTINGS[entry['formatting']]} {path}")]
    if ext not in LOADABLE_EXTENSIONS:
        return [Finding("file", "error", name, f"extension {ext} is not loadable by LLaMA-Factory",
                        f"use one of {', '.join(LOADABLE_EXTENSIONS)}")]
    if ext not in (".jsonl", ".json", ".parquet", ".csv"):
        return [Finding("file", "info", name, f"{ext} files are not inspected further")]
    return files[0]


def _column_findings(name: str, entry: dict, rows: list[dict]) -> list:
    """The columns block against the rows' keys, and ``ranking`` against chosen/rejected."""
    from .findings import Finding

    out = []
    keys = set().union(*(r.keys() for r in rows[:200]))
    cols = entry.get("columns") or {}
    formatting = entry.get("formatting", "alpaca")
    ranking = bool(entry.get("ranking", False))
    expected = dict(cols) if "columns" in entry else (
        {"messages": "conversations"} if formatting == "sharegpt" else dict(ALPACA_DEFAULTS))
    missing = {k: v for k, v in expected.items() if v and v not in keys}
    if missing:
        out.append(Finding("columns", "error", name, f"columns {missing} are not in the file (it has: {', '.join(sorted(keys))})",
                           "fix the columns block, or re-register with: qfk datasets add FILE --name " + name + " --force"))
    if formatting == "alpaca" and "columns" in entry and not ranking and not cols.get("response"):
        out.append(Finding("columns", "error", name, "columns has no 'response': LLaMA-Factory turns the missing key into None",
                           "add \"response\": \"output\" to the columns block"))
    has_pairs = "chosen" in keys and "rejected" in keys
    if ranking and not has_pairs and formatting == "alpaca":
        out.append(Finding("ranking", "error", name, "ranking is true but the rows have no chosen/rejected columns",
                           "set \"ranking\": false, or convert with: qfk convert preference ..."))
    if not ranking and has_pairs:
        out.append(Finding("ranking", "warn", name, "the rows have chosen/rejected but ranking is false: SFT will not see them",
                           "register with --ranking for dpo/orpo/rm stages"))
    return out


ROLE_TAGS = ("user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")


def _sharegpt_findings(name: str, entry: dict, rows: list[dict]) -> list:
    """The rows' roles against the tags block, and LLaMA-Factory's turn rule
    (:func:`~qwen_factory_kit.lfformat.turn_problem`) on every sampled row."""
    from .findings import Finding

    tags = entry["tags"] if "tags" in entry else SHAREGPT_TAGS  # a tags block replaces every default
    known = {tags.get(k) for k in ROLE_TAGS} - {None}
    msg_col = (entry.get("columns") or {}).get("messages", "conversations")
    unknown: set[str] = set()
    problems: Counter = Counter()
    for r in rows:
        msgs = r.get(msg_col)
        if not isinstance(msgs, list):
            continue
        roles = [m.get(tags.get("role_tag")) for m in msgs if isinstance(m, dict)]
        unknown.update(str(x) for x in roles if not isinstance(x, str) or x not in known)
        found = turn_problem(roles, tags)
        if found:
            problems[found[0]] += 1
    out = []
    if unknown:
        out.append(Finding("invalid_role", "error", name, f"roles {sorted(unknown)} in the file are not in the tags block {tags}",
                           "add them to the tags block (user_tag/assistant_tag/...) or convert with qfk convert sharegpt"))
    problems.pop("invalid_role", None)
    if problems and not entry.get("ranking"):  # ranking rows end with the user's turn: chosen/rejected answer it
        broken = sum(problems.values())
        counts = ", ".join(f"{code}: {n}" for code, n in sorted(problems.items()))
        every = broken == len(rows)
        out.append(Finding("turn_rule", "error" if every else "warn", name,
                           f"{broken} of {len(rows)} rows read break LLaMA-Factory's turn rule ({counts}): it drops them"
                           + (" and finds no valid samples" if every else ""),
                           f"see each row with: qfk lint {name}; or convert the source with qfk convert sharegpt "
                           "(it rejects such rows with a reason)"))
    return out


def manifest_path(data_file: Path) -> Path | None:
    """The qfk manifest written next to a converted file (NAME.jsonl, NAME_val.jsonl, NAME_test.jsonl), if any."""
    stem = data_file.with_suffix("")
    for cand in (stem.with_name(stem.name + ".manifest.json"),
                 stem.with_name(stem.name.removesuffix("_val").removesuffix("_test") + ".manifest.json")):
        if cand.is_file():
            return cand
    return None


def manifest_for(entry: dict, data_dir: Path) -> dict | None:
    """The qfk manifest written next to an entry's file, if any."""
    path = resolve_file(entry, data_dir)
    found = manifest_path(path) if path is not None and path.is_file() else None
    if found is None:
        return None
    try:
        data = json.loads(found.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def add_path(reg: Registry, path: Path, name: str, *, formatting: str | None = None, ranking: bool | None = None,
             columns: dict | None = None, force: bool = False) -> dict:
    """Register an existing file: settings from its manifest, else from the options and rows."""
    from .workspace import slug

    if slug(name) != name:
        raise QfkError(f"dataset name '{name}' has characters recipes cannot carry", f"use --name {slug(name)}")
    probe = {"file_name": str(path.resolve())}
    manifest = manifest_for(probe, reg.data_dir)
    ds = (manifest or {}).get("dataset", {})
    formatting = formatting or ds.get("formatting") or "alpaca"
    cols = {**ds.get("columns", {}), **(columns or {})}
    if ranking is None:
        ranking = ds.get("ranking")
        if ranking is None and path.is_file() and path.suffix.lower() in (".jsonl", ".json", ".parquet", ".csv"):
            rows = _sample_rows(path)
            ranking = bool(rows) and "chosen" in rows[0] and "rejected" in rows[0]
    entry = build_entry(file_name_for(path, reg.data_dir), formatting=formatting, ranking=bool(ranking), columns=cols,
                        tags=ds.get("tags"))
    reg.read()  # a malformed registry stops the run before the file is read
    validate_entry(name, entry)
    reg.check_free({name: path}, force=force)
    problems = [f for f in check_entry(name, entry, reg.data_dir) if f.severity == "error"]
    if problems:  # checked before writing: a refused file leaves the registry (and an entry it would replace) as it was
        raise QfkError(f"'{path}' does not match the entry: {problems[0].message}; nothing was registered", problems[0].fix)
    reg.add(name, entry, force=force)
    return entry
