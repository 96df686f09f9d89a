"""What qfk writes, loaded by LLaMA-Factory's own loader with the real Qwen3 tokenizer.

Every row must survive LLaMA-Factory's converter (no silent drops), and reasoning rows must keep
``<think>\\n...\\n</think>\\n\\n`` in the trained labels.
"""

import pytest
from conftest import EXAMPLES, read_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.think import parse_response

pytestmark = pytest.mark.slow
lfb = pytest.importorskip("qwen_factory_kit.lfbridge")


@pytest.fixture(scope="module")
def tok():
    return lfb.load_tokenizer()


def test_medical_reasoning_rows_keep_think_in_labels(tmp_path, tok):
    data = tmp_path / "data"
    res = convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), data_dir=str(data), register=True, name="med")
    ds = lfb.preprocess(data, "med", tokenizer=tok)
    rows = read_jsonl(res.output)
    assert len(ds) == len(rows) == res.written
    for ex, row in zip(ds, rows):
        trained = lfb.trained_text(tok, ex)
        reasoning = parse_response(row["output"]).reasoning
        assert trained.startswith("<think>\n" + reasoning + "\n</think>\n\n"), trained[:80]
        assert trained.endswith("<|im_end|>\n")


@pytest.mark.parametrize("enable_thinking", [True, False, None])
def test_finetome_history_and_system_under_each_think_mode(tmp_path, tok, enable_thinking):
    data = tmp_path / "data"
    res = convert("sharegpt", str(EXAMPLES / "finetome"), data_dir=str(data), register=True, name="ft")
    ds = lfb.preprocess(data, "ft", tokenizer=tok, enable_thinking=enable_thinking)
    rows = read_jsonl(res.output)
    assert len(ds) == len(rows)
    for ex, row in zip(ds, rows):
        full = tok.decode(ex["input_ids"])
        trained = lfb.trained_text(tok, ex)
        answers = [h[1] for h in row["history"]] + [row["output"]]
        assert full.count("<|im_start|>assistant") == len(answers)
        if row["system"]:
            assert full.startswith("<|im_start|>system\n" + row["system"])
        for answer in answers:
            parsed = parse_response(answer)
            if enable_thinking is False:  # LLaMA-Factory strips the canonical block and masks it
                assert parsed.answer in trained and "<think>" not in trained
            else:
                assert answer in trained


def test_sharegpt_format_and_translation_and_ranking(tmp_path, tok):
    data = tmp_path / "data"
    sg = convert("sharegpt", str(EXAMPLES / "finetome"), data_dir=str(data), register=True, name="ftsg", format="sharegpt")
    mo = convert("moses", str(EXAMPLES / "moses"), data_dir=str(data), register=True, name="tr")
    zp = convert("moses", str(EXAMPLES / "opus" / "en-ja.txt.zip"), data_dir=str(data), register=True, name="opus", empty_think="omit")
    pr = convert("preference", str(EXAMPLES / "preference" / "pairs.jsonl"), data_dir=str(data), register=True, name="pref")
    assert len(lfb.preprocess(data, "ftsg", tokenizer=tok)) == sg.rows_out
    ds = lfb.preprocess(data, "tr", tokenizer=tok, enable_thinking=False)
    rows = read_jsonl(mo.output)
    assert len(ds) == mo.rows_out == len(rows)
    ex, row = ds[0], rows[0]
    assert lfb.trained_text(tok, ex) == parse_response(row["output"]).answer + "<|im_end|>\n"
    assert "<|im_start|>system\nYou are a professional translator" in tok.decode(ex["input_ids"])
    assert len(lfb.preprocess(data, "opus", tokenizer=tok, enable_thinking=False)) == zp.rows_out
    pairs = lfb.preprocess(data, "pref", stage="rm", tokenizer=tok)
    assert len(pairs) == pr.written
    assert "chosen_input_ids" in pairs.column_names and "rejected_input_ids" in pairs.column_names


def test_real_medical_rows_through_llamafactory(real_samples, tmp_path, tok):
    data = tmp_path / "data"
    res = convert("medical-r1", str(real_samples / "medical_r1" / "val_sample.jsonl"), data_dir=str(data), register=True, name="realmed",
                  limit=40, seed=3)
    ds = lfb.preprocess(data, "realmed", tokenizer=tok, cutoff_len=8192)
    assert len(ds) == res.written == 40
    for ex in ds:
        trained = lfb.trained_text(tok, ex)
        assert trained.startswith("<think>\n") and "\n</think>\n\n" in trained
