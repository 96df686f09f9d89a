"""Rough edges of ``qfk recipe``: copied headers, predict/merge after --model/--adapter, the base
model (--adapter none / --base), deterministic decoding for translation, unknown --mix names,
heavy upsampling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT

from qwen_factory_kit.recipe import check, presets
from qwen_factory_kit.recipe.curated import rename_in_header
from qwen_factory_kit.recipe.document import load_recipe
from qwen_factory_kit.recipe.inference import adapter_label, predict_dir

SAMPLING_KEYS = ("temperature", "top_p", "top_k")


@pytest.fixture
def trained(work, qfk):
    """Training recipes to build predict/merge recipes from: med.yaml (reasoning), mt.yaml (translation)."""
    for name, model, dataset in (("med.yaml", "Qwen3-4B", "demo_medical"), ("mt.yaml", "Qwen3-1.7B", "demo_translation")):
        code, _, err = qfk("recipe", "new", "--model", model, "--method", "lora", "--dataset", dataset, "-o", name)
        assert code == 0, err
    return work


def header(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def new(qfk, *args: str) -> tuple[dict, list[str], str]:
    """``qfk recipe new ARGS -o out.yaml --force``: (the recipe's arguments, its header, stderr)."""
    code, _, err = qfk("recipe", "new", *args, "-o", "out.yaml", "--force")
    assert code == 0, err
    text = Path("out.yaml").read_text()
    return load_recipe("out.yaml"), header(text), err


# --------------------------------------------------------------------------------------------
# 1. qfk recipe cp: the header's commands name the copy
# --------------------------------------------------------------------------------------------
def test_cp_rewrites_the_header_commands_to_the_new_name(work, qfk):
    code, _, err = qfk("recipe", "cp", "qwen3-4b-medical-lora", "my.yaml")
    assert code == 0, err
    text = (work / "my.yaml").read_text()
    head = header(text)
    assert "#   llamafactory-cli train my.yaml" in head
    assert any(line.startswith("#   qfk train my.yaml ") for line in head)
    assert "#   llamafactory-cli train my.yaml learning_rate=5.0e-6 num_train_epochs=3" in head
    assert "# Check it first: qfk recipe check my.yaml" in head
    assert "qwen3-4b-medical-lora.yaml" not in text
    original = (ROOT / "recipes" / "qwen3-4b-medical-lora.yaml").read_text()
    assert text.splitlines()[len(head):] == original.splitlines()[len(head):]  # the keys are untouched
    assert load_recipe(work / "my.yaml") == load_recipe(ROOT / "recipes" / "qwen3-4b-medical-lora.yaml")
    assert "next: qfk recipe check my.yaml" in err


def test_cp_into_a_folder_names_the_path_and_keeps_other_files_names(work, qfk):
    (work / "cfg").mkdir()
    assert qfk("recipe", "cp", "qwen3-4b-medical-predict", "cfg")[0] == 0
    head = header((work / "cfg" / "qwen3-4b-medical-predict.yaml").read_text())
    assert "#   llamafactory-cli train cfg/qwen3-4b-medical-predict.yaml" in head
    assert "# Check it first: qfk recipe check cfg/qwen3-4b-medical-predict.yaml" in head
    # the training recipe it follows is another file: its name stays
    assert any("--from qwen3-4b-medical-lora.yaml" in line for line in head)
    assert qfk("recipe", "cp", "qwen3-4b-medical-merge", "my merge.yaml")[0] == 0
    assert "#   llamafactory-cli export 'my merge.yaml'" in header((work / "my merge.yaml").read_text())


def test_rename_in_header_touches_only_the_file_name_in_the_header():
    text = ("# run: llamafactory-cli train a.yaml\n# not: xa.yaml a.yaml.bak dir/a.yaml a-b.yaml\n"
            "# it ends with a.yaml.\n\n### data\nnote: a.yaml\n")
    out = rename_in_header(text, "a.yaml", "b.yaml")
    assert out == ("# run: llamafactory-cli train b.yaml\n# not: xa.yaml a.yaml.bak dir/a.yaml a-b.yaml\n"
                   "# it ends with b.yaml.\n\n### data\nnote: a.yaml\n")
    assert rename_in_header(text, "a.yaml", "a.yaml") == text


def test_new_from_names_its_own_file_in_the_commands(trained, qfk):
    assert qfk("recipe", "new", "--method", "predict", "--from", "med.yaml", "--eval-dataset", "demo_medical_val",
               "-o", "p.yaml")[0] == 0
    head = header((trained / "p.yaml").read_text())
    commands = [line for line in head if "llamafactory-cli" in line or "qfk train" in line or "recipe check" in line]
    assert commands and all("p.yaml" in line and "med.yaml" not in line for line in commands)


# --------------------------------------------------------------------------------------------
# 2. predict / merge after --model / --adapter: output_dir, export_dir and header follow them
# --------------------------------------------------------------------------------------------
def test_predict_output_dir_and_header_follow_model_and_adapter(trained, qfk):
    args, head, _ = new(qfk, "--method", "predict", "--from", "med.yaml", "--eval-dataset", "demo_medical_val")
    assert args["output_dir"] == "saves/qwen3-4b/lora/demo_medical/predict"  # unchanged without overrides
    assert "# Adapter: saves/qwen3-4b/lora/demo_medical (the output_dir of med.yaml)" in head

    args, head, _ = new(qfk, "--method", "predict", "--from", "med.yaml", "--eval-dataset", "demo_medical_val",
                        "--model", "Qwen3-8B")
    assert args["model_name_or_path"] == "Qwen/Qwen3-8B"
    assert args["output_dir"] == "saves/qwen3-8b/lora/demo_medical/predict" and "qwen3-4b" not in args["output_dir"]
    assert head[0] == "# qfk recipe: predict demo_medical_val with Qwen3-8B + saves/qwen3-4b/lora/demo_medical"
    assert "# Model: Qwen3-8B = Qwen/Qwen3-8B (--model; med.yaml trained Qwen/Qwen3-4B)" in head

    ckpt = "saves/qwen3-4b/lora/demo_medical/checkpoint-500"
    args, head, _ = new(qfk, "--method", "predict", "--from", "med.yaml", "--eval-dataset", "demo_medical_val", "--adapter", ckpt)
    assert args["adapter_name_or_path"] == ckpt and args["output_dir"] == f"{ckpt}/predict"
    assert f"# Adapter: {ckpt} (--adapter)" in head and "# adapter" not in " ".join(head)
    assert "the training run's output_dir" not in Path("out.yaml").read_text()  # it is not

    args, _, _ = new(qfk, "--method", "predict", "--from", "med.yaml", "--eval-dataset", "demo_medical_val",
                     "--model", "Qwen3-8B", "--adapter", "/elsewhere/run7")
    assert args["output_dir"] == "saves/qwen3-8b/run7/predict"


def test_merge_export_dir_and_header_follow_model_and_adapter(trained, qfk):
    args, head, _ = new(qfk, "--method", "merge", "--from", "med.yaml")
    assert args["export_dir"] == "models/qwen3-4b-demo_medical-merged"  # unchanged without overrides
    args, head, _ = new(qfk, "--method", "merge", "--from", "med.yaml", "--model", "Qwen3-8B",
                        "--adapter", "saves/qwen3-8b/lora/demo_medical/checkpoint-20")
    assert args["export_dir"] == "models/qwen3-8b-demo_medical-checkpoint-20-merged"
    assert head[0] == "# qfk recipe: merge saves/qwen3-8b/lora/demo_medical/checkpoint-20 into Qwen3-8B"
    assert "# Model: Qwen3-8B = Qwen/Qwen3-8B (--model; med.yaml trained Qwen/Qwen3-4B)" in head


def test_predict_dir_and_adapter_label():
    m4, m8 = presets.resolve_model("Qwen3-4B"), presets.resolve_model("Qwen3-8B")
    trained4 = {"model_name_or_path": "Qwen/Qwen3-4B"}
    assert predict_dir(m4, None, trained4) == "saves/qwen3-4b/base/predict"
    assert predict_dir(m4, "runs/a/", trained4) == "runs/a/predict"  # the training run's model: next to its adapter
    assert predict_dir(m8, "runs/a", trained4) == "saves/qwen3-8b/a/predict"
    assert predict_dir(m8, "saves/qwen3-8b/lora/x", trained4) == "saves/qwen3-8b/lora/x/predict"
    assert predict_dir(m8, "saves/qwen3-4b/lora/x", {}) == "saves/qwen3-8b/lora/x/predict"
    assert predict_dir(m4, "../shared/adapter", trained4) == "saves/qwen3-4b/adapter/predict"
    assert adapter_label("saves/m/run/checkpoint-40") == "run-checkpoint-40" and adapter_label("/x/y") == "y"


# --------------------------------------------------------------------------------------------
# 3. the base model: --adapter none, --base
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [("--adapter", "none"), ("--adapter", "None"), ("--adapter", "null"), ("--base",),
                                   ("adapter_name_or_path=null",), ("adapter_name_or_path=none",)])
def test_base_model_predict_has_no_adapter_key(trained, qfk, flags):
    args, head, _ = new(qfk, "--method", "predict", "--from", "med.yaml", "--eval-dataset", "demo_medical_val", *flags)
    assert "adapter_name_or_path" not in args and "finetuning_type" not in args
    keys = [line for line in Path("out.yaml").read_text().splitlines() if line and not line.startswith("#")]
    assert not [line for line in keys if "adapter" in line or line.endswith((": null", ": none", ': "none"', ': "null"'))
                and line != "report_to: none"]
    assert head[0] == "# qfk recipe: predict demo_medical_val with Qwen3-4B base model (no adapter)"
    assert "# Adapter: none: base model (no adapter)" in head
    assert args["output_dir"] == "saves/qwen3-4b/base/predict"
    assert args["template"] == "qwen3" and args["enable_thinking"] is True  # still as trained: a fair before/after


def test_base_model_without_from(work, qfk):
    args, _, _ = new(qfk, "--method", "predict", "--model", "Qwen3-1.7B", "--base", "--eval-dataset", "demo_translation_test")
    assert "adapter_name_or_path" not in args and args["output_dir"] == "saves/qwen3-1.7b/base/predict"
    assert args["enable_thinking"] is False  # from the data


def test_base_model_refusals(trained, qfk):
    code, _, err = qfk("recipe", "new", "--method", "merge", "--from", "med.yaml", "--adapter", "none")
    assert code == 2 and "no adapter to merge" in err and "hint:" in err and "--base" in err
    code, _, err = qfk("recipe", "new", "--method", "merge", "--from", "med.yaml", "--base")
    assert code == 2 and "no adapter to merge" in err
    code, _, err = qfk("recipe", "new", "--method", "predict", "--from", "med.yaml", "--base", "--adapter", "saves/x")
    assert code == 2 and "contradicts --adapter saves/x" in err
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--base")
    assert code == 2 and "--base" in err and "predict" in err


# --------------------------------------------------------------------------------------------
# 4. decoding: deterministic for translation, Qwen3's sampling otherwise, never greedy while thinking
# --------------------------------------------------------------------------------------------
def test_translation_predict_decodes_deterministically(trained, qfk):
    args, head, _ = new(qfk, "--method", "predict", "--from", "mt.yaml", "--eval-dataset", "demo_translation_test")
    assert args["do_sample"] is False and not set(SAMPLING_KEYS) & set(args)
    line = next(line for line in head if line.startswith("# Decoding:"))
    assert "deterministic" in line and "scores need deterministic decoding" in line
    # qfk recipe check's sampling rule does not fail it
    assert all(f.severity != "error" for f in check.check_sampling(args))

    args, head, _ = new(qfk, "--method", "predict", "--from", "mt.yaml", "--eval-dataset", "demo_translation_test", "--sample")
    assert args["do_sample"] is True and (args["temperature"], args["top_p"], args["top_k"]) == (0.7, 0.8, 20)
    assert any(line.startswith("# Decoding: Qwen3") for line in head)


def test_reasoning_predict_always_samples(trained, qfk):
    args, head, err = new(qfk, "--method", "predict", "--from", "med.yaml", "--eval-dataset", "demo_medical_val")
    assert args["do_sample"] is True and (args["temperature"], args["top_p"], args["top_k"]) == (0.6, 0.95, 20)
    assert any(line.startswith("# Decoding:") and "never decode greedily in thinking mode" in line for line in head)
    assert "warning" not in err
    args, head, err = new(qfk, "--method", "predict", "--from", "med.yaml", "--eval-dataset", "demo_medical_val",
                          "--deterministic")
    assert args["do_sample"] is True and args["temperature"] == 0.6  # thinking: never greedy
    assert any("although --deterministic was given" in line for line in head)
    assert "warning: --deterministic ignored" in err


def test_deterministic_flag_and_hand_registered_data(work, qfk):
    rows = [{"instruction": "Name a colour.", "input": "", "output": "<think>\n\n</think>\n\nBlue."}] * 3
    (work / "plain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mt = [{"instruction": "Translate <en> to <ja>.", "input": "Hello.", "output": "こんにちは。"}] * 3
    (work / "mt_hand.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in mt))
    for f, name in (("plain.jsonl", "plain"), ("mt_hand.jsonl", "mt_hand")):
        assert qfk("datasets", "add", f, "--name", name)[0] == 0
    base = ("--method", "predict", "--model", "Qwen3-1.7B", "--base", "--eval-dataset")
    args, _, _ = new(qfk, *base, "plain")  # direct, not translation: Qwen3's non-thinking sampling
    assert args["do_sample"] is True and args["temperature"] == 0.7
    args, head, _ = new(qfk, *base, "plain", "--deterministic")
    assert args["do_sample"] is False and not set(SAMPLING_KEYS) & set(args)
    assert any("--deterministic" in line for line in head if line.startswith("# Decoding:"))
    args, _, _ = new(qfk, *base, "mt_hand")  # no manifest: the rows are Moses translation prompts
    assert args["do_sample"] is False


def test_sample_flags_are_for_predict(trained, qfk):
    code, _, err = qfk("recipe", "new", "--method", "merge", "--from", "med.yaml", "--deterministic")
    assert code == 2 and "predict" in err
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--sample")
    assert code == 2 and "--sample/--deterministic" in err


# --------------------------------------------------------------------------------------------
# 5. unknown names in --mix / --dataset / --eval-dataset
# --------------------------------------------------------------------------------------------
def test_unknown_mix_names_are_named_with_close_matches(work, qfk):
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical",
                       "--mix", "medical=0.75,chat=0.25")
    assert code == 2 and "Traceback" not in err
    assert "Undefined dataset 'medical' (--mix): not registered in data/dataset_info.json; did you mean demo_medical" in err
    assert "Undefined dataset 'chat' (--mix)" in err
    assert "no ratio" not in err
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medicl",
                       "--mix", "demo_medicl=0.5,demo_finetome=0.5", "--eval-dataset", "demo_med_val")
    assert code == 2
    assert "Undefined dataset 'demo_medicl' (--dataset)" in err and "did you mean demo_medical" in err
    assert err.count("demo_medicl'") == 1  # named once, though given twice
    assert "Undefined dataset 'demo_med_val' (--eval-dataset)" in err and "demo_medical_val" in err


def test_unknown_eval_dataset_for_predict(trained, qfk):
    code, _, err = qfk("recipe", "new", "--method", "predict", "--from", "med.yaml", "--eval-dataset", "demo_medical_vall")
    assert code == 2 and "Undefined dataset 'demo_medical_vall' (--eval-dataset)" in err and "did you mean demo_medical_val" in err


# --------------------------------------------------------------------------------------------
# 6. heavy upsampling: the factor in the header, a warning on stderr
# --------------------------------------------------------------------------------------------
def test_heavy_upsampling_is_stated_and_warned(work, qfk):
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical,demo_finetome",
                         "--mix", "demo_medical=0.5,demo_finetome=0.5", "--mix-total", "2000", "-o", "up.yaml")
    assert code == 0, err
    head = header((work / "up.yaml").read_text())
    assert ("#   demo_medical: 1000 (upsampled 143x) of 7 rows = 50.00% (asked 50.00%): "
            "every row repeats about 143 times per epoch") in head
    assert "warning: demo_medical is upsampled 143x: each of its 7 rows repeats about 143 times per epoch" in err
    assert "warning: demo_finetome is upsampled 77x" in err


def test_mild_upsampling_is_not_warned(work, qfk):
    code, out, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical,demo_finetome",
                         "--mix", "demo_medical=0.5,demo_finetome=0.5", "--mix-total", "20", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert "#   demo_medical: 10 (upsampled) of 7 rows = 50.00% (asked 50.00%)" in res["recipe"].splitlines()
    assert res["warnings"] == [] and "warning" not in err


@pytest.mark.slow
def test_recipe_check_does_not_fail_a_deterministic_translation_predict(trained, qfk):
    assert qfk("recipe", "new", "--method", "predict", "--from", "mt.yaml", "--eval-dataset", "demo_translation_test",
               "-o", "p.yaml")[0] == 0
    code, out, err = qfk("recipe", "check", "p.yaml", "--no-stats", "--gpu", "--json")  # mt.yaml is for a GPU (bf16)
    assert code == 0, err
    findings = json.loads(out)["findings"]
    assert not [f for f in findings if f["severity"] == "error"]
    assert any(f["id"] == "keys" and f["severity"] == "ok" for f in findings)  # LLaMA-Factory's parser takes it
