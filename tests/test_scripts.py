"""Scripts and languages (qwen_factory_kit.scripts): the pure rules, the converters that reject or
convert with them (moses, columns), lint's report on converted rows, and the false-alarm rates
measured on the real rows of ../shared/real-samples.

The measured rates print with: python -m pytest -q tests/test_scripts.py -k false_alarms -p no:cacheprovider
"""

import json

import pytest
from conftest import EXAMPLES, read_jsonl, write_jsonl

from qwen_factory_kit import scripts
from qwen_factory_kit.convert import convert
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.langs import LANG_NAMES, normalize_code
from qwen_factory_kit.lint import ScriptRule, lint, lint_rows, layout_from
from qwen_factory_kit.scripts import (BOTH, LANGUAGE_MISMATCH, MIXED, NONE, SCRIPT_MISMATCH, SIMPLIFIED, TRADITIONAL,
                                      checker, chinese_script, has_own_script, problem, resolve, to_traditional)

#: the bound this file holds every measured false-alarm rate to
MAX_FALSE_ALARMS = 0.01


def corpus(folder, files: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return folder


def rate(flagged: int, total: int) -> str:
    return f"{flagged}/{total} = {flagged / total:.2%}"


# ---------------------------------------------------------------------------------------------
# the pure rules
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,script,simp,trad", [
    ("我們在這裡。", TRADITIONAL, "", "們這裡"),
    ("我们在这里。", SIMPLIFIED, "们这", ""),
    ("我們在这里。", MIXED, "这", "們"),
    ("中文很有趣。", BOTH, "", ""),  # every character exists in both scripts
    ("Hello, 2024!", NONE, "", ""),
    ("", NONE, "", ""),
])
def test_chinese_script_names_the_characters_that_decide(text, script, simp, trad):
    assert chinese_script(text) == scripts.ChineseScript(script, simp, trad)


def test_chinese_script_agrees_with_hanzidentifier():
    import hanzidentifier as hz

    names = {hz.UNKNOWN: NONE, hz.TRAD: TRADITIONAL, hz.SIMP: SIMPLIFIED, hz.BOTH: BOTH, hz.MIXED: MIXED}
    texts = ["我們在這裡。", "我们在这里。", "我們在这里。", "中文", "abc", "台灣的軟體", "头发", "頭髮", "后面", "皇后"]
    texts += (EXAMPLES / "moses" / "corpus.zh_tw").read_text(encoding="utf-8").splitlines()
    assert [chinese_script(t).script for t in texts] == [names[hz.identify(t)] for t in texts]


@pytest.mark.parametrize("text,lang,ok", [
    ("おはようございます。", "ja", True),
    ("曹洞宗の開祖。", "ja", True),
    ("曹洞宗", "ja", True),  # kanji alone is Japanese script
    ("NHKのニュース", "ja", True),  # Latin names inside a Japanese line are fine
    ("See you tomorrow.", "ja", False),  # English pasted into corpus.ja
    ("ＩＢＭ", "ja", False),  # full-width Latin is still Latin
    ("早安。", "zh_TW", True),
    ("OK", "zh_TW", False),
    ("Good morning.", "en", True),
    ("Café crème", "fr", True),
    ("おはよう", "en", False),
    ("안녕하세요", "ko", True),
    ("Hello", "ko", False),
    ("2024", "ja", True),  # no letters at all: numbers, punctuation and emoji pass
    ("……！？", "zh_TW", True),
    ("😀👍", "en", True),
    ("", "ja", True),
])
def test_has_own_script(text, lang, ok):
    assert has_own_script(text, lang) is ok


def test_unknown_language_has_no_script_check():
    assert has_own_script("anything", "xx") is None and checker("xx") is None and problem("anything", "xx") is None


def test_every_language_the_kit_names_has_a_script():
    assert set(LANG_NAMES) <= set(scripts.LANG_SCRIPTS)


@pytest.mark.parametrize("code", ["zh_TW", "zh-TW", "zh_tw", "zht", "zh_Hant", "cmn_Hant", "zho_Hant", "zh"])
def test_codes_that_mean_traditional_chinese_check_the_script(code):
    """The codes come from langs.normalize_code: one table for the whole kit."""
    assert normalize_code(code) == "zh_TW"
    found = problem("我们这里", code)
    assert found.code == SCRIPT_MISMATCH and found.detail == "simplified characters 们, 这 in a zh_TW line"
    assert problem("我們這裡", code) is None and problem("中文", code) is None


def test_simplified_chinese_sides_are_not_held_to_traditional():
    assert problem("我们这里", "zh_CN") is None and problem("我們這裡", "zh-CN") is None


def test_problem_messages():
    assert problem("我們在这里们", "zh_TW").detail == "simplified characters 这, 们 in a zh_TW line (mixed with traditional ones)"
    many = problem("们这个们为么与专业丛东丝丢两严", "zh_TW")
    assert many.detail.startswith("simplified characters 们, 这, 个, 为, 与, 专, 业, 丛 and ") and many.chars[:2] == "们这"
    lang = problem("See you tomorrow.", "ja")
    assert lang.code == LANGUAGE_MISMATCH and lang.detail == "no kana or kanji in a ja line (only Latin letters): not ja text"
    assert problem("Привет", "en").detail == "no Latin letters in an en line (only Cyrillic letters): not en text"
    assert problem("这是书", script=TRADITIONAL, where="field 'a'").detail == "simplified characters 这, 书 in field 'a'"
    assert problem("Latin 们", "zh_TW").code == SCRIPT_MISMATCH  # Chinese characters are there: the script decides
    with pytest.raises(ValueError):
        problem("x", script="klingon")


def test_checker_agrees_with_problem():
    texts = ["我们", "我們", "中文", "Hello", "2024", "😀", "NHKの", "See you.", "OK 们", "", "ＩＢＭ"]
    for lang in ["zh_TW", "zh_CN", "ja", "en", "ko", "xx", None]:
        check = checker(lang) if lang else checker(script=TRADITIONAL)
        for text in texts:
            assert (check(text) if check else None) == problem(text, lang, script=None if lang else TRADITIONAL), (lang, text)


def test_to_traditional_uses_the_taiwan_profile():
    """opencc 1.4.2's s2twp: characters, Taiwan variants and phrases; tags and whitespace untouched."""
    import opencc

    assert opencc.OpenCC("s2twp.json").convert("软件") == "軟體"
    assert to_traditional("我们的软件和鼠标") == "我們的軟體和滑鼠"
    assert to_traditional("<think>\n想想\n</think>\n\n答案 \t x") == "<think>\n想想\n</think>\n\n答案 \t x"


def test_resolve_converts_only_what_it_is_asked_to():
    check = checker("zh_TW")
    assert resolve("我们这里", check) == ("我们这里", problem("我们这里", "zh_TW"), False)
    assert resolve("我们这里", check, convert=True) == ("我們這裡", None, True)
    assert resolve("我們這裡", check, convert=True) == ("我們這裡", None, False)
    assert resolve("Hello", check, convert=True)[1].code == LANGUAGE_MISMATCH  # conversion cannot make it Chinese
    text, left, done = resolve("彝族们", check, convert=True)  # OpenCC has no mapping for 彝 (CC-CEDICT: Simplified only)
    assert (text, done) == ("彝族们", False) and left.detail.endswith("left so by OpenCC s2twp") and "彝" in left.chars


def test_an_opencc_round_trip_would_flag_taiwan_text():
    """Why the character lists decide and not a round trip through OpenCC: s2twp rewrites text that
    is already Traditional (台 -> 臺, Hong Kong words -> Taiwan words), so s2twp(x) != x on real
    Taiwan lines; only characters that exist in one script decide here."""
    taiwan = ["我住在台北。", "台灣的軟件很好用。", "這裏很熱鬧。"]
    assert all(to_traditional(t) != t for t in taiwan)
    assert all(problem(t, "zh_TW") is None for t in taiwan)


# ---------------------------------------------------------------------------------------------
# the converters
# ---------------------------------------------------------------------------------------------
SIMPLIFIED_LINES = (3, 11, 20, 34, 50)


def zh_tw_corpus(tmp_path):
    """50 aligned lines; lines 3, 11, 20, 34 and 50 of corpus.zh_TW are written in Simplified Chinese."""
    zh = [f"這是第{i}個句子。" if i not in SIMPLIFIED_LINES else f"这是第{i}个句子，们。" for i in range(1, 51)]
    return corpus(tmp_path / "c", {"corpus.en": [f"This is sentence {i}." for i in range(1, 51)], "corpus.zh_TW": zh})


@pytest.mark.parametrize("extra", [{}, {"max_length_ratio": 100.0}, {"dedup": False}])
def test_simplified_zh_tw_lines_are_rejected_with_their_line_numbers(tmp_path, extra):
    """The fast path (lines put together from JSON strings), the row path (--max-length-ratio) and no dedup agree."""
    res = convert("moses", str(zh_tw_corpus(tmp_path)), output=str(tmp_path / "o.jsonl"), **extra)
    assert (res.read, res.written, res.rejected) == (50, 45, 5)
    assert res.rejected_by_reason == {SCRIPT_MISMATCH: 5}
    rejects = read_jsonl(res.rejects)
    assert [r["line"] for r in rejects] == list(SIMPLIFIED_LINES)
    assert rejects[0]["detail"] == "simplified characters 这, 个, 们 in a zh_TW line"
    assert all("这" not in r["input"] + r["output"] for r in read_jsonl(res.output))


def test_to_traditional_converts_them_and_the_manifest_counts_them(tmp_path, qfk_json):
    s = qfk_json("convert", "moses", zh_tw_corpus(tmp_path), "-o", tmp_path / "o.jsonl", "--to-traditional", "--no-progress")
    assert (s["read"], s["written"], s["rejected"]) == (50, 50, 0)
    assert s["notes"] == {"converted_to_traditional": 5} and "--to-traditional" in s["note_options"]["converted_to_traditional"]
    manifest = json.loads((tmp_path / "o.manifest.json").read_text())
    assert manifest["counts"]["notes"]["converted_to_traditional"] == 5 and manifest["options"]["to_traditional"] is True
    rows = read_jsonl(tmp_path / "o.jsonl")
    assert {r["input"] for r in rows if r["instruction"] == "Translate <zh_TW> to <en>."} >= {"這是第3個句子，們。"}


def test_to_traditional_gives_the_same_bytes_with_workers(tmp_path):
    src = zh_tw_corpus(tmp_path)
    one = convert("moses", str(src), output=str(tmp_path / "a.jsonl"), to_traditional=True, workers=1)
    two = convert("moses", str(src), output=str(tmp_path / "b.jsonl"), to_traditional=True, workers=2)
    assert one.output.read_bytes() == two.output.read_bytes() and one.notes == two.notes == {"converted_to_traditional": 5}


def test_manifests_without_the_option_stay_as_they_were(tmp_path):
    res = convert("moses", str(EXAMPLES / "moses"), output=str(tmp_path / "o.jsonl"))
    options = json.loads(res.manifest.read_text())["options"]
    assert "to_traditional" not in options and res.rejected_by_reason.get(SCRIPT_MISMATCH) is None


def test_english_pasted_into_corpus_ja_is_a_language_mismatch(tmp_path):
    ja = ["おはようございます。", "ありがとう。", "Where is the station?", "NHKのニュースです。", "2024"]
    src = corpus(tmp_path / "c", {"corpus.en": ["Good morning.", "Thank you.", "Where is the station?", "NHK news.", "2024"],
                                  "corpus.ja": ja})
    res = convert("moses", str(src), output=str(tmp_path / "o.jsonl"))
    assert res.written == 4 and res.rejected_by_reason == {LANGUAGE_MISMATCH: 1}
    (reject,) = read_jsonl(res.rejects)
    assert reject["line"] == 3 and reject["detail"] == "no kana or kanji in a ja line (only Latin letters): not ja text"


def test_to_traditional_needs_a_zh_tw_side(tmp_path):
    src = corpus(tmp_path / "c", {"corpus.en": ["Hello."], "corpus.ja": ["こんにちは。"]})
    with pytest.raises(QfkError, match="no zh_TW file") as err:
        convert("moses", str(src), output=str(tmp_path / "o.jsonl"), to_traditional=True)
    assert "--lang-map" in err.value.hint and not (tmp_path / "o.jsonl").exists()
    with pytest.raises(QfkError, match="--langs asks for no zh_TW file"):
        convert("moses", str(EXAMPLES / "moses"), output=str(tmp_path / "o.jsonl"), to_traditional=True, langs=["en", "ja"])


def test_a_simplified_zh_file_is_mapped_to_zh_cn(tmp_path):
    """A bare .zh file is Traditional Chinese in this kit's layouts; a Simplified one says so with --lang-map."""
    src = corpus(tmp_path / "c", {"corpus.en": ["We are here."], "corpus.zh": ["我们在这里。"]})
    with pytest.raises(QfkError, match="every one of the 1 rows was rejected"):
        convert("moses", str(src), output=str(tmp_path / "a.jsonl"))
    assert convert("moses", str(src), output=str(tmp_path / "b.jsonl"), lang_map={"zh": "zh_CN"}).written == 1


def test_columns_script_traditional(tmp_path, qfk_json):
    rows = [{"q": "這是什麼？", "a": "這是書。", "h": []}, {"q": "这是什么？", "a": "這是書。", "h": []}, {"q": "Hi", "a": "你好", "h": []},
            {"q": "中文", "a": "答案", "h": [["问题", "回答"]]}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    s = qfk_json("convert", "columns", src, "--prompt", "q", "--response", "a", "--history", "h", "--script", "traditional",
                 "-o", tmp_path / "o.jsonl", "--no-progress")
    assert (s["written"], s["rejected_by_reason"]) == (2, {SCRIPT_MISMATCH: 2})
    assert [r["detail"] for r in read_jsonl(s["rejects"])] == ["simplified characters 这 in field 'q'",
                                                               "simplified characters 问, 题 in field 'h[0][0]'"]
    s = qfk_json("convert", "columns", src, "--prompt", "q", "--response", "a", "--history", "h", "--to-traditional",
                 "-o", tmp_path / "t.jsonl", "--no-progress", "--no-register")
    assert (s["written"], s["notes"]) == (4, {"converted_to_traditional": 2})
    out = read_jsonl(tmp_path / "t.jsonl")
    assert out[1]["instruction"] == "這是什麼？" and out[3]["history"] == [["問題", "<think>\n\n</think>\n\n回答"]]
    assert json.loads((tmp_path / "t.manifest.json").read_text())["options"]["script"] == TRADITIONAL


def test_columns_script_refuses_other_values(tmp_path):
    with pytest.raises(QfkError, match="--script must be one of traditional, not 'simplified'"):
        convert("columns", str(tmp_path / "in.jsonl"), prompt="q", response="a", script="simplified")


# ---------------------------------------------------------------------------------------------
# lint
# ---------------------------------------------------------------------------------------------
def test_lint_reports_rows_out_of_their_script(tmp_path, qfk):
    """A corpus converted, then rows added that qfk convert would have refused (an older qfk, a hand edit)."""
    data = tmp_path / "data"
    res = convert("moses", str(EXAMPLES / "moses"), data_dir=str(data), name="tri", register=True)
    assert lint("tri", data_dir=str(data)).counts == {}
    bad = [{"instruction": "Translate <en> to <zh_TW>.", "input": f"We are here {i}.", "output": f"<think>\n\n</think>\n\n我们在这里{i}。",
            "system": "s"} for i in range(7)]
    bad.append({"instruction": "Translate <zh_TW> to <ja>.", "input": "早安。", "output": "<think>\n\n</think>\n\nGood morning.",
                "system": "s"})
    written = len(read_jsonl(res.output))
    with open(res.output, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in bad))
    code, out, err = qfk("lint", "tri", "--data-dir", data, "--json")
    report = json.loads(out)
    assert code == 0 and report["by_rule"] == {SCRIPT_MISMATCH: 7, LANGUAGE_MISMATCH: 1}
    found = {p["id"]: p for p in report["problems"]}
    first = written + 1
    rows = ", ".join(str(first + i) for i in range(5))
    assert found[SCRIPT_MISMATCH]["message"].startswith("7 rows with Simplified Chinese characters")
    assert f"(rows {rows}, ...; row {first}: simplified characters 们, 这 in a zh_TW line)" in found[SCRIPT_MISMATCH]["message"]
    assert found[SCRIPT_MISMATCH]["row"] == first and found[SCRIPT_MISMATCH]["severity"] == "warn"
    assert "qfk convert moses" in found[SCRIPT_MISMATCH]["fix"] and "--to-traditional" in found[SCRIPT_MISMATCH]["fix"]
    assert found[LANGUAGE_MISMATCH]["row"] == first + 7 and "no kana or kanji in a ja line" in found[LANGUAGE_MISMATCH]["message"]


def test_lint_script_rule_of_a_columns_conversion(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"q": "這是什麼？", "a": "這是書。"}])
    res = convert("columns", str(src), output=str(tmp_path / "o.jsonl"), prompt="q", response="a", script="traditional")
    with open(res.output, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"instruction": "这是什么？", "input": "", "output": "書"}, ensure_ascii=False) + "\n")
    rep = lint(str(res.output))
    (finding,) = [p for p in rep.problems if p.id == SCRIPT_MISMATCH]
    assert finding.row == 2 and "field 'instruction'" in finding.message
    assert finding.fix.startswith("convert the Simplified texts: qfk convert columns") and "--prompt q --response a --to-traditional" in finding.fix


def test_lint_without_a_manifest_has_no_script_rule(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "Translate <en> to <zh_TW>.", "input": "Hi", "output": "你们"}])
    assert lint(str(path)).counts == {}
    assert ScriptRule.of(None) is None and ScriptRule.of({"converter": "sharegpt", "options": {}}) is None


def test_lint_script_rule_keeps_bounded_memory():
    """Streaming: a few example rows per rule, and instructions remembered up to a bound."""
    manifest = {"converter": "moses", "options": {"found": {"c": ["en", "zh_TW"]}, "instruction_template": "Translate {src_tag} to {tgt_tag}."}}
    rule = ScriptRule.of(manifest)
    lay = layout_from(None, {"instruction": "", "input": "", "output": ""})
    rows = ((n, {"instruction": f"Translate <en> to <zh_TW>. ({n})", "input": "Hi", "output": "我们"}) for n in range(1, 2001))
    rep = lint_rows(rows, lay, scripts=rule)
    assert rep.counts[(SCRIPT_MISMATCH, "warn")] == 2000 and len(rule.examples[SCRIPT_MISMATCH]) == ScriptRule.EXAMPLES
    assert len(rule._directions) <= 256


# ---------------------------------------------------------------------------------------------
# false alarms on real rows (../shared/real-samples; skipped where it is absent)
# ---------------------------------------------------------------------------------------------
def test_real_kftt_false_alarms(real_samples, capsys):
    """KFTT ja/en: language_mismatch flags ja line 1 only ("InfoboxBuddhist", a template name with no
    Japanese in it: a true finding); no English line, no other Japanese line."""
    ja = (real_samples / "moses" / "kftt" / "kyoto-test.ja").read_text(encoding="utf-8").splitlines()
    en = (real_samples / "moses" / "kftt" / "kyoto-test.en").read_text(encoding="utf-8").splitlines()
    flagged_ja = [n for n, t in enumerate(ja, 1) if problem(t, "ja")]
    flagged_en = [n for n, t in enumerate(en, 1) if problem(t, "en")]
    assert flagged_ja == [1] and ja[0] == "InfoboxBuddhist" and flagged_en == []
    false_ja = len(flagged_ja) - 1
    assert false_ja / (len(ja) - 1) <= MAX_FALSE_ALARMS
    with capsys.disabled():
        print(f"\nKFTT language_mismatch false alarms: ja {rate(false_ja, len(ja) - 1)} (line 1 'InfoboxBuddhist' flagged, "
              f"rightly), en {rate(len(flagged_en), len(en))}")


def _finetome_texts(real_samples):
    rows = [json.loads(x) for x in (real_samples / "finetome" / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    return [m["value"] for r in rows for m in r["conversations"]]


def _medical_texts(real_samples):
    rows = [json.loads(x) for x in (real_samples / "medical_r1" / "val_sample.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r[k] for r in rows for k in ("instruction", "question", "think", "answer")]


def test_real_finetome_false_alarms(real_samples, capsys):
    """FineTome is English: no message lacks Latin letters (a message of only an expression,
    '20 // 3 - 4 ** 2 + 5=', has no letter at all and passes)."""
    texts = _finetome_texts(real_samples)
    flagged = [t for t in texts if problem(t, "en")]
    assert flagged == []
    with capsys.disabled():
        print(f"\nFineTome language_mismatch (en) false alarms: {rate(len(flagged), len(texts))}")


def test_real_medical_false_alarms(real_samples, capsys):
    """The medical rows are Simplified Chinese: as zh text none is a language mismatch; as zh_TW
    text 797 of 800 are caught (the other 3 hold only characters shared by both scripts, which
    cannot decide: GLP适用于哪些研究？). Converted to Traditional with s2twp, none is flagged."""
    import hanzidentifier as hz

    texts = _medical_texts(real_samples)
    assert [t for t in texts if problem(t, "zh_CN")] == []
    caught = [t for t in texts if problem(t, "zh_TW")]
    assert len(caught) >= 0.99 * len(texts)
    traditional = [to_traditional(t) for t in texts]
    false = [t for t in traditional if problem(t, "zh_TW")]
    assert len(false) / len(texts) <= MAX_FALSE_ALARMS
    assert [chinese_script(t).script for t in texts + traditional] == [
        {hz.UNKNOWN: NONE, hz.TRAD: TRADITIONAL, hz.SIMP: SIMPLIFIED, hz.BOTH: BOTH, hz.MIXED: MIXED}[hz.identify(t)]
        for t in texts + traditional]
    chars = sum(map(len, traditional))
    with capsys.disabled():
        print(f"\nmedical (Simplified) as zh: language_mismatch {rate(0, len(texts))}; as zh_TW: script_mismatch caught "
              f"{rate(len(caught), len(texts))}; after s2twp ({chars} characters): script_mismatch false alarms "
              f"{rate(len(false), len(texts))}")


def test_example_zh_tw_false_alarms(capsys):
    """The project's own Traditional Chinese lines (examples/moses/corpus.zh_tw, written in Taiwan
    usage: 台北): no false alarm here, where an OpenCC round trip flags some."""
    lines = (EXAMPLES / "moses" / "corpus.zh_tw").read_text(encoding="utf-8").splitlines()
    flagged = [t for t in lines if problem(t, "zh_TW")]
    round_trip = [t for t in lines if to_traditional(t) != t]
    assert flagged == [] and "我住在台北。" in round_trip
    with capsys.disabled():
        print(f"\nexamples/moses/corpus.zh_tw: script_mismatch false alarms {rate(len(flagged), len(lines))}; "
              f"an s2twp round trip would flag {rate(len(round_trip), len(lines))}")
