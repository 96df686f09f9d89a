"""A training recipe as LLaMA-Factory's WebUI arguments: what the Train tab's "Load arguments" reads.

The WebUI saves the Train tab ("Save arguments") as a flat YAML mapping of element ids to the
values its widgets hold (``top.model_path: Qwen/Qwen3-4B``, ``train.lora_rank: 32``,
``train.learning_rate: '1e-05'`` as text, ``train.dataset: [a, b]``) in
``llamaboard_config/NAME.yaml``, and "Load arguments" puts them back. A recipe key with no widget
goes into the "Extra arguments" box (``train.extra_args``, a JSON object the WebUI merges over the
arguments it builds), so the recipe's choice still reaches the run, and is listed for the user.

:func:`webui_arguments` is pure: the WebUI's choice tables come in as arguments (see
``lfbridge.webui_choices``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import QfkError
from ..recipe.document import split_names


class NoWidget(ValueError):
    """The value is one the key's widget cannot hold: it goes into the Extra arguments box."""


def _text(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise NoWidget
    return repr(float(v)) if isinstance(v, float) else str(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise NoWidget
    return v


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise NoWidget
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):  # enable_thinking: null (mixed data) has no checkbox state
        raise NoWidget
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise NoWidget
    return v


def _int_text(v: Any) -> str:
    return str(_int(v))


def _path(v: Any) -> str:
    """The WebUI puts an output dir without a path separator under saves/MODEL/METHOD/: ./NAME keeps it as the recipe means it."""
    s = _str(v)
    return s if os.sep in s or "/" in s else f".{os.sep}{s}"


@dataclass(frozen=True)
class Widget:
    key: str                                   # recipe key
    elem: str                                  # WebUI element id
    convert: Any                               # recipe value -> widget value; raises NoWidget
    limits: tuple[float, float] | None = None  # a slider's minimum and maximum (the WebUI refuses a value outside)
    choices: tuple[str, ...] | None = None     # a dropdown's choices (the WebUI refuses others)

    def hold(self, value: Any) -> Any:
        v = self.convert(value)
        if self.limits and not self.limits[0] <= v <= self.limits[1]:
            raise NoWidget
        if self.choices and v not in self.choices:
            raise NoWidget
        return v


#: recipe keys that one WebUI widget holds as they are (LLaMA-Factory 0.9.5's Train tab, with its
#: slider ranges and fixed choices; tests/test_webui.py checks them against the built WebUI).
#: val_size is left out: a Val size above 0 makes the WebUI replace the recipe's eval settings.
WIDGETS = (
    Widget("model_name_or_path", "top.model_path", _str),
    Widget("finetuning_type", "top.finetuning_type", _str, choices=("full", "freeze", "lora", "oft")),
    Widget("template", "top.template", _str),
    Widget("quantization_method", "top.quantization_method", _str, choices=("bnb", "hqq", "eetq")),
    Widget("rope_scaling", "top.rope_scaling", _str, choices=("linear", "dynamic", "yarn", "llama3")),
    Widget("dataset", "train.dataset", split_names),
    Widget("learning_rate", "train.learning_rate", _text),
    Widget("num_train_epochs", "train.num_train_epochs", _text),
    Widget("max_grad_norm", "train.max_grad_norm", _text),
    Widget("max_samples", "train.max_samples", _int_text),
    Widget("cutoff_len", "train.cutoff_len", _int, (4, 131072)),
    Widget("per_device_train_batch_size", "train.batch_size", _int, (1, 1024)),
    Widget("gradient_accumulation_steps", "train.gradient_accumulation_steps", _int, (1, 1024)),
    Widget("lr_scheduler_type", "train.lr_scheduler_type", _str),
    Widget("logging_steps", "train.logging_steps", _int, (1, 1000)),
    Widget("save_steps", "train.save_steps", _int, (10, 5000)),
    Widget("warmup_steps", "train.warmup_steps", _int, (0, 5000)),
    Widget("neftune_noise_alpha", "train.neftune_alpha", _float, (0, 10)),
    Widget("packing", "train.packing", _bool),
    Widget("neat_packing", "train.neat_packing", _bool),
    Widget("train_on_prompt", "train.train_on_prompt", _bool),
    Widget("mask_history", "train.mask_history", _bool),
    Widget("enable_thinking", "train.enable_thinking", _bool),
    Widget("report_to", "train.report_to", _str),
    Widget("freeze_trainable_layers", "train.freeze_trainable_layers", _int, (-128, 128)),
    Widget("freeze_trainable_modules", "train.freeze_trainable_modules", _str),
    Widget("freeze_extra_modules", "train.freeze_extra_modules", _str),
    Widget("lora_rank", "train.lora_rank", _int, (1, 1024)),
    Widget("lora_alpha", "train.lora_alpha", _int, (1, 2048)),
    Widget("lora_dropout", "train.lora_dropout", _float, (0, 1)),
    Widget("loraplus_lr_ratio", "train.loraplus_lr_ratio", _float, (0, 64)),
    Widget("lora_target", "train.lora_target", _str),
    Widget("additional_target", "train.additional_target", _str),
    Widget("use_rslora", "train.use_rslora", _bool),
    Widget("use_dora", "train.use_dora", _bool),
    Widget("pissa_init", "train.use_pissa", _bool),
    Widget("create_new_adapter", "train.create_new_adapter", _bool),
    Widget("pref_beta", "train.pref_beta", _float, (0, 1)),
    Widget("pref_ftx", "train.pref_ftx", _float, (0, 10)),
    Widget("pref_loss", "train.pref_loss", _str, choices=("sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo")),
    Widget("output_dir", "train.output_dir", _path),
)

#: arguments the WebUI sets from its widgets after merging Extra arguments (for LoRA, freeze,
#: preference and quantized runs): a recipe value its widget cannot hold does not reach the run
SET_AFTER_EXTRAS = frozenset({
    "quantization_method", "double_quantization", "freeze_trainable_layers", "freeze_trainable_modules",
    "freeze_extra_modules", "lora_rank", "lora_alpha", "lora_dropout", "loraplus_lr_ratio", "create_new_adapter",
    "use_rslora", "use_dora", "pissa_init", "pissa_convert", "lora_target", "additional_target", "pref_beta", "pref_ftx",
    "pref_loss"})
#: the WebUI's quantization dropdown: bits as text
QUANT_BITS = ("4", "8")
#: a DeepSpeed config the WebUI's "DeepSpeed stage" / "offload" widgets stand for (it writes its own copies)
_DEEPSPEED = re.compile(r"(^|[/\\])ds_z(?P<stage>[23])(?P<offload>_offload)?_config\.json$")
#: arguments the WebUI sets when the recipe leaves them out, where LLaMA-Factory's default differs
#: in what gets trained: Extra arguments put LLaMA-Factory's default back
UNSET_DEFAULTS = {"max_samples": None}  # the WebUI's Max samples (100000) would cut large datasets


def _special(args: dict, *, data_dir: str, stages: dict[str, str], model_name: str) -> tuple[dict, set[str]]:
    """The widgets that stand for several keys or need the WebUI's tables; the keys they took."""
    out: dict[str, Any] = {"train.dataset_dir": data_dir}
    took = {"dataset_dir", "bf16", "fp16", "pure_bf16"}
    stage = args.get("stage", "sft")
    if stage in stages:
        out["train.training_stage"] = stages[stage]
        took.add("stage")
    out["top.model_name"] = model_name
    out["train.compute_type"] = ("pure_bf16" if args.get("pure_bf16") else "bf16" if args.get("bf16")
                                 else "fp16" if args.get("fp16") else "fp32")
    bits = args.get("quantization_bit")
    out["top.quantization_bit"] = str(bits) if str(bits) in QUANT_BITS else "none"
    if bits is None or str(bits) in QUANT_BITS:
        took.add("quantization_bit")
    m = _DEEPSPEED.search(str(args.get("deepspeed") or ""))
    out["train.ds_stage"], out["train.ds_offload"] = (m["stage"], bool(m["offload"])) if m else ("none", False)
    if m or not args.get("deepspeed"):
        took.add("deepspeed")
    return out, took


def _refuse_non_training(args: dict, name: str) -> None:
    if args.get("export_dir") or args.get("do_predict") or args.get("do_train") is False:
        raise QfkError(f"{name} is not a training recipe (export_dir, do_predict or do_train: false)",
                       "qfk webui --recipe loads training recipes into the Train tab; run merge and predict "
                       "recipes with qfk train / llamafactory-cli")


def model_name_for(paths: list[Any]) -> str:
    """The WebUI model name for recipes on the models ``paths``: taken from the one path they all
    share (its last component: ``Qwen/Qwen3-4B`` -> ``Qwen3-4B``, ``/models/mine/`` -> ``mine``),
    else "Custom".

    Not LLaMA-Factory's name for the hub id: its table calls the hybrid ``Qwen/Qwen3-4B``
    "Qwen3-4B-Thinking" (a different model, ``Qwen/Qwen3-4B-Thinking-2507``, exists); ``qfk webui``
    offers the name in the Model name list with the recipe's path and template
    (``lfbridge.webui_remember_model``). When "Load arguments" changes the Model name, the WebUI
    refills Model path and Chat template from that name (for "Custom": an empty path and the
    default template), over the loaded values. With one name for every recipe, set as the WebUI's
    last model at startup, the name never changes on load and the recipe's path and template stay."""
    shared = {p.strip() if isinstance(p, str) else None for p in paths}
    path = shared.pop() if len(shared) == 1 else None
    if path is None:
        return "Custom"
    return re.split(r"[/\\]", path.rstrip("/\\"))[-1] or "Custom"


def webui_arguments(args: dict, *, data_dir: str, stages: dict[str, str], model_name: str = "Custom",
                    name: str = "the recipe") -> tuple[dict[str, Any], list[str]]:
    """``args`` (a training recipe) as the WebUI's saved Train-tab arguments, and the recipe keys
    that have no widget (carried in ``train.extra_args``).

    ``data_dir``: the Data dir the WebUI gets (the box shows it; the recipe's dataset_dir is not
    shown); ``stages``: stage -> the Train tab's label; ``model_name``: the Model name dropdown's
    value (:func:`model_name_for`)."""
    _refuse_non_training(args, name)
    out, took = _special(args, data_dir=data_dir, stages=stages, model_name=model_name)
    took.add("do_train")
    for w in WIDGETS:
        if w.key in args:
            try:
                out[w.elem] = w.hold(args[w.key])
                took.add(w.key)
            except NoWidget:
                pass
    if "lora_alpha" not in args and isinstance(args.get("lora_rank"), int):
        out["train.lora_alpha"] = 2 * args["lora_rank"]  # LLaMA-Factory's default; the WebUI's is 16
    extra = {k: v for k, v in args.items() if k not in took}
    unmapped = sorted(extra)
    extra.update({k: v for k, v in UNSET_DEFAULTS.items() if k not in args})
    out["train.extra_args"] = json.dumps(extra, ensure_ascii=False)
    return out, unmapped


def lost_keys(unmapped: list[str]) -> list[str]:
    """The keys of ``unmapped`` whose recipe value the WebUI may replace with its widget's."""
    return [k for k in unmapped if k in SET_AFTER_EXTRAS]
