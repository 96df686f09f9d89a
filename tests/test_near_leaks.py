"""Near-duplicate, reversed and source-side leaks (``qfk lint --against``, ``qfk recipe check``,
``qfk datasets decontaminate``): the issue's cases on the real rows of ``../shared/real-samples``
(skipped without it) and on rows made here, the false-alarm rate on same-domain rows that are not
copies, n-grams of unspaced scripts, and the derived ``NAME__clean`` entry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import read_jsonl, write_jsonl

from qwen_factory_kit.convert.moses import instruction
from qwen_factory_kit.leakindex import LeakIndex, common_limit
from qwen_factory_kit.leaks import check_leaks, overlap, row_text
from qwen_factory_kit.lint import layout_from
from qwen_factory_kit.ngrams import batch_grams, gram_hashes, units
from qwen_factory_kit.registry import Registry, base_name, build_entry, file_name_for
from qwen_factory_kit.think import format_response

ALPACA = layout_from({"formatting": "alpaca"}, None)


def register(data: Path, name: str, rows: list[dict]) -> Path:
    path = write_jsonl(data / f"{name}.jsonl", rows)
    Registry.at(data).add(name, build_entry(file_name_for(path, data), formatting="alpaca"))
    return path


def medical_rows(real: Path) -> list[dict]:
    med = [json.loads(line) for line in (real / "medical_r1" / "val_sample.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{"instruction": r["question"], "input": "", "output": format_response(r["answer"], r["think"])} for r in med]


def near_copy(row: dict) -> dict:
    """The issue's eval row: the question's final punctuation changed, the answer's last sentence cut."""
    q = row["instruction"]
    q = q[:-1] + ("。" if q[-1] != "。" else "？")
    reasoning, answer = row["output"].split("</think>\n\n", 1)
    sentences = [s for s in re.split(r"(?<=[。！？.!?])", answer) if s]
    answer = "".join(sentences[:-1]) if len(sentences) > 1 else answer[: len(answer) * 3 // 4]
    return {"instruction": q, "input": "", "output": f"{reasoning}</think>\n\n{answer}"}


def kftt(real: Path) -> list[tuple[str, str]]:
    folder = real / "moses" / "kftt"
    en = (folder / "kyoto-test.en").read_text(encoding="utf-8").splitlines()
    ja = (folder / "kyoto-test.ja").read_text(encoding="utf-8").splitlines()
    return list(zip(en, ja))


def translation(src: str, tgt: str, text: str, answer: str) -> dict:
    return {"instruction": instruction(src, tgt), "input": text, "output": answer}


def texts(rows: list[dict], first: int = 1):
    return [t for t in (row_text(first + i, r, ALPACA) for i, r in enumerate(rows)) if t is not None]


# --------------------------------------------------------------------------------------------
# the cases, on real rows
# --------------------------------------------------------------------------------------------
def test_near_copies_of_real_medical_rows_are_found_checked_and_removed(real_samples, tmp_path, qfk):
    data = tmp_path / "data"
    rows = medical_rows(real_samples)
    register(data, "med", rows[:100])
    register(data, "exam", [near_copy(r) for r in rows[:20]])
    code, out, err = qfk("lint", "med", "--against", "exam", "--data-dir", data, "--json")
    assert code == 1, err
    ov = json.loads(out)["overlaps"][0]
    assert (ov["b_near"], ov["b_shared"], ov["count"], ov["a_near"]) == (20, 0, 20, 20)
    assert ov["examples"]["near"][0]["a_row"] == 1 and ov["examples"]["near"][0]["similarity"] >= 0.9
    assert "1895年德国物理学教授伦琴" in ov["examples"]["near"][0]["span"]

    recipe = tmp_path / "sft.yaml"
    recipe.write_text(f"model_name_or_path: Qwen/Qwen3-0.6B\nstage: sft\ndo_train: true\nfinetuning_type: lora\n"
                      f"dataset: med\neval_dataset: exam\ndataset_dir: {data}\ntemplate: qwen3\noutput_dir: out\n")
    leaks = [f for f in check_leaks(["med"], ["exam"], data) if f.severity == "error"]
    assert len(leaks) == 1 and "20 of its 20 rows are in training dataset med: 20 are near duplicates" in leaks[0].message
    assert "qfk datasets decontaminate med --against exam" in leaks[0].fix

    code, out, err = qfk("datasets", "decontaminate", "med", "--against", "exam", "--data-dir", data, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert (s["read"], s["written"], s["rejected_by_reason"]) == (100, 80, {"near_leak": 20})
    rejects = read_jsonl(data / "med__clean.rejects.jsonl")
    assert [r["line"] for r in rejects] == list(range(1, 21))
    assert all(re.match(r"a near duplicate of row \d+ of exam \(similarity", r["detail"]) for r in rejects)
    assert qfk("lint", "med__clean", "--against", "exam", "--data-dir", data)[0] == 0
    assert check_leaks(["med__clean"], ["exam"], data)[-1].severity == "ok"


def test_kftt_pairs_trained_one_way_and_evaluated_the_other_are_reversed_leaks(real_samples, tmp_path, qfk):
    data = tmp_path / "data"
    pairs = kftt(real_samples)
    register(data, "en_ja", [translation("en", "ja", en, ja) for en, ja in pairs[:100]])
    register(data, "ja_en", [translation("ja", "en", ja, en) for en, ja in pairs[:10]])
    ov = overlap("en_ja", "ja_en", data)
    assert (ov.b_reversed, ov.b_shared, ov.b_near, ov.count) == (10, 0, 0, 10)
    assert [e["b_row"] for e in ov.examples["reversed"]] == [1, 2, 3, 4, 5]
    code, out, err = qfk("datasets", "decontaminate", "en_ja", "--against", "ja_en", "--data-dir", data, "--json")
    assert code == 0, err
    s = json.loads(out)
    # KFTT repeats some lines: every training row holding an eval pair goes
    assert s["rejected_by_reason"]["reversed_leak"] >= 10 and set(s["rejected_by_reason"]) == {"reversed_leak"}
    assert overlap("en_ja__clean", "ja_en", data).count == 0


def test_an_eval_source_sentence_seen_in_training_is_reported(real_samples, tmp_path):
    data = tmp_path / "data"
    pairs = kftt(real_samples)[200:260]
    # trained as targets of other sources: the eval inputs were seen, their references were not
    register(data, "train", [translation("en", "ja", f"Line {i} of something else entirely.", ja) for i, (_, ja) in enumerate(pairs)])
    register(data, "exam", [translation("ja", "en", ja, en) for en, ja in pairs[:8]])
    ov = overlap("train", "exam", data)
    assert (ov.count, ov.b_source) == (0, 8)
    found = check_leaks(["train"], ["exam"], data)
    assert [(f.severity, f.where) for f in found] == [("warn", "exam")]
    assert "8 translation rows have a source sentence that train holds" in found[0].message


def test_false_alarms_on_same_domain_rows_that_are_not_copies(real_samples, capsys):
    """Medical rows against each other, KFTT lines against each other: what is flagged is a copy."""
    rows = medical_rows(real_samples)
    flagged = LeakIndex.build(texts(rows[:100])).lookup(texts(rows[100:], 101))
    hits = [(i + 101, v.docs, round(v.similarity, 2)) for i, v in enumerate(flagged) if v is not None]
    # one pair: rows 53 and 183 ask the same question (183's is 53's first sentence) with a reworded answer
    assert [(n, s >= 0.5) for n, _, s in hits] == [(183, True)]
    pairs = kftt(real_samples)
    lines = [translation("en", "ja", en, ja) for en, ja in pairs]
    found = LeakIndex.build(texts(lines[:150])).lookup(texts(lines[150:], 151))
    kinds = [v.kind for v in found if v is not None]
    assert "near" not in kinds and "reversed" not in kinds  # the only ones are lines KFTT itself repeats
    with capsys.disabled():
        print(f"\nnear-leak false alarms: medical {len(hits) - 1}/100 rows (1 true near copy), "
              f"KFTT {kinds.count('near')}/150 lines ({kinds.count('leak')} exact repeats of the corpus)")


# --------------------------------------------------------------------------------------------
# rows made here (no ../shared needed)
# --------------------------------------------------------------------------------------------
QUESTIONS = ["Why does the moon show phases when it orbits around the earth every month",
             "How do vaccines train the immune system to recognise a virus it never met before",
             "What makes a bridge made of steel expand in summer and shrink again in winter",
             "Which foods give the body iron and how much of it does an adult need each day"]


def english(i: int) -> dict:
    q = QUESTIONS[i % len(QUESTIONS)] + f" (case {i} of the set)?"
    return {"instruction": q, "input": "", "output": f"Answer {i}: " + " ".join(f"word{i}x{k}" for k in range(30)) + "."}


def test_a_word_added_and_punctuation_changed_is_a_near_duplicate(tmp_path):
    data = tmp_path / "data"
    base = [english(i) for i in range(40)]
    register(data, "train", base)
    copies = [{**base[4], "instruction": base[4]["instruction"].replace("Why", "Why exactly")},
              {**base[7], "output": base[7]["output"].replace(":", ";").replace(".", "!")},
              english(500)]
    register(data, "exam", copies)
    ov = overlap("train", "exam", data)
    assert (ov.b_near, ov.b_shared, ov.count) == (2, 0, 2)
    assert [(e["a_row"], e["b_row"]) for e in ov.examples["near"]] == [(5, 1), (8, 2)]
    assert ov.examples["near"][1]["similarity"] == 1.0  # punctuation moves no unit
    strict = overlap("train", "exam", data, ngram=8, threshold=1.0)
    assert strict.b_near == 1


def test_chinese_and_japanese_are_compared_by_characters():
    assert [units("鎌倉時代の禅僧").text[s:e] for s, e in zip(*units("鎌倉時代の禅僧")[2:])] == list("鎌倉時代の禅僧")
    assert len(units("the quick brown fox").hashes) == 4
    a = gram_hashes("患者出现发热、咳嗽、胸痛等症状，建议尽快就医并进行胸部影像学检查。")
    b = gram_hashes("患者出现发热，咳嗽，胸痛等症状；建议尽快就医，并进行胸部影像学检查！")
    assert len(a) > 10 and np.array_equal(a, b)
    g, o = batch_grams(["one two three", "", "鎌倉", "a b c d e f g h i j"])
    assert [int((o == k).sum()) for k in range(4)] == [1, 0, 1, 3]


def test_boilerplate_shared_by_every_row_is_not_evidence():
    prefix = "Please answer the following question as a careful expert would. "
    rows = [{"instruction": prefix + f"Item {i}: name thing {i}.", "input": "", "output": f"Thing {i} is real."} for i in range(60)]
    index = LeakIndex.build(texts(rows))
    assert len(index.common) > 0 and common_limit(60) == 10
    other = [{"instruction": prefix + "Item 900: name thing 900.", "input": "", "output": "Thing 900 is real."}]
    assert index.lookup(texts(other)) == [None]


def test_reversed_pairs_need_both_sentences(tmp_path):
    data = tmp_path / "data"
    register(data, "train", [translation("en", "ja", f"Sentence number {i} here.", f"文{i}です。") for i in range(10)])
    register(data, "exam", [translation("ja", "en", "文3です。", "Sentence number 3 here."),
                            translation("ja", "en", "文4です。", "Something else."),
                            translation("ja", "en", "新しい文です。", "A new sentence.")])
    ov = overlap("train", "exam", data)
    assert (ov.b_reversed, ov.b_source, ov.count) == (1, 1, 1)
    assert (ov.a_reversed, ov.a_source) == (1, 1)


def test_decontaminate_refuses_what_cannot_work(tmp_path, qfk):
    data = tmp_path / "data"
    register(data, "train", [english(i) for i in range(5)])
    code, _, err = qfk("datasets", "decontaminate", "train", "--against", "train", "--data-dir", data)
    assert code == 2 and "every row would be removed" in err and "Traceback" not in err
    code, _, err = qfk("datasets", "decontaminate", "train", "--against", "nope", "--data-dir", data)
    assert code == 2 and "'nope' is not registered" in err
    code, _, err = qfk("datasets", "decontaminate", "train", "--data-dir", data)
    assert code == 2 and "--against" in err
    code, _, err = qfk("datasets", "decontaminate", "train", "--against", "x", "--threshold", "1.5", "--data-dir", data)
    assert code == 2 and "--threshold" in err
    code, _, err = qfk("lint", "train", "--ngram", "13", "--data-dir", data)
    assert code == 2 and "--against" in err
    register(data, "exam", [english(2)])
    Registry.at(data).add("train__n3", {**Registry.at(data).get("train"), "num_samples": 3})
    code, _, err = qfk("datasets", "decontaminate", "train__n3", "--against", "exam", "--data-dir", data)
    assert code == 2 and "mix entry" in err and "qfk datasets decontaminate train --against exam" in err
    write_jsonl(data / "pairs.jsonl", [{"instruction": "q", "chosen": "a", "rejected": "b"}])
    Registry.at(data).add("pairs", {"file_name": "pairs.jsonl", "ranking": True,
                                    "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}})
    code, _, err = qfk("datasets", "decontaminate", "pairs", "--against", "exam", "--data-dir", data)
    assert code == 2 and "ranking (preference) data: qfk datasets decontaminate reads SFT rows" in err
    assert not list(data.glob("*__clean*")) and not [n for n in Registry.at(data).read() if n.endswith("__clean")]


def test_the_clean_entry_is_derived_from_its_dataset(tmp_path, qfk):
    data = tmp_path / "data"
    register(data, "train", [english(i) for i in range(10)])
    register(data, "exam", [english(2), english(77)])
    code, out, err = qfk("datasets", "decontaminate", "train", "--against", "exam,exam", "--data-dir", data, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert (s["written"], s["rejected_by_reason"], s["registered"]) == (9, {"leak": 1}, ["train__clean"])
    manifest = json.loads((data / "train__clean.manifest.json").read_text())
    import hashlib

    assert manifest["options"]["decontaminated_against"] == [
        {"name": "exam", "file": str(data / "exam.jsonl"), "rows": 2,
         "sha256": hashlib.sha256((data / "exam.jsonl").read_bytes()).hexdigest()}]
    assert (manifest["options"]["ngram"], manifest["options"]["threshold"]) == (8, 0.5)
    assert base_name("train__clean") == "train" and base_name("train__clean__max512__n4") == "train"
    code, out, err = qfk("datasets", "remove", "train", "--data-dir", data, "--json")
    assert code == 0, err
    assert set(json.loads(out)["removed"]) == {"train", "train__clean"}


def test_a_bundle_carries_the_clean_entry_as_data(tmp_path, qfk, monkeypatch):
    from qwen_factory_kit.recipe.bundle import pack, unpack
    from qwen_factory_kit.errors import QfkError

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    register(data, "train", [english(i) for i in range(10)])
    register(data, "exam", [english(2), english(77)])
    assert qfk("datasets", "decontaminate", "train", "--against", "exam", "--data-dir", data)[0] == 0
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("model_name_or_path: Qwen/Qwen3-0.6B\nstage: sft\ndo_train: true\nfinetuning_type: lora\n"
                      "dataset: train__clean\neval_dataset: exam\ndataset_dir: data\ntemplate: qwen3\noutput_dir: out\n")
    with pytest.raises(QfkError, match="decontaminated against exam .*only its rows re-make it"):
        pack(recipe, tmp_path / "b.zip")
    summary = pack(recipe, tmp_path / "b.zip", with_data=True)
    assert any("train__clean was decontaminated against exam" in w for w in summary["warnings"])
    bundle = json.loads(__import__("zipfile").ZipFile(tmp_path / "b.zip").read("bundle.json"))
    assert bundle["datasets"]["train__clean"]["decontaminated_against"][0]["name"] == "exam"
    dest = tmp_path / "elsewhere"
    unpack(tmp_path / "b.zip", dest)
    assert read_jsonl(dest / "data" / "train__clean.jsonl") == read_jsonl(data / "train__clean.jsonl")
