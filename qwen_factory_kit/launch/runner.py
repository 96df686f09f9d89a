"""``qfk train``: start the entry module (directly or under torchrun), show progress, stop cleanly.

The child's output (LLaMA-Factory's logs, tqdm) goes to ``OUTPUT_DIR/qfk_train.log``; the
callbacks' events drive the progress bar (or, without a terminal, a line per logging step).
Ctrl-C creates the stop file: every rank finishes its step, a checkpoint is saved, the run stops
with status 130 and the same command resumes it. A second Ctrl-C terminates the processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QfkError
from ..lfbridge import child_environ
from .callbacks import EVENT_PREFIX
from .torchrun import Launch, compose

LOG_NAME = "qfk_train.log"


@dataclass
class TrainResult:
    returncode: int
    output_dir: str
    log: str
    launch: list[str]
    status: str = "unknown"
    summary: dict = field(default_factory=dict)
    events: int = 0
    last_step: int = 0
    error: str | None = None

    def as_dict(self) -> dict:
        return {"returncode": self.returncode, "status": self.status, "output_dir": self.output_dir, "log": self.log,
                "launch": self.launch, "last_step": self.last_step, "error": self.error, "summary": self.summary}


class _Progress:
    """A rich bar on a terminal, plain lines otherwise."""

    def __init__(self, console, live: bool):
        self.console = console
        self.live = live
        self.bar = None
        self.task = None
        self.loss = None

    def begin(self, total: int, step: int) -> None:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console)
            self.bar.start()
            self.task = self.bar.add_task("train", total=total or None, completed=step, loss="-")
        else:
            self.console.print(f"training: {total} steps" + (f", resuming at step {step}" if step else ""))

    def update(self, ev: dict) -> None:
        if "loss" in ev and isinstance(ev["loss"], (int, float)):
            self.loss = ev["loss"]
        if self.bar is not None:
            self.bar.update(self.task, completed=ev.get("step", 0), total=ev.get("total") or None,
                            loss=f"{self.loss:.4f}" if self.loss is not None else "-")
        elif ev.get("event") == "log" and "loss" in ev:
            eta = ev.get("eta_s")
            self.console.print(f"step {ev['step']}/{ev['total']}  loss {ev['loss']:.4f}" + (f"  eta {int(eta)}s" if eta is not None else ""))

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _ensure_shipped_files(args: dict) -> None:
    """A recipe that names a shipped DeepSpeed config gets it written if it is missing."""
    ds = args.get("deepspeed")
    if isinstance(ds, str) and not Path(ds).exists() and ds.startswith("deepspeed/"):
        from . import deepspeed_config

        src = deepspeed_config(Path(ds).name)
        Path(ds).parent.mkdir(parents=True, exist_ok=True)
        Path(ds).write_bytes(src.read_bytes())


def run_training(recipe: str, overrides: list[str], *, nproc: int | None = None, console=None, verbose: bool = False,
                 live: bool | None = None, launch: Launch | None = None) -> TrainResult:
    from ..recipe.document import load_recipe

    args = load_recipe(recipe, overrides)
    out = Path(str(args.get("output_dir") or ""))
    if not str(out) or str(out) == ".":
        raise QfkError(f"{recipe} sets no output_dir", "add output_dir: saves/NAME to the recipe, or output_dir=... on the command line")
    _ensure_shipped_files(args)
    launch = launch or compose(recipe, overrides, nproc=nproc, args=args)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_NAME
    stop_file = Path(tempfile.gettempdir()) / f"qfk-stop-{os.getpid()}-{int(time.time() * 1000)}"
    env = child_environ({**launch.env, "QFK_EVENTS": "1", "QFK_STOP_FILE": str(stop_file), "PYTHONUNBUFFERED": "1"})
    if console is None:
        from ..cli.common import console as make_console

        console = make_console(stderr=True)
    live = (console.is_terminal and not verbose) if live is None else live
    progress = _Progress(console, live)
    result = TrainResult(1, str(out), str(log_path), launch.argv)
    tail: deque[str] = deque(maxlen=40)
    interrupts = 0

    proc = subprocess.Popen(launch.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=env, start_new_session=True, encoding="utf-8", errors="replace")

    def on_sigint(signum, frame):
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            stop_file.touch()
            progress.stop()
            console.print("[yellow]stopping after this step; a checkpoint is saved (Ctrl-C again to abort)[/]")
        elif interrupts == 2:
            console.print("[red]aborting: terminating the training processes[/]")
            _signal_group(proc, signal.SIGTERM)
        else:
            _signal_group(proc, signal.SIGKILL)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\n===== qfk train {recipe} {' '.join(overrides)} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n"
                      f"===== {launch.describe()}\n")
            assert proc.stdout is not None
            for line in proc.stdout:
                at = line.find(EVENT_PREFIX)
                if at >= 0:
                    if line[:at].strip():
                        log.write(line[:at] + "\n")
                    try:
                        ev = json.loads(line[at + len(EVENT_PREFIX):])
                    except json.JSONDecodeError:
                        continue
                    result.events += 1
                    kind = ev.get("event")
                    if kind == "begin":
                        progress.begin(ev.get("total", 0), ev.get("step", 0))
                    elif kind in ("step", "log"):
                        result.last_step = max(result.last_step, ev.get("step", 0))
                        progress.update(ev)
                    elif kind == "end":
                        result.status, result.summary = ev.get("status", "unknown"), ev.get("summary", {})
                    elif kind == "failed":
                        result.status, result.error = "failed", ev.get("error")
                    continue
                if not line.strip():
                    continue
                log.write(line)
                tail.append(line.rstrip("\n"))
                if verbose:
                    sys.stderr.write(line)
        result.returncode = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.stop()
        if proc.poll() is None:  # pragma: no cover - only when the parent itself is failing
            _signal_group(proc, signal.SIGKILL)
        stop_file.unlink(missing_ok=True)
    if result.returncode == 130 or result.status == "stopped":
        result.status = "stopped"
    elif result.returncode != 0:
        result.status = "failed"
        if not result.error:
            result.error = next((l for l in reversed(tail) if l.strip() and not l.startswith(" ")), "see the log")
    result.tail = list(tail)  # type: ignore[attr-defined]
    return result


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
