"""Recipe presets: the ONE table of Qwen3 models, per-size hyper-parameters, method settings,
DeepSpeed choices and generation sampling. Everything else in :mod:`qwen_factory_kit.recipe`
reads from here; nothing else hard-codes a learning rate or a sampling value.

Sources (each preset names its own in the recipe header):

* ``GUIDE_4B`` / ``GUIDE_8B`` / ``GUIDE_QLORA``: the Qwen3 fine-tuning guidance the kit follows
  (LoRA r=32, alpha=64, dropout 0.05 on all linear layers; 4B: lr 1e-5, batch 4, 5-8 epochs,
  2048 tokens; 8B: lr 5e-6, batch 2, 3-5 epochs; QLoRA on 1.7B for translation: 4-bit bnb,
  lr 2e-4, effective batch 64 = 8 x 8, ``paged_adamw_8bit``, 3 epochs). The guidance's memory
  figures ("about 8 GB" for 4B) did not hold on a GPU (38.2 GB measured): the memory a recipe
  needs comes from :mod:`qwen_factory_kit.recipe.memory` alone.
* ``LIGER`` / ``NEAT_PACKING``: the speed-ups ``qfk recipe new`` turns on where they apply, with
  what they bought when measured (``../shared/docs/GPU.md``, one H100).
* ``ALLOCATOR``: the PyTorch allocator setting ``qfk train`` gives the training process, with what
  it bought when measured (bench/README.md, one H100, 2026-11-26).
* ``SCALED``: other sizes, scaled by the kit from the 4B/8B guidance (learning rate falls and the
  per-device batch shrinks with size; the effective batch stays 16). Treat them as a start.
* ``LF_PREF``: LLaMA-Factory's own DPO/ORPO examples (lr 5e-6, ``pref_beta`` 0.1).
* ``QWEN_SAMPLING``: the Qwen3 model cards' recommended sampling (thinking: temperature 0.6,
  top_p 0.95, top_k 20; non-thinking: 0.7, 0.8, 20; never greedy).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QfkError

GUIDE_4B = "Qwen3 LoRA guidance for 4B (lr 1e-5, batch 4, 5-8 epochs, 2048 tokens)"
GUIDE_8B = "Qwen3 LoRA guidance for 8B (lr 5e-6, batch 2, 3-5 epochs)"
GUIDE_QLORA = "Qwen3 QLoRA translation guidance for 1.7B (4-bit bnb, lr 2e-4, batch 64 = 8 x 8, paged_adamw_8bit, 3 epochs)"
SCALED = "scaled by the kit from the 4B/8B guidance (a starting point: tune it)"
LF_PREF = "LLaMA-Factory's DPO/ORPO examples (lr 5e-6, pref_beta 0.1) with the kit's LoRA r=32/alpha=64"
QWEN_SAMPLING = "Qwen3 model card recommended sampling"

METHODS = ("lora", "qlora", "full", "orpo", "dpo", "predict", "merge")
TRAIN_METHODS = ("lora", "qlora", "full", "orpo", "dpo")

#: cutoff_len when the data's token lengths are not measured (the guidance's 2048 tokens); measured,
#: ``qfk recipe new`` takes the smallest multiple of 256 that holds every row (tokens.cutoff_for).
CUTOFF_LEN = 2048

#: LoRA on every linear projection (q/k/v/o and the MLP's gate/up/down).
LORA = {"lora_rank": 32, "lora_alpha": 64, "lora_dropout": 0.05, "lora_target": "all"}

#: Sampling by think mode. LLaMA-Factory's defaults (0.95 / 0.7 / 50) are NOT Qwen3's.
SAMPLING = {
    True: {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20},
    False: {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20},
}
#: New tokens to generate when predicting: reasoning needs room for the think block.
MAX_NEW_TOKENS = {True: 4096, False: 1024}

#: DeepSpeed configs shipped in ``qwen_factory_kit/recipe/deepspeed`` (the LLaMA-Factory wheel has none).
DEEPSPEED = {
    "z2": "ds_z2_config.json",
    "z2_offload": "ds_z2_offload_config.json",
    "z3": "ds_z3_config.json",
    "z3_offload": "ds_z3_offload_config.json",
}
DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"


def deepspeed_config(name: str) -> Path:
    """A shipped DeepSpeed config by file name (``ds_z3_config.json`` ...)."""
    path = DEEPSPEED_DIR / name
    if not path.is_file():
        names = ", ".join(sorted(p.name for p in DEEPSPEED_DIR.glob("*.json")))
        raise QfkError(f"the kit ships no DeepSpeed config named {name}", f"choose one of: {names}")
    return path
#: The ``--deepspeed`` choice that turns DeepSpeed off, even where the method's default uses it.
NO_DEEPSPEED = "none"
#: The ``--adapter`` value (``--base``) for the base model with no adapter; ``null`` reads the same.
NO_ADAPTER = "none"


@dataclass(frozen=True)
class Speedup:
    """Recipe keys that make training faster or leaner on a GPU, and what they bought when measured."""

    keys: dict
    what: str       # what it does
    needs: str      # when the kit turns it on by itself
    measured: str   # ../shared/docs/GPU.md (one H100 80GB, LLaMA-Factory 0.9.5)


#: Liger kernel: fused linear cross-entropy (the float32 logits are never built), fused RMSNorm/SwiGLU/RoPE.
LIGER = Speedup(
    {"enable_liger_kernel": True},
    "fused kernels; the loss never builds the float32 logits",
    "a CUDA GPU with liger-kernel installed (pip install 'qwen_factory_kit[gpu]'), SFT",
    "4B LoRA, batch 4 x 4, cutoff 2048: peak 38.2 GB -> 14.1 GB at the same speed (4,628 vs 4,436 effective tokens/s)",
)
#: Neat packing: several rows per sequence, each attending only to itself (LLaMA-Factory's block-diagonal mask).
NEAT_PACKING = Speedup(
    {"packing": True, "neat_packing": True},
    "several rows per sequence, no attention across rows: no padding",
    "with the liger kernel on a GPU, SFT on single-turn rows that cutoff_len does not cut",
    "4B LoRA with liger: 6,830 vs 4,628 effective tokens/s (1.48x), peak 14.4 GB",
)


@dataclass(frozen=True)
class AllocatorSetting:
    """The PyTorch allocator setting ``qfk train`` gives the training process, and what it bought when measured."""

    variable: str
    value: str
    measured: str   # bench/README.md (one H100 80GB, LLaMA-Factory 0.9.5, 2026-11-26)

    @property
    def note(self) -> str:
        """The training recipes' header line."""
        return (f"qfk train sets {self.variable}={self.value} (measured: {self.measured}); "
                "with llamafactory-cli, export it first")


#: Expandable segments: the caching allocator grows one segment instead of caching a block per batch length
#: (``qfk train`` sets it unless the user set PYTORCH_CUDA_ALLOC_CONF; the memory model's ``expandable_gb``).
ALLOCATOR = AllocatorSetting("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True",
                             "1.7B QLoRA 19.0 -> 7.6 GB, 4B LoRA 37.3 -> 27.5 GB")


@dataclass(frozen=True)
class SizePreset:
    params_b: float          # total parameters, billions
    learning_rate: float
    batch: int               # per_device_train_batch_size
    accum: int               # gradient_accumulation_steps
    epochs: float
    source: str
    epochs_note: str = ""


SIZES: dict[str, SizePreset] = {
    "0.6b": SizePreset(0.6, 2e-5, 8, 2, 3, SCALED),
    "1.7b": SizePreset(1.7, 2e-5, 8, 2, 3, SCALED),
    "4b": SizePreset(4.0, 1e-5, 4, 4, 5, GUIDE_4B, "guidance: 5-8 epochs"),
    "8b": SizePreset(8.2, 5e-6, 2, 8, 3, GUIDE_8B, "guidance: 3-5 epochs"),
    "14b": SizePreset(14.8, 5e-6, 1, 16, 3, SCALED),
    "32b": SizePreset(32.8, 3e-6, 1, 16, 2, SCALED),
    "30b-a3b": SizePreset(30.5, 5e-6, 1, 16, 3, SCALED),
    "235b-a22b": SizePreset(235.0, 2e-6, 1, 16, 2, SCALED),
}

#: Every name ``--model`` accepts (case-insensitive, with or without ``Qwen/``) -> (size, kind).
#: kind: hybrid (thinks or not, per turn), base, instruct-2507 (never thinks), thinking-2507 (always thinks).
MODELS: dict[str, tuple[str, str]] = {}
for _size, _label in (("0.6b", "0.6B"), ("1.7b", "1.7B"), ("4b", "4B"), ("8b", "8B"), ("14b", "14B"),
                      ("32b", "32B"), ("30b-a3b", "30B-A3B"), ("235b-a22b", "235B-A22B")):
    MODELS[f"Qwen3-{_label}"] = (_size, "hybrid")
    if _size not in ("32b", "235b-a22b"):
        MODELS[f"Qwen3-{_label}-Base"] = (_size, "base")
for _size, _label in (("4b", "4B"), ("30b-a3b", "30B-A3B"), ("235b-a22b", "235B-A22B")):
    MODELS[f"Qwen3-{_label}-Instruct-2507"] = (_size, "instruct-2507")
    MODELS[f"Qwen3-{_label}-Thinking-2507"] = (_size, "thinking-2507")


@dataclass(frozen=True)
class ModelInfo:
    name: str                 # Qwen3-4B, or the folder name of a local model
    path: str                 # what goes into model_name_or_path
    size: str                 # key of SIZES
    kind: str                 # hybrid | base | instruct-2507 | thinking-2507
    local: bool = False
    params_b: float = 0.0

    @property
    def preset(self) -> SizePreset:
        return SIZES[self.size]


def _kind_from_name(name: str) -> str:
    low = name.lower()
    if "instruct-2507" in low:
        return "instruct-2507"
    if "thinking-2507" in low:
        return "thinking-2507"
    if low.endswith("-base"):
        return "base"
    return "hybrid"


def _local_params_b(cfg: dict) -> float:
    h, n, inter = cfg.get("hidden_size", 0), cfg.get("num_hidden_layers", 0), cfg.get("intermediate_size", 0)
    heads, kv = cfg.get("num_attention_heads", 1), cfg.get("num_key_value_heads", 1)
    head_dim = cfg.get("head_dim") or (h // max(heads, 1))
    experts = cfg.get("num_experts", 0) or 1
    moe_inter = cfg.get("moe_intermediate_size", inter) if experts > 1 else inter
    attn = h * head_dim * (2 * heads + 2 * kv)
    mlp = 3 * h * moe_inter * experts
    emb = cfg.get("vocab_size", 0) * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return (emb + n * (attn + mlp)) / 1e9


def resolve_model(spec: str) -> ModelInfo:
    """A Qwen3 name (``Qwen3-4B``, ``Qwen/Qwen3-30B-A3B-Instruct-2507`` ...), a local folder, or
    ``qfk-tiny``: the kit's tiny Qwen3 for CPU runs (:mod:`qwen_factory_kit.tiny`), built on first use."""
    from ..tiny import TINY_ALIAS

    if spec.strip().lower() == TINY_ALIAS:
        from ..tiny import build_tiny_model

        spec = str(build_tiny_model())
    path = Path(spec).expanduser()
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise QfkError(f"model folder {path} has no config.json",
                           "give a Hugging Face model folder (one that holds config.json) or a Qwen3 name such as Qwen3-4B")
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        if not str(cfg.get("model_type", "")).startswith("qwen3"):
            raise QfkError(f"{path} is a '{cfg.get('model_type')}' model, not Qwen3",
                           "the kit's presets and think-tag rules are for Qwen3 models")
        params = _local_params_b(cfg)
        size = min(SIZES, key=lambda k: abs(SIZES[k].params_b - params)) if params >= 0.3 else "0.6b"
        name = path.resolve().name
        return ModelInfo(name, spec, size, _kind_from_name(name), local=True, params_b=params)
    key = spec.strip().removeprefix("Qwen/").removeprefix("qwen/")
    for name, (size, kind) in MODELS.items():
        if name.lower() == key.lower():
            return ModelInfo(name, f"Qwen/{name}", size, kind, params_b=SIZES[size].params_b)
    close = [n for n in MODELS if key.lower().replace("qwen3-", "") in n.lower()][:6]
    raise QfkError(f"unknown model '{spec}' (and no such folder)",
                   f"use a Qwen3 name such as {', '.join(close or ['Qwen3-4B', 'Qwen3-1.7B', 'Qwen3-4B-Instruct-2507'])}, "
                   f"a local model folder, or {TINY_ALIAS} (a tiny Qwen3 for CPU runs); the full list: qfk recipe new --list-models")


def think_settings(mode: str, model: ModelInfo) -> tuple[str, bool | None, str]:
    """``(template, enable_thinking, why)`` for data of think ``mode`` on ``model`` (QWEN3-THINK.md).

    Raises :class:`QfkError` for combinations that cannot train what the data means."""
    from ..think import training_settings

    if mode == "none":
        raise QfkError("the datasets hold no responses, so their think mode is unknown",
                       "set it yourself: template=qwen3 enable_thinking=true (or false)")
    if model.kind == "instruct-2507" and mode != "direct":
        raise QfkError(f"{model.name} never thinks, but the data has reasoning ({mode})",
                       "use a hybrid model (Qwen3-4B) or a Thinking-2507 model for reasoning data, "
                       "or convert with the reasoning dropped")
    if model.kind == "thinking-2507" and mode != "reasoning":
        raise QfkError(f"{model.name} always thinks, but the data has rows without reasoning ({mode})",
                       "use a hybrid model (Qwen3-4B) for direct or mixed data, or an Instruct-2507 model for direct data")
    template, enable = training_settings(mode, instruct_2507=model.kind == "instruct-2507")
    why = {
        "reasoning": "every response has reasoning: train the think blocks",
        "direct": ("no response has reasoning: Instruct-2507 uses qwen3_nothink" if template == "qwen3_nothink"
                   else "no response has reasoning: the empty block goes to the prompt, answers are trained"),
        "mixed": "some responses have reasoning: train those blocks, put the empty block in the prompt for the rest",
    }[mode]
    return template, enable, why


def combine_modes(modes: list[str]) -> str:
    """One think mode for several datasets trained together."""
    kinds = {m for m in modes if m != "none"}
    if not kinds:
        return "none"
    return kinds.pop() if len(kinds) == 1 else "mixed"


@dataclass
class MethodPreset:
    """Keys a method adds to a recipe, grouped as the recipe shows them, plus its provenance."""

    method: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    source: str = ""
    notes: list[str] = field(default_factory=list)


def method_preset(method: str, model: ModelInfo, *, deepspeed: str | None = None) -> MethodPreset:
    """Hyper-parameters for ``method`` on ``model`` (training methods only).

    ``deepspeed``: a :data:`DEEPSPEED` key, ``"none"`` for no DeepSpeed at all, or None for the
    method's default (ZeRO-3 for full fine-tuning of 4B and up)."""
    if method not in TRAIN_METHODS:
        raise QfkError(f"'{method}' is not a training method", f"choose one of {', '.join(TRAIN_METHODS)}")
    size = model.preset
    p = MethodPreset()
    lr, batch, accum, epochs, source = size.learning_rate, size.batch, size.accum, size.epochs, size.source
    if method in ("lora", "qlora", "orpo", "dpo"):
        p.method = {"stage": "sft", "do_train": True, "finetuning_type": "lora", **LORA}
    if method == "qlora":
        p.method.update(quantization_bit=4, quantization_method="bnb")
        lr, batch, accum, epochs, source = 2e-4, 8, 8, 3, GUIDE_QLORA
        if size.params_b > 10:
            batch, accum = 2, 32
        p.training["optim"] = "paged_adamw_8bit"
        p.notes.append("QLoRA needs a CUDA GPU and bitsandbytes; merge against the unquantized base model")
    elif method == "full":
        p.method = {"stage": "sft", "do_train": True, "finetuning_type": "full"}
        if deepspeed is None and size.params_b >= 4:
            deepspeed = "z3"
        source = f"{size.source}; learning rate and batch as for LoRA"
        p.notes.append("full fine-tuning memory (16 bytes per parameter: bf16 weights and gradients, fp32 Adam states) "
                       "is for all GPUs together; ZeRO-3 shards it across them")
    elif method in ("orpo", "dpo"):
        p.method.update(stage="dpo", pref_beta=0.1, pref_loss="orpo" if method == "orpo" else "sigmoid")
        lr, epochs, source = 5e-6, 3, LF_PREF
        batch, accum = max(1, batch // 2), accum * 2 if batch > 1 else accum
        p.notes.append("ORPO needs no reference model" if method == "orpo"
                       else "DPO with LoRA uses the base model (adapter off) as the reference")
    if deepspeed and deepspeed != NO_DEEPSPEED:
        if deepspeed not in DEEPSPEED:
            raise QfkError(f"unknown DeepSpeed preset '{deepspeed}'", f"choose one of {', '.join(DEEPSPEED)} or {NO_DEEPSPEED}")
        p.training["deepspeed"] = deepspeed
    p.training = {
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": accum,
        "learning_rate": lr,
        "num_train_epochs": float(epochs),
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1,  # a float < 1 is a ratio of the total steps (warmup_ratio is deprecated in transformers 5)
        "bf16": True,
        **p.training,
    }
    p.source = source
    if size.epochs_note and method == "lora":
        p.notes.append(size.epochs_note)
    return p


def sampling(enable_thinking: bool | None) -> dict:
    """Qwen3's sampling for the think mode (null/mixed: the model may think, so thinking values)."""
    return dict(SAMPLING[enable_thinking is not False])


def max_new_tokens(enable_thinking: bool | None) -> int:
    return MAX_NEW_TOKENS[enable_thinking is not False]


def model_slug(model: ModelInfo) -> str:
    return re.sub(r"[^0-9a-z.]+", "-", model.name.lower()).strip("-")
