"""Peak memory of a conversion against the size of its source (constant memory: a source five times
larger must not need more memory).

Each conversion runs in its own process; its peak resident memory is read with ``os.wait4`` (the
parent, which reads, deduplicates and writes), and the largest worker process's is read inside it
(``RUSAGE_CHILDREN`` once its workers have exited). Outputs go to a temporary folder removed after
each run.

Pairs (the target: the larger run within 1.2x of the smaller, and under 300 MB):
  moses     corpus.en/.zh_tw/.ja of 1M and 5M lines (six directions a line; duplicates dropped)
  parquet   FineTome-like Parquet of 100k and 400k rows, row groups of 10,000

  python bench/memory_bench.py                       # both pairs, --workers 1 and the default
  python bench/memory_bench.py --only moses --small 200000 --large 1000000 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import workload  # noqa: E402

PAIRS = {"moses": ("moses", "moses", 1_000_000, 5_000_000), "parquet": ("finetome", "sharegpt", 100_000, 400_000)}

CHILD = """
import json, resource, sys, time
from qwen_factory_kit.convert import convert
if __name__ == "__main__":
    converter, src, out, workers, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
    t = time.perf_counter()
    r = convert(converter, src, output=out, workers=None if workers == "auto" else int(workers), **extra)
    print(json.dumps({"seconds": time.perf_counter() - t, "read": r.read, "rows_out": r.rows_out,
                      "largest_worker_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def measure(converter: str, src: Path, workers: str, extra: dict) -> dict:
    """Run one conversion in a fresh process; its peak RSS (MB), its largest worker's, and its time."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("QFK_BENCH_OUT")) as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen([sys.executable, str(script), converter, str(src), str(Path(tmp) / "out" / "rows.jsonl"),
                                 workers, json.dumps(extra)], stdout=subprocess.PIPE, env=env, cwd=tmp)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"{converter} {src} failed ({status})")
        info = json.loads(out.decode().strip().splitlines()[-1])
        shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
    return {"parent_mb": round(usage.ru_maxrss / 1024, 1), "largest_worker_mb": round(info["largest_worker_kb"] / 1024, 1),
            "seconds": round(info["seconds"], 2), "read": info["read"], "rows_out": info["rows_out"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=list(PAIRS))
    ap.add_argument("--small", type=int, help="rows of the smaller source (default: the pair's)")
    ap.add_argument("--large", type=int, help="rows of the larger source (default: the pair's)")
    ap.add_argument("--workers", nargs="*", default=["1", "auto"], help="worker settings to measure (1, N or auto)")
    ap.add_argument("--no-dedup", action="store_true", help="moses without dropping duplicates")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = []
    for pair in [args.only] if args.only else list(PAIRS):
        kind, converter, small, large = PAIRS[pair]
        sizes = (args.small or small, args.large or large)
        t = time.perf_counter()
        sources = [workload(kind, n, row_group_size=10_000) if kind == "finetome" else workload(kind, n) for n in sizes]
        print(f"{pair}: workloads ready in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        extra = {"dedup": False} if args.no_dedup and converter == "moses" else {}
        for workers in args.workers:
            runs = [measure(converter, src, workers, extra) for src in sources]
            ratio = runs[1]["parent_mb"] / runs[0]["parent_mb"]
            results.append({"pair": pair, "workers": workers, "rows": sizes, **extra, "small": runs[0], "large": runs[1],
                            "ratio_large_to_small": round(ratio, 2), "within_1_2x": ratio <= 1.2,
                            "under_300mb": runs[1]["parent_mb"] < 300 and runs[1]["largest_worker_mb"] < 300})
            r = results[-1]
            print(f"{pair:<8} workers={workers:<5} {sizes[0]:>9,} rows: {runs[0]['parent_mb']:>6} MB "
                  f"(worker {runs[0]['largest_worker_mb']} MB, {runs[0]['seconds']}s)   {sizes[1]:>9,} rows: "
                  f"{runs[1]['parent_mb']:>6} MB (worker {runs[1]['largest_worker_mb']} MB, {runs[1]['seconds']}s)   "
                  f"x{r['ratio_large_to_small']}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if all(r["within_1_2x"] and r["under_300mb"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
