"""``qfk train``: check the recipe before anything is written (:func:`prepare_training`), then
start the entry module (directly or under torchrun), show progress, stop cleanly (:func:`run_training`).

The child's output (LLaMA-Factory's logs, tqdm) goes to ``OUTPUT_DIR/qfk_train.log``; the
callbacks' events drive the progress bar (or, without a terminal, a line per logging step).
Ctrl-C creates the stop file: every rank finishes its step, a checkpoint is saved, the run stops
with status 130 and the same command resumes it. A second Ctrl-C terminates the processes.

The child's environment is the user's (without the kit's quieting of LLaMA-Factory's logs) plus
what :func:`.torchrun.compose` adds (on a GPU: PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
unless the user set it), written at the top of each run in the log and kept in the result's ``env``.
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
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import QfkError
from ..findings import Finding, failures
from ..lfbridge import child_environ
from ..redact import redact_assignments
from .callbacks import EVENT_PREFIX, Spaced
from .torchrun import Launch, compose

LOG_NAME = "qfk_train.log"


@dataclass
class TrainResult:
    returncode: int
    output_dir: str
    log: str
    launch: list[str]
    env: dict = field(default_factory=dict)  # the variables qfk added to the training process's environment
    status: str = "unknown"
    summary: dict = field(default_factory=dict)
    events: int = 0
    last_step: int = 0
    predicted: dict = field(default_factory=dict)  # the last prediction progress event (rows, new_tokens, elapsed_s)
    error: str | None = None
    tail: list[str] = field(default_factory=list)  # the child's last output lines (not in as_dict)

    def as_dict(self) -> dict:
        return {"returncode": self.returncode, "status": self.status, "output_dir": self.output_dir, "log": self.log,
                "launch": self.launch, "env": self.env, "last_step": self.last_step, "error": self.error,
                "summary": self.summary}


class _Progress:
    """A rich bar on a terminal, plain lines otherwise: training steps, or predicted rows."""

    def __init__(self, console, live: bool, label: str | None = None):
        self.console = console
        self.live = live
        self.label = label or "predicting"
        self.bar = None
        self.task = None
        self.loss = None
        self.plain = Spaced()

    def begin(self, total: int, step: int) -> None:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console)
            self.bar.start()
            self.task = self.bar.add_task("train", total=total or None, completed=step, loss="-")
        else:
            self.console.print(f"training: {total} steps" + (f", resuming at step {step}" if step else ""))

    def begin_predict(self, total: int | None) -> None:
        """The prediction bar at 0 rows (the model is loading), or a first plain line."""
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                                console=self.console)
            self.bar.start()
            self.task = self.bar.add_task("predict", total=total or None, completed=0, rate="loading the model", eta="-")
        else:
            self.console.print(f"{self.label}: 0/{total or '?'} rows (loading the model)", soft_wrap=True)
            self.plain.due(final=True)

    def update(self, ev: dict) -> None:
        if ev.get("event") == "predict":
            self._predict(ev)
            return
        if "loss" in ev and isinstance(ev["loss"], (int, float)):
            self.loss = ev["loss"]
        if self.bar is not None:
            self.bar.update(self.task, completed=ev.get("step", 0), total=ev.get("total") or None,
                            loss=f"{self.loss:.4f}" if self.loss is not None else "-")
        elif ev.get("event") == "log" and "loss" in ev:
            eta = ev.get("eta_s")
            self.console.print(f"step {ev['step']}/{ev['total']}  loss {ev['loss']:.4f}" + (f"  eta {int(eta)}s" if eta is not None else ""))

    def _predict(self, ev: dict) -> None:
        from .callbacks import clock, predict_eta, predict_line

        if self.bar is None and self.live:
            self.begin_predict(ev.get("total"))
        if self.bar is not None:
            elapsed, eta = ev.get("elapsed_s") or 0.0, predict_eta(ev)
            self.bar.update(self.task, completed=ev.get("rows", 0), total=ev.get("total") or None,
                            rate=f"{ev.get('new_tokens', 0) / elapsed:.0f} tok/s" if elapsed > 0 else "",
                            eta=clock(eta) if eta is not None else "-")
        elif self.plain.due(final=ev.get("rows") == ev.get("total")):
            self.console.print(predict_line(self.label, ev), soft_wrap=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


# ---------------------------------------------------------------------------------------------
# before launch: the checks, the mix entries, the command
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainPlan:
    """What ``qfk train`` launches, and what the checks before it found."""

    recipe: str
    overrides: list[str]
    args: dict
    launch: Launch | None = None
    data_dir: str = "data"
    registered: list[str] = field(default_factory=list)  # the *__nN / *__tN mix entries registered in data_dir
    findings: list[Finding] = field(default_factory=list)  # the warnings and failures worth showing
    cpu: dict = field(default_factory=dict)  # the overrides --cpu applied (before the user's), {} without --cpu


class TrainingRefused(QfkError):
    """The checks before launch failed; nothing was started (``plan`` holds what they found)."""

    def __init__(self, message: str, hint: str | None, plan: TrainPlan):
        super().__init__(message, hint)
        self.plan = plan


def prepare_training(recipe: str, overrides: list[str] | tuple[str, ...] = (), *, nproc: int | None = None,
                     check: bool = True, cpu: bool = False, cuda: bool | None = None) -> TrainPlan:
    """Everything ``qfk train`` does before it starts a process, in order:

    1. load the recipe with its overrides; refuse a merge (export) recipe;
    2. the device (:func:`fit_device`): ``cpu`` puts the overrides that run the recipe on a CPU
       before the user's; a recipe that would stop on this machine (no CUDA: ``cuda``, by default
       whether a GPU is visible) is refused, naming those overrides;
    3. LLaMA-Factory's own argument parsing and the value types, before anything is written
       (an unknown key stops here, with the LLaMA-Factory argument it is closest to);
    4. register the mix entries the recipe names (``NAME__nN``; ``NAME__tN``, its rows picked again);
    5. the kit's quick checks (datasets, template, think mode, output_dir, machine; no length stats);
    6. compose the launch command (one process or torchrun; one process on the CPU with ``cpu``).

    ``check=False`` skips the refusal of 2, and 3 and 5. Raises :class:`TrainingRefused` when a check fails."""
    from ..recipe.mix import register_mix_entries
    from ..recipe.check import check_llamafactory, check_recipe
    from ..recipe.document import load_recipe

    plan = TrainPlan(str(recipe), list(overrides), load_recipe(recipe, overrides))
    _refuse_export(plan)
    fit_device(plan, cpu=cpu, cuda=cuda, refuse=check)
    if check:
        plan.findings += _worth_showing(check_llamafactory(_as_parsed_at_launch(plan.args)))
        _stop_on_failure(plan)
    plan.data_dir, plan.registered = register_mix_entries(plan.args)
    if check:
        plan.findings += _worth_showing(check_recipe(plan.args, parse=False, types=False, stats=False))
        _stop_on_failure(plan)
    plan.launch = compose(plan.recipe, plan.overrides, nproc=nproc, args=plan.args, devices=0 if cpu else None)
    if cpu:
        from ..recipe.cpu import CPU_ENV

        plan.launch.env[CPU_ENV] = json.dumps(plan.cpu)  # the run record keeps what --cpu applied
    return plan


def fit_device(plan: TrainPlan, *, cpu: bool, cuda: bool | None = None, refuse: bool = True) -> None:
    """``--cpu``: the overrides that run the recipe on a CPU (:func:`..recipe.cpu.cpu_plan`) go before
    the user's, who may still set any key. Then, where the run is on a CPU, a recipe that would stop
    there is refused (``refuse``) with the overrides that fix it and the ``--cpu`` command."""
    from ..recipe.cpu import cpu_plan, refusal
    from ..recipe.document import load_recipe, parse_overrides, scalar
    from .torchrun import device_count

    cuda = device_count() > 0 if cuda is None else cuda
    typed = list(plan.overrides)
    if cpu:
        given = parse_overrides(typed)  # the user's keys are theirs: --cpu adds the others
        plan.cpu = {k: v for k, v in cpu_plan(plan.args, cuda).overrides.items() if k not in given}
        plan.overrides = [*(f"{k}={scalar(v)}" for k, v in plan.cpu.items()), *typed]
        plan.args = load_recipe(plan.recipe, plan.overrides)
    fit = cpu_plan(plan.args, cuda and not cpu)
    if refuse and fit.refused:
        import shlex

        raise refusal(fit, plan.recipe, shlex.join(["qfk", "train", plan.recipe, *redact_assignments(typed)]))


def _refuse_export(plan: TrainPlan) -> None:
    if plan.args.get("export_dir"):
        raise QfkError(f"{plan.recipe} is a merge/export recipe (export_dir is set), not a training run",
                       f"run it with: llamafactory-cli export {plan.recipe}")


def _as_parsed_at_launch(args: dict) -> dict:
    """The arguments as the launched process will see them: a shipped DeepSpeed config that is
    missing here is written by :func:`run_training` before the launch, so its absence is no fault."""
    if _missing_shipped_file(args):
        return {k: v for k, v in args.items() if k != "deepspeed"}
    return args


def _worth_showing(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity in ("error", "warn")]


def _stop_on_failure(plan: TrainPlan) -> None:
    bad = failures(plan.findings)
    if not bad:
        return
    fix = (unknown_key_hint(plan.args, bad[0].message) if bad[0].id == "keys" else "") or bad[0].fix
    sep = " " if fix.endswith("?") else "; "
    raise TrainingRefused(f"{plan.recipe} fails {len(bad)} check(s): {bad[0].text}",
                          (fix + sep if fix else "") + "full report: qfk recipe check " + plan.recipe, plan)


def unknown_key_hint(args: dict, message: str) -> str:
    """'KEY is not a LLaMA-Factory argument: did you mean NAME?' for each key that LLaMA-Factory's
    parser named in ``message`` and that is close to one of its argument names; '' when none is."""
    import difflib

    names = _argument_names()
    hints = []
    for key in args:
        if key in names or f"'{key}'" not in message:
            continue
        close = difflib.get_close_matches(key, names, n=1)
        if close:
            hints.append(f"{key} is not a LLaMA-Factory argument: did you mean {close[0]}?")
    return "; ".join(hints)


def _argument_names() -> list[str]:
    """Every argument name LLaMA-Factory's parser accepts."""
    from ..lfbridge import argument_fields  # the one place that reads LLaMA-Factory's argument classes

    return sorted(argument_fields())


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _missing_shipped_file(args: dict) -> bool:
    ds = args.get("deepspeed")
    return isinstance(ds, str) and ds.startswith("deepspeed/") and not Path(ds).exists()


def _ensure_shipped_files(args: dict) -> None:
    """A recipe that names a shipped DeepSpeed config gets it written if it is missing."""
    if _missing_shipped_file(args):
        from ..recipe.presets import deepspeed_config

        ds = Path(args["deepspeed"])
        src = deepspeed_config(ds.name)
        ds.parent.mkdir(parents=True, exist_ok=True)
        ds.write_bytes(src.read_bytes())


def run_training(recipe: str, overrides: list[str], *, nproc: int | None = None, console=None, verbose: bool = False,
                 live: bool | None = None, launch: Launch | None = None, label: str | None = None,
                 predict_rows: int | None = None) -> TrainResult:
    """Start the training process, follow its events into a progress display and its output into
    OUTPUT_DIR/qfk_train.log, and return how it ended (Ctrl-C: stop file, then SIGTERM, SIGKILL).

    A predict run shows ``label`` ('predicting NAME (tuned)') with rows done of ``predict_rows``
    from the start (while the model loads), then rows, new tokens/s and the ETA."""
    from ..recipe.document import load_recipe

    args = load_recipe(recipe, overrides)
    out = _output_dir(recipe, args)
    _ensure_shipped_files(args)
    launch = launch or compose(recipe, overrides, nproc=nproc, args=args)
    out.mkdir(parents=True, exist_ok=True)
    if console is None:
        console = _stderr_console()
    progress = _Progress(console, (console.is_terminal and not verbose) if live is None else live, label)
    shown = replace(launch, argv=redact_assignments(launch.argv))  # what the log and the result show: no token
    result = TrainResult(1, str(out), str(out / LOG_NAME), shown.argv, dict(launch.env))
    stop_file = Path(tempfile.gettempdir()) / f"qfk-stop-{os.getpid()}-{int(time.time() * 1000)}"
    proc = subprocess.Popen(launch.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=training_environ(launch, stop_file), start_new_session=True, encoding="utf-8",
                            errors="replace")
    previous = signal.signal(signal.SIGINT, _Interrupts(proc, stop_file, progress, console))
    if predict_rows is not None:
        progress.begin_predict(predict_rows)
    tail: deque[str] = deque(maxlen=40)
    try:
        with open(out / LOG_NAME, "a", encoding="utf-8") as log:
            log.write(f"\n===== qfk train {recipe} {' '.join(redact_assignments(overrides))} "
                      f"({time.strftime('%Y-%m-%d %H:%M:%S')})\n"
                      f"===== {shown.describe()}\n")
            _follow(proc, log, result, progress, tail, verbose)
        result.returncode = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.stop()
        if proc.poll() is None:  # pragma: no cover - only when the parent itself is failing
            _signal_group(proc, signal.SIGKILL)
        stop_file.unlink(missing_ok=True)
    _conclude(result, list(tail))
    return result


def training_environ(launch: Launch, stop_file: Path) -> dict:
    """The training process's environment: the user's (without the kit's quieting), what ``launch``
    adds (the allocator setting, torchrun's), and the kit's event and stop-file variables."""
    return child_environ({**launch.env, "QFK_EVENTS": "1", "QFK_STOP_FILE": str(stop_file), "PYTHONUNBUFFERED": "1"})


def _output_dir(recipe: str, args: dict) -> Path:
    out = Path(str(args.get("output_dir") or ""))
    if not str(out) or str(out) == ".":
        raise QfkError(f"{recipe} sets no output_dir", "add output_dir: saves/NAME to the recipe, or output_dir=... on the command line")
    return out


def _stderr_console():
    from ..console import console

    return console(stderr=True)


class _Interrupts:
    """SIGINT: the first asks every rank to stop after its step (checkpoint saved), the second
    terminates the processes, a third kills them."""

    def __init__(self, proc: subprocess.Popen, stop_file: Path, progress: _Progress, console):
        self.proc, self.stop_file, self.progress, self.console = proc, stop_file, progress, console
        self.count = 0

    def __call__(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            self.stop_file.touch()
            self.progress.stop()
            self.console.print("[yellow]stopping after this step; a checkpoint is saved (Ctrl-C again to abort)[/]")
        elif self.count == 2:
            self.console.print("[red]aborting: terminating the training processes[/]")
            _signal_group(self.proc, signal.SIGTERM)
        else:
            _signal_group(self.proc, signal.SIGKILL)


def _follow(proc: subprocess.Popen, log, result: TrainResult, progress: _Progress, tail: deque, verbose: bool) -> None:
    """Read the child's output to its end: event lines drive the progress and the result, the
    rest goes to the log (and the tail kept for the error message)."""
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
            _on_event(ev, result, progress)
            continue
        if not line.strip():
            continue
        log.write(line)
        tail.append(line.rstrip("\n"))
        if verbose:
            sys.stderr.write(line)


def _on_event(ev: dict, result: TrainResult, progress: _Progress) -> None:
    result.events += 1
    kind = ev.get("event")
    if kind == "begin":
        progress.begin(ev.get("total", 0), ev.get("step", 0))
    elif kind in ("step", "log"):
        result.last_step = max(result.last_step, ev.get("step", 0))
        progress.update(ev)
    elif kind == "predict":
        result.predicted = ev
        progress.update(ev)
    elif kind == "end":
        result.status, result.summary = ev.get("status", "unknown"), ev.get("summary", {})
    elif kind == "failed":
        result.status, result.error = "failed", ev.get("error")


def _conclude(result: TrainResult, tail: list[str]) -> None:
    """The run's status from its exit code and events; a failure without an event names the last error line."""
    if result.returncode == 130 or result.status == "stopped":
        result.status = "stopped"
    elif result.returncode != 0:
        result.status = "failed"
        if not result.error:
            result.error = next((l for l in reversed(tail) if l.strip() and not l.startswith(" ")), "see the log")
    result.tail = tail


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
