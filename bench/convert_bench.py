"""Conversion throughput against an I/O floor measured in the same run.

Workload: a FineTome-like Parquet file (default 100,000 rows: ShareGPT `conversations` with 1 to 4
user/assistant pairs, some system turns and think blocks, `source`, `score`).

Contenders (each writes JSON Lines to a temp folder; best of --repeat runs):
  floor     pyarrow read by record batches + orjson write of the same rows, no logic
  qfk       qwen_factory_kit's sharegpt converter (run_conversion, no progress bar)
  loop      a plain single-process loop: read_table().to_pylist(), per-row conversion, json.dumps
  pandas    the tutorials' pandas script: read_parquet + iterrows + json.dump

Prints rows/s and each contender's ratio to the floor (higher is better; 1.0 = as fast as the floor).

  python bench/convert_bench.py                 # 100k rows
  python bench/convert_bench.py --rows 20000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

SOURCES = ["infini-instruct-top-500k", "WebInstructSub_axolotl", "ultrainteract_trajectories_sharegpt", "self-instruct-sharegpt"]
WORDS = ("the model data token answer reason step value check result first then because which train loss "
         "language translate question explain example number compute").split()


def make_workload(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    convs, sources, scores = [], [], []
    for i in range(rows):
        msgs = []
        if rng.random() < 0.1:
            msgs.append({"from": "system", "value": text(5, 20)})
        for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
            msgs.append({"from": "human", "value": text(10, 80)})
            answer = text(40, 300)
            if rng.random() < 0.05:
                answer = f"<think>\n{text(20, 60)}\n</think>\n\n{answer}"
            msgs.append({"from": "gpt", "value": answer})
        convs.append(msgs)
        sources.append(rng.choice(SOURCES))
        scores.append(3.7 + rng.random() * 1.5)
    table = pa.table({
        "conversations": pa.array(convs, type=pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        "source": sources,
        "score": pa.array(scores, type=pa.float64()),
    })
    pq.write_table(table, path, row_group_size=10_000)


def floor(src: Path, out: Path) -> int:
    n = 0
    with open(out, "wb") as fh:
        for rb in pq.ParquetFile(src).iter_batches(batch_size=4096):
            rows = rb.to_pylist()
            fh.write(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows))
            n += len(rows)
    return n


def qfk(src: Path, out: Path) -> int:
    from qwen_factory_kit.convert import convert

    res = convert("sharegpt", str(src), output=str(out))
    return res.read


def _convert_plain(conv):
    system = ""
    turns = []
    for m in conv:
        if m["from"] == "system":
            system = m["value"]
        else:
            turns.append(m["value"])
    out = turns[-1]
    if "<think>" not in out:
        out = "<think>\n\n</think>\n\n" + out.strip()
    history = [[turns[j], turns[j + 1]] for j in range(0, len(turns) - 2, 2)]
    return {"instruction": turns[-2], "input": "", "output": out, "system": system, "history": history}


def loop(src: Path, out: Path) -> int:
    rows = pq.read_table(src).to_pylist()
    with open(out, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(_convert_plain(r["conversations"]), ensure_ascii=False) + "\n")
    return len(rows)


def pandas_script(src: Path, out: Path) -> int:
    import pandas as pd

    df = pd.read_parquet(src)
    n = 0
    with open(out, "w", encoding="utf-8") as fh:
        for _, row in df.iterrows():
            conv = [dict(m) for m in row["conversations"]]
            json.dump(_convert_plain(conv), fh, ensure_ascii=False)
            fh.write("\n")
            n += 1
    return n


CONTENDERS = {"floor": floor, "qfk": qfk, "loop": loop, "pandas": pandas_script}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", choices=list(CONTENDERS))
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "finetome_like.parquet"
        t0 = time.perf_counter()
        make_workload(src, args.rows)
        print(f"workload: {args.rows} rows, {src.stat().st_size / 1e6:.1f} MB parquet (made in {time.perf_counter() - t0:.1f}s)", file=sys.stderr)
        results = {}
        names = args.only or list(CONTENDERS)
        if "floor" not in names:
            names = ["floor", *names]
        for rep in range(args.repeat):
            for name in names:  # interleaved, so machine noise hits every contender alike
                out = tmp / f"{name}.jsonl"
                t = time.perf_counter()
                n = CONTENDERS[name](src, out)
                dt = time.perf_counter() - t
                assert n == args.rows, (name, n)
                results[name] = min(results.get(name, float("inf")), dt)
        base = results["floor"]
        table = {name: {"seconds": round(dt, 3), "rows_per_s": round(args.rows / dt), "ratio_to_floor": round(base / dt, 2)}
                 for name, dt in results.items()}
        if args.json:
            print(json.dumps(table, indent=2))
        else:
            print(f"{'contender':<10} {'seconds':>8} {'rows/s':>10} {'x floor':>8}")
            for name, r in table.items():
                print(f"{name:<10} {r['seconds']:>8.2f} {r['rows_per_s']:>10} {r['ratio_to_floor']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
