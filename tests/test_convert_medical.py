import json

from conftest import EXAMPLES, read_jsonl, write_jsonl

from qwen_factory_kit.convert import convert


def med(q="Q?", think="step one\n\nstep two\n", answer="A.", quality=0.97, **extra):
    return {"instruction": "I", "question": q, "think": think, "answer": answer, "metrics": {"quality_f1": quality}, **extra}


def test_canonical_output(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [med()])
    res = convert("medical-r1", str(src), output=str(tmp_path / "out.jsonl"))
    rows = read_jsonl(res.output)
    assert rows == [{"instruction": "Q?", "input": "", "output": "<think>\nstep one\n\nstep two\n</think>\n\nA."}]
    assert res.think["mode"] == "reasoning"


def test_bad_rows_are_rejected_with_line_numbers(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        med(),
        med(answer=None),                       # line 2: null
        med(answer=42),                         # line 3: wrong type
        {"question": "Q", "think": "t"},        # line 4: missing answer
        med(answer="   "),                      # line 5: empty
        med(q="<|im_start|>user hi"),          # line 6: special tokens
        med(answer="<think>x</think> A"),      # line 7: reasoning in answer
        med(think="<think>\n\n<think>\nx"),    # line 8: tutorial bug in think
    ], raw_lines=["{not json"])                 # line 9
    res = convert("medical-r1", str(src), output=str(tmp_path / "out.jsonl"))
    assert (res.read, res.written, res.rejected) == (9, 1, 8)
    rejects = read_jsonl(res.rejects)
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "null_field"), (3, "wrong_type"), (4, "missing_field"), (5, "empty_field"), (6, "chat_special_tokens"),
        (7, "reasoning_in_answer"), (8, "think_double_open"), (9, "invalid_json")]
    assert all(r["source"].endswith("in.jsonl") and r["detail"] for r in rejects)
    assert rejects[-1]["record"] == "{not json"
    assert rejects[0]["record"]["answer"] is None  # the original row is kept whole


def test_min_quality_and_escaped_newlines(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [med(quality=0.5), med(answer="one\\ntwo"), med(answer="keep \\\\n escaped")])
    res = convert("medical-r1", str(src), output=str(tmp_path / "a.jsonl"), min_quality=0.9)
    assert res.rejected_by_reason == {"below_min_quality": 1}
    assert res.notes == {"escaped_newlines_in_answer": 1}
    assert read_jsonl(res.output)[0]["output"].endswith("one\\ntwo")  # not repaired silently
    fixed = convert("medical-r1", str(src), output=str(tmp_path / "b.jsonl"), fix_escaped_newlines=True)
    outs = [r["output"] for r in read_jsonl(fixed.output)]
    assert outs[1].endswith("one\ntwo") and outs[2].endswith("keep \\\\n escaped")
    assert fixed.notes["escaped_newlines_fixed_in_answer"] == 1


def test_instruction_as_system_or_user(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [med()])
    sys_res = convert("medical-r1", str(src), output=str(tmp_path / "s.jsonl"), instruction_as="system")
    assert read_jsonl(sys_res.output)[0]["system"] == "I"
    assert sys_res.columns["system"] == "system"
    user = read_jsonl(convert("medical-r1", str(src), output=str(tmp_path / "u.jsonl"), instruction_as="user").output)[0]
    assert (user["instruction"], user["input"]) == ("I", "Q?")


def without_think(**extra):
    row = med(**extra)
    del row["think"]
    return row


def test_row_without_think_is_rejected_with_the_field_named(tmp_path):
    """Every row of this dataset carries its reasoning: a row without it is a schema defect."""
    src = write_jsonl(tmp_path / "in.jsonl", [
        med(),
        without_think(),                       # line 2: no field
        med(think=None),                       # line 3: null
        med(think=""),                         # line 4: empty
        med(think=" \n\t "),                   # line 5: blank
        med(think="<think>\n\n</think>"),      # line 6: an empty block
        med(think=7),                          # line 7: wrong type, not a missing think
    ])
    res = convert("medical-r1", str(src), output=str(tmp_path / "o.jsonl"))
    assert (res.read, res.written, res.rejected) == (7, 1, 6)
    rejects = read_jsonl(res.rejects)
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "missing_field"), (3, "null_field"), (4, "empty_field"), (5, "empty_field"), (6, "empty_field"), (7, "wrong_type")]
    assert all("'think'" in r["detail"] for r in rejects)
    assert all("--allow-missing-think" in r["detail"] for r in rejects[:5]) and "--allow-missing-think" not in rejects[5]["detail"]
    assert res.think["mode"] == "reasoning" and "rows_without_reasoning" not in res.notes


def test_allow_missing_think_keeps_them_with_an_empty_block(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [med(think=""), med(), without_think(), med(think=None), med(think="<think></think>")])
    res = convert("medical-r1", str(src), output=str(tmp_path / "o.jsonl"), allow_missing_think=True)
    outs = [r["output"] for r in read_jsonl(res.output)]
    assert outs == ["<think>\n\n</think>\n\nA.", "<think>\nstep one\n\nstep two\n</think>\n\nA."] + ["<think>\n\n</think>\n\nA."] * 3
    assert res.rejected == 0 and res.think["mode"] == "mixed" and res.notes["rows_without_reasoning"] == 4
    assert json.loads(res.manifest.read_text())["options"]["allow_missing_think"] is True
    omit = convert("medical-r1", str(src), output=str(tmp_path / "p.jsonl"), allow_missing_think=True, empty_think="omit")
    assert read_jsonl(omit.output)[0]["output"] == "A."


def test_allow_missing_think_on_the_command_line(tmp_path, qfk):
    src = write_jsonl(tmp_path / "in.jsonl", [without_think(), med()])
    code, out, err = qfk("convert", "medical-r1", src, "-o", tmp_path / "a.jsonl", "--json")
    assert code == 0, err
    assert json.loads(out)["rejected_by_reason"] == {"missing_field": 1}
    code, out, err = qfk("convert", "medical-r1", src, "-o", tmp_path / "b.jsonl", "--name", "b", "--allow-missing-think", "--json")
    assert code == 0 and json.loads(out)["rejected"] == 0
    code, out, _ = qfk("convert", "medical-r1", "--help")
    assert "--allow-missing-think" in out and "missing_field" in out


def test_bundled_example(tmp_path, qfk_json):
    s = qfk_json("convert", "medical-r1", EXAMPLES / "medical_r1" / "rows.jsonl", "-o", tmp_path / "m.jsonl")
    assert s["read"] == s["written"] + s["rejected"] and s["written"] > 5
    assert {"read", "written", "rejected", "output", "rejects", "manifest"} <= set(s)
    manifest = json.loads(open(s["manifest"]).read())
    assert manifest["counts"]["read"] == s["read"] and manifest["think"]["mode"] == "reasoning"


def test_real_rows(real_samples, tmp_path):
    src = real_samples / "medical_r1" / "val_sample.jsonl"
    res = convert("medical-r1", str(src), output=str(tmp_path / "real.jsonl"))
    raw = read_jsonl(src)
    assert res.read == len(raw) == res.written + res.rejected
    out = read_jsonl(res.output)
    by_q = {r["question"].strip(): r for r in raw}
    for row in out:
        src_row = by_q[row["instruction"]]
        assert row["output"] == "<think>\n" + src_row["think"].strip() + "\n</think>\n\n" + src_row["answer"].strip()
    assert res.notes.get("escaped_newlines_in_answer", 0) > 0  # SOURCES.md: some answers hold a literal \n


def test_split_sizes_are_exact_after_rejected_rows(tmp_path):
    rows = [without_think(q=f"Q{i}?") if i % 4 == 0 else med(q=f"Q{i}?") for i in range(80)]  # 20 rejected
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    for seed in (0, 1, 2):
        res = convert("medical-r1", str(src), output=str(tmp_path / f"o{seed}.jsonl"), test_size=10, val_size=0.25, seed=seed)
        assert res.rejected_by_reason == {"missing_field": 20}
        assert {k: v["rows"] for k, v in res.splits.items()} == {"train": 35, "val": 15, "test": 10}
        questions = [r["instruction"] for v in res.splits.values() for r in read_jsonl(v["path"])]
        assert sorted(questions) == sorted(f"Q{i}?" for i in range(80) if i % 4)
