"""The files a merged model carries so other servers run it in the think mode it was trained in.

* :func:`set_template_default`: the merged tokenizer's chat template defaults to the trained mode.
  Qwen3's template opens a thinking turn unless the client passes ``enable_thinking=False``; a
  model trained without thinking gets one line in front of it that sets ``enable_thinking`` to
  false when the client passes nothing, so the generation prompt ends with the empty think block
  the model was trained to see. A client's explicit value still wins. A thinking (or mixed) model's
  template is left as Qwen wrote it.
* :func:`modelfile`: an Ollama ``Modelfile`` whose TEMPLATE handles Qwen3's thinking as Ollama's own
  qwen3 template does (the think block when thinking is on and kept in the history's last turn;
  the empty block when ``think`` is false, and always for a model trained without thinking), with
  Qwen3's sampling for the model's mode and the ChatML stop tokens as PARAMETERs (LLaMA-Factory's
  export writes plain ChatML with neither).
* :func:`vllm_command`: the ``vllm serve`` line for the folder: Qwen3's reasoning parser (the
  thinking apart from the answer, as ``reasoning_content``) and the folder's generation config.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..think import EMPTY_BLOCK, THINK_CLOSE, THINK_OPEN

#: the line put in front of a no-think model's chat template (recognised to keep it idempotent)
NO_THINK_DEFAULT = ("{#- qfk: trained without thinking: no thinking unless the client asks -#}\n"
                    "{%- if enable_thinking is not defined %}{%- set enable_thinking = false %}{%- endif %}\n")
#: what Qwen3's template tests before it writes the empty think block
QWEN3_SWITCH = "enable_thinking is defined and enable_thinking is false"
JINJA_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"
#: ChatML's stop tokens
STOPS = ("<|im_start|>", "<|im_end|>")


def default_no_think(template: str) -> str | None:
    """``template`` defaulting to ``enable_thinking=false``; None when it is not Qwen3's (it has no
    think switch) or already defaults so."""
    if NO_THINK_DEFAULT in template or QWEN3_SWITCH not in template:
        return None
    return NO_THINK_DEFAULT + template


def set_template_default(folder: Path, thinking: bool | None) -> dict:
    """Make the chat template of the tokenizer in ``folder`` default to the trained mode; returns
    what was done (``file``, ``changed``, ``why``) for ``qfk_serving.json``."""
    if thinking is not False:
        return {"file": None, "changed": False,
                "why": "a thinking model: Qwen's chat template, which thinks unless enable_thinking=False, is kept"}
    jinja, config = folder / JINJA_FILE, folder / TOKENIZER_CONFIG
    if jinja.is_file():
        new = default_no_think(jinja.read_text(encoding="utf-8"))
        if new is not None:
            jinja.write_text(new, encoding="utf-8")
        return _done(JINJA_FILE, new is not None)
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        template = data.get("chat_template")
        new = default_no_think(template) if isinstance(template, str) else None
        if new is not None:
            data["chat_template"] = new
            config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return _done(TOKENIZER_CONFIG, new is not None)
    return {"file": None, "changed": False, "why": "the folder has no tokenizer chat template"}


def _done(name: str, changed: bool) -> dict:
    if changed:
        return {"file": name, "changed": True,
                "why": "trained without thinking: enable_thinking defaults to false (the generation prompt ends with the "
                       "empty think block); a client's enable_thinking=True still opens a thinking turn"}
    return {"file": name, "changed": False, "why": "not Qwen3's template (no enable_thinking switch), or already defaulting to false"}


def modelfile(thinking: bool | None, sampling: dict, *, num_predict: int | None = None) -> str:
    """An Ollama Modelfile for the merged folder (``FROM .``) in the model's think mode."""
    # when the generation prompt gets the empty block: think set to false; a no-think model unless think is set to true
    no_think = "and $.IsThinkSet (not $.Think)" if thinking is not False else "not (and $.IsThinkSet $.Think)"
    template = f'''{{{{- if or .System .Tools }}}}<|im_start|>system
{{{{- if .System }}}}
{{{{ .System }}}}
{{{{- end }}}}
{{{{- if .Tools }}}}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{{{- range .Tools }}}}
{{"type": "function", "function": {{{{ .Function }}}}}}
{{{{- end }}}}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>
{{{{- end }}}}<|im_end|>
{{{{ end }}}}
{{{{- range $i, $_ := .Messages }}}}
{{{{- $last := eq (len (slice $.Messages $i)) 1 -}}}}
{{{{- if eq .Role "user" }}}}<|im_start|>user
{{{{ .Content }}}}<|im_end|>
{{{{ else if eq .Role "assistant" }}}}<|im_start|>assistant
{{{{ if and $.IsThinkSet (and $last .Thinking) -}}}}
{THINK_OPEN}
{{{{ .Thinking }}}}
{THINK_CLOSE}

{{{{ end -}}}}
{{{{ if .Content }}}}{{{{ .Content }}}}
{{{{- else if .ToolCalls }}}}<tool_call>
{{{{ range .ToolCalls }}}}{{"name": "{{{{ .Function.Name }}}}", "arguments": {{{{ .Function.Arguments }}}}}}
{{{{ end }}}}</tool_call>
{{{{- end }}}}{{{{ if not $last }}}}<|im_end|>
{{{{ end }}}}
{{{{- else if eq .Role "tool" }}}}<|im_start|>user
<tool_response>
{{{{ .Content }}}}
</tool_response><|im_end|>
{{{{ end }}}}
{{{{- if and (ne .Role "assistant") $last }}}}<|im_start|>assistant
{{{{ if {no_think} -}}}}
{EMPTY_BLOCK}{{{{ end -}}}}
{{{{ end }}}}
{{{{- end }}}}'''
    mode = "thinking" if thinking is not False else "non-thinking (trained without thinking)"
    lines = ["# Ollama Modelfile written by qfk merge: Qwen3's chat format with its think switch, Qwen3's",
             f"# sampling for a {mode} model. Create it with: ollama create NAME -f Modelfile",
             "FROM .", f'TEMPLATE """{template}"""']
    for key in ("temperature", "top_p", "top_k"):
        if key in sampling:
            lines.append(f"PARAMETER {key} {sampling[key]}")
    lines.append("PARAMETER repeat_penalty 1")
    if num_predict:
        lines.append(f"PARAMETER num_predict {num_predict}")
    lines += [f'PARAMETER stop "{stop}"' for stop in STOPS]
    return "\n".join(lines) + "\n"


def vllm_command(folder: Path, name: str | None = None) -> str:
    """``vllm serve`` for the merged folder: the reasoning parser and the folder's sampling."""
    argv = ["vllm", "serve", str(folder), "--served-model-name", name or folder.name, "--reasoning-parser", "qwen3",
            "--generation-config", "auto", "--host", "127.0.0.1"]
    return shlex.join(argv)
