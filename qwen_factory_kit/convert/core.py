"""The shared streaming core under every converter.

A converter plug-in (:class:`Converter`) only says how ONE source row becomes output rows, or
why it is rejected. The core does the rest, in one pass with constant memory:

* reads record batches from the source (with file and line/row numbers);
* samples ``--limit`` rows with seeded selection sampling (exactly N rows, spread over the
  whole source, in source order: never "the first N");
* assigns each read row to train/val/test with the same exact, seeded method;
* optionally drops duplicates (a 16-byte digest per kept row);
* writes JSON Lines (orjson bytes) to temporary files, and renames them into place only when
  the whole run succeeded (an interrupted run leaves the previous output intact);
* writes ``<stem>.rejects.jsonl`` (every rejected row with its place and reason) and
  ``<stem>.manifest.json`` (options, source, hashes, counts, think mode, versions).

Invariant: ``read == written + rejected`` where the counts are in source rows (one Moses line
may produce several output rows: see ``rows_out``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import random
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import orjson

from .. import __version__
from ..errors import QfkError
from ..io.atomic import AtomicFile, atomic_write_bytes, sha256_file
from ..io.readers import BadRecord, Batch, TableFile
from ..io.sources import ResolvedSource, resolve_source, table_files
from ..think import EMPTY_STYLES, ThinkTagError, ThinkTally, find_special_tokens, has_think_tags, normalize_response
from ..workspace import data_dir as resolve_data_dir
from ..workspace import slug

_DUMPS_OPTS = orjson.OPT_APPEND_NEWLINE
SPLITS = ("train", "val", "test")


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


def check_text(value: str, key: str, *, prompt: bool) -> str:
    """Reject chat control tokens anywhere, and think tags in prompt-side fields."""
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

    def convert_batch(self, batch: Batch, keep: list[bool] | None) -> list:
        """Convert a batch: one entry per row, a list of output rows, a :class:`Reject`, or None
        for a row not selected by ``keep``. Converters with a columnar fast path override this
        (and must give exactly what :meth:`convert` gives, row by row)."""
        out: list = []
        append = out.append
        convert = self.convert
        for i, row in enumerate(batch.rows):
            if keep is not None and not keep[i]:
                append(None)
            elif type(row) is BadRecord:
                append(Reject(row.reason, row.detail))
            else:
                try:
                    append(convert(row))
                except Reject as r:
                    append(r)
        return out

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

    # -- shared helpers ---------------------------------------------------------------------
    def response(self, text: str, key: str = "output") -> str:
        return canonical_response(text, key, self.empty)


# ---------------------------------------------------------------------------------------------
# Sampling and splitting (exact counts, constant memory, seeded)
# ---------------------------------------------------------------------------------------------
class Selector:
    """Selection sampling (Knuth's Algorithm S): call :meth:`pick` once per item, in order;
    exactly ``k`` of ``n`` items are picked, every subset equally likely."""

    __slots__ = ("left", "need", "rng")

    def __init__(self, n: int, k: int, rng: random.Random):
        self.left, self.need, self.rng = n, min(k, n), rng

    def pick(self) -> bool:
        left, need = self.left, self.need
        self.left = left - 1
        if need <= 0:
            return False
        if self.rng.random() * left < need:
            self.need = need - 1
            return True
        return False


def _size(value: float | int | None, total: int, what: str) -> int:
    if value is None or value == 0:
        return 0
    if isinstance(value, float) and 0 < value < 1:
        return int(round(total * value))
    if float(value).is_integer() and value >= 1:
        return int(value)
    raise QfkError(f"{what} must be a fraction in (0, 1) or a row count >= 1, not {value}", f"for example {what} 0.05 or {what} 2000")


class Splitter:
    """Assigns each read row to train, val or test: exact sizes, seeded."""

    def __init__(self, total: int, val: int, test: int, rng: random.Random):
        if val + test > total:
            raise QfkError(f"--val-size and --test-size ask for {val + test} rows but only {total} are read",
                           "lower them, or pass fractions such as --val-size 0.05")
        self.test = Selector(total, test, rng) if test else None
        self.val = Selector(total - test, val, rng) if val else None

    def assign(self) -> int:
        if self.test and self.test.pick():
            return 2
        if self.val and self.val.pick():
            return 1
        return 0


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
    formatting: str = "alpaca"
    ranking: bool = False
    columns: dict = field(default_factory=dict)
    tags: dict | None = None
    source: dict = field(default_factory=dict)
    registered: list = field(default_factory=list)

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
            "splits": {k: {"path": str(v["path"]), "rows": v["rows"]} for k, v in self.splits.items()},
            "think": self.think,
            "notes": self.notes,
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
) -> ConvertResult:
    """Convert ``source`` with ``converter``; see the module docstring for what is written."""
    src = source if isinstance(source, ResolvedSource) else resolve_source(source, cache_dir=cache_dir)
    records = converter.open(src, split=split, encoding=encoding)
    name = slug(name) if name else converter.default_name(src)
    paths = output_paths(Path(output) if output else resolve_data_dir(data_dir) / f"{name}.jsonl")
    dedup = converter.dedup_default if dedup is None else dedup
    if limit is not None and limit < 1:
        raise QfkError(f"--limit must be at least 1, not {limit}")
    progress = progress and sys.stderr.isatty()
    total = records.count() if limit or val_size or test_size or progress else None
    if total == 0:
        raise QfkError(f"source '{src.spec}' holds no rows", "check the file (is it empty?) or the --split you asked for")
    selector, splitter = _sampling(total, limit, val_size, test_size, random.Random(seed))

    hasher = _Hasher(records.paths)
    hasher.start()
    sink = _Outputs(paths, [s for s in SPLITS if s == "train" or splitter and getattr(splitter, s)])
    res = ConvertResult(converter.name, name, paths["train"], paths["rejects"], paths["manifest"],
                        formatting=converter.formatting, ranking=converter.ranking, columns=converter.columns(),
                        tags=converter.tags())
    try:
        _write_rows(converter, records, sink, res, selector, splitter, dedup, _Bar(total, src.spec) if progress else None)
        _finish(converter, src, res, sink, hasher, paths,
                dict(limit=limit, seed=seed, val_size=val_size, test_size=test_size, dedup=dedup, split=split,
                     encoding=encoding, source_records=total))
    except BaseException:
        sink.abort()
        raise
    return res


def _sampling(total: int | None, limit: int | None, val_size, test_size,
              rng: random.Random) -> tuple[Selector | None, Splitter | None]:
    """The ``--limit`` selector and the ``--val-size``/``--test-size`` splitter (None when not asked)."""
    n_read = min(limit, total) if limit and total is not None else total
    selector = Selector(total, limit, rng) if limit and total is not None and limit < total else None
    splitter = None
    if val_size or test_size:
        splitter = Splitter(n_read, _size(val_size, n_read, "--val-size"), _size(test_size, n_read, "--test-size"), rng)
    return selector, splitter


class _Outputs:
    """The temporary output files of a run (one per split, and the rejects) and what went into them."""

    def __init__(self, paths: dict[str, Path], splits: list[str]):
        self.files = {s: AtomicFile(paths[s]) for s in splits}
        self.rejects = AtomicFile(paths["rejects"])
        self.reasons: Counter = Counter()
        self.split_rows: Counter = Counter()
        self.tally = ThinkTally()

    def write(self, bufs: dict[str, list[bytes]], rej_buf: list[bytes]) -> None:
        for s, buf in bufs.items():
            if buf:
                self.files[s].write(b"".join(buf))
        if rej_buf:
            self.rejects.write(b"".join(rej_buf))

    def commit(self) -> None:
        for fh in self.files.values():
            fh.commit()
        self.rejects.commit()

    def abort(self) -> None:
        for fh in self.files.values():
            fh.abort()
        self.rejects.abort()


def _write_rows(converter: Converter, records, sink: _Outputs, res: ConvertResult, selector: Selector | None,
                splitter: Splitter | None, dedup: bool, bar: "_Bar | None") -> None:
    """Convert the source batch by batch; the selector picks the rows before they are converted."""
    seen: set[bytes] | None = set() if dedup else None
    try:
        for batch in records.batches():
            keep = [selector.pick() for _ in range(len(batch))] if selector is not None else None
            _write_batch(converter, batch, converter.convert_batch(batch, keep), sink, res, splitter, seen)
            if bar is not None:
                bar.advance(len(batch))
    finally:
        if bar is not None:
            bar.stop()


def _write_batch(converter: Converter, batch: Batch, results: list, sink: _Outputs, res: ConvertResult,
                 splitter: Splitter | None, seen: set[bytes] | None) -> None:
    """Each converted row of a batch to its split (or, rejected or a duplicate, to the rejects)."""
    bufs: dict[str, list[bytes]] = {s: [] for s in sink.files}
    rej_buf: list[bytes] = []
    unit, source_name = batch.unit, batch.source
    dumps = orjson.dumps
    for i, (pos, outs) in enumerate(zip(batch.positions, results)):
        if outs is None:
            continue
        res.read += 1
        target = SPLITS[splitter.assign()] if splitter else "train"
        if seen is not None and type(outs) is not Reject:
            key = hashlib.blake2b(converter.dedup_key(batch, i, outs), digest_size=16).digest()
            if key in seen:
                outs = Reject("duplicate", "same content as an earlier row")
            else:
                seen.add(key)
        if type(outs) is Reject:
            sink.reasons[outs.reason] += 1
            row = batch.row(i)
            raw = row.raw if type(row) is BadRecord else row
            rej_buf.append(dumps({"source": source_name, unit: pos, "reason": outs.reason, "detail": outs.detail,
                                  "record": raw}, option=_DUMPS_OPTS | orjson.OPT_SERIALIZE_NUMPY, default=str))
            continue
        res.written += 1
        buf = bufs[target]
        for out in outs:
            buf.append(dumps(out, option=_DUMPS_OPTS))
            for text in converter.responses(out):
                sink.tally.add_text(text)
        sink.split_rows[target] += len(outs)
    sink.write(bufs, rej_buf)


def _finish(converter: Converter, src: ResolvedSource, res: ConvertResult, sink: _Outputs, hasher: _Hasher,
            paths: dict[str, Path], run_opts: dict) -> None:
    """Count, refuse an empty result, then commit the outputs and write the manifest."""
    reasons = sink.reasons
    res.rejected = sum(reasons.values())
    res.rejected_by_reason = dict(sorted(reasons.items()))
    res.rows_out = sum(sink.split_rows.values())
    res.think = sink.tally.as_dict()
    res.notes = dict(sorted(converter.notes.items()))
    if res.read == 0:
        raise QfkError(f"source '{src.spec}' holds no rows", "check the file (is it empty?) or the --split you asked for")
    if res.written == 0:
        sink.rejects.commit()
        top = ", ".join(f"{k} ({v})" for k, v in reasons.most_common(3))
        raise QfkError(f"every one of the {res.read} rows was rejected ({top}); nothing was written",
                       f"see {paths['rejects']} for each row's reason; check the converter and its column options")
    hasher.join()
    if hasher.error:
        raise QfkError(f"cannot hash the input files: {hasher.error}")
    for s, fh in sink.files.items():
        res.splits[s] = {"path": fh.path, "rows": sink.split_rows[s], "sha256": fh.sha256}
    manifest = _manifest(converter, src, res, sink.files, sink.rejects, hasher.result, paths["manifest"].parent, run_opts)
    sink.commit()
    atomic_write_bytes(paths["manifest"], orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


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
            **{s: {"file": fh.path.name, "rows": res.splits[s]["rows"], "bytes": fh.bytes, "sha256": fh.sha256}
               for s, fh in files.items()},
            "rejects": {"file": rej_file.path.name, "rows": res.rejected, "bytes": rej_file.bytes, "sha256": rej_file.sha256},
        },
        "counts": {"read": res.read, "written": res.written, "rejected": res.rejected, "rows_out": res.rows_out,
                   "rejected_by_reason": res.rejected_by_reason, "notes": res.notes},
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

