"""Leak checks: eval rows that are training rows (planted overlaps, variants that still count, answers
that differ), the same dataset under other names, two conversions of one source, and the commands
that report them (``qfk recipe check``, ``qfk lint A --against B``)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLES, write_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.leaks import EMPTY_KEY, base_name, check_leaks, overlap, row_key
from qwen_factory_kit.lint import layout_from
from qwen_factory_kit.registry import Registry, build_entry, file_name_for
from qwen_factory_kit.think import format_response

ALPACA = layout_from({"formatting": "alpaca"}, None)
SHAREGPT = layout_from({"formatting": "sharegpt"}, None)
PREFERENCE = layout_from(None, {"instruction": "", "input": "", "chosen": "", "rejected": ""})


def qa(i: int, answer: str | None = None, reasoning: str | None = "Some reasoning.") -> dict:
    return {"instruction": f"Question number {i}: what is {i} + {i}?", "input": "",
            "output": format_response(answer or f"It is {2 * i}.", reasoning)}


def sg(question: str, answer: str, reasoning: str | None = None, earlier: tuple[str, str] | None = None) -> dict:
    turns = [("system", "You are helpful.")]
    if earlier:
        turns += [("human", earlier[0]), ("gpt", earlier[1])]
    turns += [("human", question), ("gpt", format_response(answer, reasoning))]
    return {"conversations": [{"from": r, "value": v} for r, v in turns]}


@pytest.fixture
def data(tmp_path) -> Path:
    return tmp_path / "data"


def register(data: Path, name: str, rows: list[dict], **entry) -> Path:
    path = write_jsonl(data / f"{name}.jsonl", rows)
    reg = Registry.at(data)
    formatting = entry.pop("formatting", "sharegpt" if "conversations" in rows[0] else "alpaca")
    reg.add(name, build_entry(file_name_for(path, data), formatting=formatting, **entry))
    return path


def errors(findings):
    return [f for f in findings if f.severity == "error"]


# --------------------------------------------------------------------------------------------
# the key of a row
# --------------------------------------------------------------------------------------------
def test_the_same_qa_with_other_reasoning_whitespace_or_width_has_the_same_key():
    key = row_key(qa(1), ALPACA)
    assert row_key(qa(1, reasoning="Completely different thinking, much longer."), ALPACA) == key
    assert row_key(qa(1, reasoning=None), ALPACA) == key  # an empty block, or none at all
    assert row_key({**qa(1), "output": "It is 2."}, ALPACA) == key
    assert row_key({**qa(1), "instruction": "  Question number 1:\n\twhat is 1 +  1? "}, ALPACA) == key
    assert row_key({**qa(1), "instruction": "Ｑｕｅｓｔｉｏｎ number １:\u3000what is 1 + 1?"}, ALPACA) == key  # NFKC
    assert row_key({**qa(1), "instruction": "Question number 1:", "input": "what is 1 + 1?"}, ALPACA) == key


def test_other_answers_or_prompts_have_other_keys():
    key = row_key(qa(1), ALPACA)
    assert row_key(qa(1, answer="It is 3."), ALPACA) != key
    assert row_key(qa(2), ALPACA) != key
    assert row_key({**qa(1), "instruction": "question number 1: what is 1 + 1?"}, ALPACA) != key  # case is kept
    assert row_key({}, ALPACA) == EMPTY_KEY


def test_sharegpt_key_is_the_user_turns_and_the_last_answer():
    key = row_key(sg("What is 2 + 2?", "4.", "2 and 2 make 4."), SHAREGPT)
    assert row_key(sg("What is 2 + 2?", "4.", "Counting on fingers."), SHAREGPT) == key
    assert row_key(sg("What  is 2 + 2? ", "4."), SHAREGPT) == key
    assert row_key(sg("What is 2 + 2?", "Four."), SHAREGPT) != key
    assert row_key(sg("What is 2 + 2?", "4.", earlier=("Hi", "Hello!")), SHAREGPT) != key  # another conversation
    # a one-turn conversation asks and answers what the Alpaca row does
    assert row_key(sg("Question number 1: what is 1 + 1?", "It is 2."), SHAREGPT) == row_key(qa(1), ALPACA)


def test_preference_key_is_the_prompt_and_the_chosen_answer():
    row = {"instruction": "Name a grey cat.", "input": "", "chosen": "Pebble.", "rejected": "Dog."}
    key = row_key(row, PREFERENCE)
    assert row_key({**row, "rejected": "Rex."}, PREFERENCE) == key
    assert row_key({**row, "chosen": format_response("Pebble.", "Grey things: pebbles.")}, PREFERENCE) == key
    assert row_key({**row, "chosen": "Ash."}, PREFERENCE) != key
    sharegpt_ranking = layout_from({"formatting": "sharegpt", "ranking": True,
                                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}, None)
    sg_row = {"conversations": [{"from": "human", "value": "Name a grey cat."}],
              "chosen": {"from": "gpt", "value": "Pebble."}, "rejected": {"from": "gpt", "value": "Dog."}}
    assert row_key(sg_row, sharegpt_ranking) == key


# --------------------------------------------------------------------------------------------
# overlap: planted rows
# --------------------------------------------------------------------------------------------
def planted_alpaca(data: Path) -> None:
    register(data, "train", [qa(i) for i in range(1, 31)])
    register(data, "exam", [qa(101), qa(5, reasoning="Other reasoning."), qa(102),
                            {**qa(10), "instruction": " Question number １０:  what is 10 + 10?\n"}, qa(103),
                            qa(12, answer="It is 25.")])


def test_overlap_finds_planted_alpaca_rows_from_either_side(data):
    planted_alpaca(data)
    ov = overlap("train", "exam", data)
    # the other answer to row 12 is not the same row, but the same question with a near answer: a near leak
    assert (ov.count, ov.b_shared, ov.a_shared, ov.b_near, ov.a_near) == (3, 2, 2, 1, 1)
    assert (ov.a_rows, ov.b_rows, ov.a_examples, ov.b_examples) == (30, 6, [5, 10], [2, 4])
    assert [(e["a_row"], e["b_row"]) for e in ov.examples["near"]] == [(12, 6)]
    back = overlap("exam", "train", data)  # the smaller side is kept in memory, whichever it is
    assert (back.count, back.a_rows, back.b_rows, back.a_examples, back.b_examples) == (3, 6, 30, [2, 4], [5, 10])
    assert [(e["a_row"], e["b_row"]) for e in back.examples["near"]] == [(6, 12)]
    assert json.loads(json.dumps(ov.as_dict()))["count"] == 3


def test_overlap_counts_every_repeated_row_and_lists_at_most_five(data):
    register(data, "train", [qa(i) for i in range(1, 11)])
    register(data, "exam", [qa(i, reasoning=f"r{i}") for i in range(1, 9)] + [qa(1), qa(50)])
    ov = overlap("train", "exam", data)
    assert (ov.b_shared, ov.a_shared, ov.b_rows) == (9, 8, 10)
    assert ov.b_examples == [1, 2, 3, 4, 5] and ov.a_examples == [1, 2, 3, 4, 5]


def test_overlap_finds_planted_sharegpt_rows(data):
    register(data, "chat", [sg(f"Question {i}?", f"Answer {i}.", f"Think {i}.") for i in range(20)])
    register(data, "chat_eval", [sg("Question 3?", "Answer 3.", "Other thinking."), sg("New question?", "New answer."),
                                 sg("Question  7?\n", "Answer 7."), sg("Question 9?", "A different answer.")])
    ov = overlap("chat", "chat_eval", data)
    assert (ov.count, ov.b_examples, ov.a_examples, ov.a_rows, ov.b_rows) == (2, [1, 3], [4, 8], 20, 4)


def test_overlap_reads_files_too(data, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [qa(i) for i in range(5)])
    b = write_jsonl(tmp_path / "b.jsonl", [qa(3, reasoning="x"), qa(9)])
    assert overlap(str(a), str(b)).count == 1


# --------------------------------------------------------------------------------------------
# check_leaks
# --------------------------------------------------------------------------------------------
def test_a_clean_pair_is_ok_and_says_what_was_compared(data):
    register(data, "train", [qa(i) for i in range(1, 31)])
    register(data, "exam", [qa(i) for i in range(100, 104)] + [{**qa(12), "instruction": "Name a prime number above 12."}])
    found = check_leaks(["train"], ["exam"], data)
    assert [(f.id, f.severity) for f in found] == [("leak", "ok")]
    assert "exam (5 rows) against train (30 rows)" in found[0].message


def test_a_planted_leak_is_an_error_with_count_and_rows(data):
    planted_alpaca(data)
    register(data, "other", [qa(i) for i in range(200, 210)])
    found = check_leaks(iter(["other", "train"]), iter(["exam", "exam"]), data)  # any iterables; each pair once
    assert [(f.id, f.severity, f.where) for f in found] == [("leak", "error", "exam")]  # other is clean: no ok next to an error
    msg = found[0].message
    assert "2 of its 6 rows are in training dataset train" in msg and "eval rows 2, 4" in msg and "training rows 5, 10" in msg
    assert "qfk lint train --against exam" in found[0].fix


def test_the_same_dataset_on_both_sides(data):
    register(data, "med", [qa(i) for i in range(8)])
    found = check_leaks(["med"], ["med"], data)
    assert len(found) == 1 and found[0].severity == "error"
    assert "med is both a training and an eval dataset: 8 of its 8 rows are training rows" in found[0].message
    assert "--val-size" in found[0].fix and "=" not in found[0].fix  # med_val is not registered: a command, no override


def test_a_mix_or_filtered_entry_is_its_base_dataset(data):
    path = register(data, "med", [qa(i) for i in range(8)])
    register(data, "med_val", [qa(i) for i in range(50, 52)])
    reg = Registry.at(data)
    reg.add("med__n100", {**reg.get("med"), "num_samples": 100})
    found = check_leaks(["med__n100"], ["med"], data)
    assert errors(found) and "med__n100 (made from med)" in found[0].message and "8 of its 8 rows" in found[0].message
    assert "eval_dataset=med_val" in found[0].fix  # registered: named as it is
    shutil.copy(path, data / "med__max2048.jsonl")
    reg.add("med__max2048", build_entry("med__max2048.jsonl"))
    assert "med__max2048 (made from med)" in errors(check_leaks(["med"], ["med__max2048"], data))[0].message
    assert errors(check_leaks(["med__max2048__n20"], ["med__n5"], data))  # by name, registered or not
    assert base_name("med__max2048__n20") == "med" and base_name("med_n5") == "med_n5"
    reg.add("alias", build_entry(str(path)))  # another name for the same file
    assert "both point to" in errors(check_leaks(["med"], ["alias"], data))[0].message
    assert not errors(check_leaks(["med__n100"], ["med_val"], data))


def test_two_conversions_of_the_same_source(data):
    source = str(EXAMPLES / "medical_r1" / "rows.jsonl")
    for name, options in (("med", {"val_size": 0.2}), ("med2", {"val_size": 0.2}), ("med3", {})):
        convert("medical-r1", source, name=name, data_dir=str(data), register=True, seed=42, **options)
    manifests = [str(data / f"{n}.manifest.json") for n in ("med", "med2", "med3")]
    # one conversion's own splits: apart, no finding but ok
    assert [f.severity for f in check_leaks(["med"], ["med_val"], data)] == ["ok"]
    # converted again with the same split: no row shared now, but the source is the same
    found = check_leaks(["med"], ["med2_val"], data)
    assert [f.severity for f in found] == ["warn"]
    assert manifests[0] in found[0].message and manifests[1] in found[0].message
    # converted again without a split: every val row of the first conversion is trained on
    found = check_leaks(["med3"], ["med_val"], data)
    assert [f.severity for f in found] == ["error"]
    assert "2 of its 2 rows are in training dataset med3" in found[0].message
    assert "same source" in found[0].message and manifests[2] in found[0].message and manifests[0] in found[0].message


def test_unreadable_pairs_are_info(data):
    register(data, "med", [qa(i) for i in range(3)])
    Registry.at(data).add("hub", {"hf_hub_url": "someone/some-data"})
    found = check_leaks(["med"], ["hub", "nope"], data)
    assert [(f.severity, f.where) for f in found] == [("info", "hub"), ("info", "nope")]
    assert "hub entry" in found[0].message


# --------------------------------------------------------------------------------------------
# qfk recipe check, qfk lint --against
# --------------------------------------------------------------------------------------------
def recipe(data: Path, train: str, evals: str | None) -> dict:
    args = {"model_name_or_path": "Qwen/Qwen3-0.6B", "stage": "sft", "do_train": True, "finetuning_type": "lora",
            "dataset": train, "dataset_dir": str(data), "template": "qwen3", "enable_thinking": True,
            "output_dir": str(data.parent / "saves" / "run")}
    return {**args, "eval_dataset": evals} if evals else args


def leak_findings(args: dict) -> list:
    from qwen_factory_kit.recipe.check import Machine, check_recipe

    return [f for f in check_recipe(args, parse=False, types=False, stats=False, machine=Machine(cuda=False)) if f.id == "leak"]


def test_recipe_check_runs_the_leak_step_for_train_recipes_with_eval(data):
    planted_alpaca(data)
    register(data, "train_val", [qa(i) for i in range(300, 305)])
    found = leak_findings(recipe(data, "train", "exam"))
    assert [f.severity for f in found] == ["error"] and "2 of its 6 rows are in training dataset train" in found[0].message
    found = leak_findings(recipe(data, "train", "train"))
    assert [f.severity for f in found] == ["error"] and "30 of its 30 rows are training rows" in found[0].message
    fix = re.search(r"eval_dataset=(\S+)", found[0].fix)  # the fix's override passes when applied
    assert fix and fix[1] == "train_val"
    assert [f.severity for f in leak_findings(recipe(data, "train", fix[1]))] == ["ok"]
    assert leak_findings(recipe(data, "train", None)) == []
    assert leak_findings(recipe(data, "train", "nope")) == []  # the datasets step reports the unknown name


@pytest.mark.slow
def test_qfk_recipe_check_fails_on_a_leaking_recipe(data, tmp_path, qfk):
    register(data, "med", [qa(i) for i in range(8)])
    args = {**recipe(data, "med", "med"), "use_cpu": True, "bf16": False}
    (tmp_path / "r.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in args.items()))
    code, out, err = qfk("recipe", "check", str(tmp_path / "r.yaml"), "--no-stats", "--json")
    assert code == 1, err
    leaks = [f for f in json.loads(out)["findings"] if f["id"] == "leak"]
    assert len(leaks) == 1 and leaks[0]["severity"] == "error" and "8 of its 8 rows are training rows" in leaks[0]["message"]


def test_qfk_lint_against(data, qfk):
    planted_alpaca(data)
    register(data, "fresh", [qa(i) for i in range(500, 504)])
    code, out, err = qfk("lint", "train", "--against", "exam", "--data-dir", data)
    assert code == 1, err
    text = " ".join(out.split())
    assert "error overlap: exam: 3 of its 6 rows are in train: 2 share prompt and answer with train (rows 2, 4 here" in text
    assert "1 are near duplicates of rows of train" in text and "row 6 ~ row 12 (67%" in text
    assert "qfk datasets decontaminate train --against exam" in text
    code, out, err = qfk("lint", "train", "--against", "exam", "--against", "fresh", "--data-dir", data, "--json")
    assert code == 1, err
    res = json.loads(out)
    assert [(o["b"], o["count"], o["b_examples"], o["b_near"]) for o in res["overlaps"]] == [("exam", 3, [2, 4], 1),
                                                                                             ("fresh", 0, [], 0)]
    assert res["overlaps"][0]["examples"]["near"][0] == {"a_row": 12, "b_row": 6, "similarity": 0.667,
                                                         "span": "Question number 12: what is 12 + 12? It is"}
    assert [(f["id"], f["severity"], f["where"]) for f in res["findings"]] == [("overlap", "error", "exam"),
                                                                              ("overlap", "ok", "fresh")]
    code, out, err = qfk("lint", "train", "--against", "fresh", "--data-dir", data)
    assert code == 0 and "no row is in train, the same, near or reversed (4 rows compared with 30" in " ".join(out.split())
    assert qfk("lint", "train", "--against", "nope", "--data-dir", data)[0] == 2
    code, out, _ = qfk("lint", "--help")
    assert "--against" in out and "Exits 1 when any row is the same, near or reversed" in " ".join(out.split())
