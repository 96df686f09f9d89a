"""The parts every recipe shares: its sections in order, the header (the commands that run it,
the override syntax), the footer (overrides, the command that made it), the think keys and the
``key=value`` overrides."""

from __future__ import annotations

import os
from pathlib import Path

from .document import Recipe, scalar
from .request import RecipeRequest, ThinkChoice

SECTION_ORDER = ("model", "method", "data", "training", "output", "eval", "generation", "export")


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _header(req: RecipeRequest, title: str, verb: str) -> list[str]:
    f = req.filename
    run = {"train": [f"llamafactory-cli train {f}", f"qfk train {f}                  # progress, run record, loss plot; --nproc N for more GPUs"],
           "predict": [f"llamafactory-cli train {f}", f"qfk train {f}"],
           "merge": [f"llamafactory-cli export {f}"]}[verb]
    example = {"train": "learning_rate=5.0e-6 num_train_epochs=3", "predict": "max_samples=100",
               "merge": "export_dir=models/merged"}[verb]
    lines = [f"qfk recipe: {title}", "", "Run it from the folder that holds the dataset_dir:"]
    lines += [f"  {r}" for r in run]
    lines += ["Override any key after the file as key=value" + (" (same syntax for both commands):" if len(run) > 1 else ":"),
              f"  {run[0].split()[0]} {run[0].split()[1]} {f} {example}",
              f"Check it first: qfk recipe check {f}", ""]
    return lines


def _footer(req: RecipeRequest) -> list[str]:
    from .. import __version__

    lines = list(req.notes)
    if req.overrides:
        lines.append("Overrides: " + " ".join(f"{k}={scalar(v)}" for k, v in req.overrides.items()))
    if req.command:
        lines.append(f"Made by: {req.command}" if req.curated else f"Made by qfk {__version__}: {req.command}")
    return lines


def _data_dir_value(data_dir: Path) -> str:
    rel = _rel(data_dir)
    return rel if not rel.startswith("..") else str(data_dir.resolve())


def _blank_recipe(kind: str) -> Recipe:
    r = Recipe(kind=kind)
    for s in SECTION_ORDER:
        r.section(s)
    return r


def _set_think_keys(data: dict, think: ThinkChoice) -> None:
    data["template"] = think.template
    if think.template == "qwen3":
        data["enable_thinking"] = think.enable


def _set_device_keys(r: Recipe, req: RecipeRequest) -> list[str]:
    """``--device cpu``: the keys that run the recipe on a CPU as it is (:func:`.cpu.cpu_plan` of the
    recipe as built; a key it nulls is removed), set in ``r``; returns the header's line ([] for a GPU)."""
    if req.device != "cpu":
        return []
    from .cpu import cpu_plan

    keys = cpu_plan(r.args, False, written=True).overrides
    for key, value in keys.items():
        if value is None:
            r.remove(key)
        else:
            r.set(key, value)
    r.comments["use_cpu"] = "--device cpu: runs on this machine's CPU"
    if r.kind == "train" and (r.args.get("logging_steps") or 1) > 1:
        r.set("logging_steps", 1, comment="--device cpu: a CPU run has few steps: log (and plot) each one")
    shown = ", ".join(f"{k} {scalar(v)}" for k, v in keys.items() if v is not None)
    return [f"Device: CPU (--device cpu): {shown}; no GPU memory estimate"]


def _apply_overrides(r: Recipe, overrides: dict) -> None:
    for key, value in (overrides or {}).items():
        r.set(key, value, comment="override")
