"""The converter contract: what a converter plug-in is, and the text helpers it rejects with.

A converter (:class:`Converter`) only says how ONE source row becomes output rows, or why it is
rejected (:class:`Reject`, with a short stable reason). The streaming core (:mod:`.pipeline`) does
the rest: reading, counting, sampling, splitting, hashing and atomic writing. The field helpers
(:func:`get_field`, :func:`text_field`, :func:`check_text`, :func:`canonical_response`) are the
rules every converter shares, each rejecting with the same reason code; :func:`reject_line` is the
line a rejected row gets in ``<stem>.rejects.jsonl``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import orjson

from ..errors import QfkError
from ..io.readers import BadRecord, Batch, TableFile
from ..io.sources import ResolvedSource, table_files
from ..think import EMPTY_STYLES, ThinkTagError, find_special_tokens, has_think_tags, normalize_response
from ..workspace import slug

#: how every output and rejects line is dumped (orjson bytes, one JSON value a line)
DUMPS_OPTS = orjson.OPT_APPEND_NEWLINE


class Reject(Exception):
    """Raised by a converter for a row it will not write; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


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


class TableSource:
    """Rows from JSONL/JSON/Parquet/CSV files (a file, a folder, or a downloaded hub dataset).

    A source gives the files the manifest hashes (:attr:`paths`); one that can hash them in the
    pass that reads its rows says which (:meth:`hash_as_read`) and gives their digests after it
    (:meth:`hashes`). The core hashes the others with a read of their own (:class:`~.sinks.Hasher`)."""

    def __init__(self, files: list[TableFile]):
        self.files = files
        self._hashing = False

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]

    def count(self) -> int:
        return sum(f.count() for f in self.files)

    def batches(self) -> Iterator[Batch]:
        for f in self.files:
            yield from f.batches(hashed=self._hashing)

    def hash_as_read(self) -> list[Path]:
        """Hash the files as :meth:`batches` reads them; the files it hashes so (all but Parquet:
        :attr:`~qwen_factory_kit.io.readers.TableFile.hashed_when_read`)."""
        self._hashing = True
        return [f.path for f in self.files if f.hashed_when_read]

    def hashes(self) -> dict[str, str]:
        """sha256 of each file that a pass of :meth:`batches` read to its end since :meth:`hash_as_read`."""
        return {str(f.path): f.sha256 for f in self.files if f.sha256 is not None}


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


def reject_line(batch: Batch, i: int, reject: Reject) -> bytes:
    """The rejects-file line of row ``i``: its place, the reason, and the record as read."""
    row = batch.row(i)
    raw = row.raw if type(row) is BadRecord else row
    return orjson.dumps({"source": batch.source, batch.unit: batch.positions[i], "reason": reject.reason,
                         "detail": reject.detail, "record": raw},
                        option=DUMPS_OPTS | orjson.OPT_SERIALIZE_NUMPY, default=str)
