"""``qfk eval`` on the tiny CPU model: bounded decoding against the old defaults, in the same run.

Rows: the first ``--rows`` medical R1 rows of ``../shared/real-samples/medical_r1`` (real rows,
read where they lie, never copied into the project), else the synthetic ``medical`` workload of
:mod:`workloads`. They are converted (``qfk convert medical-r1``) into a throw-away workspace and
predicted by the tiny Qwen3 model as a MODEL in thinking mode (``--template qwen3
--enable-thinking true``: Qwen3's sampling, as a run trained on reasoning rows is evaluated).
The tiny model never emits ``<|im_end|>``, so every row runs to ``max_new_tokens``: the case of
the issue, where ``qfk eval`` ran for 15 minutes without a word.

Contenders (each a ``qfk eval`` process; wall time and the generation time of its progress events):
  before   the old defaults: max_new_tokens 4096 (thinking), per_device_eval_batch_size 4; run on
           ``--before-rows`` rows (one batch: every row costs the same 4096 steps) and projected to
           ``--rows`` rows as whole batches of 4
  after    the new defaults: max_new_tokens 1.5x the longest reference of the rows, the eval batch
           chosen for the machine; run on all ``--rows`` rows

  python bench/eval_bench.py                   # 50 rows after, 4 rows before
  python bench/eval_bench.py --rows 16 --before-rows 4 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-samples" / "medical_r1"
OLD_MAX_NEW_TOKENS, OLD_BATCH = 4096, 4


def source_rows(rows: int, folder: Path) -> tuple[Path, str]:
    """A JSON Lines file of the first ``rows`` medical rows, and what they are."""
    real = sorted(REAL.glob("*.jsonl")) if REAL.is_dir() else []
    out = folder / "medical.jsonl"
    if real:
        lines = [l for l in real[0].read_text(encoding="utf-8").splitlines() if l.strip()][:rows]
        what = f"the first {len(lines)} real rows of {real[0]}"
    else:
        from workloads import workload

        lines = workload("medical", rows).read_text(encoding="utf-8").splitlines()[:rows]
        what = f"{len(lines)} synthetic medical rows (bench/workloads.py; ../shared/real-samples is absent)"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out, what


def qfk(*args, cwd: Path) -> float:
    started = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "qwen_factory_kit", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"qfk {' '.join(map(str, args))} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - started


def contender(work: Path, model: Path, name: str, extra: list[str]) -> dict:
    out = work / f"out-{name}"
    wall = qfk("eval", model, "--dataset", "med", "--template", "qwen3", "--enable-thinking", "true", "-o", out, *extra, cwd=work)
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    speed, d = m["speed"]["tuned"], m["decoding"]
    return {"rows": m["n"], "wall_s": round(wall, 1), "generate_s": speed["seconds"], "new_tokens": speed["new_tokens"],
            "tokens_per_s": speed["tokens_per_s"], "max_new_tokens": d["max_new_tokens"],
            "batch": d.get("per_device_eval_batch_size")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--before-rows", type=int, default=OLD_BATCH)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from qwen_factory_kit.tiny import build_tiny_model

    model = build_tiny_model()
    with tempfile.TemporaryDirectory(prefix="qfk-eval-bench-") as tmp:
        work = Path(tmp)
        src, what = source_rows(a.rows, work)
        qfk("convert", "medical-r1", src, "--name", "med", "--fix-escaped-newlines", cwd=work)
        before = contender(work, model, "before", ["--max-samples", a.before_rows, "--max-new-tokens", OLD_MAX_NEW_TOKENS,
                                                   f"per_device_eval_batch_size={OLD_BATCH}"])
        after = contender(work, model, "after", ["--max-samples", a.rows])
    batches = math.ceil(a.rows / OLD_BATCH)
    per_batch = before["generate_s"] / math.ceil(a.before_rows / OLD_BATCH)
    startup = before["wall_s"] - before["generate_s"]
    before["projected_rows"] = a.rows
    before["projected_wall_s"] = round(startup + per_batch * batches, 1)
    result = {"rows": what, "machine": f"{os.cpu_count()} cores", "before": before, "after": after,
              "speedup_wall": round(before["projected_wall_s"] / after["wall_s"], 2),
              "rows_per_s_before": round(before["rows"] / before["generate_s"], 4),
              "rows_per_s_after": round(after["rows"] / after["generate_s"], 4)}
    result["speedup_rows_per_s"] = round(result["rows_per_s_after"] / result["rows_per_s_before"], 2)
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"rows: {what}")
    print(f"{'':8} {'rows':>5} {'max_new':>8} {'batch':>5} {'new tokens':>10} {'tok/s':>7} {'generate s':>10} {'wall s':>7}")
    for name, r in (("before", before), ("after", after)):
        print(f"{name:8} {r['rows']:>5} {r['max_new_tokens']:>8} {r['batch']!s:>5} {r['new_tokens']:>10} "
              f"{r['tokens_per_s']!s:>7} {r['generate_s']:>10.1f} {r['wall_s']:>7.1f}")
    print(f"before, projected to {a.rows} rows ({batches} batches of {OLD_BATCH}): {before['projected_wall_s']:.0f} s")
    print(f"after / before: {result['speedup_rows_per_s']}x the rows/s, {result['speedup_wall']}x less wall time "
          f"for {a.rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
