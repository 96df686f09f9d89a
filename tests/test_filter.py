"""Over-long rows removed explicitly, never cut: ``qfk convert ... --max-tokens N`` and
``qfk datasets filter NAME --max-tokens N``.

The fast tests replace LLaMA-Factory's encoding (:class:`qwen_factory_kit.tokens.Encoder`) by a
stand-in whose length of a row is the characters of its texts, so that the plumbing (counts,
rejects, manifest, registration, defaults) runs without loading torch; the slow tests use the
real encoding and apply ``qfk recipe check``'s cutoff fix.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest
from conftest import EXAMPLES, ROOT, read_jsonl, write_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.convert.filter import filter_dataset
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.registry import Registry, build_entry


class FakeEncoder:
    """Length of a row: the characters of its string values (messages included); a row holding
    "DROP" is one LLaMA-Factory drops. Records every construction and measured row."""

    made: list[dict] = []
    measured: list[dict] = []

    def __init__(self, entry, *, tokenizer=None, template="qwen3", enable_thinking=True, cutoff_len=2048):
        FakeEncoder.made.append({"entry": entry, "template": template, "enable_thinking": enable_thinking,
                                 "cutoff_len": cutoff_len})

    def encode(self, row, *, limit=True):
        FakeEncoder.measured.append(row)
        text = json.dumps(row, ensure_ascii=False)
        if "DROP" in text:
            return None
        n = sum(len(v) for v in _strings(row))
        return list(range(n)), [0] * n


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.fixture
def fake_encoder(monkeypatch):
    from qwen_factory_kit import tokens

    FakeEncoder.made, FakeEncoder.measured = [], []
    monkeypatch.setattr(tokens, "Encoder", FakeEncoder)
    return FakeEncoder


def qa(prompt: str, answer: str) -> dict:
    return {"prompt": prompt, "answer": answer}


def cols(src, tmp_path, name="qa", **kw):
    return convert("columns", str(src), data_dir=str(tmp_path / "data"), name=name, register=True, prompt="prompt",
                   response="answer", **kw)


# ---------------------------------------------------------------------------------------------
# qfk convert --max-tokens
# ---------------------------------------------------------------------------------------------
def test_convert_rejects_rows_longer_than_max_tokens(tmp_path, fake_encoder):
    # the canonical empty block '<think>\n\n</think>\n\n' is 19 characters: q + a + 19
    src = write_jsonl(tmp_path / "in.jsonl", [qa("q", "a"), qa("q" * 30, "a" * 30), qa("qq", "aa"), qa("q", "a" * 60)])
    res = cols(src, tmp_path, max_tokens=40, template="qwen3", enable_thinking=False)
    assert (res.read, res.written, res.rejected) == (4, 2, 2) and res.read == res.written + res.rejected
    assert res.rejected_by_reason == {"too_long": 2}
    assert [r["instruction"] for r in read_jsonl(res.output)] == ["q", "qq"]
    rejects = read_jsonl(res.rejects)
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "too_long"), (4, "too_long")]
    assert rejects[0]["detail"].startswith("79 tokens > --max-tokens 40") and "enable_thinking false" in rejects[0]["detail"]
    assert rejects[0]["record"] == qa("q" * 30, "a" * 30)
    manifest = json.loads(res.manifest.read_text())
    assert manifest["options"] | {"max_tokens": 40, "template": "qwen3", "enable_thinking": False} == manifest["options"]
    assert manifest["counts"]["rejected_by_reason"] == {"too_long": 2}
    assert res.summary()["token_limit"] == {"max_tokens": 40, "template": "qwen3", "enable_thinking": False}
    # measured with the entry the output is registered with, once, with the settings asked for
    (made,) = fake_encoder.made
    registered = Registry.at(tmp_path / "data").get("qa")
    assert {k: v for k, v in made["entry"].items() if k != "file_name"} == {k: v for k, v in registered.items() if k != "file_name"}
    assert (made["template"], made["enable_thinking"], made["cutoff_len"]) == ("qwen3", False, 40)


def test_a_row_of_exactly_max_tokens_is_kept(tmp_path, fake_encoder):
    src = write_jsonl(tmp_path / "in.jsonl", [qa("q", "a" * 20), qa("q", "a" * 21)])  # 40 and 41
    res = cols(src, tmp_path, max_tokens=40)
    assert [len(r["output"]) for r in read_jsonl(res.output)] == [39] and res.rejected_by_reason == {"too_long": 1}


def test_without_max_tokens_nothing_is_measured(tmp_path, fake_encoder):
    src = write_jsonl(tmp_path / "in.jsonl", [qa("q", "a" * 500)])
    res = cols(src, tmp_path)
    assert res.written == 1 and fake_encoder.made == [] and res.token_limit == {}
    assert "max_tokens" not in json.loads(res.manifest.read_text())["options"]


def test_a_small_conversion_loads_no_torch_or_llamafactory(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [qa("q", "a")])
    code = ("import sys\nfrom qwen_factory_kit.cli.main import main\n"
            f"main(['convert', 'columns', {str(src)!r}, '--prompt', 'prompt', '--response', 'answer', '-o', "
            f"{str(tmp_path / 'o.jsonl')!r}, '--no-register', '--val-size', '0.5'])\n"
            "print('loaded:' + ','.join(m for m in ('torch', 'transformers', 'llamafactory') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "loaded:"


def test_moses_line_is_rejected_whole_when_one_direction_is_too_long(tmp_path, fake_encoder):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "c.en").write_text("a\nb\n" + "x" * 200 + "\nc\n")
    (folder / "c.ja").write_text("あ\nい\nう\nえ\n")
    res = convert("moses", str(folder), output=str(tmp_path / "o.jsonl"), system="", max_tokens=120, test_size=1)
    assert (res.read, res.written, res.rejected, res.rows_out) == (4, 3, 1, 6)
    assert read_jsonl(res.rejects)[0]["line"] == 3 and read_jsonl(res.rejects)[0]["reason"] == "too_long"
    assert res.splits["test"]["source_rows"] == 1 and res.splits["test"]["rows"] == 2


def test_duplicates_are_not_measured_and_long_rows_do_not_hide_their_copies(tmp_path, fake_encoder):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "c.en").write_text("a\na\n" + "x" * 200 + "\n" + "x" * 200 + "\n")
    (folder / "c.ja").write_text("あ\nあ\nう\nう\n")
    res = convert("moses", str(folder), output=str(tmp_path / "o.jsonl"), system="", max_tokens=120)
    assert [r["reason"] for r in read_jsonl(res.rejects)] == ["duplicate", "too_long", "too_long"]
    assert len(fake_encoder.measured) == 2 + 2 + 2  # line 1's two directions, then lines 3 and 4 (line 2 is a duplicate)


def test_rows_llamafactory_drops_are_rejected(tmp_path, fake_encoder):
    src = write_jsonl(tmp_path / "in.jsonl", [qa("q", "a"), qa("DROP", "a")])
    res = cols(src, tmp_path, max_tokens=100)
    assert res.rejected_by_reason == {"dropped_by_llamafactory": 1}


def test_every_row_too_long_says_to_raise_max_tokens(tmp_path, fake_encoder):
    src = write_jsonl(tmp_path / "in.jsonl", [qa("q" * 50, "a")])
    with pytest.raises(QfkError) as exc:
        cols(src, tmp_path, max_tokens=10)
    assert "every one of the 1 rows was rejected (too_long (1))" in exc.value.message
    assert "--max-tokens 10: raise it" in exc.value.hint
    assert not (tmp_path / "data" / "qa.jsonl").exists() and (tmp_path / "data" / "qa.rejects.jsonl").exists()


def test_max_tokens_refuses_preference_data(tmp_path, fake_encoder):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    with pytest.raises(QfkError, match="ranking"):
        convert("preference", str(src), output=str(tmp_path / "o.jsonl"), max_tokens=100)
    assert not (tmp_path / "o.jsonl").exists()


def test_convert_cli_options(tmp_path, fake_encoder, qfk):
    src = write_jsonl(tmp_path / "in.jsonl", [qa("q", "a"), qa("q", "a" * 80)])
    code, out, err = qfk("convert", "columns", src, "--prompt", "prompt", "--response", "answer", "-o", tmp_path / "o.jsonl",
                         "--max-tokens", "50", "--enable-thinking", "null", "--template", "qwen3_nothink", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["rejected_by_reason"] == {"too_long": 1}
    assert s["token_limit"] == {"max_tokens": 50, "template": "qwen3_nothink", "enable_thinking": None}
    code, out, _ = qfk("convert", "columns", "--help")
    assert "--max-tokens" in out and "never cut" in out
    code, _, err = qfk("convert", "columns", src, "--prompt", "prompt", "--response", "answer", "--max-tokens", "0")
    assert code == 2 and "0" in err


# ---------------------------------------------------------------------------------------------
# qfk datasets filter
# ---------------------------------------------------------------------------------------------
def medical(tmp_path, rows=None, name="med", **kw):
    rows = rows or [{"question": f"Q{i}?", "think": "t" * (10 * i), "answer": "A."} for i in range(1, 7)]
    src = write_jsonl(tmp_path / "raw.jsonl", rows)
    return convert("medical-r1", str(src), data_dir=str(tmp_path / "data"), name=name, register=True, **kw)


def test_filter_writes_registers_and_records_what_it_did(tmp_path, fake_encoder):
    med = medical(tmp_path)
    data = tmp_path / "data"
    res = filter_dataset("med", 50, data_dir=data)
    assert res.registered == ["med__max50"] and res.name == "med__max50"
    assert res.output == data / "med__max50.jsonl"
    assert (res.read, res.written, res.rejected) == (6, 2, 4)
    kept = read_jsonl(res.output)
    assert kept == read_jsonl(med.output)[:2]  # rows as they are, in order
    assert all(sum(len(v) for v in _strings(r)) <= 50 for r in kept)
    rejects = read_jsonl(data / "med__max50.rejects.jsonl")
    assert [(r["line"], r["reason"]) for r in rejects] == [(3, "too_long"), (4, "too_long"), (5, "too_long"), (6, "too_long")]
    assert re.match(r"\d+ tokens > --max-tokens 50 \(template qwen3, enable_thinking true\)", rejects[0]["detail"])
    manifest = json.loads((data / "med__max50.manifest.json").read_text())
    (source_file,) = manifest["source"]["files"]
    assert source_file["sha256"] == hashlib.sha256(med.output.read_bytes()).hexdigest()
    assert {k: manifest["options"][k] for k in ("dataset", "think_mode", "max_tokens", "template", "enable_thinking")} == {
        "dataset": "med", "think_mode": "reasoning", "max_tokens": 50, "template": "qwen3", "enable_thinking": True}
    assert manifest["counts"] | {"read": 6, "written": 2, "rejected": 4} == manifest["counts"]
    assert manifest["think"]["mode"] == "reasoning"
    info = json.loads((data / "dataset_info.json").read_text())
    assert info["med__max50"] == {**info["med"], "file_name": "med__max50.jsonl"}
    assert list(info) == ["med", "med__max50"]


def test_filter_keeps_the_entry_shape_of_a_hand_written_sharegpt_entry(tmp_path, fake_encoder):
    data = tmp_path / "data"
    rows = [{"chat": [{"who": "human", "text": "hi"}, {"who": "bot", "text": "<think>\n\n</think>\n\nhello"}]},
            {"chat": [{"who": "human", "text": "hi"}, {"who": "bot", "text": "x" * 300}]}]
    write_jsonl(data / "sub" / "chats.jsonl", rows)
    entry = {"file_name": "sub/chats.jsonl", "formatting": "sharegpt", "columns": {"messages": "chat"},
             "tags": {"role_tag": "who", "content_tag": "text", "user_tag": "human", "assistant_tag": "bot"}, "file_sha1": "abc"}
    Registry.at(data).add("chats", entry)
    res = filter_dataset("chats", 100, data_dir=data, new_name="chats_short")
    assert res.output == data / "sub" / "chats_short.jsonl" and res.written == 1
    got = Registry.at(data).get("chats_short")
    assert got == {"file_name": "sub/chats_short.jsonl", "formatting": "sharegpt", "columns": {"messages": "chat"},
                   "tags": entry["tags"]}
    assert fake_encoder.made[0]["entry"]["tags"] == entry["tags"]
    # no manifest: the think mode is counted over the rows (the bot's empty blocks and plain answers: direct)
    assert json.loads((data / "sub" / "chats_short.manifest.json").read_text())["options"]["think_mode"] == "direct"
    assert fake_encoder.made[0]["enable_thinking"] is False


@pytest.mark.parametrize("rows,mode,template,enable", [
    ([{"question": "Q?", "think": "t", "answer": "A."}], "reasoning", "qwen3", True),
    ([{"question": "Q?", "think": "", "answer": "A."}], "direct", "qwen3", False),
    ([{"question": "Q?", "think": "", "answer": "A."}, {"question": "R?", "think": "t", "answer": "B."}], "mixed", "qwen3", None),
])
def test_filter_defaults_follow_the_think_mode_like_the_recipe_builder(tmp_path, fake_encoder, rows, mode, template, enable):
    from qwen_factory_kit.think import training_settings

    medical(tmp_path, rows, allow_missing_think=True)
    res = filter_dataset("med", 1000, data_dir=tmp_path / "data")
    assert training_settings(mode) == (template, enable)
    assert res.token_limit == {"max_tokens": 1000, "template": template, "enable_thinking": enable}
    explicit = filter_dataset("med", 1000, data_dir=tmp_path / "data", template="qwen3_nothink", enable_thinking=None,
                              new_name="med_b")
    assert explicit.token_limit == {"max_tokens": 1000, "template": "qwen3_nothink", "enable_thinking": None}


def test_filter_again_replaces_its_own_output(tmp_path, fake_encoder):
    medical(tmp_path)
    first = filter_dataset("med", 50, data_dir=tmp_path / "data")
    again = filter_dataset("med", 50, data_dir=tmp_path / "data")
    assert again.output == first.output and again.written == first.written
    assert list(Registry.at(tmp_path / "data").read()) == ["med", "med__max50"]


def test_filter_refuses_a_name_taken_by_another_file_before_writing(tmp_path, fake_encoder, qfk):
    medical(tmp_path)
    data = tmp_path / "data"
    Registry.at(data).add("med__max50", build_entry("elsewhere.jsonl"))
    before = (data / "dataset_info.json").read_text()
    code, _, err = qfk("datasets", "filter", "med", "--max-tokens", "50", "--data-dir", data)
    assert code == 2 and "'med__max50' is already registered for elsewhere.jsonl" in err and "--force" in err
    assert not list(data.glob("med__max50*")) and (data / "dataset_info.json").read_text() == before
    assert fake_encoder.measured == []
    code, _, err = qfk("datasets", "filter", "med", "--max-tokens", "50", "--data-dir", data, "--force", "--json")
    assert code == 0, err
    assert Registry.at(data).get("med__max50")["file_name"] == "med__max50.jsonl"


@pytest.mark.parametrize("entry,words", [
    ({"hf_hub_url": "someone/data"}, "not a local file"),
    ({"file_name": "gone.jsonl"}, "not found"),
    ({"file_name": "raw.jsonl", "formatting": "qfk_medical_r1", "ranking": False}, "qfk convert medical-r1"),
    ({"file_name": "pairs.jsonl", "ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
     "ranking"),
])
def test_filter_refuses_what_it_cannot_measure(tmp_path, fake_encoder, entry, words):
    data = tmp_path / "data"
    write_jsonl(data / "raw.jsonl", [{"question": "q", "think": "t", "answer": "a"}])
    write_jsonl(data / "pairs.jsonl", [{"instruction": "q", "chosen": "a", "rejected": "b"}])
    (data / "dataset_info.json").write_text(json.dumps({"x": entry}))
    with pytest.raises(QfkError) as exc:
        filter_dataset("x", 100, data_dir=data)
    assert words in exc.value.message + (exc.value.hint or "")
    assert fake_encoder.made == []


def test_filter_names(tmp_path, fake_encoder, qfk):
    medical(tmp_path)
    data = tmp_path / "data"
    with pytest.raises(QfkError, match="comma-separated"):
        filter_dataset("med", 50, data_dir=data, new_name="a,b")
    with pytest.raises(QfkError, match="overwrite"):
        filter_dataset("med", 50, data_dir=data, new_name="med")
    # a mix entry stands for N rows drawn at training time: filtering its file would keep every row
    entry = Registry.at(data).get("med")
    Registry.at(data).add("med__n2", {**entry, "num_samples": 2})
    with pytest.raises(QfkError, match="mix entry") as exc:
        filter_dataset("med__n2", 50, data_dir=data)
    assert "qfk datasets filter med --max-tokens 50" in exc.value.hint and not (data / "med__n2__max50.jsonl").exists()
    code, _, err = qfk("datasets", "filter", "nosuch", "--max-tokens", "50", "--data-dir", data)
    assert code == 2 and "Undefined dataset 'nosuch'" in err
    code, out, err = qfk("datasets", "filter", "med", "--max-tokens", "50", "--data-dir", data)
    assert code == 0, err
    out = " ".join(out.split())
    assert "filtered med ->" in out and "2 of 6 rows fit 50 tokens" in out and "as: med__max50" in out


# ---------------------------------------------------------------------------------------------
# the real encoding, and recipe check's cutoff fix applied
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kept_rows_fit_llamafactorys_own_preprocessing(tmp_path):
    from qwen_factory_kit import lfbridge

    data = tmp_path / "data"
    convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), data_dir=str(data), register=True, name="med")
    full = lfbridge.preprocess(data, "med", cutoff_len=100000)
    lengths = [len(ex["input_ids"]) for ex in full]
    limit = sorted(lengths)[len(lengths) // 2]
    res = filter_dataset("med", limit, data_dir=data)
    assert res.written == sum(n <= limit for n in lengths) and res.rejected_by_reason == {"too_long": sum(n > limit for n in lengths)}
    details = [r["detail"] for r in read_jsonl(res.rejects)]
    assert sorted(int(d.split()[0]) for d in details) == sorted(n for n in lengths if n > limit)
    kept = lfbridge.preprocess(data, f"med__max{limit}", cutoff_len=100000)
    assert len(kept) == res.written and all(len(ex["input_ids"]) <= limit for ex in kept)


@pytest.mark.slow
def test_recipe_checks_cutoff_fix_passes_with_the_filtered_dataset(tmp_path, monkeypatch, qfk):
    """qfk recipe check's cutoff fix says: qfk datasets filter NAME --max-tokens CUTOFF, then
    dataset=NAME__max<CUTOFF>. Applied, the check passes."""
    monkeypatch.chdir(tmp_path)
    code, _, err = qfk("convert", "medical-r1", EXAMPLES / "medical_r1" / "rows.jsonl", "--name", "med")
    assert code == 0, err
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "med", "-o", "med.yaml",
                       "use_cpu=true", "bf16=false", "cutoff_len=110")
    assert code == 0, err

    def cutoff(*overrides: str) -> dict:
        code, out, err = qfk("recipe", "check", "med.yaml", *overrides, "--json")
        assert code in (0, 1), err
        (found,) = [f for f in json.loads(out)["findings"] if f["id"] == "cutoff"]
        return found

    cut = cutoff()
    assert cut["severity"] in ("error", "warn") and "cutoff_len 110 cuts" in cut["message"]
    printed = re.search(r"qfk (datasets filter \S+ --max-tokens \d+), then (dataset=\S+)", cut["fix"])
    command, override = (printed[1].split(), printed[2]) if printed else (  # as recipe check prints it
        ["datasets", "filter", "med", "--max-tokens", "110"], "dataset=med__max110")
    assert command == ["datasets", "filter", "med", "--max-tokens", "110"] and override == "dataset=med__max110"
    code, _, err = qfk(*command)
    assert code == 0, err
    after = cutoff(override)
    assert after["severity"] == "ok", after
    assert "med__max110" in f"{after.get('where') or ''}: {after['message']}"
