"""Launching LLaMA-Factory runs with the kit's plugin.

* :mod:`.entry` (``python -m qwen_factory_kit.launch recipe.yaml k=v``) is the training process:
  it registers the kit's LLaMA-Factory extensions (:mod:`.plugin`), adds the kit's callbacks
  (:mod:`.callbacks`) and calls LLaMA-Factory's ``run_exp``; then it post-processes the run.
* :mod:`.torchrun` composes the command: one process, or torchrun (``--nproc``, the multi-node
  variables LLaMA-Factory uses, DeepSpeed) running the same entry module on every rank.
* :mod:`.runner` is ``qfk train``: it starts that command, shows progress from the callbacks'
  events, stops cleanly on Ctrl-C (checkpoint saved, resumable) and reports the result.
* The DeepSpeed configs recipes name are presets: :mod:`qwen_factory_kit.recipe.presets` and
  ``recipe/deepspeed/``.
"""

from __future__ import annotations
