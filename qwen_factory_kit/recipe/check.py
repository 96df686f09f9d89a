"""``qfk recipe check``: LLaMA-Factory's own argument parsing plus the kit's rules, before a model loads.

Every finding says what is wrong and how to fix it. The calls into LLaMA-Factory live in
:mod:`qwen_factory_kit.lfbridge`; this module holds the kit's rules, each a function of the recipe's
arguments and the facts it is given (datasets, model, machine). Checks (``check`` ids):

* ``keys``: LLaMA-Factory's HfArgumentParser and ``get_train_args`` / ``get_infer_args`` checks, plus
  value types (``parse_dict`` does no conversion, so ``lora_rank: "x"`` would slip through);
* ``datasets``: every ``dataset``/``eval_dataset`` registered in the recipe's ``dataset_dir`` and loadable;
* ``ranking``: preference data for dpo/rm stages, SFT data otherwise;
* ``template``: the template fits the model family (Instruct-2507 -> qwen3_nothink, other Qwen3 -> qwen3);
* ``think``: ``template``/``enable_thinking`` train what the data holds (QWEN3-THINK.md);
* ``cutoff``: rows that ``cutoff_len`` would cut, with LLaMA-Factory's own rendering (``qfk stats``);
* ``output``: an ``output_dir`` that would silently resume, be overwritten or stop LLaMA-Factory;
* ``gpu``: QLoRA / bf16 / flash attention / DeepSpeed against this machine;
* ``paths``: spaces (LLaMA-Factory's torchrun relaunch splits them), missing files;
* ``sampling``: predict/merge recipes with LLaMA-Factory's sampling defaults instead of Qwen3's.
"""

from __future__ import annotations

import enum
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import lfbridge
from ..errors import QfkError
from ..findings import Finding
from . import presets
from .document import MODEL_KEYS, PATH_KEYS, scalar, split_names

PREFERENCE_STAGES = ("dpo", "rm")
CHECKPOINT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin",
                    "training_args.bin", "trainer_state.json")
#: optional packages the machine rules ask about
OPTIONAL_PACKAGES = ("bitsandbytes", "flash_attn", "deepspeed")


def recipe_kind(args: dict) -> str:
    if args.get("export_dir"):
        return "merge"
    if args.get("do_predict") and not args.get("do_train"):
        return "predict"
    return "train"


@dataclass(frozen=True)
class Machine:
    """What the machine rules need to know about the machine the check runs on."""

    cuda: bool
    packages: frozenset = frozenset()  # the OPTIONAL_PACKAGES importable here

    @classmethod
    def here(cls) -> Machine:
        return cls(_cuda(), frozenset(m for m in OPTIONAL_PACKAGES if _installed(m)))

    def has(self, module: str) -> bool:
        return module in self.packages


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any or tp is None:
        return True
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return value in {m.value for m in tp} or isinstance(value, tp)
        if origin is None and tp in (list, dict):
            return isinstance(value, tp)
    if origin in (list, dict, tuple):
        return isinstance(value, origin) or isinstance(value, str)
    return True


def check_types(args: dict, fields: dict[str, Any] | None = None) -> list[Finding]:
    """Value types against LLaMA-Factory's argument annotations (``fields``: name -> type, by default
    :func:`lfbridge.argument_fields`): ``parse_dict`` does no conversion, so ``lora_rank: "x"`` would slip through."""
    fields = lfbridge.argument_fields() if fields is None else fields
    out = []
    for key, value in args.items():
        tp = fields.get(key)
        if tp is not None and value is not None and not _type_ok(value, tp):
            want = str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")
            if isinstance(value, bool) and _type_ok("x", tp):
                word = "no" if value is False else "yes"
                fix = (f"YAML reads no/yes/on/off as booleans: quote it in the recipe ({key}: \"{word}\"), "
                       f"or on the command line: {key}=\"'{word}'\"")
            else:
                fix = "numbers unquoted, true/false for booleans, text for names"
            out.append(Finding("keys", "fail", f"{key}: {value!r} is not a valid value (LLaMA-Factory expects {want})", fix))
    return out


def set_aside_findings(args: dict, set_aside: list[str], machine: Machine) -> list[Finding]:
    """What the parse on this machine left out (:func:`lfbridge.parseable_here`), and what that means."""
    out: list[Finding] = []
    for key in set_aside:
        if key in lfbridge.PRECISION_KEYS:
            out.append(Finding("gpu", "info", f"{key}: true needs a GPU; this machine has none, so it was parsed as false here",
                               "on a CPU machine add use_cpu=true bf16=false (the recipe is fine for a GPU machine)"))
    if "deepspeed" in set_aside:
        ds = Path(str(args["deepspeed"]))
        if not ds.is_file():
            out.append(Finding("paths", "fail", f"deepspeed config {ds} not found",
                               "qfk train writes the shipped ds_z*_config.json files; or set deepspeed=PATH"))
        if not machine.has("deepspeed"):
            out.append(Finding("gpu", "warn", "the recipe uses DeepSpeed, which is not installed here",
                               "pip install deepspeed (on the GPU machine); qfk train launches it through torchrun"))
    return out


def parser_finding(rejection: lfbridge.Rejection | None, kind: str, version: str) -> Finding:
    """The ``keys`` finding for LLaMA-Factory's verdict on a ``kind`` recipe."""
    if rejection is None:
        return Finding("keys", "ok", f"LLaMA-Factory {version} parses every key ({kind} recipe)")
    if rejection.kind == "needs-launcher":
        return Finding("keys", "ok", "LLaMA-Factory parses the recipe (distributed launch: qfk train / llamafactory-cli)")
    if rejection.kind == "exit":
        return Finding("keys", "fail", f"LLaMA-Factory's parser exited ({rejection.message})",
                       "run llamafactory-cli train RECIPE for its message")
    fix = ("remove or rename the key: it is not a LLaMA-Factory 0.9.5 argument (list: llamafactory-cli train -h)"
           if rejection.kind == "unknown-key" else "fix the value LLaMA-Factory names")
    return Finding("keys", "fail", f"LLaMA-Factory rejects the recipe: {rejection.message}", fix)


def check_llamafactory(args: dict, machine: Machine | None = None) -> list[Finding]:
    """Value types, then LLaMA-Factory's own parser (no model, no data load) on what this machine can parse."""
    findings = check_types(args)
    if findings:
        return findings
    machine = machine or Machine.here()
    kind = recipe_kind(args)
    parseable, set_aside = lfbridge.parseable_here(args, cuda=machine.cuda)
    notes = set_aside_findings(args, set_aside, machine)
    rejection = lfbridge.parse_recipe_args(parseable, infer=kind == "merge")
    version = lfbridge.llamafactory_version() if rejection is None else ""
    return notes + [parser_finding(rejection, kind, version)]


def _model(args: dict) -> presets.ModelInfo | None:
    spec = args.get("model_name_or_path")
    if not spec:
        return None
    try:
        return presets.resolve_model(str(spec))
    except QfkError:
        return None


def check_datasets(args: dict) -> tuple[list[Finding], list]:
    """Registered, loadable, ranking against the stage; returns the facts of the training datasets
    (of the eval datasets for a predict recipe)."""
    from ..registry import Registry

    kind = recipe_kind(args)
    if kind == "merge":
        return [], []
    train_names = split_names(args.get("dataset")) if kind == "train" else []
    eval_names = split_names(args.get("eval_dataset"))
    if not train_names and not eval_names:
        return [Finding("datasets", "fail", "the recipe names no dataset", "add dataset: NAME (qfk datasets list)")], []
    reg = Registry.at(Path(str(args.get("dataset_dir") or "data")))
    registry, trouble = _open_registry(reg)
    if trouble:
        return [trouble], []
    out: list[Finding] = []
    facts = []
    for name in train_names + eval_names:
        found, fact = _check_dataset(name, registry, reg, args.get("stage", "sft"),
                                     wants_facts=name in train_names or kind == "predict")
        out += found
        facts += [fact] if fact is not None else []
    if not out:
        out.append(Finding("datasets", "ok", f"{', '.join(train_names + eval_names)} registered in {reg.path} and loadable"))
    return out, facts


def _open_registry(reg) -> tuple[dict, Finding | None]:
    if not reg.path.exists():
        return {}, Finding("datasets", "fail", f"Cannot open {reg.path} (dataset_dir: {reg.data_dir}, from {os.getcwd()})",
                           "run from the folder that holds the data dir, or set dataset_dir=PATH; register with qfk convert")
    try:
        return reg.read(), None
    except QfkError as exc:
        return {}, Finding("datasets", "fail", exc.message, exc.hint or "")


def _check_dataset(name: str, registry: dict, reg, stage: str, *, wants_facts: bool) -> tuple[list[Finding], Any]:
    """One dataset of the recipe: registered, its entry loadable, ranking against the stage, and its facts."""
    from ..registry import check_entry
    from .build import dataset_facts

    entry = registry.get(name)
    if entry is None:
        return [_undefined(name, registry, reg.path)], None
    found = [f for f in check_entry(name, entry, reg.data_dir) if f.status != "ok"]
    for f in found:
        f.check = "datasets"
        f.message = f"{name}: {f.message}"
    out = found + _check_ranking(name, entry, stage)
    if any(f.status == "fail" for f in found) or entry.get("formatting", "alpaca") not in ("alpaca", "sharegpt"):
        return out, None
    if not wants_facts:
        return out, None
    try:
        return out, dataset_facts(name, reg.data_dir)
    except QfkError as exc:
        return out + [Finding("datasets", "warn", f"{name}: {exc.message}", exc.hint or "")], None


def _undefined(name: str, registry: dict, where: Path) -> Finding:
    from .build import MIXED_RE

    m = MIXED_RE.match(name)
    if m and m["base"] in registry:
        return Finding("datasets", "fail", f"Undefined dataset {name} in {where}: the mix entry ({m['base']} with "
                                           f"num_samples: {m['count']}) is not registered yet",
                       "qfk train registers it; for llamafactory-cli run once: qfk train RECIPE --dry-run")
    close = [n for n in registry if name.lower() in n.lower()][:4]
    return Finding("datasets", "fail", f"Undefined dataset {name} in {where}",
                   f"did you mean {', '.join(close)}?" if close else "register it: qfk convert ... or qfk datasets add FILE --name " + name)


def _check_ranking(name: str, entry: dict, stage: str) -> list[Finding]:
    ranking = bool(entry.get("ranking"))
    if (stage in PREFERENCE_STAGES) == ranking:
        return []
    need = "ranking data (chosen/rejected)" if stage in PREFERENCE_STAGES else "SFT data (ranking: false)"
    return [Finding("ranking", "fail", f"{name} has ranking: {str(ranking).lower()} but stage {stage} needs {need}: "
                                       "LLaMA-Factory stops with 'The dataset is not applicable in the current training stage'",
                    "use qfk convert preference outputs for dpo/orpo, other converters' outputs for sft")]


def check_template(args: dict, model: presets.ModelInfo | None) -> list[Finding]:
    template = args.get("template")
    if model is None:
        return [Finding("template", "warn", f"model {args.get('model_name_or_path')!r} is not a known Qwen3 model or folder: "
                                            "template not checked", "use a Qwen3 name (qfk recipe new --list-models) or a local folder")]
    want = "qwen3_nothink" if model.kind == "instruct-2507" else "qwen3"
    if not template:
        return [Finding("template", "fail", "no template: LLaMA-Factory would fall back to a generic one",
                        f"template: {want}")]
    if template not in ("qwen3", "qwen3_nothink"):
        return [Finding("template", "fail", f"template {template} is not a Qwen3 template ({model.name} uses {want})",
                        f"template={want}")]
    if model.kind == "instruct-2507" and template != "qwen3_nothink":
        return [Finding("template", "fail", f"{model.name} is non-thinking only; template qwen3 adds think blocks it never saw",
                        "template=qwen3_nothink")]
    if model.kind != "instruct-2507" and template == "qwen3_nothink":
        return [Finding("template", "warn", f"qwen3_nothink on {model.name} ({model.kind}) trains without the think "
                                            "switch: the model may lose thinking mode",
                        "template=qwen3 with enable_thinking=false trains direct answers the Qwen3 way")]
    return [Finding("template", "ok", f"{template} fits {model.name} ({model.kind})")]


def check_think(args: dict, facts: list, model: presets.ModelInfo | None) -> list[Finding]:
    """``template``/``enable_thinking`` against the think mode of the datasets (QWEN3-THINK.md)."""
    if not facts:
        return []
    template = args.get("template") or "qwen3"
    enable = args.get("enable_thinking", True)
    modes = {f.name: f.mode for f in facts}
    mode = presets.combine_modes(list(modes.values()))
    desc = ", ".join(f"{n} {m}" for n, m in modes.items())
    out: list[Finding] = []
    if template == "qwen3":
        out += _think_qwen3(mode, enable, desc)
    elif template == "qwen3_nothink":
        out += _think_nothink(facts, mode, desc)
    if model is not None and model.kind in ("instruct-2507", "thinking-2507"):
        try:
            presets.think_settings(mode, model)
        except QfkError as exc:
            out.append(Finding("think", "fail", exc.message, exc.hint or ""))
    if not out:
        out.append(Finding("think", "ok", f"template {template}, enable_thinking {scalar(enable)} trains what the data holds ({desc})"))
    return out


def _think_qwen3(mode: str, enable: Any, desc: str) -> list[Finding]:
    if mode in ("reasoning", "mixed") and enable is False:
        return [Finding("think", "fail", f"enable_thinking: false strips every think block of the data ({desc}): "
                                         "the reasoning is never trained",
                        "enable_thinking=true for reasoning data, enable_thinking=null for mixed data")]
    if mode == "direct" and enable is True:
        return [Finding("think", "warn", f"the data has no reasoning ({desc}) but enable_thinking: true trains an empty "
                                         "<think> block on every answer: the model learns to skip thinking",
                        "enable_thinking=false (empty block in the prompt, answers trained)")]
    if mode == "mixed" and enable is True:
        return [Finding("think", "warn", f"mixed data ({desc}) with enable_thinking: true trains empty think blocks on "
                                         "the rows without reasoning", "enable_thinking=null")]
    if mode == "reasoning" and enable is None:
        return [Finding("think", "info", "enable_thinking: null on all-reasoning data trains the same as true", "")]
    return []


def _think_nothink(facts: list, mode: str, desc: str) -> list[Finding]:
    if mode != "direct":
        return [Finding("think", "fail", f"qwen3_nothink trains think blocks as plain text ({desc})",
                        "template=qwen3 (hybrid or Thinking models) for reasoning data")]
    explicit = [f.name for f in facts if f.empty_style in ("explicit", "mixed") and f.mode != "reasoning"]
    if explicit:
        return [Finding("think", "fail", f"{', '.join(explicit)} write explicit empty <think> blocks, which qwen3_nothink "
                                         "trains as literal text", "convert with --empty-think omit, or use template=qwen3")]
    return []


def token_summary(args: dict, fact: Any, cutoff: int, max_rows: int) -> dict:
    """``qfk stats``'s summary of a dataset's first ``max_rows`` rows, rendered and tokenized exactly as LLaMA-Factory will."""
    from itertools import islice

    from ..lint import iter_rows
    from ..tokens import token_stats

    return token_stats(islice(iter_rows(fact.file), max_rows), fact.entry, path=str(fact.file),
                       template=args.get("template") or "qwen3", enable_thinking=args.get("enable_thinking", True),
                       cutoff_len=cutoff).summary()


def check_cutoff(args: dict, facts: list, *, max_rows: int = 2000,
                 measure: Callable[[dict, Any, int, int], dict] = token_summary) -> list[Finding]:
    """Rows longer than cutoff_len (``measure``: args, facts of one dataset, cutoff, max_rows -> ``qfk stats`` summary)."""
    cutoff = int(args.get("cutoff_len") or 2048)
    out: list[Finding] = []
    for f in facts:
        if f.ranking or f.file is None or f.entry.get("formatting", "alpaca") not in ("alpaca", "sharegpt"):
            continue
        s = measure(args, f, cutoff, max_rows)
        seen = f"{s['rows']} rows" + (f" (first {max_rows})" if (f.rows or 0) > max_rows else "")
        think_lost, answer_lost = s["rows_losing_think_close"], s["rows_losing_answer"]
        if think_lost:
            out.append(Finding("cutoff", "fail", f"{f.name}: cutoff_len {cutoff} cuts {len(think_lost)} of {seen} before </think> "
                                                 f"(rows {', '.join(map(str, think_lost[:8]))}): the model learns never to close thinking",
                               f"cutoff_len={s['recommended_cutoff_len']} (holds p99), or drop long rows"))
        elif answer_lost:
            out.append(Finding("cutoff", "warn", f"{f.name}: cutoff_len {cutoff} cuts the answer of {len(answer_lost)} of {seen} "
                                                 f"(rows {', '.join(map(str, answer_lost[:8]))})",
                               f"cutoff_len={s['recommended_cutoff_len']}"))
        else:
            out.append(Finding("cutoff", "ok", f"{f.name}: every one of {seen} fits cutoff_len {cutoff} "
                                               f"(p99 {s['total'].get('p99', 0)} tokens, max {s['total'].get('max', 0)})"))
    return out


def check_output(args: dict) -> list[Finding]:
    kind = recipe_kind(args)
    key = "export_dir" if kind == "merge" else "output_dir"
    value = args.get(key)
    if not value:
        return [Finding("output", "fail", f"no {key}", f"{key}=saves/NAME")]
    out_dir = Path(str(value))
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return [Finding("output", "ok", f"{key} {out_dir} is new")]
    if kind == "merge":
        return [Finding("output", "warn", f"export_dir {out_dir} is not empty: the merged model overwrites it", "export_dir=models/NEW")]
    if kind == "predict":
        if (out_dir / "generated_predictions.jsonl").exists():
            return [Finding("output", "warn", f"{out_dir} already holds generated_predictions.jsonl: it will be replaced",
                            "output_dir=... to keep the old predictions")]
        return [Finding("output", "ok", f"output_dir {out_dir}")]
    checkpoints = sorted((p for p in out_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                         key=lambda p: int(p.name.split("-")[-1]))
    overwrite = bool(args.get("overwrite_output_dir"))
    if args.get("resume_from_checkpoint"):
        return [Finding("output", "info", f"resumes from {args['resume_from_checkpoint']} as asked")]
    if overwrite:
        return [Finding("output", "warn", f"output_dir {out_dir} is not empty and overwrite_output_dir: true: its files are "
                                          "overwritten and trainer_log.jsonl starts over", "output_dir=saves/NEW to keep the old run")]
    if checkpoints:
        return [Finding("output", "warn", f"output_dir {out_dir} holds {checkpoints[-1].name}: LLaMA-Factory silently RESUMES "
                                          "from it (a finished run does nothing)",
                        "to resume, nothing to do; to start over: output_dir=saves/NEW or overwrite_output_dir=true")]
    if any((out_dir / n).exists() for n in CHECKPOINT_FILES):
        return [Finding("output", "fail", f"output_dir {out_dir} holds a finished model and no checkpoint: LLaMA-Factory stops "
                                          "with 'Output directory already exists and is not empty'",
                        "output_dir=saves/NEW, or overwrite_output_dir=true to replace it")]
    if (out_dir / "trainer_log.jsonl").exists():
        return [Finding("output", "warn", f"{out_dir}/trainer_log.jsonl exists: the new run's log is appended to it",
                        "output_dir=saves/NEW")]
    return [Finding("output", "ok", f"output_dir {out_dir} holds no run")]


def check_machine(args: dict, *, recipe_path: str | None = None, machine: Machine | None = None) -> list[Finding]:
    """QLoRA / bf16 / flash attention against ``machine`` (this one by default), paths, remote code."""
    machine = machine or Machine.here()
    out = _check_gpu(args, machine) + _check_spaced_paths(args, recipe_path) + _check_adapters(args)
    if args.get("trust_remote_code"):
        out.append(Finding("paths", "warn", "trust_remote_code: true runs code from the model repository; Qwen3 does not need it",
                           "trust_remote_code=false"))
    return out


def _check_gpu(args: dict, machine: Machine) -> list[Finding]:
    out: list[Finding] = []
    if args.get("quantization_bit"):
        if not machine.cuda:
            out.append(Finding("gpu", "warn", f"QLoRA (quantization_bit: {args['quantization_bit']}, bitsandbytes) needs a CUDA GPU; "
                                              "this machine has none, so it cannot train here",
                               "run it on a GPU machine, or use --method lora (quantization_bit=null) on CPU"))
        if not machine.has("bitsandbytes"):
            out.append(Finding("gpu", "warn", "quantization_bit needs bitsandbytes, which is not installed", "pip install bitsandbytes"))
        if str(args.get("optim", "")).startswith("paged_") and not machine.has("bitsandbytes"):
            out.append(Finding("gpu", "warn", f"optim {args['optim']} comes from bitsandbytes", "pip install bitsandbytes"))
    if args.get("flash_attn") == "fa2" and not machine.has("flash_attn"):
        out.append(Finding("gpu", "warn", "flash_attn: fa2 but flash-attn is not installed", "pip install flash-attn, or flash_attn=auto"))
    if args.get("use_cpu") and args.get("bf16"):
        out.append(Finding("gpu", "warn", "use_cpu with bf16: slow or unsupported on many CPUs", "bf16=false"))
    return out


def _check_spaced_paths(args: dict, recipe_path: str | None) -> list[Finding]:
    spaced = [f"{k}={args[k]}" for k in (*MODEL_KEYS, *PATH_KEYS) if isinstance(args.get(k), str) and " " in args[k]]
    if recipe_path and " " in str(recipe_path):
        spaced.append(f"recipe path {recipe_path}")
    if not spaced:
        return []
    sev = "fail" if args.get("deepspeed") else "warn"
    return [Finding("paths", sev, f"paths with spaces ({'; '.join(spaced)}): llamafactory-cli's torchrun relaunch "
                                  "(several GPUs, DeepSpeed) splits them", "rename without spaces; qfk train passes them intact")]


def _check_adapters(args: dict) -> list[Finding]:
    adapter = args.get("adapter_name_or_path")
    if recipe_kind(args) not in ("predict", "merge") or not adapter:
        return []
    return [Finding("paths", "warn", f"adapter {a} does not exist yet", "train first: qfk train RECIPE")
            for a in split_names(adapter) if not Path(a).exists() and (a.startswith((".", "/", "saves")) or os.sep in a)]


def check_sampling(args: dict) -> list[Finding]:
    kind = recipe_kind(args)
    if kind == "train":
        return []
    enable = args.get("enable_thinking", True)
    want = presets.sampling(enable)
    if args.get("do_sample") is False:
        return [Finding("sampling", "warn", "do_sample: false is greedy decoding, which makes Qwen3 loop (thinking mode above all)",
                        " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in want.items()))]
    missing = {k: v for k, v in want.items() if k not in args}
    wrong = {k: (args[k], v) for k, v in want.items() if k in args and args[k] != v}
    if missing:
        return [Finding("sampling", "warn", f"{', '.join(missing)} not set: LLaMA-Factory's defaults (temperature 0.95, top_p 0.7, "
                                            "top_k 50) are not Qwen3's",
                        " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in missing.items()))]
    if wrong:
        return [Finding("sampling", "info", "sampling differs from Qwen3's recommendation for this think mode: "
                                            + ", ".join(f"{k} {a} (recommended {b})" for k, (a, b) in wrong.items()), "")]
    return [Finding("sampling", "ok", f"Qwen3 sampling for {'thinking' if enable is not False else 'non-thinking'} mode")]


def check_recipe(recipe: str | os.PathLike | dict, overrides: list[str] | tuple[str, ...] | None = None, *,
                 parse: bool = True, types: bool = True, stats: bool = True, stats_rows: int = 2000,
                 machine: Machine | None = None) -> list[Finding]:
    """All checks for a recipe file (or an already-loaded argument dict). ``parse=False`` skips
    LLaMA-Factory's parser (``types`` still checks value types); ``stats=False`` skips the length check."""
    args, path = _load(recipe, overrides)
    machine = machine or Machine.here()
    model = _model(args)
    findings = _check_keys(args, parse=parse, types=types, machine=machine)
    ds, facts = check_datasets(args)
    findings += ds
    if recipe_kind(args) != "merge" or args.get("template"):
        findings += check_template(args, model)
    findings += check_think(args, facts, model)
    if stats and _lengths_checkable(args, findings):
        findings += check_cutoff(args, facts, max_rows=stats_rows)
    findings += check_output(args)
    findings += check_machine(args, recipe_path=path, machine=machine)
    findings += check_sampling(args)
    return findings


def _load(recipe: str | os.PathLike | dict, overrides) -> tuple[dict, str | None]:
    from .document import load_recipe

    if isinstance(recipe, dict):
        return dict(recipe), None
    return load_recipe(recipe, overrides), str(recipe)


def _check_keys(args: dict, *, parse: bool, types: bool, machine: Machine) -> list[Finding]:
    if parse:
        return check_llamafactory(args, machine)
    return check_types(args) if types else []


def _lengths_checkable(args: dict, findings: list[Finding]) -> bool:
    """Token lengths make sense for a train recipe whose keys and datasets passed."""
    return recipe_kind(args) == "train" and not any(f.status == "fail" and f.check in ("keys", "datasets") for f in findings)
