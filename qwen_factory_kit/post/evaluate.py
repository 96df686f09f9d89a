"""``qfk eval``: predict a held-out dataset with a trained run (and its base model), score the
answers with the kit's metrics, and write ``metrics.json``, ``predictions.jsonl`` and a report.

The steps (:func:`evaluate`):

1. :func:`resolve_target`: a training run folder (``qfk_run.json``: base model, adapter, template,
   enable_thinking, dataset_dir), one of its ``checkpoint-N`` folders, or a model (folder or hub id);
2. :func:`write_recipes`: predict recipes made by the kit's recipe builder (the run's arguments are
   written to ``OUT/source.yaml`` and given to it as the training recipe), one per model;
   deterministic decoding unless ``sample`` (thinking mode always samples: Qwen3 must never decode
   greedily there); on a CPU (no GPU visible, or ``--cpu``) the CPU keys of :mod:`..recipe.cpu`,
   and a run whose recipe would stop on this machine is refused before anything is written, unless ``--cpu``;
3. :func:`run_predictions`: each recipe through the kit's entry module, as ``qfk train`` runs it;
4. :func:`score_model`: LLaMA-Factory's predictions joined with the dataset rows (full references)
   and scored with :func:`.metrics.score_rows` (answers only; think compliance apart);
   LLaMA-Factory's own ``predict_results.json`` is kept under its own names;
5. :func:`compare`: deltas tuned - base, and the rows that regressed most;
6. the outputs and the report (:mod:`.report`).

Before predicting, :func:`leak_findings` checks a run's training datasets against the eval
dataset (:func:`qwen_factory_kit.leaks.check_leaks`): a leak is reported, not refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import QfkError
from .metrics import EvalResult
from .report import SCORE_KEYS

SOURCE_RECIPE = "source.yaml"
METRICS_FILE, PREDICTIONS_FILE = "metrics.json", "predictions.jsonl"
#: the per-row score that ranks regressions (sentence chrF is steadier than sentence BLEU)
ROW_KEY = {"translation": "chrf", "qa": "rouge_l"}
#: how many regressed rows the report shows
REGRESSIONS = 5
LF_NOTE = ("LLaMA-Factory's own predict metrics (character-level sentence BLEU-4 and ROUGE averaged over rows, "
           "on the whole prediction with its think block): not comparable with the kit's sacreBLEU scores")


class EvalFailed(QfkError):
    """A prediction run failed (exit status 1: not a mistake in the command)."""

    exit_code = 1


@dataclass
class EvalTarget:
    """What ``RUN_DIR_OR_MODEL`` names: the model (and adapter) to evaluate, and its base."""

    spec: str
    model: str                  # model_name_or_path to evaluate
    adapter: str | None         # LoRA adapter folder, or None
    data_dir: Path              # where the eval dataset is registered
    source: dict                # the training recipe's arguments for the builder ({}: derive from the data)
    run_dir: Path | None = None
    base_model: str | None = None  # what --base auto evaluates (a run's base model)

    @property
    def label(self) -> str:
        return str(self.run_dir) if self.run_dir else self.model


@dataclass
class EvalRequest:
    """Everything ``qfk eval`` was asked for."""

    target: str
    dataset: str
    base: str | None = None           # None, "auto" (the run's base model) or a model
    max_samples: int | None = None
    max_new_tokens: int | None = None
    sample: bool = False
    out: str | None = None
    data_dir: str | None = None
    template: str | None = None       # a MODEL's template (default: from the dataset's think mode)
    enable_thinking: Any = "unset"    # a MODEL's enable_thinking (True/False/None), "unset" for the default
    overrides: dict = field(default_factory=dict)
    command: str = ""                 # the qfk eval command line, for the recipes' "Made by"
    cpu: bool = False                 # --cpu: predict on the CPU, with the overrides that make the run's recipe run there


@dataclass
class ModelRun:
    """One model's predict recipe, and once run, its scores."""

    label: str                 # tuned | base
    recipe_path: Path
    args: dict
    info: dict
    header: list[str]
    result: EvalResult | None = None
    rows: list[dict] = field(default_factory=list)  # joined prediction rows, in prediction order
    llamafactory: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict)  # the last prediction event: rows, new_tokens, elapsed_s

    @property
    def output_dir(self) -> Path:
        return Path(self.args["output_dir"])


@dataclass
class PredictPlan:
    """How much generation an evaluation asks for, decided before anything runs."""

    budget: Any                 # .budget.Budget: max_new_tokens and where it came from
    rows: int                   # rows each model predicts
    batch: int                  # per_device_eval_batch_size
    models: int                 # 1, or 2 with --base

    def describe(self) -> str:
        from .budget import describe_worst_case

        return (f"{self.rows} row{'s' if self.rows != 1 else ''} a model, batch {self.batch}; {self.budget.describe()}; "
                f"{describe_worst_case(self.budget, self.rows, self.models)}")


@dataclass
class EvalOutcome:
    out: Path
    metrics: dict
    rows: list[dict]
    files: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    leaks: list | None = None  # the leak check's findings; None when not checked (a model, not a run)
    plan: PredictPlan | None = None


# ---------------------------------------------------------------------------------------------
# 1. what is evaluated
# ---------------------------------------------------------------------------------------------
def resolve_target(spec: str, *, data_dir: str | None = None, template: str | None = None,
                   enable_thinking: Any = "unset") -> EvalTarget:
    """A run folder (or a checkpoint in one), a model folder, or a hub id."""
    path = Path(spec).expanduser()
    run_dir, adapter_dir = _run_folder(path)
    if run_dir is not None:
        if template is not None or enable_thinking != "unset":
            raise QfkError("--template / --enable-thinking are for a MODEL: a run is evaluated as it was trained",
                           f"drop them; {run_dir}/qfk_run.json gives the template and enable_thinking")
        return _run_target(spec, run_dir, adapter_dir, data_dir)
    return _model_target(spec, path, data_dir, template, enable_thinking)


def _run_folder(path: Path) -> tuple[Path | None, Path | None]:
    """(run folder, adapter folder) when ``path`` is a run or one of its checkpoints."""
    from ..launch.record import RECORD_NAME

    if (path / RECORD_NAME).is_file():
        return path, path
    if path.name.startswith("checkpoint-") and (path.parent / RECORD_NAME).is_file():
        return path.parent, path
    return None, None


def _run_target(spec: str, run_dir: Path, adapter_dir: Path, data_dir: str | None) -> EvalTarget:
    record = read_record(run_dir)
    args, cwd = record["args"], Path(record.get("cwd") or ".")
    base = _absolute(str(args["model_name_or_path"]), cwd)
    data = Path(data_dir) if data_dir else Path(_absolute(str(args.get("dataset_dir") or "data"), cwd))
    source = {k: v for k, v in args.items() if v is None or isinstance(v, (str, int, float, bool))}
    source.update(model_name_or_path=base, dataset_dir=str(data.resolve()), output_dir=str(run_dir.resolve()))
    if str(args.get("finetuning_type", "lora")) == "lora":
        _require_file(adapter_dir, "adapter_config.json", "LoRA adapter")
        return EvalTarget(spec, base, str(adapter_dir.resolve()), data, source, run_dir, base)
    _require_file(adapter_dir, "config.json", "trained model")
    return EvalTarget(spec, str(adapter_dir.resolve()), None, data, source, run_dir, base)


def read_record(run_dir: Path) -> dict:
    """``RUN_DIR/qfk_run.json``, checked for what evaluation needs."""
    from ..launch.record import RECORD_NAME

    path = run_dir / RECORD_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QfkError(f"cannot read {path} ({exc})", "qfk train writes it; evaluate a run it trained") from None
    args = record.get("args") if isinstance(record, dict) else None
    if not isinstance(args, dict) or not args.get("model_name_or_path"):
        raise QfkError(f"{path} names no model_name_or_path", "qfk train writes it; evaluate a run it trained")
    return record


def _absolute(value: str, cwd: Path) -> str:
    """A path of the run's recipe (relative to the folder it ran from) made absolute; a hub id as it is."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    return str((cwd / p).resolve()) if (cwd / p).exists() else value


def _require_file(folder: Path, name: str, what: str) -> None:
    if not (folder / name).is_file():
        raise QfkError(f"{folder} has no {name}: no {what} was saved there (did the run finish?)",
                       f"evaluate a checkpoint that has one: qfk eval {folder}/checkpoint-N ...")


def _model_target(spec: str, path: Path, data_dir: str | None, template: str | None, enable_thinking: Any) -> EvalTarget:
    from ..recipe import presets
    from ..workspace import data_dir as resolve_data_dir

    if path.is_dir() and not (path / "config.json").is_file():
        raise QfkError(f"{spec} is neither a training run (no qfk_run.json) nor a model folder (no config.json)",
                       "give the output_dir of a qfk train run, or a Hugging Face model folder")
    if not path.exists() and (os.sep in spec.rstrip(os.sep) or spec.startswith((".", "~"))) and not spec.startswith("Qwen/"):
        raise QfkError(f"no run folder or model at {spec}", "give the output_dir of a qfk train run (it holds qfk_run.json), "
                       "a model folder, or a Qwen3 hub id such as Qwen/Qwen3-4B")
    info = presets.resolve_model(spec)  # a Qwen3 name, or a folder with a Qwen3 config.json
    model = str(path.resolve()) if path.is_dir() else info.path
    source: dict = {}
    if template is not None or enable_thinking != "unset":
        source = {"model_name_or_path": model, "template": template or "qwen3",
                  "enable_thinking": True if enable_thinking == "unset" else enable_thinking}
    return EvalTarget(spec, model, None, resolve_data_dir(data_dir), source)


def default_out(target: EvalTarget, dataset: str) -> Path:
    """``RUN_DIR/eval-NAME`` for a run; ``eval/MODEL-NAME`` for a model."""
    from ..recipe import presets

    if target.run_dir is not None:
        return target.run_dir / f"eval-{dataset}"
    return Path("eval") / f"{presets.model_slug(presets.resolve_model(target.model))}-{dataset}"


def base_model(target: EvalTarget, base: str | None) -> str | None:
    """The model ``--base`` names: the run's base model for ``auto``."""
    if base is None:
        return None
    if base.strip().lower() != "auto":
        from ..recipe import presets

        return presets.resolve_model(base).path
    if target.base_model is None:
        raise QfkError(f"--base auto evaluates a run's base model, and {target.spec} is not a training run",
                       "give the base model yourself: --base MODEL")
    return target.base_model


def training_datasets(target: EvalTarget) -> list[str]:
    """The datasets the run trained on (none for a model)."""
    from ..recipe.document import split_names

    return split_names(target.source.get("dataset")) if target.run_dir is not None else []


def leak_findings(target: EvalTarget, dataset: str) -> list | None:
    """The ``leak`` findings of the run's training datasets against the eval dataset; None when
    there is nothing to check against (a model, or a run whose record names no dataset)."""
    from ..leaks import check_leaks

    names = training_datasets(target)
    return check_leaks(names, [dataset], target.data_dir) if names else None


# ---------------------------------------------------------------------------------------------
# 2. the predict recipes
# ---------------------------------------------------------------------------------------------
def check_dataset(name: str, data_dir: Path) -> None:
    """The eval dataset is registered (else an error naming its close matches)."""
    from ..recipe.mix import require_registered
    from ..recipe.request import RecipeRequest

    require_registered(RecipeRequest(method="predict", datasets=[name]), data_dir)  # errors name --dataset


def recipe_overrides(req: EvalRequest, source: dict | None = None, *, gpus: int | None = None) -> dict:
    """Keys every predict recipe of this evaluation gets on top of the builder's: on a CPU (no GPU
    visible, or ``--cpu``) the CPU keys (:func:`..recipe.cpu.cpu_plan` of the run's recipe ``source``
    and the overrides); without ``--cpu``, a recipe that would stop on this machine is refused."""
    from ..launch.torchrun import device_count
    from ..recipe.cpu import cpu_plan, refusal

    for key in ("model_name_or_path", "adapter_name_or_path", "output_dir", "eval_dataset"):
        if key in req.overrides:
            raise QfkError(f"{key} cannot be overridden in qfk eval",
                           "name the model as RUN_DIR_OR_MODEL (and --base), the data with --dataset, the folder with -o")
    out: dict = {}
    cuda = (device_count() if gpus is None else gpus) > 0
    fit = cpu_plan({**(source or {}), **req.overrides}, cuda, written=True)
    if fit.refused and not req.cpu:
        raise refusal(fit, f"evaluating {req.target}", req.command or f"qfk eval {req.target} --dataset {req.dataset}")
    if req.cpu or not cuda:
        out.update(fit.overrides)
    if req.max_samples is not None:
        out["max_samples"] = req.max_samples
    if req.max_new_tokens is not None:
        out["max_new_tokens"] = req.max_new_tokens
    out.update(req.overrides)
    return out


def write_source(target: EvalTarget, out: Path) -> str | None:
    """``OUT/source.yaml``: the training run's arguments (paths absolute) that the recipe builder
    reads as the training recipe; None when there are none (a model: derive from the data)."""
    if not target.source:
        return None
    from ..recipe.document import Recipe, write_text

    what = (f"the arguments of the training run {target.run_dir} (qfk_run.json), paths made absolute"
            if target.run_dir else f"the template and enable_thinking qfk eval was given for {target.model}")
    r = Recipe(kind="train", header=[f"qfk eval: {what}", "read by the recipe builder as the training recipe"],
               sections=[("run", dict(target.source))])
    return str(write_text(out / SOURCE_RECIPE, r.render(), force=True))


def write_recipes(target: EvalTarget, req: EvalRequest, out: Path, source: str | None, overrides: dict) -> list[ModelRun]:
    """``OUT/predict-tuned.yaml`` (and ``predict-base.yaml``), made by the kit's recipe builder."""
    from ..recipe import presets

    models = {"tuned": (target.model, target.adapter or presets.NO_ADAPTER)}
    base = base_model(target, req.base)
    if base is not None:
        models["base"] = (base, presets.NO_ADAPTER)
    return [_write_recipe(label, model, adapter, target, req, out, source, overrides)
            for label, (model, adapter) in models.items()]


def _write_recipe(label: str, model: str, adapter: str, target: EvalTarget, req: EvalRequest, out: Path,
                  source: str | None, overrides: dict) -> ModelRun:
    from ..recipe.build import RecipeRequest, new_recipe
    from ..recipe.document import write_text

    name = f"predict-{label}.yaml"
    command = req.command or f"qfk eval {target.spec} --dataset {req.dataset}"
    recipe = new_recipe(RecipeRequest(
        method="predict", model=model, from_recipe=source, adapter=adapter, eval_datasets=[req.dataset],
        data_dir=str(target.data_dir), output_dir=str((out / label).resolve()), sample=req.sample,
        overrides=dict(overrides), filename=str(out / name), command=command))
    path = write_text(out / name, recipe.render(), force=True)
    return ModelRun(label, path, recipe.args, recipe.info, recipe.header)


def plan_predictions(req: EvalRequest, args: dict, dataset: Path, entry: dict, overrides: dict, models: int,
                     *, gpus: int | None = None) -> PredictPlan:
    """max_new_tokens from the eval rows' references (unless given) and the eval batch for this
    machine (unless given); both are added to ``overrides``."""
    from ..launch.torchrun import device_count
    from ..recipe import presets
    from .budget import Budget, eval_batch, eval_budget

    thinking = expected_thinking(args)
    given = overrides.get("max_new_tokens")
    budget, rows = eval_budget(dataset, entry, thinking, max_samples=req.max_samples)
    if given is not None:
        how = "--max-new-tokens" if req.max_new_tokens is not None else "max_new_tokens=..."
        budget = Budget(int(given), presets.max_new_tokens(thinking), None, budget.rows, how)
    overrides["max_new_tokens"] = budget.max_new_tokens
    batch = overrides.get("per_device_eval_batch_size")
    if batch is None:
        prompt = int(args.get("cutoff_len") or 2048)
        batch = eval_batch(str(args.get("model_name_or_path")), rows, prompt + budget.max_new_tokens,
                           gpus=device_count() if gpus is None else gpus)
        overrides["per_device_eval_batch_size"] = batch
    return PredictPlan(budget, rows, int(batch), models)


# ---------------------------------------------------------------------------------------------
# 3. prediction
# ---------------------------------------------------------------------------------------------
def run_predictions(runs: list[ModelRun], *, console=None, verbose: bool = False, on_start=None,
                    dataset: str = "", rows: int | None = None) -> None:
    """Each recipe through the kit's entry module (``python -m qwen_factory_kit.launch``), as
    ``qfk train`` runs it, with a progress display (rows of ``rows``, tok/s, ETA); a failed run
    raises :class:`EvalFailed`."""
    from ..launch.runner import run_training

    for run in runs:
        if on_start:
            on_start(run)
        result = run_training(str(run.recipe_path), [], nproc=1, console=console, verbose=verbose,
                              label=f"predicting {dataset or 'rows'} ({run.label})", predict_rows=rows)
        run.progress = dict(result.predicted)
        if result.returncode != 0:
            tail = "\n    ".join(result.tail[-8:])
            raise EvalFailed(f"predicting with the {run.label} model failed: {result.error}" + (f"\n    {tail}" if tail else ""),
                             f"the whole log: {result.log}")


# ---------------------------------------------------------------------------------------------
# 4. scoring
# ---------------------------------------------------------------------------------------------
def expected_thinking(args: dict) -> bool | None:
    """What the model was asked to do: think (True), answer directly (False), either (None)."""
    if str(args.get("template", "")).endswith("_nothink"):
        return False
    return args.get("enable_thinking", True)


def dataset_rows(name: str, data_dir: Path) -> tuple[Path, dict]:
    """(file, registry entry) of the eval dataset."""
    from ..registry import Registry, resolve_file

    entry = Registry.at(data_dir).get(name)
    path = resolve_file(entry, data_dir)
    if path is None or not path.exists():
        raise QfkError(f"dataset '{name}' has no local file to join the predictions with", "evaluate a converted dataset")
    return path, entry


def score_model(run: ModelRun, dataset: Path, entry: dict, *, kind: str = "auto") -> ModelRun:
    """Join the run's predictions with the dataset rows and score the answers."""
    from .metrics import score_rows
    from .predictions import load_predictions

    run.rows = load_predictions(run.output_dir, dataset=dataset, entry=entry)
    run.result = score_rows(run.rows, kind=kind, enable_thinking=expected_thinking(run.args))
    lf = run.output_dir / "predict_results.json"
    run.llamafactory = json.loads(lf.read_text(encoding="utf-8")) if lf.is_file() else {}
    return run


# ---------------------------------------------------------------------------------------------
# 5. comparison
# ---------------------------------------------------------------------------------------------
def model_metrics(result: EvalResult) -> dict:
    """A model's corpus metrics, per direction, and think compliance (no per-row data)."""
    return {"overall": result.overall, "per_direction": result.per_direction, "compliance": result.compliance.as_dict()}


def compare(tuned: dict, base: dict, kind: str) -> dict:
    """tuned - base for every corpus metric, per direction, and for think compliance (0-100)."""
    keys = SCORE_KEYS[kind]

    def diff(a: dict, b: dict) -> dict:
        return {k: a[k] - b[k] for k in keys if isinstance(a.get(k), (int, float)) and isinstance(b.get(k), (int, float))}

    per_direction = {d: diff(m, base["per_direction"][d]) for d, m in tuned["per_direction"].items()
                     if d in base["per_direction"]}
    share = 100.0 * (tuned["compliance"]["share"] - base["compliance"]["share"])
    return {"overall": diff(tuned["overall"], base["overall"]), "per_direction": per_direction, "compliance": share}


def regressions(rows: list[dict], key: str, limit: int = REGRESSIONS) -> list[dict]:
    """The rows where the tuned model scores lowest relative to the base (negative deltas only,
    worst first; ties in dataset order)."""
    scored = [r for r in rows if isinstance((r.get("delta") or {}).get(key), (int, float)) and r["delta"][key] < 0]
    scored.sort(key=lambda r: (r["delta"][key], r["dataset_index"]))
    return [{"dataset_index": r["dataset_index"], "index": r["index"], key: r["delta"][key]} for r in scored[:limit]]


def combined_rows(runs: list[ModelRun]) -> list[dict]:
    """One row per dataset row: prompt, reference, and each model's prediction, think block,
    answer and scores (aligned by dataset row), with the score deltas tuned - base."""
    from .predictions import last_user_turn

    tuned = runs[0]
    others = {r.label: _by_dataset_index(r) for r in runs[1:]}
    out = []
    for i, (row, scored) in enumerate(zip(tuned.rows, tuned.result.rows)):
        item = {"index": i, "dataset_index": row["dataset_index"], "prompt": row["prompt"],
                "user": last_user_turn(row["prompt"]), "reference": row["reference"], "reference_answer": scored["reference"]}
        if "direction" in scored:
            item["direction"] = scored["direction"]
        item["tuned"] = _model_row(row, scored, tuned.result.kind)
        for label, by_index in others.items():
            if row["dataset_index"] not in by_index:
                raise QfkError(f"the {label} model has no prediction for dataset row {row['dataset_index']}",
                               "both models must predict the same rows: run qfk eval again")
            item[label] = _model_row(*by_index[row["dataset_index"]], tuned.result.kind)
        if "base" in item:
            item["delta"] = {k: item["tuned"]["scores"][k] - item["base"]["scores"][k] for k in item["tuned"]["scores"]}
        out.append(item)
    return out


def _by_dataset_index(run: ModelRun) -> dict[int, tuple[dict, dict]]:
    return {row["dataset_index"]: (row, scored) for row, scored in zip(run.rows, run.result.rows)}


def _model_row(row: dict, scored: dict, kind: str) -> dict:
    scores = {k: float(scored[k]) for k in SCORE_KEYS[kind]}
    return {"prediction": row["prediction"], "think": scored["think"], "think_compliant": scored["think_compliant"],
            "reasoning": row.get("reasoning"), "answer": scored["answer"], "scores": scores}


# ---------------------------------------------------------------------------------------------
# 6. outputs
# ---------------------------------------------------------------------------------------------
def decoding(run: ModelRun, asked_sample: bool, budget: Any = None) -> dict:
    """How the predictions were generated, and why, in qfk eval's words (the reason depends on the
    think mode: thinking and mixed modes sample, since Qwen3 must never decode greedily when it thinks)."""
    from ..recipe import presets

    keys = ("do_sample", "temperature", "top_p", "top_k", "max_new_tokens")
    sampled = bool(run.args.get("do_sample", True))
    thinking = expected_thinking(run.args)
    if not sampled:
        note = ("deterministic (do_sample false): qfk eval's default, so the scores are reproducible "
                "(--sample for Qwen3's sampling)")
    elif asked_sample:
        note = f"{presets.QWEN_SAMPLING} (--sample): scores vary a little from run to run"
    elif thinking is None:
        note = (f"{presets.QWEN_SAMPLING} for thinking mode (enable_thinking null: the model may think on any row, "
                "and Qwen3 must never decode greedily when it thinks): scores vary a little from run to run")
    else:
        note = (f"{presets.QWEN_SAMPLING} for thinking mode (Qwen3 must never decode greedily when it thinks: "
                "it repeats itself): scores vary a little from run to run")
    out = {"kind": "sample" if sampled else "deterministic", "note": note, **{k: run.args[k] for k in keys if k in run.args}}
    if budget is not None:
        out["budget"] = budget.as_dict()
        out["budget_note"] = budget.describe()
    out["per_device_eval_batch_size"] = run.args.get("per_device_eval_batch_size")
    return out


def decoding_warnings(runs: list[ModelRun], asked_sample: bool) -> list[str]:
    """What to tell the user about decoding (the builder's warnings speak of --deterministic, a
    ``qfk recipe new`` flag: qfk eval says it in its own words)."""
    out = [w for r in runs for w in r.info.get("warnings", []) if not w.startswith("--deterministic")]
    if not asked_sample and runs[0].args.get("do_sample", True):
        out.append("thinking mode: predictions use Qwen3's sampling (never greedy), so scores vary a little from run to run")
    return list(dict.fromkeys(out))


def signatures(result: EvalResult) -> dict:
    """The exact metric definitions: sacreBLEU signatures per direction, or the ROUGE-L tokenizer."""
    if result.kind == "translation":
        sig = {"overall": {"bleu": result.overall["bleu_signature"], "chrf": result.overall["chrf_signature"]}}
        sig.update({d: {"bleu": m["bleu_signature"], "chrf": m["chrf_signature"]} for d, m in result.per_direction.items()})
        return sig
    return {"rouge_l": result.overall["rouge_l_tokenizer"], "exact_match": result.overall["exact_match_normalisation"]}


def build_metrics(target: EvalTarget, req: EvalRequest, runs: list[ModelRun], rows: list[dict], leaks: list | None,
                  plan: PredictPlan | None = None) -> dict:
    """``metrics.json``: the kit's metrics per model, deltas, signatures, decoding and
    LLaMA-Factory's own metrics under their own names."""
    from .. import __version__

    tuned = runs[0].result
    metrics: dict = {
        "qfk_eval": 1, "version": __version__, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": req.dataset, "kind": tuned.kind, "n": tuned.n, "row_metric": ROW_KEY[tuned.kind],
        "target": {"spec": target.spec, "run_dir": str(target.run_dir) if target.run_dir else None,
                   "trained_on": training_datasets(target)},
        "leaks": [f.as_dict() for f in leaks] if leaks is not None else None,
        "models": {r.label: _model_info(r) for r in runs},
        "decoding": decoding(runs[0], req.sample, plan.budget if plan else None),
        "speed": {r.label: speed(r) for r in runs},
        "signatures": signatures(tuned),
    }
    for r in runs:
        metrics[r.label] = model_metrics(r.result)
    if len(runs) > 1:
        metrics["delta"] = compare(metrics["tuned"], metrics["base"], tuned.kind)
        metrics["regressions"] = regressions(rows, ROW_KEY[tuned.kind])
        metrics["identical"] = identical_predictions(rows, runs[1].label)
    metrics["llamafactory"] = {"note": LF_NOTE, **{r.label: r.llamafactory for r in runs}}
    return metrics


def speed(run: ModelRun) -> dict:
    """Rows, new tokens and seconds of a model's prediction (from its progress events)."""
    p = run.progress
    elapsed = p.get("elapsed_s") or 0.0
    return {"rows": p.get("rows"), "new_tokens": p.get("new_tokens"), "seconds": elapsed,
            "tokens_per_s": round(p["new_tokens"] / elapsed, 1) if elapsed and p.get("new_tokens") is not None else None}


#: why tuned and base can predict the same text on every row, and what to do about it
IDENTICAL_NOTE = ("the adapter did not change what the model generates on these rows: typically too few steps or "
                  "too low a learning rate for the change to reach the argmax (see the loss plot), or an adapter "
                  "that was not loaded; train longer (num_train_epochs, max_steps) or with a higher learning_rate")


def identical_predictions(rows: list[dict], other: str = "base") -> dict:
    """How many rows the tuned model predicts exactly as ``other`` does, with the explanation
    when it is every row."""
    same = [r["dataset_index"] for r in rows if other in r and r["tuned"]["prediction"] == r[other]["prediction"]]
    out = {"rows": len(same), "of": len(rows), "dataset_rows": same[:20]}
    if rows and len(same) == len(rows):
        out["note"] = f"tuned and {other} predictions are identical on every row: {IDENTICAL_NOTE}"
    return out


def _model_info(run: ModelRun) -> dict:
    return {"model": run.args.get("model_name_or_path"), "adapter": run.args.get("adapter_name_or_path"),
            "template": run.args.get("template"), "enable_thinking": expected_thinking(run.args),
            "recipe": str(run.recipe_path), "predictions": str(run.output_dir / "generated_predictions.jsonl")}


def write_outputs(out: Path, metrics: dict, rows: list[dict]) -> dict[str, str]:
    """``metrics.json`` and ``predictions.jsonl`` (atomically)."""
    from ..io.atomic import atomic_write_bytes

    atomic_write_bytes(out / METRICS_FILE, (json.dumps(metrics, indent=2, ensure_ascii=False, default=str) + "\n").encode())
    lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    atomic_write_bytes(out / PREDICTIONS_FILE, lines.encode("utf-8"))
    return {"metrics": str(out / METRICS_FILE), "predictions": str(out / PREDICTIONS_FILE)}


def evaluate(req: EvalRequest, *, console=None, verbose: bool = False, on_start=None, on_leaks=None,
             on_plan=None) -> EvalOutcome:
    """The whole evaluation (module docstring): resolve, write recipes, bound the decoding, predict,
    score, compare, report."""
    from .report import write_report

    target = resolve_target(req.target, data_dir=req.data_dir, template=req.template, enable_thinking=req.enable_thinking)
    check_dataset(req.dataset, target.data_dir)
    base_model(target, req.base)  # a bad --base stops here, before anything is written
    dataset, entry = dataset_rows(req.dataset, target.data_dir)
    leaks = leak_findings(target, req.dataset)
    if leaks and on_leaks:
        on_leaks(leaks)
    overrides = recipe_overrides(req, target.source)
    out = Path(req.out) if req.out else default_out(target, req.dataset)
    out.mkdir(parents=True, exist_ok=True)
    source = write_source(target, out)
    runs = write_recipes(target, req, out, source, overrides)
    plan = plan_predictions(req, runs[0].args, dataset, entry, overrides, len(runs), gpus=0 if req.cpu else None)
    runs = write_recipes(target, req, out, source, overrides)  # again, with the bounded decoding
    if on_plan:
        on_plan(plan)
    warnings = decoding_warnings(runs, req.sample)
    run_predictions(runs, console=console, verbose=verbose, on_start=on_start, dataset=req.dataset, rows=plan.rows)
    score_model(runs[0], dataset, entry)
    for run in runs[1:]:
        score_model(run, dataset, entry, kind=runs[0].result.kind)
    rows = combined_rows(runs)
    metrics = build_metrics(target, req, runs, rows, leaks, plan)
    files = write_outputs(out, metrics, rows)
    files.update(write_report(out, metrics, rows, run_dir=target.run_dir))
    return EvalOutcome(out, metrics, rows, files, warnings, leaks, plan)
