"""What a merged model carries for other servers: the chat template defaulting to the trained think
mode (real Qwen3 tokenizer, transformers' apply_chat_template, LLaMA-Factory's template fixing),
the thinking-aware Ollama Modelfile, the vLLM command."""

from __future__ import annotations

import json
import shutil

import pytest

from qwen_factory_kit.post.serving_files import (
    JINJA_FILE,
    NO_THINK_DEFAULT,
    TOKENIZER_CONFIG,
    default_no_think,
    modelfile,
    set_template_default,
    vllm_command,
)
from qwen_factory_kit.recipe.presets import sampling
from qwen_factory_kit.think import EMPTY_BLOCK

lfb = pytest.importorskip("qwen_factory_kit.lfbridge")
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def tokenizer_copy(tmp_path):
    """The genuine Qwen3 tokenizer, saved into a folder as an export saves it."""
    folder = tmp_path / "merged"
    lfb.load_tokenizer().save_pretrained(str(folder))
    return folder


def prompt(folder, **kw) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder)).apply_chat_template(HI, add_generation_prompt=True, tokenize=False, **kw)


def test_a_no_think_model_defaults_to_the_empty_block_and_still_thinks_when_asked(tokenizer_copy):
    assert not prompt(tokenizer_copy).endswith(EMPTY_BLOCK)  # Qwen's template: a thinking turn by default
    done = set_template_default(tokenizer_copy, False)
    assert done["changed"] and done["file"] in (JINJA_FILE, TOKENIZER_CONFIG)
    assert prompt(tokenizer_copy).endswith("<|im_start|>assistant\n" + EMPTY_BLOCK)
    assert prompt(tokenizer_copy, enable_thinking=False).endswith("<|im_start|>assistant\n" + EMPTY_BLOCK)  # once
    assert prompt(tokenizer_copy, enable_thinking=True).endswith("<|im_start|>assistant\n")
    history = [*HI, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(str(tokenizer_copy)).apply_chat_template(history, add_generation_prompt=True,
                                                                                  tokenize=False)
    assert text.count("<|im_start|>") == 4 and text.endswith(EMPTY_BLOCK)
    again = set_template_default(tokenizer_copy, False)  # idempotent
    assert not again["changed"] and prompt(tokenizer_copy).count(EMPTY_BLOCK) == 1


@pytest.mark.parametrize("thinking", [True, None])
def test_thinking_and_mixed_models_keep_qwens_template(tokenizer_copy, thinking):
    before = {p.name: p.read_bytes() for p in tokenizer_copy.iterdir()}
    done = set_template_default(tokenizer_copy, thinking)
    assert not done["changed"] and "thinking model" in done["why"]
    assert {p.name: p.read_bytes() for p in tokenizer_copy.iterdir()} == before


def test_a_template_in_tokenizer_config_and_a_foreign_template(tmp_path, tokenizer_copy):
    jinja = tokenizer_copy / JINJA_FILE
    if jinja.is_file():  # the older layout: the template inside tokenizer_config.json
        config = json.loads((tokenizer_copy / TOKENIZER_CONFIG).read_text())
        config["chat_template"] = jinja.read_text()
        (tokenizer_copy / TOKENIZER_CONFIG).write_text(json.dumps(config))
        jinja.unlink()
    assert set_template_default(tokenizer_copy, False)["file"] == TOKENIZER_CONFIG
    assert prompt(tokenizer_copy).endswith(EMPTY_BLOCK)
    assert default_no_think("{% for m in messages %}{{ m.content }}{% endfor %}") is None  # no think switch: kept
    assert set_template_default(tmp_path, False) == {"file": None, "changed": False, "why": "the folder has no tokenizer chat template"}


def test_llamafactory_keeps_the_default_when_it_loads_the_merged_tokenizer(tokenizer_copy):
    """LLaMA-Factory's qwen3 template fixes a tokenizer without replacing its jinja template, and its
    own encoding (the chat engine's) with the serving settings ends with the same empty block."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from transformers import AutoTokenizer

    set_template_default(tokenizer_copy, False)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_copy))
    from llamafactory.hparams import DataArguments

    template = get_template_and_fix_tokenizer(tok, DataArguments(template="qwen3", enable_thinking=False))
    assert tok.chat_template.startswith(NO_THINK_DEFAULT)
    ids, _ = template.encode_oneturn(tok, [*HI, {"role": "assistant", "content": ""}])
    assert tok.decode(ids).endswith("<|im_start|>assistant\n" + EMPTY_BLOCK)


def test_modelfile_handles_the_think_switch_sampling_and_stops():
    direct = modelfile(False, sampling(False), num_predict=256)
    thinking = modelfile(True, sampling(True))
    for text in (direct, thinking):
        assert text.count('TEMPLATE """') == 1 and text.rstrip().endswith('PARAMETER stop "<|im_end|>"')
        assert "FROM ." in text and 'PARAMETER stop "<|im_start|>"' in text and "PARAMETER repeat_penalty 1" in text
        assert "{{ .Thinking }}" in text and "<think>\n{{ .Thinking }}\n</think>" in text and EMPTY_BLOCK in text
        assert "<|im_start|>assistant\n" in text and "{{ .Content }}<|im_end|>" in text
        assert text.count("{{") == text.count("}}")
    assert "{{ if not (and $.IsThinkSet $.Think) -}}" in direct  # no think block unless think is set true
    assert "{{ if and $.IsThinkSet (not $.Think) -}}" in thinking  # Ollama's qwen3: the empty block when think=false
    assert "PARAMETER temperature 0.7\nPARAMETER top_p 0.8\nPARAMETER top_k 20" in direct
    assert "PARAMETER temperature 0.6\nPARAMETER top_p 0.95\nPARAMETER top_k 20" in thinking
    assert "PARAMETER num_predict 256" in direct and "num_predict" not in thinking


def test_vllm_command_serves_the_folder_with_the_reasoning_parser(tmp_path):
    line = vllm_command(tmp_path / "my model")
    assert line.startswith("vllm serve ") and "--reasoning-parser qwen3" in line and "--generation-config auto" in line
    assert f"'{tmp_path / 'my model'}'" in line and "--host 127.0.0.1" in line


def test_set_template_default_on_a_copy_leaves_the_source(tmp_path, tokenizer_copy):
    copy = tmp_path / "copy"
    shutil.copytree(tokenizer_copy, copy)
    set_template_default(copy, False)
    assert not prompt(tokenizer_copy).endswith(EMPTY_BLOCK) and prompt(copy).endswith(EMPTY_BLOCK)
