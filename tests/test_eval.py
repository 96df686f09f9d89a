"""``qfk eval`` (qwen_factory_kit.post.evaluate, .report, cli/eval.py): what a run or a model
resolves to, the predict recipes it builds, scoring and comparing two models, the report; and,
slow, the whole path on CPU with the tiny model (train 2 steps, evaluate against the base)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, read_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.post.evaluate import (EvalRequest, ModelRun, combined_rows, compare, leak_findings,
                                            recipe_overrides, regressions, resolve_target, write_recipes, write_source)
from qwen_factory_kit.post.metrics import score_rows
from qwen_factory_kit.post.report import (comparison_table, last_run, loss_history, render_markdown, report_sections,
                                          write_report)
from qwen_factory_kit.recipe.cpu import CPU_KEYS
from qwen_factory_kit.tiny import TINY_CONFIG

PNG = "data:image/png;base64,"


# --------------------------------------------------------------------------------------------
# fixtures: a registered translation dataset, a model folder (config only), a run folder
# --------------------------------------------------------------------------------------------
@pytest.fixture
def data(tmp_path) -> Path:
    d = tmp_path / "data"
    convert("moses", str(EXAMPLES / "moses"), data_dir=str(d), register=True, force=True, name="tr", val_size=4)
    return d


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """A folder the kit reads as a Qwen3 model (config.json only: nothing here loads weights)."""
    m = tmp_path / "tiny-qwen3"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({"model_type": "qwen3", **TINY_CONFIG}))
    return m


def fake_run(tmp_path, model: Path, *, name: str = "run", finetuning_type: str = "lora", **args) -> Path:
    """A run folder as qfk train leaves it: qfk_run.json (paths relative to where it ran) and an adapter."""
    cwd = tmp_path
    run = cwd / "saves" / name
    run.mkdir(parents=True)
    record_args = {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": finetuning_type,
                   "dataset": "tr", "dataset_dir": "data", "template": "qwen3", "enable_thinking": False,
                   "cutoff_len": 512, "bf16": True, "output_dir": f"saves/{name}", **args}
    (run / "qfk_run.json").write_text(json.dumps({"qfk_run": 1, "status": "ok", "args": record_args, "cwd": str(cwd)}))
    (run / ("adapter_config.json" if finetuning_type == "lora" else "config.json")).write_text("{}")
    return run


# --------------------------------------------------------------------------------------------
# what RUN_DIR_OR_MODEL names
# --------------------------------------------------------------------------------------------
def test_a_run_folder_gives_model_adapter_and_data_dir_as_absolute_paths(tmp_path, data, model_folder, monkeypatch):
    run = fake_run(tmp_path, model_folder)
    monkeypatch.chdir(run)  # the run's relative paths are read against the folder it ran from, not here
    target = resolve_target(str(run))
    assert target.run_dir == run and target.adapter == str(run.resolve()) and target.model == str(model_folder)
    assert target.base_model == str(model_folder) and target.data_dir == data.resolve()
    assert target.source["dataset_dir"] == str(data.resolve()) and target.source["template"] == "qwen3"
    ckpt = run / "checkpoint-2"
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text("{}")
    assert resolve_target(str(ckpt)).adapter == str(ckpt.resolve()) and resolve_target(str(ckpt)).run_dir == run


def test_a_full_fine_tune_is_evaluated_as_its_own_model(tmp_path, data, model_folder):
    run = fake_run(tmp_path, model_folder, finetuning_type="full")
    target = resolve_target(str(run))
    assert target.model == str(run.resolve()) and target.adapter is None and target.base_model == str(model_folder)


def test_user_mistakes_about_the_target(tmp_path, data, model_folder):
    with pytest.raises(QfkError, match="no run folder or model at"):
        resolve_target(str(tmp_path / "saves" / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(QfkError, match="neither a training run .* nor a model folder"):
        resolve_target(str(tmp_path / "empty"))
    run = fake_run(tmp_path, model_folder)
    (run / "adapter_config.json").unlink()
    with pytest.raises(QfkError, match="no adapter_config.json"):
        resolve_target(str(run))
    with pytest.raises(QfkError, match="are for a MODEL"):
        resolve_target(str(model_folder.parent / "saves" / "run"), template="qwen3")
    target = resolve_target(str(model_folder), data_dir=str(data), enable_thinking=None)
    assert target.run_dir is None and target.source["enable_thinking"] is None and target.source["template"] == "qwen3"
    assert resolve_target(str(model_folder), data_dir=str(data)).source == {}  # derived from the data by the builder


def test_cli_user_mistakes_exit_2(tmp_path, data, model_folder, qfk):
    code, _, err = qfk("eval", tmp_path / "no-such-run", "--dataset", "tr_val")
    assert code == 2 and "no run folder or model" in err and "Traceback" not in err
    run = fake_run(tmp_path, model_folder)
    code, _, err = qfk("eval", run, "--dataset", "tr_vall")
    assert code == 2 and "Undefined dataset 'tr_vall' (--dataset)" in err and "did you mean tr_val?" in err
    (tmp_path / "noconfig").mkdir()
    code, _, err = qfk("eval", tmp_path / "noconfig", "--dataset", "tr_val", "--data-dir", data)
    assert code == 2 and "no config.json" in err
    code, _, err = qfk("eval", model_folder, "--dataset", "tr_val", "--data-dir", data, "--base", "auto")
    assert code == 2 and "--base auto evaluates a run's base model" in err
    code, _, err = qfk("eval", run, "--dataset", "tr_val", "adapter_name_or_path=x")
    assert code == 2 and "cannot be overridden" in err


def test_leak_check_of_the_runs_training_data_against_the_eval_dataset(tmp_path, data, model_folder):
    clean = leak_findings(resolve_target(str(fake_run(tmp_path, model_folder))), "tr_val")
    assert clean and {f.severity for f in clean} == {"ok"} and "no eval row is a training row" in clean[0].message
    leaky = leak_findings(resolve_target(str(fake_run(tmp_path, model_folder, name="leaky", dataset="tr,tr_val"))), "tr_val")
    assert [f.severity for f in leaky if f.severity == "error"] == ["error"] and leaky[0].where == "tr_val"
    assert leak_findings(resolve_target(str(model_folder), data_dir=str(data)), "tr_val") is None  # a model: nothing to check


# --------------------------------------------------------------------------------------------
# the predict recipes (the kit's builder; nothing runs)
# --------------------------------------------------------------------------------------------
def test_predict_recipes_for_tuned_and_base(tmp_path, data, model_folder):
    run = fake_run(tmp_path, model_folder)
    target = resolve_target(str(run))
    req = EvalRequest(str(run), "tr_val", base="auto", max_samples=4, max_new_tokens=16)
    out = tmp_path / "out"
    out.mkdir()
    tuned, base = write_recipes(target, req, out, write_source(target, out), recipe_overrides(req, gpus=0))
    for r in (tuned, base):
        args = r.args
        assert args["do_predict"] and args["eval_dataset"] == "tr_val" and args["dataset_dir"] == str(data.resolve())
        assert args["template"] == "qwen3" and args["enable_thinking"] is False  # as the run trained
        assert args["do_sample"] is False and "temperature" not in args  # deterministic by default
        assert args["max_samples"] == 4 and args["max_new_tokens"] == 16 and args["cutoff_len"] == 512
        assert all(args[k] == v for k, v in CPU_KEYS.items())  # no GPU: CPU keys win over the run's bf16
        assert args["output_dir"] == str((out / r.label).resolve()) and r.recipe_path == out / f"predict-{r.label}.yaml"
        assert r.recipe_path.read_text().startswith("# qfk recipe: predict tr_val")
    assert tuned.args["adapter_name_or_path"] == str(run.resolve()) and "adapter_name_or_path" not in base.args
    assert base.args["model_name_or_path"] == str(model_folder)
    sampled = write_recipes(target, EvalRequest(str(run), "tr_val", sample=True), out, str(out / "source.yaml"),
                            recipe_overrides(EvalRequest(str(run), "tr_val"), gpus=1))
    assert sampled[0].args["do_sample"] is True and sampled[0].args["temperature"] == 0.7  # non-thinking sampling
    assert "use_cpu" not in sampled[0].args and len(sampled) == 1


# --------------------------------------------------------------------------------------------
# scoring two models, deltas, regressions
# --------------------------------------------------------------------------------------------
SYSTEM = "You are a professional translator."
SOURCES = [("Translate <en> to <ja>.", "Thank you.", "ありがとう。"), ("Translate <ja> to <en>.", "駅はどこですか。", "Where is the station?"),
           ("Translate <en> to <ja>.", "Good morning.", "おはようございます。")]


def joined(i: int, prediction: str) -> dict:
    instruction, text, ref = SOURCES[i]
    prompt = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{instruction}\n{text}<|im_end|>\n<|im_start|>assistant\n"
    return {"prompt": prompt, "prediction": prediction, "reference": f"<think>\n\n</think>\n\n{ref}", "instruction": instruction,
            "dataset_index": i, "reasoning": None, "answer": prediction}


def model_run(label: str, predictions: dict[int, str]) -> ModelRun:
    rows = [joined(i, p) for i, p in predictions.items()]
    run = ModelRun(label, Path(f"{label}.yaml"), {"template": "qwen3", "enable_thinking": False}, {}, [])
    run.rows, run.result = rows, score_rows(rows, enable_thinking=False)
    return run


def test_rows_align_by_dataset_row_and_regressions_are_the_worst_negative_deltas():
    tuned = model_run("tuned", {0: "ありがとう。", 1: "Where station?", 2: "こんばんは。"})
    base = model_run("base", {2: "おはようございます。", 0: "ありがとう", 1: "Where is the station?"})  # another order
    rows = combined_rows([tuned, base])
    assert [r["dataset_index"] for r in rows] == [0, 1, 2] and rows[1]["base"]["answer"] == "Where is the station?"
    assert rows[0]["direction"] == "en-ja" and rows[0]["reference_answer"] == "ありがとう。"
    assert rows[0]["delta"]["chrf"] > 0 and rows[1]["delta"]["chrf"] < 0 and rows[2]["delta"]["chrf"] < 0
    worst = regressions(rows, "chrf")
    assert [w["dataset_index"] for w in worst] == sorted([1, 2], key=lambda i: rows[i]["delta"]["chrf"])
    assert regressions(rows, "chrf", limit=1) == worst[:1]
    assert [w["dataset_index"] for w in regressions([{**r, "delta": {"chrf": -1.0}} for r in rows], "chrf")] == [0, 1, 2]
    with pytest.raises(QfkError, match="no prediction for dataset row 1"):
        combined_rows([tuned, model_run("base", {0: "a", 2: "b"})])


def test_compare_gives_tuned_minus_base_per_metric_direction_and_compliance():
    tuned = {"overall": {"bleu": 30.0, "chrf": 50.0, "bleu_signature": "s"}, "compliance": {"share": 1.0},
             "per_direction": {"en-ja": {"bleu": 20.0, "chrf": 40.0}, "ja-en": {"bleu": 40.0, "chrf": 60.0}}}
    base = {"overall": {"bleu": 10.0, "chrf": 55.0}, "compliance": {"share": 0.75},
            "per_direction": {"en-ja": {"bleu": 5.0, "chrf": 45.0}}}
    delta = compare(tuned, base, "translation")
    assert delta == {"overall": {"bleu": 20.0, "chrf": -5.0}, "per_direction": {"en-ja": {"bleu": 15.0, "chrf": -5.0}},
                     "compliance": 25.0}


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
def test_last_run_of_an_appended_trainer_log():
    first = [{"current_steps": s, "loss": 3.0} for s in (1, 2, 3, 4)]
    resumed = [{"current_steps": 3, "loss": 2.0}, {"current_steps": 4, "loss": 1.9}, {"current_steps": 4, "eval_loss": 2.1},
               {"current_steps": 5, "loss": 1.8}]
    assert last_run(first) == first  # one run; an eval entry at the same step is no restart
    assert last_run(first + resumed) == resumed
    assert last_run(first + resumed + first[:2]) == first[:2]  # a fresh run after that
    assert last_run([]) == [] and last_run([{"note": 1}, *first]) == [{"note": 1}, *first]
    assert loss_history(resumed)[2] == {"step": 4, "eval_loss": 2.1}


def metrics_dict() -> dict:
    def model(bleu, chrf, share, counts):
        return {"overall": {"n": 2, "bleu": bleu, "chrf": chrf}, "per_direction": {"en-ja": {"bleu": bleu, "chrf": chrf}},
                "compliance": {"share": share, "counts": counts, "shares": {k: v / 2 for k, v in counts.items()}}}

    return {"dataset": "tr_val", "kind": "translation", "n": 2, "row_metric": "chrf", "target": {"spec": "saves/run"},
            "models": {m: {"model": "Qwen/Qwen3-1.7B", "adapter": "saves/run" if m == "tuned" else None, "template": "qwen3",
                           "enable_thinking": False} for m in ("tuned", "base")},
            "decoding": {"kind": "deterministic", "note": "deterministic (do_sample false)", "max_new_tokens": 64},
            "signatures": {"overall": {"bleu": "nrefs:1|tok:ja-mecab", "chrf": "nrefs:1|nc:6"}},
            "tuned": model(40.0, 60.0, 1.0, {"no_block": 2}), "base": model(50.0, 55.0, 0.5, {"no_block": 1, "think_unclosed": 1}),
            "delta": {"overall": {"bleu": -10.0, "chrf": 5.0}, "per_direction": {"en-ja": {"bleu": -10.0, "chrf": 5.0}},
                      "compliance": 50.0},
            "regressions": [{"dataset_index": 7, "index": 1, "chrf": -12.5}],
            "llamafactory": {"note": "their own", "tuned": {"predict_bleu-4": 12.0}, "base": {"predict_bleu-4": 10.0}}}


def report_rows() -> list[dict]:
    def side(answer, chrf):
        return {"answer": answer, "prediction": answer, "think": "no_block", "scores": {"bleu": chrf, "chrf": chrf}}

    return [{"index": 0, "dataset_index": 3, "user": "Translate <en> to <ja>.\nThank you.", "prompt": "p",
             "reference_answer": "ありがとう。", "direction": "en-ja", "tuned": side("ありがとう。", 100.0), "base": side("どうも", 0.0),
             "delta": {"chrf": 100.0}},
            {"index": 1, "dataset_index": 7, "user": "Translate <en> to <ja>.\nGood <b>morning</b>.", "prompt": "p",
             "reference_answer": "おはよう。", "direction": "en-ja", "tuned": side("こんばんは。", 0.0), "base": side("おはよう", 12.5),
             "delta": {"chrf": -12.5}}]


def test_comparison_table_has_base_tuned_and_signed_deltas():
    header, rows = comparison_table(metrics_dict())
    assert header == ["metric", "base", "tuned", "delta"]
    assert rows[0] == ["BLEU", "50.00", "40.00", "-10.00"] and rows[1] == ["chrF", "55.00", "60.00", "+5.00"]
    assert ["BLEU en-ja", "50.00", "40.00", "-10.00"] in rows and rows[-1] == ["think compliance %", "50.00", "100.00", "+50.00"]
    alone = {k: v for k, v in metrics_dict().items() if k not in ("base", "delta", "regressions")}
    assert comparison_table(alone)[0] == ["metric", "tuned"]


def test_report_from_a_hand_made_metrics_dict(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    log = [{"current_steps": s, "loss": 5.0 - s / 10} for s in (1, 2, 3, 1, 2)]
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log) + "not json\n")
    files = write_report(tmp_path / "out", metrics_dict(), report_rows(), run_dir=run)
    html = Path(files["report_html"]).read_text(encoding="utf-8")
    md = Path(files["report_md"]).read_text(encoding="utf-8")
    assert html.count(PNG) == 4 and "<img" in html and 'src="plots/' not in html  # self-contained
    for name in ("metrics", "compliance", "lengths", "loss"):
        assert Path(files[f"plot_{name}"]).read_bytes()[:4] == b"\x89PNG"
    assert "-10.00" in html and "deterministic (do_sample false)" in html and "predict_bleu-4" in html
    assert "Good &lt;b&gt;morning&lt;/b&gt;." in html and "こんばんは。" in html  # the regressed row, escaped
    assert "Dataset row 7 (en-ja): chrF -12.50" in md and "![Training loss (last run)](plots/loss.png)" in md
    assert "| think compliance % | 50.00 | 100.00 | +50.00 |" in md and PNG not in md
    assert "tok:ja-mecab" in md and "think_unclosed" in md
    assert "## Leak check" in md and "Not checked" in md  # the hand-made dict has no leak findings
    leaked = {**metrics_dict(), "leaks": [{"id": "leak", "severity": "error", "where": "tr_val", "message": "2 of 4 rows",
                                           "fix": "a | b"}]}
    md = render_markdown(report_sections(leaked, report_rows()), {})
    assert "LEAK: the model was trained on eval rows of tr_val" in md and "| error | tr_val | 2 of 4 rows | a \\| b |" in md


def test_report_without_a_base_or_a_run_leaves_those_parts_out(tmp_path):
    m = {k: v for k, v in metrics_dict().items() if k not in ("base", "delta", "regressions")}
    rows = [{k: v for k, v in r.items() if k not in ("base", "delta")} for r in report_rows()]
    sections = report_sections(m, rows)
    assert not any("regression" in s.title.lower() for s in sections)
    md = render_markdown(sections, {"metrics": "plots/metrics.png"})
    assert "Training loss" not in md and "| metric | tuned |" in md
    files = write_report(tmp_path / "out", m, rows)
    assert "plot_loss" not in files and Path(files["report_html"]).read_text().count(PNG) == 3


# --------------------------------------------------------------------------------------------
# the whole path on CPU: convert, train 2 steps, evaluate against the base model
# --------------------------------------------------------------------------------------------
CPU_TRAIN = ["use_cpu=true", "bf16=false", "logging_steps=1", "preprocessing_num_workers=1", "dataloader_num_workers=0",
             "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "cutoff_len=512", "max_steps=2",
             "save_steps=100", "learning_rate=1e-3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A workspace with the medical and Moses examples converted, and a tiny LoRA run on each (2 steps)."""
    from qwen_factory_kit.tiny import build_tiny_model

    model = build_tiny_model()
    work = tmp_path_factory.mktemp("eval-work")
    convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), data_dir=str(work / "data"), register=True, force=True,
            name="med", val_size=2, fix_escaped_newlines=True, min_quality=0.9)
    convert("moses", str(EXAMPLES / "moses"), data_dir=str(work / "data"), register=True, force=True, name="tr", val_size=4)
    for name in ("tr", "med"):
        qfk_process(work, "recipe", "new", "--model", model, "--method", "lora", "--dataset", name, "-o", f"{name}.yaml",
                    "--data-dir", "data", f"output_dir=saves/{name}", *CPU_TRAIN)
        qfk_process(work, "train", f"{name}.yaml")
    return work


def qfk_process(cwd: Path, *args) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "qwen_factory_kit", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return p


def kit_metrics(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return {k: m[k] for k in ("kind", "n", "tuned")}


@pytest.mark.slow
def test_eval_translation_run_against_its_base(trained, qfk, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.setenv("QFK_DATA_DIR", str(trained / "elsewhere"))  # the run's own dataset_dir is used
    code, out, err = qfk("eval", "saves/tr", "--dataset", "tr_val", "--base", "auto", "--max-samples", "4",
                         "--max-new-tokens", "8", "-o", "out")
    assert code == 0, err
    assert "┃ metric" in out and "delta" in out and "report: out/report.html" in out
    folder = trained / "out"
    for name in ("metrics.json", "predictions.jsonl", "report.md", "report.html", "predict-tuned.yaml", "predict-base.yaml"):
        assert (folder / name).is_file(), name
    m = json.loads((folder / "metrics.json").read_text())
    assert m["kind"] == "translation" and m["n"] == 4 and m["decoding"]["kind"] == "deterministic"
    directions = set(m["tuned"]["per_direction"])
    assert directions and directions == set(m["base"]["per_direction"]) == set(m["delta"]["per_direction"])
    for d in directions:
        assert {"bleu", "chrf", "bleu_signature", "chrf_signature"} <= set(m["tuned"]["per_direction"][d])
        assert set(m["delta"]["per_direction"][d]) == {"bleu", "chrf"}
    assert m["tuned"]["per_direction"]["en-ja"]["bleu_tokenizer"] == "ja-mecab"
    assert "tok:ja-mecab" in m["signatures"]["en-ja"]["bleu"] and m["models"]["base"]["adapter"] is None
    assert m["models"]["tuned"]["adapter"] == str((trained / "saves" / "tr").resolve())
    assert "predict_bleu-4" in m["llamafactory"]["tuned"] and "predict_bleu-4" not in m["tuned"]["overall"]
    assert m["target"]["trained_on"] == ["tr"] and [f["severity"] for f in m["leaks"]] == ["ok"]
    rows = read_jsonl(folder / "predictions.jsonl")
    assert len(rows) == 4 and all({"prediction", "think", "answer", "scores"} <= set(r[side]) for r in rows for side in ("tuned", "base"))
    assert all(r["prompt"] and r["reference"] and r["direction"] for r in rows)
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert html.count(PNG) == 4  # metrics, compliance, answer lengths, loss
    again = trained / "again"
    code, _, err = qfk("eval", "saves/tr", "--dataset", "tr_val", "--max-samples", "4", "--max-new-tokens", "8", "-o", again)
    assert code == 0, err
    assert kit_metrics(again) == kit_metrics(folder)  # deterministic decoding: the same scores


@pytest.mark.slow
def test_eval_medical_qa_run_against_its_base(trained, qfk, monkeypatch):
    monkeypatch.chdir(trained)
    code, out, err = qfk("eval", "saves/med", "--dataset", "med_val", "--base", "auto", "--max-samples", "4", "--json")
    assert code == 0, err
    res = json.loads(out)
    # decoding bounded by the references (no --max-new-tokens), said before predicting; progress per model
    budget = res["metrics"]["decoding"]["budget"]
    assert budget["source"] == "the 2 eval rows" and budget["max_new_tokens"] >= 1.5 * budget["longest_reference"]
    assert budget["max_new_tokens"] < 4096 and res["metrics"]["decoding"]["max_new_tokens"] == budget["max_new_tokens"]
    assert f"decoding: 2 rows a model, batch 2; max_new_tokens {budget['max_new_tokens']} (1.5x the longest reference" in err
    assert f"at most {4 * budget['max_new_tokens']:,} new tokens (2 rows x {budget['max_new_tokens']} x 2 models)" in err
    for label in ("tuned", "base"):
        assert f"predicting med_val ({label}): 0/2 rows (loading the model)" in err
        assert f"predicting med_val ({label}): 2/2 rows, " in err and " tok/s" in err
        speed = res["metrics"]["speed"][label]
        assert speed["rows"] == 2 and 0 < speed["new_tokens"] <= 2 * budget["max_new_tokens"] and speed["tokens_per_s"] > 0
    assert res["metrics"]["identical"]["of"] == 2
    folder = trained / "saves" / "med" / "eval-med_val"  # the default output folder
    assert Path(res["out"]) == Path("saves/med/eval-med_val") and (folder / "report.html").is_file()
    m = res["metrics"]
    assert m["kind"] == "qa" and m["n"] == 2 and set(m["delta"]["overall"]) == {"rouge_l", "exact_match"}
    assert {"rouge_l", "exact_match"} <= set(m["tuned"]["overall"]) and {"rouge_l", "exact_match"} <= set(m["base"]["overall"])
    assert m["models"]["tuned"]["enable_thinking"] is True and m["decoding"]["kind"] == "sample"  # thinking never greedy
    assert "thinking mode" in err
    rows = read_jsonl(folder / "predictions.jsonl")
    assert all(set(r["tuned"]["scores"]) == {"rouge_l", "exact_match"} and "answer" in r["base"] for r in rows)
