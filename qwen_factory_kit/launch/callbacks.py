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
* a non-finite loss is recorded and stops the run (a NaN run is a failed run);
* prediction progress (``do_predict``): :class:`PredictMeter` counts the rows and new tokens of
  each ``generate`` call; after each prediction step a ``predict`` event carries rows done of
  total, new tokens and the seconds since the first batch started (run directly: a line to stderr
  at most every :data:`PLAIN_EVERY` seconds, as ``qfk train``/``qfk eval`` print off a terminal).
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
#: seconds between two plain progress lines (off a terminal, or run without qfk train)
PLAIN_EVERY = 5.0


class Spaced:
    """Plain progress lines at most every :data:`PLAIN_EVERY` seconds; the last one always."""

    def __init__(self) -> None:
        self.last = 0.0

    def due(self, final: bool = False) -> bool:
        now = time.time()
        if final or now - self.last >= PLAIN_EVERY:
            self.last = now
            return True
        return False


_human_lines = Spaced()


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
    elif event.get("event") == "predict":
        if _human_lines.due(final=event.get("rows") == event.get("total")):
            sys.stderr.write(f"[qfk] {predict_line('predicting', event)}\n")


def predict_line(label: str, event: dict) -> str:
    """'LABEL: 2/4 rows, 31 tok/s, ETA 0:40' for a ``predict`` event."""
    rows, total = event.get("rows", 0), event.get("total")
    line = f"{label}: {rows}/{total if total else '?'} rows"
    elapsed = event.get("elapsed_s") or 0.0
    if elapsed > 0:
        line += f", {event.get('new_tokens', 0) / elapsed:.0f} tok/s"
    eta = predict_eta(event)
    if eta is not None:
        line += f", ETA {clock(eta)}"
    return line


def predict_eta(event: dict) -> float | None:
    """Seconds left at the rate of the rows done so far (None before the first batch)."""
    rows, total, elapsed = event.get("rows") or 0, event.get("total") or 0, event.get("elapsed_s") or 0.0
    if rows <= 0 or total <= 0 or elapsed <= 0:
        return None
    return elapsed / rows * max(0, total - rows)


def clock(seconds: float) -> str:
    """'0:40', '1:02:03'."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class PredictMeter:
    """Rows and new tokens generated in this process (rank), counted around ``generate``."""

    def __init__(self) -> None:
        self.rows = 0
        self.new_tokens = 0
        self.started: float | None = None
        self._original = None

    def install(self) -> "PredictMeter":
        """Count every ``generate`` call of this process (LLaMA-Factory's predict loop calls it once a batch)."""
        from transformers.generation.utils import GenerationMixin

        original = GenerationMixin.generate
        meter = self

        def generate(model, *args, **kwargs):
            if meter.started is None:
                meter.started = time.time()
            out = original(model, *args, **kwargs)
            meter.count(kwargs.get("input_ids", args[0] if args else None), out, kwargs.get("pad_token_id"))
            return out

        generate.__wrapped__ = original  # type: ignore[attr-defined]
        self._original = original
        GenerationMixin.generate = generate  # type: ignore[method-assign]
        return self

    def uninstall(self) -> None:
        if self._original is not None:
            from transformers.generation.utils import GenerationMixin

            GenerationMixin.generate = self._original  # type: ignore[method-assign]
            self._original = None

    def count(self, input_ids, out, pad_token_id) -> None:
        sequences = getattr(out, "sequences", out)
        shape = getattr(sequences, "shape", None)
        if shape is None or len(shape) != 2:
            return
        prompt = input_ids.shape[-1] if getattr(input_ids, "shape", None) is not None else 0
        new = sequences[:, prompt:]
        self.rows += int(shape[0])
        self.new_tokens += int((new != pad_token_id).sum()) if pad_token_id is not None else int(new.numel())

    def event(self, total: int | None) -> dict:
        elapsed = time.time() - self.started if self.started is not None else 0.0
        rows = min(self.rows, total) if total else self.rows
        return {"event": "predict", "rows": rows, "total": total, "new_tokens": self.new_tokens,
                "elapsed_s": round(elapsed, 3)}


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
    def __init__(self, run: Any, stop: StopRequest, meter: PredictMeter | None = None):
        self.run = run
        self.stop = stop
        self.meter = meter
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

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.meter is None or not state.is_world_process_zero:
            return control
        emit(self.meter.event(_rows_to_predict(kwargs.get("eval_dataloader"), args)))
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.log_history = list(state.log_history)
        self.global_step = state.global_step
        self.max_steps = state.max_steps


def _rows_to_predict(dataloader, args) -> int | None:
    """The rows this rank predicts (the dataset split over the processes), None when unknown."""
    try:
        n = len(dataloader.dataset)
    except (AttributeError, TypeError):
        return None
    world = max(1, int(getattr(args, "world_size", 1) or 1))
    return math.ceil(n / world)
