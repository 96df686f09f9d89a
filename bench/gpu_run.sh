#!/usr/bin/env bash
# The GPU training benchmark on a lent GPU machine (Python 3.12 + torch there; nothing to download).
# Run from the repository root, with the wheels in .whl/ and the real rows in .gpudata/ carried:
#
#   bash bench/gpu_run.sh
#
# .gpudata/medical.jsonl  medical-r1 rows (--data); else the bench's default (examples/medical_r1)
# .gpudata/kftt/          KFTT en/ja Moses files (--moses); else examples/moses
#
# Environment: OUT (results; default bench/out/gpu-run), BENCH_ARGS (more bench/gpu_train.py arguments,
# e.g. "--cases 4b-lora,8b-lora-liger --steps 20"), BENCH_DEADLINE_S (default 420: no run starts that
# would end later), SITE (where the wheels go; default /tmp/site), PYTHON (default python3).
# Leaves in OUT: nvidia-smi.txt, gpu_run.log, gpu/gpu_bench.json and gpu/runs.tgz (every run's log,
# trainer_log.jsonl, all_results.json, qfk_summary.json, qfk_run.json, and the recipes): four files.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 3
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/bench/out/gpu-run}
SITE=${SITE:-/tmp/site}
WORK=/tmp/gpubench
mkdir -p "$OUT/gpu" "$WORK"

ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/ (see bench/gpu_train.py and ../shared/docs/GPU.md)"; exit 3; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 3
export PYTHONPATH="$SITE:$PWD" DISABLE_VERSION_CHECK=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export PATH="$SITE/bin:$PATH"   # pip --target puts the console scripts (llamafactory-cli) there
export QFK_CMD="${QFK_CMD:-$PY -m qwen_factory_kit}" LF_CMD="${LF_CMD:-$PY -m llamafactory.cli}"

nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt"

# Every module the runs import, at once: a missing wheel shows here, not after the models are built.
"$PY" - <<'EOF' 2>&1 | tee "$OUT/gpu_run.log" || exit 3
import importlib.metadata as md
import torch, transformers, peft, trl, datasets, accelerate, tokenizers
import llamafactory.train.tuner, llamafactory.cli
import qwen_factory_kit.cli.main, qwen_factory_kit.launch.entry, qwen_factory_kit.lfbridge
import liger_kernel.transformers, bitsandbytes
print("imports ok:", ", ".join(f"{n} {md.version(n)}" for n in (
    "torch", "transformers", "llamafactory", "peft", "trl", "datasets", "accelerate", "tokenizers", "liger-kernel",
    "bitsandbytes")), "| cuda", torch.cuda.is_available(), torch.version.cuda)
print("tokenizer:", qwen_factory_kit.lfbridge.qwen3_tokenizer_dir())
EOF

args=(--out "$OUT/gpu" --work "$WORK/work" --logs "$WORK/logs" --models-dir "$WORK/models"
      --deadline-s "${BENCH_DEADLINE_S:-420}")
[ -f .gpudata/medical.jsonl ] && args+=(--data .gpudata/medical.jsonl)
[ -d .gpudata/kftt ] && args+=(--moses .gpudata/kftt)
# shellcheck disable=SC2086  # BENCH_ARGS is a list of words
"$PY" bench/gpu_train.py "${args[@]}" ${BENCH_ARGS:-} 2>&1 | tee -a "$OUT/gpu_run.log"
rc=${PIPESTATUS[0]}

(cd "$WORK" && tar czf "$OUT/gpu/runs.tgz" logs work/recipes \
    $(ls work/saves/*/*/{trainer_log.jsonl,all_results.json,qfk_summary.json,qfk_run.json,qfk_train.log} 2>/dev/null))
echo "bench exit $rc; results in $OUT"
exit "$rc"
