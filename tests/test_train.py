"""Training on CPU with the tiny Qwen3 model: llamafactory-cli train and qfk train on emitted recipes,
the kit's plugin (raw-row converters, callbacks, run record, loss plot), clean stop and resume,
torchrun, predict and merge recipes, failures."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, read_jsonl

from qwen_factory_kit.launch.torchrun import compose
from qwen_factory_kit.recipe.document import load_recipe

CPU = ["use_cpu=true", "bf16=false", "logging_steps=1", "preprocessing_num_workers=1", "dataloader_num_workers=0",
       "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "cutoff_len=1024"]
BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------------------------
# torchrun composition (no training)
# --------------------------------------------------------------------------------------------
def test_single_process_by_default():
    launch = compose("r.yaml", ["a=1"], environ={}, devices=0)
    assert launch.argv == [sys.executable, "-m", "qwen_factory_kit.launch", "r.yaml", "a=1"] and not launch.distributed


def test_torchrun_for_several_processes_nodes_and_deepspeed():
    env = {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    launch = compose("my recipes/r.yaml", ["output_dir=saves/a b"], nproc=8, environ=env, devices=8)
    a = launch.argv
    assert a[:3] == [sys.executable, "-m", "torch.distributed.run"] and launch.distributed
    assert a[a.index("--nnodes") + 1] == "2" and a[a.index("--node_rank") + 1] == "1"
    assert a[a.index("--nproc_per_node") + 1] == "8" and a[a.index("--master_addr") + 1] == "10.0.0.1"
    assert a[a.index("--master_port") + 1] == "29500"
    assert a[a.index("-m", 3) + 1] == "qwen_factory_kit.launch" and "my recipes/r.yaml" in a and "output_dir=saves/a b" in a
    assert launch.env["TORCH_NCCL_AVOID_RECORD_STREAMS"] == "1"
    assert compose("r.yaml", [], environ={}, devices=1, args={"deepspeed": "ds.json"}).distributed
    assert compose("r.yaml", [], environ={"FORCE_TORCHRUN": "1"}, devices=0).distributed
    assert compose("r.yaml", [], environ={}, devices=4).nproc == 4  # every visible GPU, as llamafactory-cli does
    elastic = compose("r.yaml", [], environ={"RDZV_ID": "job1", "MIN_NNODES": "1", "MAX_NNODES": "4"}, nproc=2, devices=2).argv
    assert elastic[elastic.index("--nnodes") + 1] == "1:4" and "--rdzv-id" in elastic


def test_the_training_process_gets_expandable_segments_unless_the_user_set_the_allocator(monkeypatch, tmp_path):
    """qfk train (one process or torchrun) and the WebUI's runs: PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True on a
    GPU (measured: 1.7B QLoRA 19.0 -> 7.6 GB); a value the user set is theirs; kept in the result and the log line."""
    from qwen_factory_kit.launch.runner import training_environ
    from qwen_factory_kit.launch.webui import kit_training_command
    from qwen_factory_kit.recipe.presets import ALLOCATOR

    want = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert (ALLOCATOR.variable, ALLOCATOR.value) == next(iter(want.items()))
    one = compose("r.yaml", [], environ={}, devices=1)
    assert one.env == want and not one.distributed
    assert one.describe().startswith("PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True ")
    assert compose("r.yaml", [], nproc=2, environ={}, devices=2).env == {**want, "TORCH_NCCL_AVOID_RECORD_STREAMS": "1"}
    assert compose("r.yaml", [], environ={}, devices=0).env == {}                          # no GPU: nothing to set
    assert compose("r.yaml", [], environ={"OPTIM_TORCH": "0"}, devices=1).env == {}        # llamafactory-cli's switch
    users = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}
    assert compose("r.yaml", [], environ=users, devices=1).env == {}
    assert "PYTORCH_CUDA_ALLOC_CONF" not in compose("r.yaml", [], nproc=2, environ=users, devices=2).env

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    child = training_environ(one, tmp_path / "stop")
    assert child["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True" and child["QFK_STOP_FILE"] == str(tmp_path / "stop")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    theirs = compose("r.yaml", [], devices=1)       # the environment of this process, as qfk train composes it
    assert training_environ(theirs, tmp_path / "stop")["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"

    (tmp_path / "args.yaml").write_text("stage: sft\noutput_dir: saves/x\n")
    webui = ["llamafactory-cli", "train", str(tmp_path / "args.yaml")]
    assert kit_training_command(webui, {"PATH": "/bin"}, devices=1)[1]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert kit_training_command(webui, {"PATH": "/bin", **users}, devices=1)[1]["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"


def test_train_dry_run(tmp_path, monkeypatch, qfk):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text("output_dir: saves/x\n")
    code, out, err = qfk("train", "r.yaml", "--dry-run", "--no-check", "--nproc", "2", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["distributed"] and res["nproc"] == 2 and "torch.distributed.run" in res["argv"]


def test_train_dry_run_shows_no_secret(tmp_path, monkeypatch, qfk):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text("output_dir: saves/x\n")
    for as_json in (["--json"], []):
        code, out, err = qfk("train", "r.yaml", "hf_hub_token=hf_SECRET123", "lora_rank=8", "--dry-run", "--no-check", *as_json)
        assert code == 0, err
        assert "hf_SECRET123" not in out + err
        assert "hf_hub_token=<redacted>" in out and "lora_rank=8" in out


def test_train_refuses_a_merge_recipe(tmp_path, monkeypatch, qfk):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text("export_dir: models/x\n")
    code, _, err = qfk("train", "m.yaml")
    assert code == 2 and "llamafactory-cli export m.yaml" in err


# --------------------------------------------------------------------------------------------
# real training
# --------------------------------------------------------------------------------------------
@pytest.fixture
def work(work, tiny_model):
    """The examples' workspace (conftest) with the tiny model built."""
    return work


def sh(*args, timeout=600, check=True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return p


def qfk_cmd(*args, **kw):
    return sh(sys.executable, "-m", "qwen_factory_kit", *args, **kw)


def new_sft(tiny_model, *extra, evaluate: bool = True) -> str:
    qfk_cmd("recipe", "new", "--model", tiny_model, "--method", "lora", "--dataset", "demo_medical,demo_finetome",
            "--mix", "demo_medical=0.75,demo_finetome=0.25", *(["--eval-dataset", "demo_medical_val"] if evaluate else []),
            "-o", "sft.yaml", "--force", *CPU, *extra)
    return "sft.yaml"


def finite_losses(out: Path) -> list[float]:
    losses = [r["loss"] for r in read_jsonl(out / "trainer_log.jsonl") if "loss" in r]
    assert losses and all(math.isfinite(x) for x in losses)
    return losses


@pytest.mark.slow
def test_llamafactory_cli_trains_the_emitted_recipe_as_is(work, tiny_model):
    recipe = new_sft(tiny_model, "max_steps=3", "save_steps=3", "eval_steps=3")
    p = sh(BIN / "llamafactory-cli", "train", recipe, "output_dir=saves/plain",
           env={**os.environ, "LLAMAFACTORY_VERBOSITY": "INFO"})  # other tests' in-process quieting must not hide its log
    out = work / "saves" / "plain"
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 32
    assert len(finite_losses(out)) == 3
    assert "Sampled 6 examples" in p.stdout + p.stderr and "Sampled 2 examples" in p.stdout + p.stderr  # the exact mix


@pytest.mark.slow
def test_qfk_train_progress_record_plot(work, tiny_model):
    recipe = new_sft(tiny_model, "max_steps=4", "save_steps=2", "eval_steps=2")
    user_env = {k: v for k, v in os.environ.items() if k != "LLAMAFACTORY_VERBOSITY"}  # as a user's shell
    p = qfk_cmd("train", recipe, "--json", env=user_env)
    res = json.loads(p.stdout)
    out = work / res["output_dir"]
    assert res["returncode"] == 0 and res["status"] == "ok" and res["last_step"] == 4
    assert "step 4/4  loss" in p.stderr  # progress lines without a terminal
    assert (out / "adapter_model.safetensors").is_file() and (out / "checkpoint-2").is_dir()
    assert len(finite_losses(out)) == 4
    s = res["summary"]
    assert s["loss_finite"] and s["steps"] == 4 and s["eval_loss_last"] is not None
    assert (out / "qfk_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and s["plot"].endswith("qfk_loss.png")
    rec = json.loads((out / "qfk_run.json").read_text())
    assert rec["status"] == "ok" and rec["total_steps"] == 4
    assert rec["recipe"]["text"] == (work / recipe).read_text() and len(rec["recipe"]["sha256"]) == 64
    assert rec["versions"]["llamafactory"] == "0.9.5" and "torch" in rec["versions"] and "git" in rec
    alloc = res["env"].get("PYTORCH_CUDA_ALLOC_CONF") or user_env.get("PYTORCH_CUDA_ALLOC_CONF")  # qfk's (on a GPU), else the user's
    assert rec["env"] == {"PYTORCH_CUDA_ALLOC_CONF": alloc}
    ds = rec["datasets"]["demo_medical__n6"]
    assert ds["entry"]["num_samples"] == 6 and ds["manifest"]["outputs"]["train"]["sha256"]
    log = (out / "qfk_train.log").read_text()
    assert "===== qfk train" in log and "Sampled 6 examples" in log  # LLaMA-Factory's INFO log is kept, not quieted


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_run_resumes(work, tiny_model):
    recipe = new_sft(tiny_model, "max_steps=200", "save_steps=1000", "eval_steps=1000")
    proc = subprocess.Popen([sys.executable, "-m", "qwen_factory_kit", "train", recipe], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.time() + 300
    while "step 2/200" not in seen and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "step 2/200" in seen, seen
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "resume with: qfk train sft.yaml" in err and "Traceback" not in err
    out = work / load_recipe(recipe)["output_dir"]
    rec = json.loads((out / "qfk_run.json").read_text())
    assert rec["status"] == "stopped" and rec["stopped_at_step"] >= 2
    ckpt = out / f"checkpoint-{rec['stopped_at_step']}"
    assert ckpt.is_dir() and (ckpt / "adapter_model.safetensors").is_file()
    p = qfk_cmd("train", recipe, f"max_steps={rec['stopped_at_step'] + 2}", "--json")
    res = json.loads(p.stdout)
    rec2 = json.loads((out / "qfk_run.json").read_text())
    assert res["status"] == "ok" and rec2["resumed_from_step"] == rec["stopped_at_step"]
    assert rec2["summary"]["steps"] == rec["stopped_at_step"] + 2


@pytest.mark.slow
def test_plugin_reads_raw_medical_rows_under_qfk_train_only(work, tiny_model):
    rows = []
    for line in (EXAMPLES / "medical_r1" / "rows.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if all(isinstance(r.get(k), str) and r[k] for k in ("question", "answer")):
            rows.append(r)
    raw = work / "data" / "raw_r1.jsonl"
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    qfk_cmd("datasets", "add", raw, "--name", "raw_r1", "--formatting", "qfk_medical_r1")
    info = json.loads((work / "data" / "dataset_info.json").read_text())["raw_r1"]
    assert info == {"file_name": "raw_r1.jsonl", "formatting": "qfk_medical_r1", "ranking": False}
    recipe = new_sft(tiny_model, "dataset=raw_r1", "max_steps=2", "output_dir=saves/raw", evaluate=False)
    p = qfk_cmd("train", recipe, "--json")
    assert json.loads(p.stdout)["status"] == "ok"
    log = (work / "saves" / "raw" / "qfk_train.log").read_text()
    assert "151667" in log and "151668" in log  # <think> ... </think> token ids in LLaMA-Factory's training example
    plain = sh(BIN / "llamafactory-cli", "train", recipe, "output_dir=saves/raw2", check=False)
    assert plain.returncode != 0 and "Dataset converter qfk_medical_r1 not found" in plain.stdout + plain.stderr


@pytest.mark.slow
def test_predict_and_merge_recipes_run(work, tiny_model):
    recipe = new_sft(tiny_model, "max_steps=2", "save_steps=2", "eval_steps=2")
    qfk_cmd("train", recipe)
    qfk_cmd("recipe", "new", "--method", "predict", "--from", recipe, "--eval-dataset", "demo_medical_val", "-o", "predict.yaml",
            "max_new_tokens=8", "preprocessing_num_workers=1", "use_cpu=true", "bf16=false")
    res = json.loads(qfk_cmd("train", "predict.yaml", "--json").stdout)
    assert res["status"] == "ok"
    preds = read_jsonl(work / res["output_dir"] / "generated_predictions.jsonl")
    assert len(preds) == 2 and {"prompt", "predict", "label"} <= set(preds[0])
    assert "predict_bleu-4" in res["summary"]["predict_metrics"]
    qfk_cmd("recipe", "new", "--method", "merge", "--from", recipe, "-o", "merge.yaml", "export_dir=models/merged")
    sh(BIN / "llamafactory-cli", "export", "merge.yaml")
    assert (work / "models" / "merged" / "model.safetensors").is_file()


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(work, tiny_model):
    recipe = new_sft(tiny_model, "max_steps=2", "eval_steps=1000", "output_dir=saves/ddp")
    res = json.loads(qfk_cmd("train", recipe, "--nproc", "2", "--json").stdout)
    assert res["status"] == "ok" and "torch.distributed.run" in res["launch"]
    rec = json.loads((work / "saves" / "ddp" / "qfk_run.json").read_text())
    assert rec["world_size"] == 2 and rec["status"] == "ok"


@pytest.mark.slow
def test_failures_exit_non_zero(work, tiny_model):
    recipe = new_sft(tiny_model, "max_steps=2")
    (work / "data" / "demo_finetome.jsonl").unlink()
    p = qfk_cmd("train", recipe, check=False)
    assert p.returncode == 2 and "not found" in p.stderr and "Traceback" not in p.stderr  # the quick check stops it
    p = qfk_cmd("train", recipe, "--no-check", "--json", check=False)
    res = json.loads(p.stdout)
    assert p.returncode == 1 and res["status"] == "failed" and res["error"]
    rec = json.loads((work / res["output_dir"] / "qfk_run.json").read_text())
    assert rec["status"] == "failed" and "not found" in rec["error"]


@pytest.mark.slow
def test_plugin_converters_in_llamafactory_pipeline(tmp_path):
    """Both plugin formattings through LLaMA-Factory's own get_dataset, in-process after register()."""
    import shutil

    from qwen_factory_kit.launch import plugin
    from qwen_factory_kit.lfbridge import load_tokenizer, preprocess, trained_text
    from qwen_factory_kit.registry import Registry, build_entry

    assert plugin.register() == ["qfk_medical_r1", "qfk_sharegpt"] and plugin.register()  # idempotent
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(EXAMPLES / "finetome" / "data" / "train-00000-of-00001.parquet", data / "chat.parquet")
    rows = [{"question": "q1?", "think": "step one\n", "answer": "a1"}, {"question": "q2?", "think": "", "answer": "a2"},
            {"question": "<|im_start|>bad", "think": "t", "answer": "a3"}]
    (data / "r1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    reg = Registry.at(data)
    reg.add("raw_chat", build_entry("chat.parquet", formatting="qfk_sharegpt"))
    reg.add("raw_r1", build_entry("r1.jsonl", formatting="qfk_medical_r1"))
    tok = load_tokenizer()
    ds = preprocess(data, "raw_r1", template="qwen3", enable_thinking=True, tokenizer=tok)
    texts = [trained_text(tok, ex) for ex in ds]
    # dropped as qfk convert rejects them: the empty think (empty_field) and the chat control token
    assert len(texts) == 1
    assert texts[0].startswith("<think>\nstep one\n</think>\n\na1")
    chat = preprocess(data, "raw_chat", template="qwen3", enable_thinking=False, tokenizer=tok)
    from qwen_factory_kit.convert import convert

    res = convert("sharegpt", str(EXAMPLES / "finetome"), output=str(tmp_path / "conv.jsonl"))
    assert len(chat) == res.written > 0  # the same rows survive as through qfk convert


@pytest.mark.slow
def test_real_rows_mix_check_and_train(real_samples, tmp_path, monkeypatch, tiny_model):
    """Real medical R1 and FineTome rows: exact 75/25 mix, think mode from the manifests (reasoning + direct
    -> mixed -> qwen3 + null), qfk recipe check flags the real row whose </think> a 2048 cutoff would cut, and
    the recipe trains with qfk train once the cutoff fits."""
    w = tmp_path / "real"
    w.mkdir()
    monkeypatch.chdir(w)
    monkeypatch.setenv("QFK_DATA_DIR", str(w / "data"))
    qfk_cmd("convert", "medical-r1", real_samples / "medical_r1" / "val_sample.jsonl", "--name", "med", "--val-size", "10")
    qfk_cmd("convert", "sharegpt", real_samples / "finetome" / "rows.jsonl", "--name", "chat")
    manifests = {n: json.loads((w / "data" / f"{n}.manifest.json").read_text()) for n in ("med", "chat")}
    assert manifests["med"]["think"]["mode"] == "reasoning" and manifests["chat"]["think"]["mode"] == "direct"
    qfk_cmd("recipe", "new", "--model", tiny_model, "--method", "lora", "--dataset", "med,chat",
            "--mix", "med=0.75,chat=0.25", "-o", "real.yaml", *CPU, "cutoff_len=2048")
    args = load_recipe(w / "real.yaml", [])
    assert args["template"] == "qwen3" and args["enable_thinking"] is None
    assert args["dataset"] == "med__n12,chat"  # all 4 FineTome rows are the limit: 12 + 4 is exactly 75/25

    p = qfk_cmd("recipe", "check", "real.yaml", "--json", check=False)
    res = json.loads(p.stdout)
    cut = [f for f in res["findings"] if f["id"] == "cutoff"]
    assert p.returncode == 1 and cut and cut[0]["severity"] == "error" and "</think>" in cut[0]["message"], cut
    p = qfk_cmd("recipe", "check", "real.yaml", "cutoff_len=4096", "--json", check=False)
    res = json.loads(p.stdout)
    assert p.returncode == 0 and res["ok"], [f for f in res["findings"] if f["severity"] == "error"]

    user_env = {k: v for k, v in os.environ.items() if k != "LLAMAFACTORY_VERBOSITY"}  # other tests' in-process quieting
    p = qfk_cmd("train", "real.yaml", "cutoff_len=4096", "max_steps=2", "save_steps=2", "--json", env=user_env)
    out = json.loads(p.stdout)
    assert out["returncode"] == 0 and out["last_step"] == 2
    assert len(finite_losses(w / out["output_dir"])) == 2
    assert "Sampled 12 examples" in (w / out["output_dir"] / "qfk_train.log").read_text()


# --------------------------------------------------------------------------------------------
# before launch: a key typo stops qfk train before anything is written
# --------------------------------------------------------------------------------------------
def test_unknown_key_hint_names_the_closest_argument(monkeypatch):
    from qwen_factory_kit.launch import runner

    monkeypatch.setattr(runner, "_argument_names", lambda: ["learning_rate", "lora_alpha", "lora_rank", "output_dir"])
    message = "LLaMA-Factory rejects the recipe: Some keys are not used by the HfArgumentParser: ['lora_rnk', 'zzz']"
    hint = runner.unknown_key_hint({"lora_rnk": 32, "zzz": 1, "output_dir": "x", "learnin_rate": 1}, message)
    assert hint == "lora_rnk is not a LLaMA-Factory argument: did you mean lora_rank?"  # zzz: nothing close; learnin_rate: not named
    assert runner.unknown_key_hint({"lora_rnk": 32}, "another failure") == ""


@pytest.mark.slow
def test_key_typo_stops_before_anything_is_created(work, tiny_model):
    recipe = new_sft(tiny_model, "max_steps=2")
    out = work / load_recipe(recipe)["output_dir"]
    p = qfk_cmd("train", recipe, "lora_rnk=32", check=False)
    assert p.returncode == 2, p.stderr
    assert "did you mean lora_rank?" in p.stderr and "lora_rnk" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()
    p = qfk_cmd("train", recipe, "lora_rnk=32", "--dry-run", "--json", check=False)  # the plan is refused the same way
    assert p.returncode == 2 and "did you mean lora_rank?" in p.stderr and not out.exists()
