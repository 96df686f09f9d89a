"""Sizing a training recipe to its data and its GPU (``qfk recipe new``).

Facts in: the token lengths of the training rows (:func:`measure_lengths`, LLaMA-Factory's own
encoding), the model's shape, the GPU (``--gpu-memory``, or the card this machine has) and what
the user asked for. Decisions out (:func:`size_recipe`), each with the header line that says why:

* ``cutoff_len``: the smallest multiple of 256 that holds every measured row
  (:func:`qwen_factory_kit.tokens.cutoff_for`), capped by the GPU's memory when a budget is known,
  else by 8192, and by ``--max-cutoff``; rows over the cap stop ``recipe new`` (:class:`LongRows`)
  unless ``--cutoff-len`` says to cut them or ``--drop-long`` to drop them (``qfk datasets filter``);
* the liger kernel and neat packing (``presets.LIGER`` / ``presets.NEAT_PACKING``) where they apply;
* per-device batch, accumulation and gradient checkpointing that fit the budget (``memory.fit``,
  the effective batch unchanged).

:func:`recipe_estimate` is the memory of a recipe as written (``memory.estimate`` of its keys).
"""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QfkError
from . import memory, presets

DATA_KEYS = ("cutoff_len", "packing", "neat_packing")   # the keys of the recipe's data section decided here
#: converters whose rows are always one prompt and one answer (no history)
SINGLE_TURN_CONVERTERS = ("medical-r1", "moses")
OVERRIDE = "override"   # why a choice was made: a KEY=VALUE override set it (kept as given)


@dataclass(frozen=True)
class Gpu:
    """The GPU as ``recipe new`` sees it: CUDA, the first card's memory (GiB), how many, liger importable."""

    cuda: bool = False
    memory_gb: float | None = None
    count: int = 1
    liger: bool = False
    name: str = ""

    @classmethod
    def here(cls) -> Gpu:
        """This machine's GPU (torch imported lazily; none when torch or CUDA is missing)."""
        if importlib.util.find_spec("torch") is None:
            return cls()
        try:
            import torch

            if not torch.cuda.is_available():
                return cls()
            props = torch.cuda.get_device_properties(0)
            return cls(True, props.total_memory / memory.GIB, torch.cuda.device_count(),
                       importlib.util.find_spec("liger_kernel") is not None, props.name)
        except Exception:  # noqa: BLE001 - a broken CUDA setup is a machine without a usable GPU
            return cls()


NO_GPU = Gpu()


@dataclass(frozen=True)
class Wishes:
    """What the user asked for; None leaves the choice to the kit. ``forced``: keys a KEY=VALUE
    override sets (kept as given, no questions asked)."""

    cutoff_len: int | None = None
    liger: bool | None = None
    packing: bool | None = None
    gpu_memory: float | None = None
    gpus: int | None = None
    forced: dict = field(default_factory=dict)
    max_cutoff: int | None = None   # never choose a cutoff above this
    drop_long: bool = False         # rows over the cutoff are to be dropped: stop on them even at a given cutoff

    @property
    def cutoff(self) -> tuple[int | None, str]:
        if "cutoff_len" in self.forced:
            return int(self.forced["cutoff_len"]), OVERRIDE
        return self.cutoff_len, "--cutoff-len"


@dataclass
class Lengths:
    """Token lengths (LLaMA-Factory's encoding, whole rows) of the rows measured in each training dataset."""

    by_dataset: dict[str, list[int]]
    file_rows: dict[str, int | None]
    max_rows: int
    template: str = "qwen3"                  # how the rows were rendered
    enable_thinking: bool | None = True

    @property
    def all(self) -> list[int]:
        return [n for v in self.by_dataset.values() for n in v]

    @property
    def longest(self) -> int:
        return max(self.all, default=0)

    def over(self, limit: int) -> dict[str, int]:
        """Rows longer than ``limit`` tokens, per dataset (only those with some)."""
        counts = {name: sum(1 for n in v if n > limit) for name, v in self.by_dataset.items()}
        return {name: c for name, c in counts.items() if c}

    def rows_text(self) -> str:
        partial = any((rows or 0) > self.max_rows for rows in self.file_rows.values())
        return (f"the {len(self.all)} rows measured (the first {self.max_rows} of each dataset)" if partial
                else f"all {len(self.all)} rows")


class LongRows(QfkError):
    """Rows longer than the cutoff ``recipe new`` may choose (or, with ``--drop-long``, than the one given):
    ``over`` counts them per dataset; ``qfk datasets filter NAME --max-tokens CUTOFF`` drops them."""

    def __init__(self, message: str, hint: str, *, over: dict[str, int], cutoff: int, lengths: Lengths):
        super().__init__(message, hint)
        self.over, self.cutoff, self.lengths = over, cutoff, lengths


@dataclass(frozen=True)
class Choice:
    on: bool
    why: str


@dataclass
class Sizing:
    """What :func:`size_recipe` decided: recipe keys (with inline comments), header lines, JSON facts."""

    keys: dict = field(default_factory=dict)
    comments: dict = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    lengths: Lengths | None = None
    n_gpus: int = 1


# ---------------------------------------------------------------------------------------------
# facts
# ---------------------------------------------------------------------------------------------
def measure_lengths(facts: list, *, template: str, enable_thinking: bool | None, max_rows: int) -> tuple[Lengths | None, str]:
    """Token lengths of the first ``max_rows`` rows of each training dataset (``qfk stats``' numbers),
    or None and why not (preference data, a format the kit does not render)."""
    from ..tokens import NO_LIMIT, TokenizerRef, file_stats

    for f in facts:
        if f.ranking:
            return None, "preference data: the kit measures SFT rows only"
        if f.file is None or f.entry.get("formatting", "alpaca") not in ("alpaca", "sharegpt"):
            return None, f"{f.name}: not an alpaca/sharegpt file the kit can render"
    tokenizer = TokenizerRef()  # loaded once, and only when a dataset's lengths are not cached
    by_dataset = {}
    for f in facts:
        st = file_stats(f.file, f.entry, tokenizer=tokenizer, template=template, enable_thinking=enable_thinking,
                        cutoff_len=NO_LIMIT, max_rows=max_rows)
        by_dataset[f.name] = [r.total for r in st.rows]
    return Lengths(by_dataset, {f.name: f.rows for f in facts}, max_rows, template, enable_thinking), ""


def multi_turn_datasets(facts: list) -> list[str]:
    """The datasets with a row that is not one prompt and one answer (Alpaca ``history``, or more than
    one ShareGPT exchange): from the qfk manifest where it tells, else from a scan of every row."""
    out = []
    for f in facts:
        manifest = _manifest(f.file)
        single = _single_turn_by_manifest(manifest) if manifest else None
        if single is None:
            single = _single_turn_by_scan(f.file, f.entry)
        if not single:
            out.append(f.name)
    return out


def _manifest(path: Path | None) -> dict | None:
    """The qfk manifest of a converted file (a dataset's facts carry its file, not its data_dir)."""
    from ..registry import manifest_path

    found = manifest_path(path) if path is not None and path.is_file() else None
    try:
        return json.loads(found.read_text(encoding="utf-8")) if found else None
    except (OSError, json.JSONDecodeError):
        return None


def _single_turn_by_manifest(manifest: dict) -> bool | None:
    converter, options = manifest.get("converter"), manifest.get("options") or {}
    notes = (manifest.get("counts") or {}).get("notes")
    if converter in SINGLE_TURN_CONVERTERS or (converter == "columns" and not options.get("history")):
        return True
    if converter == "sharegpt" and (options.get("single_turn_only") or isinstance(notes, dict)):
        return bool(options.get("single_turn_only")) or not notes.get("multi_turn_rows")
    return None


def _single_turn_by_scan(path: Path, entry: dict) -> bool:
    from ..lint import _texts, iter_rows, layout_from

    lay = None
    for _, row in iter_rows(path):
        if not isinstance(row, dict):
            continue
        lay = lay or layout_from(entry, row)
        if lay.formatting == "sharegpt":
            kinds = [kind for kind, _, _ in _texts(row, lay)]
            if kinds.count("response") != 1 or kinds.count("prompt") != 1:
                return False
        elif lay.columns.get("history") and row.get(lay.columns["history"]):
            return False
    return True


def model_shape(model: presets.ModelInfo) -> memory.ModelShape | None:
    """The memory model's shape of ``model``: its config.json for a local folder, else its preset size."""
    if model.local:
        try:
            cfg = json.loads((Path(model.path) / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return memory.shape_from_config(cfg, model.name)
    return memory.shape_for_size(model.size)


# ---------------------------------------------------------------------------------------------
# the memory of a recipe as written
# ---------------------------------------------------------------------------------------------
def memory_method(args: dict) -> str:
    """The memory model's method for a recipe's keys."""
    if args.get("stage") == "dpo":
        return "orpo" if args.get("pref_loss") == "orpo" else "dpo"
    if args.get("finetuning_type") == "full":
        return "full"
    return "qlora" if args.get("quantization_bit") else "lora"


def _deepspeed(value) -> tuple[int | None, bool]:
    """(ZeRO stage, CPU offload) of a recipe's deepspeed config path (the kit's ds_z<N>[_offload]_config.json)."""
    m = re.search(r"z([23])(_offload)?", Path(str(value)).name) if value else None
    return (int(m[1]), bool(m[2])) if m else (None, False)


def memory_settings(args: dict, n_gpus: int = 1) -> dict:
    """``memory.estimate``'s settings from a recipe's keys (LLaMA-Factory's defaults where a key is absent)."""
    stage, offload = _deepspeed(args.get("deepspeed"))
    return dict(gradient_checkpointing=not args.get("disable_gradient_checkpointing", False),
                liger=bool(args.get("enable_liger_kernel")), lora_rank=int(args.get("lora_rank", 8)),
                lora_target=str(args.get("lora_target", "all")), lora_dropout=float(args.get("lora_dropout", 0.0)),
                bf16=bool(args.get("bf16") or args.get("pure_bf16")), optim=str(args.get("optim", "adamw_torch")),
                deepspeed=stage, n_gpus=n_gpus if stage else 1, offload=offload,
                packing=bool(args.get("packing") or args.get("neat_packing")))


def seq_len(lengths: Lengths | None, cutoff: int) -> int | None:
    """The longest padded batch the data makes at ``cutoff`` (None: not measured, the cutoff)."""
    return memory.padded_len(lengths.all, 1, cutoff).peak if lengths and lengths.all else None


def recipe_estimate(shape: memory.ModelShape, args: dict, lengths: Lengths | None = None, n_gpus: int = 1) -> memory.Estimate:
    """The memory of training the recipe ``args`` as written."""
    cutoff = int(args.get("cutoff_len") or presets.CUTOFF_LEN)
    return memory.estimate(shape, method=memory_method(args), batch=int(args.get("per_device_train_batch_size", 8)),
                           cutoff=cutoff, seq_len=seq_len(lengths, cutoff), **memory_settings(args, n_gpus))


def memory_lines(est: memory.Estimate, measured: bool = True) -> list[str]:
    """The header's memory line: the total as ``qfk train`` runs the recipe (expandable segments) and the
    default allocator's peak (and what the measured QLoRA runs showed). ``measured``: whether the batch
    length comes from the rows (else every row counts as cutoff_len long)."""
    s, on = est.setup, {True: "on", False: "off"}
    zero = f", ZeRO-{s.deepspeed} on {s.n_gpus} GPU(s)" + (" + offload" if s.offload else "") if s.deepspeed else ""
    tokens = f"{s.seq} tokens" + ("" if measured or s.packing else " (rows not measured: as long as cutoff_len)")
    lines = [f"GPU memory: about {est.expandable_gb:.1f} GB with qfk train (expandable segments), peak "
             f"{est.peak_gb:.1f} GB with PyTorch's default allocator (model in `qfk recipe new --explain-memory`): "
             f"batch {s.batch} x {tokens}, gradient checkpointing {on[s.gradient_checkpointing]}, liger {on[s.liger]}{zero}"]
    if est.measured_note:
        lines += textwrap.wrap(f"measured: {est.measured_note}", 110, initial_indent="  ", subsequent_indent="    ")
    return lines


# ---------------------------------------------------------------------------------------------
# decisions
# ---------------------------------------------------------------------------------------------
def size_recipe(args: dict, shape: memory.ModelShape | None, *, facts: list, lengths: Lengths | None, unmeasured: str,
                gpu: Gpu, wishes: Wishes) -> Sizing:
    """Cutoff, liger, packing and the batch that fits, for the recipe ``args`` (preset keys and overrides)."""
    sz = Sizing(lengths=lengths, n_gpus=wishes.gpus or (gpu.count if gpu.cuda else 1))
    budget, budget_src = _budget(wishes, gpu)
    liger = choose_liger(args, wishes, gpu)
    args = {**args, "enable_liger_kernel": liger.on}
    liger_available = liger.on or (wishes.liger is None and "enable_liger_kernel" not in wishes.forced and gpu.cuda and gpu.liger)
    fits = _fitter(shape, args, lengths, budget, sz.n_gpus, liger_available) if budget and shape else None
    allowed, cap_why = _allowed(wishes, fits, budget)
    cutoff = choose_cutoff(lengths, wishes, allowed, cap_why, int(args.get("cutoff_len") or presets.CUTOFF_LEN))
    packing, cutoff = choose_packing(args, wishes, gpu, facts, lengths, cutoff, allowed)
    args = {**args, "cutoff_len": cutoff, **(presets.NEAT_PACKING.keys if packing.on else {})}
    fit = fit_budget(shape, args, lengths, budget, budget_src, sz.n_gpus, liger_available,
                     explicit=wishes.gpu_memory is not None) if budget else None
    if fit and fit.liger and not liger.on:
        liger = Choice(True, f"chosen to fit {budget:g} GB")
    _cutoff_lines(sz, cutoff, lengths, unmeasured, wishes)
    _speedup_lines(sz, liger, packing)
    if budget:
        _fit_lines(sz, fit, budget, budget_src)
    sz.info.update(liger=liger.on, packing=packing.on, cutoff_len=cutoff,
                   gpu_budget_gb=budget, n_gpus=sz.n_gpus, longest=lengths.longest if lengths else None,
                   rows_measured=len(lengths.all) if lengths else None)
    return sz


def _budget(wishes: Wishes, gpu: Gpu) -> tuple[float | None, str]:
    if wishes.gpu_memory:
        return wishes.gpu_memory, "--gpu-memory"
    if gpu.cuda and gpu.memory_gb:
        return gpu.memory_gb, f"this machine's {gpu.name or 'GPU'}"
    return None, ""


def choose_liger(args: dict, wishes: Wishes, gpu: Gpu) -> Choice:
    """On when asked, or for SFT on a CUDA GPU with liger-kernel installed."""
    if "enable_liger_kernel" in wishes.forced:
        return Choice(bool(wishes.forced["enable_liger_kernel"]), OVERRIDE)
    if wishes.liger is not None:
        return Choice(wishes.liger, "--liger" if wishes.liger else "--no-liger")
    if args.get("stage") != "sft":
        return Choice(False, "preference training: LLaMA-Factory fuses liger's loss for SFT only")
    if gpu.cuda and gpu.liger:
        return Choice(True, "a CUDA GPU with liger-kernel installed")
    return Choice(False, "no CUDA GPU here" if not gpu.cuda else "liger-kernel is not installed")


def _fitter(shape, args: dict, lengths: Lengths | None, budget: float, n_gpus: int,
            liger_available: bool) -> Callable[[int], memory.FitResult]:
    """cutoff -> the ``memory.fit`` of the recipe at that cutoff."""
    def fit_at(cutoff: int) -> memory.FitResult:
        return memory.fit(shape, budget, method=memory_method(args), batch=int(args["per_device_train_batch_size"]),
                          accum=int(args.get("gradient_accumulation_steps", 1)), cutoff=cutoff,
                          seq_len=seq_len(lengths, cutoff), liger_available=liger_available,
                          **memory_settings({**args, "cutoff_len": cutoff}, n_gpus))
    return fit_at


def _allowed(wishes: Wishes, fits, budget: float | None) -> tuple[Callable[[int], bool], str]:
    """Which cutoffs the recipe may take (the one given; those that fit the budget, else up to 8192; at most
    --max-cutoff), and why: what binds."""
    from ..tokens import CUTOFF_CAP

    explicit, source = wishes.cutoff
    if explicit:
        return (lambda c: c <= explicit), f"{source} {explicit}"
    if fits is not None:
        ok, why = (lambda c: fits(c).fits), f"the most that fits {budget:g} GB"
    else:
        ok, why = (lambda c: c <= CUTOFF_CAP), f"the cap of {CUTOFF_CAP} without a GPU budget (--gpu-memory)"
    top = wishes.max_cutoff
    if top is None:
        return ok, why
    return (lambda c: c <= top and ok(c)), (f"--max-cutoff {top}" if ok(top) else why)


def budget_cap(allowed: Callable[[int], bool], need: int, step: int = 256) -> int | None:
    """The largest multiple of ``step`` up to ``need`` that is ``allowed`` (memory grows with the cutoff);
    None when not even ``step`` is."""
    if allowed(need):
        return need
    best, lo, hi = None, 1, need // step - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if allowed(mid * step):
            best, lo = mid * step, mid + 1
        else:
            hi = mid - 1
    return best


def choose_cutoff(lengths: Lengths | None, wishes: Wishes, allowed: Callable[[int], bool], cap_why: str, preset: int) -> int:
    """The cutoff given, else the preset's when the lengths are unknown, else :func:`tokens.cutoff_for` the
    longest row capped by what is ``allowed``. Rows over that cap stop here (:class:`LongRows`, naming the
    filter), and rows over a cutoff given when they are to be dropped (``wishes.drop_long``)."""
    from ..tokens import cutoff_for

    explicit, _ = wishes.cutoff
    if lengths is None:
        return explicit or preset
    if explicit and not wishes.drop_long:
        return explicit
    need = cutoff_for(lengths.longest, None)
    cutoff = explicit or cutoff_for(lengths.longest, budget_cap(allowed, need) or need)
    over = lengths.over(cutoff)
    if over:
        raise LongRows(f"{_over_count(over, lengths)} longer than cutoff_len {cutoff} ({cap_why}); the longest has "
                       f"{lengths.longest} tokens", _filter_hint(over, cutoff), over=over, cutoff=cutoff, lengths=lengths)
    return cutoff


def _over_count(over: dict[str, int], lengths: Lengths) -> str:
    return ", ".join(f"{n} of {len(lengths.by_dataset[name])} rows of {name}" for name, n in over.items()) + \
        (" are" if sum(over.values()) > 1 else " is")


def _filter_command(over: dict[str, int], cutoff: int) -> str:
    return " && ".join(f"qfk datasets filter {name} --max-tokens {cutoff}" for name in over)


def _filter_hint(over: dict[str, int], cutoff: int) -> str:
    """The command that drops the rows over ``cutoff`` (registering NAME__max<cutoff>), recipe new doing it
    (--drop-long), or keeping them cut."""
    names = ",".join(f"{name}__max{cutoff}" for name in over)
    return (f"{_filter_command(over, cutoff)}, then --dataset {names}; or let recipe new drop them: --drop-long; "
            f"or let LLaMA-Factory cut them: --cutoff-len {cutoff}")


def _cutoff_lines(sz: Sizing, cutoff: int, lengths: Lengths | None, unmeasured: str, wishes: Wishes) -> None:
    """The cutoff_len key, its inline comment and the header line that says where it comes from."""
    from ..tokens import cutoff_for

    explicit, source = wishes.cutoff
    sz.keys["cutoff_len"] = cutoff
    if lengths is None:
        sz.comments["cutoff_len"] = "qfk recipe check measures the rows it cuts"
        sz.lines.append(f"cutoff_len {cutoff}: " + (f"{source}; token lengths not measured ({unmeasured})" if explicit else
                        f"the preset (token lengths not measured: {unmeasured}; qfk recipe check measures them)"))
        return
    over = lengths.over(cutoff)
    held = f"holds {lengths.rows_text()}, longest {lengths.longest} tokens"
    if over:
        held = (f"{_over_count(over, lengths)} longer (longest {lengths.longest} tokens) and get cut; "
                f"to drop them instead: --drop-long, or {_filter_command(over, cutoff)}")
    elif cutoff > cutoff_for(lengths.longest, None) and not explicit:
        held += " (packing packs into cutoff_len - 1 tokens)"
    sz.comments["cutoff_len"] = (f"{source}: cuts {sum(over.values())} rows" if over
                                 else f"holds every row measured (longest {lengths.longest} tokens)")
    sz.lines.append(f"cutoff_len {cutoff}" + (f" ({source})" if explicit else "") + f": {held}")


def choose_packing(args: dict, wishes: Wishes, gpu: Gpu, facts: list, lengths: Lengths | None, cutoff: int,
                   allowed: Callable[[int], bool]) -> tuple[Choice, int]:
    """Neat packing for single-turn SFT data that the cutoff does not cut (when asked, or with liger on a
    GPU), and the cutoff it needs: LLaMA-Factory packs into ``cutoff_len - 1`` tokens."""
    from ..tokens import cutoff_for

    forced = {k: wishes.forced[k] for k in ("packing", "neat_packing") if k in wishes.forced}
    if forced:
        return Choice(any(bool(v) for v in forced.values()), OVERRIDE), cutoff
    if wishes.packing is False:
        return Choice(False, "--no-packing"), cutoff
    if not (wishes.packing or (args.get("stage") == "sft" and gpu.cuda and gpu.liger and wishes.liger is not False)):
        return Choice(False, ""), cutoff
    why = "--packing" if wishes.packing else "liger on a CUDA GPU"
    if args.get("stage") != "sft":
        return Choice(False, f"{why}, but LLaMA-Factory packs SFT data only"), cutoff
    if lengths is None:
        return Choice(False, f"{why}, but the token lengths were not measured: nothing shows that no row is cut"), cutoff
    packed = cutoff if lengths.longest + 1 <= cutoff else cutoff_for(lengths.longest + 1, None)
    if packed != cutoff and not allowed(packed):
        return Choice(False, f"{why}, but the longest row ({lengths.longest} tokens) needs all of cutoff_len {cutoff} "
                             "and packing keeps one token"), cutoff
    multi = multi_turn_datasets(facts)
    if multi:
        return Choice(False, f"{why}, but {', '.join(multi)} has multi-turn rows"), cutoff
    return Choice(True, f"{why}; single-turn rows, none cut by cutoff_len"), packed


def _speedup_lines(sz: Sizing, liger: Choice, packing: Choice) -> None:
    """The liger and packing keys (unless an override sets them) and the header lines with what they buy."""
    lg, pk = presets.LIGER, presets.NEAT_PACKING
    if liger.on:
        sz.keys.update({} if liger.why == OVERRIDE else lg.keys)
        sz.comments["enable_liger_kernel"] = "needs liger-kernel: pip install 'qwen_factory_kit[gpu]'"
        sz.lines.append(f"Liger kernel: on ({liger.why}): {lg.what}; measured on {lg.measured}")
    else:
        sz.lines.append(f"Liger kernel: off ({liger.why}); on a GPU with liger-kernel (--liger; "
                        f"pip install 'qwen_factory_kit[gpu]'), measured on {lg.measured}")
    if packing.on:
        sz.keys.update({} if packing.why == OVERRIDE else pk.keys)
        sz.comments["neat_packing"] = "rows packed into cutoff_len - 1 tokens, attention kept within each row"
        sz.lines.append(f"Packing: on ({packing.why}): {pk.what}; measured on {pk.measured}; "
                        "effective batch and learning rate as the preset")
    elif packing.why:
        sz.lines.append(f"Packing: off ({packing.why})")


def fit_budget(shape: memory.ModelShape | None, args: dict, lengths: Lengths | None, budget: float, source: str,
               n_gpus: int, liger_available: bool, *, explicit: bool) -> memory.FitResult | None:
    """``memory.fit`` of the recipe ``args`` to ``budget`` GB; None without a memory model for the model
    (a QfkError when --gpu-memory asked for it), a QfkError with the suggestions when nothing fits."""
    if shape is None:
        if explicit:
            raise QfkError("--gpu-memory: the kit has no memory model for this model (MoE or an incomplete config.json)",
                           "drop --gpu-memory and size the batch yourself")
        return None
    result = _fitter(shape, args, lengths, budget, n_gpus, liger_available)(int(args["cutoff_len"]))
    if not result.fits:
        more = "" if explicit else "; or, for the machine you will train on: --gpu-memory GB --gpus N"
        raise QfkError(f"{shape.name} {memory_method(args)} does not fit {budget:g} GB ({source}): even per-device batch "
                       f"{result.batch} x accumulation {result.accum}, liger {'on' if result.liger else 'off'}, needs about "
                       f"{result.estimate.needed_gb:.1f} GB {result.estimate.allocator}", "; ".join(result.suggestions) + more)
    return result


def _fit_lines(sz: Sizing, result: memory.FitResult | None, budget: float, source: str) -> None:
    """The fitted keys and the header lines with the reasons."""
    if result is None:
        sz.lines.append(f"Not fitted to {budget:.0f} GB ({source}): no memory model for this model")
        return
    sz.keys.update({k: v for k, v in result.overrides().items() if k not in presets.LIGER.keys})  # liger: _speedup_lines
    sz.lines.append(f"Fitted to {budget:g} GB ({source}), effective batch {result.batch * result.accum}:")
    sz.lines += [f"  {r}" for r in result.reasons]
    sz.info["fit"] = {"fits": result.fits, "gpu_gb": budget, "batch": result.batch, "accum": result.accum,
                      "liger": result.liger, "gradient_checkpointing": result.gradient_checkpointing,
                      "reasons": result.reasons}
