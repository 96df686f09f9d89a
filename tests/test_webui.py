"""``qfk webui``: a recipe as the WebUI's saved arguments (pure, fast), the plan and the CLI (fast),
the kit's widget table against the built WebUI (slow), and the real WebUI in headless Chromium
started from another folder: dataset list, Load arguments, Preview command, training a raw-row
``qfk_*`` dataset from the page, Ctrl-C (slow; skipped without /usr/bin/chromium)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLES

from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.launch.webui import (ARGS_HEADER, kit_training_command, pick_port, plan_webui, startup_lines,
                                           write_args_files)
from qwen_factory_kit.launch.webui_args import WIDGETS, lost_keys, model_name_for, webui_arguments

STAGES = {"sft": "Supervised Fine-Tuning", "dpo": "DPO"}
KIT_SFT = {  # what qfk recipe new writes for a LoRA mix (tests/test_recipes.py)
    "model_name_or_path": "Qwen/Qwen3-4B", "stage": "sft", "do_train": True, "finetuning_type": "lora", "lora_rank": 32,
    "lora_alpha": 64, "lora_dropout": 0.05, "lora_target": "all", "dataset": "med__n6,chat__n2", "eval_dataset": "med_val",
    "dataset_dir": "data", "template": "qwen3", "enable_thinking": True, "cutoff_len": 2048, "overwrite_cache": True,
    "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "learning_rate": 1.0e-5, "num_train_epochs": 5.0,
    "lr_scheduler_type": "cosine", "warmup_steps": 0.1, "bf16": True, "output_dir": "saves/qwen3-4b/lora/med",
    "logging_steps": 10, "save_steps": 500, "report_to": "none", "quantization_bit": 4, "eval_steps": 500,
}


def translate(args: dict, model_name: str = "Custom"):
    return webui_arguments(args, data_dir="/ws/data", stages=STAGES, model_name=model_name)


# --------------------------------------------------------------------------------------------
# the translation (pure)
# --------------------------------------------------------------------------------------------
def test_a_kit_recipe_becomes_the_webui_saved_arguments():
    values, unmapped = translate(KIT_SFT, model_name="Qwen3-4B")
    assert values["top.model_name"] == "Qwen3-4B" and values["top.model_path"] == "Qwen/Qwen3-4B"
    assert values["top.finetuning_type"] == "lora" and values["top.template"] == "qwen3"
    assert values["top.quantization_bit"] == "4" and values["train.compute_type"] == "bf16"
    assert values["train.training_stage"] == "Supervised Fine-Tuning" and values["train.dataset_dir"] == "/ws/data"
    assert values["train.dataset"] == ["med__n6", "chat__n2"]
    assert (values["train.lora_rank"], values["train.lora_alpha"], values["train.lora_dropout"]) == (32, 64, 0.05)
    assert values["train.lora_target"] == "all" and values["train.enable_thinking"] is True
    assert values["train.learning_rate"] == "1e-05" and values["train.num_train_epochs"] == "5.0"  # text boxes
    assert (values["train.batch_size"], values["train.gradient_accumulation_steps"], values["train.cutoff_len"]) == (4, 4, 2048)
    assert values["train.output_dir"] == "saves/qwen3-4b/lora/med"
    # keys without a widget ride in Extra arguments, listed; LLaMA-Factory's max_samples default is put back
    assert unmapped == ["eval_dataset", "eval_steps", "overwrite_cache", "warmup_steps"]
    assert json.loads(values["train.extra_args"]) == {"eval_dataset": "med_val", "overwrite_cache": True, "warmup_steps": 0.1,
                                                      "eval_steps": 500, "max_samples": None}
    assert "train.warmup_steps" not in values  # 0.1 is a ratio: the integer slider cannot hold it
    assert yaml.safe_load(yaml.safe_dump(values)) == values  # the file "Load arguments" reads gives these values back


def test_values_a_widget_cannot_hold_go_to_extra_arguments():
    values, unmapped = translate({**KIT_SFT, "enable_thinking": None, "save_steps": 2, "pref_loss": "bco",
                                  "lr_scheduler_type": "cosine", "max_samples": 5000, "val_size": 0.1})
    extra = json.loads(values["train.extra_args"])
    assert extra["enable_thinking"] is None and "train.enable_thinking" not in values  # mixed data: no checkbox state
    assert extra["save_steps"] == 2 and "train.save_steps" not in values              # under the slider's 10
    assert extra["val_size"] == 0.1 and "val_size" in unmapped  # a Val size slider above 0 would rewrite the eval settings
    assert values["train.max_samples"] == "5000" and "max_samples" not in extra
    assert lost_keys(unmapped) == ["pref_loss"]  # the WebUI sets pref_loss from its dropdown after Extra arguments
    assert lost_keys(translate({**KIT_SFT, "lora_alpha": 4096})[1]) == ["lora_alpha"]


def test_defaults_that_differ_and_paths():
    values, _ = translate({"model_name_or_path": "/models/q", "lora_rank": 16, "output_dir": "run1", "fp16": True,
                           "deepspeed": "deepspeed/ds_z3_offload_config.json"})
    assert values["train.lora_alpha"] == 32  # LLaMA-Factory's 2 x rank, not the WebUI's 16
    assert values["train.output_dir"] == f".{os.sep}run1"  # not saves/MODEL/METHOD/run1
    assert values["train.compute_type"] == "fp16" and values["top.quantization_bit"] == "none"
    assert (values["train.ds_stage"], values["train.ds_offload"]) == ("3", True)
    values, unmapped = translate({"deepspeed": "my_ds.json", "stage": "kto"})
    assert values["train.ds_stage"] == "none" and json.loads(values["train.extra_args"])["deepspeed"] == "my_ds.json"
    assert "train.training_stage" not in values and "stage" in unmapped
    assert values["train.compute_type"] == "fp32"


@pytest.mark.parametrize("args", [{"export_dir": "models/x"}, {"do_predict": True}, {"do_train": False}])
def test_only_training_recipes(args):
    with pytest.raises(QfkError, match="not a training recipe"):
        translate(args)


def test_one_model_name_for_every_recipe_taken_from_the_model_path():
    # not LLaMA-Factory's "Qwen3-4B-Thinking" (its name for the hybrid Qwen/Qwen3-4B): the path's own name
    assert model_name_for(["Qwen/Qwen3-4B", "Qwen/Qwen3-4B"]) == "Qwen3-4B"
    assert model_name_for(["Qwen/Qwen3-4B-Thinking-2507"]) == "Qwen3-4B-Thinking-2507"
    assert model_name_for(["Qwen/Qwen3-4B", "Qwen/Qwen3-1.7B"]) == "Custom"  # switching names resets path/template
    assert model_name_for(["/models/mine/"]) == "mine" and model_name_for(["Qwen3-0.6B"]) == "Qwen3-0.6B"
    assert model_name_for(["/a/model", "/b/model"]) == "Custom"  # one name, two models: the name says which
    assert model_name_for([None]) == model_name_for(["/"]) == model_name_for([]) == model_name_for([["x"]]) == "Custom"
    assert len({w.elem for w in WIDGETS}) == len(WIDGETS) and len({w.key for w in WIDGETS}) == len(WIDGETS)


# --------------------------------------------------------------------------------------------
# the plan, the arguments files, the training command, the CLI (fast: no LLaMA-Factory import)
# --------------------------------------------------------------------------------------------
@pytest.fixture
def ws(tmp_path):
    data = tmp_path / "ws" / "data"
    data.mkdir(parents=True)
    (data / "med.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    entry = {"file_name": "med.jsonl", "formatting": "alpaca", "ranking": False}
    (data / "dataset_info.json").write_text(json.dumps({"med": entry}))
    recipe = tmp_path / "recipes" / "sft.yaml"
    recipe.parent.mkdir()
    recipe.write_text(yaml.safe_dump({**KIT_SFT, "dataset": "med__n1,other"}))
    return tmp_path / "ws"


def tables():
    return {"stages": STAGES}


def test_plan_and_arguments_files(ws, tmp_path):
    plan = plan_webui(data_dir=ws / "data", recipes=[tmp_path / "recipes" / "sft.yaml"], port="auto", choices=tables)
    assert plan.host == "127.0.0.1" and plan.workdir == ws and plan.datasets == ["med"] and 0 < plan.port < 65536
    a = plan.args_files[0]
    assert a.path == ws / "llamaboard_config" / "sft.yaml" and a.model_name == "Qwen3-4B"
    assert any("not registered" in n and "other" in n and "med__n1" not in n for n in a.notes)
    assert f"its dataset_dir data is not {ws / 'data'}" in " ".join(a.notes)  # data next to the recipe would be recipes/data
    text = "\n".join(startup_lines(plan))
    assert "no WebUI field, carried in Extra arguments: eval_dataset" in text and str(a.path) in text
    assert write_args_files(plan) == ["med__n1"]  # the mix entry the recipe names is registered, as qfk train does
    assert json.loads((ws / "data" / "dataset_info.json").read_text())["med__n1"]["num_samples"] == 1
    saved = a.path.read_text()
    assert saved.startswith(ARGS_HEADER) and yaml.safe_load(saved) == a.values
    write_args_files(plan)  # its own file: replaced
    a.path.write_text("top.lang: en\n")  # a file the WebUI's Save arguments wrote: never replaced
    with pytest.raises(QfkError, match="not written by qfk webui"):
        write_args_files(plan)


def test_plan_refusals(ws, tmp_path, monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    assert pick_port(None) == 7860 and pick_port(None, {"GRADIO_SERVER_PORT": "9000"}) == 9000 and pick_port("8001") == 8001
    for bad in ("http", "0", "70000"):
        with pytest.raises(QfkError, match="--port"):
            pick_port(bad)
    with pytest.raises(QfkError, match="not a folder"):
        plan_webui(data_dir=tmp_path / "nowhere")
    twin = tmp_path / "other" / "sft.yaml"
    twin.parent.mkdir()
    twin.write_text("model_name_or_path: x\n")
    with pytest.raises(QfkError, match="both be sft.yaml"):
        plan_webui(data_dir=ws / "data", recipes=[tmp_path / "recipes" / "sft.yaml", twin], choices=tables)


def test_the_webui_trains_through_the_kit_entry(tmp_path):
    (tmp_path / "training_args.yaml").write_text("stage: sft\noutput_dir: saves/x\n")
    args_file = str(tmp_path / "training_args.yaml")
    env = {"PATH": "/bin", "LLAMABOARD_ENABLED": "1", "LLAMAFACTORY_VERBOSITY": "ERROR"}
    from qwen_factory_kit import lfbridge

    quieted = set(lfbridge.QUIETED)
    lfbridge.QUIETED.add("LLAMAFACTORY_VERBOSITY")  # as if the kit had quieted LLaMA-Factory in this process
    try:
        argv, child_env = kit_training_command(["llamafactory-cli", "train", args_file], env, devices=0)
    finally:
        lfbridge.QUIETED.clear()
        lfbridge.QUIETED.update(quieted)
    assert argv == [sys.executable, "-m", "qwen_factory_kit.launch", args_file]
    assert child_env["LLAMABOARD_ENABLED"] == "1" and "LLAMAFACTORY_VERBOSITY" not in child_env  # the WebUI shows the logs
    argv, _ = kit_training_command(["llamafactory-cli", "train", args_file], {"FORCE_TORCHRUN": "1"}, devices=0)
    assert argv[1:3] == ["-m", "torch.distributed.run"] and "qwen_factory_kit.launch" in argv  # DeepSpeed from the WebUI
    assert kit_training_command(["llamafactory-cli", "export", args_file], env, devices=0) is None


def test_cli_dry_run_binds_localhost_by_default(ws, qfk, monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.chdir(ws.parent)  # not the workspace
    code, out, err = qfk("webui", "--data-dir", ws / "data", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert (plan["host"], plan["port"], plan["url"]) == ("127.0.0.1", 7860, "http://127.0.0.1:7860")
    assert plan["data_dir"] == str(ws / "data") and plan["workdir"] == str(ws) and plan["datasets"] == ["med"]
    assert plan["data_dir_from"] == "--data-dir"
    code, _, err = qfk("webui", "--data-dir", ws / "data", "--host", "0.0.0.0", "--port", "auto", "--dry-run")
    assert code == 0 and "warning: listening on 0.0.0.0" in err and "would serve http://127.0.0.1:" in err
    assert not (ws / "llamaboard_config").exists()  # a dry run writes nothing
    code, _, err = qfk("webui", "--data-dir", ws / "missing", "--dry-run")
    assert code == 2 and "not a folder" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# the kit's widget table against LLaMA-Factory's built WebUI (slow: imports it)
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_widget_table_matches_the_built_webui(tmp_path, monkeypatch):
    """Every element id the translation writes exists ("Load arguments" fails on an unknown one),
    with the slider ranges and choices the table assumes; the data dir reaches the Data dir box; the
    model name taken from the recipe's path is offered, and choosing it fills in its path and template."""
    from qwen_factory_kit import lfbridge

    monkeypatch.chdir(tmp_path)  # the WebUI writes llamaboard_cache/ into its working folder
    tabs = lfbridge.webui_choices()
    assert tabs["stages"]["sft"] == "Supervised Fine-Tuning"
    from llamafactory.extras.constants import DEFAULT_TEMPLATE, SUPPORTED_MODELS, DownloadSource
    from llamafactory.webui import control, interface

    # LLaMA-Factory's only name for the hybrid Qwen/Qwen3-4B says Thinking: the kit names it from its path
    assert SUPPORTED_MODELS["Qwen3-4B-Thinking"][DownloadSource.DEFAULT] == "Qwen/Qwen3-4B"
    assert "Qwen3-4B" not in SUPPORTED_MODELS
    for table in (SUPPORTED_MODELS, DEFAULT_TEMPLATE):  # undone after the test: these tables are the process's
        monkeypatch.setitem(table, "Qwen3-4B", None)
        monkeypatch.delitem(table, "Qwen3-4B")
    lfbridge.webui_remember_model("Qwen3-4B", "Qwen/Qwen3-4B", "qwen3")
    assert control.get_model_info("Qwen3-4B") == ("Qwen/Qwen3-4B", "qwen3")  # what choosing the name fills in
    assert yaml.safe_load((tmp_path / "llamaboard_cache" / "user_config.yaml").read_text())["last_model"] == "Qwen3-4B"

    engines = []

    class Recording(interface.Engine):  # the test's way to reach the WebUI's element table
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            engines.append(self)

    monkeypatch.setattr(interface, "Engine", Recording)
    lfbridge.webui_build(str(tmp_path / "data"))
    manager = engines[0].manager
    elems = {manager.get_id_by_elem(e): e for e in manager.get_elem_list()}
    values, _ = webui_arguments({**KIT_SFT, "deepspeed": "ds_z2_config.json"}, data_dir=str(tmp_path / "data"),
                                stages=tabs["stages"], model_name="Custom")
    assert set(values) <= set(elems), set(values) - set(elems)
    assert elems["train.dataset_dir"].value == elems["eval.dataset_dir"].value == str(tmp_path / "data")
    for w in WIDGETS:
        e = elems[w.elem]
        if w.limits:
            assert (e.minimum, e.maximum) == w.limits, w.elem
        if w.choices:
            assert {c[0] for c in e.choices} - {"none"} == set(w.choices), w.elem
    assert "qwen3" in {c[0] for c in elems["top.template"].choices}
    assert {"Custom", "Qwen3-4B", "Qwen3-4B-Thinking"} <= {c[0] for c in elems["top.model_name"].choices}


# --------------------------------------------------------------------------------------------
# the real WebUI in headless Chromium (slow)
# --------------------------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT_S = 240  # about 20-40 s on a free machine; CI's two cores are shared
URL_LINE = re.compile(r"LLaMA-Factory WebUI: (http://\S+)")


def qfk_proc(*args, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "qwen_factory_kit", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-2000:])
    return p


def make_workspace(ws: Path, env: dict) -> None:
    """Datasets from the kit's examples (as qfk demo does), a raw-row qfk_medical_r1 entry, two recipes."""
    from qwen_factory_kit.tiny import build_tiny_model

    (ws / "data").mkdir(parents=True)
    qfk_proc("convert", "medical-r1", EXAMPLES / "medical_r1" / "rows.jsonl", "--name", "med", "--fix-escaped-newlines",
             "--val-size", "2", cwd=ws, env=env)
    qfk_proc("convert", "sharegpt", EXAMPLES / "finetome", "--name", "chat", cwd=ws, env=env)
    qfk_proc("convert", "preference", EXAMPLES / "preference" / "pairs.jsonl", "--name", "pref", cwd=ws, env=env)
    rows = []
    for line in (EXAMPLES / "medical_r1" / "rows.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the example file holds broken lines on purpose
        if isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("question", "think", "answer")):
            rows.append(line)
    (ws / "data" / "raw_r1.jsonl").write_text("\n".join(rows[:6]) + "\n", encoding="utf-8")
    qfk_proc("datasets", "add", ws / "data" / "raw_r1.jsonl", "--name", "raw_r1", "--formatting", "qfk_medical_r1",
             cwd=ws, env=env)
    qfk_proc("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "med,chat", "--mix", "med=0.75,chat=0.25",
             "--eval-dataset", "med_val", "-o", "sft.yaml", cwd=ws, env=env)
    qfk_proc("recipe", "new", "--model", build_tiny_model(), "--method", "lora", "--dataset", "med", "-o", "tiny.yaml",
             "dataset=raw_r1", "use_cpu=true", "bf16=false", "max_steps=2", "logging_steps=1", "save_steps=2",
             "preprocessing_num_workers=1", "dataloader_num_workers=0", "per_device_train_batch_size=2",
             "gradient_accumulation_steps=1", "cutoff_len=1024", "output_dir=saves/webui_raw", cwd=ws, env=env)


def wait_until_up(proc: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"qfk webui exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        m = URL_LINE.search(log.read_text(errors="replace"))
        if m:
            try:
                with urllib.request.urlopen(m[1], timeout=5) as r:
                    if r.status == 200:
                        return m[1]
            except OSError:
                pass
        time.sleep(1)
    pytest.fail(f"qfk webui did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


class Server:
    def __init__(self, proc, url, log, ws):
        self.proc, self.url, self.log, self.ws = proc, url, log, ws


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``qfk webui`` started from a folder that is not the workspace; always stopped (process group)."""
    if not CHROMIUM.is_file():
        pytest.skip("/usr/bin/chromium is absent (install it: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("webui")
    ws, elsewhere = root / "ws", root / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "QFK_DATA_DIR": str(ws / "data"), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_SERVER_NAME", None)
    make_workspace(ws, env)
    log = root / "webui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "qwen_factory_kit", "webui", "--port", "auto", "--data-dir", ws / "data",
                                 "--recipe", ws / "sft.yaml", "--recipe", ws / "tiny.yaml"], cwd=elsewhere, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Server(proc, wait_until_up(proc, log), log, ws)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def artifacts(tmp_path, record_property) -> Path:
    folder = Path(os.environ.get("QFK_ARTIFACTS") or tmp_path) / "webui"
    folder.mkdir(parents=True, exist_ok=True)
    record_property("screenshots", str(folder))
    return folder


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(30_000)
            pg.goto(server.url)
            field(pg, "Data dir").wait_for(timeout=60_000)
            yield pg
        finally:
            browser.close()


def block(page, label: str):
    """The widget labelled ``label`` on the Train tab (the first one in the page)."""
    return page.locator(f'xpath=//span[@data-testid="block-info"][normalize-space()="{label}"]'
                        '/ancestor::div[contains(@class,"block")][1]').first


def field(page, label: str):
    """The input of the widget labelled ``label`` (textbox, dropdown, or a slider's number box)."""
    return block(page, label).locator("textarea, input").first


def shoot(page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def options_of(page, label: str, expected: set[str]) -> list[str]:
    """Open the dropdown ``label`` and read its options (the WebUI fills some lists on focus)."""
    field(page, label).click()
    deadline = time.monotonic() + 20
    while True:
        shown = page.locator("ul[role=listbox] li").all_inner_texts()
        if expected <= {s.strip() for s in shown} or time.monotonic() > deadline:
            return [s.strip() for s in shown]
        time.sleep(0.3)


def load_arguments(page, name: str) -> None:
    """Pick ``name`` under Config path and press Load arguments, as a user would."""
    options_of(page, "Config path", {name})
    page.locator("ul[role=listbox] li", has_text=name).first.click()
    page.get_by_role("button", name="Load arguments").click()
    page.get_by_text("Arguments have been restored.").first.wait_for()
    time.sleep(3)  # the events a changed Model name chains (which would refill Model path and Chat template) run by then


@pytest.mark.slow
def test_webui_lists_the_data_dir_and_loads_a_kit_recipe(server, page, artifacts):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    ws = server.ws
    expect(field(page, "Data dir")).to_have_value(str(ws / "data"))
    shown = options_of(page, "Dataset", {"med", "chat", "raw_r1"})
    shot = shoot(page, artifacts, "1-datasets")
    assert {"med", "med_val", "chat", "raw_r1", "med__n6", "chat__n2"} <= set(shown), (shown, shot)
    assert "pref" not in shown  # ranking data is listed under the DPO stages only
    page.keyboard.press("Escape")

    load_arguments(page, "tiny.yaml")  # another model first: the next load must not reset path and template
    expect(field(page, "Model path")).to_have_value(re.compile("tiny-qwen3$"))
    load_arguments(page, "sft.yaml")
    page.get_by_text("LoRA configurations").first.click()
    for label, value in [("Model path", "Qwen/Qwen3-4B"), ("Chat template", "qwen3"), ("Learning rate", "1e-05"),
                         ("LoRA rank", "32"), ("LoRA alpha", "64"), ("Batch size", "4"), ("Epochs", "5.0"),
                         ("Output dir", "saves/qwen3-4b/lora/med_chat"), ("Data dir", str(ws / "data"))]:
        expect(field(page, label), f"{label} after Load arguments").to_have_value(value)
    extra = json.loads(field(page, "Extra arguments").input_value())
    assert extra["eval_dataset"] == "med_val" and extra["enable_thinking"] is None  # mixed data: null, not the checkbox
    assert [t.strip() for t in block(page, "Dataset").locator(".token").all_inner_texts()] == ["med__n6", "chat__n2"]
    shoot(page, artifacts, "2-loaded-sft")

    page.get_by_role("button", name="Preview command").click()
    command = page.locator("code", has_text="llamafactory-cli train").first
    command.wait_for()
    text = command.inner_text()
    shoot(page, artifacts, "3-preview-command")
    assert "--dataset med__n6,chat__n2" in text and f"--dataset_dir {ws / 'data'}" in text
    assert "--lora_rank 32" in text and "--learning_rate 1e-05" in text and "--template qwen3" in text
    assert "--eval_dataset med_val" in text and "--max_samples" not in text  # the recipe's, not the WebUI's 100000


@pytest.mark.slow
def test_the_server_listens_on_localhost_only(server):
    import psutil

    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    listening = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", port)}


@pytest.mark.slow
def test_training_a_raw_row_dataset_from_the_webui(server, page, artifacts):
    """Start on the Train tab: the run goes through the kit's entry module, whose plugin reads the
    qfk_medical_r1 rows (llamafactory-cli train would not know that formatting)."""
    load_arguments(page, "tiny.yaml")
    page.get_by_role("button", name="Start").click()
    done = page.get_by_text(re.compile(r"^(Finished\.|Failed\.)"))
    done.first.wait_for(timeout=400_000)
    shot = shoot(page, artifacts, "4-trained-raw-rows")
    out = server.ws / "saves" / "webui_raw"
    assert page.get_by_text("Finished.").count(), (shot, server.log.read_text()[-3000:])
    assert (out / "adapter_model.safetensors").is_file()
    record = json.loads((out / "qfk_run.json").read_text())  # written by the kit's entry module
    assert record["status"] == "ok" and "raw_r1" in json.dumps(record)
    assert (out / "training_args.yaml").is_file() and (out / "running_log.txt").is_file()  # the WebUI's own files


@pytest.mark.slow
def test_ctrl_c_stops_the_webui_cleanly(server):
    before = len(server.log.read_text(errors="replace"))
    server.proc.send_signal(signal.SIGINT)
    code = server.proc.wait(timeout=60)
    after = server.log.read_text(errors="replace")[before:]
    assert code == 130 and "stopping the WebUI" in after and "Traceback" not in after, after[-3000:]
