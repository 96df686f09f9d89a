"""``qfk recipe new``: a LLaMA-Factory recipe from a model, a method and registered datasets.

The template and ``enable_thinking`` come from what the datasets contain (their qfk manifests,
or a scan of their rows when a dataset was registered by hand), never from a guess. ``--mix``
ratios are made exact with per-dataset ``num_samples`` entries in ``dataset_info.json``. A training
recipe's cutoff_len, liger kernel, packing and per-device batch come from the rows' token lengths
and the GPU (:mod:`qwen_factory_kit.recipe.sizing`); its header gives the memory model's estimate.
"""

from __future__ import annotations

import math
import os
import re
from fractions import Fraction
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import QfkError
from ..registry import MIXED_RE, mixed_name
from . import memory, presets, sizing
from .document import Recipe, scalar, split_names

SECTION_ORDER = ("model", "method", "data", "training", "output", "eval", "generation", "export")


@dataclass
class DatasetFacts:
    """What a registered dataset holds, as far as a recipe cares."""

    name: str
    entry: dict
    rows: int | None
    mode: str            # reasoning | direct | mixed | none
    empty_style: str     # explicit | omit | mixed | none
    source: str          # where mode and rows came from
    file: Path | None = None

    @property
    def ranking(self) -> bool:
        return bool(self.entry.get("ranking"))


def _scan(path: Path, entry: dict) -> tuple[int, dict]:
    """Rows and think tally of a file registered without a qfk manifest (read to the end)."""
    from ..lint import _texts, iter_rows, layout_from
    from ..think import ThinkTally, parse_response

    tally, rows, lay = ThinkTally(), 0, None
    for _, row in iter_rows(path):
        rows += 1
        if not isinstance(row, dict):
            continue
        lay = lay or layout_from(entry, row)
        for kind, _, value in _texts(row, lay):
            if kind == "response" and isinstance(value, str):
                tally.add_parsed(parse_response(value))
    return rows, tally.as_dict()


def dataset_facts(name: str, data_dir: str | os.PathLike) -> DatasetFacts:
    from ..registry import Registry, manifest_for, resolve_file

    reg = Registry.at(data_dir)
    if not reg.path.exists():
        raise QfkError(f"no {reg.path}: dataset '{name}' is not registered",
                       "convert and register first: qfk convert ... (or qfk datasets add FILE --name NAME)")
    entry = reg.get(name)
    path = resolve_file(entry, reg.data_dir)
    if path is None:
        raise QfkError(f"dataset '{name}' is a hub entry: the kit cannot see its think mode offline",
                       "convert it with qfk convert, or set it yourself: template=qwen3 enable_thinking=true|false")
    if not path.exists():
        raise QfkError(f"dataset '{name}': File {path} not found", f"convert it again, or: qfk datasets remove {name}")
    manifest = manifest_for(entry, reg.data_dir)
    if manifest and "think" in manifest:
        rows = None
        for out in manifest.get("outputs", {}).values():
            if Path(out.get("file", "")).name == path.name:
                rows = out.get("rows")
        if rows is None:
            rows, _ = _scan(path, entry)
        think = manifest["think"]
        return DatasetFacts(name, entry, rows, think["mode"], think.get("empty_style", "none"),
                            f"manifest {path.with_suffix('').name}.manifest.json", path)
    rows, think = _scan(path, entry)
    return DatasetFacts(name, entry, rows, think["mode"], think["empty_style"], f"scanned {rows} rows", path)


def mix_counts(ratios: dict[str, float], rows: dict[str, int], total: int | None = None) -> dict[str, int]:
    """Whole row counts in exactly the requested proportions.

    Without ``total`` the mix is as large as it can be without repeating a row, rounded down to a
    total that the ratios split into whole rows (75/25 -> a multiple of 4), so the mix is exact.
    When no such total fits (or ``total`` is given), counts are rounded by largest remainder."""
    if any(r <= 0 for r in ratios.values()):
        raise QfkError(f"every --mix ratio must be > 0: {ratios}", "drop the dataset from --dataset instead")
    s = sum(ratios.values())
    if abs(s - 1) > 1e-6:
        raise QfkError(f"--mix ratios add up to {s:g}, not 1", "for example: --mix medical=0.75,finetome=0.25")
    if total is None:
        most = math.floor(min(rows[n] / r for n, r in ratios.items()) + 1e-9)
        # the largest total that splits into whole rows in exactly these proportions (0.75/0.25 -> a multiple of 4)
        step = math.lcm(*(Fraction(r).limit_denominator(10000).denominator for r in ratios.values()))
        total = (most // step) * step if most >= step else most
    if total < len(ratios):
        raise QfkError(f"a mix of {total} rows cannot hold {len(ratios)} datasets", "give --mix-total, or convert more rows")
    exact = {n: total * r for n, r in ratios.items()}
    counts = {n: math.floor(v) for n, v in exact.items()}
    short = total - sum(counts.values())
    for n in sorted(exact, key=lambda k: (counts[k] - exact[k], k))[:short]:
        counts[n] += 1
    return counts


#: a dataset repeated more than this many times per epoch is flagged (header and stderr)
UPSAMPLE_WARN = 2


def upsample_factor(count: int, rows: int | None) -> float | None:
    """How many times each of ``rows`` rows repeats per epoch in ``count`` (None when nothing repeats)."""
    if not rows or count <= rows:
        return None
    return count / rows


def _times(factor: float) -> str:
    return f"{factor:.1f}".removesuffix(".0") if factor < 10 else f"{round(factor)}"


def _mix_share(count: int, rows: int | None) -> tuple[str, str]:
    """How a mix takes ``count`` of a dataset's ``rows`` rows: the header's words, and a note
    when each row repeats more than :data:`UPSAMPLE_WARN` times."""
    if count == rows:
        return "all", ""
    factor = upsample_factor(count, rows)
    if factor is None:
        return (f"{count} sampled", "") if rows else (f"{count} (upsampled)", "")
    if factor > UPSAMPLE_WARN:
        return f"{count} (upsampled {_times(factor)}x)", f": every row repeats about {_times(factor)} times per epoch"
    return f"{count} (upsampled)", ""


def upsampling_warnings(info: dict) -> list[str]:
    """One line per dataset a recipe's mix repeats more than :data:`UPSAMPLE_WARN` times per epoch
    (from ``recipe.info``: the mix entries and the datasets' row counts)."""
    out = []
    for name, entry in (info.get("mix") or {}).items():
        m = MIXED_RE.match(str(entry))
        rows = (info.get("datasets") or {}).get(name, {}).get("rows")
        factor = upsample_factor(int(m["count"]), rows) if m else None
        if factor and factor > UPSAMPLE_WARN:
            out.append(f"{name} is upsampled {_times(factor)}x: each of its {rows} rows repeats about {_times(factor)} times "
                       f"per epoch ({m['count']} rows in the mix); the model may memorise them. Convert more rows, "
                       "or lower --mix-total")
    return out


def recipe_warnings(recipe: Recipe) -> list[str]:
    """What ``qfk recipe new`` prints to stderr about a recipe it wrote."""
    return [*recipe.info.get("warnings", []), *upsampling_warnings(recipe.info)]


def require_registered(req: RecipeRequest, data_dir: Path) -> None:
    """Every dataset ``--dataset``, ``--mix`` and ``--eval-dataset`` name is registered; else one
    error naming each unknown name with its close matches from the registry."""
    import difflib

    from ..registry import Registry

    reg = Registry.at(data_dir)
    if not reg.path.exists():
        return  # dataset_facts says so, with how to register
    have = reg.read()
    known = [n for n in have if not MIXED_RE.match(n)]
    asked = {"--dataset": req.datasets, "--mix": list(req.mix or {}), "--eval-dataset": req.eval_datasets}
    problems: dict[str, str] = {}
    for option, names in asked.items():
        for name in names:
            if name in have or name in problems:
                continue
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            close += [k for k in known if name.lower() in k.lower() and k not in close]
            problems[name] = (f"Undefined dataset '{name}' ({option}): not registered in {_rel(reg.path)}"
                              + (f"; did you mean {', '.join(close[:3])}?" if close else ""))
    if problems:
        raise QfkError("\n  ".join(problems.values()),
                       "list them with: qfk datasets list (register one: qfk convert ... or qfk datasets add FILE --name NAME)")


def parse_mix(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise QfkError(f"--mix item '{part}' is not NAME=RATIO", "for example: --mix medical=0.75,finetome=0.25")
        name, value = (x.strip() for x in part.split("=", 1))
        try:
            ratio = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
        except ValueError:
            raise QfkError(f"--mix ratio '{value}' for {name} is not a number", "use 0.75 or 75%") from None
        out[name] = ratio
    return out




def ensure_mix_entries(names: list[str], data_dir: str | os.PathLike) -> list[str]:
    """Register ``BASE__nN`` entries (BASE's entry + ``num_samples: N``) that a recipe names and the
    registry lacks, when BASE is registered. Returns the names registered."""
    from ..registry import Registry

    reg = Registry.at(data_dir)
    if not reg.path.exists():
        return []
    have = reg.read()
    made = []
    for name in names:
        m = MIXED_RE.match(name)
        if name in have or not m or m["base"] not in have:
            continue
        reg.add(name, {**have[m["base"]], "num_samples": int(m["count"])})
        made.append(name)
    return made


def register_mix_entries(args: dict) -> tuple[str, list[str]]:
    """:func:`ensure_mix_entries` for every dataset a recipe's arguments name, in its dataset_dir;
    returns (that dataset_dir, the names registered)."""
    from .document import recipe_datasets

    data_dir = str(args.get("dataset_dir") or "data")
    return data_dir, ensure_mix_entries(recipe_datasets(args), data_dir)


@dataclass
class RecipeRequest:
    """Everything ``qfk recipe new`` was asked for."""

    method: str
    model: str | None = None
    datasets: list[str] = field(default_factory=list)
    mix: dict[str, float] | None = None
    mix_total: int | None = None
    eval_datasets: list[str] = field(default_factory=list)
    data_dir: str | None = None
    output_dir: str | None = None
    adapter: str | None = None  # predict/merge: an adapter folder, presets.NO_ADAPTER (the base model), or None (--from's)
    sample: bool | None = None  # predict: Qwen3's sampling (True), deterministic (False), or None (by the data)
    from_recipe: str | None = None
    deepspeed: str | None = None  # a presets.DEEPSPEED key, "none" (no DeepSpeed), or None (the method's default)
    overrides: dict = field(default_factory=dict)
    filename: str = "recipe.yaml"
    command: str = ""
    curated: bool = False  # written for the recipes/ collection: no local row counts or file names in the header
    notes: list[str] = field(default_factory=list)  # extra header lines (how to prepare the data)
    # sizing a training recipe (recipe/sizing.py); None leaves the choice to the kit
    cutoff_len: int | None = None     # --cutoff-len: no choice from the data
    liger: bool | None = None         # --liger / --no-liger (default: on for SFT on a CUDA GPU with liger-kernel)
    packing: bool | None = None       # --packing / --no-packing (default: with liger on a CUDA GPU)
    gpu_memory: float | None = None   # --gpu-memory GB (default: this machine's card, if any)
    gpus: int | None = None           # --gpus N (default: this machine's count, else 1)
    max_cutoff: int | None = None     # --max-cutoff N: never choose a cutoff_len above N
    drop_long: bool = False           # --drop-long: drop the rows over the cutoff (qfk datasets filter), not stop or cut
    dropped: dict = field(default_factory=dict)  # what --drop-long dropped: dataset -> DroppedRows (set by recipe new)
    stats: bool = True                # measure the training rows' token lengths (--no-stats: keep the preset cutoff)
    stats_rows: int = 2000            # rows per dataset measured
    gpu: sizing.Gpu | None = None     # None: this machine's (tests and curated recipes pass one)


@dataclass
class ThinkChoice:
    """How the recipe trains (or generates) think blocks, and why."""

    template: str
    enable: bool | None
    why: str
    mode: str | None = None  # the data's think mode; None when taken from a training recipe


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _header(req: RecipeRequest, title: str, verb: str) -> list[str]:
    f = req.filename
    run = {"train": [f"llamafactory-cli train {f}", f"qfk train {f}                  # progress, run record, loss plot; --nproc N for more GPUs"],
           "predict": [f"llamafactory-cli train {f}", f"qfk train {f}"],
           "merge": [f"llamafactory-cli export {f}"]}[verb]
    example = {"train": "learning_rate=5.0e-6 num_train_epochs=3", "predict": "max_samples=100",
               "merge": "export_dir=models/merged"}[verb]
    lines = [f"qfk recipe: {title}", "", "Run it from the folder that holds the dataset_dir:"]
    lines += [f"  {r}" for r in run]
    lines += ["Override any key after the file as key=value" + (" (same syntax for both commands):" if len(run) > 1 else ":"),
              f"  {run[0].split()[0]} {run[0].split()[1]} {f} {example}",
              f"Check it first: qfk recipe check {f}", ""]
    return lines


def _footer(req: RecipeRequest) -> list[str]:
    from .. import __version__

    lines = list(req.notes)
    if req.overrides:
        lines.append("Overrides: " + " ".join(f"{k}={scalar(v)}" for k, v in req.overrides.items()))
    if req.command:
        lines.append(f"Made by: {req.command}" if req.curated else f"Made by qfk {__version__}: {req.command}")
    return lines


def _data_dir_value(data_dir: Path) -> str:
    rel = _rel(data_dir)
    return rel if not rel.startswith("..") else str(data_dir.resolve())


def _facts_for(names: list[str], data_dir: Path) -> list[DatasetFacts]:
    return [dataset_facts(n, data_dir) for n in names]


def _think_from_data(facts: list[DatasetFacts], model: presets.ModelInfo) -> ThinkChoice:
    mode = presets.combine_modes([f.mode for f in facts])
    template, enable, why = presets.think_settings(mode, model)
    return ThinkChoice(template, enable, why, mode)


def _think_lines(facts: list[DatasetFacts], think: ThinkChoice, curated: bool = False) -> list[str]:
    parts = ", ".join(f"{f.name} {f.mode}" + ("" if curated else f" ({f.source})") for f in facts)
    return [f"Think mode: {parts}",
            f"  -> {think.mode}: template {think.template}, enable_thinking {scalar(think.enable)} ({think.why})"]


def _blank_recipe(kind: str) -> Recipe:
    r = Recipe(kind=kind)
    for s in SECTION_ORDER:
        r.section(s)
    return r


def _set_think_keys(data: dict, think: ThinkChoice) -> None:
    data["template"] = think.template
    if think.template == "qwen3":
        data["enable_thinking"] = think.enable


def _apply_overrides(r: Recipe, overrides: dict) -> None:
    for key, value in (overrides or {}).items():
        r.set(key, value, comment="override")


def new_recipe(req: RecipeRequest) -> Recipe:
    """Build the recipe (and register the ``num_samples`` entries an exact ``--mix`` needs)."""
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
    preset = presets.method_preset(req.method, model, deepspeed=req.deepspeed)

    r = _blank_recipe("train")
    _model_and_method(r, req.method, model, preset)
    dataset_names, mix_lines, mix_entries = _exact_mix(req, facts)
    _train_data(r, dataset_names, eval_facts, data_dir, think)
    _training(r, preset)
    _train_output(r, req, model, facts, evaluate=bool(eval_facts))
    sized = _size(r, req, model, facts, think)
    _apply_overrides(r, req.overrides)
    estimate = _estimate(r.args, model, sized)
    memory_lines = _memory_lines(estimate, model, measured=sized.lengths is not None)
    r.header = _train_header(req, r, names, model, preset, facts, think, mix_lines,
                             _dropped_lines(req) + sized.lines + memory_lines)
    r.info = {"model": model.name, "model_kind": model.kind, "method": req.method, "preset_source": preset.source,
              "think_mode": think.mode, "template": think.template, "enable_thinking": think.enable,
              "datasets": {f.name: {"rows": f.rows, "mode": f.mode, "source": f.source} for f in facts},
              "mix": {n: c for n, c in zip([f.name for f in facts], dataset_names)} if req.mix else None,
              "sizing": sized.info, "memory": _memory_info(estimate),
              "dropped": {name: d.as_dict() for name, d in req.dropped.items()} or None,
              "files": _extra_files(r.args)}
    _register(mix_entries, data_dir)
    return r


def _require_train_inputs(req: RecipeRequest) -> None:
    if not req.model:
        raise QfkError("--model is required", "for example: --model Qwen3-4B (or a local model folder)")
    if not req.datasets and not req.mix:
        raise QfkError("--dataset is required", "name registered datasets: --dataset medical_r1,finetome (list them: qfk datasets list)")
    if req.drop_long and not req.stats:
        raise QfkError("--drop-long drops the rows over the cutoff, which --no-stats leaves unmeasured",
                       "drop --no-stats, or --drop-long")


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


def _exact_mix(req: RecipeRequest, facts: list[DatasetFacts]) -> tuple[list[str], list[str], dict[str, dict]]:
    """The dataset names the recipe trains, the header lines that account for a ``--mix``, and the
    ``NAME__nN`` entries to register for it (once the recipe is made: :func:`_register`)."""
    if not req.mix:
        return [f.name for f in facts], [], {}
    counts = mix_counts(req.mix, {f.name: f.rows or 0 for f in facts}, req.mix_total)
    dataset_names, lines, entries = [], [], {}
    total = sum(counts.values())
    for f in facts:
        n = counts[f.name]
        if n == f.rows:
            dataset_names.append(f.name)
        else:
            derived = mixed_name(f.name, n)
            entries[derived] = {**f.entry, "num_samples": n}
            dataset_names.append(derived)
        how, note = _mix_share(n, f.rows)
        if req.curated:
            lines.append(f"  {f.name}: {n} rows = {n / total:.2%}")
        else:
            lines.append(f"  {f.name}: {how} of {f.rows} rows = {n / total:.2%} (asked {req.mix[f.name]:.2%}){note}")
    return dataset_names, [f"Mix (exact, rows per epoch = {total}; *__nN entries carry num_samples: N in dataset_info.json):",
                           *lines], entries


def _register(entries: dict[str, dict], data_dir: Path) -> None:
    if entries:
        from ..registry import Registry

        reg = Registry.at(data_dir)
        for name, entry in entries.items():
            reg.add(name, entry)


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
    sized = sizing.size_recipe({**r.args, **req.overrides}, sizing.model_shape(model), facts=facts, lengths=lengths,
                               unmeasured=unmeasured, gpu=req.gpu or sizing.Gpu.here(), wishes=wishes)
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
# predict and merge
# ---------------------------------------------------------------------------------------------
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
    _apply_overrides(r, overrides)
    r.header = _header(req, title, req.method) + used.lines() + think_lines + decoding.lines + _footer(req)
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


# ---------------------------------------------------------------------------------------------
# the command line that made a recipe
# ---------------------------------------------------------------------------------------------
def command_line(argv: list[str]) -> str:
    return "qfk " + " ".join(shlex.quote(a) for a in argv)


def invoked_command(argv: list[str], verb: tuple[str, ...] = ("recipe", "new")) -> str:
    """The ``qfk recipe new ...`` line a recipe header records as 'Made by', from ``sys.argv``;
    empty when the process was not started as that command (the Python API, tests in-process)."""
    return command_line([*verb, *argv[len(verb) + 1:]]) if argv[1:len(verb) + 1] == list(verb) else ""
