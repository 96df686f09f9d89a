"""After training: qfk merge (export recipe, generation_config, qfk_serving.json), qfk chat (think
split while streaming, history, input) and qfk translate (the Moses converter's exact prompt).
The slow tests train the tiny model for 2 steps on the demo's Moses data (non-thinking) and merge,
chat and translate with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.post.chat import ChatSession, Piece, command_of, read_message
from qwen_factory_kit.post.merge import install, plan_merge, write_generation_config
from qwen_factory_kit.post.served import ServedModel, resolve_served, serving_thinking
from qwen_factory_kit.post.translate import prompt_options, translation_messages
from qwen_factory_kit.think import split_partial

CPU = ["use_cpu=true", "bf16=false", "logging_steps=1", "preprocessing_num_workers=1", "dataloader_num_workers=0",
       "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "cutoff_len=256"]


# --------------------------------------------------------------------------------------------
# translate: the converter's prompt, byte for byte
# --------------------------------------------------------------------------------------------
def _corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "corpus.en").write_text("Good morning.\nThank you.\n", encoding="utf-8")
    (folder / "corpus.zh_tw").write_text("早安。\n謝謝你。\n", encoding="utf-8")
    return folder


def test_translate_prompt_is_the_moses_converters(tmp_path):
    res = convert("moses", str(_corpus(tmp_path / "c")), output=str(tmp_path / "o.jsonl"))
    row = next(r for r in read_jsonl(res.output) if r["instruction"] == "Translate <zh_TW> to <en>.")
    system, messages = translation_messages("zh_TW", "en", row["input"])
    assert system == row["system"]
    assert messages == [{"role": "user", "content": row["instruction"] + "\n" + row["input"]}]  # LLaMA-Factory's Alpaca rule
    assert messages[0]["content"].encode() == "Translate <zh_TW> to <en>.\n早安。".encode()


def test_translate_prompt_follows_a_custom_conversion(tmp_path):
    res = convert("moses", str(_corpus(tmp_path / "c")), output=str(tmp_path / "o.jsonl"),
                  instruction_template="{src_name} -> {tgt_name}:", system="")
    row = next(r for r in read_jsonl(res.output) if r["input"] == "Thank you.")
    served = ServedModel("merged", "m", "m", None, "qwen3", False,
                         {"instruction_template": "{src_name} -> {tgt_name}:", "system": ""})
    system, messages = translation_messages("en", "zh_TW", "Thank you.", prompt_options(served))
    assert "system" not in row and system is None
    assert messages[0]["content"] == row["instruction"] + "\n" + row["input"] == "English -> Traditional Chinese:\nThank you."


# --------------------------------------------------------------------------------------------
# chat: the think split while streaming, history, input
# --------------------------------------------------------------------------------------------
def test_split_partial_grows_by_prefixes():
    text = "<think>\nstep one\n</think>\n\nThe answer."
    shown = [split_partial(text[:i]) for i in range(len(text) + 1)]
    for (t0, a0), (t1, a1) in zip(shown, shown[1:]):
        assert (t1 or "").startswith(t0 or "") and a1.startswith(a0)
    assert shown[-1] == ("step one\n", "The answer.")
    assert split_partial("<think>\nabc</thi") == ("abc", "") and split_partial("<th") == (None, "")
    assert split_partial("plain answer") == (None, "plain answer")


class FakeChatModel:
    """LLaMA-Factory's ChatModel.stream_chat, replayed from chunks; records what it was asked."""

    def __init__(self, chunks):
        self.chunks, self.calls = chunks, []

    def stream_chat(self, messages, system=None, **kw):
        self.calls.append((list(messages), system))
        yield from self.chunks


def test_chat_session_streams_reasoning_apart_and_keeps_answers_only():
    served = ServedModel("merged", "m", "m", None, "qwen3", True)
    model = FakeChatModel(["<th", "ink>\nstep", " one\n</th", "ink>\n\nAns", "wer."])
    session = ChatSession(served, model=model)
    pieces = list(session.stream("hi"))
    assert "".join(p.text for p in pieces if p.kind == "think") == "step one\n"
    assert "".join(p.text for p in pieces if p.kind == "answer") == "Answer."
    assert pieces[0] == Piece("think", "step")
    assert session.last.as_dict() == {"think": "step one", "answer": "Answer."}
    assert session.generation == {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20}
    session.ask("and?")
    assert model.calls[1][0] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Answer."},
                                 {"role": "user", "content": "and?"}]
    session.reset()
    assert session.history == []


def test_chat_prints_reasoning_on_stderr_and_the_answer_on_stdout(capsys):
    from qwen_factory_kit.cli.serve import _answer

    served = ServedModel("merged", "m", "m", None, "qwen3", True)
    session = ChatSession(served, model=FakeChatModel(["<think>\nstep one\n</think>\n\n", "The ", "answer."]))
    _answer(session, "hi", hide_think=False)
    out, err = capsys.readouterr()
    assert out == "The answer.\n" and "step one" in err
    session.reset()
    _answer(session, "hi", hide_think=True)
    out, err = capsys.readouterr()
    assert out == "The answer.\n" and "step one" not in err and "(thinking ...)" in err


def test_no_think_sampling_and_nothink_templates():
    served = ServedModel("run", "r", "base", "r", "qwen3", True)
    assert ChatSession(served, think=False, model=object()).generation["temperature"] == 0.7
    nothink = ServedModel("model", "x", "x", None, "qwen3_nothink", False)
    from qwen_factory_kit.errors import QfkError
    with pytest.raises(QfkError, match="never thinks"):
        ChatSession(nothink, think=True, model=object())
    assert (serving_thinking("qwen3", None), serving_thinking("qwen3", False), serving_thinking("qwen3_nothink", True)) \
        == (True, False, False)


def test_read_message_continues_lines_and_commands():
    lines = iter(["first \\", "second", "/RESET ", "/quit"])
    prompts = []

    def read(prompt):
        prompts.append(prompt)
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert read_message(read) == "first \nsecond" and prompts == ["you> ", "...  "]
    assert command_of(read_message(read)) == "/reset" and command_of(read_message(read)) == "/exit"
    assert read_message(read) is None and command_of("/think") is None


# --------------------------------------------------------------------------------------------
# merge without training: run records made by hand
# --------------------------------------------------------------------------------------------
def _fake_run(tmp_path: Path, **args) -> Path:
    base = tmp_path / "base-model"
    base.mkdir(exist_ok=True)
    (base / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 64}))
    run = tmp_path / "saves" / "run"
    run.mkdir(parents=True)
    record = {"qfk_run": 1, "status": "ok", "cwd": str(tmp_path),
              "args": {"model_name_or_path": "base-model", "stage": "sft", "finetuning_type": "lora", "template": "qwen3",
                       "enable_thinking": True, "output_dir": "saves/run", **args}}
    (run / "qfk_run.json").write_text(json.dumps(record))
    (run / "adapter_config.json").write_text("{}")
    return run


def test_qlora_run_merges_onto_the_unquantized_base(tmp_path, monkeypatch):
    run = _fake_run(tmp_path, quantization_bit=4, quantization_method="bnb")
    monkeypatch.chdir(tmp_path / "saves")  # the run's relative model path is found from its own cwd
    plan = plan_merge(run)
    args = plan.recipe.args
    assert not {k for k in args if k.startswith("quantization")}
    assert args["model_name_or_path"] == str((tmp_path / "base-model").resolve())
    assert args["adapter_name_or_path"] == str(run.resolve()) and args["finetuning_type"] == "lora"
    assert args["export_dir"] == str((tmp_path / "saves" / "run-merged").resolve())
    assert (args["template"], args["enable_thinking"]) == ("qwen3", True)
    assert "unquantized" in plan.recipe.comments["model_name_or_path"]
    assert plan.thinking and plan.sampling == {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20}
    assert any(str(run / "qfk_run.json") in line for line in plan.recipe.header)  # not the temporary file


def test_full_fine_tune_has_nothing_to_merge(tmp_path, qfk):
    run = _fake_run(tmp_path, finetuning_type="full")
    code, _, err = qfk("merge", run)
    assert code == 2 and "nothing to merge" in err and f"the run's output_dir itself: {run}" in err


def test_merge_refuses_a_used_folder_and_an_unfinished_run(tmp_path, qfk):
    run = _fake_run(tmp_path)
    used = tmp_path / "models" / "m"
    used.mkdir(parents=True)
    (used / "keep.txt").write_text("mine")
    code, _, err = qfk("merge", run, "-o", used)
    assert code == 2 and "is not empty" in err and "--force" in err
    code, _, err = qfk("merge", run, "-o", run, "--force")
    assert code == 2 and "the run folder itself" in err
    (run / "adapter_config.json").unlink()
    code, _, err = qfk("merge", run)
    assert code == 2 and "holds no LoRA adapter" in err and "checkpoint-N" in err
    code, _, err = qfk("merge", tmp_path / "base-model")
    assert code == 2 and "no qfk_run.json" in err


def test_force_install_replaces_model_files_and_drops_stale_shards(tmp_path):
    out, stage = tmp_path / "out", tmp_path / "stage"
    out.mkdir()
    stage.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                 "config.json", "notes.txt"):
        (out / name).write_text("old")
    for name in ("model.safetensors", "config.json", "qfk_serving.json"):
        (stage / name).write_text("new")
    install(stage, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt", "qfk_serving.json"]
    assert (out / "config.json").read_text() == "new" and not stage.exists()


def test_generation_config_gets_sampling_and_keeps_ids(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643], "pad_token_id": 151643,
                                                                 "temperature": 0.6, "top_p": 0.95, "top_k": 20}))
    write_generation_config(tmp_path, {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20})
    assert json.loads((tmp_path / "generation_config.json").read_text()) == {
        "eos_token_id": [151645, 151643], "pad_token_id": 151643, "do_sample": True, "temperature": 0.7, "top_p": 0.8,
        "top_k": 20}


def test_a_bare_adapter_folder_is_explained(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    from qwen_factory_kit.errors import QfkError
    with pytest.raises(QfkError, match="LoRA adapter without a qfk run record"):
        resolve_served(str(tmp_path))


# --------------------------------------------------------------------------------------------
# the real thing: train, merge, load, chat, translate (tiny model, CPU)
# --------------------------------------------------------------------------------------------
def _qfk_process(*args, cwd, env) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "qwen_factory_kit", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return p


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A 2-step LoRA run of the tiny model on the demo's Moses data (direct: qwen3, enable_thinking false)."""
    from qwen_factory_kit.demo import run_demo
    from qwen_factory_kit.tiny import build_tiny_model

    work = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "QFK_DATA_DIR": str(work / "data")}
    env.pop("LLAMAFACTORY_VERBOSITY", None)
    run_demo(work)
    _qfk_process("recipe", "new", "--model", build_tiny_model(), "--method", "lora", "--dataset", "demo_translation",
                 "-o", "tr.yaml", *CPU, "max_steps=2", "save_steps=2", "output_dir=saves/tr", cwd=work, env=env)
    _qfk_process("train", "tr.yaml", cwd=work, env=env)
    return work / "saves" / "tr"


@pytest.mark.slow
def test_merge_chat_translate(trained_run, tmp_path, qfk):
    merged = tmp_path / "merged"
    code, _, err = qfk("merge", trained_run, "-o", merged)
    assert code == 0, err
    assert "llamafactory-cli export ...\n" in err and "llamafactory-cli export: done in" in err, err  # progress
    assert "llamafactory-cli export: starting LLaMA-Factory" in err, err
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(merged)).config.model_type == "qwen3"
    gen = json.loads((merged / "generation_config.json").read_text())
    assert {k: gen[k] for k in ("do_sample", "temperature", "top_p", "top_k")} == \
        {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20}  # non-thinking: the run trained direct data
    assert gen["eos_token_id"] == 151645 and gen["pad_token_id"] == 151643
    serving = json.loads((merged / "qfk_serving.json").read_text())
    assert (serving["template"], serving["enable_thinking"], serving["adapter"]) == ("qwen3", False, str(trained_run.resolve()))
    assert serving["source_run"] == str(trained_run.resolve()) and serving["kit_version"]
    assert serving["translation_prompt"]["instruction_template"] == "Translate {src_tag} to {tgt_tag}."
    assert (merged / "qfk_merge.yaml").is_file() and "Modelfile" in err and (merged / "Modelfile").is_file()
    # the trained mode is the template's default: a client that passes nothing gets the empty think block
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(merged))
    hi = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(hi, add_generation_prompt=True, tokenize=False).endswith("<think>\n\n</think>\n\n")
    assert tok.apply_chat_template(hi, add_generation_prompt=True, tokenize=False, enable_thinking=True).endswith("assistant\n")
    assert serving["chat_template"]["changed"] and "enable_thinking defaults to false" in serving["chat_template"]["why"]
    assert "--reasoning-parser qwen3" in serving["vllm_command"] and str(merged) in serving["vllm_command"]
    modelfile = (merged / "Modelfile").read_text()
    assert "PARAMETER temperature 0.7" in modelfile and "{{ if not (and $.IsThinkSet $.Think) -}}" in modelfile
    assert f"PARAMETER num_predict {serving['reply_budget']['max_new_tokens']}" in modelfile
    assert "chat template: " in err and "changed: trained without thinking" in err and "vLLM: vllm serve" in err
    code, _, err = qfk("merge", trained_run, "-o", merged)
    assert code == 2 and "is not empty" in err

    budget = serving["reply_budget"]  # measured on the run's training rows (the demo's translations)
    assert budget["source"].endswith("training rows (demo_translation)") and 64 <= budget["max_new_tokens"] < 1024
    code, out, err = qfk("chat", trained_run, "-m", "hi")  # bounded by the training rows, no length reminder
    assert code == 0, err
    assert f"replies: max_new_tokens {budget['max_new_tokens']} (1.5x the longest reference" in err
    assert "maximum length" not in err and "loading " in err and ": done in" in err
    code, out, err = qfk("chat", merged, "-m", "hi", "--json", "--max-new-tokens", "8")
    assert code == 0, err
    reply = json.loads(out)
    assert set(reply) == {"think", "answer"} and isinstance(reply["answer"], str)
    code, out, err = qfk("chat", trained_run, "-m", "hi", "--think", "--hide-think", "--max-new-tokens", "8")
    assert code == 0 and "+ adapter" in err, err
    code, out, err = qfk("translate", merged, "--src", "en", "--tgt", "ja", "Hello", "--max-new-tokens", "8")
    assert code == 0 and out.endswith("\n"), (out, err)
    assert "translations: max_new_tokens 8 (--max-new-tokens)" in err
