"""``qfk recipe new``: a LLaMA-Factory recipe from a model, a method and registered datasets.

The template and ``enable_thinking`` come from what the datasets contain (:mod:`.request`), never
from a guess. ``--mix`` ratios are made exact with per-dataset ``num_samples`` entries in
``dataset_info.json`` (:mod:`.mix`); with ``--mix-by tokens`` they hold in trained tokens instead,
with ``NAME__tN`` files of the rows chosen (:mod:`.tokenmix`), and every mix's header states its
shares in rows and in tokens. A training recipe's cutoff_len, liger kernel, packing and
per-device batch come from the rows' token lengths and the GPU (:mod:`qwen_factory_kit.recipe.sizing`);
its header gives the memory model's estimate. Predict and merge recipes are made in :mod:`.inference`.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import QfkError
from . import memory, presets, sizing
from .document import Recipe
from .inference import _inference_recipe
from .mix import require_registered, upsampling_warnings
from .request import (
    DatasetFacts,
    RecipeRequest,
    ThinkChoice,
    _facts_for,
    _think_from_data,
    _think_lines,
)
from .skeleton import (
    _apply_overrides,
    _blank_recipe,
    _data_dir_value,
    _footer,
    _header,
    _rel,
    _set_device_keys,
    _set_think_keys,
)
from .tokenmix.plan import check_request, plan_mix, register


def recipe_warnings(recipe: Recipe) -> list[str]:
    """What ``qfk recipe new`` prints to stderr about a recipe it wrote."""
    return [*recipe.info.get("warnings", []), *upsampling_warnings(recipe.info)]


def new_recipe(req: RecipeRequest) -> Recipe:
    """Build the recipe (and register the mix entries a ``--mix`` needs: ``NAME__nN``, or ``NAME__tN`` files)."""
    from ..workspace import data_dir as resolve_data_dir

    if req.method not in presets.METHODS:
        raise QfkError(f"unknown --method '{req.method}'", f"choose one of {', '.join(presets.METHODS)}")
    data_dir = resolve_data_dir(req.data_dir)
    if req.method in ("predict", "merge"):
        return _inference_recipe(req, data_dir)
    require_registered(req, data_dir)
    return _train_recipe(req, data_dir)


# ---------------------------------------------------------------------------------------------
# training recipes
# ---------------------------------------------------------------------------------------------
def _train_recipe(req: RecipeRequest, data_dir: Path) -> Recipe:
    """The training recipe; with ``--drop-long``, rows over the cutoff are filtered out of their datasets
    (``NAME__max<N>``, as ``qfk datasets filter``) and the recipe is made again over the filtered ones."""
    _require_train_inputs(req)
    try:
        return _train_recipe_once(req, data_dir)
    except sizing.LongRows as long:
        if not req.drop_long:
            raise
        return _train_recipe_once(drop_long_rows(req, long, data_dir), data_dir)


def _train_recipe_once(req: RecipeRequest, data_dir: Path) -> Recipe:
    model = presets.resolve_model(req.model)
    names = _train_names(req)
    facts, eval_facts = _facts_for(names, data_dir), _facts_for(req.eval_datasets, data_dir)
    _check_ranking(req.method, facts + eval_facts)
    think = _think_from_data(facts, model)
    preset = presets.method_preset(req.method, model, deepspeed=presets.NO_DEEPSPEED if req.device == "cpu" else req.deepspeed)

    r = _blank_recipe("train")
    _model_and_method(r, req.method, model, preset)
    _train_data(r, [f.name for f in facts], eval_facts, data_dir, think)
    _training(r, preset)
    _train_output(r, req, model, facts, evaluate=bool(eval_facts))
    sized = _size(r, req, model, facts, think)
    device_lines = _set_device_keys(r, req)
    # the mix once template, enable_thinking and cutoff_len are known: its tokens are encoded as the recipe trains them
    mix = plan_mix(req, facts, {**r.args, **req.overrides}, data_dir)
    r.section("data")["dataset"] = ",".join(mix.names)
    _apply_overrides(r, req.overrides)
    estimate = _estimate(r.args, model, sized) if not device_lines else None
    memory_lines = device_lines or _memory_lines(estimate, model, measured=sized.lengths is not None)
    r.header = _train_header(req, r, names, model, preset, facts, think, mix.lines,
                             _dropped_lines(req) + sized.lines + memory_lines)
    r.info = {"model": model.name, "model_kind": model.kind, "method": req.method, "preset_source": preset.source,
              "think_mode": think.mode, "template": think.template, "enable_thinking": think.enable,
              "datasets": {f.name: {"rows": f.rows, "mode": f.mode, "source": f.source} for f in facts},
              "mix": {n: c for n, c in zip([f.name for f in facts], mix.names)} if req.mix else None, **mix.info,
              "sizing": sized.info, "memory": _memory_info(estimate),
              "dropped": {name: d.as_dict() for name, d in req.dropped.items()} or None,
              "files": _extra_files(r.args), "device": req.device or "gpu", "warnings": mix.warnings}
    register(mix, data_dir)
    return r


def _require_train_inputs(req: RecipeRequest) -> None:
    if not req.model:
        raise QfkError("--model is required", "for example: --model Qwen3-4B (or a local model folder)")
    if not req.datasets and not req.mix:
        raise QfkError("--dataset is required", "name registered datasets: --dataset medical_r1,finetome (list them: qfk datasets list)")
    check_request(req)
    if req.drop_long and not req.stats:
        raise QfkError("--drop-long drops the rows over the cutoff, which --no-stats leaves unmeasured",
                       "drop --no-stats, or --drop-long")
    if req.device == "cpu":
        _require_cpu_method(req)


def _require_cpu_method(req: RecipeRequest) -> None:
    """``--device cpu`` with a choice that needs a GPU: QLoRA (bitsandbytes), DeepSpeed, the liger kernel."""
    if req.method == "qlora":
        raise QfkError("--method qlora quantizes the model with bitsandbytes, which needs a CUDA GPU: it cannot run with --device cpu",
                       "--method lora --device cpu (the same LoRA adapter on the unquantized model)")
    if req.deepspeed not in (None, presets.NO_DEEPSPEED):
        raise QfkError(f"--deepspeed {req.deepspeed} needs GPUs: it cannot run with --device cpu", "drop --deepspeed")
    if req.liger:
        raise QfkError("--liger: the liger kernel needs a GPU (Triton): it cannot run with --device cpu", "drop --liger")


def _train_names(req: RecipeRequest) -> list[str]:
    """The training datasets, each once: ``--dataset`` then the ``--mix`` names; every one has a ratio in a mix."""
    names = list(dict.fromkeys([*req.datasets, *(req.mix or {})]))
    if req.mix:
        missing = [n for n in names if n not in req.mix]
        if missing:
            raise QfkError(f"--mix gives no ratio for {', '.join(missing)}", "give every dataset a ratio, or drop it from --dataset")
    return names


def _check_ranking(method: str, facts: list[DatasetFacts]) -> None:
    """Preference methods take ranking data, the others SFT data."""
    preference = method in ("orpo", "dpo")
    for f in facts:
        if f.ranking != preference:
            need = "preference (ranking) data" if preference else "SFT data (ranking: false)"
            raise QfkError(f"dataset '{f.name}' is {'ranking' if f.ranking else 'SFT'} data but --method {method} needs {need}",
                           "ORPO/DPO take qfk convert preference outputs; lora/qlora/full take the other converters' outputs")


def _model_and_method(r: Recipe, method: str, model: presets.ModelInfo, preset: presets.MethodPreset) -> None:
    r.section("model")["model_name_or_path"] = model.path
    r.section("method").update(preset.method)
    if method in ("orpo", "dpo"):
        r.comments["pref_loss"] = "ORPO: odds-ratio loss, no reference model" if method == "orpo" else "DPO (sigmoid)"


@dataclass
class DroppedRows:
    """What ``--drop-long`` removed from one dataset (``convert.filter.filter_dataset``'s result)."""

    dataset: str          # the filtered dataset the recipe trains: NAME__max<N>
    max_tokens: int
    dropped: int
    read: int
    file: str
    rejects: str
    command: str          # the qfk datasets filter command that makes the same dataset

    def as_dict(self) -> dict:
        return dict(vars(self))


def drop_long_rows(req: RecipeRequest, long: sizing.LongRows, data_dir: Path) -> RecipeRequest:
    """``req`` over ``NAME__max<cutoff>`` for each dataset with rows over the cutoff: filtered and registered
    here, rows measured as the recipe measured them (template, enable_thinking)."""
    from ..convert.filter import filter_dataset

    dropped = dict(req.dropped)
    lengths, think = long.lengths, {None: "null", True: "true", False: "false"}[long.lengths.enable_thinking]
    for name in long.over:
        result = filter_dataset(name, long.cutoff, data_dir=data_dir, template=lengths.template,
                                enable_thinking=lengths.enable_thinking)
        command = (f"qfk datasets filter {name} --max-tokens {long.cutoff} --template {lengths.template} "
                   f"--enable-thinking {think}")
        dropped[name] = DroppedRows(result.registered[0], long.cutoff, result.rejected_by_reason.get("too_long", 0),
                                    result.read, _rel(result.output), _rel(result.rejects), command)
    renamed = {name: d.dataset for name, d in dropped.items()}
    return replace(req, datasets=[renamed.get(n, n) for n in req.datasets], dropped=dropped,
                   mix={renamed.get(n, n): v for n, v in req.mix.items()} if req.mix else None)


def _dropped_lines(req: RecipeRequest) -> list[str]:
    return [f"Dropped {d.dropped} of {d.read} rows of {name} over {d.max_tokens} tokens (--drop-long): {d.file}, rejects in "
            f"{d.rejects}; the same as: {d.command}" for name, d in req.dropped.items()]


def _train_data(r: Recipe, dataset_names: list[str], eval_facts: list[DatasetFacts], data_dir: Path, think: ThinkChoice) -> None:
    data = r.section("data")
    data["dataset"] = ",".join(dataset_names)
    if eval_facts:
        data["eval_dataset"] = ",".join(f.name for f in eval_facts)
    data["dataset_dir"] = _data_dir_value(data_dir)
    _set_think_keys(data, think)
    if think.template == "qwen3":
        r.comments["enable_thinking"] = {True: "reasoning data: think blocks are trained",
                                         False: "direct data: empty block in the prompt, answers trained",
                                         None: "mixed data: reasoning trained where present"}[think.enable]
    data["cutoff_len"] = presets.CUTOFF_LEN
    data["overwrite_cache"] = True
    data["preprocessing_num_workers"] = 16  # a GPU machine's CPUs; on a small CPU box: preprocessing_num_workers=1
    data["dataloader_num_workers"] = 4


def _training(r: Recipe, preset: presets.MethodPreset) -> None:
    tr = r.section("training")
    tr.update(preset.training)
    if "deepspeed" in tr:
        tr["deepspeed"] = deepspeed_path(tr["deepspeed"])
        r.comments["deepspeed"] = "shipped by qfk (qfk recipe new writes it); runs through torchrun"
    if preset.source and "epochs" in " ".join(preset.notes):
        r.comments["num_train_epochs"] = next(n for n in preset.notes if "epochs" in n)
    tr["ddp_timeout"] = 180000000


def _train_output(r: Recipe, req: RecipeRequest, model: presets.ModelInfo, facts: list[DatasetFacts], *, evaluate: bool) -> None:
    out = r.section("output")
    out["output_dir"] = req.output_dir or f"saves/{presets.model_slug(model)}/{req.method}/{'_'.join(f.name for f in facts)[:60]}"
    out["logging_steps"] = 10
    out["save_steps"] = 500
    out["plot_loss"] = True
    out["overwrite_output_dir"] = False
    r.comments["overwrite_output_dir"] = "false: an interrupted run resumes from its last checkpoint"
    out["save_only_model"] = False
    out["report_to"] = "none"
    if evaluate:
        r.section("eval").update(per_device_eval_batch_size=1, eval_strategy="steps", eval_steps=500)


def _size(r: Recipe, req: RecipeRequest, model: presets.ModelInfo, facts: list[DatasetFacts], think: ThinkChoice) -> sizing.Sizing:
    """cutoff_len from the data, liger, packing and the batch that fits the GPU (recipe/sizing.py), written into ``r``."""
    lengths, unmeasured = (sizing.measure_lengths(facts, template=think.template, enable_thinking=think.enable,
                                                  max_rows=req.stats_rows) if req.stats else (None, "--no-stats"))
    forced = {k: v for k, v in req.overrides.items() if k in ("cutoff_len", "enable_liger_kernel", "packing", "neat_packing")}
    wishes = sizing.Wishes(req.cutoff_len, req.liger, req.packing, req.gpu_memory, req.gpus, forced, req.max_cutoff,
                           req.drop_long)
    gpu = sizing.NO_GPU if req.device == "cpu" else req.gpu or sizing.Gpu.here()
    sized = sizing.size_recipe({**r.args, **req.overrides}, sizing.model_shape(model), facts=facts, lengths=lengths,
                               unmeasured=unmeasured, gpu=gpu, wishes=wishes)
    for key, value in sized.keys.items():
        r.set(key, value, default_section="data" if key in sizing.DATA_KEYS else "training")
    r.comments.update(sized.comments)
    return sized


def _estimate(args: dict, model: presets.ModelInfo, sized: sizing.Sizing) -> memory.Estimate | None:
    """The memory of the recipe as written (None where the kit has no model for it: MoE, odd keys)."""
    shape = sizing.model_shape(model)
    if shape is None:
        return None
    try:
        return sizing.recipe_estimate(shape, args, sized.lengths, sized.n_gpus)
    except QfkError:
        return None


def _memory_lines(estimate: memory.Estimate | None, model: presets.ModelInfo, *, measured: bool) -> list[str]:
    """The memory estimate's lines and the allocator setting qfk train runs it with."""
    if estimate is None:
        lines = [f"GPU memory: not estimated (no memory model for {model.name} or for these keys)"]
    else:
        lines = sizing.memory_lines(estimate, measured)
    return lines + [f"Allocator: {presets.ALLOCATOR.note}"]


def _memory_info(estimate: memory.Estimate | None) -> dict | None:
    if estimate is None:
        return None
    return {"expandable_gb": round(estimate.expandable_gb, 2), "peak_gb": round(estimate.peak_gb, 2),
            "allocated_gb": round(estimate.allocated_gb, 2), "measured_note": estimate.measured_note,
            "lines": estimate.lines()}


def _train_header(req: RecipeRequest, r: Recipe, names: list[str], model: presets.ModelInfo, preset: presets.MethodPreset,
                  facts: list[DatasetFacts], think: ThinkChoice, mix_lines: list[str], sizing_lines: list[str]) -> list[str]:
    title = (f"{model.name} {req.method} ({r.args.get('stage')}) on "
             + (" + ".join(f"{n} {int(round(v * 100))}%" for n, v in req.mix.items()) if req.mix else ", ".join(names)))
    lines = _header(req, title, "train")
    lines += [f"Preset: {req.method} on {model.name} ({model.size}): {preset.source}"]
    lines += sizing_lines
    lines += [f"Note: {n}" for n in preset.notes if "epochs" not in n]
    lines += _think_lines(facts, think, req.curated)
    lines += mix_lines
    lines += _footer(req)
    return lines


# ---------------------------------------------------------------------------------------------
# shipped files (DeepSpeed configs)
# ---------------------------------------------------------------------------------------------
def deepspeed_path(preset_key: str) -> str:
    """Where recipes point for a shipped DeepSpeed config (relative to the run folder)."""
    return f"deepspeed/{presets.DEEPSPEED[preset_key]}"


def _extra_files(args: dict) -> dict[str, str]:
    """Files the recipe refers to that the kit ships: {path in recipe: packaged source}."""
    ds = args.get("deepspeed")
    if isinstance(ds, str) and ds.startswith("deepspeed/") and Path(ds).name in presets.DEEPSPEED.values():
        from .presets import deepspeed_config

        return {ds: str(deepspeed_config(Path(ds).name))}
    return {}


def write_extra_files(recipe: Recipe, base: Path = Path(".")) -> list[Path]:
    """Copy shipped files (DeepSpeed configs) the recipe names, unless an identical one is there."""
    written = []
    for rel, src in recipe.info.get("files", {}).items():
        dest = base / rel
        data = Path(src).read_bytes()
        if dest.exists() and dest.read_bytes() == data:
            continue
        if dest.exists():
            raise QfkError(f"{dest} exists and differs from the kit's {Path(src).name}",
                           "keep yours (set deepspeed=PATH) or remove it so qfk can write the shipped one")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        written.append(dest)
    return written


def save_recipe(recipe: Recipe, path: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Write the recipe to ``path`` and the shipped files it names (beside the run folder, the
    current one); returns those extra files as written."""
    from .document import write_text

    write_text(path, recipe.render(), force=force)
    return write_extra_files(recipe)


def next_command(recipe: Recipe, path: str) -> str:
    """What to run after writing ``recipe`` to ``path``."""
    run = f"llamafactory-cli export {path}" if recipe.kind == "merge" else f"qfk train {path}"
    return f"qfk recipe check {path} && {run}"


# ---------------------------------------------------------------------------------------------
# the command line that made a recipe
# ---------------------------------------------------------------------------------------------
def command_line(argv: list[str]) -> str:
    return "qfk " + " ".join(shlex.quote(a) for a in argv)


def invoked_command(argv: list[str], verb: tuple[str, ...] = ("recipe", "new")) -> str:
    """The ``qfk recipe new ...`` line a recipe header records as 'Made by', from ``sys.argv``;
    empty when the process was not started as that command (the Python API, tests in-process)."""
    return command_line([*verb, *argv[len(verb) + 1:]]) if argv[1:len(verb) + 1] == list(verb) else ""
