"""Token statistics (``qfk stats``) against a batch-tokenization floor measured in the same run.

Workload: the FineTome-like Parquet file of :mod:`workloads`, converted by ``qfk convert sharegpt``
(Alpaca with history/system) and cut to ``--rows`` rows.

Contenders (best of --repeat runs, interleaved):
  floor     each row rendered in Qwen3's chat format with f-strings, then ONE Rust ``encode_batch``
            of all rows (no LLaMA-Factory, not exact: the lower bound of any exact method)
  qfk       ``tokens.file_stats(cache=False)``: LLaMA-Factory's converter and template render each
            row with a recording tokenizer, one batched tokenizer call per 1,024 rows
  perrow    the previous method: LLaMA-Factory's processor encodes each row on its own
  cached    ``tokens.file_stats`` again with its cache filled (the second ``recipe check``)

The lengths of ``qfk`` and ``perrow`` are compared on every row (they must be equal).

  python bench/stats_bench.py --rows 20000
  python bench/stats_bench.py --rows 2000 --repeat 1 --only qfk cached
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workloads import bench_dir, workload  # noqa: E402

ENTRY = {"formatting": "alpaca", "ranking": False,
         "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}}
EMPTY = "<think>\n\n</think>\n\n"


def stats_file(rows: int) -> Path:
    """The converted FineTome-like rows (cached next to the workloads)."""
    out = bench_dir() / f"stats-finetome-{rows}.jsonl"
    if not out.exists():
        from qwen_factory_kit.convert import convert

        src = workload("finetome", max(rows * 2, 1000))
        convert("sharegpt", str(src), output=str(out), limit=rows + rows // 10)
        with open(out, "rb") as fh:
            lines = fh.readlines()[:rows]
        out.write_bytes(b"".join(lines))
    return out


def _render(row: dict) -> str:
    parts = []
    if row.get("system"):
        parts.append(f"<|im_start|>system\n{row['system']}<|im_end|>\n")
    for user, answer in row.get("history") or []:
        parts.append(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n")
    prompt = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
    parts.append(f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{row['output']}<|im_end|>\n")
    return "".join(parts)


def floor(path: Path, tok) -> list[int]:
    import orjson

    with open(path, "rb") as fh:
        texts = [_render(orjson.loads(line)) for line in fh]
    return [len(e.ids) for e in tok._tokenizer.encode_batch(texts, add_special_tokens=False)]


def qfk(path: Path, tok) -> list[int]:
    from qwen_factory_kit.tokens import file_stats

    return [r.total for r in file_stats(path, ENTRY, tokenizer=tok, cutoff_len=2048, cache=False).rows]


def perrow(path: Path, tok) -> list[int]:
    from qwen_factory_kit.io.readers import file_rows
    from qwen_factory_kit.tokens import Encoder

    enc = Encoder(ENTRY, tokenizer=tok, cutoff_len=2048)
    return [len(enc.encode(row, limit=False)[0]) for _, row in file_rows(path)]


def cached(path: Path, tok) -> list[int]:
    from qwen_factory_kit.tokens import file_stats

    return [r.total for r in file_stats(path, ENTRY, tokenizer=tok, cutoff_len=2048).rows]


CONTENDERS = {"floor": floor, "qfk": qfk, "perrow": perrow, "cached": cached}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", choices=list(CONTENDERS))
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    from qwen_factory_kit.lfbridge import load_tokenizer
    from qwen_factory_kit.tokens import file_stats

    path = stats_file(args.rows)
    print(f"workload: {args.rows} rows, {path.stat().st_size / 1e6:.1f} MB ({path})", file=sys.stderr)
    tok = load_tokenizer()
    names = args.only or list(CONTENDERS)
    names = ["floor", *[n for n in names if n != "floor"]]
    with tempfile.TemporaryDirectory() as cache:
        os.environ["QFK_CACHE_DIR"] = cache
        if "cached" in names:
            file_stats(path, ENTRY, tokenizer=tok, cutoff_len=2048)  # fill the cache
        results, lengths = {}, {}
        for _ in range(args.repeat):
            for name in names:  # interleaved, so machine noise hits every contender alike
                t = time.perf_counter()
                lengths[name] = CONTENDERS[name](path, tok)
                results[name] = min(results.get(name, float("inf")), time.perf_counter() - t)
    base = results["floor"]
    table = {name: {"seconds": round(dt, 3), "rows_per_s": round(args.rows / dt), "ratio_to_floor": round(base / dt, 2)}
             for name, dt in results.items()}
    same = {n: lengths[n] == lengths["qfk"] for n in ("perrow", "cached") if n in lengths and "qfk" in lengths}
    if args.json:
        print(json.dumps({"rows": args.rows, "contenders": table, "lengths_equal_to_qfk": same}, indent=2))
    else:
        print(f"{'contender':<10} {'seconds':>8} {'rows/s':>10} {'x floor':>8}")
        for name, r in table.items():
            print(f"{name:<10} {r['seconds']:>8.2f} {r['rows_per_s']:>10} {r['ratio_to_floor']:>8.2f}")
        for n, ok in same.items():
            print(f"lengths of {n} equal to qfk's on every row: {ok}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
