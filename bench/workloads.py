"""Seeded workload generators for the benchmarks (the project's own synthetic text, no third-party rows).

* ``finetome``: a FineTome-100k-like Parquet file: ``conversations`` of 2 to 20 messages
  ({from, value}; most rows one exchange, some with a leading system turn, a few with think blocks,
  tool turns or a broken turn order), ``source``, ``score`` (3.7 .. 5.2).
* ``medical``: krisfu/delicate_medical_r1_data-like JSON Lines in Chinese, with the real field
  lengths (question 16-126 characters, think 300-4,700, answer 100-600), a few rows with a
  literal backslash-n in the answer and a few without reasoning (rejected).
* ``moses``: an aligned Moses corpus ``corpus.en`` + ``corpus.zh_tw`` + ``corpus.ja`` (1% repeated
  lines, a few HTML entities and empty segments).

Workloads are cached under ``$QFK_BENCH_DIR`` (default ``/tmp/qfk-bench``), keyed by kind, size,
seed and :data:`VERSION`, so a benchmark run makes each file once:

  python bench/workloads.py finetome 100000       # prints the path
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path

import orjson

VERSION = 1
SOURCES = ["infini-instruct-top-500k", "WebInstructSub_axolotl", "ultrainteract_trajectories_sharegpt",
           "self-instruct-sharegpt", "glaive-function-calling-v2-sharegpt", "reasoning-sharegpt"]
WORDS = ("the a model data token answer reason step value check result first then because which train loss language "
         "translate question explain example number compute function return list string python code write read file "
         "error test output input class method variable loop condition true false sum product average total each "
         "every student teacher school history science energy water light planet earth cell protein gene market price "
         "cost profit growth rate percent year month day time speed distance force mass equation solve find show prove "
         "triangle circle area volume angle line point graph table chart report summary analysis method approach result "
         "important different similar simple complex large small high low new old good best better more less many few").split()
PUNCT = (".", ".", ".", ",", "?", ":", ";")
#: frequent Chinese characters (the text is random, its length and script are what matter)
HANZI = ("的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好"
         "都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现实点月话者理意病症治疗患者医生"
         "检查血压糖尿心脏肺肝肾脑胃肠骨皮肤药物剂量副作用诊断建议饮食运动睡眠压力感染炎症免疫疫苗发热咳嗽疼痛头晕恶心呕吐腹泻")
KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞだでどばびぶべぼ"
ZH_PUNCT = ("，", "，", "。", "、", "；", "：", "？")


def bench_dir() -> Path:
    return Path(os.environ.get("QFK_BENCH_DIR") or "/tmp/qfk-bench")


def _pool(rng: random.Random, n: int, make) -> list[str]:
    return [make() for _ in range(n)]


def _english_pool(rng: random.Random, n: int = 4096) -> list[str]:
    def sentence() -> str:
        words = rng.choices(WORDS, k=rng.randint(4, 18))
        if rng.random() < 0.2:
            words.append(str(rng.randint(0, 10_000)))
        return " ".join(words).capitalize() + rng.choice(PUNCT)
    return _pool(rng, n, sentence)


def _chinese_pool(rng: random.Random, n: int = 4096) -> list[str]:
    def sentence() -> str:
        return "".join(rng.choices(HANZI, k=rng.randint(6, 28))) + rng.choice(ZH_PUNCT)
    return _pool(rng, n, sentence)


def _japanese_pool(rng: random.Random, n: int = 4096) -> list[str]:
    def sentence() -> str:
        return "".join(rng.choices(HANZI + KANA * 2, k=rng.randint(8, 34))) + "。"
    return _pool(rng, n, sentence)


def _text(rng: random.Random, pool: list[str], chars: int, sep: str = " ") -> str:
    """Sentences from ``pool`` up to about ``chars`` characters."""
    out, n = [], 0
    while n < chars:
        s = pool[rng.randrange(len(pool))]
        out.append(s)
        n += len(s) + len(sep)
    return sep.join(out)


def _lognormal(rng: random.Random, median: float, lo: int, hi: int, sigma: float = 0.6) -> int:
    return max(lo, min(hi, int(rng.lognormvariate(math.log(median), sigma))))


# ---------------------------------------------------------------------------------------------
# FineTome-like Parquet
# ---------------------------------------------------------------------------------------------
def _conversation(rng: random.Random, pool: list[str]) -> list[dict]:
    msgs = []
    if rng.random() < 0.1:
        msgs.append({"from": "system", "value": _text(rng, pool, rng.randint(30, 300))})
    r = rng.random()
    pairs = 1 if r < 0.72 else 2 if r < 0.86 else rng.randint(3, 10 if msgs else 10)
    pairs = min(pairs, (20 - len(msgs)) // 2)
    tools = rng.random() < 0.03
    for p in range(pairs):
        msgs.append({"from": "human", "value": _text(rng, pool, _lognormal(rng, 300, 20, 4000))})
        if tools and p == 0:
            msgs.append({"from": "function_call", "value": '{"name": "lookup", "arguments": {"q": "value"}}'})
            msgs.append({"from": "observation", "value": '{"result": 42}'})
        answer = _text(rng, pool, _lognormal(rng, 900, 40, 8000))
        if rng.random() < 0.05:
            answer = f"<think>\n{_text(rng, pool, rng.randint(100, 800))}\n</think>\n\n{answer}"
        msgs.append({"from": "gpt", "value": answer})
    if rng.random() < 0.005:  # a broken turn order (rejected)
        msgs.append({"from": "human", "value": _text(rng, pool, 60)})
    return msgs


def make_finetome(path: Path, rows: int, seed: int = 0, row_group_size: int = 10_000) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    pool = _english_pool(rng)
    schema = pa.schema([("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
                        ("source", pa.string()), ("score", pa.float64())])
    tmp = path.with_name(path.name + ".part")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, row_group_size):
            n = min(row_group_size, rows - start)
            convs = [_conversation(rng, pool) for _ in range(n)]
            writer.write_table(pa.table({"conversations": convs, "source": [rng.choice(SOURCES) for _ in range(n)],
                                         "score": [round(3.7 + rng.random() * 1.5, 6) for _ in range(n)]}, schema=schema),
                               row_group_size=row_group_size)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------
# medical-like JSON Lines
# ---------------------------------------------------------------------------------------------
def _medical_row(rng: random.Random, pool: list[str]) -> dict:
    think = "\n\n".join(_text(rng, pool, c, sep="") for c in _split(rng, _lognormal(rng, 900, 300, 4700)))
    answer = _text(rng, pool, _lognormal(rng, 230, 100, 600, 0.4), sep="")
    if rng.random() < 0.03:
        answer = answer.replace("。", "。\\n", 2)
    row = {"instruction": _text(rng, pool, _lognormal(rng, 36, 8, 212), sep=""),
           "question": _text(rng, pool, _lognormal(rng, 55, 16, 126, 0.35), sep="") + "？",
           "think": think + "\n", "answer": answer, "metrics": {"quality_f1": round(0.9 + rng.random() * 0.1, 6)}}
    if rng.random() < 0.002:
        row["think"] = ""
    return row


def _split(rng: random.Random, chars: int) -> list[int]:
    parts = rng.randint(1, max(1, chars // 300))
    return [max(20, chars // parts)] * parts


def make_medical(path: Path, rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    pool = _chinese_pool(rng)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        for start in range(0, rows, 4096):
            fh.write(b"".join(orjson.dumps(_medical_row(rng, pool), option=orjson.OPT_APPEND_NEWLINE)
                              for _ in range(min(4096, rows - start))))
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------
# Moses aligned corpus
# ---------------------------------------------------------------------------------------------
def make_moses(folder: Path, lines: int, seed: int = 0) -> Path:
    from qwen_factory_kit.scripts import to_traditional

    rng = random.Random(seed)
    # corpus.zh_tw holds Traditional Chinese (qfk convert moses rejects Simplified zh_TW lines)
    en_pool, zh_pool, ja_pool = _english_pool(rng), [to_traditional(s) for s in _chinese_pool(rng)], _japanese_pool(rng)
    tmp = folder.with_name(folder.name + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    names = ("corpus.en", "corpus.zh_tw", "corpus.ja")
    handles = [open(tmp / n, "w", encoding="utf-8", newline="\n") for n in names]
    recent: list[tuple[str, str, str]] = []
    try:
        for start in range(0, lines, 8192):
            blocks: list[list[str]] = [[], [], []]
            for _ in range(min(8192, lines - start)):
                if recent and rng.random() < 0.01:
                    triple = recent[rng.randrange(len(recent))]
                else:
                    k = rng.randint(1, 2)
                    triple = (" ".join(rng.choices(en_pool, k=k)), "".join(rng.choices(zh_pool, k=k)),
                              "".join(rng.choices(ja_pool, k=k)))
                    if rng.random() < 0.002:
                        triple = (triple[0].replace(" ", " &amp; ", 1), triple[1], triple[2])
                    if rng.random() < 0.001:
                        triple = (triple[0], "", triple[2])
                    if len(recent) < 1000:
                        recent.append(triple)
                    else:
                        recent[rng.randrange(1000)] = triple
                for b, t in zip(blocks, triple):
                    b.append(t)
            for h, b in zip(handles, blocks):
                h.write("\n".join(b) + "\n")
    finally:
        for h in handles:
            h.close()
    tmp.replace(folder)
    return folder


MAKERS = {"finetome": (make_finetome, ".parquet"), "medical": (make_medical, ".jsonl"), "moses": (make_moses, "")}


def workload(kind: str, size: int, seed: int = 0, **kw) -> Path:
    """The cached workload ``kind`` of ``size`` rows (lines), made when missing."""
    make, ext = MAKERS[kind]
    extra = "".join(f"-{k}{v}" for k, v in sorted(kw.items()))
    path = bench_dir() / f"{kind}-{size}-s{seed}{extra}-v{VERSION}{ext}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path, size, seed, **kw)
    return path


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size


if __name__ == "__main__":
    kind, size = sys.argv[1], int(sys.argv[2])
    p = workload(kind, size)
    print(json.dumps({"path": str(p), "bytes": size_of(p)}))
