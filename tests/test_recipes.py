"""qfk recipe new / check / ls / cp: presets, think settings, exact mixes, YAML that LLaMA-Factory reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.recipe import presets
from qwen_factory_kit.recipe.document import Recipe, load_recipe, parse_overrides, scalar
from qwen_factory_kit.recipe.mix import ensure_mix_entries, mix_counts, parse_mix


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """A local Qwen3 model folder (config only: enough for recipes and checks)."""
    from qwen_factory_kit.tiny import TINY_CONFIG

    d = tmp_path / "models" / "tiny-qwen3"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "qwen3", **TINY_CONFIG}))
    return d


def registry(work: Path) -> dict:
    return json.loads((work / "data" / "dataset_info.json").read_text())


# --------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------
def test_presets_follow_the_qwen3_guidance():
    m4 = presets.resolve_model("Qwen3-4B")
    p = presets.method_preset("lora", m4)
    assert p.method["lora_rank"] == 32 and p.method["lora_alpha"] == 64 and p.method["lora_dropout"] == 0.05
    assert p.method["lora_target"] == "all" and p.method["finetuning_type"] == "lora" and p.method["stage"] == "sft"
    assert p.training["learning_rate"] == 1e-5 and p.training["per_device_train_batch_size"] == 4
    assert 5 <= p.training["num_train_epochs"] <= 8
    p8 = presets.method_preset("lora", presets.resolve_model("Qwen/Qwen3-8B"))
    assert p8.training["learning_rate"] == 5e-6 and p8.training["per_device_train_batch_size"] == 2
    assert 3 <= p8.training["num_train_epochs"] <= 5
    q = presets.method_preset("qlora", presets.resolve_model("qwen3-1.7b"))
    assert q.method["quantization_bit"] == 4 and q.method["quantization_method"] == "bnb"
    assert q.training["learning_rate"] == 2e-4 and q.training["optim"] == "paged_adamw_8bit"
    assert q.training["per_device_train_batch_size"] * q.training["gradient_accumulation_steps"] == 64
    assert q.training["num_train_epochs"] == 3
    o = presets.method_preset("orpo", m4)
    assert o.method["stage"] == "dpo" and o.method["pref_loss"] == "orpo" and o.method["pref_beta"] == 0.1
    f = presets.method_preset("full", presets.resolve_model("Qwen3-8B"))
    assert f.method["finetuning_type"] == "full" and f.training["deepspeed"] == "z3"
    for preset in (p, p8, q, o, f):
        assert preset.source


def test_models_and_kinds(tiny_config):
    assert presets.resolve_model("Qwen3-30B-A3B-Instruct-2507").kind == "instruct-2507"
    assert presets.resolve_model("Qwen3-235B-A22B-Thinking-2507").kind == "thinking-2507"
    assert presets.resolve_model("Qwen3-14B-Base").kind == "base"
    local = presets.resolve_model(str(tiny_config))
    assert local.local and local.kind == "hybrid" and local.size == "0.6b" and local.path == str(tiny_config)
    with pytest.raises(QfkError, match="unknown model"):
        presets.resolve_model("Qwen3-5B")
    llama = tiny_config.parent / "llama"
    llama.mkdir()
    (llama / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(QfkError, match="not Qwen3"):
        presets.resolve_model(str(llama))


@pytest.mark.parametrize("mode,kind,want", [
    ("reasoning", "hybrid", ("qwen3", True)),
    ("direct", "hybrid", ("qwen3", False)),
    ("mixed", "hybrid", ("qwen3", None)),
    ("direct", "base", ("qwen3", False)),
    ("direct", "instruct-2507", ("qwen3_nothink", None)),
    ("reasoning", "thinking-2507", ("qwen3", True)),
])
def test_think_settings_table(mode, kind, want):
    model = presets.ModelInfo("m", "m", "4b", kind)
    assert presets.think_settings(mode, model)[:2] == want


@pytest.mark.parametrize("mode,kind", [("reasoning", "instruct-2507"), ("mixed", "instruct-2507"),
                                        ("direct", "thinking-2507"), ("none", "hybrid")])
def test_think_settings_refuse_what_cannot_train(mode, kind):
    with pytest.raises(QfkError):
        presets.think_settings(mode, presets.ModelInfo("m", "m", "4b", kind))


# --------------------------------------------------------------------------------------------
# mixes and the YAML document
# --------------------------------------------------------------------------------------------
def test_mix_counts_are_exact():
    assert mix_counts({"a": 0.75, "b": 0.25}, {"a": 7, "b": 13}) == {"a": 6, "b": 2}
    assert mix_counts({"a": 0.75, "b": 0.25}, {"a": 2400, "b": 100000}) == {"a": 2400, "b": 800}
    assert mix_counts({"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 1000, "b": 1000, "c": 1000}) == {"a": 1000, "b": 600, "c": 400}
    assert mix_counts({"a": 0.75, "b": 0.25}, {"a": 10, "b": 10}, total=4000) == {"a": 3000, "b": 1000}
    c = mix_counts({"a": 1 / 3, "b": 2 / 3}, {"a": 100, "b": 100})
    assert c == {"a": 50, "b": 100}
    with pytest.raises(QfkError, match="add up"):
        mix_counts({"a": 0.7, "b": 0.2}, {"a": 1, "b": 1})
    assert parse_mix("a=75%,b=25%") == {"a": 0.75, "b": 0.25}
    with pytest.raises(QfkError):
        parse_mix("a:0.5")


@pytest.mark.parametrize("text,words", [
    ("a=nan,b=0.5", "not a finite number"),          # nan passed every later check and crashed the count
    ("a=inf,b=0.25", "not a finite number"),
    ("a=0.75,a=0.25", "names a twice"),              # a dict kept the last one: "add up to 0.25"
    ("a__n6=0.5,b=0.5", "itself a mix entry"),       # its 6 rows were counted as its file's rows
    ("a__t3=0.5,b=0.5", "itself a mix entry"),
])
def test_parse_mix_refuses_what_cannot_be_a_share(text, words, qfk, tmp_path):
    with pytest.raises(QfkError, match=words):
        parse_mix(text)
    code, _, err = qfk("recipe", "new", "--model", "qfk-tiny", "--method", "lora", "--mix", text, "-o", tmp_path / "r.yaml")
    assert code == 2 and words in err and "Traceback" not in err and not (tmp_path / "r.yaml").exists()


@pytest.mark.parametrize("value", [1e-5, 5e-6, 2e-4, 0.05, 0.1, 3.0, 180000000, True, False, None, "qwen3", "a,b",
                                   "saves/x y", "no", "1e-5", "/abs/path", "~/x", "", "null", "中文"])
def test_scalars_read_back_identically(value):
    from omegaconf import OmegaConf

    text = f"k: {scalar(value)}\n"
    assert yaml.safe_load(text)["k"] == value
    assert OmegaConf.to_container(OmegaConf.create(text))["k"] == value


def test_overrides_are_typed_like_llamafactory_cli():
    assert parse_overrides(["learning_rate=5.0e-6", "num_train_epochs=3", "bf16=false", "template=qwen3"]) == {
        "learning_rate": 5e-6, "num_train_epochs": 3, "bf16": False, "template": "qwen3"}
    with pytest.raises(QfkError, match="key=value"):
        parse_overrides(["learning_rate"])


def test_render_groups_and_comments():
    r = Recipe(header=["qfk recipe: t"])
    r.section("model")["model_name_or_path"] = "Qwen/Qwen3-4B"
    r.set("learning_rate", 1e-5, comment="guidance")
    text = r.render()
    assert text.startswith("# qfk recipe: t\n") and "### model\nmodel_name_or_path: Qwen/Qwen3-4B" in text
    assert "learning_rate: 1.0e-05  # guidance" in text
    assert yaml.safe_load(text) == {"model_name_or_path": "Qwen/Qwen3-4B", "learning_rate": 1e-5}


# --------------------------------------------------------------------------------------------
# qfk recipe new
# --------------------------------------------------------------------------------------------
def test_new_mixed_recipe_end_to_end(work, qfk):
    code, out, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical,demo_finetome",
                         "--mix", "demo_medical=0.75,demo_finetome=0.25", "--eval-dataset", "demo_medical_val", "-o", "sft.yaml",
                         "learning_rate=2.0e-5", "max_steps=10")
    assert code == 0, err
    text = (work / "sft.yaml").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# qfk recipe: Qwen3-4B lora")
    assert "#   llamafactory-cli train sft.yaml" in lines and any(l.startswith("#   qfk train sft.yaml") for l in lines)
    assert "# Override any key after the file as key=value (same syntax for both commands):" in lines
    for section in ("### model", "### method", "### data", "### training", "### output", "### eval"):
        assert section in lines
    args = load_recipe(work / "sft.yaml")
    assert args["template"] == "qwen3" and args["enable_thinking"] is None  # reasoning + chat rows: mixed
    assert args["learning_rate"] == 2e-5 and args["max_steps"] == 10  # overrides win
    assert "learning_rate: 2.0e-05  # override" in text
    assert args["dataset"] == "demo_medical__n6,demo_finetome__n2" and args["eval_dataset"] == "demo_medical_val"
    assert "#   demo_medical: 6 sampled of 7 rows = 75.00% (asked 75.00%)" in lines
    info = registry(work)
    assert info["demo_medical__n6"]["num_samples"] == 6 and info["demo_medical__n6"]["file_name"] == "demo_medical.jsonl"
    assert info["demo_finetome__n2"]["num_samples"] == 2
    assert args["lora_rank"] == 32 and args["lora_target"] == "all" and args["dataset_dir"] == "data"


@pytest.mark.parametrize("model,dataset,template,enable", [
    ("Qwen3-4B", "demo_medical", "qwen3", True),
    ("Qwen3-1.7B", "demo_translation", "qwen3", False),
    ("Qwen3-4B-Instruct-2507", "demo_translation", "qwen3_nothink", "absent"),
    ("Qwen3-4B-Thinking-2507", "demo_medical", "qwen3", True),
])
def test_template_and_thinking_come_from_the_data(work, qfk_json, model, dataset, template, enable):
    res = qfk_json("recipe", "new", "--model", model, "--method", "lora", "--dataset", dataset)
    args = res["args"]
    assert args["template"] == template
    if enable == "absent":
        assert "enable_thinking" not in args
    else:
        assert args["enable_thinking"] is enable
    assert res["decided"]["datasets"][dataset]["source"].startswith("manifest")


def test_new_refuses_what_cannot_train(work, qfk):
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B-Instruct-2507", "--method", "lora", "--dataset", "demo_medical")
    assert code == 2 and "never thinks" in err and "Traceback" not in err
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "orpo", "--dataset", "demo_medical")
    assert code == 2 and "preference" in err
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_preference")
    assert code == 2 and "ranking" in err
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "nope")
    assert code == 2 and "Undefined dataset 'nope'" in err
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical",
                       "--mix", "demo_medical=0.5,demo_finetome=0.2")
    assert code == 2 and "add up" in err
    (work / "x.yaml").write_text("k: 1\n")
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "-o", "x.yaml")
    assert code == 2 and "--force" in err


def test_think_mode_of_a_hand_registered_file_is_scanned(work, qfk, qfk_json):
    rows = [{"instruction": "q", "input": "", "output": "<think>\nr\n</think>\n\na"}] * 3
    f = work / "hand.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert qfk("datasets", "add", str(f), "--name", "hand")[0] == 0
    res = qfk_json("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "hand")
    assert res["args"]["enable_thinking"] is True and res["decided"]["datasets"]["hand"]["source"] == "scanned 3 rows"


def test_orpo_full_predict_merge(work, qfk, qfk_json):
    orpo = qfk_json("recipe", "new", "--model", "Qwen3-4B", "--method", "orpo", "--dataset", "demo_preference")["args"]
    assert orpo["stage"] == "dpo" and orpo["pref_loss"] == "orpo" and orpo["learning_rate"] == 5e-6
    full = qfk_json("recipe", "new", "--model", "Qwen3-8B", "--method", "full", "--dataset", "demo_medical", "-o", "full.yaml")
    assert full["args"]["deepspeed"] == "deepspeed/ds_z3_config.json" and full["files_written"] == ["deepspeed/ds_z3_config.json"]
    assert json.loads((work / "deepspeed" / "ds_z3_config.json").read_text())["zero_optimization"]["stage"] == 3
    assert "deepspeed" not in qfk_json("recipe", "new", "--model", "Qwen3-8B", "--method", "full", "--dataset", "demo_medical",
                                       "--deepspeed", "none")["args"]
    assert qfk("recipe", "new", "--model", "Qwen3-1.7B", "--method", "lora", "--dataset", "demo_translation", "-o", "mt.yaml")[0] == 0
    pred = qfk_json("recipe", "new", "--method", "predict", "--from", "mt.yaml", "--eval-dataset", "demo_translation_test",
                    "--sample")["args"]  # translation predicts deterministically unless --sample
    assert pred["template"] == "qwen3" and pred["enable_thinking"] is False
    assert (pred["temperature"], pred["top_p"], pred["top_k"], pred["do_sample"]) == (0.7, 0.8, 20, True)
    assert pred["adapter_name_or_path"] == load_recipe(work / "mt.yaml")["output_dir"] and pred["predict_with_generate"]
    assert qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "-o", "med.yaml")[0] == 0
    merge = qfk_json("recipe", "new", "--method", "merge", "--from", "med.yaml")["args"]
    assert (merge["temperature"], merge["top_p"], merge["top_k"]) == (0.6, 0.95, 20) and merge["enable_thinking"] is True
    assert merge["export_dir"] and merge["adapter_name_or_path"] and "quantization_bit" not in merge
    code, _, err = qfk("recipe", "new", "--method", "predict", "--from", "med.yaml")
    assert code == 2 and "--eval-dataset" in err


def test_list_models(qfk):
    code, out, _ = qfk("recipe", "new", "--list-models")
    assert code == 0 and "Qwen3-235B-A22B-Thinking-2507" in out and "Qwen3-0.6B" in out


# --------------------------------------------------------------------------------------------
# curated recipes: ls, cp, generated from the presets
# --------------------------------------------------------------------------------------------
def test_curated_recipes_match_the_presets():
    p = subprocess.run([sys.executable, str(ROOT / "recipes" / "make_recipes.py"), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_ls_and_cp(work, qfk, qfk_json):
    items = qfk_json("recipe", "ls")
    assert {"qwen3-4b-medical-lora", "qwen3-1.7b-translation-qlora", "qwen3-4b-orpo", "qwen3-4b-medical-merge",
            "qwen3-4b-medical-predict", "qwen3-1.7b-translation-predict", "qwen3-1.7b-translation-merge"} <= set(items)
    assert "75%" in items["qwen3-4b-medical-lora"]["description"]
    code, _, err = qfk("recipe", "cp", "qwen3-4b-medical-lora", "mine.yaml")
    assert code == 0, err
    original = (ROOT / "recipes" / "qwen3-4b-medical-lora.yaml").read_text()
    assert (work / "mine.yaml").read_text() == original.replace("qwen3-4b-medical-lora.yaml", "mine.yaml")  # commands name the copy
    assert qfk("recipe", "cp", "qwen3-4b-medical-lora", "mine.yaml")[0] == 2  # no silent overwrite
    assert qfk("recipe", "cp", "nope", "x.yaml")[0] == 2


def test_mix_entries_are_registered_from_their_base(work):
    made = ensure_mix_entries(["demo_medical__n100", "demo_medical", "unknown__n3"], work / "data")
    assert made == ["demo_medical__n100"]
    assert registry(work)["demo_medical__n100"]["num_samples"] == 100
    assert ensure_mix_entries(["demo_medical__n100"], work / "data") == []


# --------------------------------------------------------------------------------------------
# qfk recipe check: LLaMA-Factory's parser and the kit's rules
# --------------------------------------------------------------------------------------------
def _check(qfk, *args):
    code, out, err = qfk("recipe", "check", *args, "--json")
    assert code in (0, 1), err
    res = json.loads(out)
    assert (code == 1) == (not res["ok"])
    return res["findings"]


def _has(findings, check, severity, text=""):
    """A finding of id ``check`` with ``severity`` and ``text`` in its message (with its locator in front: ``where: message``)."""
    return any(f["id"] == check and f["severity"] == severity and text in f"{f['where']}: {f['message']}" for f in findings)


@pytest.fixture
def med_recipe(work, qfk, tiny_config):
    code, _, err = qfk("recipe", "new", "--model", str(tiny_config), "--method", "lora", "--dataset", "demo_medical",
                       "-o", "med.yaml", "use_cpu=true", "bf16=false")
    assert code == 0, err
    return "med.yaml"


@pytest.mark.slow
def test_check_passes_a_good_recipe(med_recipe, qfk):
    f = _check(qfk, med_recipe)
    assert _has(f, "keys", "ok", "parses every key") and _has(f, "cutoff", "ok") and _has(f, "think", "ok")
    assert not [x for x in f if x["severity"] == "error"]


@pytest.mark.slow
@pytest.mark.parametrize("override,check,text", [
    ("foo=1", "keys", "not used by the HfArgumentParser"),
    ("lora_rank=x", "keys", "lora_rank"),
    ("eval_strategy=no", "keys", "eval_strategy"),
    ("dataset=nope", "datasets", "Undefined dataset nope"),
    ("dataset=demo_preference", "ranking", "not applicable"),
    ("template=llama3", "template", "not a Qwen3 template"),
    ("enable_thinking=false", "think", "strips every think block"),
    ("cutoff_len=64", "cutoff", "before </think>"),
])
def test_check_catches_each_mistake(med_recipe, qfk, override, check, text):
    f = _check(qfk, med_recipe, override)
    assert _has(f, check, "error", text), f


@pytest.mark.slow
def test_check_output_dir_states(med_recipe, qfk, work):
    out = Path(load_recipe(med_recipe)["output_dir"])
    (out / "checkpoint-20").mkdir(parents=True)
    assert _has(_check(qfk, med_recipe, "--no-stats"), "output", "warn", "RESUMES")
    (out / "checkpoint-20").rmdir()
    (out / "adapter_model.safetensors").write_bytes(b"x")
    assert _has(_check(qfk, med_recipe, "--no-stats"), "output", "error", "already exists")
    assert _has(_check(qfk, med_recipe, "--no-stats", "overwrite_output_dir=true"), "output", "warn", "overwritten")


@pytest.mark.slow
def test_check_machine_and_paths(med_recipe, qfk, work):
    import torch

    spaced = _check(qfk, med_recipe, "--no-stats", "output_dir=saves/my run")
    assert _has(spaced, "paths", "warn", "spaces")
    if not torch.cuda.is_available():
        f = _check(qfk, med_recipe, "--no-stats", "quantization_bit=4", "quantization_method=bnb")
        assert _has(f, "gpu", "error", "needs a CUDA GPU")
    f = _check(qfk, med_recipe, "--no-stats", "deepspeed=ds.json")
    assert _has(f, "paths", "error", "ds.json not found")


@pytest.mark.slow
def test_check_think_and_sampling_on_inference_recipes(work, qfk, tiny_config):
    assert qfk("recipe", "new", "--model", str(tiny_config), "--method", "lora", "--dataset", "demo_translation",
               "-o", "mt.yaml", "use_cpu=true", "bf16=false")[0] == 0
    assert _has(_check(qfk, "mt.yaml", "--no-stats", "enable_thinking=true"), "think", "warn", "empty")
    assert qfk("recipe", "new", "--method", "predict", "--from", "mt.yaml", "--eval-dataset", "demo_translation_test",
               "--sample", "-o", "p.yaml")[0] == 0
    f = _check(qfk, "p.yaml")
    assert _has(f, "sampling", "ok") and _has(f, "keys", "ok")
    (work / "bare.yaml").write_text("\n".join(l for l in (work / "p.yaml").read_text().splitlines()
                                               if not l.startswith(("temperature", "top_p", "top_k", "do_sample"))))
    assert _has(_check(qfk, "bare.yaml"), "sampling", "warn", "not Qwen3's")
    assert _has(_check(qfk, "p.yaml", "do_sample=false", "enable_thinking=true"), "sampling", "warn", "greedy")
    assert _has(_check(qfk, "p.yaml", "do_sample=false"), "sampling", "ok", "deterministic")  # non-thinking: reproducible
    assert _has(_check(qfk, "p.yaml", "template=qwen3_nothink"), "template", "warn", "think switch")


@pytest.mark.slow
def test_curated_recipes_pass_check(tmp_path, monkeypatch, qfk):
    """Each curated recipe, copied into a workspace holding data under the real names, passes."""
    sys.path.insert(0, str(ROOT / "recipes"))
    import make_recipes

    w = tmp_path / "cur"
    make_recipes.prepare(w)
    monkeypatch.chdir(w)
    monkeypatch.setenv("QFK_DATA_DIR", str(w / "data"))
    for name in sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml")):
        assert qfk("recipe", "cp", name, f"{name}.yaml")[0] == 0
        f = _check(qfk, f"{name}.yaml", "--stats-rows", "50", "--gpu")  # curated recipes are for a GPU machine
        fails = [x for x in f if x["severity"] == "error"]
        assert not fails, (name, fails)
        assert _has(f, "keys", "ok"), (name, f)


# --------------------------------------------------------------------------------------------
# --deepspeed none: no key, no shipped file
# --------------------------------------------------------------------------------------------
def test_deepspeed_none_is_decided_by_the_builder(work):
    from qwen_factory_kit.recipe.build import RecipeRequest, new_recipe

    default = new_recipe(RecipeRequest(method="full", model="Qwen3-8B", datasets=["demo_medical"]))
    assert default.args["deepspeed"] == "deepspeed/ds_z3_config.json" and default.info["files"]
    off = new_recipe(RecipeRequest(method="full", model="Qwen3-8B", datasets=["demo_medical"], deepspeed="none"))
    assert "deepspeed" not in off.args and "deepspeed" not in off.comments and off.info["files"] == {}
    assert "deepspeed" not in off.render()
    z2 = presets.method_preset("full", presets.resolve_model("Qwen3-0.6B"), deepspeed="z2")
    assert z2.training["deepspeed"] == "z2"
    assert "deepspeed" not in presets.method_preset("full", presets.resolve_model("Qwen3-8B"), deepspeed="none").training
    with pytest.raises(QfkError, match="unknown DeepSpeed preset"):
        presets.method_preset("full", presets.resolve_model("Qwen3-8B"), deepspeed="z9")


def test_recipe_new_deepspeed_none_writes_no_deepspeed_folder(work, qfk):
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "full", "--dataset", "demo_medical",
                       "--deepspeed", "none", "-o", "full.yaml")
    assert code == 0, err
    assert not (work / "deepspeed").exists() and "deepspeed" not in load_recipe(work / "full.yaml")
    assert "deepspeed" not in err  # no 'wrote deepspeed/...' line
