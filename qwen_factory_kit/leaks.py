"""Leaks between training and evaluation data: a before/after comparison is only honest when no
eval row was trained on.

* :func:`row_key`: a 16-byte digest of what a row asks and answers, normalised (Unicode NFKC,
  whitespace collapsed, stripped; the answer without its think block, so the same QA with other
  reasoning still counts). Alpaca: history prompts, prompt and query, then the response (``chosen``
  for preference rows); ShareGPT: the user turns, then the last assistant answer (``chosen``).
* :func:`overlap`: the rows two datasets (names or files) share, streaming both files with a set
  of the smaller side's digests (memory grows with the smaller side only).
* :func:`check_leaks`: the findings (id ``leak``) for training datasets against eval datasets:
  shared rows; the same dataset on both sides (also a ``NAME__nN`` mix entry or a ``NAME__max<N>``
  filtered entry of it, or an entry pointing to the same file); two conversions of the same source
  (their manifests name the same source files and split), whose separate splits overlap.
  ``qfk recipe check`` runs it for train recipes with an ``eval_dataset``; ``qfk eval`` can call
  ``check_leaks(train_names, [eval_name], data_dir)``; ``qfk lint A --against B`` reports
  :func:`overlap_finding`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import QfkError
from .findings import Finding
from .lint import Layout, iter_rows, layout_from, resolve_target
from .registry import base_name
from .think import strip_think

#: how many row numbers a finding shows on each side
EXAMPLES = 5
#: ``NAME__max<N>``: NAME without its rows over N tokens (``qfk datasets filter NAME --max-tokens N``)


# --------------------------------------------------------------------------------------------
# the key of a row
# --------------------------------------------------------------------------------------------
def normalise(text: str) -> str:
    """NFKC, whitespace runs collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def qa_texts(row: dict, layout: Layout) -> tuple[str, str]:
    """The normalised prompt (every user-side text, in order) and answer (without its think block) of a row."""
    prompts, answer = _sharegpt_qa(row, layout) if layout.formatting == "sharegpt" else _alpaca_qa(row, layout)
    prompt = normalise("\n".join(p for p in prompts if isinstance(p, str)))
    return prompt, normalise(strip_think(answer)[1]) if isinstance(answer, str) else ""


def _digest(prompt: str, answer: str) -> bytes:
    return hashlib.blake2b(f"{prompt}\x00{answer}".encode(), digest_size=16).digest()


#: the key of a row with neither prompt nor answer (never counted as shared)
EMPTY_KEY = _digest("", "")


def row_key(row: dict, layout: Layout) -> bytes:
    """A 16-byte digest of a row's normalised prompt and answer (see :func:`qa_texts`)."""
    return _digest(*qa_texts(row, layout))


def _alpaca_qa(row: dict, lay: Layout) -> tuple[list[Any], Any]:
    cols = lay.columns
    prompts: list[Any] = []
    history = row.get(cols["history"]) if cols.get("history") else None
    for pair in history if isinstance(history, list) else []:
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            prompts.append(pair[0])
    prompts += [row.get(cols[k]) for k in ("prompt", "query") if cols.get(k)]
    answer_col = cols.get("chosen") if lay.ranking else cols.get("response")
    return prompts, _content(row.get(answer_col) if answer_col else None, lay)


def _sharegpt_qa(row: dict, lay: Layout) -> tuple[list[Any], Any]:
    cols, tags = lay.columns, lay.tags
    msgs = row.get(cols.get("messages", "conversations"))
    msgs = [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []
    role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    prompts = [m.get(content) for m in msgs if m.get(role) == tags.get("user_tag", "human")]
    if lay.ranking and cols.get("chosen"):
        return prompts, _content(row.get(cols["chosen"]), lay)
    answers = [m.get(content) for m in msgs if m.get(role) == tags.get("assistant_tag", "gpt")]
    return prompts, answers[-1] if answers else None


def _content(value: Any, lay: Layout) -> Any:
    """A response column's text: a string, a message dict (ShareGPT ranking) or a list ending with one."""
    if isinstance(value, list) and value:
        value = value[-1]
    if isinstance(value, dict):
        return value.get(lay.tags.get("content_tag", "value"), value.get("content"))
    return value


# --------------------------------------------------------------------------------------------
# the overlap of two datasets
# --------------------------------------------------------------------------------------------
@dataclass
class Overlap:
    """The rows datasets ``a`` and ``b`` share. ``count`` is ``b_shared``: the rows of ``b`` whose
    prompt and answer are in ``a`` (for eval data against training data: the leaked eval rows)."""

    a: str
    b: str
    a_rows: int          # rows compared (rows with a prompt or an answer)
    b_rows: int
    a_shared: int        # rows of a whose key is in b
    b_shared: int        # rows of b whose key is in a
    a_examples: list[int] = field(default_factory=list)  # the first row numbers of a's shared rows
    b_examples: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.b_shared

    def as_dict(self) -> dict:
        return {**asdict(self), "count": self.count}


@dataclass
class _Side:
    name: str
    path: Path
    entry: dict | None


@dataclass
class _Pass:
    rows: int = 0
    shared: int = 0
    examples: list[int] = field(default_factory=list)
    matched: set = field(default_factory=set)


def overlap(a_name: str, b_name: str, data_dir: str | os.PathLike | None = None) -> Overlap:
    """The rows datasets ``a_name`` and ``b_name`` (registered names or files, as ``qfk lint`` takes
    them) share; a :class:`QfkError` when one cannot be read."""
    return compare(_side(a_name, data_dir), _side(b_name, data_dir))


def _side(target: str, data_dir: str | os.PathLike | None) -> _Side:
    path, entry = resolve_target(target, None if data_dir is None else str(data_dir))
    return _Side(target, path, entry)


def compare(a: _Side, b: _Side) -> Overlap:
    """Digests of the smaller file in a set, the larger file streamed against it, then the smaller
    one again against the digests found (for its shared count and row numbers)."""
    small, large = (b, a) if _size(b.path) < _size(a.path) else (a, b)
    keys: set[bytes] = set()
    small_rows = 0
    for _, key in _keys(small):
        keys.add(key)
        small_rows += 1
    large_pass = _match(_keys(large), keys)
    small_pass = _match(_keys(small), large_pass.matched) if large_pass.matched else _Pass(rows=small_rows)
    pa, pb = (small_pass, large_pass) if small is a else (large_pass, small_pass)
    return Overlap(a.name, b.name, pa.rows, pb.rows, pa.shared, pb.shared, pa.examples, pb.examples)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size


def _keys(side: _Side) -> Iterator[tuple[int, bytes]]:
    """(row number, key) for each row of ``side`` with a prompt or an answer."""
    lay = None
    for n, row in iter_rows(side.path):
        if not isinstance(row, dict):
            continue
        lay = lay or layout_from(side.entry, row)
        key = row_key(row, lay)
        if key != EMPTY_KEY:
            yield n, key


def _match(keys: Iterable[tuple[int, bytes]], known: set[bytes]) -> _Pass:
    out = _Pass()
    for n, key in keys:
        out.rows += 1
        if key in known:
            out.shared += 1
            out.matched.add(key)
            if len(out.examples) < EXAMPLES:
                out.examples.append(n)
    return out


def _rows(numbers: list[int], shared: int) -> str:
    return ", ".join(map(str, numbers)) + (" ..." if shared > len(numbers) else "")


def overlap_finding(ov: Overlap) -> Finding:
    """``qfk lint A --against B``: an error when B shares rows with A, else ok."""
    if not ov.count:
        return Finding("overlap", "ok", ov.b, f"no row shares its prompt and answer with {ov.a} "
                                             f"({ov.b_rows} rows compared with {ov.a_rows})")
    return Finding("overlap", "error", ov.b,
                   f"{ov.b_shared} of its {ov.b_rows} rows share prompt and answer with {ov.a} ({ov.a_shared} of its "
                   f"{ov.a_rows} rows; rows {_rows(ov.b_examples, ov.b_shared)} here, rows {_rows(ov.a_examples, ov.a_shared)} "
                   f"in {ov.a})",
                   f"to evaluate on {ov.b}, keep its rows out of training: convert once with --val-size and evaluate on "
                   "NAME_val; as two training sets, the shared rows are trained twice per epoch")


# --------------------------------------------------------------------------------------------
# training datasets against eval datasets
# --------------------------------------------------------------------------------------------
def check_leaks(train_names: Iterable[str], eval_names: Iterable[str],
                data_dir: str | os.PathLike | None = None) -> list[Finding]:
    """The ``leak`` findings of every training dataset against every eval dataset (all registered
    in ``data_dir``): an error per leaking pair, a warning for two conversions of one source that
    share no row, an info per pair that cannot be read, else one ok saying how many rows were compared."""
    from .registry import Registry

    reg = Registry.at(data_dir)
    registry = reg.read()
    out: list[Finding] = []
    compared: list[Overlap] = []
    trains = list(dict.fromkeys(train_names))
    for ev in dict.fromkeys(eval_names):
        for tr in trains:
            found, ov = _check_pair(tr, ev, registry, reg.data_dir)
            out += found
            compared += [ov] if ov is not None else []
    if compared and not any(f.severity in ("warn", "error") for f in out):
        pairs = "; ".join(f"{ov.b} ({ov.b_rows} rows) against {ov.a} ({ov.a_rows} rows)" for ov in compared)
        out.append(Finding("leak", "ok", None, f"no eval row is a training row: {pairs}"))
    return out


def _check_pair(tr: str, ev: str, registry: dict, data_dir: Path) -> tuple[list[Finding], Overlap | None]:
    """Training dataset ``tr`` against eval dataset ``ev``: the finding of their relation and shared rows."""
    same = same_dataset(tr, ev, registry, data_dir)
    source = same_source(registry.get(tr), registry.get(ev), data_dir)
    try:
        ov = compare(_registered(tr, registry, data_dir), _registered(ev, registry, data_dir))
    except QfkError as exc:
        if same:
            return [Finding("leak", "error", ev, same, _fix(tr, ev, registry, same=True))], None
        return [Finding("leak", "info", ev, f"not compared with {tr}: {exc.message}", exc.hint or "")], None
    if same:
        return [Finding("leak", "error", ev, f"{same}: {ov.b_shared} of its {ov.b_rows} rows are training rows",
                        _fix(tr, ev, registry, same=True))], ov
    if ov.count:
        return [Finding("leak", "error", ev, _shared_message(tr, ov, source), _fix(tr, ev, registry, source))], ov
    if source and source[0] != source[1]:
        return [Finding("leak", "warn", ev, f"{tr} and {ev} are two conversions of the same source (manifests {source[0]} and "
                                            f"{source[1]}): no row is shared ({ov.b_rows} rows compared with {ov.a_rows}), "
                                            "but their splits were drawn separately", _fix(tr, ev, registry, source))], ov
    return [], ov


def _shared_message(tr: str, ov: Overlap, source: tuple[Path, Path] | None) -> str:
    text = (f"{ov.b_shared} of its {ov.b_rows} rows are in training dataset {tr} ({ov.a_shared} of its {ov.a_rows} rows; "
            f"eval rows {_rows(ov.b_examples, ov.b_shared)}; training rows {_rows(ov.a_examples, ov.a_shared)})")
    if source and source[0] != source[1]:
        text += f": both are conversions of the same source (manifests {source[0]} and {source[1]})"
    elif source:
        text += f": the source of {source[0]} holds these rows more than once"
    return text + "; scores on them measure memory, not learning"


def _fix(tr: str, ev: str, registry: dict, source: tuple[Path, Path] | None = None, *, same: bool = False) -> str:
    """How to evaluate on rows kept out of training, for what relates ``tr`` and ``ev``."""
    base = base_name(tr)
    held_out = (f"eval_dataset={base}_val (its held-out split)" if f"{base}_val" in registry else
                f"convert {base}'s source with --val-size 0.1 (or --test-size): it registers {base}_val, kept out of {base}")
    if same:
        return f"evaluate on rows kept out of training: {held_out}"
    if source and source[0] == source[1]:
        return "convert again with --dedup so no row lands in both splits"
    if source:
        return f"evaluate on the held-out split of the conversion you train on: {held_out}; remove the other conversion"
    return f"remove the shared rows from {tr}'s source (or from {ev}) and convert again; see them: qfk lint {tr} --against {ev}"


def _registered(name: str, registry: dict, data_dir: Path) -> _Side:
    from .registry import resolve_file

    entry = registry.get(name)
    if not isinstance(entry, dict):
        raise QfkError(f"dataset '{name}' is not registered in {data_dir}", "list them with: qfk datasets list")
    path = resolve_file(entry, data_dir)
    if path is None:
        raise QfkError(f"dataset '{name}' is a hub entry: its rows are not here", "convert it with qfk convert to compare it")
    if not path.exists():
        raise QfkError(f"dataset '{name}': File {path} not found", f"qfk datasets check {name}")
    return _Side(name, path, entry)


# --------------------------------------------------------------------------------------------
# the same dataset under other names, the same source converted twice
# --------------------------------------------------------------------------------------------
def _origin(name: str) -> str:
    base = base_name(name)
    return f" (made from {base})" if base != name else ""


def same_dataset(tr: str, ev: str, registry: dict, data_dir: Path) -> str | None:
    """Why training dataset ``tr`` and eval dataset ``ev`` are one dataset (same name, same base
    dataset, same file), or None."""
    from .registry import resolve_file

    if tr == ev:
        return f"{ev} is both a training and an eval dataset"
    if base_name(tr) == base_name(ev):
        return f"training dataset {tr}{_origin(tr)} and eval dataset {ev}{_origin(ev)} are the same dataset"
    a, b = registry.get(tr), registry.get(ev)
    fa = resolve_file(a, data_dir) if isinstance(a, dict) else None
    fb = resolve_file(b, data_dir) if isinstance(b, dict) else None
    if fa is not None and fb is not None and fa.resolve() == fb.resolve():
        return f"training dataset {tr} and eval dataset {ev} both point to {fa}"
    return None


def same_source(a: dict | None, b: dict | None, data_dir: Path) -> tuple[Path, Path] | None:
    """The manifests of two entries converted from the same source files (same sha256s, same split),
    or None. Both paths are the same for two outputs of one conversion (NAME and NAME_val)."""
    ca, cb = _conversion(a, data_dir), _conversion(b, data_dir)
    if ca is None or cb is None or ca[1] != cb[1]:
        return None
    return ca[0], cb[0]


def _conversion(entry: dict | None, data_dir: Path) -> tuple[Path, tuple] | None:
    """(manifest path, (source sha256s, source split)) of an entry written by qfk convert."""
    from .registry import manifest_path, resolve_file

    file = resolve_file(entry, data_dir) if isinstance(entry, dict) else None
    found = manifest_path(file) if file is not None and file.is_file() else None
    if found is None:
        return None
    try:
        manifest = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    files = (manifest.get("source") or {}).get("files") or []
    shas = frozenset(f["sha256"] for f in files if isinstance(f, dict) and f.get("sha256"))
    if not shas:
        return None
    return found, (shas, (manifest.get("options") or {}).get("split"))
