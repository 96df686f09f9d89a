"""The rules of qfk recipe check, each as a plain function of a recipe dict and the facts it is given.

No LLaMA-Factory import, no model, no subprocess: the slow end-to-end runs through the CLI are in
test_recipes.py. Each failure a rule can report is asserted on its finding id, severity and fix.
"""

from __future__ import annotations

import enum
import json
import typing
from pathlib import Path

import pytest

from qwen_factory_kit import lfbridge
from qwen_factory_kit.recipe import check, presets
from qwen_factory_kit.recipe.check import Machine
from qwen_factory_kit.recipe.request import DatasetFacts
from qwen_factory_kit.registry import build_entry

HYBRID = presets.ModelInfo("Qwen3-4B", "Qwen/Qwen3-4B", "4b", "hybrid")
INSTRUCT = presets.ModelInfo("Qwen3-4B-Instruct-2507", "Qwen/Qwen3-4B-Instruct-2507", "4b", "instruct-2507")
THINKING = presets.ModelInfo("Qwen3-4B-Thinking-2507", "Qwen/Qwen3-4B-Thinking-2507", "4b", "thinking-2507")
BARE = Machine(cuda=False)
GPU = Machine(cuda=True, packages=frozenset(check.OPTIONAL_PACKAGES))
NO_BNB = Machine(cuda=True, packages=frozenset({"flash_attn", "deepspeed"}))
NO_FA = Machine(cuda=True, packages=frozenset({"bitsandbytes", "deepspeed"}))


def only(findings, check_id: str, severity: str, text: str = "", *, fix: bool = True):
    """The one finding of ``check_id``; it has ``severity``, ``text`` in its message (with its locator in front:
    ``where: message``) and (unless ``fix=False``) a fix."""
    mine = [f for f in findings if f.id == check_id]
    assert len(mine) == 1, findings
    f = mine[0]
    assert f.severity == severity and text in f.text, f
    assert bool(f.fix) == fix, f
    return f


def facts(name="med", mode="reasoning", empty_style="none", *, ranking=False, rows=10, file: Path | None = Path("x.jsonl"),
          num_samples: int | None = None):
    entry = {"file_name": "x.jsonl", "formatting": "alpaca", "ranking": ranking}
    if num_samples is not None:
        entry["num_samples"] = num_samples
    return DatasetFacts(name, entry, rows, mode, empty_style, "test", file)


# --------------------------------------------------------------------------------------------
# template
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model,template", [(HYBRID, "qwen3"), (THINKING, "qwen3"), (INSTRUCT, "qwen3_nothink")])
def test_template_fits_the_model(model, template):
    only(check.check_template({"template": template}, model), "template", "ok", model.name, fix=False)


@pytest.mark.parametrize("model,template,status,text,want", [
    (None, "qwen3", "warn", "not a known Qwen3 model", "qfk recipe new --list-models"),
    (HYBRID, None, "error", "no template", "template=qwen3"),
    (INSTRUCT, None, "error", "no template", "template=qwen3_nothink"),
    (HYBRID, "llama3", "error", "not a Qwen3 template", "template=qwen3"),
    (INSTRUCT, "qwen3", "error", "non-thinking only", "template=qwen3_nothink"),
    (HYBRID, "qwen3_nothink", "warn", "think switch", "enable_thinking=false"),
])
def test_template_mistakes(model, template, status, text, want):
    f = only(check.check_template({"template": template, "model_name_or_path": "m"}, model), "template", status, text)
    assert want in f.fix


# --------------------------------------------------------------------------------------------
# think
# --------------------------------------------------------------------------------------------
def test_think_needs_dataset_facts():
    assert check.check_think({"template": "qwen3"}, [], HYBRID) == []


@pytest.mark.parametrize("template,enable,modes", [
    ("qwen3", True, ["reasoning"]),
    ("qwen3", False, ["direct"]),
    ("qwen3", None, ["reasoning", "direct"]),
    (None, True, ["reasoning"]),  # no template: qwen3, as LLaMA-Factory's recipe from qfk would say
    ("qwen3_nothink", None, ["direct"]),
])
def test_think_ok_when_settings_train_what_the_data_holds(template, enable, modes):
    fs = [facts(f"d{i}", m, "omit") for i, m in enumerate(modes)]
    only(check.check_think({"template": template, "enable_thinking": enable}, fs, HYBRID), "think", "ok",
         "trains what the data holds", fix=False)


@pytest.mark.parametrize("template,enable,modes,status,text,want", [
    ("qwen3", False, ["reasoning"], "error", "strips every think block", "enable_thinking=true"),
    ("qwen3", False, ["reasoning", "direct"], "error", "strips every think block", "enable_thinking=null"),
    ("qwen3", True, ["direct"], "warn", "learns to skip thinking", "enable_thinking=false"),
    ("qwen3", True, ["reasoning", "direct"], "warn", "empty think blocks", "enable_thinking=null"),
    ("qwen3_nothink", None, ["reasoning"], "error", "as plain text", "template=qwen3"),
])
def test_think_mistakes(template, enable, modes, status, text, want):
    fs = [facts(f"d{i}", m) for i, m in enumerate(modes)]
    f = only(check.check_think({"template": template, "enable_thinking": enable}, fs, HYBRID), "think", status, text)
    assert want in f.fix


def test_think_null_on_reasoning_data_is_noted():
    only(check.check_think({"template": "qwen3", "enable_thinking": None}, [facts()], HYBRID), "think", "info",
         "same as true", fix=False)


def test_think_nothink_refuses_explicit_empty_blocks():
    fs = [facts("plain", "direct", "omit"), facts("explicit", "direct", "explicit")]
    f = only(check.check_think({"template": "qwen3_nothink"}, fs, INSTRUCT), "think", "error", "explicit empty <think>")
    assert f.message.startswith("explicit ") and "--empty-think omit" in f.fix


@pytest.mark.parametrize("model,mode,template,want", [
    (INSTRUCT, "reasoning", "qwen3", "model_name_or_path=Qwen/Qwen3-4B template=qwen3 enable_thinking=true"),
    (THINKING, "direct", "qwen3", "model_name_or_path=Qwen/Qwen3-4B template=qwen3 enable_thinking=false"),
    (THINKING, "mixed", "qwen3", "model_name_or_path=Qwen/Qwen3-4B template=qwen3 enable_thinking=null"),
])
def test_think_refuses_what_a_2507_model_cannot_train(model, mode, template, want):
    """The fix is the hybrid model of the same size, with the settings for the data."""
    out = check.check_think({"template": template, "enable_thinking": None}, [facts(mode=mode)], model)
    mine = [f for f in out if f.id == "think" and model.name in f.message]
    assert len(mine) == 1 and mine[0].severity == "error" and mine[0].fix.startswith(want + ", or: use a")


def test_think_on_a_local_2507_model_has_no_sibling_to_name():
    local = presets.ModelInfo("my-Qwen3-4B-Instruct-2507", "./m", "4b", "instruct-2507", local=True)
    out = check.check_think({"template": "qwen3", "enable_thinking": True}, [facts()], local)
    f = next(f for f in out if local.name in f.message)
    assert f.fix.startswith("use a hybrid model") and "model_name_or_path=" not in f.fix


def test_think_nothink_with_reasoning_on_instruct_names_the_hybrid_model():
    out = check.check_think({"template": "qwen3_nothink"}, [facts()], INSTRUCT)
    f = next(f for f in out if "as plain text" in f.message)
    assert f.fix.startswith("model_name_or_path=Qwen/Qwen3-4B template=qwen3 enable_thinking=true")


def test_think_explicit_empty_blocks_on_a_hybrid_model_can_switch_template():
    f = only(check.check_think({"template": "qwen3_nothink"}, [facts(mode="direct", empty_style="explicit")], HYBRID),
             "think", "error", "explicit empty <think>")
    assert f.fix.startswith("template=qwen3 enable_thinking=false, or convert again with --empty-think omit")


# --------------------------------------------------------------------------------------------
# cutoff (the token summary is given, as qfk stats would measure it)
# --------------------------------------------------------------------------------------------
def summary(think=(), answer=(), rows=10, longest=1000):
    return {"rows": rows, "rows_losing_think_close": list(think), "rows_losing_answer": list(answer),
            "recommended_cutoff_len": 1024, "total": {"p99": 900, "max": longest}}


def test_cutoff_ok_and_what_is_measured():
    asked = []

    def measure(args, fact, cutoff, max_rows):
        asked.append((fact.name, cutoff, max_rows))
        return summary()

    out = check.check_cutoff({}, [facts("med", rows=50)], max_rows=20, measure=measure)
    f = only(out, "cutoff", "ok", "med: every one of 10 rows (first 20) fits cutoff_len 2048", fix=False)
    assert "p99 900" in f.message and asked == [("med", 2048, 20)]


def test_cutoff_skips_ranking_and_hub_datasets():
    def measure(*_):
        raise AssertionError("not measured")

    assert check.check_cutoff({}, [facts(ranking=True), facts(file=None)], measure=measure) == []


def test_cutoff_that_cuts_a_think_block_fails():
    """The fix holds the longest row (not p99, which would cut it again), or filters the rows out."""
    args = {"cutoff_len": 512, "dataset": "other,med"}
    out = check.check_cutoff(args, [facts()], measure=lambda *_: summary(think=[3, 7], answer=[3, 7, 9], longest=4100))
    f = only(out, "cutoff", "error", "cutoff_len 512 cuts 2 of 10 rows before </think> (rows 3, 7)")
    assert f.fix.startswith("cutoff_len=4352 (holds every row: the longest has 4100 tokens), or ")
    assert "qfk datasets filter med --max-tokens 512, then dataset=other,med__max512" in f.fix


def test_cutoff_that_cuts_answers_warns():
    out = check.check_cutoff({"cutoff_len": 512}, [facts()], measure=lambda *_: summary(answer=[9], longest=600))
    f = only(out, "cutoff", "warn", "cuts the answer of 1 of 10 rows (rows 9)")
    assert f.fix.startswith("cutoff_len=768 ") and "qfk datasets filter med --max-tokens 512, then dataset=med__max512" in f.fix


@pytest.mark.parametrize("longest,cutoff,want", [(2049, 2048, 2304), (2304, 2048, 2304), (2305, 2048, 2560),
                                                  (10, 8, 256), (2010, 2000, 2048), (9000, 8192, 9216)])
def test_the_cutoff_fix_is_tokens_cutoff_for_the_longest_row(longest, cutoff, want):
    """One rule (tokens.cutoff_for, as qfk stats and recipe new), uncapped: a cutoff below the longest row cuts it again."""
    from qwen_factory_kit.tokens import cutoff_for

    out = check.check_cutoff({"cutoff_len": cutoff}, [facts()], measure=lambda *_: summary(answer=[9], longest=longest))
    f = only(out, "cutoff", "warn", f"cutoff_len {cutoff} cuts the answer")
    assert cutoff_for(longest, None) == want and f.fix.startswith(f"cutoff_len={want} (holds every row")
    assert not hasattr(check, "holding_cutoff")


def test_no_holds_p99_wording_left():
    """The recommended cutoff holds the longest row, not p99: no text of the package says otherwise."""
    import qwen_factory_kit

    root = Path(qwen_factory_kit.__file__).parent
    assert [p.name for p in root.rglob("*.py") if "holds p99" in p.read_text(encoding="utf-8")] == []


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def test_output_new_or_empty_folder(tmp_path):
    only(check.check_output({"output_dir": str(tmp_path / "new")}), "output", "ok", "is new", fix=False)
    only(check.check_output({"output_dir": str(tmp_path)}), "output", "ok", "is new", fix=False)


@pytest.mark.parametrize("args", [{}, {"export_dir": ""}])
def test_output_missing(args):
    only(check.check_output(args), "output", "error", "no output_dir")


def test_output_merge_over_a_model(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    only(check.check_output({"export_dir": str(tmp_path)}), "output", "warn", "overwrites it")


def test_output_predict(tmp_path):
    args = {"do_predict": True, "output_dir": str(tmp_path)}
    (tmp_path / "all_results.json").write_text("{}")
    only(check.check_output(args), "output", "ok", fix=False)
    (tmp_path / "generated_predictions.jsonl").write_text("")
    only(check.check_output(args), "output", "warn", "will be replaced")


def test_output_train_states(tmp_path):
    args = {"output_dir": str(tmp_path)}
    (tmp_path / "notes.txt").write_text("")
    only(check.check_output(args), "output", "ok", "holds no run", fix=False)
    (tmp_path / "trainer_log.jsonl").write_text("")
    only(check.check_output(args), "output", "warn", "appended")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    only(check.check_output(args), "output", "error", "already exists")
    for n in (9, 20):
        (tmp_path / f"checkpoint-{n}").mkdir()
    only(check.check_output(args), "output", "warn", "holds checkpoint-20: LLaMA-Factory silently RESUMES")
    only(check.check_output({**args, "overwrite_output_dir": True}), "output", "warn", "overwritten")
    only(check.check_output({**args, "resume_from_checkpoint": "x"}), "output", "info", "resumes from x", fix=False)


# --------------------------------------------------------------------------------------------
# machine and paths (the machine's facts are given)
# --------------------------------------------------------------------------------------------
def test_machine_clean_recipe():
    assert check.check_machine({"output_dir": "saves/run", "bf16": True}, machine=GPU) == []
    assert check.check_machine({"output_dir": "saves/run", "use_cpu": True, "bf16": False}, machine=BARE) == []


def test_machine_gpu_recipe_on_a_cpu_machine_is_an_error():
    """bf16 on a machine without CUDA: one gpu error (recipe/cpu.py) whose fix runs it there."""
    f = only(check.check_machine({"output_dir": "saves/run", "bf16": True}, machine=BARE), "gpu", "error",
             "no CUDA GPU, and the recipe needs a GPU: bf16: true")
    assert f.fix.startswith("use_cpu=true bf16=false to run it on this CPU") and "--cpu" in f.fix


def test_machine_qlora():
    args = {"quantization_bit": 4, "optim": "paged_adamw_8bit"}
    f = only(check.check_machine(args, machine=BARE), "gpu", "error", "quantization_bit: 4 (bitsandbytes quantization needs a CUDA GPU)")
    assert "optim: paged_adamw_8bit" in f.message  # one finding: the overrides work together
    assert f.fix.startswith("use_cpu=true bf16=false quantization_bit=null optim=adamw_torch to run it on this CPU (null: ")
    out = check.check_machine(args, machine=NO_BNB)  # a GPU machine without bitsandbytes
    assert [f.id for f in out] == ["gpu"] * 2 and all(f.severity == "warn" and f.fix for f in out)
    assert "bitsandbytes" in out[0].message and "paged_adamw_8bit" in out[1].message
    lora = "quantization_bit=null quantization_method=null optim=adamw_torch"
    assert lora in out[0].fix and out[1].fix.startswith("optim=adamw_torch")
    assert check.check_machine(args, machine=GPU) == []


def test_lora_overrides_undo_every_key_the_qlora_preset_adds():
    assert check.lora_overrides() == "quantization_bit=null quantization_method=null optim=adamw_torch"


def test_paged_optimizer_without_qlora_still_needs_bitsandbytes():
    """A QLoRA recipe turned into LoRA by quantization_bit=null alone keeps a paged optimizer: it crashes without bitsandbytes."""
    f = only(check.check_machine({"quantization_bit": None, "optim": "paged_adamw_8bit"}, machine=NO_BNB), "gpu", "warn",
             "paged_adamw_8bit comes from bitsandbytes")
    assert f.fix.startswith("optim=adamw_torch")


def test_machine_flash_attention_and_cpu_bf16():
    only(check.check_machine({"flash_attn": "fa2"}, machine=NO_FA), "gpu", "warn", "flash-attn is not installed")
    assert check.check_machine({"flash_attn": "fa2"}, machine=GPU) == []
    f = only(check.check_machine({"flash_attn": "fa2"}, machine=BARE), "gpu", "warn", "flash_attn: fa2 (FlashAttention-2 needs a GPU")
    assert f.fix.startswith("use_cpu=true bf16=false flash_attn=auto ")
    only(check.check_machine({"flash_attn": "fa3"}, machine=BARE), "gpu", "error", "flash_attn: fa3")
    only(check.check_machine({"use_cpu": True, "bf16": True}, machine=GPU), "gpu", "warn",
         "use_cpu: true runs it on the CPU: the recipe runs, but not as meant: bf16: true (bf16 on a CPU")


def test_paths_with_spaces():
    f = only(check.check_machine({"output_dir": "saves/my run"}, machine=GPU), "paths", "warn", "output_dir=saves/my run")
    assert f.fix.startswith("output_dir=saves/my_run, or launch with qfk train")
    f = only(check.check_machine({"model_name_or_path": "my models/q"}, machine=GPU, recipe_path="a b/r.yaml"), "paths", "warn",
             "model_name_or_path=my models/q; recipe path a b/r.yaml")
    assert f.fix.startswith("rename my models/q, a b/r.yaml without spaces, or launch with qfk train")
    f = only(check.check_machine({"output_dir": "saves/my run", "model_name_or_path": "my models/q"}, machine=GPU), "paths", "warn")
    assert f.fix.startswith("output_dir=saves/my_run and rename my models/q without spaces, or ")
    only(check.check_machine({"output_dir": "saves/my run", "deepspeed": "ds.json"}, machine=GPU), "paths", "error", "spaces")


def test_missing_adapter_of_an_inference_recipe(tmp_path):
    args = {"do_predict": True, "adapter_name_or_path": "saves/never-trained"}
    only(check.check_machine(args, machine=GPU), "paths", "warn", "adapter saves/never-trained does not exist yet")
    assert check.check_machine({**args, "adapter_name_or_path": str(tmp_path)}, machine=GPU) == []
    assert check.check_machine({**args, "adapter_name_or_path": "hubadapter"}, machine=GPU) == []
    assert check.check_machine({"adapter_name_or_path": "saves/never-trained"}, machine=GPU) == []  # a train recipe


def test_remote_code():
    only(check.check_machine({"trust_remote_code": True}, machine=GPU), "paths", "warn", "trust_remote_code")


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------
def test_sampling_is_not_a_train_recipe_concern():
    assert check.check_sampling({"do_train": True}) == []


@pytest.mark.parametrize("base", [{"do_predict": True}, {"export_dir": "models/m"}])
@pytest.mark.parametrize("enable", [True, False, None])
def test_sampling_ok_with_qwen3s_values(base, enable):
    args = {**base, "enable_thinking": enable, **presets.sampling(enable)}
    only(check.check_sampling(args), "sampling", "ok", "non-thinking" if enable is False else "thinking", fix=False)


def test_sampling_mistakes():
    args = {"do_predict": True, "enable_thinking": False}
    f = only(check.check_sampling(args), "sampling", "warn", "not Qwen3's")
    assert f.fix == "do_sample=true temperature=0.7 top_p=0.8 top_k=20"
    f = only(check.check_sampling({**args, "enable_thinking": True, "do_sample": False}), "sampling", "warn", "greedy")
    assert "do_sample=true" in f.fix
    # non-thinking prediction may decode deterministically (reproducible BLEU/chrF)
    only(check.check_sampling({**args, "do_sample": False}), "sampling", "ok", "deterministic", fix=False)
    only(check.check_sampling({**args, **presets.sampling(False), "temperature": 0.3}), "sampling", "info",
         "temperature 0.3 (recommended 0.7)", fix=False)


# --------------------------------------------------------------------------------------------
# types (LLaMA-Factory's annotations are given; lfbridge.argument_fields reads the real ones)
# --------------------------------------------------------------------------------------------
class Strategy(enum.Enum):
    NO = "no"
    STEPS = "steps"


FIELDS = {"lora_rank": int, "learning_rate": float, "do_train": bool, "template": typing.Optional[str],  # noqa: UP045 - the shapes LLaMA-Factory annotates with
          "eval_strategy": Strategy | str, "save_strategy": typing.Union[Strategy, str],  # noqa: UP007
          "quantization_method": typing.Literal["bnb", "hqq"], "lora_target": str}


def test_types_accept_what_llamafactory_takes():
    args = {"lora_rank": 8, "learning_rate": 1, "do_train": True, "template": None, "eval_strategy": "steps",
            "save_strategy": Strategy.NO, "quantization_method": "bnb", "lora_target": "all", "unknown": object()}
    assert check.check_types(args, FIELDS) == []


@pytest.mark.parametrize("key,value,want", [
    ("lora_rank", "x", "int"),
    ("lora_rank", True, "int"),
    ("learning_rate", "fast", "float"),
    ("do_train", "yes", "bool"),
    ("quantization_method", "gptq", "Literal"),
])
def test_types_refuse_a_wrong_value(key, value, want):
    f = only(check.check_types({key: value}, FIELDS), "keys", "error", f"{key}: {value!r} is not a valid value")
    assert want in f.message and f.fix.startswith("numbers unquoted")


@pytest.mark.parametrize("key,value,want", [
    ("lora_rank", "8", "lora_rank=8 "),
    ("lora_rank", " 16", "lora_rank=16 "),
    ("learning_rate", "5e-6", "learning_rate=5.0e-06 "),
    ("do_train", "True", "do_train=true "),
])
def test_types_fix_a_quoted_value_that_says_what_it_means(key, value, want):
    f = only(check.check_types({key: value}, FIELDS), "keys", "error", f"{key}: {value!r}")
    assert f.fix.startswith(want) and "not text" in f.fix


@pytest.mark.parametrize("key", ["eval_strategy", "save_strategy"])
def test_types_explain_yaml_booleans(key):
    f = only(check.check_types({key: False}, FIELDS), "keys", "error", f"{key}: False")
    assert f"{key}: \"no\"" in f.fix and "booleans" in f.fix


# --------------------------------------------------------------------------------------------
# keys: what the parse on this machine sets aside, and LLaMA-Factory's verdict
# --------------------------------------------------------------------------------------------
def test_parseable_here_sets_aside_what_this_machine_cannot_parse():
    args = {"bf16": True, "fp16": False, "deepspeed": "ds.json", "lora_rank": 8}
    parseable, aside = lfbridge.parseable_here(args, cuda=False)
    assert parseable == {"bf16": False, "fp16": False, "lora_rank": 8} and aside == ["bf16", "deepspeed"]
    assert args["bf16"] is True and args["deepspeed"] == "ds.json"
    assert lfbridge.parseable_here({"bf16": True}, cuda=True) == ({"bf16": True}, [])
    assert lfbridge.parseable_here({"bf16": True, "use_cpu": True}, cuda=False) == ({"bf16": True, "use_cpu": True}, [])


def test_set_aside_findings(tmp_path):
    assert check.set_aside_findings({"bf16": True}, ["bf16"], BARE) == []  # the gpu error of check_machine says it
    out = check.set_aside_findings({"deepspeed": str(tmp_path / "ds.json")}, ["deepspeed"], Machine(cuda=True))
    only(out, "paths", "error", "ds.json not found")
    only(out, "gpu", "warn", "DeepSpeed, which is not installed")
    assert [f.id for f in check.set_aside_findings({"deepspeed": str(tmp_path / "ds.json")}, ["deepspeed"], BARE)] == ["paths"]
    (tmp_path / "ds.json").write_text("{}")
    assert check.set_aside_findings({"deepspeed": str(tmp_path / "ds.json")}, ["deepspeed"], GPU) == []


def test_liger_without_liger_kernel_is_said(monkeypatch):
    """lfbridge parses enable_liger_kernel as false where liger-kernel is missing; the check says what that means:
    LLaMA-Factory refuses the recipe there (warn on a GPU machine; on a CPU one the gpu error of check_machine says it)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real(name, *a))
    args = {"enable_liger_kernel": True, "lora_rank": 8}
    parseable, aside = lfbridge.parseable_here(args, cuda=True)
    assert parseable["enable_liger_kernel"] is False and aside == ["enable_liger_kernel"]
    f = only(check.set_aside_findings(args, aside, GPU), "gpu", "warn", "enable_liger_kernel: liger-kernel is not installed here")
    assert "LLaMA-Factory will refuse the recipe on this machine" in f.message
    assert f.fix.startswith('pip install -c constraints.txt -e ".[gpu]" on the GPU machine') and "enable_liger_kernel=false" in f.fix
    assert check.set_aside_findings(args, lfbridge.parseable_here(args, cuda=False)[1], BARE) == []
    only(check.check_machine(args, machine=BARE), "gpu", "error", "enable_liger_kernel: true")
    fixed = {**args, "enable_liger_kernel": False}   # the override in the fix
    assert check.set_aside_findings(fixed, lfbridge.parseable_here(fixed, cuda=True)[1], GPU) == []


@pytest.mark.parametrize("rejection,status,text,fix", [
    (None, "ok", "LLaMA-Factory 0.9.5 parses every key (train recipe)", ""),
    (lfbridge.Rejection("please launch distributed training with torchrun", "needs-launcher"), "ok", "distributed launch", ""),
    (lfbridge.Rejection("Some keys are not used by the HfArgumentParser: ['foo']", "unknown-key"), "error",
     "rejects the recipe: Some keys", "remove or rename the key"),
    (lfbridge.Rejection("Please specify `lora_target`", "value"), "error", "lora_target", "fix the value"),
    (lfbridge.Rejection("2", "exit"), "error", "parser exited (2)", "llamafactory-cli train RECIPE"),
])
def test_parser_finding(rejection, status, text, fix):
    f = check.parser_finding(rejection, "train", "0.9.5")
    assert f.id == "keys" and f.severity == status and text in f.message and fix in f.fix and bool(f.fix) == bool(fix)


def test_check_llamafactory_steps(monkeypatch):
    """Types first (a type error stops there), then the parse of what this machine can parse."""
    parsed = []
    monkeypatch.setattr(lfbridge, "argument_fields", lambda: {"lora_rank": int})
    monkeypatch.setattr(lfbridge, "parse_recipe_args", lambda a, infer: parsed.append((a, infer)))
    monkeypatch.setattr(lfbridge, "llamafactory_version", lambda: "0.9.5")
    only(check.check_llamafactory({"lora_rank": "x"}, BARE), "keys", "error", "lora_rank")
    assert parsed == []
    out = check.check_llamafactory({"lora_rank": 8, "bf16": True, "export_dir": "m"}, BARE)
    assert [(f.id, f.severity) for f in out] == [("keys", "ok")]  # bf16 set aside here: check_machine's gpu error says it
    assert parsed == [({"lora_rank": 8, "bf16": False, "export_dir": "m"}, True)]


# --------------------------------------------------------------------------------------------
# datasets (a small registry in tmp_path)
# --------------------------------------------------------------------------------------------
@pytest.fixture
def data(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    rows = [{"instruction": f"q{i}", "input": "", "output": f"<think>\nwhy {i}\n</think>\n\nanswer {i}"} for i in range(3)]
    (d / "med.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "plain.jsonl").write_text(json.dumps({"instruction": "q", "input": "", "output": "a"}) + "\n")
    pairs = [{"instruction": "q", "input": "", "chosen": "a", "rejected": "b"}]
    (d / "pref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    info = {"med": build_entry("med.jsonl"), "plain": build_entry("plain.jsonl"),
            "pref": build_entry("pref.jsonl", ranking=True),
            "gone": build_entry("gone.jsonl")}
    (d / "dataset_info.json").write_text(json.dumps(info))
    return d


def test_datasets_ok_with_their_facts(data):
    out, fs = check.check_datasets({"dataset": "med", "dataset_dir": str(data)})
    only(out, "datasets", "ok", "med registered in", fix=False)
    assert [(f.name, f.mode, f.rows) for f in fs] == [("med", "reasoning", 3)]


def test_datasets_facts_come_from_training_data_or_a_predict_recipes_eval_data(data):
    _, fs = check.check_datasets({"dataset": "med", "eval_dataset": "plain", "dataset_dir": str(data)})
    assert [f.name for f in fs] == ["med"]
    _, fs = check.check_datasets({"do_predict": True, "dataset": "pref", "eval_dataset": "plain", "dataset_dir": str(data)})
    assert [(f.name, f.mode) for f in fs] == [("plain", "direct")]


def test_datasets_of_a_merge_recipe_are_not_checked(data):
    assert check.check_datasets({"export_dir": "m", "dataset": "nope", "dataset_dir": str(data)}) == ([], [])


@pytest.mark.parametrize("args,status,text,want", [
    ({"dataset": ""}, "error", "names no dataset", "dataset: NAME"),
    ({"dataset": "med", "dataset_dir": "{tmp}/nowhere"}, "error", "Cannot open", "dataset_dir=PATH"),
    ({"dataset": "zzz"}, "error", "dataset 'zzz' is not in", "qfk datasets add"),
    ({"dataset": "mde"}, "error", "Undefined dataset mde", "dataset=med"),
    ({"dataset": "me"}, "error", "Undefined dataset me", "dataset=med"),
    ({"dataset": "med__n2"}, "error", "the mix entry (med with num_samples: 2)", "--dry-run"),
    ({"dataset": "gone"}, "error", "gone: File", "qfk datasets remove gone"),
])
def test_datasets_mistakes(data, tmp_path, args, status, text, want):
    args = {"dataset_dir": str(data), **args}
    args["dataset_dir"] = args["dataset_dir"].replace("{tmp}", str(tmp_path))
    out, fs = check.check_datasets(args)
    f = only(out, "datasets", status, text)
    assert want in f.fix and fs == []


def test_datasets_broken_registry(data):
    (data / "dataset_info.json").write_text("{not json")
    f = only(check.check_datasets({"dataset": "med", "dataset_dir": str(data)})[0], "datasets", "error", "not valid JSON")
    assert "fix it by hand" in f.fix


@pytest.mark.parametrize("stage,name,needs", [("sft", "pref", "SFT data"), ("dpo", "med", "ranking data")])
def test_datasets_ranking_against_the_stage(data, stage, name, needs):
    out, _ = check.check_datasets({"stage": stage, "dataset": name, "dataset_dir": str(data)})
    f = only(out, "ranking", "error", needs)
    assert "not applicable" in f.message and "qfk convert" in f.fix
    assert f.fix.startswith(f"stage={'dpo' if name == 'pref' else 'sft'} to train on {name} as it is")


def test_unknown_dataset_names_the_close_ones(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for n in ("medical_r1", "medical_r1_val", "finetome"):
        (d / f"{n}.jsonl").write_text(json.dumps({"instruction": "q", "input": "", "output": "a"}) + "\n")
    (d / "dataset_info.json").write_text(json.dumps({n: build_entry(f"{n}.jsonl") for n in ("medical_r1", "medical_r1_val", "finetome")}))
    out, _ = check.check_datasets({"dataset": "medical,finetome", "eval_dataset": "medical", "dataset_dir": str(d)})
    mine = [f for f in out if f.id == "datasets"]
    assert len(mine) == 2 and all(f.message.startswith(f"dataset 'medical' is not in {d / 'dataset_info.json'}") for f in mine)
    assert mine[0].fix == "dataset=medical_r1,finetome eval_dataset=medical_r1 (also close: medical_r1_val)"


# --------------------------------------------------------------------------------------------
# mix: num_samples against the rows (upsampling)
# --------------------------------------------------------------------------------------------
def test_mix_without_num_samples_says_nothing():
    assert check.check_mix({"dataset": "med"}, [facts()]) == []


@pytest.mark.parametrize("samples", [3, 10, 20])
def test_mix_within_twice_the_rows_is_ok(samples):
    only(check.check_mix({"dataset": f"med__n{samples}"}, [facts(f"med__n{samples}", num_samples=samples)]), "mix", "ok",
         f"med__n{samples}: {samples} of 10 rows", fix=False)


@pytest.mark.parametrize("dataset,fs,text,want", [
    ("med__n50", [facts("med__n50", num_samples=50)], "med__n50 takes num_samples: 50 from 10 rows: each row repeats about 5.0x",
     "dataset=med__n20 (the same proportions at 20 rows per epoch"),
    # the mix keeps its proportions: 50 of med and 100 of plain become 20 and 40
    ("med__n50,plain", [facts("med__n50", num_samples=50), facts("plain", "direct", rows=100)], "repeats about 5.0x",
     "dataset=med__n20,plain__n40 (the same proportions at 60 rows"),
    # num_samples set by hand counts the same way
    ("big", [facts("big", rows=10, num_samples=30)], "big takes num_samples: 30 from 10 rows", "dataset=big__n20 "),
])
def test_mix_that_repeats_rows_warns(dataset, fs, text, want):
    f = only(check.check_mix({"dataset": dataset}, fs), "mix", "warn", text)
    assert f.fix.startswith(want) and "--mix-total" in f.fix
