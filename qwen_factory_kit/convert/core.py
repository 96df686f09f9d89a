"""The shared streaming core under every converter.

A converter plug-in (:class:`Converter`) only says how ONE source row becomes output rows, or
why it is rejected. The core does the rest, in one pass over the source with constant memory
(with splits, a second pass over the accepted rows, staged in a temporary file):

* reads record batches from the source (with file and line/row numbers);
* samples ``--limit`` rows with seeded selection sampling (exactly N rows, spread over the
  whole source, in source order: never "the first N");
* splits train/val/test with the same seeded method, the sizes exact in accepted rows (:mod:`.splits`);
* optionally drops duplicates (a 16-byte digest per kept row, in bounded memory: :mod:`.dedup`);
* with ``--max-tokens``, rejects the rows longer than that as LLaMA-Factory encodes them (:mod:`.length`);
* writes JSON Lines (orjson bytes) to temporary files, and renames them into place only when
  the whole run succeeded (an interrupted run leaves the previous output intact);
* writes ``<stem>.rejects.jsonl`` (every rejected row with its place and reason) and
  ``<stem>.manifest.json`` (options, source, hashes, counts, think mode, versions).

Batches are converted to bytes by :class:`_Work` (the converter's rows, dumped, with their think
tally and dedup digest), in ``--workers`` processes (:mod:`.workers`); everything that depends on
the order of the rows (sampling, splits, duplicates, counting, writing, hashing) stays in the
calling process, so the output is the same whatever the number of workers. ``--shard I/N``
converts one contiguous part of the source (:mod:`.shards`).

Invariant: ``read == written + rejected`` where the counts are in source rows (one Moses line
may produce several output rows: see ``rows_out``).
"""

from __future__ import annotations

import gc
import hashlib
import os
import platform
import random
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, NamedTuple

import orjson

from .. import __version__
from ..errors import QfkError
from ..io.atomic import AtomicFile, atomic_write_bytes, sha256_file, sweep_stale_temps
from ..io.readers import BadRecord, Batch, TableFile
from ..io.sources import ResolvedSource, resolve_source, table_files
from ..think import EMPTY_STYLES, ThinkTagError, ThinkTally, find_special_tokens, has_think_tags, normalize_response
from ..workspace import data_dir as resolve_data_dir
from ..workspace import slug
from .dedup import Seen
from .fit import fitting_converter, rejected_fields
from .shards import Shard, check_options, no_rows
from .splits import SPLITS, TRAIN, Selector, SplitPlan, Staging
from .workers import ordered_map, worker_count

_DUMPS_OPTS = orjson.OPT_APPEND_NEWLINE


class Reject(Exception):
    """Raised by a converter for a row it will not write; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


# ---------------------------------------------------------------------------------------------
# Field helpers shared by the converters (each rejects with a clear reason)
# ---------------------------------------------------------------------------------------------
def get_field(row: dict, key: str) -> Any:
    """``row[key]``; a dotted key (``metrics.quality_f1``) walks nested objects."""
    if key in row:
        return row[key]
    if "." in key:
        cur: Any = row
        for part in key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                raise Reject("missing_field", f"field '{key}' is missing")
            cur = cur[part]
        return cur
    raise Reject("missing_field", f"field '{key}' is missing (row has: {', '.join(map(str, row))[:120]})")


def text_field(row: dict, key: str, *, required: bool = True) -> str:
    """A string field, stripped; rejects missing, non-string, null or (when required) empty."""
    value = get_field(row, key) if required or key in row else None
    if value is None:
        if required:
            raise Reject("null_field", f"field '{key}' is null")
        return ""
    if type(value) is not str:
        raise Reject("wrong_type", f"field '{key}' must be a string, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise Reject("empty_field", f"field '{key}' is empty")
    return value


#: what :func:`check_text` looks for (a NUL, chat control tokens, think tags): a text holding none
#: of these passes it unchanged, and converters may skip the call (``_M0 not in t and ...``)
CHECKED_MARKERS = ("\x00", "<|", "think>")


def check_text(value: str, key: str, *, prompt: bool) -> str:
    """Reject NUL characters and chat control tokens anywhere, and think tags in prompt-side fields."""
    if "\x00" in value:
        raise Reject("nul_character", f"field '{key}' contains a NUL character (\\x00): binary data or a mis-decoded file")
    if "<|" in value:
        tokens = find_special_tokens(value)
        if tokens:
            raise Reject("chat_special_tokens",
                         f"field '{key}' contains {', '.join(tokens)}: the chat template would be applied twice")
    if prompt and has_think_tags(value):
        raise Reject("reasoning_in_prompt", f"field '{key}' contains <think> tags: reasoning belongs in the response")
    return value


def canonical_response(text: str, key: str, empty: str) -> str:
    """Normalise a response that may carry think tags into the canonical form."""
    check_text(text, key, prompt=False)
    try:
        return normalize_response(text, empty=empty)
    except ThinkTagError as exc:
        raise Reject(exc.code, f"field '{key}': {exc.detail}") from None


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
class TableSource:
    """Rows from JSONL/JSON/Parquet/CSV files (a file, a folder, or a downloaded hub dataset)."""

    def __init__(self, files: list[TableFile]):
        self.files = files

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]

    def count(self) -> int:
        return sum(f.count() for f in self.files)

    def batches(self) -> Iterator[Batch]:
        for f in self.files:
            yield from f.batches()


# ---------------------------------------------------------------------------------------------
# Converter plug-in base
# ---------------------------------------------------------------------------------------------
class Converter:
    """Base class of converter plug-ins. Subclasses set the class attributes and implement
    :meth:`convert` (one source row -> list of output rows, or raise :class:`Reject`)."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    formatting: ClassVar[str] = "alpaca"
    ranking: ClassVar[bool] = False
    dedup_default: ClassVar[bool] = False
    #: fields of an output row that hold a response (for the think-mode tally)
    response_fields: ClassVar[tuple[str, ...]] = ("output",)
    #: True when every output row of a run has its keys in one order: ``--dedup`` then compares the
    #: written lines (the same verdict as :meth:`dedup_key`, without serialising the rows again)
    dedup_on_lines: ClassVar[bool] = False

    def __init__(self, *, empty_think: str = "explicit", **options: Any):
        if empty_think not in EMPTY_STYLES:
            raise QfkError(f"--empty-think must be one of {', '.join(EMPTY_STYLES)}, not '{empty_think}'",
                           "--empty-think explicit (an empty <think> block) or --empty-think omit (no block)")
        self.empty = empty_think
        self.options = {"empty_think": empty_think, **options}
        self.notes: Counter = Counter()  # counted observations that are not rejects

    # -- overridable ------------------------------------------------------------------------
    def open(self, src: ResolvedSource, *, split: str | None, encoding: str | None) -> Any:
        return TableSource(table_files(src, split=split, encoding=encoding))

    def default_name(self, src: ResolvedSource) -> str:
        from ..catalog import catalog_lookup

        known = catalog_lookup(src.dataset_id)
        if known:
            return known[0]
        base = src.dataset_id.split("/")[-1] if src.dataset_id else (src.path.stem if src.path.is_file() else src.path.name)
        return slug(base)

    def convert(self, row: dict) -> list[dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def note_option(self, note: str) -> str:
        """For one of this run's notes, the option that changes what it counts ('' when none does):
        the summary prints it beside the count."""
        return ""

    def convert_batch(self, batch: Batch, keep: list[bool] | None) -> Iterator:
        """Convert a batch, row by row in order: a list of output rows, a :class:`Reject`, or None
        for a row not selected by ``keep`` (a generator: the core writes each row before the next is
        made). Converters with a columnar fast path override this (and must give exactly what
        :meth:`convert` gives, row by row)."""
        convert = self.convert
        for i, row in enumerate(batch.rows):
            if keep is not None and not keep[i]:
                yield None
            elif type(row) is BadRecord:
                yield Reject(row.reason, row.detail)
            else:
                try:
                    yield convert(row)
                except Reject as r:
                    yield r

    def lines_batch(self, batch: Batch, keep: list[bool] | None) -> Iterator | None:
        """An optional faster path than :meth:`convert_batch` for converters that serialise their
        rows themselves: per row None (not selected by ``keep``), a :class:`Reject`, or ``(lines,
        rows, (reasoning, empty_block, no_block), dedup_key)``, where ``lines`` are exactly the
        bytes the core would write for :meth:`convert`'s rows and ``dedup_key`` identifies them (or
        None: the lines are compared). None (the default): no such path for this batch."""
        return None

    def responses(self, out: dict) -> Iterable[str]:
        for key in self.response_fields:
            value = out.get(key)
            if isinstance(value, str):
                yield value
        for pair in out.get("history") or ():
            yield pair[1]

    def dedup_key(self, batch: Batch, i: int, outs: list[dict]) -> bytes:
        """Bytes that identify a row's content for ``--dedup`` (default: its output rows)."""
        return b"".join(orjson.dumps(o, option=orjson.OPT_SORT_KEYS) for o in outs)

    def columns(self) -> dict:
        """Output columns as LLaMA-Factory's ``columns`` block names them (for registration)."""
        return {"prompt": "instruction", "query": "input", "response": "output"}

    def tags(self) -> dict | None:
        """ShareGPT role tags of the output (None for Alpaca output)."""
        return None

    def entry(self, file_name: str = "rows.jsonl") -> dict:
        """The dataset_info.json entry the output gets (what ``--max-tokens`` encodes the rows with)."""
        from ..registry import build_entry

        return build_entry(file_name, formatting=self.formatting, ranking=self.ranking, columns=self.columns(), tags=self.tags())

    # -- shared helpers ---------------------------------------------------------------------
    def response(self, text: str, key: str = "output") -> str:
        return canonical_response(text, key, self.empty)


# ---------------------------------------------------------------------------------------------
# One batch, converted to bytes (in a worker process, or in-process with one worker)
# ---------------------------------------------------------------------------------------------
#: what :attr:`Converted.kinds` says of a row
SKIPPED, REJECTED, ACCEPTED = 0, 1, 2


class Converted(NamedTuple):
    """A batch, converted to bytes. ``kinds``: per row :data:`SKIPPED` (not selected),
    :data:`REJECTED` or :data:`ACCEPTED`; per accepted row, in order: the end of its lines in
    ``blob``, its number of output rows, its ``--dedup`` digest (``digests``, None without dedup);
    per rejected row, in order: ``(reason, rejects-file line)``; the think tally of every accepted
    row's responses, and the converter's notes counted on the batch."""

    kinds: bytearray
    blob: bytes | bytearray | memoryview  # a memoryview of a shared-memory slot when a worker made it
    ends: list[int]
    counts: list[int]
    digests: list[bytes] | None
    rejects: list[tuple[str, bytes]]
    tally: tuple[int, int, int]
    notes: Counter


def reject_line(batch: Batch, i: int, reject: Reject) -> bytes:
    """The rejects-file line of row ``i``: its place, the reason, and the record as read."""
    row = batch.row(i)
    raw = row.raw if type(row) is BadRecord else row
    return orjson.dumps({"source": batch.source, batch.unit: batch.positions[i], "reason": reject.reason,
                         "detail": reject.detail, "record": raw},
                        option=_DUMPS_OPTS | orjson.OPT_SERIALIZE_NUMPY, default=str)


class _Work:
    """What a worker holds: the converter (with the state ``open()`` gave it) and whether to digest rows."""

    def __init__(self, converter: Converter, dedup: bool):
        self.converter, self.dedup = converter, dedup

    def convert(self, batch: Batch, keep: list[bool] | None) -> Converted:
        """The batch's rows converted, dumped, tallied and digested. The garbage collector is off
        meanwhile: the batch's thousands of young dicts would make it scan them again and again
        (conversion makes no reference cycles that need it; it runs again after the batch)."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._convert(batch, keep)
        finally:
            if enabled:
                gc.enable()

    def _convert(self, batch: Batch, keep: list[bool] | None) -> Converted:
        conv = self.converter
        lines = conv.lines_batch(batch, keep)
        if lines is not None:
            return self._from_lines(batch, lines)
        kinds = bytearray(len(batch))
        blob = bytearray()  # orjson gives each line a 4 KiB buffer: appended here, only the bytes are kept
        ends: list[int] = []
        counts: list[int] = []
        digests: list[bytes] | None = [] if self.dedup else None
        rejects: list[tuple[str, bytes]] = []
        tally = ThinkTally()
        dumps, responses = orjson.dumps, conv.responses
        for i, outs in enumerate(conv.convert_batch(batch, keep)):
            if outs is None:
                continue
            if type(outs) is Reject:
                kinds[i] = REJECTED
                rejects.append((outs.reason, reject_line(batch, i, outs)))
                continue
            kinds[i] = ACCEPTED
            for out in outs:
                blob += dumps(out, option=_DUMPS_OPTS)
                for text in responses(out):
                    tally.add_text(text)
            ends.append(len(blob))
            counts.append(len(outs))
            if digests is not None and not conv.dedup_on_lines:
                digests.append(_digest(conv.dedup_key(batch, i, outs)))
        if digests is not None and conv.dedup_on_lines:
            with memoryview(blob) as view:
                digests = [_digest(view[a:b]) for a, b in zip([0, *ends], ends)]
        notes, conv.notes = conv.notes, Counter()
        return Converted(kinds, blob, ends, counts, digests, rejects, (tally.reasoning, tally.empty_block, tally.no_block), notes)

    def _from_lines(self, batch: Batch, items: Iterator) -> Converted:
        """:meth:`_convert` for a converter's :meth:`Converter.lines_batch`."""
        kinds = bytearray(len(batch))
        pieces: list[bytes] = []
        counts: list[int] = []
        digests: list[bytes] | None = [] if self.dedup else None
        rejects: list[tuple[str, bytes]] = []
        reasoning = empty = none = 0
        for i, item in enumerate(items):
            if item is None:
                continue
            if type(item) is Reject:
                kinds[i] = REJECTED
                rejects.append((item.reason, reject_line(batch, i, item)))
                continue
            kinds[i] = ACCEPTED
            data, count, (r, e, n), key = item
            pieces.append(data)
            counts.append(count)
            reasoning, empty, none = reasoning + r, empty + e, none + n
            if digests is not None:
                digests.append(_digest(data if key is None else key))
        notes, self.converter.notes = self.converter.notes, Counter()
        ends = list(accumulate(map(len, pieces)))
        return Converted(kinds, b"".join(pieces), ends, counts, digests, rejects, (reasoning, empty, none), notes)


def _digest(key) -> bytes:
    """128 bits of the row's sha256 (with SHA instructions the fastest of hashlib's)."""
    return hashlib.sha256(key).digest()[:16]


def _convert(work: _Work, item: tuple[Batch, list[bool] | None, Any]) -> Converted:
    return work.convert(item[0], item[1])


def _tally(converter: Converter, lines: bytes) -> ThinkTally:
    """The think tally of one accepted row's responses, read back from its lines."""
    tally = ThinkTally()
    for line in lines.splitlines():
        for text in converter.responses(orjson.loads(line)):
            tally.add_text(text)
    return tally


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
@dataclass
class ConvertResult:
    """Summary of a conversion (also what ``--json`` prints)."""

    converter: str
    name: str
    output: Path
    rejects: Path
    manifest: Path
    read: int = 0
    written: int = 0
    rejected: int = 0
    rows_out: int = 0
    rejected_by_reason: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)  # split -> {"path", "rows"}
    think: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    note_options: dict = field(default_factory=dict)  # note -> the option that changes it (Converter.note_option)
    formatting: str = "alpaca"
    ranking: bool = False
    columns: dict = field(default_factory=dict)
    tags: dict | None = None
    source: dict = field(default_factory=dict)
    registered: list = field(default_factory=list)
    token_limit: dict = field(default_factory=dict)  # --max-tokens: {"max_tokens", "template", "enable_thinking"}
    splits_short: dict = field(default_factory=dict)  # split -> why it holds fewer rows than asked
    shard: dict = field(default_factory=dict)  # --shard: {"index", "count", "first_row", "last_row"}

    def summary(self) -> dict:
        return {
            "converter": self.converter,
            "name": self.name,
            "read": self.read,
            "written": self.written,
            "rejected": self.rejected,
            "rows_out": self.rows_out,
            "rejected_by_reason": self.rejected_by_reason,
            "output": str(self.output),
            "rejects": str(self.rejects),
            "manifest": str(self.manifest),
            "splits": {k: {"path": str(v["path"]), "rows": v["rows"], "source_rows": v["source_rows"]}
                       for k, v in self.splits.items()},
            "splits_short": self.splits_short,
            "token_limit": self.token_limit,
            **({"shard": self.shard} if self.shard else {}),
            "think": self.think,
            "notes": self.notes,
            "note_options": self.note_options,
            "formatting": self.formatting,
            "ranking": self.ranking,
            "registered": self.registered,
        }


def output_paths(output: Path) -> dict[str, Path]:
    if output.suffix.lower() not in (".jsonl", ".json"):
        raise QfkError(f"output '{output}' must end in .jsonl", f"for example -o {output.with_suffix('.jsonl')}")
    stem = output.with_suffix("")
    return {
        "train": output,
        "val": stem.with_name(stem.name + "_val" + output.suffix),
        "test": stem.with_name(stem.name + "_test" + output.suffix),
        "rejects": stem.with_name(stem.name + ".rejects.jsonl"),
        "manifest": stem.with_name(stem.name + ".manifest.json"),
    }


def versions() -> dict:
    from importlib import metadata

    out = {"qwen_factory_kit": __version__, "python": platform.python_version()}
    for pkg in ("orjson", "pyarrow", "llamafactory", "transformers", "modelscope"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path.resolve())


class _Hasher(threading.Thread):
    """Hashes the input files in the background while the conversion runs."""

    def __init__(self, paths: list[Path]):
        super().__init__(daemon=True)
        self.paths, self.result, self.error = paths, {}, None

    def run(self) -> None:
        try:
            for p in self.paths:
                self.result[str(p)] = sha256_file(p)
        except OSError as exc:  # pragma: no cover - file vanished mid-run
            self.error = exc


def run_conversion(
    converter: Converter,
    source: str | ResolvedSource,
    *,
    output: str | os.PathLike | None = None,
    name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 42,
    val_size: float | int | None = None,
    test_size: float | int | None = None,
    dedup: bool | None = None,
    split: str | None = "train",
    encoding: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    max_tokens: int | None = None,
    template: str = "qwen3",
    enable_thinking: bool | None = True,
    before_rows: Callable[[str, dict[str, Path]], None] | None = None,
    workers: int | None = 1,
    shard: str | Shard | None = None,
) -> ConvertResult:
    """Convert ``source`` with ``converter``; see the module docstring for what is written.

    ``max_tokens``: reject as ``too_long`` every row whose LLaMA-Factory encoding (``template``,
    ``enable_thinking``, the entry the converter registers) is longer (:mod:`.length`); the
    tokenizer is loaded only then. ``before_rows(name, outputs)`` gets the dataset name and the
    file of each split asked for before any row is read (``convert()`` checks the registry there).
    ``workers``: processes converting batches (:mod:`.workers`; 1: none started, None: the cores
    available, or none for a small source); the output is the same byte for byte whatever the
    number. A script that asks for workers needs the ``if __name__ == "__main__":`` guard, as any
    program using :mod:`multiprocessing` does. ``shard`` (``"I/N"``): convert part I of N of the
    source alone (:mod:`.shards`: where it is written, what works with it)."""
    src = source if isinstance(source, ResolvedSource) else resolve_source(source, cache_dir=cache_dir)
    records = converter.open(src, split=split, encoding=encoding)
    name = slug(name) if name else converter.default_name(src)
    if limit is not None and limit < 1:
        raise QfkError(f"--limit must be at least 1, not {limit}")
    dedup = converter.dedup_default if dedup is None else dedup
    shard = _shard(shard, converter, val_size=val_size, test_size=test_size, dedup=dedup)
    paths = output_paths(Path(output) if output else resolve_data_dir(data_dir) / f"{name}.jsonl")
    paths = shard.paths(paths["train"]) if shard is not None else paths
    if before_rows is not None:
        asked = {"train": True, "val": bool(val_size), "test": bool(test_size)}
        before_rows(name, {s: paths[s] for s in SPLITS if asked[s]})
    tokens = _token_limit(converter, max_tokens, template, enable_thinking)
    progress = progress and sys.stderr.isatty()
    total = records.count() if limit or val_size or test_size or progress or shard else None
    if total == 0:
        raise QfkError(f"source '{src.spec}' holds no rows", "check the file (is it empty?) or the --split you asked for")
    if shard is not None and shard.bounds(total)[0] == shard.bounds(total)[1]:
        raise no_rows(shard, total)
    selector, plan = _sampling(total, limit, val_size, test_size, random.Random(seed))
    workers = worker_count(workers, sum(p.stat().st_size for p in records.paths))
    if type(converter).__module__ == "__main__":  # a worker could not import its class
        workers = 1

    hasher = _Hasher(records.paths)
    hasher.start()
    res = ConvertResult(converter.name, name, paths["train"], paths["rejects"], paths["manifest"],
                        formatting=converter.formatting, ranking=converter.ranking, columns=converter.columns(),
                        tags=converter.tags(), token_limit=tokens.settings() if tokens else {})
    if shard is not None:
        res.shard = shard.describe(total)
    sink = None
    try:
        sink = _Outputs(paths, plan)
        batches = records.batches() if shard is None else _in_part(records.batches(), *shard.bounds(total), selector)
        screen = _Screen(dedup, tokens, paths["train"].parent)
        try:
            _write_rows(converter, batches, sink, res, selector, screen, workers, _Bar(total, src.spec) if progress else None)
        finally:
            screen.close()
        _finish(converter, src, res, sink, hasher, paths,
                dict(limit=limit, seed=seed, val_size=val_size, test_size=test_size, dedup=dedup, split=split,
                     encoding=encoding, source_records=total, **res.token_limit,
                     **({"shard": res.shard} if res.shard else {})))
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    return res


def _shard(shard: str | Shard | None, converter: Converter, *, val_size, test_size, dedup: bool) -> Shard | None:
    """``--shard I/N`` parsed, once the options that cannot be exact with it are refused."""
    if shard is None:
        return None
    shard = shard if isinstance(shard, Shard) else Shard.parse(shard)
    check_options(shard, val_size=val_size, test_size=test_size, dedup=dedup,
                  converter=converter.name if converter.dedup_default else "")
    return shard


def _token_limit(converter: Converter, max_tokens: int | None, template: str, enable_thinking: bool | None):
    """The ``--max-tokens`` check for ``converter``'s output (None when not asked: nothing loaded)."""
    if max_tokens is None:
        return None
    from .length import TokenLimit

    return TokenLimit(max_tokens, converter.entry(), template=template, enable_thinking=enable_thinking)


def _sampling(total: int | None, limit: int | None, val_size, test_size,
              rng: random.Random) -> tuple[Selector | None, SplitPlan | None]:
    """The ``--limit`` selector and the ``--val-size``/``--test-size`` plan (None when not asked)."""
    n_read = min(limit, total) if limit and total is not None else total
    selector = Selector(total, limit, rng) if limit and total is not None and limit < total else None
    plan = SplitPlan(n_read, val_size, test_size, rng) if val_size or test_size else None
    return selector, plan


_DUPLICATE = Reject("duplicate", "same content as an earlier row")


class _Screen:
    """The last checks of a converted row: a duplicate of a written row (``--dedup``, by the digest
    the worker computed, in a bounded-memory set: :mod:`.dedup`), then longer than ``--max-tokens``
    (measured only for rows that are not duplicates, on the rows read back from their lines)."""

    def __init__(self, dedup: bool, tokens, folder: Path):
        self.tokens = tokens
        self.seen: Seen | None = Seen(folder) if dedup else None
        self.active = dedup or tokens is not None

    def __call__(self, digest: bytes | None, lines: bytes, on_disk: bool) -> Reject | None:
        """``on_disk``: the digest was found among the rows spilled to disk (:meth:`Seen.on_disk`)."""
        seen = self.seen
        if seen is not None and (on_disk or digest in seen):
            return _DUPLICATE
        if self.tokens is not None:
            too_long = self.tokens.check([orjson.loads(line) for line in bytes(lines).splitlines()])
            if too_long is not None:
                return Reject(*too_long)
        if seen is not None:
            seen.add(digest)
        return None

    def duplicates(self, digests: list[bytes]) -> list[bool] | None:
        """Without ``--max-tokens``, the duplicate verdict of each of a batch's accepted rows at once
        (the rows kept are added as they are met: a row may repeat one of its own batch); None
        when the rows must be screened one by one (:meth:`__call__`)."""
        if self.seen is None or self.tokens is not None:
            return None
        recent, add = self.seen.recent, self.seen.recent.add
        dups = self.seen.on_disk(digests)
        for a, digest in enumerate(digests):
            if dups[a] or digest in recent:
                dups[a] = True
            else:
                add(digest)
        return dups

    def close(self) -> None:
        if self.seen is not None:
            self.seen.close()


class _Outputs:
    """The temporary output files of a run (one per split, and the rejects) and what went into them.
    Without splits the rows go straight to the train file; with splits they are staged with their
    first-pass split and streamed into the split files at the end (:mod:`.splits`)."""

    def __init__(self, paths: dict[str, Path], plan: SplitPlan | None):
        self.plan = plan
        for folder in {p.parent for p in paths.values()}:  # what killed runs left behind
            sweep_stale_temps(folder)
        self.files: dict[str, AtomicFile] = {}
        self.rejects: AtomicFile | None = None
        self.staging: Staging | None = None
        try:  # an interrupt while opening them leaves no temporary file behind
            for s in plan.names if plan else ["train"]:
                self.files[s] = AtomicFile(paths[s])
            self.rejects = AtomicFile(paths["rejects"])
            self.staging = Staging(paths["train"].parent) if plan else None
        except BaseException:  # Ctrl-C or a full disk while opening them: no temporary file stays
            self.abort()
            raise
        self.reasons: Counter = Counter()
        self.split_rows: Counter = Counter()  # output rows per split
        self.split_units: Counter = Counter()  # source rows per split
        self.tally = ThinkTally()
        self._chunks: list[bytes] = []

    def add(self, data: bytes, rows: int, units: int) -> None:
        """Accepted source rows (``units``, giving ``rows`` output lines ``data``) for train, without splits."""
        self._chunks.append(data)
        self.split_rows["train"] += rows
        self.split_units["train"] += units

    def stage(self, split: int, lines: bytes) -> None:
        """One accepted source row's output lines, for ``split`` (its first-pass split)."""
        self._chunks.append(Staging.unit(split, bytes(lines).splitlines(keepends=True)))
        self.staging.have[split] += 1

    def count_think(self, counts: tuple[int, int, int], sign: int = 1) -> None:
        tally = self.tally
        tally.reasoning += sign * counts[0]
        tally.empty_block += sign * counts[1]
        tally.no_block += sign * counts[2]

    def flush(self, rej_buf: list[bytes]) -> None:
        if self.staging is not None and self._chunks:
            self.staging.write(b"".join(self._chunks))
        elif self._chunks:  # a batch's lines, a few large pieces: written without copying them
            for chunk in self._chunks:
                self.files["train"].write(chunk)
        self._chunks = []
        if rej_buf:
            self.rejects.write(b"".join(rej_buf))

    def split(self, read: int) -> dict[str, str]:
        """Stream the staged rows into the split files at their exact sizes; returns why a split is short."""
        if self.staging is None:
            return {}
        moves = self.plan.moves(self.staging.have, read)
        self.staging.drain(moves, self.files, self.split_rows, self.split_units)
        return moves.short

    def commit(self) -> None:
        for fh in self.files.values():
            fh.commit()
        self.rejects.commit()
        self._close_staging()

    def abort(self) -> None:
        for fh in self.files.values():
            fh.abort()
        if self.rejects is not None:
            self.rejects.abort()
        self._close_staging()

    def _close_staging(self) -> None:
        if self.staging is not None:
            self.staging.close()


def _in_part(batches: Iterator[Batch], start: int, end: int, selector: Selector | None) -> Iterator[Batch]:
    """The source rows ``[start, end)`` (``--shard``), in batches; the selector draws for the rows
    before them, so that ``--limit`` picks the rows the whole source's run picks."""
    seen = 0
    for batch in batches:
        n = len(batch)
        a, b = min(max(start - seen, 0), n), min(end - seen, n)
        if selector is not None:
            for _ in range(a):
                selector.pick()
        if a < b:
            yield batch if (a, b) == (0, n) else batch.slice(a, b)
        seen += n
        if seen >= end:
            return


def _write_rows(converter: Converter, batches: Iterator[Batch], sink: _Outputs, res: ConvertResult,
                selector: Selector | None, screen: _Screen, workers: int, bar: "_Bar | None") -> None:
    """Convert the source batch by batch (in ``workers`` processes), writing the batches in source
    order; each batch's rows are picked (``--limit``) and given their first-pass split as it is read."""
    notes, converter.notes = converter.notes, Counter()  # open()'s notes, then each batch's
    drawn = _drawn(batches, selector, sink.plan)
    try:
        for (batch, _, splits), converted in ordered_map(_convert, drawn, workers=workers, setup=_Work, payload="blob",
                                                         setup_args=(converter, screen.seen is not None)):
            _write_batch(converter, batch, splits, converted, sink, res, screen)
            notes.update(converted.notes)
            if bar is not None:
                bar.advance(len(batch))
    finally:
        converter.notes = notes
        if bar is not None:
            bar.stop()


def _drawn(batches: Iterator[Batch], selector: Selector | None, plan: SplitPlan | None) -> Iterator[tuple]:
    """``(batch, keep, splits)``: which rows ``--limit`` picks (None: all) and the first-pass split
    of each picked row (None without splits), drawn from the seeded generator in source order, the
    same draws however far ahead of the writing the batches are read: for each block of batches
    (:data:`~qwen_factory_kit.io.readers.DRAW_ROWS` rows, the batch size of earlier versions), every
    pick, then every picked row's split, so that a seed keeps giving the rows it gave."""
    if selector is None and plan is None:
        for batch in batches:
            yield batch, None, None
        return
    block: list[Batch] = []
    for batch in batches:
        block.append(batch)
        if batch.draw_end:
            yield from _draw_block(block, selector, plan)
            block = []
    yield from _draw_block(block, selector, plan)  # a block left open (the end of a --shard part)


def _draw_block(block: list[Batch], selector: Selector | None, plan: SplitPlan | None) -> Iterator[tuple]:
    keeps = [[selector.pick() for _ in range(len(b))] if selector is not None else None for b in block]
    for batch, keep in zip(block, keeps):
        splits = None
        if plan is not None:
            splits = [plan.assign() if k else None for k in (keep if keep is not None else [True] * len(batch))]
        yield batch, keep, splits


def _write_batch(converter: Converter, batch: Batch, splits: list | None, conv: Converted, sink: _Outputs,
                 res: ConvertResult, screen: _Screen) -> None:
    """Count a converted batch and write it: its accepted rows to their splits, its rejects (and
    the rows the screen refuses) to the rejects file, in source order."""
    res.read += len(conv.kinds) - conv.kinds.count(SKIPPED)
    sink.count_think(conv.tally)
    if sink.plan is None and not screen.active:  # every accepted row goes to train as it is
        res.written += len(conv.ends)
        sink.add(conv.blob, sum(conv.counts), len(conv.ends))
        for reason, _ in conv.rejects:
            sink.reasons[reason] += 1
        sink.flush([line for _, line in conv.rejects])
        return
    rej_buf: list[bytes] = []
    reasons = sink.reasons
    blob, ends, counts, digests = memoryview(conv.blob), conv.ends, conv.counts, conv.digests
    dups = screen.duplicates(digests) if screen.active else None
    on_disk = screen.seen.on_disk(digests) if screen.seen is not None and dups is None else None
    rejects = iter(conv.rejects)
    a = start = run = 0  # accepted row number; start of its lines; start of the lines not yet added
    written = rows_out = 0
    for i, kind in enumerate(conv.kinds):
        if kind == SKIPPED:
            continue
        target = splits[i] if splits is not None else TRAIN
        if kind == REJECTED:
            reason, line = next(rejects)
            reasons[reason] += 1
            rej_buf.append(line)
            continue
        end = ends[a]
        if dups is not None:
            refused = _DUPLICATE if dups[a] else None
        elif screen.active:
            refused = screen(digests[a] if digests is not None else None, blob[start:end], on_disk is not None and on_disk[a])
        else:
            refused = None
        if refused is not None:
            reasons[refused.reason] += 1
            rej_buf.append(reject_line(batch, i, refused))
            tally = _tally(converter, blob[start:end].tobytes())
            sink.count_think((tally.reasoning, tally.empty_block, tally.no_block), -1)
            if sink.staging is None and run < start:
                sink.add(blob[run:start], 0, 0)
            run = end
        else:
            written += 1
            if sink.staging is not None:
                sink.stage(target, blob[start:end])
            else:
                rows_out += counts[a]
        a, start = a + 1, end
    res.written += written
    if sink.staging is None:
        sink.split_rows["train"] += rows_out
        sink.split_units["train"] += written
    if sink.staging is None and run < start:
        sink.add(conv.blob if run == 0 and start == len(conv.blob) else blob[run:start], 0, 0)
    sink.flush(rej_buf)
    if screen.seen is not None:
        screen.seen.settle()


def _finish(converter: Converter, src: ResolvedSource, res: ConvertResult, sink: _Outputs, hasher: _Hasher,
            paths: dict[str, Path], run_opts: dict) -> None:
    """Count, refuse an empty result, split, then commit the outputs and write the manifest."""
    reasons = sink.reasons
    res.rejected = sum(reasons.values())
    res.rejected_by_reason = dict(sorted(reasons.items()))
    res.think = sink.tally.as_dict()
    res.notes = dict(sorted(converter.notes.items()))
    res.note_options = {note: option for note in res.notes if (option := converter.note_option(note))}
    if res.read == 0:
        raise QfkError(f"source '{src.spec}' holds no rows", "check the file (is it empty?) or the --split you asked for")
    if res.written == 0:
        sink.rejects.commit()
        raise _nothing_written(converter, src, res, reasons, paths["rejects"])
    res.splits_short = sink.split(res.read)
    res.rows_out = sum(sink.split_rows.values())
    hasher.join()
    if hasher.error:
        raise QfkError(f"cannot hash the input files: {hasher.error}")
    for s, fh in sink.files.items():
        res.splits[s] = {"path": fh.path, "rows": sink.split_rows[s], "source_rows": sink.split_units[s], "sha256": fh.sha256}
    manifest = _manifest(converter, src, res, sink.files, sink.rejects, hasher.result, paths["manifest"].parent, run_opts)
    sink.commit()
    atomic_write_bytes(paths["manifest"], orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def _nothing_written(converter: Converter, src: ResolvedSource, res: ConvertResult, reasons: Counter,
                     rejects: Path) -> QfkError:
    """The error of a run whose every row was rejected, saying what to type: a higher --max-tokens,
    or, when the rows lack the fields the converter reads, the converter whose fields they have
    (:func:`~.fit.fitting_converter`, on the fields of the rows in the rejects file)."""
    top = ", ".join(f"{k} ({v})" for k, v in reasons.most_common(3))
    message = f"every one of the {res.read} rows was rejected ({top}); nothing was written"
    see = f"see {rejects} for each row's reason"
    first = reasons.most_common(1)[0][0]
    if res.token_limit and first == "too_long":
        return QfkError(message, f"{see}; most rows are longer than --max-tokens {res.token_limit['max_tokens']}: raise it")
    fields = rejected_fields(rejects) if first == "missing_field" else []
    fit = fitting_converter(fields)
    if fit is None:
        return QfkError(message, f"{see}; check the converter and its column options")
    shown = ", ".join(fields[:8]) + (", ..." if len(fields) > 8 else "")
    if fit.converter == "columns":
        whose = "no converter reads these by default: name the columns"
    elif fit.converter != converter.name:
        whose = f"{fit.converter} reads these, {converter.name} does not"
    else:
        whose = f"{converter.name} reads them with {' '.join(fit.options)}"
    return QfkError(f"{message}: the rows have {shown} ({whose})", f"convert them with: {fit.command(src.spec)} ({see})")


def _manifest(converter: Converter, src: ResolvedSource, res: ConvertResult, files: dict, rej_file: AtomicFile,
              input_hashes: dict, base: Path, run_opts: dict) -> dict:
    inputs = []
    for p in input_hashes:
        path = Path(p)
        inputs.append({"path": _rel(path, base) if src.kind == "local" else path.relative_to(src.path).as_posix(),
                       "bytes": path.stat().st_size, "sha256": input_hashes[p]})
    return {
        "qfk_manifest": 1,
        "name": res.name,
        "converter": converter.name,
        "options": {**converter.options, **run_opts},
        "source": {**src.describe(), "path": _rel(src.path, base) if src.kind == "local" else str(src.path), "files": inputs},
        "outputs": {
            **{s: {"file": fh.path.name, "rows": res.splits[s]["rows"], "source_rows": res.splits[s]["source_rows"],
                   "bytes": fh.bytes, "sha256": fh.sha256} for s, fh in files.items()},
            "rejects": {"file": rej_file.path.name, "rows": res.rejected, "bytes": rej_file.bytes, "sha256": rej_file.sha256},
        },
        "counts": {"read": res.read, "written": res.written, "rejected": res.rejected, "rows_out": res.rows_out,
                   "rejected_by_reason": res.rejected_by_reason, "notes": res.notes,
                   **({"splits_short": res.splits_short} if res.splits_short else {})},
        "dataset": {"formatting": res.formatting, "ranking": res.ranking, "columns": res.columns,
                    **({"tags": res.tags} if res.tags else {})},
        "think": res.think,
        "versions": versions(),
    }


class _Bar:
    def __init__(self, total: int | None, label: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.console import Console

        self.p = Progress(TextColumn("[bold]converting[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.task = self.p.add_task(label[-40:], total=total)
        self.p.start()

    def advance(self, n: int) -> None:
        self.p.advance(self.task, n)

    def stop(self) -> None:
        self.p.stop()

