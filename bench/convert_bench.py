"""Conversion throughput against an I/O floor measured in the same run.

Workloads (:mod:`workloads`, seeded, cached under $QFK_BENCH_DIR):
  finetome  FineTome-like Parquet, 100,000 rows (qfk convert sharegpt)
  medical   medical-like JSON Lines in Chinese, 50,000 rows (qfk convert medical-r1)
  moses     corpus.en/.zh_tw/.ja, 1,000,000 lines, six directions a line (qfk convert moses)

Contenders (each writes JSON Lines to a temporary folder; interleaved, best of --repeat runs):
  floor     the I/O floor (:mod:`baselines`): read, orjson of the rows with no logic, every line
            written at once to one buffered file, single process
  floor-b   the same, a batch's lines joined and written together (the floor of the issue; slower:
            orjson gives each line a 4 KiB buffer)
  naive     the tutorials' script: pandas read + iterrows + json.dumps per row (run once)
  qfk-1     qfk convert with --workers 1 (one process)
  qfk       qfk convert with --workers N (default: the cores available)

Prints seconds, rows/s and each contender's ratio to the floor (higher is better; 1.0 = as fast
as the floor), with the machine (cores, load) it ran on.

  python bench/convert_bench.py                          # all three workloads, best of 3
  python bench/convert_bench.py --workload moses --rows 300000 --repeat 2
  python bench/convert_bench.py --workload finetome --only floor qfk-1 qfk --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from baselines import BASELINES, CONVERTER  # noqa: E402
from workloads import size_of, workload  # noqa: E402

SIZES = {"finetome": 100_000, "medical": 50_000, "moses": 1_000_000}
CONTENDERS = ("floor", "floor-b", "naive", "qfk-1", "qfk")
ONCE = ("naive",)  # slow references: run in the first round only


def contender(name: str, kind: str, workers: int | None):
    if name == "floor":
        return BASELINES[kind]["floor"]
    if name == "floor-b":
        return BASELINES[kind]["floor_batched"]
    if name == "naive":
        return BASELINES[kind]["naive"]

    def qfk(src: Path, out: Path) -> int:
        from qwen_factory_kit.convert import convert

        return convert(CONVERTER[kind], str(src), output=str(out), workers=1 if name == "qfk-1" else workers).read
    return qfk


def bench(kind: str, rows: int, names: list[str], repeat: int, workers: int | None) -> dict:
    src = workload(kind, rows)
    print(f"{kind}: {rows:,} rows, {size_of(src) / 1e6:.0f} MB ({src})", file=sys.stderr)
    best: dict[str, float] = {}
    read: dict[str, int] = {}
    for rnd in range(repeat):
        for name in names:  # interleaved, so machine noise hits every contender alike
            if name in ONCE and rnd:
                continue
            with tempfile.TemporaryDirectory(dir=os.environ.get("QFK_BENCH_OUT")) as tmp:
                t = time.perf_counter()
                read[name] = contender(name, kind, workers)(src, Path(tmp) / "out.jsonl")
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
                shutil.rmtree(tmp, ignore_errors=True)
            print(f"  round {rnd + 1} {name:<8} {best[name]:.2f}s", file=sys.stderr, flush=True)
    base = best["floor"]
    return {name: {"seconds": round(dt, 3), "rows_per_s": round(rows / dt), "ratio_to_floor": round(base / dt, 2),
                   "rows_read": read[name]} for name, dt in best.items()}


def machine() -> dict:
    from qwen_factory_kit.convert.workers import available_cores

    return {"cores": available_cores(), "load_avg": os.getloadavg(), "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", nargs="*", choices=list(SIZES), default=list(SIZES))
    ap.add_argument("--rows", type=int, help="rows (lines) of each workload (default: 100k, 50k, 1M)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", choices=CONTENDERS)
    ap.add_argument("--workers", type=int, help="qfk's --workers (default: the cores available)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    names = ["floor", *[n for n in (args.only or CONTENDERS) if n != "floor"]]
    report = {"machine_before": machine(), "workloads": {}}
    for kind in args.workload:
        rows = args.rows or SIZES[kind]
        report["workloads"][kind] = {"rows": rows, "contenders": bench(kind, rows, names, args.repeat, args.workers)}
    report["machine_after"] = machine()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine_before"]
    print(f"{m['cores']} cores, load {m['load_avg'][0]:.1f} -> {report['machine_after']['load_avg'][0]:.1f}; "
          f"best of {args.repeat} (naive: one run)")
    for kind, w in report["workloads"].items():
        print(f"\n{kind} ({w['rows']:,} rows)\n{'contender':<10} {'seconds':>8} {'rows/s':>10} {'x floor':>8}")
        for name, r in w["contenders"].items():
            print(f"{name:<10} {r['seconds']:>8.2f} {r['rows_per_s']:>10} {r['ratio_to_floor']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
