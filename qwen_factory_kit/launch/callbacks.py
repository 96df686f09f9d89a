"""Trainer callbacks the kit adds to LLaMA-Factory runs (through :mod:`.entry`).

:class:`QfkCallback`:

* progress: on rank 0, each step and each log emits an event. Under ``qfk train`` (``QFK_EVENTS=1``)
  events are ``@@qfk {json}`` lines on stdout, which the parent turns into a rich progress bar
  (steps, loss, ETA); run directly, a short line per logging step goes to stderr;
* run record: ``OUTPUT_DIR/qfk_run.json`` at the start (recipe, data manifests, versions, git state);
  :mod:`.entry` completes it at the end;
* clean stop: when ``QFK_STOP_FILE`` appears (``qfk train`` creates it on Ctrl-C) or SIGINT reaches
  this process, the trainer saves a checkpoint at the end of the current step and stops; all ranks
  agree on the step (one all-reduce of a flag per step when distributed);
* a non-finite loss is recorded and stops the run (a NaN run is a failed run).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

from transformers import TrainerCallback

EVENT_PREFIX = "@@qfk "


def emit(event: dict) -> None:
    """Send an event to ``qfk train`` (or a human line when running without it)."""
    if os.environ.get("QFK_EVENTS") == "1":
        # own line: tqdm leaves stderr (the same pipe under qfk train) in the middle of one
        sys.stdout.write("\n" + EVENT_PREFIX + json.dumps(event, default=str) + "\n")
        sys.stdout.flush()
    elif event.get("event") == "log" and "loss" in event:
        eta = event.get("eta_s")
        sys.stderr.write(f"[qfk] step {event['step']}/{event['total']} loss {event['loss']:.4f}"
                         + (f" eta {int(eta)}s" if eta is not None else "") + "\n")


class StopRequest:
    """Ctrl-C (SIGINT) or the stop file: finish the step, save, stop."""

    def __init__(self) -> None:
        self.signalled = False
        self.file = os.environ.get("QFK_STOP_FILE")

    def local(self) -> bool:
        return self.signalled or bool(self.file and os.path.exists(self.file))

    def agreed(self) -> bool:
        flag = self.local()
        try:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
                t = torch.tensor([1 if flag else 0], device=device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                flag = bool(t.item())
        except Exception:  # pragma: no cover - a broken process group surfaces in the trainer itself
            pass
        return flag


class QfkCallback(TrainerCallback):
    def __init__(self, run: Any, stop: StopRequest):
        self.run = run
        self.stop = stop
        self.started = time.time()
        self.first_step: int | None = None
        self.last_emit = 0.0
        self.log_history: list[dict] = []
        self.stopped_at: int | None = None
        self.nonfinite_at: int | None = None
        self.max_steps = 0
        self.global_step = 0

    # -- helpers -----------------------------------------------------------------------------
    def _eta(self, state) -> float | None:
        if self.first_step is None or state.global_step <= self.first_step:
            return None
        rate = (time.time() - self.started) / (state.global_step - self.first_step)
        return rate * max(0, state.max_steps - state.global_step)

    # -- trainer events ----------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        self.first_step = state.global_step
        self.max_steps = state.max_steps
        if state.is_world_process_zero:
            self.run.begin(args, state)
            emit({"event": "begin", "step": state.global_step, "total": state.max_steps,
                  "output_dir": args.output_dir, "resumed": state.global_step > 0})

    def on_step_end(self, args, state, control, **kwargs):
        self.global_step = state.global_step
        if state.is_world_process_zero and time.time() - self.last_emit > 0.25:
            self.last_emit = time.time()
            emit({"event": "step", "step": state.global_step, "total": state.max_steps, "eta_s": self._eta(state)})
        if self.stop.agreed():
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                emit({"event": "stopping", "step": state.global_step})
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        for key in ("loss", "eval_loss"):
            value = logs.get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value) and self.nonfinite_at is None:
                self.nonfinite_at = state.global_step
                control.should_training_stop = True
        if state.is_world_process_zero:
            emit({"event": "log", "step": state.global_step, "total": state.max_steps, "eta_s": self._eta(state),
                  **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}})
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.log_history = list(state.log_history)
        self.global_step = state.global_step
        self.max_steps = state.max_steps
