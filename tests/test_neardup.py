"""``qfk convert --near-dedup`` and lint's near duplicates (:mod:`qwen_factory_kit.minhash`,
:mod:`qwen_factory_kit.convert.neardup`, :mod:`qwen_factory_kit.neardup`).

* 100 rows plus 10 near copies (a word added to the question, one punctuation mark changed in the
  answer): exactly the 10 copies are rejected as ``near_duplicate``, each naming its original's
  line; made-up rows (always) and real medical rows (when ../shared is there).
* False alarms: the 200 real medical rows of ../shared against each other at 0.8: 0 of 200
  (the most similar pair estimates 0.65).
* The output is byte-identical with --workers 1 and 2, and from run to run; the signatures are
  the same in another process.
* Interplay: --dedup first (an exact copy is ``duplicate``), rows rejected for another reason
  (--max-tokens) never enter the index, splits, the manifest; --shard is refused.
* The CLI's optional value; lint's info finding; the index's memory per row.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_jsonl, write_jsonl

from qwen_factory_kit import minhash
from qwen_factory_kit.convert import convert
from qwen_factory_kit.errors import QfkError

SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "ga", "vu", "zi", "ba", "che", "fo", "hu", "ju", "ly"]


def made_up_rows(n: int = 100, seed: int = 7) -> list[dict]:
    """Medical-shaped rows of made-up words: no two are alike."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join("".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))) for _ in range(k))

    rows = []
    for _ in range(n):
        answer = ". ".join(words(rng.randint(8, 14)).capitalize() for _ in range(4)) + "."
        rows.append({"instruction": "", "question": words(rng.randint(10, 18)) + "?", "think": words(30), "answer": answer,
                     "metrics": {"quality_f1": 1.0}})
    return rows


def near_copy(row: dict, word: str, marks: tuple[str, str]) -> dict:
    """The row with ``word`` added to its question and one punctuation mark of its answer changed."""
    out = copy.deepcopy(row)
    out["question"] = f"{word} {out['question']}" if word.isascii() else word + out["question"]
    out["answer"] = out["answer"].replace(marks[0], marks[1], 1)
    assert out["answer"] != row["answer"]
    return out


def with_copies(rows: list[dict], every: int, word: str, marks: tuple[str, str]) -> tuple[list[dict], dict[int, int]]:
    """``rows`` with a near copy of rows 0, every, 2*every ... right after each (10 of them);
    {line of the copy: line of its original} (lines from 1)."""
    out, originals = [], {}
    for i, row in enumerate(rows):
        out.append(row)
        if i % every == 0 and len(originals) < 10:
            out.append(near_copy(row, word, marks))
            originals[len(out)] = len(out) - 1
    assert len(originals) == 10
    return out, originals


def run(src: Path, out: Path, **kw):
    return convert("medical-r1", str(src), output=str(out), **kw)


def near_rejects(res) -> dict[int, str]:
    return {r["line"]: r["detail"] for r in read_jsonl(res.rejects) if r["reason"] == "near_duplicate"}


def kept_line(detail: str) -> int:
    return int(detail.split("nearly the same as line ")[1].split(",")[0])


# --------------------------------------------------------------------------------------------
# the ten near copies
# --------------------------------------------------------------------------------------------
def test_ten_near_copies_of_made_up_rows_are_rejected_naming_their_originals(tmp_path):
    rows, originals = with_copies(made_up_rows(), 9, "please", (".", "!"))
    res = run(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", near_dedup=0.8)
    found = near_rejects(res)
    assert res.written == 100 and res.rejected == 10 and set(found) == set(originals)
    assert {line: kept_line(d) for line, d in found.items()} == originals
    assert all("estimated Jaccard similarity 0.9" in d or "similarity 1.00" in d for d in found.values())
    assert res.summary()["rejected_by_reason"] == {"near_duplicate": 10}


def test_ten_near_copies_of_real_medical_rows(tmp_path, real_samples):
    real = read_jsonl(real_samples / "medical_r1" / "val_sample.jsonl")[:100]
    rows, originals = with_copies(real, 9, "请问", ("。", "！"))
    res = run(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", near_dedup=0.8)
    found = near_rejects(res)
    assert {line: kept_line(d) for line, d in found.items()} == originals
    assert res.written == 100 and res.rejected == 10


def test_no_false_alarm_among_200_real_medical_rows(tmp_path, real_samples):
    """0 of the 200 real rows is a near duplicate of another at 0.8; the most similar pair is far below."""
    src = real_samples / "medical_r1" / "val_sample.jsonl"
    res = run(src, tmp_path / "out.jsonl", near_dedup=0.8)
    assert res.read == 200 and not near_rejects(res)
    rows = read_jsonl(src)
    sig = minhash.sign([f"{r['question']}\n{r['answer']}" for r in rows]).sig
    most = max(float((sig[i + 1:] == sig[i]).mean(axis=1).max()) for i in range(len(sig) - 1))
    assert most < 0.7


# --------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------
def test_output_is_byte_identical_with_one_and_two_workers_and_from_run_to_run(tmp_path):
    rows, _ = with_copies(made_up_rows(300, seed=3), 29, "kindly", (".", ";"))
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    outs = []
    for name, workers in (("a", 1), ("b", 2), ("c", 1)):
        res = run(src, tmp_path / f"{name}.jsonl", near_dedup=0.85, workers=workers)
        assert res.rejected == 10
        outs.append((res.output.read_bytes(), res.rejects.read_bytes().replace(b"/c.jsonl", b"/a.jsonl")))
    assert outs[0] == outs[1] == outs[2]


def test_signatures_are_the_same_in_another_process():
    texts = ["What is the dose of aspirin for a child?", "糖尿病患者应该如何控制饮食？", "短い", ""]
    here = minhash.sign(texts)
    code = ("import json, sys; from qwen_factory_kit import minhash; "
            "s = minhash.sign(json.loads(sys.argv[1])); print(s.sig.tobytes().hex())")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(texts)], capture_output=True, text=True, check=True,
                          env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"}, cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.strip() == here.sig.tobytes().hex()
    assert here.empty.tolist() == [False, False, False, True]


def test_signatures_match_the_definition_and_do_not_depend_on_chunks(monkeypatch):
    """A row's signature is min over its shingles of (a*mix(x) + b) mod 2**32, whatever the chunking."""
    from qwen_factory_kit.ngrams import batch_grams

    texts = ["alpha beta gamma delta epsilon zeta eta theta iota kappa " * 3, "一二三四五六七八九十", "x"]
    g, o = batch_grams(texts, minhash.SHINGLE)
    x = minhash._mix(g).astype(np.uint64)
    want = np.array([[int(((int(a) * x[o == r] + int(b)) % (1 << 32)).min()) for a, b in zip(minhash._MUL[:, 0], minhash._ADD[:, 0])]
                     for r in range(3)], dtype=np.uint32)
    assert (minhash.sign(texts).sig == want).all()
    monkeypatch.setattr(minhash, "CHUNK", 3)  # rows spanning chunks
    assert (minhash.sign(texts).sig == want).all()


# --------------------------------------------------------------------------------------------
# interplay with the other checks, splits and the manifest
# --------------------------------------------------------------------------------------------
def test_exact_duplicates_go_to_dedup_first_and_are_near_duplicates_without_it(tmp_path):
    rows = made_up_rows(20)
    rows.insert(5, dict(rows[2]))  # line 6 repeats line 3
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    both = run(src, tmp_path / "a.jsonl", near_dedup=0.8, dedup=True)
    assert both.summary()["rejected_by_reason"] == {"duplicate": 1}
    near = run(src, tmp_path / "b.jsonl", near_dedup=0.8)
    assert near_rejects(near) == {6: "nearly the same as line 3, kept (estimated Jaccard similarity 1.00 >= --near-dedup 0.8)"}


def test_reasoning_is_not_compared_and_rejected_rows_never_enter_the_index(tmp_path):
    """The same question and answer with other reasoning is a near duplicate (think blocks aside);
    a row rejected for being too long is not kept, so its copy that fits is kept."""
    rows = made_up_rows(6)
    long_one = {**rows[1], "think": "ka " * 3000}
    other_think = {**rows[3], "think": "lo mi ne su " * 10}
    src = write_jsonl(tmp_path / "in.jsonl", [*rows, long_one, other_think])
    res = run(src, tmp_path / "out.jsonl", near_dedup=0.8, max_tokens=2000)
    assert res.summary()["rejected_by_reason"] == {"near_duplicate": 2}  # lines 7 and 8: rows 2 and 4 again
    assert {line: kept_line(d) for line, d in near_rejects(res).items()} == {7: 2, 8: 4}
    first_long = write_jsonl(tmp_path / "in2.jsonl", [long_one, *rows])  # the long row first: too long, not kept
    res = run(first_long, tmp_path / "out2.jsonl", near_dedup=0.8, max_tokens=2000)
    assert res.summary()["rejected_by_reason"] == {"too_long": 1} and res.written == 6


def test_splits_and_manifest(tmp_path):
    rows, originals = with_copies(made_up_rows(100), 9, "please", (".", "!"))
    res = run(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", near_dedup=0.8, val_size=10, test_size=5)
    s = res.summary()
    assert s["rejected_by_reason"] == {"near_duplicate": 10} and s["read"] == s["written"] + s["rejected"] == 110
    assert {k: v["source_rows"] for k, v in s["splits"].items()} == {"train": 85, "val": 10, "test": 5}
    written = [r["instruction"] for split in s["splits"].values() for r in read_jsonl(split["path"])]
    assert len(written) == len(set(written)) == 100
    manifest = json.loads(res.manifest.read_text())
    assert manifest["options"]["near_dedup"] == 0.8
    assert manifest["counts"]["rejected_by_reason"] == {"near_duplicate": 10}
    plain = run(write_jsonl(tmp_path / "in2.jsonl", rows[:5]), tmp_path / "plain.jsonl")
    assert json.loads(plain.manifest.read_text())["options"]["near_dedup"] is None


def test_shard_is_refused(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", made_up_rows(4))
    with pytest.raises(QfkError) as err:
        run(src, tmp_path / "out.jsonl", near_dedup=0.8, shard="0/2")
    assert "--near-dedup cannot be used with --shard" in err.value.message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, "high", float("nan"), True])
def test_bad_thresholds_are_refused_by_the_library(bad):
    with pytest.raises(QfkError) as err:
        minhash.check_threshold(bad)
    assert "--near-dedup 0.9" in err.value.hint


# --------------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------------
def test_cli_value_is_optional(tmp_path, qfk_json):
    rows, _ = with_copies(made_up_rows(100), 9, "please", (".", "!"))
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    alone = qfk_json("convert", "medical-r1", src, "-o", tmp_path / "a.jsonl", "--no-register", "--near-dedup")
    given = qfk_json("convert", "medical-r1", src, "-o", tmp_path / "b.jsonl", "--no-register", "--near-dedup", "0.99")
    before = qfk_json("convert", "medical-r1", "--near-dedup=0.8", src, "-o", tmp_path / "c.jsonl", "--no-register")
    assert alone["rejected_by_reason"] == before["rejected_by_reason"] == {"near_duplicate": 10}
    assert given["rejected"] < 10  # a one-word change in a short question falls under 0.99
    assert json.loads((tmp_path / "a.manifest.json").read_text())["options"]["near_dedup"] == minhash.DEFAULT_THRESHOLD


def test_cli_bad_value_says_what_to_type(tmp_path, qfk):
    src = write_jsonl(tmp_path / "in.jsonl", made_up_rows(3))
    code, _, err = qfk("convert", "medical-r1", "--near-dedup", src)  # the source taken as the value
    assert code == 2 and "not '" in err and "--near-dedup=0.8" in err and "Traceback" not in err
    code, _, err = qfk("convert", "medical-r1", src, "--near-dedup", "0")
    assert code == 2 and "above 0 and at most 1" in err


def test_help_has_a_copyable_example():
    from click.testing import CliRunner

    from qwen_factory_kit.cli.main import cli

    text = CliRunner().invoke(cli, ["convert", "--help"]).output
    assert "--near-dedup" in text and "qfk convert medical-r1 rows.jsonl --dedup --near-dedup" in text
    sub = " ".join(CliRunner().invoke(cli, ["convert", "medical-r1", "--help"], terminal_width=200).output.split())
    assert "--near-dedup [JACCARD]" in sub and "Not with --shard" in sub


# --------------------------------------------------------------------------------------------
# lint
# --------------------------------------------------------------------------------------------
def test_lint_reports_near_duplicates_as_info(tmp_path):
    from qwen_factory_kit.lint import lint

    rows, originals = with_copies(made_up_rows(100), 9, "please", (".", "!"))
    res = run(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "all.jsonl")  # converted with the copies
    rep = lint(str(res.output))
    found = [p for p in rep.problems if p.id == "near_duplicate"]
    assert len(found) == 1 and found[0].severity == "info" and rep.counts[("near_duplicate", "info")] == 10
    assert "10 rows nearly repeat an earlier row" in found[0].message
    assert all(f"row {a} ~ row {b} (0.9" in found[0].message for a, b in list(originals.items())[:5])
    assert rep.summary()["errors"] == 0 and "--near-dedup" in found[0].fix
    clean = run(write_jsonl(tmp_path / "in2.jsonl", rows), tmp_path / "clean.jsonl", near_dedup=0.8)
    assert not [p for p in lint(str(clean.output)).problems if p.id == "near_duplicate"]


def test_one_default_everywhere():
    import inspect

    from qwen_factory_kit.cli.convert import common_options
    from qwen_factory_kit.lint import lint

    assert inspect.signature(lint).parameters["near_dedup"].default == minhash.DEFAULT_THRESHOLD
    opts = {p.name: p for p in common_options(lambda **kw: None).__click_params__}
    assert float(opts["near_dedup"].flag_value) == minhash.DEFAULT_THRESHOLD


def test_lint_leaves_exact_duplicates_to_their_rule(tmp_path):
    from qwen_factory_kit.lint import lint

    rows = [{"instruction": f"question number {w} about the heart and the lungs", "input": "", "output": "an answer"}
            for w in ("one", "two", "three")]
    path = write_jsonl(tmp_path / "rows.jsonl", [*rows, rows[0]])
    rep = lint(str(path))
    assert rep.counts[("duplicate_row", "warn")] == 1 and ("near_duplicate", "info") not in rep.counts


# --------------------------------------------------------------------------------------------
# the index
# --------------------------------------------------------------------------------------------
def test_bands_and_memory_per_kept_row():
    assert minhash.bands(0.8) == (18, 7) and minhash.bands(1.0) == (1, 128)
    idx = minhash.Index(0.8)
    rng = np.random.default_rng(0)
    for start in range(0, 5000, 1000):
        sig = rng.integers(0, 1 << 32, size=(1000, minhash.PERMS), dtype=np.uint64).astype(np.uint32)
        idx.begin(minhash.Signed(sig, np.zeros(1000, dtype=bool)))
        for j in range(1000):
            assert idx.match(j) is None
            idx.keep(j, (0, start + j))
        idx.end()
    assert idx.kept == 5000 and idx.nbytes() == 5000 * 18 * 8  # 144 bytes a kept row
    assert len(idx.runs) <= 3
    idx.close()


def test_a_near_duplicate_of_a_row_of_the_same_batch_and_of_an_earlier_one():
    base = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat by the door"
    texts = [base, "completely different words here about rivers and mountains and seas", base + " today"]
    idx = minhash.Index(0.8)
    idx.begin(minhash.sign(texts))
    assert idx.match(0) is None
    idx.keep(0, (0, 1))
    assert idx.match(1) is None
    idx.keep(1, (0, 2))
    found = idx.match(2)
    assert found is not None and found.place == (0, 1) and found.similarity >= 0.8
    idx.end()
    idx.begin(minhash.sign([base + " now"]))
    assert idx.match(0).place == (0, 1)
    idx.end()
    idx.close()
