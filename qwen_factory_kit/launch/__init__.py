"""Launching LLaMA-Factory runs with the kit's plugin.

* :mod:`.entry` (``python -m qwen_factory_kit.launch recipe.yaml k=v``) is the training process:
  it registers the kit's LLaMA-Factory extensions (:mod:`.plugin`), adds the kit's callbacks
  (:mod:`.callbacks`) and calls LLaMA-Factory's ``run_exp``; then it post-processes the run.
* :mod:`.torchrun` composes the command: one process, or torchrun (``--nproc``, the multi-node
  variables LLaMA-Factory uses, DeepSpeed) running the same entry module on every rank.
* :mod:`.runner` is ``qfk train``: it starts that command, shows progress from the callbacks'
  events, stops cleanly on Ctrl-C (checkpoint saved, resumable) and reports the result.
* ``deepspeed/`` holds ZeRO-2/ZeRO-3 (and CPU offload) configs: the LLaMA-Factory wheel ships none.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import QfkError

DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"


def deepspeed_config(name: str) -> Path:
    """A shipped DeepSpeed config by file name (``ds_z3_config.json`` ...)."""
    path = DEEPSPEED_DIR / name
    if not path.is_file():
        names = ", ".join(sorted(p.name for p in DEEPSPEED_DIR.glob("*.json")))
        raise QfkError(f"the kit ships no DeepSpeed config named {name}", f"choose one of: {names}")
    return path
