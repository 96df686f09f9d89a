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
  floor-i   the floor with the integrity work every conversion must do: the input read once and
            hashed as it is read (Parquet: by a read of its own), the output hashed as it is
            written, fsync before close
  naive     the tutorials' script: pandas read + iterrows + json.dumps per row (run once)
  qfk-1     qfk convert with --workers 1 (one process)
  qfk       qfk convert with --workers N (default: the cores available)
  qfk-1-2r, qfk-2r
            the same with the input hashing before issue 18: every input file read a second time
            for its sha256, in a thread, while the conversion runs

Prints seconds, rows/s, each contender's ratio to the floor (higher is better; 1.0 = as fast as
the floor), the MB this process read (Linux rchar: the input, read once or twice; with workers
also their results through the pipe) and, with floor-i, its time over floor-i's (conversion / integrity floor: lower is
better, 1.0 = the conversion costs what its read, write, hashes and fsync cost), with the machine
(cores, load) it ran on.

  python bench/convert_bench.py                          # all three workloads, best of 3
  python bench/convert_bench.py --workload moses --rows 300000 --repeat 2
  python bench/convert_bench.py --workload finetome --only floor qfk-1 qfk --json
  python bench/convert_bench.py --rows 20000 --repeat 2 --only floor-i qfk-1 qfk-1-2r qfk qfk-2r
"""

from __future__ import annotations

import argparse
import contextlib
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
CONTENDERS = ("floor", "floor-b", "floor-i", "naive", "qfk-1", "qfk", "qfk-1-2r", "qfk-2r")
ONCE = ("naive",)  # slow references: run in the first round only


def contender(name: str, kind: str, workers: int | None):
    if name == "floor":
        return BASELINES[kind]["floor"]
    if name == "floor-b":
        return BASELINES[kind]["floor_batched"]
    if name == "floor-i":
        return BASELINES[kind]["floor_integrity"]
    if name == "naive":
        return BASELINES[kind]["naive"]

    def qfk(src: Path, out: Path) -> int:
        from qwen_factory_kit.convert import convert

        with two_reads() if name.endswith("-2r") else contextlib.nullcontext():
            return convert(CONVERTER[kind], str(src), output=str(out), workers=1 if name.startswith("qfk-1") else workers).read
    return qfk


@contextlib.contextmanager
def two_reads():
    """qfk with the input hashing before issue 18: no file hashed by the pass that reads its rows,
    every one read again for its sha256 in a thread (what ``--shard`` still does)."""
    from qwen_factory_kit.convert import pipeline, sinks

    class TwoReads(sinks.Hasher):
        def __init__(self, records, *, in_pass: bool):
            super().__init__(records, in_pass=False)

    pipeline.Hasher = TwoReads
    try:
        yield
    finally:
        pipeline.Hasher = sinks.Hasher


def bench(kind: str, rows: int, names: list[str], repeat: int, workers: int | None) -> dict:
    src = workload(kind, rows)
    print(f"{kind}: {rows:,} rows, {size_of(src) / 1e6:.0f} MB ({src})", file=sys.stderr)
    best: dict[str, float] = {}
    read: dict[str, int] = {}
    read_mb: dict[str, float] = {}
    for rnd in range(repeat):
        for name in names:  # interleaved, so machine noise hits every contender alike
            if name in ONCE and rnd:
                continue
            with tempfile.TemporaryDirectory(dir=os.environ.get("QFK_BENCH_OUT")) as tmp:
                before, t = bytes_read(), time.perf_counter()
                read[name] = contender(name, kind, workers)(src, Path(tmp) / "out.jsonl")
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
                read_mb[name] = round((bytes_read() - before) / 1e6, 1)
                shutil.rmtree(tmp, ignore_errors=True)
            print(f"  round {rnd + 1} {name:<8} {best[name]:.2f}s", file=sys.stderr, flush=True)
    base, integrity = best["floor"], best.get("floor-i")
    return {name: {"seconds": round(dt, 3), "rows_per_s": round(rows / dt), "ratio_to_floor": round(base / dt, 2),
                   **({"time_over_floor_i": round(dt / integrity, 2)} if integrity else {}),
                   "mb_read": read_mb[name], "rows_read": read[name]} for name, dt in best.items()}


def bytes_read() -> int:
    """Bytes this process has read through system calls (Linux ``rchar``: files and pipes, the page
    cache included; 0 elsewhere): the reads of the input, counted whether or not a disk served them."""
    try:
        with open("/proc/self/io") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))
    except OSError:
        return 0


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
        print(f"\n{kind} ({w['rows']:,} rows)\n{'contender':<10} {'seconds':>8} {'rows/s':>10} {'x floor':>8} "
              f"{'MB read':>8} {'time / floor-i':>15}")
        for name, r in w["contenders"].items():
            over = f"{r['time_over_floor_i']:>15.2f}" if "time_over_floor_i" in r else ""
            print(f"{name:<10} {r['seconds']:>8.2f} {r['rows_per_s']:>10} {r['ratio_to_floor']:>8.2f} {r['mb_read']:>8.0f} {over}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
