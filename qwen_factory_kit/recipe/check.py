"""``qfk recipe check``: LLaMA-Factory's own argument parsing plus the kit's rules, before a model loads.

Every finding says what is wrong and how to fix it; where a ``key=value`` override can fix it, the fix
gives one (its first key=value alternative) that makes the finding pass when applied (``qfk recipe check R.yaml key=value``;
tests/test_check_fixes.py applies each). The calls into LLaMA-Factory live in
:mod:`qwen_factory_kit.lfbridge`; this module holds the kit's rules, each a function of the recipe's
arguments and the facts it is given (datasets, model, machine). Each finding's ``where`` is the key
(value types, keys set aside on this machine) or the dataset (its registry entry, lengths) it is about,
None when the message names what it is about. Checks (finding ``id``s):

* ``keys``: LLaMA-Factory's HfArgumentParser and ``get_train_args`` / ``get_infer_args`` checks, plus
  value types (``parse_dict`` does no conversion, so ``lora_rank: "x"`` would slip through);
* ``datasets``: every ``dataset``/``eval_dataset`` registered in the recipe's ``dataset_dir`` and loadable;
* ``ranking``: preference data for dpo/rm stages, SFT data otherwise;
* ``leak``: eval rows that are training rows, the same dataset (or a mix/filtered entry of it) on both sides,
  two conversions of one source (:func:`qwen_factory_kit.leaks.check_leaks`; train recipes with ``eval_dataset``);
* ``mix``: ``num_samples`` (``NAME__nN`` mix entries or set by hand) that repeats a dataset's rows more than twice;
  a mix's stated shares in rows and tokens against the data, token-mix files whose source changed (:mod:`.tokenmix.check`);
* ``template``: the template fits the model family (Instruct-2507 -> qwen3_nothink, other Qwen3 -> qwen3);
* ``think``: ``template``/``enable_thinking`` train what the data holds (QWEN3-THINK.md); these two live in
  :mod:`.check_think`;
* ``cutoff``: rows that ``cutoff_len`` would cut, with LLaMA-Factory's own rendering (``qfk stats``);
* ``output``: an ``output_dir`` that would silently resume, be overwritten or stop LLaMA-Factory;
* ``gpu``: what the recipe needs a GPU for where it runs on a CPU (:mod:`.cpu`: an error with the
  overrides that run it there), and the GPU packages a GPU machine lacks (bitsandbytes, flash-attn, liger, DeepSpeed);
* ``paths``: spaces (LLaMA-Factory's torchrun relaunch splits them), missing files;
* ``sampling``: predict/merge recipes with LLaMA-Factory's sampling defaults instead of Qwen3's.
"""

from __future__ import annotations

import enum
import math
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import lfbridge
from ..errors import QfkError
from ..findings import Finding, failures
from . import presets
from .check_think import check_template, check_think
from .cpu import CPU_OPTIM
from .document import MODEL_KEYS, PATH_KEYS, recipe_data_dir, scalar, split_names
from .tokenmix.check import check_token_mix

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
    for_gpu: bool = False  # qfk recipe check --gpu: the recipe is checked for a GPU machine, whatever this one has

    @classmethod
    def here(cls, *, for_gpu: bool = False) -> Machine:
        return cls(_cuda(), frozenset(m for m in OPTIONAL_PACKAGES if _installed(m)), for_gpu)

    @property
    def gpu(self) -> bool:
        """The recipe runs on a GPU machine: this one has CUDA, or the check is for one (``--gpu``)."""
        return self.cuda or self.for_gpu

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
            fix = _type_fix(key, value, tp)
            out.append(Finding("keys", "error", key, f"{value!r} is not a valid value (LLaMA-Factory expects {want})", fix))
    return out


def _type_fix(key: str, value: Any, tp: Any) -> str:
    """The override that gives ``key`` a value of type ``tp``, when the wrong value says which one."""
    if isinstance(value, bool) and _type_ok("x", tp):
        word = "no" if value is False else "yes"
        return (f"{key}=\"'{word}'\" on the command line (YAML reads no/yes/on/off as booleans: "
                f"quote it in the recipe, {key}: \"{word}\")")
    if isinstance(value, str):
        text = value.strip()
        for typed in (_number(text), {"true": True, "false": False}.get(text.lower())):
            if typed is not None and _type_ok(typed, tp):
                return f"{key}={scalar(typed)} (unquoted: a {type(typed).__name__}, not text)"
    return "numbers unquoted, true/false for booleans, text for names"


def _number(text: str) -> int | float | None:
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        return number if math.isfinite(number) else None
    return None


def set_aside_findings(args: dict, set_aside: list[str], machine: Machine) -> list[Finding]:
    """What the parse on this machine left out (:func:`lfbridge.parseable_here`), and what that means."""
    out: list[Finding] = []  # on a machine without CUDA, the gpu finding (recipe/cpu.py) says what the GPU keys mean
    if "enable_liger_kernel" in set_aside and machine.gpu:
        out.append(Finding("gpu", "warn", "enable_liger_kernel",
                           "liger-kernel is not installed here: LLaMA-Factory will refuse the recipe on this machine "
                           "(the check parsed it as false)",
                           'pip install -c constraints.txt -e ".[gpu]" on the GPU machine, or enable_liger_kernel=false '
                           "to train without it"))
    if "deepspeed" in set_aside:
        ds = Path(str(args["deepspeed"]))
        if not ds.is_file():
            out.append(Finding("paths", "error", None, f"deepspeed config {ds} not found", _deepspeed_fix(ds)))
        if not machine.has("deepspeed") and machine.gpu:
            out.append(Finding("gpu", "warn", None, "the recipe uses DeepSpeed, which is not installed here",
                               "pip install deepspeed (on the GPU machine); qfk train launches it through torchrun"))
    return out


def _deepspeed_fix(ds: Path) -> str:
    """The kit's own copy when the recipe names a shipped config (``deepspeed/ds_z3_config.json``)."""
    from .presets import DEEPSPEED_DIR

    shipped = DEEPSPEED_DIR / ds.name
    if ds.parent.name == "deepspeed" and shipped.is_file():
        return f"deepspeed={shipped} (the kit's copy), or launch with qfk train, which writes {ds}"
    names = ", ".join(sorted(p.name for p in DEEPSPEED_DIR.glob("*.json")))
    return f"point deepspeed at an existing config (the kit ships {names}: qfk recipe new --deepspeed z3 names one)"


def parser_finding(rejection: lfbridge.Rejection | None, kind: str, version: str) -> Finding:
    """The ``keys`` finding for LLaMA-Factory's verdict on a ``kind`` recipe."""
    if rejection is None:
        return Finding("keys", "ok", None, f"LLaMA-Factory {version} parses every key ({kind} recipe)")
    if rejection.kind == "needs-launcher":
        return Finding("keys", "ok", None, "LLaMA-Factory parses the recipe (distributed launch: qfk train / llamafactory-cli)")
    if rejection.kind == "exit":
        return Finding("keys", "error", None, f"LLaMA-Factory's parser exited ({rejection.message})",
                       "run llamafactory-cli train RECIPE for its message")
    fix = ("remove or rename the key: it is not a LLaMA-Factory 0.9.5 argument (list: llamafactory-cli train -h)"
           if rejection.kind == "unknown-key" else "fix the value LLaMA-Factory names")
    return Finding("keys", "error", None, f"LLaMA-Factory rejects the recipe: {rejection.message}", fix)


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
        return [Finding("datasets", "error", None, "the recipe names no dataset", "add dataset: NAME (qfk datasets list)")], []
    reg = Registry.at(recipe_data_dir(args))
    registry, trouble = _open_registry(reg)
    if trouble:
        return [trouble], []
    out: list[Finding] = []
    facts = []
    for name in train_names + eval_names:
        found, fact = _check_dataset(name, registry, reg, args, wants_facts=name in train_names or kind == "predict")
        out += found
        facts += [fact] if fact is not None else []
    if not out:
        out.append(Finding("datasets", "ok", None, f"{', '.join(train_names + eval_names)} registered in {reg.path} and loadable"))
    return out, facts


def _open_registry(reg) -> tuple[dict, Finding | None]:
    if not reg.path.exists():
        return {}, Finding("datasets", "error", None, f"Cannot open {reg.path} (dataset_dir: {reg.data_dir}, from {os.getcwd()})",
                           "run from the folder that holds the data dir, or set dataset_dir=PATH; register with qfk convert")
    try:
        return reg.read(), None
    except QfkError as exc:
        return {}, Finding("datasets", "error", None, exc.message, exc.hint or "")


def _check_dataset(name: str, registry: dict, reg, args: dict, *, wants_facts: bool) -> tuple[list[Finding], Any]:
    """One dataset of the recipe: registered, its entry loadable, ranking against the stage, and its facts."""
    from ..registry import check_entry
    from .request import dataset_facts

    entry = registry.get(name)
    if entry is None:
        return [_undefined(name, registry, reg.path, args)], None
    checked = check_entry(name, entry, reg.data_dir)
    found = [replace(f, id="datasets") for f in checked if f.severity != "ok"]
    if any(f.id == "entry" and f.severity == "error" for f in checked):  # not an entry LLaMA-Factory reads
        return found, None
    out = found + _check_ranking(name, entry, args.get("stage", "sft"))
    if failures(found) or entry.get("formatting", "alpaca") not in ("alpaca", "sharegpt"):
        return out, None
    if not wants_facts:
        return out, None
    try:
        return out, dataset_facts(name, reg.data_dir)
    except QfkError as exc:
        return out + [Finding("datasets", "warn", name, exc.message, exc.hint or "")], None


def _undefined(name: str, registry: dict, where: Path, args: dict) -> Finding:
    """A dataset the registry lacks: a mix entry not registered yet, or a name to correct (the close ones)."""
    from ..registry import MIXED_RE, mix_entry

    m = mix_entry(name)
    if m and m["base"] in registry:
        what = f"num_samples: {m['count']}" if MIXED_RE.match(name) else f"a file of {m['count']} rows picked by the token mix"
        return Finding("datasets", "error", None, f"dataset '{name}' is not in {where}: the mix entry ({m['base']} with "
                                                  f"{what}) is not registered yet",
                       "qfk train registers it; for llamafactory-cli run once: qfk train RECIPE --dry-run")
    message = f"dataset '{name}' is not in {where} (LLaMA-Factory: Undefined dataset {name})"
    close = _close_names(name, registry)
    if not close:
        return Finding("datasets", "error", None, message,
                       f"register it: qfk convert ... or qfk datasets add FILE --name {name} (list them: qfk datasets list)")
    others = f" (also close: {', '.join(close[1:])})" if close[1:] else ""
    return Finding("datasets", "error", None, message, f"{_renamed(args, name, close[0])}{others}")


def _close_names(name: str, names, limit: int = 4) -> list[str]:
    """Registered names close to ``name``: spelling (difflib), then names that contain it (med -> medical_r1)."""
    import difflib

    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=limit, cutoff=0.6)
    close += [low for low in by_lower if name.lower() in low]
    return [by_lower[low] for low in dict.fromkeys(close)][:limit]


def _renamed(args: dict, old: str, new: str) -> str:
    """``dataset=...``/``eval_dataset=...`` overrides with ``old`` replaced by ``new`` where the recipe names it."""
    out = []
    for key in ("dataset", "eval_dataset"):
        names = split_names(args.get(key))
        if old in names:
            out.append(f"{key}=" + ",".join(new if n == old else n for n in names))
    return " ".join(out)


def _check_ranking(name: str, entry: dict, stage: str) -> list[Finding]:
    ranking = bool(entry.get("ranking"))
    if (stage in PREFERENCE_STAGES) == ranking:
        return []
    need = "ranking data (chosen/rejected)" if stage in PREFERENCE_STAGES else "SFT data (ranking: false)"
    fits = "dpo" if ranking else "sft"
    return [Finding("ranking", "error", None, f"{name} has ranking: {str(ranking).lower()} but stage {stage} needs {need}: "
                                              "LLaMA-Factory stops with 'The dataset is not applicable in the current training stage'",
                    f"stage={fits} to train on {name} as it is, or a dataset of {need}: qfk convert preference outputs "
                    "for dpo/orpo, other converters' outputs for sft")]


def check_mix(args: dict, facts: list) -> list[Finding]:
    """Datasets sampled with ``num_samples`` (``NAME__nN`` mix entries, or set by hand): more than
    :data:`MAX_REPEAT` times their rows repeats each row that often per epoch."""
    counts = {f.name: int(f.entry["num_samples"]) for f in facts if f.entry.get("num_samples") and f.rows}
    if not counts:
        return []
    rows = {f.name: f.rows for f in facts}
    over = [n for n, c in counts.items() if c > MAX_REPEAT * rows[n]]
    if not over:
        return [Finding("mix", "ok", None, ", ".join(f"{n}: {c} of {rows[n]} rows" for n, c in counts.items())
                                           + f" (num_samples within {MAX_REPEAT}x the rows)")]
    fix = _mix_fix(args, facts, over)
    return [Finding("mix", "warn", None, f"{n} takes num_samples: {counts[n]} from {rows[n]} rows: each row repeats about "
                                         f"{counts[n] / rows[n]:.1f}x per epoch (upsampled)", fix) for n in over]


#: the most times a mix may repeat a dataset's rows per epoch before recipe check warns
MAX_REPEAT = 2


def _mix_fix(args: dict, facts: list, over: list[str]) -> str:
    """The same proportions at the largest total that repeats no dataset more than MAX_REPEAT times,
    as ``dataset=`` with ``__nN`` entries (what ``qfk recipe new --mix-total`` would write)."""
    from ..registry import MIXED_RE, mixed_name
    from .mix import mix_counts

    per = {f.name: int(f.entry.get("num_samples") or f.rows) for f in facts if f.rows}
    rows = {f.name: f.rows for f in facts if f.rows}
    size = sum(per.values())
    total = min(MAX_REPEAT * rows[n] * size // per[n] for n in over)
    remake = f"remake the recipe: qfk recipe new ... --mix-total {total}"
    try:
        new = mix_counts({n: c / size for n, c in per.items()}, rows, total)
    except QfkError:  # fewer rows than datasets
        return f"{remake}, or fewer samples (num_samples at most {MAX_REPEAT}x the rows)"
    entries = {f.name: f.entry for f in facts}

    def renamed(name: str) -> str:
        if name not in new:
            return name
        m = MIXED_RE.match(name)
        base = m["base"] if m else name
        if new[name] == rows[name] and (m or "num_samples" not in entries[name]):
            return base
        return mixed_name(base, new[name])

    names = ",".join(renamed(n) for n in split_names(args.get("dataset")))
    return (f"dataset={names} (the same proportions at {total} rows per epoch, no row more than {MAX_REPEAT}x; "
            f"qfk train registers the __n entries), or {remake}")


def check_eval_leaks(args: dict) -> list[Finding]:
    """A train recipe's ``eval_dataset`` against its ``dataset`` (:func:`qwen_factory_kit.leaks.check_leaks`):
    an eval row that was trained on makes the scores after training measure memory."""
    from ..leaks import check_leaks

    train, evals = split_names(args.get("dataset")), split_names(args.get("eval_dataset"))
    if not train or not evals:
        return []
    return check_leaks(train, evals, recipe_data_dir(args))


def token_summary(args: dict, fact: Any, cutoff: int, max_rows: int) -> dict:
    """``qfk stats``'s summary of a dataset's first ``max_rows`` rows, rendered and tokenized exactly as
    LLaMA-Factory will (cached: the same data and settings are not tokenized again)."""
    from ..tokens import file_stats

    return file_stats(fact.file, fact.entry, template=args.get("template") or "qwen3",
                      enable_thinking=args.get("enable_thinking", True), cutoff_len=cutoff, max_rows=max_rows).summary()


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
            out.append(Finding("cutoff", "error", f.name,
                               f"cutoff_len {cutoff} cuts {len(think_lost)} of {seen} before </think> "
                               f"(rows {', '.join(map(str, think_lost[:8]))}): the model learns never to close thinking",
                               _cutoff_fix(args, f.name, cutoff, s)))
        elif answer_lost:
            out.append(Finding("cutoff", "warn", f.name, f"cutoff_len {cutoff} cuts the answer of {len(answer_lost)} of {seen} "
                                                      f"(rows {', '.join(map(str, answer_lost[:8]))})",
                               _cutoff_fix(args, f.name, cutoff, s)))
        else:
            out.append(Finding("cutoff", "ok", f.name, f"every one of {seen} fits cutoff_len {cutoff} "
                                                    f"(p99 {s['total'].get('p99', 0)} tokens, max {s['total'].get('max', 0)})"))
    return out


def _cutoff_fix(args: dict, name: str, cutoff: int, summary: dict) -> str:
    """The cutoff that holds every measured row (:func:`tokens.cutoff_for` the longest, uncapped: a smaller
    one would cut it again), or the dataset without the rows over the cutoff."""
    from ..tokens import cutoff_for

    longest = summary["total"].get("max", 0)
    filtered = _renamed(args, name, f"{name}__max{cutoff}") or f"dataset={name}__max{cutoff}"
    return (f"cutoff_len={cutoff_for(longest, None)} (holds every row: the longest has {longest} tokens), "
            f"or drop the rows over {cutoff} tokens: qfk datasets filter {name} --max-tokens {cutoff}, then {filtered}")


def check_output(args: dict) -> list[Finding]:
    kind = recipe_kind(args)
    key = "export_dir" if kind == "merge" else "output_dir"
    value = args.get(key)
    if not value:
        return [Finding("output", "error", None, f"no {key}", f"{key}={_unused(_default_output(args, kind))}")]
    out_dir = Path(str(value))
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return [Finding("output", "ok", None, f"{key} {out_dir} is new")]
    if kind == "merge":
        return [Finding("output", "warn", None, f"export_dir {out_dir} is not empty: the merged model overwrites it",
                        f"export_dir={_unused(out_dir)}")]
    if kind == "predict":
        if (out_dir / "generated_predictions.jsonl").exists():
            return [Finding("output", "warn", None, f"{out_dir} already holds generated_predictions.jsonl: it will be replaced",
                            f"output_dir={_unused(out_dir)} to keep the old predictions")]
        return [Finding("output", "ok", None, f"output_dir {out_dir}")]
    checkpoints = sorted((p for p in out_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                         key=lambda p: int(p.name.split("-")[-1]))
    overwrite = bool(args.get("overwrite_output_dir"))
    new = f"output_dir={_unused(out_dir)}"
    if args.get("resume_from_checkpoint"):
        return [Finding("output", "info", None, f"resumes from {args['resume_from_checkpoint']} as asked")]
    if overwrite:
        return [Finding("output", "warn", None, f"output_dir {out_dir} is not empty and overwrite_output_dir: true: its files are "
                                                "overwritten and trainer_log.jsonl starts over", f"{new} to keep the old run")]
    if checkpoints:
        return [Finding("output", "warn", None, f"output_dir {out_dir} holds {checkpoints[-1].name}: LLaMA-Factory silently RESUMES "
                                                "from it (a finished run does nothing)",
                        f"{new} to start over, or overwrite_output_dir=true to replace it; to resume, nothing to do")]
    if any((out_dir / n).exists() for n in CHECKPOINT_FILES):
        return [Finding("output", "error", None, f"output_dir {out_dir} holds a finished model and no checkpoint: LLaMA-Factory stops "
                                                 "with 'Output directory already exists and is not empty'",
                        f"{new}, or overwrite_output_dir=true to replace it")]
    if (out_dir / "trainer_log.jsonl").exists():
        return [Finding("output", "warn", None, f"{out_dir}/trainer_log.jsonl exists: the new run's log is appended to it", new)]
    return [Finding("output", "ok", None, f"output_dir {out_dir} holds no run")]


def _default_output(args: dict, kind: str) -> Path:
    model = Path(str(args.get("model_name_or_path") or "model")).name.lower() or "model"
    if kind == "merge":
        return Path("models") / f"{model}-merged"
    return Path("saves") / model / ("predict" if kind == "predict" else "run")


def _unused(path: Path) -> Path:
    """``path`` if it is new or empty, else the first of ``path-2``, ``path-3`` ... that is."""
    def free(p: Path) -> bool:
        return not p.exists() or (p.is_dir() and not any(p.iterdir()))

    if free(path):
        return path
    path = path if path.name else path.resolve()
    return next(c for c in (path.with_name(f"{path.name}-{i}") for i in range(2, 10_000)) if free(c))


def check_machine(args: dict, *, recipe_path: str | None = None, machine: Machine | None = None) -> list[Finding]:
    """GPU needs and packages against ``machine`` (this one by default), paths, remote code."""
    machine = machine or Machine.here()
    out = _check_gpu(args, machine) + _check_spaced_paths(args, recipe_path) + _check_adapters(args)
    if args.get("trust_remote_code"):
        out.append(Finding("paths", "warn", None, "trust_remote_code: true runs code from the model repository; Qwen3 does not need it",
                           "trust_remote_code=false"))
    return out


def lora_overrides() -> str:
    """The overrides that turn the kit's QLoRA recipe into LoRA: every key ``--method qlora`` adds to
    ``--method lora`` (presets), unset, and the paged 8-bit optimizer (bitsandbytes) replaced by PyTorch's AdamW."""
    model = presets.resolve_model("Qwen3-4B")
    qlora, lora = presets.method_preset("qlora", model), presets.method_preset("lora", model)
    added = [k for k in {**qlora.method, **qlora.training} if k not in {**lora.method, **lora.training}]
    return " ".join(f"{k}={LORA_VALUES.get(k, 'null')}" for k in added)


#: what a key only QLoRA sets goes back to for LoRA (the others: null): PyTorch's AdamW for the paged 8-bit optimizer
LORA_VALUES = {"optim": CPU_OPTIM}


def _check_gpu(args: dict, machine: Machine) -> list[Finding]:
    """What the recipe needs a GPU for, where it runs on a CPU (:func:`.cpu.cpu_plan`); on a GPU
    machine, the GPU packages it needs that are not installed."""
    from .cpu import cpu_plan

    out: list[Finding] = list(cpu_plan(args, machine.gpu).findings)
    if not machine.gpu:
        return out
    if args.get("quantization_bit") and not machine.has("bitsandbytes"):
        out.append(Finding("gpu", "warn", None, "quantization_bit needs bitsandbytes, which is not installed",
                           f"pip install bitsandbytes, or {lora_overrides()} (LoRA)"))
    if str(args.get("optim", "")).startswith("paged_") and not machine.has("bitsandbytes"):
        out.append(Finding("gpu", "warn", None, f"optim {args['optim']} comes from bitsandbytes, which is not installed",
                           f"optim={LORA_VALUES['optim']}, or pip install bitsandbytes"))
    if args.get("flash_attn") == "fa2" and not machine.has("flash_attn"):
        out.append(Finding("gpu", "warn", None, "flash_attn: fa2 but flash-attn is not installed",
                           "flash_attn=auto, or pip install flash-attn"))
    return out


def _check_spaced_paths(args: dict, recipe_path: str | None) -> list[Finding]:
    spaced = {k: args[k] for k in (*MODEL_KEYS, *PATH_KEYS) if isinstance(args.get(k), str) and " " in args[k]}
    shown = [f"{k}={v}" for k, v in spaced.items()] + ([f"recipe path {recipe_path}"] if recipe_path and " " in str(recipe_path) else [])
    if not shown:
        return []
    sev = "error" if args.get("deepspeed") else "warn"
    return [Finding("paths", sev, None, f"paths with spaces ({'; '.join(shown)}): llamafactory-cli's torchrun relaunch "
                                        "(several GPUs, DeepSpeed) splits them", _spaced_fix(spaced, recipe_path))]


#: path keys LLaMA-Factory writes to (a new one can be renamed by an override; the others name files that exist)
WRITTEN_KEYS = ("output_dir", "export_dir", "logging_dir", "cache_dir", "tokenized_path")


def _spaced_fix(spaced: dict, recipe_path: str | None) -> str:
    """Overrides for the paths that do not exist yet (outputs); renaming for those that do, and the recipe."""
    new = {k: v for k, v in spaced.items() if k in WRITTEN_KEYS and not Path(v).exists()}
    rename = [v for k, v in spaced.items() if k not in new] + ([str(recipe_path)] if recipe_path and " " in str(recipe_path) else [])
    steps = [" ".join(f"{k}={v.replace(' ', '_')}" for k, v in new.items())] if new else []
    steps += [f"rename {', '.join(rename)} without spaces"] if rename else []
    return " and ".join(steps) + ", or launch with qfk train, which passes them intact"


def _check_adapters(args: dict) -> list[Finding]:
    adapter = args.get("adapter_name_or_path")
    if recipe_kind(args) not in ("predict", "merge") or not adapter:
        return []
    return [Finding("paths", "warn", None, f"adapter {a} does not exist yet", "train first: qfk train RECIPE")
            for a in split_names(adapter) if not Path(a).exists() and (a.startswith((".", "/", "saves")) or os.sep in a)]


def check_sampling(args: dict) -> list[Finding]:
    kind = recipe_kind(args)
    if kind == "train":
        return []
    enable = args.get("enable_thinking", True)
    want = presets.sampling(enable)
    if args.get("do_sample") is False and enable is False and kind == "predict":
        return [Finding("sampling", "ok", None, "deterministic decoding in non-thinking mode: reproducible scores (BLEU/chrF) "
                                                "for qfk eval")]
    if args.get("do_sample") is False:
        return [Finding("sampling", "warn", None, "do_sample: false is greedy decoding, which makes Qwen3 loop (thinking mode above all)",
                        " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in want.items()))]
    missing = {k: v for k, v in want.items() if k not in args}
    wrong = {k: (args[k], v) for k, v in want.items() if k in args and args[k] != v}
    if missing:
        return [Finding("sampling", "warn", None, f"{', '.join(missing)} not set: LLaMA-Factory's defaults (temperature 0.95, top_p 0.7, "
                                                  "top_k 50) are not Qwen3's",
                        " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in missing.items()))]
    if wrong:
        return [Finding("sampling", "info", None, "sampling differs from Qwen3's recommendation for this think mode: "
                                                  + ", ".join(f"{k} {a} (recommended {b})" for k, (a, b) in wrong.items()), "")]
    return [Finding("sampling", "ok", None, f"Qwen3 sampling for {'thinking' if enable is not False else 'non-thinking'} mode")]


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
    if recipe_kind(args) == "train":
        findings += check_mix(args, facts)
        findings += check_eval_leaks(args) if not failures(ds) else []
    if recipe_kind(args) != "merge" or args.get("template"):
        findings += check_template(args, model)
    findings += check_think(args, facts, model)
    if stats and _lengths_checkable(args, findings):
        findings += check_cutoff(args, facts, max_rows=stats_rows)
    if recipe_kind(args) == "train":
        findings += check_token_mix(args, path, stats=stats and _lengths_checkable(args, findings), stats_rows=stats_rows,
                                    rows={f.name: f.rows for f in facts})
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
    return recipe_kind(args) == "train" and not any(f.id in ("keys", "datasets") for f in failures(findings))
