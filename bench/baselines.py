"""Baselines the conversion benchmarks compare qfk with, one pair per workload (:mod:`workloads`).

* ``floor``: the I/O floor, single process: pyarrow record batches (Parquet) or lines (JSON
  Lines, Moses text) in, ``orjson`` of the rows with no logic (Moses: the six direction rows of a
  line with a fixed instruction), each line written at once to one 1 MiB-buffered file (faster
  than collecting a batch's lines: orjson gives every line a 4 KiB buffer).
* ``floor_batched``: the floor with a batch's lines joined and written together (the shape of the
  issue's floor; slower, as each line keeps its 4 KiB buffer until the batch is written).
* ``naive``: the tutorials' script: pandas read + ``iterrows`` + ``json.dumps`` per row, appended
  to a list, written at the end.

Each function takes the workload path and an output path and returns the source rows it read.
"""

from __future__ import annotations

import json
from itertools import permutations
from pathlib import Path

import orjson

EMPTY = "<think>\n\n</think>\n\n"
SYSTEM = "You are a professional translator. Translate the user's text faithfully and fluently, and reply with the translation only."
MOSES_LANGS = (("en", "corpus.en"), ("zh_TW", "corpus.zh_tw"), ("ja", "corpus.ja"))
_NL = orjson.OPT_APPEND_NEWLINE


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
    "finetome": {"floor": finetome_floor, "floor_batched": finetome_floor_batched, "naive": finetome_naive},
    "medical": {"floor": medical_floor, "floor_batched": medical_floor_batched, "naive": medical_naive},
    "moses": {"floor": moses_floor, "floor_batched": moses_floor_batched, "naive": moses_naive},
}
#: the qfk converter of each workload
CONVERTER = {"finetome": "sharegpt", "medical": "medical-r1", "moses": "moses"}
