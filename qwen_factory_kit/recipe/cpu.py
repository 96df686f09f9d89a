"""What a recipe needs a GPU for, and the overrides that run it on a CPU.

One decision, :func:`cpu_plan` (the recipe's arguments and whether CUDA is available in; the
``gpu`` finding and the overrides out), used by:

* ``qfk train``: refuses such a recipe on a machine without CUDA before anything is written;
  ``--cpu`` applies the overrides, and the run record keeps them (``cpu_overrides``);
* ``qfk eval``: the same for the run's recipe (the predict recipes get the overrides on a
  machine without CUDA, or with ``--cpu``);
* ``qfk recipe check``: the ``gpu`` error, with the overrides as its fix;
* ``qfk recipe new --device cpu``: a recipe that trains on a CPU as it is.

What stops a run on a machine without CUDA (LLaMA-Factory 0.9.5, transformers 5.6, accelerate
1.11, torch 2.11, tried with the tiny model):

* ``bf16`` / ``bf16_full_eval`` without ``use_cpu``: transformers' "Your setup doesn't support bf16/gpu";
* ``pure_bf16``: LLaMA-Factory's "This device does not support `pure_bf16`";
* ``tf32``: transformers' "--tf32 requires Ampere or a newer GPU arch";
* ``quantization_bit`` with bitsandbytes (``quantization_method: bnb``, the default): needs CUDA;
* an ``optim`` from bitsandbytes (``paged_adamw_8bit``, ``adamw_8bit`` ...);
* ``deepspeed``: DeepSpeed needs GPUs;
* ``use_unsloth``, ``enable_liger_kernel``: CUDA (Triton) kernels; LLaMA-Factory requires the packages;
* ``flash_attn: fa3``: LLaMA-Factory has no FlashAttention-3 path for Qwen3 ("Unknown attention type: fa3").

What runs, but not as meant (a warning; ``--cpu`` changes it too): ``fp16`` / ``fp16_full_eval``
(float16 arithmetic on a CPU), ``bf16`` with ``use_cpu`` (slow or unsupported on many CPUs),
``flash_attn: fa2`` (ignored: "FlashAttention-2 is not installed").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import QfkError
from ..findings import Finding
from .document import scalar

#: what every run on a CPU gets: the device, and full precision
CPU_KEYS = {"use_cpu": True, "bf16": False}
#: worker counts for a small machine: (key, the most a CPU run gets)
CPU_WORKERS = (("preprocessing_num_workers", 1), ("dataloader_num_workers", 0))
#: the environment variable through which ``qfk train --cpu`` tells the run record what it applied
CPU_ENV = "QFK_CPU_OVERRIDES"
#: optimizers that come from bitsandbytes (transformers' ``_BITSANDBYTES_OPTIMIZERS``)
BNB_OPTIMIZERS = ("adamw_bnb_8bit", "adamw_8bit", "paged_adamw_32bit", "paged_adamw_8bit", "ademamix", "ademamix_8bit",
                  "paged_ademamix_32bit", "paged_ademamix_8bit", "lion_32bit", "lion_8bit", "paged_lion_32bit",
                  "paged_lion_8bit", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit")
#: what a bitsandbytes optimizer becomes on a CPU
CPU_OPTIM = "adamw_torch"


@dataclass(frozen=True)
class GpuNeed:
    """One key that needs a GPU: its value, why, the overrides that remove the need, and whether
    the run stops on a CPU (else it runs, but not as meant)."""

    key: str
    value: Any
    why: str
    cpu: dict
    stops: bool = True

    @property
    def text(self) -> str:
        return f"{self.key}: {scalar(self.value)} ({self.why})"


@dataclass(frozen=True)
class CpuPlan:
    """What a recipe needs a GPU for (``needs``), the overrides that run it on a CPU
    (``overrides``: what ``--cpu`` applies) and, on a machine without CUDA, the ``gpu`` finding."""

    needs: tuple[GpuNeed, ...]
    overrides: dict
    findings: list[Finding] = field(default_factory=list)

    @property
    def stops(self) -> list[GpuNeed]:
        """The needs that stop a run on a CPU."""
        return [n for n in self.needs if n.stops]

    @property
    def refused(self) -> bool:
        """On this machine, the recipe would stop: refuse it before anything is written."""
        return any(f.severity == "error" for f in self.findings)

    def items(self) -> list[str]:
        """The overrides as ``key=value`` arguments."""
        return [f"{k}={scalar(v)}" for k, v in self.overrides.items()]

    @property
    def text(self) -> str:
        return " ".join(self.items())


def gpu_needs(args: dict) -> list[GpuNeed]:
    """The keys of ``args`` that need a GPU, in the order of the module docstring."""
    a = args
    out: list[GpuNeed] = []
    for key in ("bf16", "bf16_full_eval"):
        if _true(a.get(key)):
            out.append(GpuNeed(key, a[key], "bf16 on a CPU: slow or unsupported" if _true(a.get("use_cpu"))
                               else "bf16 mixed precision needs a GPU", {key: False}, stops=not _true(a.get("use_cpu"))))
    if _true(a.get("pure_bf16")):
        out.append(GpuNeed("pure_bf16", a["pure_bf16"], "bf16 weights need a GPU", {"pure_bf16": False}))
    if _true(a.get("tf32")):
        out.append(GpuNeed("tf32", a["tf32"], "TF32 is an Ampere GPU's", {"tf32": False}))
    if a.get("quantization_bit") is not None and str(a.get("quantization_method") or "bnb").lower() == "bnb":
        out.append(GpuNeed("quantization_bit", a["quantization_bit"], "bitsandbytes quantization needs a CUDA GPU",
                           {"quantization_bit": None}))
    if str(a.get("optim") or "").lower() in BNB_OPTIMIZERS:
        out.append(GpuNeed("optim", a["optim"], "a bitsandbytes optimizer", {"optim": CPU_OPTIM}))
    if a.get("deepspeed"):
        out.append(GpuNeed("deepspeed", a["deepspeed"], "DeepSpeed needs GPUs", {"deepspeed": None}))
    if _true(a.get("use_unsloth")):
        out.append(GpuNeed("use_unsloth", a["use_unsloth"], "Unsloth's kernels need a CUDA GPU", {"use_unsloth": False}))
    if _true(a.get("enable_liger_kernel")):
        out.append(GpuNeed("enable_liger_kernel", a["enable_liger_kernel"], "Liger's Triton kernels need a GPU",
                           {"enable_liger_kernel": False}))
    attn = str(a.get("flash_attn") or "").lower()
    if attn in ("fa2", "fa3"):
        out.append(GpuNeed("flash_attn", a["flash_attn"], "FlashAttention needs a GPU" if attn == "fa3"
                           else "FlashAttention-2 needs a GPU; LLaMA-Factory ignores it on a CPU", {"flash_attn": "auto"},
                           stops=attn == "fa3"))
    for key in ("fp16", "fp16_full_eval"):
        if _true(a.get(key)):
            out.append(GpuNeed(key, a[key], "float16 arithmetic on a CPU: slower and less precise than float32",
                               {key: False}, stops=False))
    return out


def cpu_plan(args: dict, cuda: bool, *, written: bool = False) -> CpuPlan:
    """What ``args`` needs a GPU for, the overrides that run it on a CPU, and, where the run is on
    a CPU (``cuda`` false, or ``use_cpu: true``), the ``gpu`` finding: an error when the run would
    stop, a warning when it would run not as meant. The overrides are always given (``--cpu``
    applies them on any machine): :data:`CPU_KEYS`, each need's, and :data:`CPU_WORKERS` where
    the recipe asks for more, or always when the kit writes the recipe (``written``: ``qfk eval``'s
    predict recipes, ``qfk recipe new --device cpu``)."""
    needs = tuple(gpu_needs(args))
    overrides = dict(CPU_KEYS)
    for need in needs:
        overrides.update(need.cpu)
    for key, most in CPU_WORKERS:
        value = args.get(key)
        if written or (isinstance(value, int) and not isinstance(value, bool) and value > most):
            overrides[key] = most
    plan = CpuPlan(needs, overrides)
    if needs and (not cuda or _true(args.get("use_cpu"))):
        plan.findings.append(_finding(plan, "this machine has no CUDA GPU" if not cuda else "use_cpu: true runs it on the CPU"))
    return plan


def _finding(plan: CpuPlan, where: str) -> Finding:
    stops = [n for n in plan.needs if n.stops]
    runs = [n for n in plan.needs if not n.stops]
    if stops:
        message = f"{where}, and the recipe needs a GPU: " + "; ".join(n.text for n in stops)
        message += ("; and it sets " + "; ".join(n.text for n in runs)) if runs else ""
    else:
        message = f"{where}: the recipe runs, but not as meant: " + "; ".join(n.text for n in runs)
    return Finding("gpu", "error" if stops else "warn", None, message, fix_text(plan))


def fix_text(plan: CpuPlan) -> str:
    """The ``gpu`` finding's fix: the overrides, what ``null`` means when one removes a key, and the alternative."""
    null = "null: as if the recipe did not set the key; " if None in plan.overrides.values() else ""
    return (f"{plan.text} to run it on this CPU ({null}qfk train/qfk eval --cpu apply them), or run it on a GPU machine "
            "(qfk recipe check --gpu checks it for one)")


def refusal(plan: CpuPlan, what: str, command: str) -> QfkError:
    """The error ``qfk train`` / ``qfk eval`` raise for a recipe that would stop on this CPU:
    ``what`` names the recipe, ``command`` is the command to type again (``--cpu`` is added)."""
    needs = "; ".join(n.text for n in plan.stops)
    note = "; null: as if the recipe did not set the key" if None in plan.overrides.values() else ""
    return QfkError(f"{what} needs a GPU and this machine has no CUDA device: {needs}. Nothing was started or written",
                    f"to run it on this CPU: {command} --cpu (it applies {plan.text}{note}); or run it on a GPU machine")


def _true(value: Any) -> bool:
    """A recipe flag that is set: true, or a YAML/override string that means true."""
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))
