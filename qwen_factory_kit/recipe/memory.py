"""GPU memory of a training recipe, part by part, in plain arithmetic (no torch import).

A Qwen3 model's shape, a method and the recipe's settings in; the memory each part takes at the
peak out, with the formula behind each number (``Estimate.lines()``, for
``qfk recipe new --explain-memory``), and ``fit()`` to choose liger, gradient checkpointing and
the per-device batch for a GPU. "GB" here means GiB (2**30 bytes), as nvidia-smi's MiB / 1024.

What PyTorch holds while HF transformers' Qwen3 trains (LLaMA-Factory 0.9.5, sdpa attention):

* weights: bf16, or bitsandbytes 4-bit (0.5 byte per linear weight plus its quantization
  constants; the embeddings and an untied ``lm_head`` stay bf16). LLaMA-Factory upcasts the
  trainable parameters to float32 (LoRA's A/B, or every weight in full fine-tuning without
  DeepSpeed ZeRO-3); their gradients are float32 too; AdamW keeps two float32 states, the 8-bit
  optimizers two 8-bit ones.
* activations: with gradient checkpointing each layer's input is saved (batch x tokens x hidden
  x 2 bytes) and one layer is recomputed at a time during backward; without it every layer keeps
  all it saves (RMSNorm's float32 upcasts, q/k/v, the GQA-repeated k/v, the attention output,
  the MLP's gate/up/SiLU/product, LoRA dropout's outputs and masks).
* logits: ``lm_head`` writes batch x tokens x vocab bf16 logits; the loss upcasts them with
  ``.float()`` and cross-entropy saves its float32 log-softmax for backward. Backward allocates
  the log-softmax's incoming gradient (nll's dense, mostly zero, float32) and its output
  gradient (float32) while the saved log-softmax is alive: 3 x 4 bytes per logit live at once.
  The caching allocator keeps the freed 2-byte block (it cannot hold a 4-byte request), so a
  step reserves 14 bytes per logit. Liger's fused linear cross-entropy never builds them: it
  works on a chunk of rows at a time. Preference methods (``dpo``/``orpo``) score chosen and
  rejected together (twice the rows) with LLaMA-Factory's own log-softmax (liger does not fuse
  it); DPO with LoRA also runs the reference pass (adapter off, no extra weights) whose float32
  logits and log-softmax sit beside the policy's: 16 bytes per logit.
* the loss peak and the recomputed layer happen at different times: the larger counts.

Above the live tensors, PyTorch's caching allocator reserves more than it hands out, and how much
depends on how it is set (``PYTORCH_CUDA_ALLOC_CONF``):

* ``expandable_segments:True``, which ``qfk train`` sets (``presets.ALLOCATOR``): the live tensors,
  the freed bf16 logits block (a float32 request cannot use it) and a small slack. This is
  ``expandable_gb``, the figure ``fit()`` holds to a GPU's memory.
* the default allocator (``llamafactory-cli train`` as is): batches are padded to their longest
  row, so their sizes differ; a batch longer than those before cannot use the smaller cached
  float32 blocks and, on a GPU that never runs short, the allocator takes new ones instead of
  freeing the old. ``peak_gb`` adds that length growth: what nvidia-smi shows on a big GPU. On a
  smaller one the allocator frees its cache and retries before it fails, but blocks split around
  live tensors cannot be freed: the default allocator needs more than ``expandable_gb``, up to
  ``peak_gb``.

Calibration (bench/README.md, H100 2026-11-26: LLaMA-Factory 0.9.5, torch 2.11, random-weight
Qwen3 of the real shapes; 4B LoRA r=32 on all linear layers, batch 4, cutoff 2048, gradient
checkpointing, bf16, sdpa, 200 real medical rows, the longest cut to 2048; 1.7B QLoRA batch 8,
paged_adamw_8bit, 287 KFTT en-ja lines of 53-279 tokens). nvidia-smi peak / torch max allocated /
max reserved, GB:

====================================  =====  =========  ========
run                                   smi    allocated  reserved
====================================  =====  =========  ========
4B LoRA as emitted                    37.3   23.7       36.6
4B LoRA + liger                       13.8   11.9       13.0
4B LoRA + expandable segments         27.5   23.7       26.7
4B LoRA + liger + neat packing        14.1   12.2       13.3
1.7B QLoRA as emitted                 19.0   5.7        18.1
1.7B QLoRA + expandable segments      7.6    5.7        6.7
====================================  =====  =========  ========

The parts above give the live tensors within 0.3 GB of torch's max allocated in every run (23.8,
11.9 and 5.6 GB at the 1.7B run's longest batch, 280 tokens). Three constants fit the rest:

* ``CUDA_CONTEXT_GB`` = 0.8: the CUDA context and cuBLAS workspace that nvidia-smi counts and
  torch does not reserve (nvidia-smi less max reserved: 0.7-0.9 GB in all six runs).
* ``ALLOCATOR_SLACK`` = 0.4: reserved-but-free memory as a fraction of the live activations
  (size rounding, blocks split and cached between steps), beside the freed bf16 logits block.
  Liger (nothing else reserved): (13.0 - 11.9) / 3.5 GB of activations = 0.32; 4B with expandable
  segments: (26.7 - 23.7 - 2.3 bf16 block) / 1.4 GB = 0.48; 0.4 between them. The model then gives
  14.1 (liger), 27.5 (expandable) and 7.2 GB (1.7B QLoRA expandable).
* ``LENGTH_GROWTH`` = 0.7: the default allocator's extra float32 logits blocks as a fraction of
  the live logits, from 4B as emitted: (37.3 - 27.5) / 13.9 GB = 0.70 (0.77 from the earlier
  38.2 GB). Packed batches all have one length: none.

What the length growth is depends on the run's order of batch lengths and on where long-lived
tensors land in cached blocks: the 1.7B QLoRA run reserved 12.4 GB above its live tensors, 3.1
times its logits where 4B's was 0.7 times, so for it ``peak_gb`` (9.8 GB) is a lower bound of the
19.0 GB measured (``qlora_note()``). With expandable segments the model holds for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ..errors import QfkError

GIB = 2**30
CUDA_CONTEXT_GB = 0.8
ALLOCATOR_SLACK = 0.4
LENGTH_GROWTH = 0.7
PAD_MULTIPLE = 8             # LLaMA-Factory's collators pad to a multiple of 8

PREFERENCE = ("orpo", "dpo")
LORA_METHODS = ("lora", "qlora", "orpo", "dpo")
TRAIN_METHODS = ("lora", "qlora", "full", "orpo", "dpo")

#: Optimizer state bytes per trainable parameter (HF ``optim`` names); unknown names count as AdamW.
OPTIM_BYTES = {
    "adamw_torch": 8, "adamw_torch_fused": 8, "adamw_hf": 8, "adamw_apex_fused": 8, "adamw_anyprecision": 8,
    "paged_adamw_32bit": 8, "adamw_8bit": 2, "adamw_bnb_8bit": 2, "paged_adamw_8bit": 2,
    "lion_32bit": 4, "paged_lion_32bit": 4, "lion_8bit": 1, "paged_lion_8bit": 1,
    "adagrad": 4, "rmsprop": 4, "sgd": 0, "adafactor": 0,
}

#: The measured 1.7B QLoRA translation runs (bench/README.md, H100 2026-11-26), GB: nvidia-smi with the
#: default allocator and with expandable segments, and torch's max allocated (the live tensors).
QLORA_MEASURED = {"default": 19.0, "expandable": 7.6, "allocated": 5.7}
KFTT_LONGEST_BATCH = 280    # those runs' longest batch: the longest KFTT line (279 tokens) padded to 8


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a dense Qwen3 model that its memory depends on."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int = 128
    vocab: int = 151936
    tied: bool = True

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """Each layer's projections, name -> (in, out)."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        """Parameters of every layer's projections (what 4-bit quantization shrinks)."""
        return self.layers * sum(a * b for a, b in self.linears().values())

    @property
    def embed_params(self) -> int:
        """Embeddings plus an untied ``lm_head``."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        norms = self.layers * (2 * self.hidden + 2 * self.head_dim) + self.hidden
        return self.linear_params + self.embed_params + norms


def _qwen3(name: str, hidden: int, inter: int, layers: int, heads: int, tied: bool) -> ModelShape:
    return ModelShape(name, hidden, inter, layers, heads, 8, tied=tied)


#: Real Qwen3 config shapes, keyed as ``presets.SIZES``. The MoE sizes are not modelled.
SHAPES: dict[str, ModelShape] = {
    "0.6b": _qwen3("Qwen3-0.6B", 1024, 3072, 28, 16, True),
    "1.7b": _qwen3("Qwen3-1.7B", 2048, 6144, 28, 16, True),
    "4b": _qwen3("Qwen3-4B", 2560, 9728, 36, 32, True),
    "8b": _qwen3("Qwen3-8B", 4096, 12288, 36, 32, False),
    "14b": _qwen3("Qwen3-14B", 5120, 17408, 40, 40, False),
    "32b": _qwen3("Qwen3-32B", 5120, 25600, 64, 64, False),
}


def shape_for_size(size: str) -> ModelShape | None:
    """The shape of a preset size (``"4b"``); None for sizes not modelled (MoE)."""
    return SHAPES.get(size.lower())


def shape_from_config(cfg: dict, name: str = "local model") -> ModelShape | None:
    """The shape in a model folder's ``config.json``; None for MoE or an incomplete config."""
    if (cfg.get("num_experts") or 0) > 1:
        return None
    try:
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        return ModelShape(name, hidden, int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"]), heads,
                          int(cfg.get("num_key_value_heads") or heads), int(cfg.get("head_dim") or hidden // heads),
                          int(cfg["vocab_size"]), bool(cfg.get("tie_word_embeddings", False)))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Setup:
    """The recipe settings memory depends on (``estimate()``'s keyword arguments)."""

    method: str
    batch: int
    cutoff: int
    seq_len: int | None = None          # padded batch length; default: the cutoff
    gradient_checkpointing: bool = True
    liger: bool = False
    lora_rank: int = 32
    lora_target: str = "all"            # "all" or comma-separated projection names
    lora_dropout: float = 0.05
    bf16: bool = True
    optim: str = "adamw_torch"
    deepspeed: int | None = None        # ZeRO stage 2 or 3
    n_gpus: int = 1
    offload: bool = False               # DeepSpeed CPU offload (optimizer; ZeRO-3: parameters too)
    packing: bool = False
    expandable_segments: bool = True    # PYTORCH_CUDA_ALLOC_CONF as qfk train sets it; False: PyTorch's default

    @property
    def rows(self) -> int:
        """Sequences per forward pass: chosen and rejected for preference methods."""
        return self.batch * (2 if self.method in PREFERENCE else 1)

    @property
    def seq(self) -> int:
        length = self.cutoff if self.packing or not self.seq_len else min(self.seq_len, self.cutoff)
        return PAD_MULTIPLE * math.ceil(length / PAD_MULTIPLE)

    @property
    def tokens(self) -> int:
        return self.rows * self.seq

    @property
    def lora(self) -> bool:
        return self.method in LORA_METHODS

    @property
    def fused_loss(self) -> bool:
        """Liger's fused linear cross-entropy (LLaMA-Factory applies it to pt/sft only)."""
        return self.liger and self.method not in PREFERENCE


def _check(s: Setup) -> None:
    if s.method not in TRAIN_METHODS:
        raise QfkError(f"no memory model for method '{s.method}'", f"use one of {', '.join(TRAIN_METHODS)}")
    if s.batch < 1 or s.cutoff < 1 or s.n_gpus < 1:
        raise QfkError("batch, cutoff and GPU count must be positive",
                       f"got batch {s.batch}, cutoff {s.cutoff}, {s.n_gpus} GPUs")
    if s.deepspeed not in (None, 2, 3):
        raise QfkError(f"unknown DeepSpeed ZeRO stage {s.deepspeed}", "use 2, 3 or none")


@dataclass(frozen=True)
class Part:
    key: str
    label: str
    gb: float
    formula: str
    at_peak: bool = True


@dataclass
class Estimate:
    """Each part in GB, and the totals.

    ``expandable_gb``: the total with expandable segments (``qfk train``). ``peak_gb``: with PyTorch's
    default allocator, as nvidia-smi shows it on a big GPU (the length growth included).
    ``needed_gb``: what must fit: the first with ``Setup.expandable_segments`` (the default), else the
    second. ``allocated_gb``: the live tensors at the peak (torch's ``max_memory_allocated``)."""

    shape: ModelShape
    setup: Setup
    parts: list[Part]
    measured_note: str = ""
    notes: list[str] = field(default_factory=list)

    def part(self, key: str) -> Part:
        return next(p for p in self.parts if p.key == key)

    def _sum(self, skip: tuple[str, ...] = ()) -> float:
        return sum(p.gb for p in self.parts if p.at_peak and p.key not in skip)

    @property
    def peak_gb(self) -> float:
        return self._sum()

    @property
    def expandable_gb(self) -> float:
        return self._sum(("growth",))

    @property
    def needed_gb(self) -> float:
        return self.expandable_gb if self.setup.expandable_segments else self.peak_gb

    @property
    def allocator(self) -> str:
        """How ``needed_gb`` counts, in words."""
        return ("with expandable segments (qfk train)" if self.setup.expandable_segments
                else "with PyTorch's default allocator")

    @property
    def allocated_gb(self) -> float:
        return self._sum(("context", "allocator", "growth"))

    def title(self) -> str:
        s, on = self.setup, {True: "on", False: "off"}
        rows = f" (chosen + rejected: {s.rows} rows)" if s.method in PREFERENCE else ""
        zero = (f", ZeRO-{s.deepspeed} on {s.n_gpus} GPU(s)" + (" + offload" if s.offload else "")) if s.deepspeed else ""
        return (f"GPU memory of {self.shape.name}, {s.method}, batch {s.batch} x {s.seq} tokens{rows}, "
                f"gradient checkpointing {on[s.gradient_checkpointing]}, liger {on[s.liger]}{zero} (per GPU):")

    def lines(self) -> list[str]:
        """One line per part with its formula's numbers, then the totals."""
        out = [self.title()]
        width = max(len(p.label) for p in self.parts)
        for p in self.parts:
            tail = "" if p.at_peak else "  [not at the peak]"
            out.append(f"  {p.label:<{width}} {p.gb:6.2f} GB  {p.formula}{tail}")
        out.append(f"  total: about {self.expandable_gb:.1f} GB with expandable segments (qfk train); peak about "
                   f"{self.peak_gb:.1f} GB with PyTorch's default allocator, as nvidia-smi shows it on a large GPU "
                   f"(live tensors {self.allocated_gb:.1f} GB)")
        out += [f"  note: {n}" for n in self.notes]
        if self.measured_note:
            out.append(f"  measured: {self.measured_note}")
        return out


def _gb(nbytes: float) -> float:
    return nbytes / GIB


def _m(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _lora_params(shape: ModelShape, s: Setup) -> tuple[int, list[str]]:
    lin = shape.linears()
    names = list(lin) if s.lora_target.strip() == "all" else [t.strip() for t in s.lora_target.split(",") if t.strip()]
    unknown = [n for n in names if n not in lin]
    if unknown:
        raise QfkError(f"unknown lora_target {', '.join(unknown)}", f"use all or some of {', '.join(lin)}")
    return shape.layers * sum(s.lora_rank * sum(lin[n]) for n in names), names


def _weights(shape: ModelShape, s: Setup) -> Part:
    p = shape.params
    if s.method == "qlora":
        per = 0.5 + 1 / 64 + 4 / (64 * 256)     # 4-bit + double-quantized absmax per 64-block
        rest = p - shape.linear_params
        return Part("weights", "weights", _gb(shape.linear_params * per + rest * 2),
                    f"{_m(shape.linear_params)} linear weights x {per:.3f} bytes (bnb 4-bit + quantization constants)"
                    f" + {_m(rest)} embeddings/lm_head/norms x 2 bytes (not quantized)")
    if s.method == "full" and s.deepspeed is None:
        return Part("weights", "weights", _gb(p * 4), f"{_m(p)} parameters x 4 bytes (trainable: upcast to float32)")
    if s.deepspeed == 3:
        share = 0 if s.offload else 2 * p / s.n_gpus
        layer = 2 * shape.linear_params / shape.layers * 2       # two layers gathered at a time
        how = "on the CPU" if s.offload else f"x 2 bytes / {s.n_gpus} GPUs"
        return Part("weights", "weights", _gb(share + layer),
                    f"{_m(p)} parameters {how} (ZeRO-3) + 2 gathered layers x 2 bytes")
    return Part("weights", "weights", _gb(p * (2 if s.bf16 else 4)),
                f"{_m(p)} parameters x {2 if s.bf16 else 4} bytes ({'bf16' if s.bf16 else 'float32'})")


def _trainable(shape: ModelShape, s: Setup) -> list[Part]:
    """The trainable parameters' float32 master copies, their gradients and the optimizer states."""
    if s.lora:
        n, names = _lora_params(shape, s)
        what = f"{_m(n)} LoRA parameters (r={s.lora_rank} on {len(names)} projections x {shape.layers} layers)"
        master, grad = 4 * n, 4 * n
    else:
        n = shape.params
        what = f"{_m(n)} parameters"
        master = 0 if s.deepspeed is None else 4 * n      # without DeepSpeed the weights are the float32 master
        grad = (4 if s.deepspeed is None else 2) * n
    state = OPTIM_BYTES.get(s.optim, 8)
    shard = s.n_gpus if s.deepspeed else 1
    off = s.offload and s.deepspeed is not None
    grad_shard = shard          # ZeRO-2 and ZeRO-3 both partition the gradients
    per = f" / {shard} GPUs" if shard > 1 else ""
    return [
        Part("trainable", "trainable (fp32 master)", 0 if off else _gb(master / shard),
             f"{what} x 4 bytes{per}" + (" (on the CPU)" if off else "") if master else f"{what}: the weights above"),
        Part("grads", "gradients", 0 if off else _gb(grad / grad_shard),
             f"{_m(n)} x {grad // n if n else 0} bytes" + (f" / {grad_shard} GPUs" if grad_shard > 1 else "")
             + (" (moved to the CPU in buckets)" if off else "")),
        Part("optimizer", "optimizer states", 0 if off else _gb(state * n / shard),
             f"{s.optim}: {_m(n)} x {state} bytes{per}" + (" (on the CPU)" if off else "")
             + ("" if s.optim in OPTIM_BYTES else " (unknown optimizer: counted as AdamW)")),
    ]


def layer_bytes_per_token(shape: ModelShape, s: Setup) -> int:
    """What one decoder layer saves for backward per token (bf16; float32 doubles it)."""
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    if s.liger:   # liger RMSNorm saves its input and rstd, SwiGLU recomputes SiLU, RoPE in place
        core = 8 * h + 12 * q + 4 * kv + 6 * i
    else:         # float32 RMSNorm upcasts, q/k norms, RoPE outputs, repeated k/v, sdpa out, gate/up/SiLU/product
        core = 16 * h + 16 * q + 8 * kv + 8 * i
    lora = 0
    if s.lora and s.lora_dropout > 0:   # dropout output (2 bytes) and mask (1 byte) per adapted input
        _, names = _lora_params(shape, s)
        lora = 3 * sum(shape.linears()[n][0] for n in names)
    return (core + lora) * (1 if s.bf16 else 2)


def _activations(shape: ModelShape, s: Setup) -> tuple[Part, Part]:
    """Saved layer inputs, and the layers' activations: one recomputed layer, or all of them."""
    t, scale = s.tokens, 1 if s.bf16 else 2
    per_layer = layer_bytes_per_token(shape, s)
    working = 6 * shape.intermediate * scale     # gradients of the MLP's widest tensors while backward runs
    tail = f" + {working / 1e3:.0f} KB backward working set"
    if s.gradient_checkpointing:
        saved = Part("checkpoints", "saved layer inputs", _gb(shape.layers * t * shape.hidden * 2 * scale),
                     f"{shape.layers} layers x {s.rows} x {s.seq} tokens x {shape.hidden} hidden x {2 * scale} bytes")
        layer = Part("layers", "recomputed layer", _gb(t * (per_layer + working)),
                     f"one layer at a time in backward: {t} tokens x ({per_layer / 1e3:.0f} KB saved{tail})")
    else:
        saved = Part("checkpoints", "saved layer inputs", 0.0, "none: gradient checkpointing is off")
        layer = Part("layers", "layer activations", _gb(t * (shape.layers * per_layer + working)),
                     f"{t} tokens x ({shape.layers} layers x {per_layer / 1e3:.0f} KB saved{tail})")
    return saved, layer


def logits_bytes_per_value(s: Setup) -> int:
    """Live bytes per logit at the loss's peak (see the module docstring)."""
    if s.method == "dpo":
        return 16   # policy float32 logits + saved log-softmax, then the reference pass's two
    return 12       # saved float32 log-softmax + its incoming gradient + its output gradient


def _logits(shape: ModelShape, s: Setup) -> Part:
    n = s.tokens * shape.vocab
    if s.fused_loss:
        chunk = 2 ** math.ceil(math.log2(max(1, math.ceil(s.tokens / math.ceil(shape.vocab / shape.hidden)))))
        chunk = min(chunk, s.tokens)
        nbytes = chunk * shape.vocab * 6 + s.tokens * shape.hidden * 2
        return Part("logits", "logits (liger chunk)", _gb(nbytes),
                    f"fused linear cross-entropy: {chunk} rows x {shape.vocab} vocab x 6 bytes at a time"
                    f" + the input gradient ({s.tokens} x {shape.hidden} x 2 bytes)")
    per = logits_bytes_per_value(s)
    what = ("policy and reference float32 logits and log-softmax" if s.method == "dpo"
            else "saved float32 log-softmax, its gradient and the input gradient")
    return Part("logits", "logits", _gb(n * per),
                f"{s.rows} x {s.seq} x {shape.vocab} vocab = {n / 1e9:.2f}G values x {per} bytes: {what}")


def _loss_is_peak(s: Setup, layer: Part, logits: Part) -> bool:
    """Whether the materialised logits (not a recomputed layer) make the peak."""
    return not s.fused_loss and (logits.gb >= layer.gb or not s.gradient_checkpointing)


def _allocator(shape: ModelShape, s: Setup, saved: Part, layer: Part, logits: Part) -> tuple[Part, Part]:
    """The caching allocator's reserved-but-free memory at the peak (either setting), and the default
    allocator's length-growth term."""
    loss_peak = _loss_is_peak(s, layer, logits)
    acts = saved.gb + (0.0 if loss_peak and s.gradient_checkpointing else layer.gb)
    slack = ALLOCATOR_SLACK * acts
    formula = f"{ALLOCATOR_SLACK} x {acts:.2f} GB activations (fitted)"
    if not loss_peak:
        return (Part("allocator", "allocator cache", slack, formula),
                Part("growth", "length growth", 0.0, "none: the logits are not the peak"))
    if s.bf16:
        kept = _gb(s.tokens * shape.vocab * 2)
        slack += kept
        formula += f" + the freed bf16 logits block ({kept:.2f} GB, too small for a float32 request)"
    growth = Part("growth", "length growth", 0.0, "none: packed batches all have one length") if s.packing else \
        Part("growth", "length growth", LENGTH_GROWTH * logits.gb,
             f"{LENGTH_GROWTH} x {logits.gb:.2f} GB logits (fitted; default allocator only): batches of different "
             "lengths leave cached blocks too small for a longer one; a big GPU never frees them")
    return Part("allocator", "allocator cache", slack, formula), growth


def _phases(s: Setup, layer: Part, logits: Part) -> tuple[Part, Part]:
    """With gradient checkpointing the loss peak and the recomputed layer come at different times."""
    if not s.gradient_checkpointing:
        return layer, logits
    if _loss_is_peak(s, layer, logits):
        return replace(layer, at_peak=False), logits
    return layer, replace(logits, at_peak=False)


def _notes(shape: ModelShape, s: Setup) -> list[str]:
    notes = []
    if s.method == "dpo":
        notes.append("DPO with LoRA: the reference pass is the base model with the adapter off (no extra weights)")
    if s.liger and not s.fused_loss:
        notes.append("LLaMA-Factory fuses liger's cross-entropy for pt/sft only: preference losses keep the logits")
    if s.optim not in OPTIM_BYTES:
        notes.append(f"optimizer '{s.optim}' is not in the table: its states are counted as AdamW's (8 bytes)")
    return notes


def _estimate(shape: ModelShape, s: Setup) -> Estimate:
    _check(s)
    saved, layer = _activations(shape, s)
    logits = _logits(shape, s)
    slack, growth = _allocator(shape, s, saved, layer, logits)
    layer, logits = _phases(s, layer, logits)
    parts = [Part("context", "CUDA context", CUDA_CONTEXT_GB, "CUDA context and cuBLAS workspace (fixed)"),
             _weights(shape, s), *_trainable(shape, s), saved, layer, logits, slack, growth]
    return Estimate(shape, s, parts, notes=_notes(shape, s))


def estimate(shape: ModelShape, *, method: str, batch: int, cutoff: int, seq_len: int | None = None,
             **settings) -> Estimate:
    """The memory of training ``shape`` with ``method`` on one GPU (per GPU with DeepSpeed).

    ``settings`` are :class:`Setup`'s other fields (``gradient_checkpointing``, ``liger``,
    ``lora_rank``, ``lora_target``, ``bf16``, ``optim``, ``deepspeed``, ``n_gpus``, ``offload``,
    ``packing``, ``expandable_segments``). ``seq_len``: the padded batch length (see :func:`padded_len`); default the cutoff."""
    try:
        s = Setup(method, batch, cutoff, seq_len, **settings)
    except TypeError as exc:
        raise QfkError(f"memory estimate: {exc}", "see qwen_factory_kit.recipe.memory.Setup for the settings") from None
    est = _estimate(shape, s)
    if method == "qlora":
        est.measured_note = qlora_note()
    return est


def qlora_note() -> str:
    """What the measured 1.7B QLoRA runs showed: the default allocator's cache, not the live tensors
    (the parts hold those), made their peak; with expandable segments the model holds."""
    ref = _estimate(SHAPES["1.7b"], Setup("qlora", 8, 2048, KFTT_LONGEST_BATCH, optim="paged_adamw_8bit"))
    m = QLORA_MEASURED
    return (f"the 1.7B QLoRA translation recipe (batch 8, KFTT lines of up to 279 tokens) peaked at {m['default']} GB "
            f"on an H100 with PyTorch's default allocator while its live tensors peaked at {m['allocated']} GB "
            f"(these parts: {ref.allocated_gb:.1f} GB): the caching allocator kept blocks for batches of many "
            f"different lengths, more than the length growth here counts, so with the default allocator the peak "
            f"above is a lower bound for such data; with expandable segments, as qfk train runs it, the run peaked at "
            f"{m['expandable']} GB (these parts: {ref.expandable_gb:.1f} GB)")


@dataclass(frozen=True)
class PaddedLen:
    peak: int       # the longest batch: the memory peak sees this one
    typical: int    # the expected longest row of a random batch: most steps see this


def padded_len(lengths: list[int], batch: int, cutoff: int | None = None) -> PaddedLen:
    """The padded batch length from the rows' token lengths (rows are padded to the batch's longest).

    ``typical`` is the expected maximum of ``batch`` rows drawn at random from ``lengths``."""
    if not lengths or batch < 1:
        raise QfkError("padded_len needs token lengths and a positive batch", "run qfk stats on the dataset")
    cap = cutoff or max(lengths)
    ls = sorted(min(n, cap) for n in lengths)
    k = len(ls)
    typical = sum(v * ((j + 1) ** batch - j ** batch) / k ** batch for j, v in enumerate(ls))

    def pad(n: float) -> int:
        return PAD_MULTIPLE * math.ceil(n / PAD_MULTIPLE)
    return PaddedLen(pad(ls[-1]), pad(typical))


@dataclass
class FitResult:
    fits: bool
    gpu_gb: float
    batch: int
    accum: int
    liger: bool
    gradient_checkpointing: bool
    estimate: Estimate
    reasons: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    def overrides(self) -> dict:
        """The LLaMA-Factory keys to write into the recipe."""
        keys = {"per_device_train_batch_size": self.batch, "gradient_accumulation_steps": self.accum}
        if self.liger:
            keys["enable_liger_kernel"] = True
        if not self.gradient_checkpointing:
            keys["disable_gradient_checkpointing"] = True
        return keys


def fit(shape: ModelShape, gpu_gb: float, *, method: str, batch: int, accum: int, cutoff: int,
        liger_available: bool, margin: float = 0.10, **settings) -> FitResult:
    """Settings that fit ``gpu_gb`` with ``margin`` spare, changing as little as needed, in this order:
    liger on (if available), gradient checkpointing on, then half the per-device batch and twice the
    accumulation (the effective batch stays ``batch x accum``). ``settings``: as :func:`estimate`.

    Compares ``needed_gb``: with expandable segments (``qfk train``, the default) the live tensors and
    a small slack; with ``expandable_segments=False`` (``llamafactory-cli`` as is) the default
    allocator's peak, length growth included (a GPU that runs short makes it free its cache and
    retry, but blocks split around live tensors stay)."""
    limit = gpu_gb * (1 - margin)
    settings.setdefault("liger", False)
    settings.setdefault("gradient_checkpointing", True)
    est = estimate(shape, method=method, batch=batch, cutoff=cutoff, **settings)
    reasons = [(f"as given: needs about {est.needed_gb:.1f} GB {est.allocator}; the limit is {limit:.1f} GB "
                f"({gpu_gb:g} GB less {margin:.0%})")]
    for step in (_liger_step, _checkpoint_step, _batch_step):
        est, batch, accum, why = step(shape, est, batch, accum, limit, liger_available)
        reasons += why
    s = est.setup
    result = FitResult(est.needed_gb <= limit, gpu_gb, batch, accum, s.liger, s.gradient_checkpointing, est, reasons)
    if result.fits:
        result.reasons.append(f"fits: about {est.needed_gb:.1f} GB of {gpu_gb:g} GB "
                              f"(batch {batch} x accumulation {accum})")
    else:
        result.reasons.append(f"cannot fit: even batch {batch} x accumulation {accum} needs about "
                              f"{est.needed_gb:.1f} GB")
        result.suggestions = _suggestions(shape, est, limit, margin)
    return result


def _redo(shape: ModelShape, est: Estimate, **changes) -> Estimate:
    out = _estimate(shape, replace(est.setup, **changes))
    out.measured_note = est.measured_note
    return out


def _liger_step(shape, est, batch, accum, limit, available):
    if est.needed_gb <= limit or est.setup.liger or not available:
        return est, batch, accum, []
    new = _redo(shape, est, liger=True)
    if new.needed_gb >= est.needed_gb:
        return est, batch, accum, []
    how = ("the logits are never materialised" if new.setup.fused_loss
           else "smaller layer activations (preference losses keep their logits)")
    return new, batch, accum, [(f"liger kernel on (enable_liger_kernel: true): {est.needed_gb:.1f} -> "
                                f"{new.needed_gb:.1f} GB, {how}")]


def _checkpoint_step(shape, est, batch, accum, limit, available):
    if est.needed_gb <= limit or est.setup.gradient_checkpointing:
        return est, batch, accum, []
    new = _redo(shape, est, gradient_checkpointing=True)
    return new, batch, accum, [(f"gradient checkpointing on: {est.needed_gb:.1f} -> {new.needed_gb:.1f} GB "
                                "(about a third more compute)")]


def _batch_step(shape, est, batch, accum, limit, available):
    why = []
    while est.needed_gb > limit and batch > 1:
        new_batch = batch // 2
        new_accum = accum * batch // new_batch if (accum * batch) % new_batch == 0 else accum * 2
        new = _redo(shape, est, batch=new_batch)
        why.append(f"per-device batch {batch} -> {new_batch}, accumulation {accum} -> {new_accum}: "
                   f"{est.needed_gb:.1f} -> {new.needed_gb:.1f} GB (effective batch {new_batch * new_accum})")
        est, batch, accum = new, new_batch, new_accum
    return est, batch, accum, why


def _suggestions(shape: ModelShape, est: Estimate, limit: float, margin: float) -> list[str]:
    """What would fit when the smallest setting does not."""
    s, out = est.setup, []
    if s.method in ("lora", "full"):
        q = _estimate(shape, replace(s, method="qlora", optim="paged_adamw_8bit", deepspeed=None, offload=False))
        out.append(f"QLoRA (--method qlora): about {q.needed_gb:.1f} GB"
                   + ("" if s.expandable_segments else " (a lower bound with the default allocator: see qlora_note())"))
    for cutoff in (1024, 512):
        if cutoff < s.seq:
            c = _estimate(shape, replace(s, cutoff=cutoff, seq_len=None))
            out.append(f"a smaller cutoff_len {cutoff}: about {c.needed_gb:.1f} GB"
                       + (" (fits)" if c.needed_gb <= limit else ""))
    if s.method == "full":
        z = _estimate(shape, replace(s, deepspeed=3, offload=True, n_gpus=max(1, s.n_gpus)))
        out.append(f"DeepSpeed ZeRO-3 with CPU offload (--deepspeed z3_offload): about {z.needed_gb:.1f} GB per GPU"
                   " and much CPU memory")
    out.append(f"a bigger GPU: at least {math.ceil(est.needed_gb / (1 - margin))} GB")
    return out
