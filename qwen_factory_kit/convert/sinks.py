"""Where a conversion's rows go: the temporary output files, then the manifest.

:class:`Outputs` holds the temporary files of a run (one per split, and the rejects), written as
JSON Lines and renamed into place only when the whole run succeeded (an interrupted run leaves the
previous output intact: :class:`~qwen_factory_kit.io.atomic.AtomicFile`). :func:`finish` counts,
refuses an empty result, streams the staged rows into their splits, commits the files and writes
``<stem>.manifest.json`` (options, source, hashes, counts, think mode, versions);
:class:`ConvertResult` is the run's summary (also what ``--json`` prints). The outputs are hashed
as they are written; the inputs as their rows are read where the reader allows, else by a read of
their own in a thread (:class:`Hasher`).
"""

from __future__ import annotations

import os
import platform
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .. import __version__
from ..errors import QfkError
from ..io.atomic import AtomicFile, atomic_write_bytes, sha256_file, sweep_stale_temps
from ..io.sources import ResolvedSource
from ..think import ThinkTally
from .contract import Converter
from .fit import fitting_converter, rejected_fields
from .splits import SplitPlan, Staging


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


class Hasher(threading.Thread):
    """The sha256 of a source's files (``records.paths``), for the manifest, each file read once
    where its reader allows. With ``in_pass``, the files the source hashes as its rows are read
    (``records.hash_as_read()``: JSON Lines, JSON and CSV tables, Moses text files) are not read
    again; the others are hashed in this thread, with a read of their own,
    while the conversion runs: Parquet (pyarrow does not read its bytes in order), the files of a
    Moses folder no row comes from and its zips, and every file of a ``--shard`` part (``in_pass``
    False: a part reads only its rows)."""

    def __init__(self, records, *, in_pass: bool):
        super().__init__(daemon=True)
        self.records = records
        self.paths = list(records.paths)
        hash_as_read = getattr(records, "hash_as_read", None) if in_pass else None
        read = {str(p) for p in hash_as_read()} if hash_as_read is not None else set()
        self.apart = [p for p in self.paths if str(p) not in read]
        self.result: dict[str, str] = {}
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            for p in self.apart:
                self.result[str(p)] = sha256_file(p)
        except OSError as exc:  # pragma: no cover - file vanished mid-run
            self.error = exc

    def digests(self) -> dict[str, str]:
        """Each file's sha256, in :attr:`paths` order, once the thread is done; a file the reading
        pass did not read to its end (an error stopped it) is read again here."""
        self.join()
        read = getattr(self.records, "hashes", dict)()
        out = {}
        try:
            if self.error:
                raise self.error
            for p in self.paths:
                out[str(p)] = self.result.get(str(p)) or read.get(str(p)) or sha256_file(p)
        except OSError as exc:  # pragma: no cover - file vanished mid-run
            raise QfkError(f"cannot hash the input files: {exc}") from None
        return out


class Outputs:
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


def finish(converter: Converter, src: ResolvedSource, res: ConvertResult, sink: Outputs, hasher: Hasher,
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
    input_hashes = hasher.digests()
    for s, fh in sink.files.items():
        res.splits[s] = {"path": fh.path, "rows": sink.split_rows[s], "source_rows": sink.split_units[s], "sha256": fh.sha256}
    manifest = _manifest(converter, src, res, sink.files, sink.rejects, input_hashes, paths["manifest"].parent, run_opts)
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
