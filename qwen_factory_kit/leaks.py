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
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from .convert.workers import ordered_map, worker_count
from .errors import QfkError
from .findings import Finding
from .leakindex import KINDS, LeakIndex, RowText
from .lint import iter_rows, resolve_target
from .ngrams import NGRAM, THRESHOLD
from .registry import base_name
from .rowtext import Layout, layout_from, normalise, qa_parts, qa_texts

#: how many row numbers a finding shows on each side
EXAMPLES = 5
#: ``NAME__max<N>``: NAME without its rows over N tokens (``qfk datasets filter NAME --max-tokens N``)


# --------------------------------------------------------------------------------------------
# the key of a row
# --------------------------------------------------------------------------------------------
def _digest(prompt: str, answer: str) -> bytes:
    return hashlib.blake2b(f"{prompt}\x00{answer}".encode(), digest_size=16).digest()


def _sentence(text: str) -> bytes:
    return hashlib.blake2b(normalise(text).encode(), digest_size=16).digest()


@lru_cache(maxsize=4096)
def _direction(instruction: str) -> tuple[str, str] | None:
    from .convert.moses import instruction_direction

    return instruction_direction(instruction)


def row_text(number: int, row: dict, layout: Layout) -> RowText | None:
    """What a leak check compares of a row (None for a row with neither prompt nor answer): its exact
    key, the text of its n-grams and, for a translation row (an Alpaca row whose instruction is one
    ``qfk convert moses`` writes, with an input), its sentence digests. The n-grams are the prompt's
    and the answer's; a translation row's are its target's alone (its instruction is every row's,
    and a source seen on the other side, without its reference, is a ``source`` finding, not a near
    copy: the source and target of a pair are not compared as one text)."""
    prompt, answer = qa_parts(row, layout)
    key = _digest(normalise(prompt), normalise(answer))
    if key == EMPTY_KEY:
        return None
    cols = layout.columns
    if layout.formatting == "alpaca" and not layout.ranking and answer:
        ins, src = row.get(cols.get("prompt") or "instruction"), row.get(cols.get("query") or "input")
        if isinstance(ins, str) and isinstance(src, str) and src.strip() and _direction(ins):
            return RowText(number, key, answer, (_sentence(src), _sentence(answer)))
    return RowText(number, key, f"{prompt}\n{answer}")


#: the key of a row with neither prompt nor answer (never counted as shared)
EMPTY_KEY = _digest("", "")


def row_key(row: dict, layout: Layout) -> bytes:
    """A 16-byte digest of a row's normalised prompt and answer (see :func:`qa_texts`)."""
    return _digest(*qa_texts(row, layout))


# --------------------------------------------------------------------------------------------
# the overlap of two datasets
# --------------------------------------------------------------------------------------------
@dataclass
class Overlap:
    """What datasets ``a`` and ``b`` share, row by row, each row counted once under the first of:
    ``shared`` (the same prompt and answer), ``reversed`` (a translation pair in the other
    direction), ``near`` (a near duplicate: at least ``threshold`` of the ``ngram``-grams of the
    shorter row shared), ``source`` (a translation source sentence seen on the other side).
    ``count``: the rows of ``b`` (the eval data, against training data ``a``) that leak: shared,
    reversed or near."""

    a: str
    b: str
    a_rows: int          # rows compared (rows with a prompt or an answer)
    b_rows: int
    a_shared: int        # rows of a whose key is in b
    b_shared: int        # rows of b whose key is in a
    a_examples: list[int] = field(default_factory=list)  # the first row numbers of a's shared rows
    b_examples: list[int] = field(default_factory=list)
    a_near: int = 0      # rows of a with a near duplicate in b (shared ones not counted again)
    b_near: int = 0
    a_reversed: int = 0  # translation rows of a that are a pair of b in the other direction
    b_reversed: int = 0
    a_source: int = 0    # translation rows of a whose source sentence is in b (and no other kind)
    b_source: int = 0
    ngram: int = NGRAM
    threshold: float = THRESHOLD
    #: per kind (near, reversed, source): up to 5 pairs {a_row, b_row} (near: similarity, span)
    examples: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.b_shared + self.b_near + self.b_reversed

    def as_dict(self) -> dict:
        return {**asdict(self), "count": self.count}


@dataclass
class _Side:
    name: str
    path: Path
    entry: dict | None


def overlap(a_name: str, b_name: str, data_dir: str | os.PathLike | None = None, *,
            ngram: int = NGRAM, threshold: float = THRESHOLD) -> Overlap:
    """What datasets ``a_name`` and ``b_name`` (registered names or files, as ``qfk lint`` takes
    them) share; a :class:`QfkError` when one cannot be read."""
    return compare(_side(a_name, data_dir), _side(b_name, data_dir), ngram=ngram, threshold=threshold)


def _side(target: str, data_dir: str | os.PathLike | None) -> _Side:
    path, entry = resolve_target(target, None if data_dir is None else str(data_dir))
    return _Side(target, path, entry)


#: rows of the larger side looked up at once
BATCH = 512


def compare(a: _Side, b: _Side, *, ngram: int = NGRAM, threshold: float = THRESHOLD) -> Overlap:
    """The smaller side (in bytes) in a :class:`~.leakindex.LeakIndex`, the larger one streamed
    against it in batches: both sides counted from one pass over each file."""
    small, large = (b, a) if _size(b.path) < _size(a.path) else (a, b)
    index = LeakIndex.build(row_texts(small), ngram, threshold)
    found: dict[str, list[int]] = {kind: [] for kind in KINDS}
    large_rows = 0
    for _, (count, verdicts) in ordered_map(_lookup, _row_batches(large), workers=worker_count(None, _size(large.path)),
                                            setup=_setup, setup_args=(index,)):
        large_rows += count
        for number, text, verdict in verdicts:
            found[verdict.kind].append(number)
            index.record(number, text, verdict)
    for side, rows in ((small, index.rows), (large, large_rows)):
        if not rows:
            raise QfkError(f"{side.name} ({side.path}) holds no readable rows to compare",
                           f"check it: qfk lint {side.name}")
    marked = index.rows_marked()
    counts = {"small": {k: len(v) for k, v in marked.items()}, "large": {k: len(v) for k, v in found.items()}}
    rows = {"small": marked, "large": found}
    a_is, b_is = ("small", "large") if small is a else ("large", "small")

    def pairs(kind: str) -> list[dict]:  # the index's examples: "row" on the large side
        out = []
        for ex in index.examples[kind]:
            sides = {"large": ex["row"], "small": ex["other_row"]}
            out.append({"a_row": sides[a_is], "b_row": sides[b_is],
                        **{k: v for k, v in ex.items() if k not in ("row", "other_row")}})
        return out

    return Overlap(a.name, b.name, index.rows if small is a else large_rows, index.rows if small is b else large_rows,
                   counts[a_is]["leak"], counts[b_is]["leak"], rows[a_is]["leak"][:EXAMPLES], rows[b_is]["leak"][:EXAMPLES],
                   counts[a_is]["near"], counts[b_is]["near"], counts[a_is]["reversed"], counts[b_is]["reversed"],
                   counts[a_is]["source"], counts[b_is]["source"], ngram, threshold,
                   {kind: pairs(kind) for kind in ("near", "reversed", "source")})


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size


def row_texts(side: _Side) -> Iterator[RowText]:
    """:func:`row_text` of each row of ``side`` with a prompt or an answer."""
    lay = None
    for n, row in iter_rows(side.path):
        if not isinstance(row, dict):
            continue
        lay = lay or layout_from(side.entry, row)
        text = row_text(n, row, lay)
        if text is not None:
            yield text


def _row_batches(side: _Side, size: int = BATCH) -> Iterator[tuple[Layout, list]]:
    """(layout, rows) of ``side`` in batches of ``size`` rows: what :func:`_lookup` takes."""
    lay = None
    for batch in _batches(((n, row) for n, row in iter_rows(side.path) if isinstance(row, dict)), size):
        lay = lay or layout_from(side.entry, batch[0][1])
        yield lay, batch


def _setup(index: LeakIndex) -> LeakIndex:
    return index


def _lookup(index: LeakIndex, item: tuple[Layout, list]) -> tuple[int, list]:
    """A batch of rows of the streamed side against ``index``: (rows compared, [(row number, text
    when near, verdict)] of the rows with a verdict). Runs in the worker processes."""
    lay, rows = item
    texts = [t for t in (row_text(n, row, lay) for n, row in rows) if t is not None]
    out = [(t.number, t.text if v.kind == "near" else "", v) for t, v in zip(texts, index.lookup(texts)) if v is not None]
    return len(texts), out


def _batches(items: Iterable, size: int = BATCH) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _rows(numbers: list[int], shared: int) -> str:
    return ", ".join(map(str, numbers)) + (" ..." if shared > len(numbers) else "")


def describe(ov: Overlap, *, eval_side: bool = False) -> str:
    """The leaking rows of ``ov.b`` in words: counts per kind, with examples."""
    other = f"training dataset {ov.a}" if eval_side else ov.a
    parts = []
    if ov.b_shared:
        parts.append(f"{ov.b_shared} share prompt and answer with {other} (rows {_rows(ov.b_examples, ov.b_shared)} here, "
                     f"rows {_rows(ov.a_examples, ov.a_shared)} there)")
    if ov.b_near:
        ex = ov.examples.get("near") or []
        shown = "; ".join(f"row {e['b_row']} ~ row {e['a_row']} ({e['similarity']:.0%}, shared: \"{_short(e['span'])}\")"
                          for e in ex[:3])
        parts.append(f"{ov.b_near} are near duplicates of rows of {other} (at least {ov.threshold:.0%} of the "
                     f"{ov.ngram}-grams of the shorter row shared{': ' + shown if shown else ''})")
    if ov.b_reversed:
        ex = ov.examples.get("reversed") or []
        shown = ", ".join(f"row {e['b_row']} = row {e['a_row']} reversed" for e in ex[:3])
        parts.append(f"{ov.b_reversed} are translation pairs of {other} in the other direction ({shown})")
    return "; ".join(parts)


def _short(span: str, width: int = 60) -> str:
    return span if len(span) <= width else span[: width - 1] + "…"


def _source_note(ov: Overlap) -> str:
    ex = ov.examples.get("source") or []
    shown = ", ".join(f"row {e['b_row']}" for e in ex[:3])
    return (f"{ov.b_source} translation rows have a source sentence that {ov.a} holds as a source or target "
            f"({shown})")


def overlap_finding(ov: Overlap) -> Finding:
    """``qfk lint A --against B``: an error when rows of B are in A (the same, near, reversed), a
    warning when only source sentences are, else ok."""
    compared = f"{ov.b_rows} rows compared with {ov.a_rows}; near: {ov.ngram}-grams, {ov.threshold:.0%}"
    if not ov.count and not ov.b_source:
        return Finding("overlap", "ok", ov.b, f"no row is in {ov.a}, the same, near or reversed ({compared})")
    fix = (f"to evaluate on {ov.b}, keep its rows out of training: qfk datasets decontaminate {ov.a} --against {ov.b} "
           f"(writes {ov.a}__clean), or convert once with --val-size and evaluate on NAME_val; as two training sets, "
           "the shared rows are trained twice per epoch")
    if not ov.count:
        return Finding("overlap", "warn", ov.b, f"{_source_note(ov)} ({compared})", fix)
    text = f"{ov.count} of its {ov.b_rows} rows are in {ov.a}: {describe(ov)}"
    if ov.b_source:
        text += f"; and {_source_note(ov)}"
    return Finding("overlap", "error", ov.b, f"{text} ({compared})", fix)


# --------------------------------------------------------------------------------------------
# training datasets against eval datasets
# --------------------------------------------------------------------------------------------
def check_leaks(train_names: Iterable[str], eval_names: Iterable[str],
                data_dir: str | os.PathLike | None = None, *, ngram: int = NGRAM, threshold: float = THRESHOLD) -> list[Finding]:
    """The ``leak`` findings of every training dataset against every eval dataset (all registered
    in ``data_dir``): an error per leaking pair (rows the same, near or reversed), a warning for
    two conversions of one source that share no row or for eval source sentences seen in training,
    an info per pair that cannot be read, else one ok saying how many rows were compared."""
    from .registry import Registry

    reg = Registry.at(data_dir)
    registry = reg.read()
    out: list[Finding] = []
    compared: list[Overlap] = []
    trains = list(dict.fromkeys(train_names))
    for ev in dict.fromkeys(eval_names):
        for tr in trains:
            found, ov = _check_pair(tr, ev, registry, reg.data_dir, ngram, threshold)
            out += found
            compared += [ov] if ov is not None else []
    if compared and not any(f.severity in ("warn", "error") for f in out):
        pairs = "; ".join(f"{ov.b} ({ov.b_rows} rows) against {ov.a} ({ov.a_rows} rows)" for ov in compared)
        out.append(Finding("leak", "ok", None, f"no eval row is a training row, the same, near or reversed: {pairs}"))
    return out


def _check_pair(tr: str, ev: str, registry: dict, data_dir: Path, ngram: int = NGRAM,
                threshold: float = THRESHOLD) -> tuple[list[Finding], Overlap | None]:
    """Training dataset ``tr`` against eval dataset ``ev``: the finding of their relation and shared rows."""
    same = same_dataset(tr, ev, registry, data_dir)
    source = same_source(registry.get(tr), registry.get(ev), data_dir)
    try:
        ov = compare(registered_side(tr, registry, data_dir), registered_side(ev, registry, data_dir), ngram=ngram, threshold=threshold)
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
    if ov.b_source:
        return [Finding("leak", "warn", ev, f"{_source_note(ov)}: the model saw these eval inputs in training",
                        _fix(tr, ev, registry))], ov
    return [], ov


def _shared_message(tr: str, ov: Overlap, source: tuple[Path, Path] | None) -> str:
    if ov.b_shared:
        text = (f"{ov.b_shared} of its {ov.b_rows} rows are in training dataset {tr} ({ov.a_shared} of its {ov.a_rows} rows; "
                f"eval rows {_rows(ov.b_examples, ov.b_shared)}; training rows {_rows(ov.a_examples, ov.a_shared)})")
        rest = describe(Overlap(**{**asdict(ov), "b_shared": 0}), eval_side=True)
        text += f"; {rest}" if rest else ""
    else:
        text = f"{ov.count} of its {ov.b_rows} rows are in training dataset {tr}: {describe(ov, eval_side=True)}"
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
    return (f"train without them: qfk datasets decontaminate {tr} --against {ev} (registers {tr}__clean: use "
            f"dataset={tr}__clean); see them: qfk lint {tr} --against {ev}")


def registered_side(name: str, registry: dict, data_dir: Path) -> _Side:
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
