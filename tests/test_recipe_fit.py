"""qfk recipe new sized to the data and the GPU: cutoff_len from the token lengths, the memory
model's estimate in the header, --gpu-memory fitting, liger and neat packing (recipe/sizing.py)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from conftest import ROOT, read_jsonl, write_jsonl

from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.recipe import memory, presets, sizing
from qwen_factory_kit.recipe.build import RecipeRequest, new_recipe
from qwen_factory_kit.recipe.document import load_recipe
from qwen_factory_kit.recipe.request import dataset_facts
from qwen_factory_kit.tokens import CUTOFF_CAP, cutoff_for

GPU_WITH_LIGER = sizing.Gpu(cuda=True, memory_gb=79.2, count=1, liger=True, name="Test GPU")


@pytest.fixture(autouse=True)
def no_gpu_here(monkeypatch):
    """recipe new sees no GPU, whatever this machine has (tests that want one pass RecipeRequest.gpu)."""
    monkeypatch.setattr(sizing.Gpu, "here", classmethod(lambda cls: sizing.NO_GPU))


def _new(qfk, *args):
    code, out, err = qfk("recipe", "new", *args)
    assert code == 0, err
    return out, err


def _new_json(qfk, *args) -> dict:
    out, _ = _new(qfk, *args, "--json")
    return json.loads(out)


def _header(text: str) -> str:
    return "\n".join(l for l in text.splitlines() if l.startswith("#"))


def _check_ok(qfk, path: str) -> list[dict]:
    """qfk recipe check of a recipe sized for a GPU, for a GPU machine (--gpu: whatever this one has)."""
    code, out, err = qfk("recipe", "check", path, "--gpu", "--json")
    res = json.loads(out)
    assert code == 0 and res["ok"], [f for f in res["findings"] if f["severity"] == "error"]
    return res["findings"]


# --------------------------------------------------------------------------------------------
# the cutoff rule (one function for qfk stats, recipe check and recipe new)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("longest,cap,want", [
    (1489, CUTOFF_CAP, 1536), (1536, CUTOFF_CAP, 1536), (1537, CUTOFF_CAP, 1792), (0, CUTOFF_CAP, 256),
    (9000, CUTOFF_CAP, 8192), (9000, None, 9216), (5000, 3000, 2816), (100, 10, 256),
])
def test_cutoff_is_the_smallest_256_multiple_holding_the_longest_row(longest, cap, want):
    assert cutoff_for(longest, cap) == want


def test_budget_cap_is_the_largest_allowed_multiple():
    assert sizing.budget_cap(lambda c: c <= 1000, 2048) == 768
    assert sizing.budget_cap(lambda c: True, 2048) == 2048
    assert sizing.budget_cap(lambda c: False, 2048) is None


def test_memory_settings_read_the_recipe_keys():
    s = sizing.memory_settings({"deepspeed": "deepspeed/ds_z3_offload_config.json", "enable_liger_kernel": True,
                                "disable_gradient_checkpointing": True, "optim": "paged_adamw_8bit", "bf16": True}, n_gpus=4)
    assert (s["deepspeed"], s["offload"], s["n_gpus"], s["liger"], s["gradient_checkpointing"]) == (3, True, 4, True, False)
    assert s["optim"] == "paged_adamw_8bit" and s["bf16"] and s["lora_rank"] == 8  # LLaMA-Factory's default rank
    assert sizing.memory_settings({})["deepspeed"] is None and sizing.memory_settings({}, n_gpus=4)["n_gpus"] == 1
    assert sizing.memory_method({"stage": "dpo", "pref_loss": "orpo"}) == "orpo"
    assert sizing.memory_method({"stage": "sft", "finetuning_type": "lora", "quantization_bit": 4}) == "qlora"
    assert sizing.memory_method({"stage": "sft", "finetuning_type": "full"}) == "full"


def test_presets_hold_no_memory_figures_of_their_own():
    assert not hasattr(presets.SIZES["4b"], "lora_vram_gb") and not hasattr(presets.MethodPreset(), "vram_gb")
    assert "GB" not in presets.GUIDE_4B and "GB" not in presets.GUIDE_8B
    assert presets.LIGER.keys == {"enable_liger_kernel": True} and "38.2 GB -> 14.1 GB" in presets.LIGER.measured
    assert presets.NEAT_PACKING.keys == {"packing": True, "neat_packing": True} and "1.48x" in presets.NEAT_PACKING.measured


# --------------------------------------------------------------------------------------------
# memory in the header, --explain-memory
# --------------------------------------------------------------------------------------------
def test_header_shows_the_memory_model_estimate_for_4b_lora(work, qfk):
    out, _ = _new(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--no-stats")
    est = memory.estimate(memory.shape_for_size("4b"), method="lora", batch=4, cutoff=2048, lora_rank=32, lora_dropout=0.05)
    header = _header(out)
    assert (f"GPU memory: about {est.expandable_gb:.1f} GB with qfk train (expandable segments), peak {est.peak_gb:.1f} GB "
            "with PyTorch's default allocator") in header and "qfk recipe new --explain-memory" in header
    assert 30 < est.peak_gb < 45 and 22 < est.expandable_gb < 33  # measured 37.3 and 27.5 GB, not the guidance's "about 8 GB"
    assert "about 8 GB" not in out and "Estimated GPU memory" not in out
    assert f"# Allocator: {presets.ALLOCATOR.note}" in header
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (measured: 1.7B QLoRA 19.0 -> 7.6 GB, 4B LoRA 37.3 -> 27.5 GB); " \
           "with llamafactory-cli, export it first" in header


def test_header_estimate_uses_the_longest_row(work, qfk):
    res = _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical")
    longest = res["decided"]["sizing"]["longest"]
    est = memory.estimate(memory.shape_for_size("4b"), method="lora", batch=4, cutoff=res["args"]["cutoff_len"],
                          seq_len=longest, lora_rank=32, lora_dropout=0.05)
    assert res["decided"]["memory"]["peak_gb"] == round(est.peak_gb, 2)
    assert res["decided"]["memory"]["expandable_gb"] == round(est.expandable_gb, 2)
    assert f"batch 4 x {8 * math.ceil(longest / 8)} tokens" in res["recipe"]


def test_qlora_header_explains_the_measured_peak(work, qfk):
    out, _ = _new(qfk, "--model", "Qwen3-1.7B", "--method", "qlora", "--dataset", "demo_translation", "--no-stats")
    header = " ".join(l.lstrip("# ").strip() for l in _header(out).splitlines())
    assert "measured: the 1.7B QLoRA translation recipe" in header and "19.0 GB" in header and "caching allocator" in header
    assert "7.6 GB" in header and "Allocator: qfk train sets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in header


def test_explain_memory_prints_the_parts(work, qfk):
    out, err = _new(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--no-stats", "--explain-memory")
    assert out.startswith("# qfk recipe:")  # stdout stays the recipe
    est = memory.estimate(memory.shape_for_size("4b"), method="lora", batch=4, cutoff=2048, lora_rank=32, lora_dropout=0.05)
    assert err.splitlines()[:len(est.lines())] == est.lines()
    res = _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--no-stats", "--explain-memory")
    assert res["decided"]["memory"]["lines"] == est.lines()


# --------------------------------------------------------------------------------------------
# --gpu-memory, and the GPU this machine has
# --------------------------------------------------------------------------------------------
def test_gpu_memory_24_for_4b_lora_picks_liger_and_keeps_the_effective_batch(work, qfk):
    _new(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--no-stats", "--gpu-memory", "24",
         "--liger", "-o", "r.yaml")
    args = load_recipe("r.yaml")
    assert args["enable_liger_kernel"] is True
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 16
    text = (work / "r.yaml").read_text()
    assert "# Fitted to 24 GB (--gpu-memory), effective batch 16:" in text and "# Liger kernel: on (--liger)" in text
    assert "38.2 GB -> 14.1 GB" in text  # what liger buys, as measured
    findings = _check_ok(qfk, "r.yaml")  # liger-kernel is not installed here: check must not fail on it
    assert any(f["id"] == "keys" and f["severity"] == "ok" for f in findings)


def test_gpu_memory_24_without_liger_halves_the_batch(work, qfk):
    res = _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--no-stats",
                    "--gpu-memory", "24", "--no-liger")
    args = res["args"]
    assert "enable_liger_kernel" not in args and args["per_device_train_batch_size"] < 4
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 16
    assert res["decided"]["sizing"]["fit"]["fits"] and "per-device batch 4 -> 2" in res["recipe"]


def test_gpu_memory_8_for_8b_full_cannot_fit(work, qfk):
    code, out, err = qfk("recipe", "new", "--model", "Qwen3-8B", "--method", "full", "--dataset", "demo_medical",
                         "--gpu-memory", "8", "--no-stats", "-o", "full.yaml")
    assert code == 2 and "Traceback" not in err and not (work / "full.yaml").exists()
    assert "does not fit 8 GB" in err and "needs about" in err
    for suggestion in ("QLoRA (--method qlora)", "cutoff_len", "offload", "a bigger GPU"):
        assert suggestion in err, suggestion


def test_the_detected_gpu_is_the_budget(work):
    small = sizing.Gpu(cuda=True, memory_gb=24, count=1, liger=False, name="Test GPU")
    r = new_recipe(RecipeRequest(method="lora", model="Qwen3-4B", datasets=["demo_medical"], stats=False, gpu=small))
    assert r.args["per_device_train_batch_size"] * r.args["gradient_accumulation_steps"] == 16
    assert "Fitted to 24 GB (this machine's Test GPU)" in r.render()
    with pytest.raises(QfkError, match="does not fit") as exc:
        new_recipe(RecipeRequest(method="full", model="Qwen3-8B", datasets=["demo_medical"], stats=False, gpu=small))
    assert "--gpu-memory GB --gpus N" in exc.value.hint
    none = new_recipe(RecipeRequest(method="lora", model="Qwen3-4B", datasets=["demo_medical"], stats=False, gpu=sizing.NO_GPU))
    assert none.info["sizing"]["gpu_budget_gb"] is None and "Fitted" not in none.render()


# --------------------------------------------------------------------------------------------
# cutoff_len from the data
# --------------------------------------------------------------------------------------------
def test_cutoff_from_the_examples_is_the_smallest_256_multiple_above_the_longest_row(work, qfk, qfk_json):
    stats = qfk_json("stats", "demo_medical")  # template qwen3, enable_thinking true: as the recipe trains it
    longest = stats["total"]["max"]
    res = _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical")
    cutoff = res["args"]["cutoff_len"]
    assert cutoff == stats["recommended_cutoff_len"] == cutoff_for(longest)
    assert cutoff % 256 == 0 and cutoff - 256 < longest <= cutoff
    assert f"# cutoff_len {cutoff}: holds all {stats['rows']} rows, longest {longest} tokens" in res["recipe"]


def test_no_stats_and_explicit_cutoff_skip_the_choice(work, qfk):
    assert _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--no-stats")["args"]["cutoff_len"] == 2048
    res = _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--cutoff-len", "1000")
    assert res["args"]["cutoff_len"] == 1000 and "# cutoff_len 1000 (--cutoff-len): holds all" in res["recipe"]


@pytest.fixture
def long_rows(work, qfk):
    """A registered dataset with one row longer than the 8192 cap."""
    rows = [{"instruction": "Say hi.", "input": "", "output": "hi"}] * 2 + [{"instruction": "word " * 9000, "input": "", "output": "ok"}]
    write_jsonl(work / "long.jsonl", rows)
    assert qfk("datasets", "add", str(work / "long.jsonl"), "--name", "long")[0] == 0
    return "long"


def test_rows_over_the_cap_stop_recipe_new_with_the_filter_command(work, qfk, long_rows):
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", long_rows)
    assert code == 2 and "1 of 3 rows of long is longer than cutoff_len 8192" in err
    assert "qfk datasets filter long --max-tokens 8192, then --dataset long__max8192" in err and "--cutoff-len 8192" in err
    assert "or let recipe new drop them: --drop-long" in err
    res = _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", long_rows, "--cutoff-len", "8192")
    assert res["args"]["cutoff_len"] == 8192
    assert "1 of 3 rows of long is longer" in res["recipe"] and "qfk datasets filter long --max-tokens 8192" in res["recipe"]


def test_the_gpu_budget_caps_the_cutoff(work, qfk, long_rows):
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", long_rows, "--gpu-memory", "12")
    assert code == 2 and "(the most that fits 12 GB)" in err and "qfk datasets filter long --max-tokens" in err
    cap = int(err.split("--max-tokens ")[1].split(",")[0])
    assert cap < 8192 and cap % 256 == 0


@pytest.fixture
def planted(work, qfk):
    """A registered dataset of 20 short rows and 3 planted rows of about 700 tokens."""
    rows = [{"instruction": f"Say hi {i}.", "input": "", "output": "hi"} for i in range(20)]
    rows += [{"instruction": "word " * 700, "input": "", "output": f"ok {i}"} for i in range(3)]
    write_jsonl(work / "planted.jsonl", rows)
    assert qfk("datasets", "add", str(work / "planted.jsonl"), "--name", "planted")[0] == 0
    return "planted"


def _registered(work) -> list[str]:
    return list(json.loads((work / "data" / "dataset_info.json").read_text()))


def test_max_cutoff_caps_the_choice(work, qfk, planted):
    """--max-cutoff N: never a cutoff above N; rows over it stop recipe new, naming the filter and --drop-long."""
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", planted, "--max-cutoff", "512")
    assert code == 2 and "3 of 23 rows of planted are longer than cutoff_len 512 (--max-cutoff 512)" in err
    assert "qfk datasets filter planted --max-tokens 512" in err and "--drop-long" in err
    assert _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--max-cutoff", "8192")[
        "args"]["cutoff_len"] == _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical")["args"]["cutoff_len"]


def test_allowed_cutoffs_say_what_binds():
    fits = lambda c: type("Fit", (), {"fits": c <= 3000})()  # noqa: E731 - a budget that holds up to 3000 tokens
    ok, why = sizing._allowed(sizing.Wishes(max_cutoff=1024), None, None)
    assert (ok(1024), ok(1025), why) == (True, False, "--max-cutoff 1024")
    ok, why = sizing._allowed(sizing.Wishes(max_cutoff=20000), None, None)
    assert (ok(CUTOFF_CAP), ok(CUTOFF_CAP + 1)) == (True, False) and why.startswith(f"the cap of {CUTOFF_CAP}")
    ok, why = sizing._allowed(sizing.Wishes(max_cutoff=4096), fits, 24)
    assert (ok(3000), ok(3001), why) == (True, False, "the most that fits 24 GB")
    ok, why = sizing._allowed(sizing.Wishes(max_cutoff=2048), fits, 24)
    assert (ok(2048), ok(2049), why) == (True, False, "--max-cutoff 2048")


def test_drop_long_filters_the_rows_and_the_recipe_passes_check(work, qfk, planted):
    """--drop-long: the planted rows over the cap are filtered out (qfk datasets filter's NAME__max<N>, its rejects
    file), the recipe trains the filtered dataset and says so, and qfk recipe check passes on it."""
    before = _registered(work)
    res = _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", planted, "--max-cutoff", "512", "--drop-long",
                    "-o", "r.yaml")
    assert res["args"]["dataset"] == "planted__max512" and res["args"]["cutoff_len"] <= 512
    assert _registered(work) == [*before, "planted__max512"]
    d = res["decided"]["dropped"]["planted"]
    assert (d["dataset"], d["dropped"], d["read"], d["max_tokens"]) == ("planted__max512", 3, 23, 512)
    assert len(read_jsonl(work / "planted__max512.jsonl")) == 20 and len(read_jsonl(work / "planted__max512.rejects.jsonl")) == 3
    header = " ".join(l.lstrip("# ").strip() for l in _header(res["recipe"]).splitlines())
    assert ("Dropped 3 of 23 rows of planted over 512 tokens (--drop-long): planted__max512.jsonl, rejects in "
            "planted__max512.rejects.jsonl; the same as: qfk datasets filter planted --max-tokens 512 --template qwen3 "
            "--enable-thinking false") in header
    findings = _check_ok(qfk, "r.yaml")
    assert any(f["id"] == "cutoff" and f["severity"] == "ok" and f["where"] == "planted__max512" for f in findings)


def test_drop_long_builds_the_mix_over_the_filtered_dataset(work, qfk, planted):
    res = _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", f"{planted},demo_medical",
                    "--mix", f"{planted}=0.5,demo_medical=0.5", "--max-cutoff", "512", "--drop-long", "-o", "m.yaml")
    names = res["args"]["dataset"].split(",")
    assert names[0].startswith("planted__max512__n") and names[1].startswith("demo_medical")
    assert res["decided"]["mix"]["planted__max512"] == names[0]
    assert not any(n.startswith("planted__n") for n in _registered(work))  # the first, stopped pass registered nothing
    assert "Dropped 3 of 23 rows of planted over 512 tokens" in res["recipe"]
    _check_ok(qfk, "m.yaml")


def test_drop_long_at_a_given_cutoff_and_its_refusals(work, qfk, planted):
    res = _new_json(qfk, "--model", "Qwen3-4B", "--method", "lora", "--dataset", planted, "--cutoff-len", "600", "--drop-long")
    assert res["args"]["dataset"] == "planted__max600" and res["args"]["cutoff_len"] == 600
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", planted, "--drop-long",
                       "--no-stats")
    assert code == 2 and "--drop-long" in err and "--no-stats" in err


def test_real_medical_rows_pass_check_with_no_hand_edit(real_samples, tmp_path, monkeypatch, qfk):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QFK_DATA_DIR", str(tmp_path / "data"))
    src = real_samples / "medical_r1" / "val_sample.jsonl"
    if not src.is_file():
        pytest.skip("no real medical rows")
    assert qfk("convert", "medical-r1", str(src), "--name", "med")[0] == 0
    for model, method in (("Qwen3-4B", "lora"), ("Qwen3-1.7B", "qlora"), ("Qwen3-8B", "lora")):
        out, _ = _new(qfk, "--model", model, "--method", method, "--dataset", "med", "-o", f"{method}-{model}.yaml")
        args = load_recipe(f"{method}-{model}.yaml")
        assert args["cutoff_len"] % 256 == 0 and args["cutoff_len"] != 2048  # a real row is longer than the preset
        findings = _check_ok(qfk, f"{method}-{model}.yaml")
        assert any(f["id"] == "cutoff" and f["severity"] == "ok" for f in findings), model


# --------------------------------------------------------------------------------------------
# liger and neat packing
# --------------------------------------------------------------------------------------------
def test_liger_key_follows_the_flag(work, qfk):
    base = ("--model", "Qwen3-4B", "--method", "lora", "--dataset", "demo_medical", "--no-stats")
    assert _new_json(qfk, *base, "--liger")["args"]["enable_liger_kernel"] is True
    assert "enable_liger_kernel" not in _new_json(qfk, *base, "--no-liger")["args"]
    res = _new_json(qfk, *base)  # no CUDA GPU with liger-kernel: off
    assert "enable_liger_kernel" not in res["args"] and "# Liger kernel: off (no CUDA GPU here)" in res["recipe"]


def test_packing_only_for_single_turn_data_and_only_when_asked_or_on_a_liger_gpu(work, qfk):
    base = ("--model", "Qwen3-4B", "--method", "lora")
    single = _new_json(qfk, *base, "--dataset", "demo_medical", "--packing")
    assert single["args"]["packing"] is True and single["args"]["neat_packing"] is True
    assert single["args"]["cutoff_len"] > single["decided"]["sizing"]["longest"]  # LLaMA-Factory packs into cutoff - 1
    assert "# Packing: on (--packing; single-turn rows" in single["recipe"] and "1.48x" in single["recipe"]
    multi = _new_json(qfk, *base, "--dataset", "demo_finetome", "--packing")
    assert "packing" not in multi["args"] and "demo_finetome has multi-turn rows" in multi["recipe"]
    assert "packing" not in _new_json(qfk, *base, "--dataset", "demo_medical", "--packing", "--no-stats")["args"]
    assert "packing" not in _new_json(qfk, *base, "--dataset", "demo_medical", "--no-packing")["args"]
    assert "packing" not in _new_json(qfk, *base, "--dataset", "demo_medical")["args"]  # no GPU, no --packing
    orpo = _new_json(qfk, "--model", "Qwen3-4B", "--method", "orpo", "--dataset", "demo_preference", "--packing")
    assert "packing" not in orpo["args"]


def test_a_cuda_gpu_with_liger_turns_both_on_for_single_turn_sft(work):
    r = new_recipe(RecipeRequest(method="lora", model="Qwen3-4B", datasets=["demo_medical"], gpu=GPU_WITH_LIGER))
    assert r.args["enable_liger_kernel"] is True and r.args["packing"] is True and r.args["neat_packing"] is True
    assert r.args["per_device_train_batch_size"] * r.args["gradient_accumulation_steps"] == 16
    assert r.args["learning_rate"] == presets.SIZES["4b"].learning_rate
    text = r.render()
    assert "Liger kernel: on (a CUDA GPU with liger-kernel installed)" in text and "Packing: on (liger on a CUDA GPU" in text
    multi = new_recipe(RecipeRequest(method="lora", model="Qwen3-4B", datasets=["demo_finetome"], gpu=GPU_WITH_LIGER))
    assert multi.args["enable_liger_kernel"] is True and "packing" not in multi.args
    flags = new_recipe(RecipeRequest(method="lora", model="Qwen3-4B", datasets=["demo_medical"], gpu=GPU_WITH_LIGER,
                                     liger=False, packing=False))
    assert "enable_liger_kernel" not in flags.args and "packing" not in flags.args
    orpo = new_recipe(RecipeRequest(method="orpo", model="Qwen3-4B", datasets=["demo_preference"], gpu=GPU_WITH_LIGER))
    assert "enable_liger_kernel" not in orpo.args and "packing" not in orpo.args


def test_single_turn_from_the_manifest_or_a_scan(work, qfk):
    assert sizing.multi_turn_datasets([dataset_facts(n, "data") for n in ("demo_medical", "demo_translation")]) == []
    assert sizing.multi_turn_datasets([dataset_facts("demo_finetome", "data")]) == ["demo_finetome"]
    # hand-registered files (no manifest): every row is read
    write_jsonl(work / "hist.jsonl", [{"instruction": "q", "input": "", "output": "a", "history": []},
                                      {"instruction": "q2", "input": "", "output": "a2", "history": [["q1", "a1"]]}])
    write_jsonl(work / "flat.jsonl", [{"instruction": "q", "input": "", "output": "a", "history": []}])
    turn = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    write_jsonl(work / "chat1.jsonl", [{"conversations": turn}])
    write_jsonl(work / "chat2.jsonl", [{"conversations": turn}, {"conversations": turn + turn}])
    for name in ("hist", "flat"):
        assert qfk("datasets", "add", str(work / f"{name}.jsonl"), "--name", name, "--column", "history=history")[0] == 0
    for name in ("chat1", "chat2"):
        assert qfk("datasets", "add", str(work / f"{name}.jsonl"), "--name", name, "--formatting", "sharegpt")[0] == 0
    names = ("hist", "flat", "chat1", "chat2")
    assert sizing.multi_turn_datasets([dataset_facts(n, "data") for n in names]) == ["hist", "chat2"]


def test_overrides_win_over_the_sizing(work):
    r = new_recipe(RecipeRequest(method="lora", model="Qwen3-4B", datasets=["demo_medical"], gpu=GPU_WITH_LIGER,
                                 overrides={"cutoff_len": 4096, "enable_liger_kernel": False, "packing": False}))
    assert r.args["cutoff_len"] == 4096 and r.args["enable_liger_kernel"] is False and r.args["packing"] is False
    assert "neat_packing" not in r.args and "# cutoff_len 4096 (override)" in r.render()


# --------------------------------------------------------------------------------------------
# curated recipes do not depend on the machine
# --------------------------------------------------------------------------------------------
def test_curated_recipes_ignore_this_machines_gpu(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_recipes", ROOT / "recipes" / "make_recipes.py")
    make_recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_recipes)
    monkeypatch.delenv("QFK_DATA_DIR")
    monkeypatch.setattr(sizing.Gpu, "here", classmethod(lambda cls: GPU_WITH_LIGER))
    built = make_recipes.build_all(tmp_path)
    for name, text in built.items():
        assert text == (ROOT / "recipes" / name).read_text(encoding="utf-8"), name
