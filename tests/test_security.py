"""Secrets stay out of what the kit writes.

Tokens planted in the environment (MODELSCOPE_API_TOKEN, HF_TOKEN, HUGGING_FACE_HUB_TOKEN,
WANDB_API_KEY, and a variable of a random name) appear in no file that convert, datasets add,
recipe new, recipe pack/unpack and a short qfk train write: manifests, registry, recipes, bundles
(and every member in them), the run record, logs, checkpoints. The run record keeps only the
environment variables of an allowlist; secret-named recipe arguments are redacted there; a recipe
that sets one is not packed.

Hostile bundles: the cases tests/test_bundle.py and tests/test_bundle_untrusted.py do not cover
(device-file members, a YAML alias bomb, a DeepSpeed config outside the folder) are here, with
test_bundle's bundle builder."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import EXAMPLES, write_jsonl
from test_bundle import RECIPE, _meta_recipe_sha, _rebuild, _refused, _set_recipe, good, ws  # noqa: F401 (fixtures)

from qwen_factory_kit.convert import convert
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.launch.record import RECORDED_ENV, RunRecord, recorded_environment
from qwen_factory_kit.recipe.bundle import pack, unpack
from qwen_factory_kit.redact import REDACTED, is_secret_name, redact_recipe_text

SECRET_VARS = ("MODELSCOPE_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")
CPU = ["use_cpu=true", "bf16=false", "logging_steps=1", "preprocessing_num_workers=1", "dataloader_num_workers=0",
       "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "cutoff_len=1024"]


@pytest.fixture
def planted(monkeypatch) -> dict[str, str]:
    """Unique random values in the secret variables and in a variable of a random name."""
    values = {name: f"planted-{secrets.token_hex(16)}" for name in SECRET_VARS}
    values[f"QFK_PROBE_{secrets.token_hex(4).upper()}"] = f"planted-{secrets.token_hex(16)}"
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def leaks(root: Path, values: dict[str, str]) -> tuple[int, list[str]]:
    """Every file under ``root`` (and every member of every zip) searched for the values:
    (files searched, 'PATH: VARIABLE' for each found)."""
    needles = {name: v.encode() for name, v in values.items()}
    searched, found = 0, []

    def search(label: str, data: bytes) -> None:
        nonlocal searched
        searched += 1
        found.extend(f"{label}: {name}" for name, v in needles.items() if v in data)

    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        search(str(path), data)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    search(f"{path}!{member}", zf.read(member))
    return searched, found


# ---------------------------------------------------------------------------------------------
# names, the run record, packing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, secret", [
    ("hf_hub_token", True), ("ms_hub_token", True), ("hub_token", True), ("swanlab_api_key", True),
    ("swanlab_lark_secret", True), ("HF_TOKEN", True), ("WANDB_API_KEY", True), ("db_password", True),
    ("ignore_pad_token_for_loss", False), ("tokenized_path", False), ("max_new_tokens", False),
    ("use_fast_tokenizer", False), ("output_dir", False), ("lora_target", False),
])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_recorded_environment_is_an_allowlist(planted):
    env = {**planted, "CUDA_VISIBLE_DEVICES": "0,1", "NNODES": "2", "PATH": "/bin", "HOME": "/root"}
    assert recorded_environment(env) == {"CUDA_VISIBLE_DEVICES": "0,1", "NNODES": "2"}
    assert not [n for n in RECORDED_ENV if is_secret_name(n) or "TOKEN" in n or "KEY" in n]


def test_run_record_holds_no_secret(tmp_path, planted, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    token = f"planted-{secrets.token_hex(16)}"
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(f"model_name_or_path: Qwen/Qwen3-0.6B\nhf_hub_token: {token}\nignore_pad_token_for_loss: true\n"
                      f"output_dir: {tmp_path / 'out'}\n")
    overrides = [f"ms_hub_token={token}", "learning_rate=1e-4"]
    args = {"model_name_or_path": "Qwen/Qwen3-0.6B", "hf_hub_token": token, "ms_hub_token": token,
            "ignore_pad_token_for_loss": True, "output_dir": str(tmp_path / "out"), "learning_rate": 1e-4}
    rec = RunRecord(str(recipe), overrides, args, ["qwen_factory_kit.launch", str(recipe), *overrides])
    rec.write()
    text = rec.path.read_text()
    assert token not in text and not any(v in text for v in planted.values())
    data = json.loads(text)
    assert data["args"]["hf_hub_token"] == REDACTED and data["args"]["ignore_pad_token_for_loss"] is True
    assert data["overrides"] == [f"ms_hub_token={REDACTED}", "learning_rate=1e-4"]
    assert f"hf_hub_token: {REDACTED}\n" in data["recipe"]["text"] and "ignore_pad_token_for_loss: true" in data["recipe"]["text"]
    assert data["environment"]["CUDA_VISIBLE_DEVICES"] == "0,1" and set(data["environment"]) <= set(RECORDED_ENV)


def test_redacted_recipe_text_keeps_everything_else():
    text = "# header: hf_hub_token\nmodel_name_or_path: m\nhf_hub_token:   abc # comment\n  ms_hub_token: 'x'\nhub_token:\n"
    assert redact_recipe_text(text) == (f"# header: hf_hub_token\nmodel_name_or_path: m\nhf_hub_token:   {REDACTED}\n"
                                        f"  ms_hub_token: {REDACTED}\nhub_token:\n")


def test_pack_refuses_a_recipe_that_sets_a_token(tmp_path, monkeypatch):
    data = tmp_path / "data"
    convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), data_dir=str(data), name="demo_medical", register=True)
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("model_name_or_path: Qwen/Qwen3-0.6B\ndataset: demo_medical\ndataset_dir: data\n"
                      "output_dir: saves/x\nhf_hub_token: hf_secret\n")
    with pytest.raises(QfkError, match="sets hf_hub_token, a secret") as err:
        pack("sft.yaml", "b.zip")
    assert "nothing was written" in err.value.message and not (tmp_path / "b.zip").exists()
    recipe.write_text(recipe.read_text().replace("hf_hub_token: hf_secret\n", ""))
    with pytest.raises(QfkError, match="sets ms_hub_token"):
        pack("sft.yaml", "b.zip", overrides=["ms_hub_token=ms_secret"])
    assert pack("sft.yaml", "b.zip")["output"] == "b.zip"


def test_the_search_finds_a_planted_value(tmp_path, planted):
    value = next(iter(planted.values()))
    (tmp_path / "a.json").write_text(json.dumps({"x": value}))
    with zipfile.ZipFile(tmp_path / "b.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner/c.txt", "x" * 1000 + value)
    searched, found = leaks(tmp_path, {"V": value})
    assert searched == 3 and found == [f"{tmp_path / 'a.json'}: V", f"{tmp_path / 'b.zip'}!inner/c.txt: V"]


# ---------------------------------------------------------------------------------------------
# hostile bundles not covered in tests/test_bundle*.py
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, mode", [("character device", 0o020644), ("block device", 0o060644), ("socket", 0o140644)])
def test_device_members_are_refused(good, tmp_path, kind, mode):
    member = zipfile.ZipInfo("data/dev.jsonl")
    member.create_system, member.external_attr = 3, mode << 16
    _refused(_rebuild(good, tmp_path / "dev.zip", infos=[(member, b"")]), tmp_path, "not a regular file")


def test_a_yaml_alias_bomb_is_refused_before_it_expands(good, tmp_path):
    lines = ["dataset: demo_medical", 'a0: ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]  # 9**10 strings if expanded
    text = "\n".join(lines) + "\n"
    _refused(_rebuild(good, tmp_path / "bomb.zip", put=_set_recipe(text), meta=_meta_recipe_sha(text)), tmp_path,
             "anchors/aliases")


@pytest.mark.parametrize("value, why", [("/etc/ds_z3.json", "absolute"), ("../ds_z3.json", "escapes"),
                                        ("~/ds_z3.json", "home folder")])
def test_a_deepspeed_config_outside_the_folder_is_refused_unless_allowed(good, tmp_path, value, why):
    text = RECIPE + f"deepspeed: {value}\n"
    bundle = _rebuild(good, tmp_path / "ds.zip", put=_set_recipe(text), meta=_meta_recipe_sha(text))
    err = _refused(bundle, tmp_path, "deepspeed")
    assert why in err.message and "--allow-outside" in err.hint
    unpack(bundle, tmp_path / "allowed", allow_outside=True)
    assert (tmp_path / "allowed" / "recipe.yaml").read_text() == text


# ---------------------------------------------------------------------------------------------
# every file the commands write
# ---------------------------------------------------------------------------------------------
def qfk(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "qwen_factory_kit", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-2000:])
    return p


@pytest.mark.slow
def test_no_planted_secret_in_any_file_written(tmp_path, planted, monkeypatch):
    from qwen_factory_kit.tiny import build_tiny_model

    tiny = build_tiny_model()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("QFK_DATA_DIR", str(work / "data"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH")])))
    token = planted["HF_TOKEN"]
    outputs = [
        qfk("convert", "medical-r1", EXAMPLES / "medical_r1" / "rows.jsonl", "--name", "demo_medical", "--val-size", "2",
            "--fix-escaped-newlines"),
        qfk("convert", "sharegpt", EXAMPLES / "finetome", "--name", "demo_finetome"),
        qfk("datasets", "add", write_jsonl(work / "data" / "extra.jsonl", [{"instruction": "q", "input": "", "output": "a"}]),
            "--name", "extra"),
        qfk("recipe", "new", "--model", tiny, "--method", "lora", "--dataset", "demo_medical,demo_finetome",
            "--mix", "demo_medical=0.75,demo_finetome=0.25", "--eval-dataset", "demo_medical_val", "-o", "sft.yaml",
            "--force", *CPU, "max_steps=2", "save_steps=2", "eval_steps=2"),
        qfk("recipe", "pack", "sft.yaml", "-o", "bundle.zip", "--with-data"),
        qfk("recipe", "unpack", "bundle.zip", tmp_path / "unpacked", "--allow-outside"),
        qfk("train", "sft.yaml", f"hf_hub_token={token}", "--json"),  # a token given where the pack hint says
    ]
    run = json.loads(outputs[-1].stdout)
    out = work / run["output_dir"]
    assert run["status"] == "ok" and (out / "qfk_run.json").is_file() and (out / "qfk_train.log").is_file()
    assert any(out.glob("checkpoint-*/training_args.bin"))
    record = json.loads((out / "qfk_run.json").read_text())
    assert set(record["environment"]) <= set(RECORDED_ENV) and record["args"]["hf_hub_token"] == REDACTED
    searched, found = leaks(tmp_path, planted)
    said = [f"output of command {i}: {name}" for i, p in enumerate(outputs) for name, v in planted.items()
            if v in p.stdout + p.stderr]
    assert searched > 50 and not found and not said, found + said
    print(f"secrets: {len(planted)} planted, {searched} files and bundle members searched, 0 found")
