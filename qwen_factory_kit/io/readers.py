"""Streaming readers: every input file becomes a sequence of :class:`Batch` objects.

A batch carries the rows and their position in the source file (``line`` for JSON Lines and
Moses text, ``row`` for Parquet/CSV data rows, ``item`` for a JSON array), so that every reject
can name its place. Rows that cannot even be parsed arrive as :class:`BadRecord`.

Memory stays constant: JSON Lines are read in blocks of lines, Parquet by record batches, CSV
through pyarrow's streaming reader. A JSON *array* file is the one exception (it is loaded whole;
use JSON Lines for large data).

A pass asked to hash (``batches(hashed=True)``) gives the file's sha256 (:attr:`TableFile.sha256`)
from the bytes it reads, through :class:`HashingFile`, once it has read the file to its end: the
conversion's manifest needs no second read of JSON Lines, JSON or CSV. Parquet is the exception
(:attr:`TableFile.hashed_when_read`): pyarrow reads the footer first, then the column chunks by
their offsets, so its bytes never pass in order; a Parquet file is hashed by a read of its own.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import stat
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import orjson

from ..errors import QfkError
from .encoding import refuse_wide_encoding

#: Extensions the tabular readers understand (same set LLaMA-Factory loads, minus arrow/txt).
TABLE_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")
BOM = b"\xef\xbb\xbf"
BLOCK_BYTES = 1 << 20
BATCH_ROWS = 1024
#: rows that --limit and the splits draw for together (the batch size of earlier versions, kept so
#: that a seed picks the same rows): a batch with ``draw_end`` closes such a block
DRAW_ROWS = 4096
#: why a line holding a raw carriage return is rejected (reason ``cr_line_breaks``)
CR_LINE_BREAKS = ("the line holds carriage returns (CR) where line breaks (LF) belong: convert the file's line endings, "
                  "for example: tr '\\r' '\\n' < IN > OUT")


@dataclass(slots=True)
class BadRecord:
    """A row that could not be parsed; becomes a reject with ``reason``."""

    reason: str
    detail: str
    raw: Any


class Batch:
    """Rows of one file with their positions. Columnar sources (Parquet, CSV) carry the Arrow
    record batch (``arrow``), text sources their raw lines (``raw``, parsed by ``parse(raw)``), and
    build the Python rows only when asked (:attr:`rows`): a converter with a columnar fast path never
    pays for them, and a batch sent to a worker process travels as bytes and is parsed there."""

    __slots__ = ("source", "unit", "positions", "_rows", "arrow", "raw", "parse", "draw_end")

    def __init__(self, source: str, unit: str, positions: Sequence[int], rows: list | None = None, arrow: Any = None,
                 raw: list | None = None, parse: Callable[[list], list] | None = None, draw_end: bool = True):
        self.source = source  # the file's display path
        self.unit = unit  # "line" | "row" | "item"
        self.positions = positions
        self._rows = rows
        self.arrow = arrow
        self.raw = raw
        self.parse = parse
        self.draw_end = draw_end  # the last batch of a block of DRAW_ROWS rows (or of the file)

    @property
    def rows(self) -> list:
        if self._rows is None:
            self._rows = self.arrow.to_pylist() if self.arrow is not None else self.parse(self.raw)
        return self._rows

    def row(self, i: int) -> Any:
        """Row ``i`` alone (cheap on a batch whose rows were never built)."""
        if self._rows is not None:
            return self._rows[i]
        if self.arrow is not None:
            return self.arrow.slice(i, 1).to_pylist()[0]
        return self.parse(self.raw[i:i + 1])[0]

    def __len__(self) -> int:
        return len(self.positions)

    def slice(self, start: int, end: int) -> "Batch":
        """Rows ``[start, end)`` of the batch (what is built of them stays unbuilt)."""
        return Batch(self.source, self.unit, self.positions[start:end],
                     rows=self._rows[start:end] if self._rows is not None else None,
                     arrow=self.arrow.slice(start, end - start) if self.arrow is not None and self._rows is None else None,
                     raw=self.raw[start:end] if self.raw is not None and self._rows is None else None, parse=self.parse,
                     draw_end=self.draw_end and end == len(self))

    def __getstate__(self) -> tuple:
        """Pickled without the built rows when they can be built again (arrow or raw lines)."""
        rows = self._rows if self.arrow is None and self.raw is None else None
        return (self.source, self.unit, self.positions, rows, self.arrow, self.raw, self.parse, self.draw_end)

    def __setstate__(self, state: tuple) -> None:
        self.source, self.unit, self.positions, self._rows, self.arrow, self.raw, self.parse, self.draw_end = state


class HashingFile(io.RawIOBase):
    """A file whose every byte read passes through a sha256: :attr:`sha256` is its digest once a
    read has met the end of the file (None before). Wrap it in :class:`io.BufferedReader`
    (:func:`open_hashing`) to read lines; pyarrow reads it as any Python file. The blocks are
    hashed in a thread (:class:`_Sha256Thread`) while the reader goes on with them, as the second
    read of earlier versions was: the hash stays off the path of the rows."""

    def __init__(self, path: str | os.PathLike):
        self._fh = open(path, "rb", buffering=0)
        self._sha = _Sha256Thread()
        self.sha256: str | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self._fh.read(len(buf))  # a block of its own: the thread hashes it while buf is reused
        n = len(data)
        if n:
            buf[:n] = data
            self._sha.update(data)
        elif len(buf) and self.sha256 is None:
            self.sha256 = self._sha.hexdigest()
        return n

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
            self._sha.stop()
        super().close()


class _Sha256Thread:
    """A sha256 fed block by block, in order, and computed in a thread; a few blocks queue at most
    (memory stays bounded), and hashlib releases the GIL on each."""

    def __init__(self):
        self._sha = hashlib.sha256()
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._sha.update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.stop()
        return self._sha.hexdigest()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def open_hashing(path: str | os.PathLike) -> io.BufferedReader:
    """``open(path, "rb")`` that hashes what it reads (``.raw.sha256`` once read to its end)."""
    return io.BufferedReader(HashingFile(path), buffer_size=BLOCK_BYTES)


class TableFile:
    """One JSONL/JSON/Parquet/CSV file. :attr:`sha256`: its digest, once a pass of
    :meth:`batches` asked to hash has read it to its end."""

    def __init__(self, path: str | os.PathLike, *, display: str | None = None, encoding: str | None = None):
        self.path = Path(path)
        self.display = display or str(path)
        self.fmt = self.path.suffix.lower()
        self.encoding = encoding
        self.sha256: str | None = None
        if self.fmt not in TABLE_EXTENSIONS:
            raise QfkError(
                f"{self.display}: unsupported file type '{self.fmt or '(none)'}'",
                f"convert it to one of {', '.join(TABLE_EXTENSIONS)}, or point at a folder of them",
            )
        check_regular_file(self.path, self.display)
        if self.fmt != ".parquet" and _utf8(self.encoding if self.fmt == ".csv" else None):
            with open(self.path, "rb") as fh:
                refuse_wide_encoding(fh.read(512), self.display)

    # -- counting ---------------------------------------------------------------------------
    def count(self) -> int:
        """Number of records :meth:`batches` will yield (cheap: metadata or a newline count)."""
        if self.fmt == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        if self.fmt == ".csv" or (self.fmt == ".json" and self._json_is_array()):
            return sum(len(b) for b in self.batches())
        return count_lines(self.path)

    # -- reading ----------------------------------------------------------------------------
    @property
    def hashed_when_read(self) -> bool:
        """Whether a pass of :meth:`batches` asked to hash gives :attr:`sha256` (all but Parquet)."""
        return self.fmt != ".parquet"

    def batches(self, batch_rows: int | None = None, *, hashed: bool = False) -> Iterator[Batch]:
        """The file's rows in batches; ``hashed``: hash the bytes read, setting :attr:`sha256` at
        the end of the file (not for Parquet: :attr:`hashed_when_read`)."""
        batch_rows = batch_rows or BATCH_ROWS
        if self.fmt == ".parquet":
            yield from self._parquet(batch_rows)
        elif self.fmt == ".csv":
            yield from self._csv(batch_rows, hashed)
        elif self.fmt == ".json" and self._json_is_array():
            yield from self._json_array(batch_rows, hashed)
        else:
            yield from self._jsonl(hashed)

    def _json_is_array(self) -> bool:
        with open(self.path, "rb") as fh:
            head = fh.read(4096)
        return head.removeprefix(BOM).lstrip()[:1] == b"["

    def _jsonl(self, hashed: bool = False) -> Iterator[Batch]:
        lineno = 0
        parse = partial(parse_jsonl_lines, self.encoding)
        with open_hashing(self.path) if hashed else open(self.path, "rb") as fh:
            first = True
            while True:
                lines = fh.readlines(BLOCK_BYTES)
                if not lines:
                    break
                if first:
                    lines[0] = lines[0].removeprefix(BOM)
                    first = False
                yield Batch(self.display, "line", range(lineno + 1, lineno + len(lines) + 1), raw=lines, parse=parse)
                lineno += len(lines)
            if hashed:
                self.sha256 = fh.raw.sha256

    def _json_array(self, batch_rows: int, hashed: bool = False) -> Iterator[Batch]:
        raw = self.path.read_bytes()
        if hashed:
            self.sha256 = hashlib.sha256(raw).hexdigest()
        try:
            data = orjson.loads(raw.removeprefix(BOM))
        except orjson.JSONDecodeError as exc:
            raise QfkError(f"{self.display}: not valid JSON ({exc})",
                           "fix the file, or save it as JSON Lines (one object per line) so that bad rows are rejected one by one") from None
        for start in range(0, len(data), batch_rows):
            chunk = data[start:start + batch_rows]
            rows = [r if type(r) is dict else BadRecord("not_an_object", f"expected a JSON object, got {type(r).__name__}", r)
                    for r in chunk]
            end = start + len(chunk)
            yield Batch(self.display, "item", range(start + 1, end + 1), rows, draw_end=draw_end(end, len(data)))

    def _parquet(self, batch_rows: int) -> Iterator[Batch]:
        import pyarrow.parquet as pq

        try:  # without pre-buffering: pyarrow would otherwise read the whole file ahead
            pf = pq.ParquetFile(self.path, pre_buffer=False)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for corrupt files
            raise QfkError(f"{self.display}: cannot read Parquet ({exc})", "check that the download finished (compare the file size or sha256)") from None
        pos, rows = 0, pf.metadata.num_rows
        for rb in pf.iter_batches(batch_size=batch_rows):
            end = pos + rb.num_rows
            yield Batch(self.display, "row", range(pos + 1, end + 1), arrow=rb, draw_end=draw_end(end, rows))
            pos = end

    def _csv(self, batch_rows: int, hashed: bool = False) -> Iterator[Batch]:
        import csv as _csv

        import pyarrow as pa
        import pyarrow.csv as pcsv

        enc = self.encoding or "utf-8"
        try:
            with open(self.path, newline="", encoding=enc if enc.lower() not in ("utf-8", "utf8") else "utf-8-sig") as fh:
                header = next(_csv.reader(fh), None)
        except UnicodeDecodeError as exc:
            raise QfkError(f"{self.display}: the start of the file is not valid {enc} ({exc.reason} at byte {exc.start})",
                           "pass the file's encoding, for example --encoding cp1252, or save it as UTF-8") from None
        if not header:
            return
        header[0] = header[0].lstrip("\ufeff")
        with open_hashing(self.path) if hashed else nullcontext(self.path) as src:
            try:
                reader = pcsv.open_csv(
                    src,
                    read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES, encoding=enc),
                    parse_options=pcsv.ParseOptions(newlines_in_values=True),
                    convert_options=pcsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                        strings_can_be_null=False),
                )
            except Exception as exc:
                raise QfkError(f"{self.display}: cannot read CSV ({exc})", "check the delimiter (comma) and quoting, or pass --encoding") from None
            pos = 0
            try:
                for rb in reader:
                    rows = rb.to_pylist()
                    if rows and header[0] not in rows[0]:  # BOM left on the first name by pyarrow
                        first = next(iter(rows[0]))
                        rows = [{(header[0] if k == first else k): v for k, v in r.items()} for r in rows]
                    yield Batch(self.display, "row", range(pos + 1, pos + len(rows) + 1), rows)
                    pos += len(rows)
            except Exception as exc:
                raise QfkError(f"{self.display}: CSV error after data row {pos} ({exc})", "fix the quoting near that row") from None
            if hashed:
                self.sha256 = src.raw.sha256


def _utf8(encoding: str | None) -> bool:
    return not encoding or encoding.replace("-", "").replace("_", "").lower() in ("utf8", "utf8sig")


def check_regular_file(path: Path, display: str) -> None:
    """Raise a :class:`QfkError` unless ``path`` is a regular file this process can read (a FIFO
    would block the reader forever; a link loop or a folder cannot be read as rows)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise QfkError(f"{display} does not exist", "check the path (a symbolic link to a missing file?)") from None
    except OSError as exc:
        raise QfkError(f"cannot open {display}: {exc.strerror}", "check the path (a symbolic link loop?)") from None
    if stat.S_ISDIR(mode):
        raise QfkError(f"{display} is a folder, not a data file", "point at the folder itself, or at one file in it")
    if not stat.S_ISREG(mode):
        raise QfkError(f"{display} is not a regular file (a FIFO, socket or device)", "copy the data into a regular file first")
    if not os.access(path, os.R_OK):
        raise QfkError(f"cannot read {display}: permission denied", f"check its permissions (ls -l {display})")


def draw_end(rows_so_far: int, rows: int) -> bool:
    """Whether a batch ending after ``rows_so_far`` of a file's ``rows`` closes a block of :data:`DRAW_ROWS`."""
    return rows_so_far % DRAW_ROWS == 0 or rows_so_far == rows


def bad_line(encoding: str | None, line: bytes, exc: Exception) -> BadRecord:
    """Why a JSON Lines line did not parse: blank, not in the file's encoding, lone CR line
    breaks (old Mac files: a raw CR can only stand between JSON values), or not JSON."""
    if not line.strip():
        return BadRecord("blank_line", "the line is empty", "")
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    enc = encoding if not _utf8(encoding) else "utf-8"
    try:
        line.decode(enc)
    except UnicodeDecodeError as err:
        return BadRecord("encoding_error", f"the line is not valid {enc}: {err.reason} at byte {err.start} "
                                           "(pass --encoding, or save the file as UTF-8)", text)
    if "\r" in text:
        return BadRecord("cr_line_breaks", CR_LINE_BREAKS, text)
    return BadRecord("invalid_json", f"not valid JSON: {exc}", text)


def parse_jsonl_lines(encoding: str | None, lines: list[bytes]) -> list:
    """JSON Lines (bytes, in ``encoding``; None: UTF-8) -> rows: a dict, or a :class:`BadRecord`
    for a blank line, invalid JSON or a value that is not an object."""
    loads = orjson.loads
    decode = None if _utf8(encoding) else encoding
    rows: list = []
    for line in lines:
        try:
            obj = loads(line.decode(decode) if decode else line)
        except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
            rows.append(bad_line(encoding, line, exc))
            continue
        if type(obj) is not dict:
            rows.append(BadRecord("not_an_object", f"expected a JSON object, got {type(obj).__name__}", obj))
        else:
            rows.append(obj)
    return rows


def count_lines(path: str | os.PathLike) -> int:
    """Lines in a file the way :meth:`TableFile.batches` counts them (a last line without a
    trailing newline counts too)."""
    n = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK_BYTES * 4):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def file_rows(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """``(position, row)`` of every row of a file, or of every file in a folder (sorted, not
    recursive), as LLaMA-Factory's loader sees them; a row that cannot be parsed is None."""
    for f in data_files(path):
        for batch in TableFile(f).batches():
            for pos, row in zip(batch.positions, batch.rows):
                yield pos, (None if type(row) is BadRecord else row)


def data_files(path: str | os.PathLike) -> list[Path]:
    """The files :func:`file_rows` reads, in its order."""
    path = Path(path)
    return sorted(x for x in path.iterdir() if x.is_file()) if path.is_dir() else [path]
