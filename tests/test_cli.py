import json

import click
import pytest
from conftest import run_qfk_process

from qwen_factory_kit.cli.main import cli


def all_commands(group=cli, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=lambda p: " ".join(p))
def test_every_command_has_help_with_examples(qfk, path):
    code, out, _ = qfk(*path, "--help")
    assert code == 0 and "Examples:" in out and "qfk " in out.split("Examples:")[1]


def test_version(qfk):
    code, out, _ = qfk("--version")
    assert code == 0 and "qfk" in out


def test_unknown_option_is_a_usage_error(qfk):
    code, _, err = qfk("convert", "medical-r1", "x.jsonl", "--no-such-flag")
    assert code == 2 and "No such option" in err


def test_doctor_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = run_qfk_process("doctor", "--json", cwd=tmp_path, timeout=300)
    findings = {f["id"]: f for f in json.loads(p.stdout)}
    assert findings["llamafactory"]["severity"] == "ok"
    assert findings["tokenizer"]["severity"] == "ok"
    assert findings["torch"]["severity"] == "ok", findings
    assert findings["data-dir"]["severity"] in ("info", "warn") and findings["data-dir"]["fix"]
    assert all(f["where"] is None for f in findings.values())
    assert p.returncode == 0


def test_doctor_reports_broken_dataset_info(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset_info.json").write_text('{"a": {"file_name": "x.jsonl",}}')
    from qwen_factory_kit.doctor import check_data_dir

    f = check_data_dir(str(tmp_path / "data"))
    assert f.severity == "error" and "line 1, column" in f.message


def test_convert_starts_fast_without_torch():
    code = ("import sys, qwen_factory_kit.cli.main, qwen_factory_kit.convert; "
            "bad = [m for m in ('torch', 'transformers', 'llamafactory', 'pyarrow', 'pandas') if m in sys.modules]; "
            "print(','.join(bad))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_demo_converts_without_training(tmp_path):
    p = run_qfk_process("demo", "--workdir", tmp_path / "demo", "--no-train", "--json", timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["train"] is None and not (tmp_path / "demo" / "saves").exists()
    steps = res["steps"]
    assert len(steps) == 5 and all(s["read"] == s["written"] + s["rejected"] for s in steps)
    assert {s["think"]["mode"] for s in steps} >= {"reasoning", "direct", "mixed"}
    assert all(s["registered"] and s["lint"]["errors"] == 0 for s in steps)
    info = json.loads((tmp_path / "demo" / "data" / "dataset_info.json").read_text())
    assert {"demo_medical", "demo_medical_val", "demo_finetome", "demo_translation", "demo_translation_test"} <= set(info)


@pytest.mark.slow
def test_demo_trains_the_tiny_model(tmp_path):
    p = run_qfk_process("demo", "--workdir", tmp_path / "demo", "--json", timeout=900)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    train = res["train"]
    assert train["status"] == "ok" and train["returncode"] == 0 and train["summary"]["loss_finite"]
    out = tmp_path / "demo" / train["output_dir"]
    assert (out / "adapter_model.safetensors").is_file() and (out / "qfk_loss.png").is_file()
    assert json.loads((out / "qfk_run.json").read_text())["status"] == "ok"
    recipe = (tmp_path / "demo" / "demo-lora.yaml").read_text()
    assert "dataset: demo_medical__n6,demo_finetome__n2" in recipe and "enable_thinking: null" in recipe
    # qfk eval --base auto and qfk merge on the demo run
    demo = tmp_path / "demo"
    metrics = json.loads((demo / res["eval"]["out"] / "metrics.json").read_text())
    assert {"tuned", "base", "delta"} <= set(metrics) and metrics["dataset"] == "demo_medical_val"
    html = (demo / res["eval"]["files"]["report_html"]).read_text()
    assert "data:image/png;base64," in html
    merged = demo / res["merge"]["out"]
    gen = json.loads((merged / "generation_config.json").read_text())
    assert gen["do_sample"] is True and gen["temperature"] == 0.6  # the run thinks (mixed data): thinking sampling
    assert json.loads((merged / "qfk_serving.json").read_text())["template"] == "qwen3"
    assert "PARAMETER stop" in (merged / "Modelfile").read_text()  # the kit's Modelfile, not the export's plain one
