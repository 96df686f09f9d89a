"""The run record: ``OUTPUT_DIR/qfk_run.json``, what a run was made of and how it ended.

Written by rank 0 only: at the start (recipe and its sha256, overrides, resolved arguments, the
datasets' registry entries and qfk manifests with their file hashes, package versions, git state
of the working folder, host, PYTORCH_CUDA_ALLOC_CONF), when training begins (steps, world size,
resumed checkpoint) and at the end (status, metrics, files, timings).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

RECORD_NAME = "qfk_run.json"
#: environment variables of the training process kept in the record (qfk train sets the allocator's)
RECORDED_ENV = ("PYTORCH_CUDA_ALLOC_CONF",)
PACKAGES = ("qwen_factory_kit", "llamafactory", "torch", "transformers", "peft", "trl", "datasets", "accelerate",
            "deepspeed", "bitsandbytes", "flash_attn")


def is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name.replace("_", "-") if name != "qwen_factory_kit" else name)
        except PackageNotFoundError:
            continue
    try:
        import torch

        out["cuda"] = torch.version.cuda
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover
        pass
    return out


def git_state(folder: str | os.PathLike = ".") -> dict | None:
    """Commit, branch and whether the work tree has changes; None outside a git repository."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain") or ""
    return {"commit": commit, "branch": git("rev-parse", "--abbrev-ref", "HEAD"), "dirty": bool(status),
            "changed_files": len(status.splitlines())}


def datasets_used(args: dict) -> dict:
    """Registry entry and qfk manifest (sources, options, output hashes) of every dataset named."""
    from ..recipe.document import recipe_datasets
    from ..registry import Registry, manifest_for

    names = recipe_datasets(args)
    if not names:
        return {}
    reg = Registry.at(args.get("dataset_dir") or "data")
    try:
        info = reg.read()
    except Exception as exc:  # the run itself reports a broken registry
        return {"error": str(exc)}
    out = {}
    for name in names:
        entry = info.get(name)
        manifest = manifest_for(entry, reg.data_dir) if isinstance(entry, dict) else None
        out[name] = {"entry": entry, "manifest": manifest}
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunRecord:
    def __init__(self, recipe: str | None, overrides: list[str], args: dict, argv: list[str]):
        self.path = Path(str(args.get("output_dir") or ".")) / RECORD_NAME
        self.data: dict[str, Any] = {
            "qfk_run": 1,
            "status": "starting",
            "started": now(),
            "recipe": None,
            "overrides": overrides,
            "args": args,
            "command": [sys.executable, *argv],
            "cwd": os.getcwd(),
            "host": socket.gethostname(),
            "env": {k: os.environ.get(k) for k in RECORDED_ENV},
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        }
        if recipe:
            from ..io.atomic import sha256_file

            p = Path(recipe)
            self.data["recipe"] = {"path": str(p), "sha256": sha256_file(p), "text": p.read_text(encoding="utf-8")}

    def start(self) -> None:
        if not is_rank_zero():
            return
        self.data["versions"] = versions()
        self.data["git"] = git_state()
        self.data["datasets"] = datasets_used(self.data["args"])
        self.write()

    def begin(self, targs, state) -> None:
        self.data.update(status="running", total_steps=state.max_steps, resumed_from_step=state.global_step or None,
                         world_size=targs.world_size, device=str(targs.device))
        self.write()

    def finish(self, status: str, **extra: Any) -> None:
        if not is_rank_zero():
            return
        self.data.update(status=status, ended=now(), **extra)
        self.write()

    def write(self) -> None:
        from ..io.atomic import atomic_write_bytes

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, (json.dumps(self.data, indent=2, default=str, ensure_ascii=False) + "\n").encode())
