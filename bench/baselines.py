"""Baselines the conversion benchmarks compare qfk with, one pair per workload (:mod:`workloads`).

* ``floor``: the I/O floor, single process: pyarrow record batches (Parquet) or lines (JSON
  Lines, Moses text) in, ``orjson`` of the rows with no logic (Moses: the six direction rows of a
  line with a fixed instruction), each line written at once to one 1 MiB-buffered file (faster
  than collecting a batch's lines: orjson gives every line a 4 KiB buffer).
* ``floor_batched``: the floor with a batch's lines joined and written together (the shape of the
  issue's floor; slower, as each line keeps its 4 KiB buffer until the batch is written).
* ``naive``: the tutorials' script: pandas read + ``iterrows`` + ``json.dumps`` per row, appended
  to a list, written at the end.
* ``floor_integrity``: the floor with the integrity work every conversion must do: the input read
  once and hashed as it is read (sha256, 4 MiB blocks; Parquet, whose bytes pyarrow does not read
  in order, hashed by a read of its own), the output hashed as it is written (1 MiB buffers) and
  fsynced before it is closed.

Each function takes the workload path and an output path and returns the source rows it read.
"""

from __future__ import annotations

import hashlib
import json
import os
from itertools import permutations
from pathlib import Path

import orjson

EMPTY = "<think>\n\n</think>\n\n"
SYSTEM = "You are a professional translator. Translate the user's text faithfully and fluently, and reply with the translation only."
MOSES_LANGS = (("en", "corpus.en"), ("zh_TW", "corpus.zh_tw"), ("ja", "corpus.ja"))
_NL = orjson.OPT_APPEND_NEWLINE


class _IntegrityOut:
    """The output of the integrity floor: lines gathered in a 1 MiB buffer, each buffer hashed and
    written, the file fsynced at the end."""

    def __init__(self, path: Path):
        self.fh = open(path, "wb", buffering=0)
        self.sha = hashlib.sha256()
        self.buf = bytearray()

    def write(self, line: bytes) -> None:
        self.buf += line
        if len(self.buf) >= 1 << 20:
            self._flush()

    def _flush(self) -> None:
        self.sha.update(self.buf)
        self.fh.write(self.buf)
        self.buf.clear()

    def close(self) -> str:
        self._flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return self.sha.hexdigest()


def _hashed_lines(path: Path, sha):
    """The lines of a file (without their newline), its bytes fed to ``sha`` as they are read."""
    carry = b""
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(1 << 22):
            sha.update(block)
            lines = (carry + block).split(b"\n")
            carry = lines.pop()
            yield from lines
    if carry:
        yield carry


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(1 << 22):
            sha.update(block)
    return sha.hexdigest()


# ---------------------------------------------------------------------------------------------
# FineTome-like Parquet
# ---------------------------------------------------------------------------------------------
def finetome_floor(src: Path, out: Path) -> int:
    import pyarrow.parquet as pq

    n = 0
    dumps = orjson.dumps
    with open(out, "wb", buffering=1 << 20) as fh:
        write = fh.write
        for rb in pq.ParquetFile(src).iter_batches(batch_size=4096):
            rows = rb.to_pylist()
            for r in rows:
                write(dumps(r, option=_NL))
            n += len(rows)
    return n


def finetome_floor_batched(src: Path, out: Path) -> int:
    import pyarrow.parquet as pq

    n = 0
    with open(out, "wb", buffering=1 << 20) as fh:
        for rb in pq.ParquetFile(src).iter_batches(batch_size=4096):
            rows = rb.to_pylist()
            fh.write(b"".join([orjson.dumps(r, option=_NL) for r in rows]))
            n += len(rows)
    return n


def finetome_floor_integrity(src: Path, out: Path) -> int:
    import pyarrow.parquet as pq

    n = 0
    dumps = orjson.dumps
    _sha256_file(src)
    fh = _IntegrityOut(out)
    write = fh.write
    for rb in pq.ParquetFile(src).iter_batches(batch_size=4096):
        rows = rb.to_pylist()
        for r in rows:
            write(dumps(r, option=_NL))
        n += len(rows)
    fh.close()
    return n


def _plain_chat(conv) -> dict:
    system, turns = "", []
    for m in conv:
        if m["from"] == "system":
            system = m["value"]
        else:
            turns.append(m["value"])
    out = turns[-1]
    if "<think>" not in out:
        out = EMPTY + out.strip()
    history = [[turns[j], turns[j + 1]] for j in range(0, len(turns) - 2, 2)]
    return {"instruction": turns[-2] if len(turns) > 1 else "", "input": "", "output": out, "system": system, "history": history}


def finetome_naive(src: Path, out: Path) -> int:
    import pandas as pd

    lines = []
    for _, row in pd.read_parquet(src).iterrows():
        lines.append(json.dumps(_plain_chat([dict(m) for m in row["conversations"]]), ensure_ascii=False))
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


# ---------------------------------------------------------------------------------------------
# medical-like JSON Lines
# ---------------------------------------------------------------------------------------------
def medical_floor(src: Path, out: Path) -> int:
    n = 0
    loads, dumps = orjson.loads, orjson.dumps
    with open(src, "rb") as fin, open(out, "wb", buffering=1 << 20) as fh:
        write = fh.write
        while lines := fin.readlines(1 << 20):
            for line in lines:
                write(dumps(loads(line), option=_NL))
            n += len(lines)
    return n


def medical_floor_batched(src: Path, out: Path) -> int:
    n = 0
    loads, dumps = orjson.loads, orjson.dumps
    with open(src, "rb") as fin, open(out, "wb", buffering=1 << 20) as fh:
        while lines := fin.readlines(1 << 20):
            fh.write(b"".join([dumps(loads(line), option=_NL) for line in lines]))
            n += len(lines)
    return n


def medical_floor_integrity(src: Path, out: Path) -> int:
    n = 0
    loads, dumps = orjson.loads, orjson.dumps
    fh = _IntegrityOut(out)
    write = fh.write
    for line in _hashed_lines(src, hashlib.sha256()):
        write(dumps(loads(line), option=_NL))
        n += 1
    fh.close()
    return n


def medical_naive(src: Path, out: Path) -> int:
    import pandas as pd

    lines = []
    for _, row in pd.read_json(src, lines=True).iterrows():
        output = f"<think>\n{str(row['think']).strip()}\n</think>\n\n{str(row['answer']).strip()}"
        lines.append(json.dumps({"instruction": row["question"], "input": "", "output": output}, ensure_ascii=False))
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


# ---------------------------------------------------------------------------------------------
# Moses aligned corpus (three languages: six directions a line)
# ---------------------------------------------------------------------------------------------
def moses_floor(src: Path, out: Path) -> int:
    n = 0
    pairs = list(permutations(range(len(MOSES_LANGS)), 2))
    instructions = [f"Translate <{MOSES_LANGS[a][0]}> to <{MOSES_LANGS[b][0]}>." for a, b in pairs]
    handles = [open(Path(src) / name, "rb") for _, name in MOSES_LANGS]
    dumps = orjson.dumps
    try:
        with open(out, "wb", buffering=1 << 20) as fh:
            write = fh.write
            for raw in zip(*handles):
                texts = [r.decode("utf-8").rstrip("\n") for r in raw]
                for ins, (a, b) in zip(instructions, pairs):
                    write(dumps({"instruction": ins, "input": texts[a], "output": EMPTY + texts[b], "system": SYSTEM},
                                option=_NL))
                n += 1
    finally:
        for h in handles:
            h.close()
    return n


def moses_floor_batched(src: Path, out: Path) -> int:
    n = 0
    pairs = list(permutations(range(len(MOSES_LANGS)), 2))
    instructions = [f"Translate <{MOSES_LANGS[a][0]}> to <{MOSES_LANGS[b][0]}>." for a, b in pairs]
    handles = [open(Path(src) / name, "rb") for _, name in MOSES_LANGS]
    dumps = orjson.dumps
    try:
        with open(out, "wb", buffering=1 << 20) as fh:
            buf: list[bytes] = []
            for raw in zip(*handles):
                texts = [r.decode("utf-8").rstrip("\n") for r in raw]
                for ins, (a, b) in zip(instructions, pairs):
                    buf.append(dumps({"instruction": ins, "input": texts[a], "output": EMPTY + texts[b], "system": SYSTEM},
                                     option=_NL))
                n += 1
                if len(buf) >= 24576:
                    fh.write(b"".join(buf))
                    buf = []
            fh.write(b"".join(buf))
    finally:
        for h in handles:
            h.close()
    return n


def moses_floor_integrity(src: Path, out: Path) -> int:
    n = 0
    pairs = list(permutations(range(len(MOSES_LANGS)), 2))
    instructions = [f"Translate <{MOSES_LANGS[a][0]}> to <{MOSES_LANGS[b][0]}>." for a, b in pairs]
    dumps = orjson.dumps
    fh = _IntegrityOut(out)
    write = fh.write
    for raw in zip(*(_hashed_lines(Path(src) / name, hashlib.sha256()) for _, name in MOSES_LANGS)):
        texts = [r.decode("utf-8") for r in raw]
        for ins, (a, b) in zip(instructions, pairs):
            write(dumps({"instruction": ins, "input": texts[a], "output": EMPTY + texts[b], "system": SYSTEM}, option=_NL))
        n += 1
    fh.close()
    return n


def moses_naive(src: Path, out: Path) -> int:
    import pandas as pd

    cols = {lang: (Path(src) / name).read_text(encoding="utf-8").split("\n")[:-1] for lang, name in MOSES_LANGS}
    lines = []
    for _, row in pd.DataFrame(cols).iterrows():
        for a, b in permutations([lang for lang, _ in MOSES_LANGS], 2):
            lines.append(json.dumps({"instruction": f"Translate <{a}> to <{b}>.", "input": row[a].strip(),
                                     "output": EMPTY + row[b].strip(), "system": SYSTEM}, ensure_ascii=False))
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(cols["en"])


BASELINES = {
    "finetome": {"floor": finetome_floor, "floor_batched": finetome_floor_batched, "naive": finetome_naive,
                 "floor_integrity": finetome_floor_integrity},
    "medical": {"floor": medical_floor, "floor_batched": medical_floor_batched, "naive": medical_naive,
                "floor_integrity": medical_floor_integrity},
    "moses": {"floor": moses_floor, "floor_batched": moses_floor_batched, "naive": moses_naive,
              "floor_integrity": moses_floor_integrity},
}
#: the qfk converter of each workload
CONVERTER = {"finetome": "sharegpt", "medical": "medical-r1", "moses": "moses"}
