"""Reading LLaMA-Factory's generated_predictions.jsonl and joining it with the eval dataset
(qwen_factory_kit.post.predictions)."""

import json

import pytest
from conftest import write_jsonl

from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.post.metrics import score_rows
from qwen_factory_kit.post.predictions import (PREDICTIONS_FILE, join_dataset, last_user_turn, load_predictions,
                                               read_predictions)
from qwen_factory_kit.think import format_response

SYSTEM = "You are a professional translator."
DATASET = [
    {"instruction": "Translate <en> to <ja>.", "input": "Good morning, nice weather today.",
     "output": format_response("おはようございます、今日はいい天気ですね。"), "system": SYSTEM},
    {"instruction": "What is the capital of France?", "input": "",
     "output": format_response("Paris.", "France's capital is Paris."), "system": SYSTEM},
]


def rendered(row: dict, *, enable_thinking: bool = True) -> str:
    """The prompt LLaMA-Factory 0.9.5 writes for an Alpaca row with the qwen3 template."""
    user = "\n".join(p for p in (row["instruction"], row["input"]) if p)
    tail = "<think>\n\n</think>\n\n" if not enable_thinking else ""
    return f"<|im_start|>system\n{row['system']}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{tail}"


def predictions_file(folder, records) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PREDICTIONS_FILE
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(folder)


def test_read_splits_think_and_answer(tmp_path):
    folder = predictions_file(tmp_path / "out", [
        {"prompt": rendered(DATASET[0]), "predict": "<think>\nA greeting.\n</think>\n\nおはようございます。", "label": DATASET[0]["output"]},
        {"prompt": rendered(DATASET[1]), "predict": "Paris.", "label": DATASET[1]["output"]},
    ])
    rows = read_predictions(folder)
    assert [r["line"] for r in rows] == [1, 2]
    assert rows[0]["reasoning"] == "A greeting." and rows[0]["answer"] == "おはようございます。"
    assert rows[1]["reasoning"] is None and rows[1]["answer"] == "Paris."
    assert rows[0]["reference"] == DATASET[0]["output"] and rows[0]["prompt"].endswith("assistant\n")
    assert read_predictions(tmp_path / "out" / PREDICTIONS_FILE) == rows


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(QfkError, match="no predictions file"):
        read_predictions(tmp_path)
    (tmp_path / PREDICTIONS_FILE).write_text('{"prompt": "p", "predict": "a", "label": "b"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(QfkError, match=r"generated_predictions.jsonl:2 is not a JSON object"):
        read_predictions(tmp_path)
    (tmp_path / PREDICTIONS_FILE).write_text('{"prompt": "p", "predict": null, "label": "b"}\n', encoding="utf-8")
    with pytest.raises(QfkError, match="has no text 'predict'"):
        read_predictions(tmp_path)
    (tmp_path / PREDICTIONS_FILE).write_text("\n\n", encoding="utf-8")
    with pytest.raises(QfkError, match="holds no predictions"):
        read_predictions(tmp_path)


def test_last_user_turn():
    assert last_user_turn(rendered(DATASET[0])) == "Translate <en> to <ja>.\nGood morning, nice weather today."
    assert last_user_turn("<|im_start|>user\ncut by cutoff_len") is None
    assert last_user_turn("no chat template") is None


def test_join_restores_the_reference_lost_under_enable_thinking_false(tmp_path):
    # Under enable_thinking: false LLaMA-Factory strips the reasoning from the label; the
    # dataset still has it. Predictions come in another order than the dataset.
    folder = predictions_file(tmp_path / "out", [
        {"prompt": rendered(DATASET[1], enable_thinking=False), "predict": "Paris.", "label": "Paris."},
        {"prompt": rendered(DATASET[0], enable_thinking=False), "predict": "おはよう。", "label": "おはようございます、今日はいい天気ですね。"},
    ])
    data = write_jsonl(tmp_path / "eval.jsonl", DATASET)
    rows = load_predictions(folder, dataset=data)
    assert [r["dataset_index"] for r in rows] == [1, 0]
    assert rows[0]["reference"] == DATASET[1]["output"] and rows[0]["label"] == "Paris."
    assert rows[1]["instruction"] == "Translate <en> to <ja>." and rows[1]["dataset_row"] == DATASET[0]
    # with the dataset's references, mixed-mode compliance knows row 0 expected reasoning
    mixed = score_rows(rows, kind="qa", enable_thinking=None)
    assert mixed.compliance.expected_reasoning == 1 and mixed.compliance.non_compliant_examples == [0]
    assert mixed.rows[0]["exact_match"] and mixed.rows[0]["reference"] == "Paris."


def test_join_sharegpt_rows_and_repeated_prompts():
    conv = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "Capital of France?"}, {"from": "gpt", "value": "Paris."}]
    dataset = [{"conversations": conv}, {"conversations": conv[:2]}, {"conversations": conv}]
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    preds = [{"line": n, "prompt": prompt, "prediction": "Paris.", "reference": "Paris."} for n in (1, 2)]
    joined = join_dataset(preds, dataset)
    assert [r["dataset_index"] for r in joined] == [0, 2] and joined[0]["reference"] == "Paris."
    assert "instruction" not in joined[0]
    with pytest.raises(QfkError, match=r"1 of 3 predictions match no dataset row \(lines 3\)"):
        join_dataset(preds + [{"line": 3, "prompt": prompt, "prediction": "x", "reference": "x"}], dataset)


def test_predictions_to_scores_end_to_end(tmp_path):
    folder = predictions_file(tmp_path / "out", [
        {"prompt": rendered(DATASET[0]), "predict": "<think>\n\n</think>\n\nおはようございます、今日はいい天気ですね。", "label": DATASET[0]["output"]},
    ])
    result = score_rows(read_predictions(folder), enable_thinking=False)
    assert result.kind == "translation" and result.per_direction["en-ja"]["bleu"] == pytest.approx(100.0)
    assert result.compliance.counts["empty_block"] == 1 and result.compliance.compliant == 1
