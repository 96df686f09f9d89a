"""``qfk lint TRAIN --against EVAL``: 1,000 eval rows against a FineTome-like training set, with
near duplicates, against the exact check and the read of both files, in the same run.

Training rows: the ``finetome`` workload (:mod:`workloads`, 100,000 rows by default), written as
LLaMA-Factory ShareGPT JSON Lines. Eval rows: ``--eval`` rows, a fifth of them copied from
training rows (half exact, half near: a word added to the question, the answer's last sentence
cut), the rest fresh conversations of another seed.

Contenders (each the best of ``--repeat``, interleaved):
  read    both files read and parsed row by row (``lint.iter_rows``): the floor
  exact   the exact check alone: every row's key (normalised prompt and answer, think block
          aside), the smaller side's in a set
  qfk     ``leaks.overlap``: exact, reversed and near duplicates (n-grams, an index of the
          smaller side, the larger side in batches)

  python bench/leak_bench.py                      # 1,000 eval rows against 100,000
  python bench/leak_bench.py --train 20000 --repeat 1 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from workloads import bench_dir, workload  # noqa: E402

TARGET_S = 30.0


def files(train: int, n_eval: int, seed: int = 0) -> tuple[Path, Path, int]:
    """(training JSONL, eval JSONL, planted copies) of the workload, cached."""
    import pyarrow.parquet as pq

    folder = bench_dir() / f"leak-{train}-{n_eval}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    train_path, eval_path = folder / "train.jsonl", folder / "eval.jsonl"
    rng = random.Random(seed)
    planted = n_eval // 5
    if not train_path.exists() or not eval_path.exists():
        picked, kept = set(rng.sample(range(train), planted)), []
        with open(train_path.with_suffix(".part"), "wb") as out:
            i = 0
            for batch in pq.ParquetFile(workload("finetome", train)).iter_batches(columns=["conversations"]):
                for conv in batch.column(0).to_pylist():
                    out.write(orjson.dumps({"conversations": conv}, option=orjson.OPT_APPEND_NEWLINE))
                    if i in picked:
                        kept.append(conv)
                    i += 1
        train_path.with_suffix(".part").replace(train_path)
        fresh = workload("finetome", n_eval, seed=seed + 1)
        rows = [{"conversations": c} for c in pq.read_table(fresh, columns=["conversations"]).column(0).to_pylist()]
        for k, conv in enumerate(kept):
            if k % 2:  # a near copy
                conv = [dict(m) for m in conv]
                users = [m for m in conv if m["from"] == "human"]
                users[-1]["value"] += " Please"
                gpt = [m for m in conv if m["from"] == "gpt"][-1]
                cut = gpt["value"].rsplit(". ", 1)[0]
                gpt["value"] = cut if len(cut) > len(gpt["value"]) // 2 else gpt["value"]
            rows[k] = {"conversations": conv}
        eval_path.write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows))
    return train_path, eval_path, planted


def read(train: Path, ev: Path) -> dict:
    from qwen_factory_kit.lint import iter_rows

    return {"rows": sum(1 for _ in iter_rows(train)) + sum(1 for _ in iter_rows(ev))}


def exact(train: Path, ev: Path) -> dict:
    from qwen_factory_kit.leaks import row_key
    from qwen_factory_kit.lint import iter_rows, layout_from

    lay = layout_from({"formatting": "sharegpt"}, None)
    keys = {row_key(r, lay) for _, r in iter_rows(ev)}
    return {"leaked": sum(row_key(r, lay) in keys for _, r in iter_rows(train))}


def qfk(train: Path, ev: Path) -> dict:
    from qwen_factory_kit.leaks import overlap

    ov = overlap(str(train), str(ev))
    return {"b_shared": ov.b_shared, "b_near": ov.b_near, "count": ov.count}


CONTENDERS = {"read": read, "exact": exact, "qfk": qfk}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=100_000)
    ap.add_argument("--eval", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    train, ev, planted = files(args.train, args.eval)
    best: dict[str, float] = {}
    result: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name, fn in CONTENDERS.items():
            started = time.perf_counter()
            result[name] = fn(train, ev)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    tracemalloc.start()
    qfk(train, ev)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    report = {"train_rows": args.train, "train_mb": round(train.stat().st_size / 1e6, 1), "eval_rows": args.eval,
              "planted": planted, "seconds": {k: round(v, 2) for k, v in best.items()},
              "ratio_to_read": {k: round(v / best["read"], 2) for k, v in best.items()},
              "qfk_over_exact": round(best["qfk"] / best["exact"], 2), "found": result,
              "python_heap_peak_mb": round(peak / 1e6, 1), "target_s": TARGET_S, "within_target": best["qfk"] < TARGET_S}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.eval} eval rows ({planted} planted: half exact, half near) against {args.train:,} training rows "
          f"({report['train_mb']} MB), best of {args.repeat}")
    for name in CONTENDERS:
        print(f"  {name:6s} {best[name]:7.2f} s   {report['ratio_to_read'][name]:5.2f}x read   {result[name]}")
    print(f"  qfk/exact {report['qfk_over_exact']}x; Python heap peak {report['python_heap_peak_mb']} MB; "
          f"target {TARGET_S:.0f} s: {'met' if report['within_target'] else 'MISSED'}")


if __name__ == "__main__":
    main()
