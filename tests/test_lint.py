"""Each lint rule fires on a row made to break it and stays quiet on canonical rows."""

import json

import pytest
from conftest import EXAMPLES, read_jsonl, write_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.lint import RULES, Layout, layout_from, lint_rows
from qwen_factory_kit.think import format_response

R = format_response("The answer.", "Some reasoning.")
E = format_response("The answer.")


def alpaca(i=0, **kw):
    return {"instruction": f"Question {i}?", "input": "", "output": R, **kw}


def sg(*turns, **kw):
    return {"conversations": [{"from": r, "value": v} for r, v in turns], **kw}


def rules_of(rows, lay=None, **kw):
    lay = lay or layout_from(None, rows[0])
    rep = lint_rows(enumerate(rows, 1), lay, **kw)
    return {(p.id, p.row) for p in rep.problems}, rep


def test_canonical_rows_are_quiet():
    found, rep = rules_of([alpaca(i) for i in range(5)])
    assert found == set() and rep.think["mode"] == "reasoning"
    found, _ = rules_of([sg(("system", "S"), ("human", f"Q{i}"), ("gpt", E)) for i in range(3)], enable_thinking=False)
    assert found == set()
    found, _ = rules_of([{"instruction": f"p{i}", "input": "", "chosen": R, "rejected": E + "x"} for i in range(3)])
    assert found == {("mixed_think_mode", None)}


@pytest.mark.parametrize("output,rule", [
    ("<think>\n\n<think>\nr\n</think>\n\nA", "think_double_open"),
    ("<think>\nr never closed", "think_unclosed"),
    ("r</think>\n\nA", "think_close_without_open"),
    ("A <think>\nr\n</think>\n\nB", "think_not_at_start"),
    ("<think>a<think>b</think></think>A", "think_nested"),
    ("<think>\na\n</think>\n\nB<think>\nc\n</think>\n\nD", "think_multiple_blocks"),
    ("<think>r</think>A", "think_noncanonical"),
    ("<|im_start|>assistant\nA<|im_end|>", "chat_special_tokens"),
    ("", "empty_response"),
    ("Ã©tÃ© trÃ¨s", "mojibake"),
])
def test_response_rules(output, rule):
    found, _ = rules_of([alpaca(0), alpaca(1, output=output)])
    assert (rule, 2) in found


def test_row_rules():
    rows = [alpaca(0), alpaca(1, output=42), alpaca(2, instruction=""), alpaca(3, instruction="<think>x</think> Q"),
            alpaca(4, instruction="<|im_start|>user Q"), alpaca(0), alpaca(0, output=format_response("Other.", "r"))]
    found, _ = rules_of(rows)
    assert {("response_not_string", 2), ("empty_prompt", 3), ("reasoning_in_prompt", 4), ("chat_special_tokens", 5),
            ("duplicate_row", 6), ("conflicting_answers", 7)} <= found


def test_sharegpt_rules():
    rows = [sg(("human", "Q"), ("gpt", R)), sg(("human", "Q2"), ("system", "S"), ("gpt", R)), sg(("gpt", R), ("human", "Q3")),
            sg(("human", "Q4")), sg(("human", "Q5"), ("wizard", R)), sg(("system", "S"))]
    found, _ = rules_of(rows)
    assert {("system_not_first", 2), ("role_order", 3), ("ends_without_answer", 4), ("invalid_role", 5),
            ("empty_conversation", 6)} <= found
    assert not {rule for rule, row in found if row == 1}


def test_sharegpt_rule_ids_are_the_converters_reject_reasons(tmp_path):
    """One turn rule (lfformat.turn_problem): lint's rule id is the reason qfk convert gives."""
    from qwen_factory_kit.lfformat import TURN_PROBLEMS

    assert set(TURN_PROBLEMS) <= set(RULES)
    rows = [sg(("human", "Q0"), ("gpt", R)), sg(("human", "Q1")), sg(("gpt", R), ("human", "Q2")),
            sg(("human", "Q3"), ("system", "S"), ("gpt", R)), sg(("human", "Q4"), ("wizard", "A")), sg(("system", "S"))]
    res = convert("sharegpt", str(write_jsonl(tmp_path / "in.jsonl", rows)), output=str(tmp_path / "o.jsonl"))
    found, _ = rules_of(rows)
    assert res.rejected_by_reason == dict.fromkeys(sorted(TURN_PROBLEMS), 1)
    assert sorted((rule, row) for rule, row in found) == sorted((r["reason"], r["line"]) for r in read_jsonl(res.rejects))


def test_sharegpt_rules_follow_the_tags_block():
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    lay = Layout("sharegpt", False, {"messages": "messages"}, tags)
    ok = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": R}]}
    system = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": R}]}
    found, _ = rules_of([ok, system], lay)
    assert found == {("invalid_role", 2)}  # no system_tag in the block: LLaMA-Factory reads 'system' as a turn


def test_template_combinations():
    rows = [alpaca(0, output=E), alpaca(1, output=E)]
    found, _ = rules_of(rows, template="qwen3_nothink")
    assert ("empty_block_with_nothink", 1) in found
    found, _ = rules_of([alpaca(0), alpaca(1)], enable_thinking=False)
    assert ("reasoning_stripped", 1) in found
    found, _ = rules_of([alpaca(0), alpaca(1, output=E)])
    assert ("mixed_think_mode", None) in found


def test_every_rule_has_a_fix():
    assert all(sev in ("error", "warn") and text and hint for sev, text, hint in RULES.values())


def test_cli_on_registered_and_path(tmp_path, qfk):
    data = tmp_path / "data"
    convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), data_dir=str(data), register=True, name="med")
    code, out, _ = qfk("lint", "med", "--data-dir", data, "--json")
    rep = json.loads(out)
    assert code == 0 and rep["errors"] == 0 and rep["think"]["mode"] == "reasoning"
    code, out, _ = qfk("lint", "med", "--data-dir", data, "--enable-thinking", "false", "--json")
    assert code == 1 and json.loads(out)["by_rule"]["reasoning_stripped"] == 1
    bad = write_jsonl(tmp_path / "bad.jsonl", [alpaca(0, output="<think>\n\n<think>\nx\n</think>\n\nA")])
    code, out, _ = qfk("lint", bad)
    assert code == 1 and "row 1" in out and "think_double_open" in out and "fix:" in out
    code, _, err = qfk("lint", "nope", "--data-dir", data)
    assert code == 2 and "Undefined dataset" in err


def test_converted_examples_lint_clean(tmp_path):
    """What qfk convert writes never trips the error rules."""
    data = tmp_path / "data"
    for conv, src, opts in (("medical-r1", EXAMPLES / "medical_r1" / "rows.jsonl", {}), ("sharegpt", EXAMPLES / "finetome", {}),
                            ("moses", EXAMPLES / "moses", {}), ("preference", EXAMPLES / "preference" / "pairs.jsonl", {})):
        res = convert(conv, str(src), data_dir=str(data), register=True, **opts)
        rows = [json.loads(l) for l in res.output.read_text().splitlines()]
        lay = Layout(res.formatting, res.ranking, {**({"messages": "conversations"} if res.formatting == "sharegpt" else {}), **res.columns},
                     layout_from(None, None).tags)
        rep = lint_rows(enumerate(rows, 1), lay, enable_thinking=None)
        assert rep.total("error") == 0, (conv, rep.summary()["by_rule"])
