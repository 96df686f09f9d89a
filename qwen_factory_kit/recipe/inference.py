"""Predict and merge recipes (``qfk recipe new --method predict|merge``): the base model and the
adapter (by default the training recipe's LoRA output_dir), the training template and
enable_thinking, and how the recipe decodes (Qwen3's sampling, or deterministic for translation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QfkError
from . import presets
from .document import Recipe, scalar, split_names
from .mix import require_registered
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
    _set_device_keys,
    _set_think_keys,
)


def _inference_recipe(req: RecipeRequest, data_dir: Path) -> Recipe:
    from .document import load_recipe

    train: dict = load_recipe(req.from_recipe) if req.from_recipe else {}
    require_registered(req, data_dir)
    overrides = dict(req.overrides)
    used = _inference_model(req, train, overrides)
    think, think_lines = _inference_think(req, train, used.model, data_dir)
    r = _blank_recipe(req.method)
    _inference_model_keys(r, req.method, used, train)
    if req.method == "predict":
        evals = _predict_evals(req, train, data_dir)
        decoding = _predict_decoding(req, think, evals, data_dir)
        sampling = _generation(r, think.enable, decoding)
        title = _predict_keys(r, req, train, used, think, evals, data_dir)
    else:
        decoding = _merge_decoding(req)
        sampling = _generation(r, think.enable, decoding)
        title = _merge_keys(r, req, used, think)
    device_lines = _set_device_keys(r, req) if req.method == "predict" else []  # a merge exports on the CPU already
    _apply_overrides(r, overrides)
    r.header = _header(req, title, req.method) + used.lines() + think_lines + decoding.lines + device_lines + _footer(req)
    r.info = {"model": used.model.name, "method": req.method, "adapter": used.adapter, "template": think.template,
              "enable_thinking": think.enable, "why": think.why, "sampling": sampling, "decoding": decoding.kind,
              "warnings": decoding.warnings, "files": {}}
    return r


@dataclass
class InferenceModel:
    """The base model and the adapter a predict/merge recipe loads, and where each came from."""

    model: presets.ModelInfo
    adapter: str | None        # None: the base model alone
    model_from: str            # for the header: --model, or as trained in TRAIN.yaml
    adapter_from: str          # for the header: where the adapter came from, or why there is none
    adapter_comment: str | None = None  # the adapter_name_or_path key's comment

    def lines(self) -> list[str]:
        if self.adapter:
            adapter = f"{self.adapter} ({self.adapter_from})"
        else:
            adapter = f"none: {BASE_MODEL}" + (f"; {self.adapter_from}" if self.adapter_from else "")
        return [f"Model: {self.model.name} = {self.model.path} ({self.model_from})", f"Adapter: {adapter}"]


#: how headers and titles name a predict recipe without an adapter
BASE_MODEL = "base model (no adapter)"


def _inference_model(req: RecipeRequest, train: dict, overrides: dict) -> InferenceModel:
    """The base model and the adapter (by default the training recipe's LoRA output_dir); an
    ``adapter_name_or_path`` override counts as ``--adapter`` (and leaves ``overrides``)."""
    model_spec = req.model or train.get("model_name_or_path")
    if not model_spec:
        raise QfkError(f"--method {req.method} needs --from TRAIN.yaml (or --model)",
                       f"qfk recipe new --method {req.method} --from recipe.yaml -o {req.method}.yaml")
    model = presets.resolve_model(str(model_spec))
    trained = train.get("model_name_or_path")
    if req.model and trained and str(trained) != model.path:
        model_from = f"--model; {req.from_recipe} trained {trained}"
    else:
        model_from = f"as trained in {req.from_recipe}" if trained and not req.model else "--model"
    adapter, adapter_from, comment = _inference_adapter(req, train, overrides)
    return InferenceModel(model, adapter, model_from, adapter_from, comment)


def _inference_adapter(req: RecipeRequest, train: dict, overrides: dict) -> tuple[str | None, str, str | None]:
    """(adapter or None, where it came from, its key's comment)."""
    if "adapter_name_or_path" in overrides:
        spec, given = overrides.pop("adapter_name_or_path"), "override"
        spec = presets.NO_ADAPTER if spec is None else spec
    else:
        spec, given = req.adapter, "--adapter"
    if spec is not None and is_no_adapter(spec):
        if req.method == "merge":
            raise QfkError(f"--method merge with {given} {spec}: the base model has no adapter to merge",
                           "merge needs the LoRA adapter a training run wrote: --from TRAIN.yaml or --adapter DIR; "
                           "the base model itself needs no merge (serve or predict it as it is: --method predict --base)")
        return None, "", None
    if spec is not None:
        return str(spec), given, "override" if given == "override" else None
    if train and train.get("finetuning_type", "lora") == "lora" and train.get("output_dir"):
        return str(train["output_dir"]), f"the output_dir of {req.from_recipe}", "the training run's output_dir"
    if train and not req.model:
        return None, (f"{req.from_recipe} is a full fine-tune, so this is its base model; once trained, "
                      f"--model {train.get('output_dir', 'OUTPUT_DIR')} uses the trained one"), None
    return None, "no adapter given", None


def is_no_adapter(spec: object) -> bool:
    """``--adapter none`` (or null, or empty): the base model alone."""
    return spec is None or str(spec).strip().lower() in (presets.NO_ADAPTER, "null", "~", "")


def _inference_think(req: RecipeRequest, train: dict, model: presets.ModelInfo, data_dir: Path) -> tuple[ThinkChoice, list[str]]:
    """The training recipe's template and enable_thinking, else those the datasets call for; with header lines."""
    if "template" in train:
        # LLaMA-Factory's default is true; a *_nothink template never thinks (its sampling is the non-thinking one)
        enable = train.get("enable_thinking", not str(train["template"]).endswith("_nothink"))
        think = ThinkChoice(train["template"], enable, f"as trained ({req.from_recipe})")
        return think, [f"Think mode: as trained in {req.from_recipe}: template {think.template}, "
                       f"enable_thinking {scalar(think.enable)}"]
    names = req.eval_datasets or req.datasets
    if not names:
        raise QfkError(f"--method {req.method} needs --from TRAIN.yaml to keep the training template and enable_thinking",
                       "or name the training datasets with --dataset so the kit can derive them")
    facts = _facts_for(names, data_dir)
    think = _think_from_data(facts, model)
    return think, _think_lines(facts, think, req.curated)


def _inference_model_keys(r: Recipe, method: str, used: InferenceModel, train: dict) -> None:
    m = r.section("model")
    m["model_name_or_path"] = used.model.path
    if used.adapter:
        m["adapter_name_or_path"] = used.adapter
        if used.adapter_comment:
            r.comments["adapter_name_or_path"] = used.adapter_comment
    if train.get("quantization_bit") and method == "merge":
        r.comments["model_name_or_path"] = "unquantized base: a QLoRA adapter merges into the full-precision model"


@dataclass
class Decoding:
    """How a predict (or merge) recipe generates: Qwen3's sampling or deterministic, and why."""

    sample: bool
    lines: list[str] = field(default_factory=list)     # header lines
    warnings: list[str] = field(default_factory=list)  # what qfk recipe new prints to stderr
    comment: str = ""                                 # the do_sample key's comment when deterministic

    @property
    def kind(self) -> str:
        return "sample" if self.sample else "deterministic"


def _predict_decoding(req: RecipeRequest, think: ThinkChoice, evals: list[DatasetFacts], data_dir: Path) -> Decoding:
    """Deterministic for translation data (scores must be reproducible), Qwen3's sampling otherwise;
    ``--sample`` / ``--deterministic`` choose, except that thinking mode always samples."""
    from .datakind import is_translation

    translation = bool(evals) and all(is_translation(f.entry, f.mode, f.file, data_dir) for f in evals)
    thinking = think.template == "qwen3" and think.enable is not False
    mode = "thinking" if thinking else "non-thinking"
    sample = req.sample if req.sample is not None else not translation
    if not sample and thinking:
        asked = "--deterministic was given" if req.sample is False else "translation data is decoded deterministically elsewhere"
        line = (f"Decoding: {presets.QWEN_SAMPLING} (thinking), although {asked}: Qwen3 must never decode greedily "
                "in thinking mode (it repeats itself), so scores vary a little from run to run")
        warning = (f"--deterministic ignored: enable_thinking {scalar(think.enable)} keeps Qwen3's sampling "
                   "(Qwen3 must never decode greedily in thinking mode: it repeats itself)")
        return Decoding(True, [line], [warning] if req.sample is False else [])
    if not sample:
        why = ("translation data: BLEU/chrF scores need deterministic decoding (--sample for Qwen3's sampling)"
               if req.sample is None else "--deterministic: reproducible scores")
        return Decoding(False, [f"Decoding: deterministic (do_sample false): {why}"], [],
                        "deterministic: translation scores need it" if req.sample is None else "--deterministic")
    if thinking:
        why = "Qwen3 must never decode greedily in thinking mode, so scores vary a little from run to run"
    elif translation:
        why = "--sample: translation scores vary from run to run (drop --sample for deterministic decoding)"
    else:
        why = "--deterministic for reproducible scores"
    return Decoding(True, [f"Decoding: {presets.QWEN_SAMPLING} ({mode}): {why}"])


def _merge_decoding(req: RecipeRequest) -> Decoding:
    if req.sample is not None:
        raise QfkError("--sample / --deterministic choose how a predict recipe decodes; a merge recipe keeps Qwen3's sampling",
                       "drop the flag, or use it with --method predict")
    return Decoding(True)


def _generation(r: Recipe, enable: bool | None, decoding: Decoding) -> dict:
    """Qwen3's sampling for the think mode (LLaMA-Factory's defaults are not Qwen3's), or
    deterministic decoding (``do_sample: false`` alone)."""
    if not decoding.sample:
        r.section("generation")["do_sample"] = False
        r.comments["do_sample"] = decoding.comment
        return {"do_sample": False}
    sampling = presets.sampling(enable)
    r.section("generation").update(sampling)
    r.comments["temperature"] = f"{presets.QWEN_SAMPLING} ({'thinking' if enable is not False else 'non-thinking'}); not LLaMA-Factory's 0.95"
    return sampling


def _predict_evals(req: RecipeRequest, train: dict, data_dir: Path) -> list[DatasetFacts]:
    """The held-out SFT datasets to predict (``--eval-dataset``, else the training recipe's eval_dataset)."""
    evals = req.eval_datasets or split_names(train.get("eval_dataset"))
    if not evals:
        raise QfkError("--method predict needs --eval-dataset NAME (held-out rows, e.g. NAME_val or NAME_test)",
                       "qfk recipe new --method predict --from recipe.yaml --eval-dataset medical_r1_val -o predict.yaml")
    facts = _facts_for(evals, data_dir)
    for f in facts:
        if f.ranking:
            raise QfkError(f"'{f.name}' is preference data; predict needs SFT rows", "use a *_val or *_test SFT dataset")
    return facts


def _predict_keys(r: Recipe, req: RecipeRequest, train: dict, used: InferenceModel, think: ThinkChoice,
                  evals: list[DatasetFacts], data_dir: Path) -> str:
    """The predict recipe's method, data, output and eval keys; returns its title."""
    r.section("method").update(stage="sft", do_predict=True, predict_with_generate=True)
    if used.adapter:
        r.section("method")["finetuning_type"] = "lora"
    d = r.section("data")
    d["eval_dataset"] = ",".join(f.name for f in evals)
    d["dataset_dir"] = train.get("dataset_dir") or _data_dir_value(data_dir)
    _set_think_keys(d, think)
    d["cutoff_len"] = train.get("cutoff_len", 2048)
    d["overwrite_cache"] = True
    d["preprocessing_num_workers"] = 16
    r.section("generation")["max_new_tokens"] = presets.max_new_tokens(think.enable)
    o = r.section("output")
    o["output_dir"] = req.output_dir or predict_dir(used.model, used.adapter, train)
    o["overwrite_output_dir"] = True
    o["report_to"] = "none"
    r.section("eval")["per_device_eval_batch_size"] = 4
    if train.get("bf16"):
        r.section("eval")["bf16"] = True
    names = ", ".join(f.name for f in evals)
    return f"predict {names} with {used.model.name}" + (f" + {used.adapter}" if used.adapter else f" {BASE_MODEL}")


def predict_dir(model: presets.ModelInfo, adapter: str | None, train: dict) -> str:
    """Where predictions go: next to the adapter when it is this model's (the training run's own
    output_dir), else ``saves/MODEL/ADAPTER/predict``; ``saves/MODEL/base/predict`` without one."""
    slug = presets.model_slug(model)
    if not adapter:
        return f"saves/{slug}/base/predict"
    path = Path(adapter)
    inside = not path.is_absolute() and ".." not in path.parts
    same_model = bool(train) and str(train.get("model_name_or_path")) == model.path
    if inside and (same_model or slug in path.parts):
        return f"{adapter.rstrip('/')}/predict"
    parts = path.parts
    label = "/".join(parts[2:]) if inside and len(parts) > 2 and parts[0] == "saves" else adapter_label(adapter)
    return f"saves/{slug}/{label}/predict"


def adapter_label(adapter: str) -> str:
    """A short name for an adapter folder: its name (``RUN-checkpoint-N`` for a checkpoint)."""
    path = Path(adapter)
    if path.name.startswith("checkpoint-") and path.parent.name not in ("", "."):
        return f"{path.parent.name}-{path.name}"
    return path.name or "adapter"


def _merge_keys(r: Recipe, req: RecipeRequest, used: InferenceModel, think: ThinkChoice) -> str:
    """The merge recipe's method, data and export keys; returns its title."""
    if not used.adapter:
        raise QfkError("--method merge needs an adapter: --from TRAIN.yaml or --adapter DIR", "a full fine-tune needs no merge")
    r.section("method")["finetuning_type"] = "lora"
    _set_think_keys(r.section("data"), think)
    r.comments["template"] = "the training template; serve the merged model with the same enable_thinking"
    e = r.section("export")
    e["export_dir"] = req.output_dir or f"models/{presets.model_slug(used.model)}-{adapter_label(used.adapter)}-merged"
    e["export_size"] = 5
    e["export_device"] = "cpu"
    e["export_legacy_format"] = False
    return f"merge {used.adapter} into {used.model.name}"
