"""Decoding bounded by the data (max_new_tokens from the references, the eval batch for the
machine) and progress while a model generates (rows, new tokens/s, ETA)."""

from __future__ import annotations

import io
import json
import math

import pytest
from conftest import write_jsonl

from qwen_factory_kit.launch.callbacks import PredictMeter, clock, predict_eta, predict_line
from qwen_factory_kit.post import budget as B
from qwen_factory_kit.think import format_response


@pytest.fixture(scope="module")
def tokenizer():
    from qwen_factory_kit.lfbridge import load_tokenizer

    return load_tokenizer()


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


# --------------------------------------------------------------------------------------------
# the budget
# --------------------------------------------------------------------------------------------
def test_budget_is_one_and_a_half_times_the_longest_reference_in_real_tokens(tokenizer):
    long_answer = "Iron deficiency lowers haemoglobin synthesis. " * 12
    responses = [format_response("Short.", "A brief thought."), format_response(long_answer, "Reason about iron. " * 5)]
    b = B.budget_for(responses, True, source="the 2 eval rows", tokenizer=tokenizer)
    longest = max(n_tokens(tokenizer, r) for r in responses) + 1  # + <|im_end|>
    assert b.longest == longest and b.rows == 2
    assert b.max_new_tokens == max(B.FLOOR, math.ceil(longest * 1.5 / B.ROUND) * B.ROUND)
    assert b.max_new_tokens % B.ROUND == 0 and b.max_new_tokens >= 1.5 * longest
    assert "1.5x the longest reference" in b.describe() and f"{longest} tokens" in b.describe()


def test_no_think_budget_counts_the_answer_only_and_a_direct_row_gets_the_empty_block(tokenizer):
    reasoning, answer = "Step. " * 200, "Anaemia."
    row = format_response(answer, reasoning)
    assert B.expected_text(row, False) == answer
    assert B.expected_text("Anaemia.", True) == format_response("Anaemia.")  # <think>\n\n</think>\n\n + answer
    thinking = B.budget_for([row], True, source="x", tokenizer=tokenizer)
    direct = B.budget_for([row], False, source="x", tokenizer=tokenizer)
    assert direct.longest == n_tokens(tokenizer, answer) + 1 and direct.max_new_tokens == B.FLOOR
    assert thinking.longest > 200 and thinking.max_new_tokens > direct.max_new_tokens


def test_budget_never_exceeds_the_think_modes_default(tokenizer):
    huge = format_response("word " * 1200)
    direct = B.budget_for([huge], False, source="x", tokenizer=tokenizer)
    assert direct.max_new_tokens == 1024 and direct.capped and "capped at the think mode's 1024" in direct.describe()
    assert B.budget_for([], True, source="x").max_new_tokens == 4096  # nothing to measure: the default


def test_eval_budget_takes_the_first_max_samples_rows_as_llamafactory_does(tmp_path, tokenizer):
    rows = [{"instruction": f"q{i}", "input": "", "output": format_response("a " * (10 + 40 * i))} for i in range(3)]
    path = write_jsonl(tmp_path / "val.jsonl", rows)
    first, n = B.eval_budget(path, None, False, max_samples=1, tokenizer=tokenizer)
    every, m = B.eval_budget(path, None, False, tokenizer=tokenizer)
    assert (n, m) == (1, 3) and first.longest < every.longest and "the 3 eval rows" in every.describe()


def test_training_budget_reads_the_registered_rows_of_a_run(tmp_path, tokenizer):
    from qwen_factory_kit.convert import convert

    convert("sharegpt", str(write_jsonl(tmp_path / "chat.jsonl", [
        {"conversations": [{"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": "hello " * (5 + i)}]}
        for i in range(20)])), data_dir=str(tmp_path / "data"), register=True, name="chat")
    record = {"args": {"dataset": "chat", "dataset_dir": "data"}, "cwd": str(tmp_path)}
    from qwen_factory_kit.post.served import run_budget

    b = run_budget(record, False)
    assert b is not None and "20 training rows (chat)" in b.source
    assert b.longest == n_tokens(tokenizer, "hello " * 24) + 1 or b.longest == n_tokens(tokenizer, ("hello " * 24).strip()) + 1
    assert run_budget({"args": {"dataset": "gone", "dataset_dir": "data"}, "cwd": str(tmp_path)}, False) is None


# --------------------------------------------------------------------------------------------
# the eval batch
# --------------------------------------------------------------------------------------------
def test_eval_batch_for_the_machine(tiny_model):
    assert B.eval_batch(str(tiny_model), 200, 1000, gpus=1) == B.GPU_BATCH
    assert B.eval_batch(str(tiny_model), 200, 1000, gpus=0, memory=8 << 30) == B.CPU_BATCH
    assert B.eval_batch(str(tiny_model), 3, 1000, gpus=0, memory=8 << 30) == 4  # no wider than the rows (power of two)
    per_token = B.kv_bytes_per_token(str(tiny_model))
    assert per_token == 2 * 2 * 16 * 2 * 4  # layers x kv heads x head_dim x (k, v) x float32
    tight = int(4 * 1000 * per_token / B.CPU_MEMORY_SHARE)  # room for 4 rows of 1000 tokens
    assert B.eval_batch(str(tiny_model), 200, 1000, gpus=0, memory=tight) == 4
    assert B.eval_batch("Qwen/Qwen3-4B", 200, 1000, gpus=0) == B.GPU_BATCH  # no config to size it: the builder's


# --------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------
def test_predict_lines_and_eta():
    ev = {"event": "predict", "rows": 2, "total": 4, "new_tokens": 620, "elapsed_s": 20.0}
    assert predict_eta(ev) == 20.0 and clock(40) == "0:40" and clock(3723) == "1:02:03"
    assert predict_line("predicting med_val (tuned)", ev) == "predicting med_val (tuned): 2/4 rows, 31 tok/s, ETA 0:20"
    assert predict_line("p", {"rows": 0, "total": 4}) == "p: 0/4 rows"


def test_meter_counts_rows_and_new_tokens_of_real_generate_calls(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.utils import GenerationMixin

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    original = GenerationMixin.generate
    meter = PredictMeter().install()
    try:
        enc = tok(["hello there", "a longer prompt than the first"], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=151643)
    finally:
        meter.uninstall()
    assert GenerationMixin.generate is original
    assert meter.rows == 2 and meter.new_tokens == 12 == out.shape[0] * (out.shape[1] - enc["input_ids"].shape[1])
    ev = meter.event(5)
    assert ev["event"] == "predict" and ev["rows"] == 2 and ev["total"] == 5 and ev["elapsed_s"] > 0


def test_plain_progress_lines_are_spaced_and_the_last_row_always_shows(monkeypatch):
    from rich.console import Console

    from qwen_factory_kit.launch import runner

    buf = io.StringIO()
    progress = runner._Progress(Console(file=buf, width=200), live=False, label="predicting v (tuned)")
    progress.begin_predict(4)
    clock_now = [1000.0]
    monkeypatch.setattr(runner.time, "time", lambda: clock_now[0])
    progress.plain.last = 1000.0
    for rows, at in ((1, 1001.0), (2, 1006.0), (3, 1007.0), (4, 1008.0)):
        clock_now[0] = at
        progress.update({"event": "predict", "rows": rows, "total": 4, "new_tokens": rows * 10, "elapsed_s": at - 1000})
    lines = buf.getvalue().splitlines()
    assert lines[0] == "predicting v (tuned): 0/4 rows (loading the model)"
    assert [l.split(":")[1].split(",")[0].strip() for l in lines[1:]] == ["2/4 rows", "4/4 rows"]


# --------------------------------------------------------------------------------------------
# the notes of the report
# --------------------------------------------------------------------------------------------
def test_decoding_note_speaks_of_the_think_mode_it_was_run_in(tmp_path):
    from qwen_factory_kit.post.evaluate import ModelRun, decoding

    def run(**args):
        return ModelRun("tuned", tmp_path / "r.yaml", {"template": "qwen3", "max_new_tokens": 64, **args}, {}, [])

    null = decoding(run(enable_thinking=None, do_sample=True), False)["note"]
    thinking = decoding(run(enable_thinking=True, do_sample=True), False)["note"]
    direct = decoding(run(enable_thinking=False, do_sample=False), False)["note"]
    assert "although" not in null and "enable_thinking null" in null
    assert "must never decode greedily" in thinking and "deterministic" in direct


def test_identical_predictions_are_counted_and_explained():
    from qwen_factory_kit.post.evaluate import identical_predictions
    from qwen_factory_kit.post.report import report_sections

    rows = [{"dataset_index": i, "tuned": {"prediction": p}, "base": {"prediction": q}}
            for i, (p, q) in enumerate((("a", "a"), ("b", "b")))]
    same = identical_predictions(rows)
    assert same["rows"] == 2 and same["of"] == 2 and "learning_rate" in same["note"]
    rows[1]["tuned"]["prediction"] = "c"
    assert identical_predictions(rows) == {"rows": 1, "of": 2, "dataset_rows": [0]}
    metrics = json.loads(json.dumps({
        "dataset": "v", "n": 2, "kind": "qa", "row_metric": "rouge_l", "target": {"spec": "saves/x", "trained_on": []}, "leaks": None,
        "models": {"tuned": {"model": "m", "adapter": "a", "template": "qwen3", "enable_thinking": False},
                   "base": {"model": "m", "adapter": None, "template": "qwen3", "enable_thinking": False}},
        "decoding": {"kind": "deterministic", "note": "deterministic", "budget_note": "max_new_tokens 64 (x)"},
        "identical": same, "signatures": {}, "llamafactory": {"note": ""},
        "tuned": {"overall": {"rouge_l": 1.0, "exact_match": 0.0}, "per_direction": {},
                  "compliance": {"share": 1.0, "counts": {}}},
        "base": {"overall": {"rouge_l": 1.0, "exact_match": 0.0}, "per_direction": {},
                 "compliance": {"share": 1.0, "counts": {}}},
        "delta": {"overall": {}, "per_direction": {}, "compliance": 0.0}, "regressions": []}))
    summary = report_sections(metrics, [])[0].text
    assert any(l.startswith("Identical predictions: tuned = base on 2 of 2 rows; tuned and base predictions are identical")
               for l in summary)
    assert any("max_new_tokens 64 (x)" in l for l in summary)


# --------------------------------------------------------------------------------------------
# the fingerprint every LLaMA-Factory run computes of the tokenizer
# --------------------------------------------------------------------------------------------
def test_tokenizer_fingerprint_is_fast_and_still_follows_the_content():
    from datasets.fingerprint import Hasher

    from qwen_factory_kit.lfbridge import fast_tokenizer_fingerprint, load_tokenizer

    fast_tokenizer_fingerprint()
    base = Hasher.hash(load_tokenizer())
    assert Hasher.hash(load_tokenizer()) == base  # the same tokenizer, the same fingerprint
    changed = [load_tokenizer() for _ in range(3)]
    changed[0].chat_template += " "
    changed[1].add_tokens(["<qfk_new_token>"])
    changed[2].padding_side = "left"
    assert len({base, *(Hasher.hash(t) for t in changed)}) == 4  # each change is seen
    tok = load_tokenizer()
    Hasher.hash(tok)
    assert len(tok._vocab) == 151643 and tok("<think>")["input_ids"] == [151667]  # hashing left it whole
