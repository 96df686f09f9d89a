"""``--near-dedup``: which MinHash implementation, how fast, and how much memory the index holds.

Part 1, signatures: the rows of the ``medical`` workload (:mod:`workloads`: Chinese question and
answer, the text ``--near-dedup`` compares: 5-character shingles, about 300 a row), the shingle
hashes made once by :func:`qwen_factory_kit.ngrams.batch_grams` and signed (128 permutations) by:

  numpy        qwen_factory_kit.minhash.minimums: (a*x + b) mod 2**32 over murmur-mixed shingles,
               a (128 x 8192) block at a time (what the kit uses)
  rensa        rensa.RMinHash.digest_matrix_from_flat_token_hashes on the same uint64 hashes (Rust),
               plus what using its result costs (to_rows() -> a numpy array); "rensa-core": without that
  datasketch   datasketch.MinHash(128).update_batch over the shingles as 8-byte strings (on --ds-rows rows)

each timed alone and with the shingling (end to end), best of --repeat, interleaved, in rows/s and
as ratios to numpy in the same run. A library missing from the environment is reported as such.

Part 2, the index: :class:`qwen_factory_kit.minhash.Index` fed --index-rows rows of random
signatures (no near duplicates: every row kept) in batches of 1,024, each looked up then kept, as
a conversion does; the memory the runs hold per row, the Python heap peak (tracemalloc, which
numpy reports to) and the time.

  python bench/neardup_bench.py                                  # 20,000 rows; an index of 100,000
  python bench/neardup_bench.py --rows 5000 --index-rows 1000000 --repeat 2 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from workloads import workload  # noqa: E402

from qwen_factory_kit import minhash  # noqa: E402
from qwen_factory_kit.ngrams import batch_grams  # noqa: E402

SEED = 42


def texts(rows: int) -> list[str]:
    """Question and answer of the first ``rows`` rows of the medical workload."""
    out = []
    with open(workload("medical", max(rows, 1000)), "rb") as fh:
        for line in fh:
            row = orjson.loads(line)
            out.append(f"{row.get('question') or ''}\n{row.get('answer') or ''}")
            if len(out) == rows:
                break
    return out


def shingles(batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
    g, o = batch_grams(batch, minhash.SHINGLE, distinct=False)
    order = np.argsort(o, kind="stable")
    return g[order], o[order]


def numpy_sign(g: np.ndarray, o: np.ndarray, rows: int) -> np.ndarray:
    return minhash.minimums(g, o, rows).sig


def _offsets(o: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(np.bincount(o, minlength=rows)))).astype(np.uint64)


def rensa_sign(g: np.ndarray, o: np.ndarray, rows: int) -> np.ndarray:
    import rensa

    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(g, _offsets(o, rows), minhash.PERMS, SEED)
    return np.array(matrix.to_rows(), dtype=np.uint32)


def rensa_core(g: np.ndarray, o: np.ndarray, rows: int):
    import rensa

    return rensa.RMinHash.digest_matrix_from_flat_token_hashes(g, _offsets(o, rows), minhash.PERMS, SEED)


def datasketch_sign(g: np.ndarray, o: np.ndarray, rows: int) -> np.ndarray:
    from datasketch import MinHash

    bounds = _offsets(o, rows).astype(np.int64)
    out = np.empty((rows, minhash.PERMS), dtype=np.uint64)
    for r in range(rows):
        m = MinHash(num_perm=minhash.PERMS, seed=SEED)
        m.update_batch([int(v).to_bytes(8, "little") for v in g[bounds[r]: bounds[r + 1]]])
        out[r] = m.hashvalues
    return out


SIGNERS = {"numpy": numpy_sign, "rensa": rensa_sign, "rensa-core": rensa_core, "datasketch": datasketch_sign}


def available(name: str) -> bool:
    try:
        __import__({"numpy": "numpy", "rensa": "rensa", "rensa-core": "rensa", "datasketch": "datasketch"}[name])
        return True
    except ImportError:
        return False


def version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version as v

    try:
        return v(module)
    except PackageNotFoundError:
        return "missing"


def signatures(rows: int, ds_rows: int, repeat: int, batch: int = 1024) -> dict:
    """Rows/s of each signer, alone and with the shingling, best of ``repeat``, on batches of ``batch`` rows."""
    data = texts(rows)
    batches = [data[i: i + batch] for i in range(0, len(data), batch)]
    t = time.perf_counter()
    grams = [(*shingles(b), len(b)) for b in batches]
    shingle_s = time.perf_counter() - t
    for _ in range(repeat - 1):
        t = time.perf_counter()
        for b in batches:
            shingles(b)
        shingle_s = min(shingle_s, time.perf_counter() - t)
    best: dict[str, float] = {}
    counted: dict[str, int] = {}
    for _ in range(repeat):
        for name, fn in SIGNERS.items():
            if not available(name):
                continue
            todo = grams if name != "datasketch" else _first_rows(grams, ds_rows)
            t = time.perf_counter()
            n = 0
            for g, o, k in todo:
                fn(g, o, k)
                n += k
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
            counted[name] = n
    per_row = {name: best[name] / counted[name] for name in best}
    shingle_row = shingle_s / rows
    alone = {name: round(1 / s) for name, s in per_row.items()}
    end_to_end = {name: round(1 / (s + shingle_row)) for name, s in per_row.items()}
    return {"rows": rows, "shingles_per_row": round(sum(len(g) for g, _, _ in grams) / rows, 1),
            "shingling_rows_per_s": round(1 / shingle_row),
            "signing_rows_per_s": alone, "signing_ratio_to_numpy": {k: round(v / alone["numpy"], 2) for k, v in alone.items()},
            "end_to_end_rows_per_s": end_to_end,
            "end_to_end_ratio_to_numpy": {k: round(v / end_to_end["numpy"], 2) for k, v in end_to_end.items()},
            "datasketch_rows": counted.get("datasketch"),
            "missing": [n for n in SIGNERS if not available(n)]}


def _first_rows(grams, rows: int):
    out, left = [], rows
    for g, o, n in grams:
        if left <= 0:
            break
        k = min(left, n)
        keep = o < k
        out.append((g[keep], o[keep], k))
        left -= k
    return out


def index(rows: int, threshold: float = minhash.DEFAULT_THRESHOLD, batch: int = 1024) -> dict:
    """An index fed ``rows`` rows of random signatures: memory per row, heap peak, time."""
    rng = np.random.default_rng(SEED)
    tracemalloc.start()
    idx = minhash.Index(threshold)
    t = time.perf_counter()
    for start in range(0, rows, batch):
        k = min(batch, rows - start)
        sig = rng.integers(0, 1 << 32, size=(k, minhash.PERMS), dtype=np.uint64).astype(np.uint32)
        idx.begin(minhash.Signed(sig, np.zeros(k, dtype=bool)))
        for j in range(k):
            if idx.match(j) is None:
                idx.keep(j, (0, start + j))
        idx.end()
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    held = idx.nbytes()
    idx.close()
    return {"rows": rows, "threshold": threshold, "bands": idx.b, "rows_per_band": idx.r, "kept": idx.kept,
            "index_bytes_per_row": round(held / rows, 1), "index_mb": round(held / 1e6, 1),
            "heap_peak_mb": round(peak / 1e6, 1), "heap_peak_bytes_per_row": round(peak / rows, 1),
            "file_bytes_per_row": minhash.RECORD.itemsize, "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000, help="rows signed (medical workload)")
    ap.add_argument("--ds-rows", type=int, default=2_000, help="rows datasketch signs (it is slow)")
    ap.add_argument("--index-rows", type=int, default=100_000, help="rows put in the index (random signatures)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    report = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": platform.python_version(),
              "versions": {m: version(m) for m in ("numpy", "rensa", "datasketch")},
              "signatures": signatures(args.rows, args.ds_rows, args.repeat), "index": index(args.index_rows)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    s, ix = report["signatures"], report["index"]
    print(f"signatures: {s['rows']:,} medical rows, {s['shingles_per_row']} shingles a row, 128 permutations, best of "
          f"{args.repeat}; shingling alone {s['shingling_rows_per_s']:,} rows/s ({report['versions']})")
    print(f"  {'':11s} {'signing':>12s} {'ratio':>7s} {'end to end':>12s} {'ratio':>7s}")
    for name, rate in s["signing_rows_per_s"].items():
        print(f"  {name:11s} {rate:>9,} r/s {s['signing_ratio_to_numpy'][name]:6.2f}x {s['end_to_end_rows_per_s'][name]:>9,} r/s "
              f"{s['end_to_end_ratio_to_numpy'][name]:6.2f}x")
    for name in s["missing"]:
        print(f"  {name:11s} not installed")
    print(f"index: {ix['rows']:,} rows at {ix['threshold']} ({ix['bands']} bands of {ix['rows_per_band']}): "
          f"{ix['index_bytes_per_row']} bytes a row in memory ({ix['index_mb']} MB), heap peak {ix['heap_peak_mb']} MB "
          f"({ix['heap_peak_bytes_per_row']} bytes a row), {ix['file_bytes_per_row']} bytes a row on disk; "
          f"{ix['rows_per_s']:,} rows/s looked up and kept")


if __name__ == "__main__":
    main()
