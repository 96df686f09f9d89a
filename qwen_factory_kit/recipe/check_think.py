"""The ``template`` and ``think`` checks of ``qfk recipe check``: does the recipe train the model the
Qwen3 way, and what its datasets hold (QWEN3-THINK.md)?

* ``template``: the template fits the model family (Instruct-2507 -> qwen3_nothink, other Qwen3 -> qwen3);
* ``think``: ``template``/``enable_thinking`` train what the data holds (reasoning, direct, mixed), with the
  overrides that would (for a 2507 model that cannot, its hybrid sibling's).

Each is a function of the recipe's arguments, the datasets' facts and the model (:func:`.check.check_recipe`
gathers them); each fix is a ``key=value`` override that makes the finding pass.
"""

from __future__ import annotations

from typing import Any

from ..errors import QfkError
from ..findings import Finding
from . import presets
from .document import scalar


def check_template(args: dict, model: presets.ModelInfo | None) -> list[Finding]:
    template = args.get("template")
    if model is None:
        return [Finding("template", "warn", None, f"model {args.get('model_name_or_path')!r} is not a known Qwen3 model or folder: "
                                                  "template not checked",
                        "use a Qwen3 name (qfk recipe new --list-models) or a local folder")]
    want = "qwen3_nothink" if model.kind == "instruct-2507" else "qwen3"
    if not template:
        return [Finding("template", "error", None, "no template: LLaMA-Factory would fall back to a generic one",
                        f"template={want}")]
    if template not in ("qwen3", "qwen3_nothink"):
        return [Finding("template", "error", None, f"template {template} is not a Qwen3 template ({model.name} uses {want})",
                        f"template={want}")]
    if model.kind == "instruct-2507" and template != "qwen3_nothink":
        return [Finding("template", "error", None, f"{model.name} is non-thinking only; template qwen3 adds think blocks it never saw",
                        "template=qwen3_nothink")]
    if model.kind != "instruct-2507" and template == "qwen3_nothink":
        return [Finding("template", "warn", None, f"qwen3_nothink on {model.name} ({model.kind}) trains without the think "
                                                  "switch: the model may lose thinking mode",
                        "template=qwen3 with enable_thinking=false trains direct answers the Qwen3 way")]
    return [Finding("template", "ok", None, f"{template} fits {model.name} ({model.kind})")]


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
        out += _think_nothink(facts, mode, desc, model)
    if model is not None and model.kind in ("instruct-2507", "thinking-2507"):
        try:
            presets.think_settings(mode, model)
        except QfkError as exc:
            fix = _think_fix(mode, model)
            out.append(Finding("think", "error", None, exc.message, f"{fix}, or: {exc.hint}" if fix else exc.hint or ""))
    if not out:
        out.append(Finding("think", "ok", None,
                           f"template {template}, enable_thinking {scalar(enable)} trains what the data holds ({desc})"))
    return out


def _think_qwen3(mode: str, enable: Any, desc: str) -> list[Finding]:
    if mode in ("reasoning", "mixed") and enable is False:
        return [Finding("think", "error", None, f"enable_thinking: false strips every think block of the data ({desc}): "
                                                "the reasoning is never trained",
                        f"enable_thinking={'true' if mode == 'reasoning' else 'null'} ({mode} data)")]
    if mode == "direct" and enable is True:
        return [Finding("think", "warn", None, f"the data has no reasoning ({desc}) but enable_thinking: true trains an empty "
                                               "<think> block on every answer: the model learns to skip thinking",
                        "enable_thinking=false (empty block in the prompt, answers trained)")]
    if mode == "mixed" and enable is True:
        return [Finding("think", "warn", None, f"mixed data ({desc}) with enable_thinking: true trains empty think blocks on "
                                               "the rows without reasoning", "enable_thinking=null")]
    if mode == "reasoning" and enable is None:
        return [Finding("think", "info", None, "enable_thinking: null on all-reasoning data trains the same as true", "")]
    return []


def _think_nothink(facts: list, mode: str, desc: str, model: presets.ModelInfo | None) -> list[Finding]:
    if mode != "direct":
        fix = _think_fix(mode, model)
        return [Finding("think", "error", None, f"qwen3_nothink trains think blocks as plain text ({desc})",
                        f"{fix} ({mode} data)" if fix else "a hybrid or Thinking model with template qwen3 for reasoning data")]
    explicit = [f.name for f in facts if f.empty_style in ("explicit", "mixed") and f.mode != "reasoning"]
    if explicit:
        convert = "convert again with --empty-think omit (qfk convert ... --empty-think omit)"
        fix = convert if model is not None and model.kind == "instruct-2507" else f"template=qwen3 enable_thinking=false, or {convert}"
        return [Finding("think", "error", None, f"{', '.join(explicit)} write explicit empty <think> blocks, which qwen3_nothink "
                                                "trains as literal text", fix)]
    return []


def _think_fix(mode: str, model: presets.ModelInfo | None) -> str:
    """The overrides that train ``mode`` data the Qwen3 way (QWEN3-THINK.md): ``template``/``enable_thinking``
    for ``model``, or for its hybrid sibling (``model_name_or_path`` too) when a 2507 model cannot train it."""
    from ..think import training_settings

    if mode == "none":
        return ""
    prefix = ""
    if model is None:
        template, enable = training_settings(mode, instruct_2507=False)
    else:
        try:
            template, enable, _ = presets.think_settings(mode, model)
        except QfkError:
            sibling = _hybrid_sibling(model)
            if sibling is None:
                return ""
            template, enable, _ = presets.think_settings(mode, sibling)
            prefix = f"model_name_or_path={sibling.path} "
    return prefix + f"template={template}" + (f" enable_thinking={scalar(enable)}" if template == "qwen3" else "")


def _hybrid_sibling(model: presets.ModelInfo) -> presets.ModelInfo | None:
    """Qwen3-4B for Qwen3-4B-Instruct-2507 / -Thinking-2507 (hub names only)."""
    if model.local:
        return None
    try:
        sibling = presets.resolve_model(model.name.replace("-Instruct-2507", "").replace("-Thinking-2507", ""))
    except QfkError:
        return None
    return sibling if sibling.kind == "hybrid" else None
