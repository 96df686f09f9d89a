import pyarrow as pa
import pyarrow.parquet as pq
from conftest import EXAMPLES, read_jsonl, write_jsonl

from qwen_factory_kit.convert import convert


def c(*turns):
    return {"conversations": [{"from": r, "value": v} for r, v in turns]}


def test_single_and_multi_turn_keep_every_turn(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        c(("human", "Q1"), ("gpt", "A1")),
        c(("system", "S"), ("human", "Q1"), ("gpt", "A1"), ("human", "Q2"), ("gpt", "A2"), ("human", "Q3"), ("gpt", "A3")),
    ])
    res = convert("sharegpt", str(src), output=str(tmp_path / "o.jsonl"))
    rows = read_jsonl(res.output)
    e = "<think>\n\n</think>\n\n"
    assert rows[0] == {"instruction": "Q1", "input": "", "output": e + "A1", "system": "", "history": []}
    assert rows[1] == {"instruction": "Q3", "input": "", "output": e + "A3", "system": "S",
                       "history": [["Q1", e + "A1"], ["Q2", e + "A2"]]}
    assert res.notes == {"multi_turn_rows": 1, "rows_with_system": 1}


def test_sharegpt_output_and_aliases(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\nhello"}]},
    ])
    res = convert("finetome", str(src), output=str(tmp_path / "o.jsonl"), format="sharegpt", empty_think="omit")
    assert read_jsonl(res.output) == [{"conversations": [{"from": "human", "value": "hi"},
                                                         {"from": "gpt", "value": "<think>\nr\n</think>\n\nhello"}], "system": ""}]
    assert res.formatting == "sharegpt" and res.columns == {"messages": "conversations", "system": "system"}
    assert res.think["mode"] == "reasoning"


def test_omit_empty_and_normalise_existing_tags(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [c(("human", "Q"), ("gpt", "<think>r</think>A")), c(("human", "Q"), ("gpt", "B"))])
    res = convert("sharegpt", str(src), output=str(tmp_path / "o.jsonl"), empty_think="omit")
    assert [r["output"] for r in read_jsonl(res.output)] == ["<think>\nr\n</think>\n\nA", "B"]
    assert res.think == {"mode": "mixed", "empty_style": "omit", "responses_with_reasoning": 1,
                         "responses_with_empty_block": 0, "responses_without_block": 1}


def test_rule_violations_are_rejected(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        c(("human", "Q")),                                             # 1 odd count
        c(("gpt", "A"), ("human", "Q")),                               # 2 order
        c(("human", "Q"), ("system", "S"), ("gpt", "A")),             # 3 system not first
        c(("human", "Q"), ("wizard", "A")),                            # 4 role
        c(("human", "Q"), ("gpt", "")),                                # 5 empty
        c(("human", "<think>x</think>Q"), ("gpt", "A")),              # 6 think in prompt
        c(("human", "Q"), ("gpt", "<think>\nunclosed")),              # 7 unbalanced
        {"conversations": "not a list"},                               # 8
        {"other": 1},                                                  # 9
        c(("human", "Q1"), ("gpt", "A1"), ("human", "Q2"), ("gpt", "A2")),  # 10 fine
        c(("human", "Q"), ("function_call", "{}"), ("observation", "{}"), ("gpt", "A")),  # 11 tools need sharegpt
    ])
    res = convert("sharegpt", str(src), output=str(tmp_path / "o.jsonl"))
    got = [(r["line"], r["reason"]) for r in read_jsonl(res.rejects)]
    assert got == [(1, "ends_without_answer"), (2, "role_order"), (3, "system_not_first"), (4, "invalid_role"),
                   (5, "empty_turn"), (6, "reasoning_in_prompt"), (7, "think_unclosed"), (8, "wrong_type"),
                   (9, "missing_field"), (11, "tool_turns_need_sharegpt")]
    assert res.written == 1


def test_single_turn_only_rejects_multi_turn_with_reason(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [c(("human", "Q"), ("gpt", "A")),
                                              c(("human", "Q1"), ("gpt", "A1"), ("human", "Q2"), ("gpt", "A2"))])
    res = convert("sharegpt", str(src), output=str(tmp_path / "s.jsonl"), single_turn_only=True)
    assert (res.written, res.rejected_by_reason) == (1, {"multi_turn": 1})
    assert read_jsonl(res.rejects)[0]["line"] == 2


def test_tool_turns_kept_in_sharegpt_format(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [c(("human", "Q"), ("function_call", "{}"), ("observation", "{}"), ("gpt", "A"))])
    res = convert("sharegpt", str(src), output=str(tmp_path / "o.jsonl"), format="sharegpt")
    assert res.written == 1
    assert [m["from"] for m in read_jsonl(res.output)[0]["conversations"]] == ["human", "function_call", "observation", "gpt"]


def test_parquet_folder_and_split(tmp_path, qfk_json):
    s = qfk_json("convert", "finetome", EXAMPLES / "finetome", "-o", tmp_path / "ft.jsonl", "--val-size", "3")
    assert s["read"] == 16 and s["read"] == s["written"] + s["rejected"]
    assert s["splits"]["val"]["rows"] + s["splits"]["train"]["rows"] == s["written"]
    rows = read_jsonl(s["output"]) + read_jsonl(s["splits"]["val"]["path"])
    assert any(r["history"] for r in rows) and any(r["system"] for r in rows)


def test_min_score(tmp_path):
    table = pa.table({"conversations": [[{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]] * 2,
                      "score": [3.0, 5.0]})
    pq.write_table(table, tmp_path / "t.parquet")
    res = convert("sharegpt", str(tmp_path / "t.parquet"), output=str(tmp_path / "o.jsonl"), min_score=4.0)
    assert (res.written, res.rejected_by_reason) == (1, {"below_min_score": 1})
    assert read_jsonl(res.rejects)[0]["row"] == 1


def test_real_finetome_rows(real_samples, tmp_path):
    src = real_samples / "finetome" / "rows.jsonl"
    res = convert("sharegpt", str(src), output=str(tmp_path / "o.jsonl"))
    raw = read_jsonl(src)
    assert res.read == len(raw) == res.written
    out = read_jsonl(res.output)
    # row 4: a system turn and two user/assistant pairs -> system + one history pair + last pair
    assert out[3]["system"].startswith("You are a helpful assistant")
    assert len(out[3]["history"]) == 1
    for row, src_row in zip(out, raw):
        n_turns = sum(1 for m in src_row["conversations"] if m["from"] != "system")
        assert 2 * (len(row["history"]) + 1) == n_turns


def test_columnar_fast_path_equals_row_path(tmp_path):
    """Parquet goes through the Arrow fast path, JSON Lines through the row path: same bytes."""
    convs = [
        c(("human", "Q"), ("gpt", "A")),
        c(("system", "S"), ("human", " Q1 "), ("gpt", "A1\n"), ("human", "Q2"), ("gpt", "A2")),
        c(("human", "Q"), ("gpt", "<think>r</think>A")),
        c(("human", "<|im_start|>Q"), ("gpt", "A")),
        c(("human", "Q"), ("gpt", "")),
        c(("human", "Q")),
        c(("user", "Q"), ("assistant", "A")),
        c(("human", "Q"), ("function_call", "{}")),
        c(("gpt", "A"), ("human", "Q")),
        c(("system", ""), ("human", "Q"), ("gpt", "A")),
        c(("human", "Q"), ("system", "S"), ("gpt", "A")),
        c(("human", "Q"), ("wizard", "A")),
        c(("system", "S")),
        c(("human", "Q"), ("system", ""), ("gpt", "A")),
        {"conversations": []},
        {"conversations": None},
    ]
    rows = [{**r, "score": 4.0 + i / 10} for i, r in enumerate(convs)]
    jsonl = write_jsonl(tmp_path / "rows.jsonl", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet", row_group_size=5)
    for opts in ({}, {"format": "sharegpt"}, {"empty_think": "omit", "min_score": 4.3}, {"single_turn_only": True}):
        a = convert("sharegpt", str(jsonl), output=str(tmp_path / "a.jsonl"), **opts)
        b = convert("sharegpt", str(tmp_path / "rows.parquet"), output=str(tmp_path / "b.jsonl"), **opts)
        assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes(), opts
        assert a.rejected_by_reason == b.rejected_by_reason and a.notes == b.notes and a.think == b.think, opts
        ra = [(r["line"], r["reason"], r["detail"]) for r in read_jsonl(a.rejects)]
        rb = [(r["row"], r["reason"], r["detail"]) for r in read_jsonl(b.rejects)]
        assert ra == rb, opts
