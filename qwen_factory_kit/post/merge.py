"""``qfk merge RUN_DIR``: a LoRA run's adapter merged into its base model, ready to serve.

1. read the run record (``RUN_DIR/qfk_run.json``): base model, template, ``enable_thinking``;
2. write the export recipe with the kit's recipe builder (``qfk recipe new --method merge``): a
   QLoRA adapter merges onto the unquantized base (the recipe has no quantization keys);
3. run ``llamafactory-cli export`` into a staging folder beside OUT (a failed export leaves OUT as it was);
4. write Qwen3's recommended sampling for the run's think mode into ``generation_config.json``
   (eos/pad ids kept) and ``qfk_serving.json`` (template, thinking mode, sampling, base model,
   adapter, source run, kit version): how ``qfk chat`` and other servers must run the model;
5. move the folder into OUT.

Step 4 also makes the merged chat template default to the trained think mode and replaces the
plain ChatML ``Modelfile`` LLaMA-Factory's export writes with a thinking-aware one
(:mod:`.serving_files`); ``qfk_serving.json`` records both and the ``vllm serve`` line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import QfkError
from ..recipe import presets
from ..recipe.document import Recipe
from .served import SERVING_NAME, TrainedRun, read_run, require_adapter, serving_thinking
from .serving_files import modelfile, set_template_default, vllm_command

RECIPE_NAME = "qfk_merge.yaml"
LOG_NAME = "qfk_merge.log"
MODELFILE = "Modelfile"
GENERATION_CONFIG = "generation_config.json"
#: weight files of an earlier export that a new one (with --force) must not leave behind
WEIGHT_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")


class MergeFailed(QfkError):
    """``llamafactory-cli export`` failed (exit status 1: not a usage error)."""

    exit_code = 1


@dataclass
class MergePlan:
    """What ``qfk merge`` will do, decided before anything is written."""

    run: TrainedRun
    out: Path
    recipe: Recipe
    force: bool
    thinking: bool      # the think mode the merged model is served in
    sampling: dict      # Qwen3's recommended sampling for that mode
    warnings: list[str] = field(default_factory=list)
    budget: Any = None  # .budget.Budget: replies measured on the run's training rows (None: not measurable)


@dataclass
class MergeResult:
    out: Path
    serving: dict
    modelfile: Path | None
    files: dict = field(default_factory=dict)  # recipe, log, generation_config, serving

    def as_dict(self) -> dict:
        return {"out": str(self.out), "modelfile": str(self.modelfile) if self.modelfile else None,
                "files": {k: str(v) for k, v in self.files.items()}, "serving": self.serving}


def default_out(run_dir: Path) -> Path:
    """``RUN_DIR-merged``, beside the run folder."""
    return run_dir.parent / f"{run_dir.name}-merged"


def plan_merge(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, force: bool = False,
               command: str = "") -> MergePlan:
    """Read the run, check OUT and build the export recipe (nothing is written)."""
    run = read_run(run_dir)
    require_adapter(run)
    if not run.template:
        raise QfkError(f"{run.record_path} names no template: the merged model's chat format is unknown",
                       "train with a recipe from qfk recipe new (it sets template and enable_thinking)")
    target = Path(out) if out else default_out(run.run_dir)
    check_out(target, run.run_dir, force)
    recipe = merge_recipe(run, target, command)
    thinking = serving_thinking(run.template, run.enable_thinking)
    status = run.record.get("status")
    warnings = [] if status in ("ok", None) else [
        f"the run's status is '{status}' ({run.record_path}): merging the adapter in {run.run_dir} as it is"]
    from .served import run_budget

    return MergePlan(run, target, recipe, force, thinking, presets.sampling(thinking), warnings,
                     run_budget(run.record, thinking))


def check_out(out: Path, run_dir: Path, force: bool) -> None:
    """OUT is a new or empty folder (or ``force``), and never the run folder itself."""
    if out.resolve() == run_dir.resolve():
        raise QfkError(f"-o {out} is the run folder itself", "merge into another folder: -o MODELS/NAME")
    if out.exists() and not out.is_dir():
        raise QfkError(f"{out} is a file, not a folder", "choose another -o")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise QfkError(f"{out} is not empty", "add --force to replace the model files in it, or choose another -o")


def merge_recipe(run: TrainedRun, out: Path, command: str = "") -> Recipe:
    """The export recipe from the kit's builder, as ``qfk recipe new --method merge --from`` the run's
    own arguments (base model found from the run's folder, the adapter at ``run.run_dir``)."""
    import yaml

    from ..recipe.build import RecipeRequest, new_recipe

    trained = {**run.args, "model_name_or_path": run.base_model(), "output_dir": str(run.run_dir.resolve())}
    with tempfile.TemporaryDirectory(prefix="qfk-merge-") as tmp:
        args_file = Path(tmp) / "trained.yaml"
        args_file.write_text(yaml.safe_dump(trained, allow_unicode=True, sort_keys=False), encoding="utf-8")
        recipe = new_recipe(RecipeRequest(method="merge", from_recipe=str(args_file), output_dir=str(out.resolve()),
                                          filename=RECIPE_NAME, command=command))
    label = str(run.record_path)
    recipe.header = [line.replace(str(args_file), label) for line in recipe.header]
    return recipe


def run_merge(plan: MergePlan, *, on_stage=None) -> MergeResult:
    """Export into a staging folder beside OUT, write the serving files, move it into OUT
    (``on_stage`` hears the export's stages as they come)."""
    from .. import __version__

    stage = plan.out.parent / f".{plan.out.name}.qfk-merge-{os.getpid()}"
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        (stage / RECIPE_NAME).write_text(plan.recipe.render(), encoding="utf-8")
        export(stage / RECIPE_NAME, stage, failed_log=Path(f"{plan.out}.{LOG_NAME}"), on_stage=on_stage)
        write_generation_config(stage, plan.sampling)
        template = set_template_default(stage, plan.thinking)
        budget = plan.budget.as_dict().get("max_new_tokens") if plan.budget is not None else None
        (stage / MODELFILE).write_text(modelfile(plan.thinking, plan.sampling, num_predict=budget), encoding="utf-8")
        serving = serving_info(plan, MODELFILE, __version__, template)
        (stage / SERVING_NAME).write_text(json.dumps(serving, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        install(stage, plan.out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    files = {"recipe": plan.out / RECIPE_NAME, "log": plan.out / LOG_NAME, "generation_config": plan.out / GENERATION_CONFIG,
             "serving": plan.out / SERVING_NAME}
    return MergeResult(plan.out, serving, plan.out / MODELFILE, files)


#: what LLaMA-Factory's export log says as it goes, and the stage it means (first match wins, in log order)
EXPORT_STAGES = (("loading weights", "loading the base model"), ("Loaded adapter", "merging the adapter"),
                 ("Merged", "merging the adapter"), ("Configuration saved", "saving the merged model"),
                 ("Model weights saved", "saving the merged model"), ("tokenizer config file saved", "saving the tokenizer"))
#: seconds between two looks at the export log
POLL = 0.5


def export_stage(log_text: str) -> str:
    """The stage the export has reached, from its log so far."""
    stage = "starting LLaMA-Factory"
    low = log_text.lower()
    for marker, name in EXPORT_STAGES:
        if marker.lower() in low:
            stage = name
    return stage


def export(recipe: Path, export_dir: Path, *, failed_log: Path, on_stage=None) -> None:
    """``llamafactory-cli export RECIPE export_dir=EXPORT_DIR``, its output in EXPORT_DIR/qfk_merge.log;
    ``on_stage(stage)`` hears each new stage (:func:`export_stage`) while it runs. On failure the
    log is kept at ``failed_log`` and :class:`MergeFailed` names its last error line."""
    import time

    from ..lfbridge import child_environ, export_argv

    log = export_dir / LOG_NAME
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(export_argv(recipe, [f"export_dir={export_dir}"]), stdout=fh, stderr=subprocess.STDOUT,
                                env=child_environ({"PYTHONUNBUFFERED": "1"}))
        shown = None
        try:
            while proc.poll() is None:
                time.sleep(POLL)
                if on_stage is not None:
                    stage = export_stage(log.read_text(encoding="utf-8", errors="replace"))
                    if stage != shown:
                        shown = stage
                        on_stage(stage)
        finally:
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
    weights = [p for pattern in WEIGHT_PATTERNS for p in export_dir.glob(pattern)]
    if code == 0 and weights:
        return
    shutil.copyfile(log, failed_log)
    lines = [l for l in log.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
    last = next((l for l in reversed(lines) if not l.startswith(" ")), "no output")
    raise MergeFailed(f"llamafactory-cli export failed (exit {code}{', no weights written' if code == 0 else ''}): {last}",
                      f"full log: {failed_log}")


def write_generation_config(folder: Path, sampling: dict) -> Path:
    """Qwen3's sampling in FOLDER/generation_config.json (``do_sample`` true, temperature, top_p,
    top_k); every other key (eos/pad/bos ids) stays. Without the file, the ids come from config.json."""
    path = folder / GENERATION_CONFIG
    if path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
    else:
        model = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config = {k: model[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if model.get(k) is not None}
    config.update(sampling)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def serving_info(plan: MergePlan, modelfile: str | None, kit_version: str, template: dict | None = None) -> dict:
    """The content of ``qfk_serving.json`` (``template``: what :func:`.serving_files.set_template_default` did)."""
    from ..launch.record import now

    run, info = plan.run, plan.recipe.info
    mode = "thinking" if plan.thinking else "non-thinking"
    return {
        "qfk_serving": 1,
        "template": info["template"],
        "enable_thinking": plan.thinking,
        "trained_enable_thinking": None if info["template"].endswith("_nothink") else run.enable_thinking,
        "sampling": plan.sampling,
        "sampling_source": f"{presets.QWEN_SAMPLING} ({mode})",
        "base_model": plan.recipe.args["model_name_or_path"],
        "adapter": plan.recipe.args["adapter_name_or_path"],
        "source_run": str(run.run_dir.resolve()),
        "source_run_status": run.record.get("status"),
        "translation_prompt": run.translation() or None,
        "reply_budget": plan.budget.as_dict() if plan.budget is not None else None,
        "modelfile": modelfile,
        "chat_template": template,
        "vllm_command": vllm_command(plan.out),
        "kit_version": kit_version,
        "created": now(),
        "serve_note": serve_note(plan.thinking),
    }


def serve_note(thinking: bool) -> str:
    """How another server must run the model in its think mode."""
    if thinking:
        return "Qwen's chat template thinks by default (enable_thinking=True): serve it as it is; never decode greedily."
    return ("trained without thinking: the merged chat template defaults to enable_thinking=False (a client that "
            "passes nothing gets the empty think block; enable_thinking=True still thinks); servers that use their own "
            "template must pass enable_thinking=False (vLLM/SGLang: chat_template_kwargs={\"enable_thinking\": false})")


def install(stage: Path, out: Path) -> None:
    """Move the staged folder into OUT: a rename when OUT is new or empty; else (``--force``) file
    by file, removing the weight files of an earlier export that this one did not write."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if out.exists():
            out.rmdir()
        stage.rename(out)
        return
    new = {p.name for p in stage.iterdir()}
    for pattern in WEIGHT_PATTERNS:
        for old in out.glob(pattern):
            if old.name not in new and old.is_file():
                old.unlink()
    for item in stage.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    stage.rmdir()
