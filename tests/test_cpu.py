"""The CPU path (recipe/cpu.py): which keys need a GPU and the overrides that run a recipe on a CPU
(one decision for qfk train, qfk eval and qfk recipe check); qfk train refusing a GPU recipe before
anything is written and ``--cpu`` training it; ``--model qfk-tiny`` and ``recipe new --device cpu``;
the demo's own-data commands run as printed."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_factory_kit import lfbridge
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.launch import torchrun
from qwen_factory_kit.recipe import check
from qwen_factory_kit.recipe.cpu import CPU_ENV, CPU_KEYS, cpu_plan, gpu_needs, refusal
from qwen_factory_kit.recipe.document import load_recipe

QLORA_ON_DEEPSPEED = {"quantization_bit": 4, "quantization_method": "bnb", "optim": "paged_adamw_8bit", "bf16": True,
                      "deepspeed": "deepspeed/ds_z3_config.json", "enable_liger_kernel": True, "flash_attn": "fa2",
                      "preprocessing_num_workers": 16, "dataloader_num_workers": 4}
NO_CUDA = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a child process that sees no GPU, on any machine


# --------------------------------------------------------------------------------------------
# the decision (pure)
# --------------------------------------------------------------------------------------------
def test_a_recipe_for_the_cpu_needs_nothing():
    plan = cpu_plan({"use_cpu": True, "bf16": False, "preprocessing_num_workers": 1}, False)
    assert plan.needs == () and plan.findings == [] and not plan.refused
    assert plan.overrides == CPU_KEYS == {"use_cpu": True, "bf16": False}


def test_bf16_is_refused_only_without_cuda():
    args = {"bf16": True, "output_dir": "saves/x"}
    plan = cpu_plan(args, False)
    assert plan.refused and plan.text == "use_cpu=true bf16=false"
    (f,) = plan.findings
    assert f.id == "gpu" and f.severity == "error" and "no CUDA GPU, and the recipe needs a GPU: bf16: true" in f.message
    assert f.fix.startswith("use_cpu=true bf16=false to run it on this CPU") and "--cpu" in f.fix
    on_gpu = cpu_plan(args, True)
    assert on_gpu.findings == [] and on_gpu.overrides == plan.overrides  # --cpu on a GPU machine applies the same


def test_every_gpu_key_and_the_override_that_removes_it():
    plan = cpu_plan(QLORA_ON_DEEPSPEED, False)
    assert [n.key for n in plan.needs] == ["bf16", "quantization_bit", "optim", "deepspeed", "enable_liger_kernel", "flash_attn"]
    assert plan.overrides == {"use_cpu": True, "bf16": False, "quantization_bit": None, "optim": "adamw_torch", "deepspeed": None,
                              "enable_liger_kernel": False, "flash_attn": "auto", "preprocessing_num_workers": 1,
                              "dataloader_num_workers": 0}
    assert "quantization_bit=null" in plan.items() and "deepspeed=null" in plan.items()
    assert "null: as if the recipe did not set the key" in plan.findings[0].fix
    applied = {**QLORA_ON_DEEPSPEED, **plan.overrides}
    assert gpu_needs(applied) == [] and cpu_plan(applied, False).findings == []


@pytest.mark.parametrize("args,severity", [
    ({"fp16": True}, "warn"), ({"flash_attn": "fa2"}, "warn"), ({"flash_attn": "fa3"}, "error"), ({"pure_bf16": True}, "error"),
    ({"tf32": True}, "error"), ({"use_unsloth": True}, "error"), ({"bf16_full_eval": True}, "error"),
    ({"quantization_bit": 8}, "error"), ({"quantization_bit": 4, "quantization_method": "hqq"}, None),
    ({"optim": "adamw_8bit"}, "error"), ({"optim": "adamw_torch"}, None),
])
def test_what_stops_and_what_only_runs_not_as_meant(args, severity):
    """As tried on a machine without CUDA (the module docstring): errors stop LLaMA-Factory, warnings run."""
    found = cpu_plan(args, False).findings
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_use_cpu_on_a_gpu_machine_is_a_cpu_run():
    (f,) = cpu_plan({"use_cpu": True, "bf16": True}, True).findings
    assert f.severity == "warn" and f.message.startswith("use_cpu: true runs it on the CPU: the recipe runs, but not as meant")


def test_worker_counts_for_a_small_machine():
    assert cpu_plan({"preprocessing_num_workers": 1, "dataloader_num_workers": 0}, False).overrides == CPU_KEYS
    assert cpu_plan({}, False, written=True).overrides == {**CPU_KEYS, "preprocessing_num_workers": 1, "dataloader_num_workers": 0}


def test_the_refusal_names_the_overrides_and_the_command():
    err = refusal(cpu_plan(QLORA_ON_DEEPSPEED, False), "sft.yaml", "qfk train sft.yaml lr=1")
    assert err.message.startswith("sft.yaml needs a GPU and this machine has no CUDA device: bf16: true")
    assert "quantization_bit: 4 (bitsandbytes" in err.message and "flash_attn" not in err.message  # fa2 only warns
    assert err.hint.startswith("to run it on this CPU: qfk train sft.yaml lr=1 --cpu (it applies use_cpu=true bf16=false "
                               "quantization_bit=null optim=adamw_torch deepspeed=null")


def test_the_overrides_pass_llamafactorys_parser_here(tmp_path):
    """LLaMA-Factory's own parser takes a QLoRA + DeepSpeed + liger recipe once the overrides are applied."""
    args = {"model_name_or_path": "m", "stage": "sft", "do_train": True, "finetuning_type": "lora", "dataset": "d",
            "template": "qwen3", "output_dir": str(tmp_path / "out"), "report_to": "none", **QLORA_ON_DEEPSPEED}
    assert lfbridge.parse_recipe_args({**args, **cpu_plan(args, False).overrides}) is None


def test_recipe_check_machine_rule_is_the_same_decision():
    args = {"bf16": True, "quantization_bit": 4}
    (f,) = [f for f in check.check_machine(args, machine=check.Machine(cuda=False)) if f.id == "gpu"]
    assert f.as_dict() == cpu_plan(args, False).findings[0].as_dict()
    assert [f for f in check.check_machine(args, machine=check.Machine(cuda=False, for_gpu=True)) if f.severity == "error"] == []


# --------------------------------------------------------------------------------------------
# the commands, no model (this machine is made to look GPU-less)
# --------------------------------------------------------------------------------------------
@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torchrun, "device_count", lambda: 0)
    monkeypatch.setattr(check, "_cuda", lambda: False)


def test_train_refuses_before_anything_is_written(tmp_path, monkeypatch, qfk, no_gpu):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sft.yaml").write_text("output_dir: saves/run\nbf16: true\nquantization_bit: 4\ndeepspeed: ds.json\n")
    for extra in ([], ["--dry-run"], ["--json"]):
        code, _, err = qfk("train", "sft.yaml", "learning_rate=1e-4", *extra)
        assert code == 2 and "Traceback" not in err, err
        assert "sft.yaml needs a GPU and this machine has no CUDA device: bf16: true" in err
        assert ("qfk train sft.yaml learning_rate=1e-4 --cpu (it applies use_cpu=true bf16=false quantization_bit=null "
                "deepspeed=null; null: as if the recipe did not set the key)") in " ".join(err.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft.yaml"]  # no output_dir, no qfk_run.json, no deepspeed/


def test_train_cpu_dry_run_shows_the_overrides_first(tmp_path, monkeypatch, qfk, no_gpu):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sft.yaml").write_text("output_dir: saves/run\nbf16: true\ndeepspeed: ds.json\n")
    code, out, err = qfk("train", "sft.yaml", "--cpu", "preprocessing_num_workers=2", "--dry-run", "--no-check", "--json")
    assert code == 0, err
    launch = json.loads(out)
    assert launch["argv"][-5:] == ["sft.yaml", "use_cpu=true", "bf16=false", "deepspeed=null", "preprocessing_num_workers=2"]
    assert not launch["distributed"]  # DeepSpeed removed: one process
    assert json.loads(launch["env"][CPU_ENV]) == {"use_cpu": True, "bf16": False, "deepspeed": None}
    assert not (tmp_path / "saves").exists()


def test_recipe_check_says_error_here_and_not_with_gpu(tmp_path, monkeypatch, qfk, no_gpu):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sft.yaml").write_text("output_dir: saves/run\nbf16: true\n")
    code, out, _ = qfk("recipe", "check", "sft.yaml", "--no-stats", "--json")
    gpu = [f for f in json.loads(out)["findings"] if f["id"] == "gpu"]
    assert code == 1 and [f["severity"] for f in gpu] == ["error"]
    assert gpu[0]["fix"] == cpu_plan({"output_dir": "saves/run", "bf16": True}, False).findings[0].fix
    code, out, _ = qfk("recipe", "check", "sft.yaml", "--no-stats", "--gpu", "--json")
    assert not [f for f in json.loads(out)["findings"] if f["id"] == "gpu"]
    code, out, _ = qfk("recipe", "check", "sft.yaml", "--no-stats", "use_cpu=true", "bf16=false", "--json")  # the fix
    assert not [f for f in json.loads(out)["findings"] if f["id"] == "gpu"]


def test_eval_refuses_a_runs_gpu_recipe_unless_cpu():
    from qwen_factory_kit.post.evaluate import EvalRequest, recipe_overrides

    source = {"model_name_or_path": "m", "bf16": True, "preprocessing_num_workers": 16}
    with pytest.raises(QfkError) as refused:
        recipe_overrides(EvalRequest("saves/run", "val", command="qfk eval saves/run --dataset val"), source, gpus=0)
    assert "evaluating saves/run needs a GPU" in refused.value.message
    assert refused.value.hint.startswith("to run it on this CPU: qfk eval saves/run --dataset val --cpu (it applies use_cpu=true")
    keys = {**CPU_KEYS, "preprocessing_num_workers": 1, "dataloader_num_workers": 0}
    assert recipe_overrides(EvalRequest("saves/run", "val", cpu=True), source, gpus=0) == keys
    assert recipe_overrides(EvalRequest("saves/run", "val", cpu=True), source, gpus=1) == keys  # --cpu on a GPU machine
    assert recipe_overrides(EvalRequest("saves/run", "val"), source, gpus=1) == {}
    assert recipe_overrides(EvalRequest("m", "val"), {"bf16": False}, gpus=0) == keys  # nothing stops: the CPU keys, as before


def test_qfk_tiny_is_a_model_name_everywhere(tiny_model):
    from qwen_factory_kit.post.evaluate import resolve_target
    from qwen_factory_kit.post.served import resolve_served
    from qwen_factory_kit.recipe.presets import resolve_model

    info = resolve_model("qfk-tiny")
    assert info.local and Path(info.path) == tiny_model and info.kind == "hybrid"
    assert Path(resolve_served("qfk-tiny").model) == tiny_model
    assert Path(resolve_target("qfk-tiny").model) == tiny_model


def test_recipe_new_device_cpu_refuses_what_needs_a_gpu(work, qfk):
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-1.7B", "--device", "cpu", "--method", "qlora", "--dataset", "demo_medical")
    assert code == 2 and "--method lora --device cpu" in err
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-1.7B", "--device", "cpu", "--method", "full", "--dataset", "demo_medical",
                       "--deepspeed", "z3")
    assert code == 2 and "drop --deepspeed" in err


# --------------------------------------------------------------------------------------------
# training the tiny model on the CPU
# --------------------------------------------------------------------------------------------
def qfk_process(*args, cwd, env=NO_CUDA, check_rc: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "qwen_factory_kit", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600, check=False)
    if check_rc:
        assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return p


@pytest.mark.slow
def test_cpu_trains_a_gpu_recipe_and_the_record_says_so(work, tiny_model, qfk):
    """A recipe for a GPU (bf16: true, 16 preprocessing workers): refused without a GPU, trained with --cpu."""
    code, _, err = qfk("recipe", "new", "--model", tiny_model, "--method", "lora", "--dataset", "demo_medical", "-o", "gpu.yaml",
                       "output_dir=saves/gpu-recipe")
    assert code == 0, err
    assert load_recipe("gpu.yaml")["bf16"] is True
    p = qfk_process("train", "gpu.yaml", "max_steps=2", cwd=work, check_rc=False)
    assert p.returncode == 2 and "qfk train gpu.yaml max_steps=2 --cpu" in " ".join(p.stderr.split()), p.stderr
    assert not (work / "saves" / "gpu-recipe").exists()
    p = qfk_process("train", "gpu.yaml", "--cpu", "max_steps=2", "--json", cwd=work)
    res = json.loads(p.stdout)
    assert res["status"] == "ok" and res["last_step"] == 2
    cpu = {"use_cpu": True, "bf16": False, "preprocessing_num_workers": 1, "dataloader_num_workers": 0}
    assert res["cpu_overrides"] == cpu
    record = json.loads((work / "saves" / "gpu-recipe" / "qfk_run.json").read_text())
    assert record["status"] == "ok" and record["cpu_overrides"] == cpu
    assert record["overrides"] == ["use_cpu=true", "bf16=false", "preprocessing_num_workers=1", "dataloader_num_workers=0",
                                   "max_steps=2"]
    assert record["args"]["use_cpu"] is True and record["args"]["bf16"] is False and record["device"] == "cpu"


@pytest.mark.slow
def test_the_demos_own_data_commands_run_as_printed(tmp_path, monkeypatch, tiny_model):
    """convert -> recipe new --model qfk-tiny --device cpu -> train, exactly as qfk demo prints them, in a fresh
    folder: the recipe passes LLaMA-Factory's parser (qfk recipe check) and trains as it is."""
    from qwen_factory_kit.demo import OWN_NAME, OWN_RECIPE, own_data_commands

    monkeypatch.delenv("QFK_DATA_DIR")  # as a user's shell: ./data
    env = {k: v for k, v in NO_CUDA.items() if k != "QFK_DATA_DIR"}
    commands = own_data_commands()
    assert commands[1] == f"qfk recipe new --model qfk-tiny --device cpu --method lora --dataset {OWN_NAME} -o {OWN_RECIPE}"
    for command in commands[:2]:
        qfk_process(*shlex.split(command)[1:], cwd=tmp_path, env=env)
    args = load_recipe(tmp_path / OWN_RECIPE)
    assert Path(args["model_name_or_path"]) == tiny_model
    assert args["use_cpu"] is True and args["bf16"] is False and args["preprocessing_num_workers"] == 1
    assert "quantization_bit" not in args and "deepspeed" not in args and not args.get("enable_liger_kernel")
    assert "# Device: CPU (--device cpu): use_cpu true, bf16 false" in (tmp_path / OWN_RECIPE).read_text()
    p = qfk_process("recipe", "check", OWN_RECIPE, "--json", cwd=tmp_path, env=env)
    findings = json.loads(p.stdout)["findings"]
    assert any(f["id"] == "keys" and f["severity"] == "ok" for f in findings) and not [f for f in findings if f["id"] == "gpu"]
    p = qfk_process(*shlex.split(commands[2])[1:], "--json", cwd=tmp_path, env=env)
    res = json.loads(p.stdout)
    assert res["status"] == "ok" and res["last_step"] >= 1 and "cpu_overrides" not in res
    assert (tmp_path / res["output_dir"] / "adapter_model.safetensors").is_file()
