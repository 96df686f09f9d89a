import zipfile

import pytest
from conftest import EXAMPLES, read_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.convert.moses import weighted_length
from qwen_factory_kit.errors import QfkError

EN = ["Good morning.", "Thank you.", "Where is the station?"]
ZH = ["早安。", "謝謝你。", "車站在哪裡？"]
JA = ["おはようございます。", "ありがとう。", "駅はどこですか。"]


def corpus(folder, files: dict, encoding="utf-8"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_bytes("".join(l + "\n" for l in lines).encode(encoding))
    return folder


def test_three_languages_six_directions(tmp_path):
    src = corpus(tmp_path / "c", {"corpus.en": EN, "corpus.zh_tw": ZH, "corpus.ja": JA})
    res = convert("moses", str(src), output=str(tmp_path / "o.jsonl"))
    rows = read_jsonl(res.output)
    assert (res.read, res.written, res.rows_out) == (3, 3, 18)
    directions = {r["instruction"] for r in rows}
    assert len(directions) == 6 and "Translate <en> to <zh_TW>." in directions and "Translate <ja> to <en>." in directions
    first = [r for r in rows if r["instruction"] == "Translate <en> to <zh_TW>."][0]
    assert first["input"] == "Good morning." and first["output"] == "<think>\n\n</think>\n\n早安。"
    assert first["system"].startswith("You are a professional translator")


def test_langs_and_directions_filters(tmp_path):
    src = corpus(tmp_path / "c", {"corpus.en": EN, "corpus.zh_tw": ZH, "corpus.ja": JA})
    res = convert("moses", str(src), output=str(tmp_path / "o.jsonl"), langs=["en", "ja"], empty_think="omit")
    assert res.rows_out == 6 and {r["instruction"] for r in read_jsonl(res.output)} == {"Translate <en> to <ja>.", "Translate <ja> to <en>."}
    one = convert("moses", str(src), output=str(tmp_path / "p.jsonl"), directions=["zh_tw-en"], system="")
    rows = read_jsonl(one.output)
    assert one.rows_out == 3 and rows[0] == {"instruction": "Translate <zh_TW> to <en>.", "input": "早安。",
                                             "output": "<think>\n\n</think>\n\nGood morning."}


@pytest.mark.parametrize("names", [("OpenSubtitles.en-zh_TW.en", "OpenSubtitles.en-zh_TW.zh_TW"),
                                   ("GlobalVoices.en-zht.en", "GlobalVoices.en-zht.zht"),
                                   ("x.cmn_Hant", "x.eng"), ("flores.zho_Hant", "flores.eng_Latn"), ("c.zh", "c.en")])
def test_opus_names_and_codes(tmp_path, names):
    zh_name, en_name = (names[1], names[0]) if "en" in names[0].rsplit(".", 1)[1] else names
    src = corpus(tmp_path / "c", {en_name: EN, zh_name: ZH})
    res = convert("moses", str(src), output=str(tmp_path / "o.jsonl"))
    assert {r["instruction"] for r in read_jsonl(res.output)} == {"Translate <en> to <zh_TW>.", "Translate <zh_TW> to <en>."}


def test_opus_zip(tmp_path):
    z = tmp_path / "en-ja.txt.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("KFTT.en-ja.en", "".join(l + "\n" for l in EN))
        zf.writestr("KFTT.en-ja.ja", "".join(l + "\n" for l in JA))
        zf.writestr("KFTT.en-ja.ids", "a\tb\t1\t1\n" * 3)
        zf.writestr("README", "readme")
        zf.writestr("LICENSE", "license")
    res = convert("moses", str(z), output=str(tmp_path / "o.jsonl"))
    assert (res.read, res.rows_out, res.name) == (3, 6, "en_ja")
    # a folder holding the zip works too
    res2 = convert("moses", str(tmp_path), output=str(tmp_path / "o2.jsonl"))
    assert res2.rows_out == 6


def test_line_count_mismatch_fails_loudly_and_writes_nothing(tmp_path):
    src = corpus(tmp_path / "c", {"corpus.en": EN, "corpus.ja": JA[:2]})
    with pytest.raises(QfkError) as exc:
        convert("moses", str(src), output=str(tmp_path / "o.jsonl"))
    msg = exc.value.message
    assert "corpus.en has 3 lines" in msg and "corpus.ja has 2" in msg
    assert not list(tmp_path.glob("o*"))


def test_cleaning_duplicates_empty_html_ratio(tmp_path):
    src = corpus(tmp_path / "c", {
        "c.en": ["Tom &amp; Mary", "Good morning.", "Good morning.", "", "short", "x" * 50],
        "c.ja": ["トムとメアリー", "おはよう。", "おはよう。", "空", "これはとても長い日本語の文章で英語の原文とは長さが全然合いませんね", "あ"],
    })
    res = convert("moses", str(src), output=str(tmp_path / "o.jsonl"), max_length_ratio=3.0)
    assert res.rejected_by_reason == {"duplicate": 1, "empty_segment": 1, "length_ratio": 2}
    assert read_jsonl(res.output)[0]["input"] == "Tom & Mary" and res.notes["html_entities_unescaped"] == 1
    assert [r["line"] for r in read_jsonl(res.rejects)] == [3, 4, 5, 6]
    kept = convert("moses", str(src), output=str(tmp_path / "k.jsonl"), dedup=False)
    assert "duplicate" not in kept.rejected_by_reason


def test_weighted_length_is_cjk_aware():
    assert weighted_length("abcd") == 4
    assert weighted_length("日本語") == pytest.approx(3 * 2.75)


@pytest.mark.parametrize("enc", ["big5", "gb18030"])
def test_legacy_encodings_detected(tmp_path, enc):
    zh = ["我們明天下午在圖書館見面，討論這個計畫的細節。", "請問這附近有沒有便利商店？", "今天的天氣非常好，適合去公園散步。"] * 20
    src = corpus(tmp_path / "c", {"c.en": ["line %d" % i for i in range(60)]}, "utf-8")
    (src / "c.zh_tw").write_bytes("".join(l + "\n" for l in zh).encode(enc))
    res = convert("moses", str(src), output=str(tmp_path / "o.jsonl"), dedup=False)
    outs = {r["output"].split("\n\n")[-1] for r in read_jsonl(res.output) if r["instruction"].endswith("<zh_TW>.")}
    assert outs == set(zh[:3])  # decoded correctly: no mojibake
    assert any(k.startswith("encoding_detected:c.zh_tw=") for k in res.notes)


def test_explicit_wrong_encoding_rejects_rows_not_mojibake(tmp_path):
    src = corpus(tmp_path / "c", {"c.en": ["a", "b"]})
    (src / "c.ja").write_bytes("日本語\nテスト\n".encode("shift_jis"))
    with pytest.raises(QfkError, match="every one of the 2 rows was rejected"):  # nothing written, clear error
        convert("moses", str(src), output=str(tmp_path / "o.jsonl"), file_encodings={"c.ja": "utf-8"})
    assert not (tmp_path / "o.jsonl").exists()
    rejects = read_jsonl(tmp_path / "o.rejects.jsonl")
    assert {r["reason"] for r in rejects} == {"encoding_error"}
    ok = convert("moses", str(src), output=str(tmp_path / "p.jsonl"), file_encodings={"c.ja": "shift_jis"})
    assert ok.written == 2


def test_bom_and_crlf(tmp_path):
    src = tmp_path / "c"
    src.mkdir()
    (src / "c.en").write_bytes(b"\xef\xbb\xbfHello\r\nBye\r\n")
    (src / "c.ja").write_bytes("こんにちは\r\nさようなら\r\n".encode())
    rows = read_jsonl(convert("moses", str(src), output=str(tmp_path / "o.jsonl"), empty_think="omit").output)
    assert rows[0]["input"] == "Hello" and rows[0]["output"] == "こんにちは" and rows[2]["input"] == "Bye"


def test_unknown_suffix_is_a_clear_error(tmp_path):
    src = corpus(tmp_path / "c", {"corpus.en": EN, "corpus.xx": ZH})
    with pytest.raises(QfkError) as exc:
        convert("moses", str(src), output=str(tmp_path / "o.jsonl"))
    assert ".xx" in exc.value.message and "--lang-map xx=" in exc.value.hint
    res = convert("moses", str(src), output=str(tmp_path / "o.jsonl"), lang_map={"xx": "zh_TW"})
    assert res.rows_out == 6


def test_no_pairs_found(tmp_path):
    src = corpus(tmp_path / "c", {"notes.txt": ["x"], "corpus.en": EN})
    with pytest.raises(QfkError, match="no aligned files"):
        convert("moses", str(src))


def test_split_keeps_both_directions_together(tmp_path):
    src = corpus(tmp_path / "c", {"c.en": [f"sentence {i}" for i in range(100)], "c.ja": [f"文 {i}" for i in range(100)]})
    res = convert("moses", str(src), output=str(tmp_path / "o.jsonl"), test_size=10, val_size=0.1)
    assert res.splits["test"]["rows"] == 20 and res.splits["val"]["rows"] == 20 and res.splits["train"]["rows"] == 160
    test_inputs = {r["input"] for r in read_jsonl(res.splits["test"]["path"])}
    train_inputs = {r["input"] for r in read_jsonl(res.output)}
    assert not test_inputs & train_inputs


def test_bundled_examples(tmp_path, qfk_json):
    s = qfk_json("convert", "moses", EXAMPLES / "moses", "-o", tmp_path / "t.jsonl", "--test-size", "4")
    assert s["rows_out"] == 6 * s["written"] and s["read"] == s["written"] + s["rejected"]
    z = qfk_json("convert", "moses", EXAMPLES / "opus" / "en-ja.txt.zip", "-o", tmp_path / "z.jsonl")
    assert z["rows_out"] == 12


def test_real_kftt(real_samples, tmp_path):
    res = convert("moses", str(real_samples / "moses" / "kftt"), output=str(tmp_path / "k.jsonl"))
    assert res.read == 300 and res.read == res.written + res.rejected
    rows = read_jsonl(res.output)
    # line 1 is a template name, in Latin letters on the ja side too: language_mismatch (tests/test_scripts.py)
    assert res.rejected_by_reason["language_mismatch"] == 1
    assert rows[0]["input"] == "Dogen was a Zen monk in the early Kamakura period." and rows[1]["input"] == "道元（どうげん）は、鎌倉時代初期の禅僧。"


def test_test_size_is_exact_in_lines_after_duplicates_and_rejects(tmp_path):
    """--test-size 30 gives 30 source lines (60 rows, both directions together) even when lines the
    first pass put in test are duplicates or rejected."""
    en = [f"sentence {i % 150}" for i in range(200)]  # lines 150..199 repeat lines 0..49
    ja = [f"文 {i % 150}" for i in range(200)]
    for i in range(0, 200, 9):
        en[i] = ""  # 23 empty segments
    src = corpus(tmp_path / "c", {"c.en": en, "c.ja": ja})
    for seed in (1, 42):
        res = convert("moses", str(src), output=str(tmp_path / f"o{seed}.jsonl"), test_size=30, val_size=0.1, seed=seed)
        assert res.rejected_by_reason["duplicate"] > 0 and res.rejected_by_reason["empty_segment"] > 0
        accepted = res.written
        want_val = round(accepted * 0.1)
        assert res.splits["test"]["source_rows"] == 30 and res.splits["test"]["rows"] == 60
        assert res.splits["val"]["source_rows"] == want_val and res.splits["val"]["rows"] == 2 * want_val
        assert res.splits["train"]["source_rows"] == accepted - 30 - want_val and res.splits_short == {}
        lines = {s: [(r["input"], r["output"].split("\n\n")[-1]) for r in read_jsonl(v["path"])] for s, v in res.splits.items()}
        for pairs in lines.values():  # each line's two directions sit in the same split
            en_side = {a if a.startswith("sentence") else b for a, b in pairs}
            assert len(pairs) == 2 * len(en_side)
        assert not {a for a, _ in lines["test"]} & {a for a, _ in lines["train"]}


def test_fewer_lines_than_asked(tmp_path):
    src = corpus(tmp_path / "c", {"c.en": ["a", "b", "", "", "c"], "c.ja": ["あ", "い", "う", "え", "お"]})
    res = convert("moses", str(src), output=str(tmp_path / "o.jsonl"), test_size=4)
    assert res.splits["test"]["source_rows"] == 3 and res.splits["train"]["rows"] == 0
    assert res.splits_short["test"].startswith("asked 4 rows for test, wrote 3: only 3 of the 5 rows read were accepted")
