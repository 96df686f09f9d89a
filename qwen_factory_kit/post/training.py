"""After a run: the loss plot (PNG) and a short summary, from the trainer's log history.

Uses ``trainer_state.json``-style log entries (``{"step", "loss", "eval_loss", ...}``), so it works
on a finished output folder too: :func:`summarize` reads ``trainer_state.json`` when no history
is given. Called in the training process itself, the summary also holds PyTorch's peak GPU memory.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

PLOT_NAME = "qfk_loss.png"
SUMMARY_NAME = "qfk_summary.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin",
                "model.safetensors.index.json")


def _history(output_dir: Path, history: list[dict] | None) -> list[dict]:
    if history is not None:
        return history
    state = output_dir / "trainer_state.json"
    if state.is_file():
        return json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
    return []


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(h["step"], float(h[key])) for h in history if key in h and isinstance(h.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def cuda_peak_memory() -> dict:
    """This process's peak GPU memory as PyTorch's caching allocator counted it, in GB of 2**30 bytes
    (as LLaMA-Factory's ``RECORD_VRAM`` logs): allocated = live tensors, reserved = tensors plus the
    allocator's cache (what ``nvidia-smi`` shows, less the CUDA context). Empty when CUDA was not used."""
    torch = sys.modules.get("torch")  # never import torch (or start CUDA) just to ask
    try:
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return {}
        return {"peak_gpu_memory_allocated_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                "peak_gpu_memory_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2)}
    except Exception:  # pragma: no cover - a broken CUDA state must not lose the summary
        return {}


def plot_loss(history: list[dict], out: Path, title: str = "") -> Path | None:
    """Training loss (raw and smoothed) and eval loss against steps; None when nothing was logged."""
    steps, loss = _series(history, "loss")
    esteps, eloss = _series(history, "eval_loss")
    if not steps and not esteps:
        return None
    from ..plots import count_axis, pyplot, save

    fig, ax = pyplot().subplots(figsize=(7, 4), dpi=110)
    if steps:
        ax.plot(steps, loss, color="#9ecae1", linewidth=1, label="train loss")
        if len(loss) >= 5:
            alpha, acc, smooth = 0.8, loss[0], []
            for v in loss:
                acc = alpha * acc + (1 - alpha) * v
                smooth.append(acc)
            ax.plot(steps, smooth, color="#08519c", linewidth=2, label="train loss (smoothed)")
    if esteps:
        ax.plot(esteps, eloss, "o-", color="#d94801", label="eval loss")
    count_axis(ax.xaxis, "step")
    ax.set_ylabel("loss")
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title or "loss", 80)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, out)


def summarize(output_dir: str | Path, history: list[dict] | None = None, *, status: str = "ok", plot: bool = True,
              title: str = "") -> dict:
    """Write ``qfk_summary.json`` (and ``qfk_loss.png``) into ``output_dir``; return the summary."""
    from ..io.atomic import atomic_write_bytes

    out = Path(output_dir)
    hist = _history(out, history)
    _, loss = _series(hist, "loss")
    _, eloss = _series(hist, "eval_loss")
    final = next((h for h in reversed(hist) if "train_runtime" in h), {})
    steps = max((h.get("step", 0) for h in hist), default=0)
    finite = all(math.isfinite(v) for v in loss + eloss)
    summary = {
        "status": status,
        "output_dir": str(out),
        "steps": steps,
        "epoch": max((h.get("epoch", 0) for h in hist), default=0),
        "loss_first": loss[0] if loss else None,
        "loss_last": loss[-1] if loss else None,
        "loss_min": min(loss) if loss else None,
        "train_loss": final.get("train_loss"),
        "eval_loss_last": eloss[-1] if eloss else None,
        "loss_finite": finite,
        "train_runtime_s": final.get("train_runtime"),
        "train_samples_per_second": final.get("train_samples_per_second"),
        "weights": sorted(p.name for p in out.glob("*") if p.name in WEIGHT_FILES),
        "checkpoints": sorted((p.name for p in out.glob("checkpoint-*") if p.is_dir()), key=lambda n: int(n.split("-")[-1])),
        "plot": None,
        **cuda_peak_memory(),
    }
    predict = out / "predict_results.json"
    if predict.is_file():
        summary["predict_metrics"] = json.loads(predict.read_text(encoding="utf-8"))
    if (out / "generated_predictions.jsonl").is_file():
        summary["predictions"] = str(out / "generated_predictions.jsonl")
    if plot and (loss or eloss):
        made = plot_loss(hist, out / PLOT_NAME, title)
        summary["plot"] = str(made) if made else None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / SUMMARY_NAME, (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def summary_lines(s: dict, base: str | os.PathLike | None = None) -> list[str]:
    """A few lines a person reads after a run (paths shown under ``base``: the folder the run ran from)."""

    def shown(path: str) -> str:
        return str(Path(base) / path) if base is not None and not os.path.isabs(path) else path

    lines = [f"status: {s['status']}   steps: {s['steps']}   epoch: {s['epoch']:.2f}" if s.get("epoch") is not None
             else f"status: {s['status']}"]
    if s.get("loss_last") is not None:
        lines.append(f"loss: first {s['loss_first']:.4f}  last {s['loss_last']:.4f}  min {s['loss_min']:.4f}"
                     + (f"   eval {s['eval_loss_last']:.4f}" if s.get("eval_loss_last") is not None else ""))
    if not s.get("loss_finite", True):
        lines.append("LOSS IS NOT FINITE (nan/inf): lower learning_rate, check the data (qfk lint), or use bf16")
    if s.get("train_runtime_s"):
        lines.append(f"runtime: {s['train_runtime_s']:.1f} s   samples/s: {s.get('train_samples_per_second') or 0:.2f}")
    if s.get("peak_gpu_memory_allocated_gb") is not None:
        lines.append(f"peak GPU memory (PyTorch): {s['peak_gpu_memory_allocated_gb']:.1f} GB allocated, "
                     f"{s['peak_gpu_memory_reserved_gb']:.1f} GB reserved")
    if s.get("predict_metrics"):
        lines.append("predict: " + "  ".join(f"{k}={v}" for k, v in s["predict_metrics"].items()))
    files = s.get("weights", []) + s.get("checkpoints", [])
    lines.append(f"output: {shown(s['output_dir'])}  ({', '.join(files) or 'no weights'})")
    if s.get("plot"):
        lines.append(f"loss plot: {shown(s['plot'])}")
    return lines
