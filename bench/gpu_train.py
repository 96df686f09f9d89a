"""GPU training benchmark: `qfk train` and `llamafactory-cli train` on recipes emitted by `qfk recipe new`.

Run it when a GPU machine is lent (bench/gpu_run.sh is the one command there), or on CPU with
--tiny as a smoke test. Steps:

  1. build random-weight Qwen3 models of the real shapes (0.6B, 1.7B, 4B, 8B: vocabulary 151,936,
     head_dim 128, rope_theta 1e6) with the real Qwen3 tokenizer, in bf16 on the GPU, into
     MODELS_DIR/Qwen3-4B etc. (the kit picks the size preset from the parameter count; the folder
     name reads like the real one). Losses are meaningless; speed and memory are real;
  2. `qfk convert medical-r1 --data` (and `qfk convert moses --moses` for the translation case)
     into WORK/data;
  3. `qfk recipe new --model FOLDER --method lora|qlora` per case, as emitted;
  4. train each case with each runner for --steps steps (overrides: max_steps, logging_steps=1,
     include_effective_tokens_per_second=true, save_steps large, overwrite_output_dir=true,
     report_to=none, plus the case's own, plus use_cpu=true bf16=false without CUDA).

Measured per run: effective tokens/s (all_results.json), steady s/step (steps 3..N: from the times
the trainer_log.jsonl lines appear, polled every 0.25 s, and from their 1-second elapsed_time),
peak GPU memory from nvidia-smi polled every 0.25 s (n/a without it), PyTorch's own peak
(allocated / reserved: qfk_summary.json for qfk train, LLaMA-Factory's RECORD_VRAM log lines for
both runners), wall time and exit code. Memory is in GB of 2**30 bytes (GiB), as nvidia-smi's MiB
and LLaMA-Factory's RECORD_VRAM. Each case's tokens/s is also shown as a ratio to the "as emitted"
case of the same model, method and data with the same runner, measured in the same run.

Commands: QFK_CMD (default: this Python -m qwen_factory_kit) and LF_CMD (default: this Python
-m llamafactory.cli, which is what llamafactory-cli runs) may name others, e.g. LF_CMD=llamafactory-cli.

Examples:
  python bench/gpu_train.py                                  # default cases, both runners, 10 steps
  python bench/gpu_train.py --cases 4b-lora,4b-lora-liger --runner lf --steps 20
  python bench/gpu_train.py --data medical.jsonl --moses ./kftt --out bench/out/gpu
  python bench/gpu_train.py --list-cases
  python bench/gpu_train.py --tiny --steps 2 --cases 4b-lora --out /tmp/gb   # CPU smoke test
  python bench/gpu_train.py --build-only --cases 8b-lora     # just build MODELS_DIR/Qwen3-8B
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_MEDICAL = ROOT.parent / "shared" / "real-samples" / "medical_r1" / "val_sample.jsonl"
SHARED_MOSES = ROOT.parent / "shared" / "real-samples" / "moses" / "kftt"
EXAMPLE_MEDICAL = ROOT / "examples" / "medical_r1" / "rows.jsonl"
EXAMPLE_MOSES = ROOT / "examples" / "moses"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Qwen3 shapes (hidden, intermediate, layers, heads, kv heads, tied embeddings); the rest is shared.
SHAPES = {
    "0.6B": (1024, 3072, 28, 16, 8, True),
    "1.7B": (2048, 6144, 28, 16, 8, True),
    "4B": (2560, 9728, 36, 32, 8, True),
    "8B": (4096, 12288, 36, 32, 8, False),
}
DATASETS = {"medical": "bench_medical", "mt": "bench_mt"}
LIGER = "enable_liger_kernel=true"
PACKING = ("packing=true", "neat_packing=true")
GIB = 2**30
STARTED = time.monotonic()


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    model: str                      # a key of SHAPES
    method: str                     # lora | qlora
    data: str                       # a key of DATASETS
    overrides: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()   # extra environment of the training process

    @property
    def group(self) -> tuple[str, str, str]:
        return self.model, self.method, self.data


CASES = {c.key: c for c in (
    Case("4b-lora", "4B lora as emitted", "4B", "lora", "medical"),
    Case("4b-lora-liger", "4B lora + liger", "4B", "lora", "medical", (LIGER,)),
    Case("4b-lora-liger-packing", "4B lora + liger + packing", "4B", "lora", "medical", (LIGER, *PACKING)),
    Case("4b-lora-expandable", "4B lora + expandable segments", "4B", "lora", "medical", (),
         (("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),)),
    Case("1.7b-qlora-mt", "1.7B qlora translation as emitted", "1.7B", "qlora", "mt"),
    Case("1.7b-qlora-mt-expandable", "1.7B qlora translation + expandable segments", "1.7B", "qlora", "mt", (),
         (("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),)),
    Case("0.6b-lora", "0.6B lora as emitted", "0.6B", "lora", "medical"),
    Case("8b-lora", "8B lora as emitted", "8B", "lora", "medical"),
    Case("8b-lora-liger", "8B lora + liger", "8B", "lora", "medical", (LIGER,)),
)}
#: About 7 minutes on one H100 (8 runs of 10 steps, plus building the 4B and 1.7B models).
DEFAULT_CASES = ("4b-lora", "4b-lora-liger", "4b-lora-liger-packing", "1.7b-qlora-mt")
RUNNERS = ("qfk", "lf")
TINY_OVERRIDES = ("per_device_train_batch_size=2", "gradient_accumulation_steps=1", "cutoff_len=1024",
                  "preprocessing_num_workers=1", "dataloader_num_workers=0")


@dataclass
class Run:
    """One case trained by one runner: what ran and what was measured."""
    case: str
    label: str
    runner: str
    model: str
    method: str
    dataset: str
    overrides: list[str]
    command: str = ""
    exit_code: int | None = None
    skipped: str | None = None
    wall_s: float | None = None
    steps: int | None = None
    effective_tokens_per_sec: float | None = None
    train_runtime_s: float | None = None
    s_per_step_steady: float | None = None
    s_per_step_steady_log: float | None = None
    peak_gpu_memory_gb: float | None = None          # nvidia-smi memory.used, all processes
    idle_gpu_memory_gb: float | None = None          # nvidia-smi just before the run
    peak_gpu_memory_allocated_gb: float | None = None
    peak_gpu_memory_reserved_gb: float | None = None
    torch_peak_from: str | None = None
    tokens_per_sec_ratio: float | None = None
    baseline: str | None = None
    log: str = ""
    output_dir: str = ""


# ---------------------------------------------------------------------------------------------
# models and machine (run in child processes: the bench itself never holds a CUDA context,
# which nvidia-smi would count in every run's memory)
# ---------------------------------------------------------------------------------------------
def qwen3_config(size: str):
    from transformers import Qwen3Config

    hidden, inter, layers, heads, kv, tied = SHAPES[size]
    return Qwen3Config(vocab_size=151936, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, head_dim=128,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6}, max_position_embeddings=40960,
                       max_window_layers=layers, use_sliding_window=False, tie_word_embeddings=tied,
                       rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151645, dtype="bfloat16")


def model_complete(folder: Path) -> bool:
    return ((folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
            and any((folder / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json")))


def build_model(size: str, dest: Path) -> Path:
    """Random-weight Qwen3 of the real shape, bf16 (on the GPU when there is one), with the real tokenizer."""
    if model_complete(dest):
        return dest
    import torch
    from transformers import Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging

    from qwen_factory_kit.lfbridge import load_tokenizer

    started = time.time()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3ForCausalLM(qwen3_config(size))
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    hf_logging.disable_progress_bar()
    model.save_pretrained(tmp)
    load_tokenizer().save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(dest)  # a half-built folder from a killed run
    tmp.replace(dest)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"built {dest} ({params:.2f}B parameters) in {time.time() - started:.0f} s", flush=True)
    return dest


def build_models(cases: list[Case], models_dir: Path, tiny: bool) -> dict[str, str]:
    """Model folder per model size of ``cases`` (the kit's tiny model for every size with --tiny)."""
    if tiny:
        from qwen_factory_kit.tiny import build_tiny_model

        folder = str(build_tiny_model())
        return {c.model: folder for c in cases}
    models_dir.mkdir(parents=True, exist_ok=True)
    return {size: str(build_model(size, models_dir / f"Qwen3-{size}")) for size in dict.fromkeys(c.model for c in cases)}


def machine_info() -> dict:
    """Python, package versions and the GPU as PyTorch sees it."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    info: dict = {"python": platform.python_version(), "host": platform.node()}
    for name in ("torch", "transformers", "llamafactory", "peft", "trl", "accelerate", "datasets", "tokenizers",
                 "liger-kernel", "bitsandbytes"):
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = None
    import torch

    info["cuda"] = torch.cuda.is_available()
    info["torch_cuda"] = torch.version.cuda
    info["gpu"] = torch.cuda.get_device_name(0) if info["cuda"] else None
    info["gpu_count"] = torch.cuda.device_count() if info["cuda"] else 0
    smi = _smi("name,driver_version,memory.total")
    info["nvidia_smi"] = smi[0] if smi else None
    return info


# ---------------------------------------------------------------------------------------------
# measuring one run
# ---------------------------------------------------------------------------------------------
def _smi(query: str) -> list[str] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        p = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return [l.strip() for l in p.stdout.splitlines() if l.strip()] if p.returncode == 0 else None


def gpu_memory_mib() -> float | None:
    """Memory used on the busiest GPU (MiB), or None without nvidia-smi."""
    lines = _smi("memory.used")
    try:
        return max(float(l) for l in lines) if lines else None
    except ValueError:
        return None


class Watcher(threading.Thread):
    """Every ``interval`` s: nvidia-smi's memory.used (peak kept) and the time each new step line
    appears in ``trainer_log.jsonl`` (LLaMA-Factory writes one per logging step)."""

    def __init__(self, trainer_log: Path, interval: float = 0.25):
        super().__init__(daemon=True)
        self.trainer_log = trainer_log
        self.interval = interval
        self.peak_mib: float | None = None
        self.step_seen: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            used = gpu_memory_mib()
            if used is not None:
                self.peak_mib = max(self.peak_mib or 0.0, used)
            self._steps()
            self.done.wait(self.interval)

    def _steps(self) -> None:
        now = time.monotonic()
        for row in read_jsonl(self.trainer_log):
            if "loss" in row and isinstance(row.get("current_steps"), int):
                self.step_seen.setdefault(row["current_steps"], now)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written
    return rows


def steady_s_per_step(times: dict[int, float], skip: int = 2) -> float | None:
    """Mean seconds per step after the first ``skip`` steps (warm-up): (t[last] - t[skip]) / steps."""
    steps = sorted(s for s in times if s >= skip)
    if len(steps) < 2:
        return None
    first, last = steps[0], steps[-1]
    return (times[last] - times[first]) / (last - first)


def _seconds(elapsed: str) -> float | None:
    m = re.fullmatch(r"(?:(\d+) days?, )?(\d+):(\d\d):(\d\d)", str(elapsed).strip())
    if not m:
        return None
    days, h, mi, s = (int(g or 0) for g in m.groups())
    return float(((days * 24 + h) * 60 + mi) * 60 + s)


def read_results(out: Path, run: Run, watcher: Watcher) -> None:
    """Fill ``run`` from the output folder (all_results.json, trainer_log.jsonl, qfk_summary.json)."""
    results = _json(out / "all_results.json")
    run.effective_tokens_per_sec = results.get("effective_tokens_per_sec")
    run.train_runtime_s = results.get("train_runtime")
    log = [r for r in read_jsonl(out / "trainer_log.jsonl") if "loss" in r and isinstance(r.get("current_steps"), int)]
    run.steps = max((r["current_steps"] for r in log), default=None)
    run.s_per_step_steady = _round(steady_s_per_step(watcher.step_seen), 3)
    elapsed = {r["current_steps"]: _seconds(r.get("elapsed_time", "")) for r in log}
    run.s_per_step_steady_log = _round(steady_s_per_step({k: v for k, v in elapsed.items() if v is not None}), 3)
    if watcher.peak_mib is not None:
        run.peak_gpu_memory_gb = round(watcher.peak_mib * 2**20 / GIB, 2)
    summary = _json(out / "qfk_summary.json")
    vram = [r for r in log if "vram_allocated" in r]
    if summary.get("peak_gpu_memory_allocated_gb") is not None:
        run.peak_gpu_memory_allocated_gb = summary["peak_gpu_memory_allocated_gb"]
        run.peak_gpu_memory_reserved_gb = summary.get("peak_gpu_memory_reserved_gb")
        run.torch_peak_from = "qfk_summary.json"
    elif vram and vram[-1]["vram_reserved"] > 0:  # LLaMA-Factory logs 0 / -1 without CUDA
        run.peak_gpu_memory_allocated_gb = max(r["vram_allocated"] for r in vram)
        run.peak_gpu_memory_reserved_gb = max(r["vram_reserved"] for r in vram)
        run.torch_peak_from = "trainer_log.jsonl (RECORD_VRAM)"


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _round(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


# ---------------------------------------------------------------------------------------------
# the workflow: data, recipes, runs
# ---------------------------------------------------------------------------------------------
def child_env(work: Path) -> dict:
    env = dict(os.environ)
    env.update(DISABLE_VERSION_CHECK="1", HF_HUB_OFFLINE="1", RECORD_VRAM="1", PYTHONUNBUFFERED="1",
               QFK_DATA_DIR=str(work / "data"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def commands() -> dict[str, list[str]]:
    return {"qfk": shlex.split(os.environ.get("QFK_CMD") or f"{shlex.quote(sys.executable)} -m qwen_factory_kit"),
            "lf": shlex.split(os.environ.get("LF_CMD") or f"{shlex.quote(sys.executable)} -m llamafactory.cli")}


def step(argv: list[str], work: Path, what: str) -> str:
    """Run a preparation command in ``work``; stop the bench with its output if it fails."""
    p = subprocess.run(argv, cwd=work, env=child_env(work), capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{what} failed (exit {p.returncode}): {shlex.join(argv)}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def child_json(argv: list[str], work: Path, what: str) -> dict:
    """The JSON object a child prints last."""
    out = step(argv, work, what)
    return json.loads(out.strip().splitlines()[-1])


def prepare_data(qfk: list[str], work: Path, cases: list[Case], medical: Path, moses: Path) -> None:
    needs = {c.data for c in cases}
    if "medical" in needs:
        step([*qfk, "convert", "medical-r1", str(medical), "--name", DATASETS["medical"], "--force", "--no-progress"],
             work, "qfk convert medical-r1")
    if "mt" in needs:
        step([*qfk, "convert", "moses", str(moses), "--name", DATASETS["mt"], "--langs", "en,ja", "--directions", "en-ja",
              "--force", "--no-progress"], work, "qfk convert moses")


def write_recipes(qfk: list[str], work: Path, cases: list[Case], models: dict[str, str]) -> dict[str, str]:
    """One recipe per (model, method, data), as ``qfk recipe new`` emits it; cases differ by overrides only."""
    (work / "recipes").mkdir(parents=True, exist_ok=True)
    recipes: dict[tuple, str] = {}
    for c in cases:
        if c.group not in recipes:
            name = f"recipes/{c.model.lower()}-{c.method}-{c.data}.yaml"
            step([*qfk, "recipe", "new", "--model", models[c.model], "--method", c.method, "--dataset", DATASETS[c.data],
                  "-o", name, "--force"], work, f"qfk recipe new ({c.key})")
            recipes[c.group] = name
    return {c.key: recipes[c.group] for c in cases}


def train_overrides(steps: int, output_dir: str, cuda: bool, tiny: bool, extra: list[str]) -> list[str]:
    base = [f"max_steps={steps}", "include_effective_tokens_per_second=true", "logging_steps=1", "save_steps=100000",
            "overwrite_output_dir=true", "report_to=none", f"output_dir={output_dir}"]
    if not cuda:
        base += ["use_cpu=true", "bf16=false"]
    if tiny:
        base += list(TINY_OVERRIDES)
    return base + extra


def run_one(run: Run, argv: list[str], work: Path, logs: Path, env: tuple[tuple[str, str], ...] = ()) -> Run:
    """Train once, watching memory and steps; fill ``run`` with what was measured."""
    out = work / run.output_dir
    shutil.rmtree(out, ignore_errors=True)  # no stale trainer_log.jsonl for the watcher to read
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{run.case}-{run.runner}.log"
    run.command, run.log = shlex.join(argv), str(log)
    idle = gpu_memory_mib()
    run.idle_gpu_memory_gb = None if idle is None else round(idle * 2**20 / GIB, 2)
    watcher = Watcher(out / "trainer_log.jsonl")
    started = time.monotonic()
    watcher.start()
    with open(log, "w", encoding="utf-8") as fh:
        fh.write(f"$ (cd {work} && {run.command})\n")
        fh.flush()
        run.exit_code = subprocess.run(argv, cwd=work, env={**child_env(work), **dict(env)}, stdout=fh,
                                       stderr=subprocess.STDOUT).returncode
    run.wall_s = round(time.monotonic() - started, 1)
    watcher.stop()
    read_results(out, run, watcher)
    return run


def plan(cases: list[Case], runners: list[str], recipes: dict[str, str], args, cuda: bool) -> list[tuple[Run, list[str]]]:
    """Every (case, runner) in the order they run: case by case, the runners of a case back to back."""
    cmds = commands()
    todo = []
    for c in cases:
        for r in runners:
            output_dir = f"saves/{c.key}/{r}"
            overrides = train_overrides(args.steps, output_dir, cuda, args.tiny, [*c.overrides, *args.set])
            run = Run(c.key, c.label, r, c.model, c.method, DATASETS[c.data], [*c.overrides, *args.set],
                      output_dir=output_dir)
            todo.append((run, [*cmds[r], "train", recipes[c.key], *overrides]))
    return todo


def add_ratios(runs: list[Run]) -> None:
    """tokens/s over the same runner's "as emitted" case of the same model, method and data."""
    by_key = {c.key: c for c in CASES.values()}
    for run in runs:
        group = by_key[run.case].group
        base = next((b for b in runs if b.runner == run.runner and not by_key[b.case].overrides
                     and by_key[b.case].group == group and b.effective_tokens_per_sec), None)
        if base and run.effective_tokens_per_sec:
            run.baseline = base.case
            run.tokens_per_sec_ratio = round(run.effective_tokens_per_sec / base.effective_tokens_per_sec, 3)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _fmt(x, spec: str = "", none: str = "n/a") -> str:
    return none if x is None else format(x, spec)


def table(runs: list[Run]) -> str:
    head = ("case", "runner", "exit", "tokens/s", "x emitted", "s/step", "peak smi GB", "torch alloc/resv GB", "wall s")
    rows = []
    for r in runs:
        torch_peak = (f"{r.peak_gpu_memory_allocated_gb:.1f} / {r.peak_gpu_memory_reserved_gb:.1f}"
                      if r.peak_gpu_memory_allocated_gb is not None and r.peak_gpu_memory_reserved_gb is not None else "n/a")
        rows.append((r.label, r.runner, r.skipped and "skip" or _fmt(r.exit_code, "d", "-"),
                     _fmt(r.effective_tokens_per_sec, ",.0f"), _fmt(r.tokens_per_sec_ratio, ".2f", "-"),
                     _fmt(r.s_per_step_steady, ".2f"), _fmt(r.peak_gpu_memory_gb, ".1f"), torch_peak,
                     _fmt(r.wall_s, ".0f", "-")))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]

    def line(cells) -> str:  # names left-aligned, figures right-aligned
        return "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def write_report(path: Path, machine: dict, settings: dict, runs: list[Run]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"machine": machine, "settings": settings, "runs": [asdict(r) for r in runs]}, indent=2)
                   + "\n", encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__[__doc__.index("Examples:"):],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(DEFAULT_CASES), help="comma-separated case keys, or 'all' (see --list-cases)")
    p.add_argument("--runner", default="qfk,lf", help="qfk (qfk train), lf (llamafactory-cli train) or both: qfk,lf")
    p.add_argument("--steps", type=int, default=10, help="max_steps of every run (default 10; steps 1-2 are warm-up)")
    p.add_argument("--data", type=Path, default=SHARED_MEDICAL if SHARED_MEDICAL.is_file() else EXAMPLE_MEDICAL,
                   help="medical-r1 JSONL rows (default: ../shared/real-samples/medical_r1/val_sample.jsonl if present, "
                        "else examples/medical_r1/rows.jsonl)")
    p.add_argument("--moses", type=Path, default=SHARED_MOSES if SHARED_MOSES.is_dir() else EXAMPLE_MOSES,
                   help="Moses/OPUS folder with en and ja files for the translation case (default: ../shared KFTT if "
                        "present, else examples/moses)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu", help="gpu_bench.json goes here")
    p.add_argument("--work", type=Path, help="data, recipes and run outputs (default: OUT/work)")
    p.add_argument("--logs", type=Path, help="one log per run (default: OUT/logs)")
    p.add_argument("--models-dir", type=Path, help="random-weight models (default: $QFK_CACHE or "
                                                   "~/.cache/qwen_factory_kit, then bench-models/)")
    p.add_argument("--tiny", action="store_true", help="the kit's tiny CPU model for every case, small batches (smoke test)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every run")
    p.add_argument("--deadline-s", type=float, default=0, help="start no run that would end after this many seconds "
                   "from the bench's start (estimated from earlier runs, of the same model when there are; 0: none)")
    p.add_argument("--list-cases", action="store_true", help="list the cases and exit")
    p.add_argument("--build-only", action="store_true", help="build the models the cases need and exit")
    p.add_argument("--machine-info", action="store_true", help="print the machine and versions as JSON and exit")
    args = p.parse_args(argv)
    keys = list(CASES) if args.cases == "all" else [k.strip() for k in args.cases.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CASES]
    runners = [r.strip() for r in args.runner.split(",") if r.strip()]
    if unknown or not keys:
        p.error(f"unknown case(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(CASES)}")
    if not runners or any(r not in RUNNERS for r in runners):
        p.error(f"--runner takes {', '.join(RUNNERS)} (comma-separated), not {args.runner!r}")
    from qwen_factory_kit.tiny import cache_dir

    args.case_list, args.runners = [CASES[k] for k in keys], runners
    args.work = (args.work or args.out / "work").resolve()
    args.logs = (args.logs or args.out / "logs").resolve()
    args.models_dir = (args.models_dir or cache_dir() / "bench-models").resolve()
    return args


def execute(todo: list[tuple[Run, list[str]]], args, report) -> list[Run]:
    """Run the plan in order, writing the report after each run; skip what would pass the deadline."""
    runs: list[Run] = []
    for run, argv in todo:
        runs.append(run)
        same = [r.wall_s for r in runs if r.wall_s and r.model == run.model]
        longest = max(same or [r.wall_s for r in runs if r.wall_s] or [0])
        gone = time.monotonic() - STARTED
        if args.deadline_s and gone + longest > args.deadline_s:
            run.skipped = f"deadline: {gone:.0f} s gone of {args.deadline_s:.0f}, a run may take {longest:.0f} s"
        else:
            print(f"[bench] {run.label} / {run.runner}: {shlex.join(argv)}", flush=True)
            run_one(run, argv, args.work, args.logs, CASES[run.case].env if run.case in CASES else ())
            print(f"[bench]   exit {run.exit_code}  {_fmt(run.effective_tokens_per_sec, ',.0f')} tokens/s  "
                  f"{_fmt(run.s_per_step_steady, '.2f')} s/step  peak {_fmt(run.peak_gpu_memory_gb, '.1f')} GB  "
                  f"{run.wall_s:.0f} s  (log {run.log})", flush=True)
        add_ratios(runs)
        report(runs)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_cases:
        for c in CASES.values():
            print(f"{c.key:24} {c.label:36} {' '.join(c.overrides)}{'   (default)' if c.key in DEFAULT_CASES else ''}")
        return 0
    if args.machine_info:
        print(json.dumps(machine_info()))
        return 0
    if args.build_only:
        for size, folder in build_models(args.case_list, args.models_dir, args.tiny).items():
            print(json.dumps({"model": size, "folder": folder}))
        return 0
    return bench(args)


def bench(args) -> int:
    me = [sys.executable, str(Path(__file__).resolve())]
    args.work.mkdir(parents=True, exist_ok=True)
    machine = child_json([*me, "--machine-info"], args.work, "reading the machine")
    print(f"[bench] {machine.get('gpu') or 'no CUDA GPU'}; torch {machine.get('torch')}, LLaMA-Factory "
          f"{machine.get('llamafactory')}, transformers {machine.get('transformers')}", flush=True)
    build = [*me, "--build-only", "--cases", ",".join(c.key for c in args.case_list), "--models-dir", str(args.models_dir)]
    built = step(build + (["--tiny"] if args.tiny else []), args.work, "building the models")
    print(built, end="", flush=True)
    models = {d["model"]: d["folder"] for d in map(json.loads, filter(lambda l: l.startswith("{"), built.splitlines()))}
    qfk = commands()["qfk"]
    prepare_data(qfk, args.work, args.case_list, args.data.resolve(), args.moses.resolve())
    recipes = write_recipes(qfk, args.work, args.case_list, models)
    settings = {"steps": args.steps, "cases": [c.key for c in args.case_list], "runners": args.runners,
                "data": str(args.data), "moses": str(args.moses), "tiny": args.tiny, "set": args.set,
                "models": models, "recipes": recipes, "work": str(args.work), "commands": commands(),
                "memory_unit": "GB = 2**30 bytes"}
    report_path = args.out.resolve() / "gpu_bench.json"
    todo = plan(args.case_list, args.runners, recipes, args, bool(machine.get("cuda")))
    runs = execute(todo, args, lambda runs: write_report(report_path, machine, settings, runs))
    print("\n" + table(runs))
    print("\ntokens/s: effective_tokens_per_sec; x emitted: over the same runner's 'as emitted' case of the same "
          f"model/method/data; s/step: mean after the first two steps; peak smi: nvidia-smi memory.used (all processes); "
          f"torch: max_memory_allocated / max_memory_reserved.\nwrote {report_path}")
    return 0 if all(r.exit_code == 0 for r in runs if not r.skipped) else 1


if __name__ == "__main__":
    sys.exit(main())
