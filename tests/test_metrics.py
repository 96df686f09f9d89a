"""Scoring core of evaluation (qwen_factory_kit.post.metrics): sacreBLEU with per-language
tokenizers, ROUGE-L, exact match, think compliance and the Moses direction round trip."""

from itertools import permutations

import pytest
from conftest import read_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.post.metrics import (EMPTY_BLOCK, NO_BLOCK, WELL_FORMED, bleu_tokenizer,
                                           corpus_translation_scores, exact_match, is_cjk, lcs_length,
                                           pooled_translation_scores, rouge_l, rouge_tokens, score_rows,
                                           sentence_translation_scores, split_prediction, think_compliance,
                                           translation_direction)

EN = ["Good morning.", "Thank you.", "Where is the station?"]
ZH = ["早安。", "謝謝你。", "車站在哪裡？"]
JA = ["おはようございます。", "ありがとう。", "駅はどこですか。"]


def chat_prompt(row: dict) -> str:
    """The prompt LLaMA-Factory's qwen3 template renders for an Alpaca row (system, user turn)."""
    user = "\n".join(p for p in (row["instruction"], row.get("input")) if p)
    system = f"<|im_start|>system\n{row['system']}<|im_end|>\n" if row.get("system") else ""
    return f"{system}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


# -- translation: sacreBLEU with the target language's tokenizer ---------------------------------
@pytest.mark.parametrize("lang, tokenizer", [("zh", "zh"), ("zh_TW", "zh"), ("zh-CN", "zh"), ("ja", "ja-mecab"),
                                             ("en", "13a"), ("fr", "13a"), (None, "13a"), ("xx", "13a")])
def test_bleu_tokenizer_by_target_language(lang, tokenizer):
    assert bleu_tokenizer(lang) == tokenizer


@pytest.mark.parametrize("lang, texts, tok", [("zh_TW", ZH, "tok:zh|"), ("ja", JA, "tok:ja-mecab-")])
def test_identical_chinese_and_japanese_score_100(lang, texts, tok):
    scores = corpus_translation_scores(texts, texts, lang)
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)
    assert tok in scores["bleu_signature"] and scores["n"] == 3
    assert scores["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no")


def test_zh_tokenizer_is_really_used():
    # Values from sacreBLEU 2.6's CLI: `sacrebleu ref -m bleu -tok zh` -> 23.4, `-tok 13a` -> 0.0
    # (13a leaves the unspaced Chinese sentence one token, which the hypothesis does not match).
    hyp, ref = ["我不喜欢吃香蕉。"], ["我喜欢吃苹果。"]
    zh = corpus_translation_scores(hyp, ref, "zh_CN")
    latin = corpus_translation_scores(hyp, ref, "en")
    assert zh["bleu_tokenizer"] == "zh" and "tok:zh|" in zh["bleu_signature"]
    assert latin["bleu_tokenizer"] == "13a" and "tok:13a|" in latin["bleu_signature"]
    assert zh["bleu"] == pytest.approx(23.4, abs=0.05)
    assert latin["bleu"] == pytest.approx(0.0)


def test_ja_mecab_tokenizer_is_really_used():
    # sacreBLEU 2.6's CLI: `-tok ja-mecab -w 4` -> 44.9733, `-tok 13a` -> 0.0000.
    hyp, ref = ["私は今日東京で先生に会いました。"], ["私は昨日東京で友達に会いました。"]
    ja = corpus_translation_scores(hyp, ref, "ja")
    latin = corpus_translation_scores(hyp, ref, "en")
    assert ja["bleu_tokenizer"] == "ja-mecab" and "tok:ja-mecab-" in ja["bleu_signature"]
    assert ja["bleu"] == pytest.approx(44.9733, abs=1e-3)
    assert latin["bleu"] == pytest.approx(0.0)


def test_chrf_known_value():
    # `echo "The cat sat on the mat." | sacrebleu ref.txt -m chrf -b -w 4` (ref: "The cat is on the mat.")
    # with sacreBLEU 2.6 gives 67.1727 (chrF2: character 6-grams, beta 2, whitespace ignored).
    scores = corpus_translation_scores(["The cat sat on the mat."], ["The cat is on the mat."], "en")
    assert scores["chrf"] == pytest.approx(67.1727, abs=1e-3)
    sentence = sentence_translation_scores("The cat sat on the mat.", "The cat is on the mat.", "en")
    assert sentence["chrf"] == pytest.approx(67.1727, abs=1e-3)


def test_sentence_bleu_uses_the_target_tokenizer():
    assert sentence_translation_scores(ZH[2], ZH[2], "zh_TW")["bleu"] == pytest.approx(100.0)
    # one-character difference: the zh tokenizer still sees matching characters, 13a sees one wrong token
    zh = sentence_translation_scores("車站在哪？", "車站在哪裡？", "zh_TW")["bleu"]
    assert 0 < zh < 100
    assert sentence_translation_scores("車站在哪？", "車站在哪裡？", "en")["bleu"] < zh


def test_pooled_overall_over_directions_with_different_tokenizers():
    groups = {("en", "zh_TW"): (ZH, ZH), ("en", "ja"): (JA, JA), ("ja", "en"): (EN, EN)}
    overall = pooled_translation_scores(groups)
    assert overall["bleu"] == pytest.approx(100.0) and overall["n"] == 9
    assert overall["bleu_tokenizer"] == "13a+ja-mecab+zh"
    assert "tok:13a+ja-mecab-" in overall["bleu_signature"] and "+zh(per-target)" in overall["bleu_signature"]
    # one wrong direction pulls the pooled score between the per-direction scores
    groups[("ja", "en")] = (["Hello.", "Thanks a lot.", "Is this a station?"], EN)
    mixed = pooled_translation_scores(groups)
    wrong = corpus_translation_scores(*groups[("ja", "en")], "en")
    assert wrong["bleu"] < mixed["bleu"] < 100


def test_missing_japanese_tokenizer_is_a_clear_error(monkeypatch):
    from sacrebleu.tokenizers import tokenizer_ja_mecab

    monkeypatch.setattr(tokenizer_ja_mecab, "MeCab", None)  # as when mecab-python3 is not installed
    with pytest.raises(QfkError) as err:
        corpus_translation_scores(JA, JA, "ja")
    assert "ja-mecab" in err.value.message and 'pip install "sacrebleu[ja]"' in err.value.hint


# -- QA: ROUGE-L and exact match ---------------------------------------------------------------
def test_rouge_tokens_and_cjk_rule():
    assert rouge_tokens("Hello, World!  It's 2025.") == ["hello", "world", "it", "s", "2025"]
    assert rouge_tokens("Python是一种语言。") == ["python", "是", "一", "种", "语", "言"]
    assert rouge_tokens("東京へ行きます") == list("東京へ行きます")
    # 2 CJK characters among 17 letters: below the 30% share, so a word tokenizer
    assert not is_cjk("I visited 北京 yesterday") and rouge_tokens("I visited 北京 yesterday") == ["i", "visited", "北京", "yesterday"]
    assert is_cjk("使用numpy函数") and not is_cjk("123 !!")


def test_lcs_and_rouge_l_by_hand():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # the textbook example: BCBA
    # pred 4 tokens, ref 6 tokens, LCS "the cat on mat" = 4: P = 4/4, R = 4/6, F1 = 2PR/(P+R) = 0.8
    assert rouge_l("The cat on mat", "the cat sat on the mat.") == pytest.approx(80.0)
    # characters: 我不喜欢苹果 vs 我喜欢吃苹果, LCS 我喜欢苹果 = 5 of 6 both ways: F1 = 5/6
    assert rouge_l("我不喜欢苹果", "我喜欢吃苹果") == pytest.approx(100 * 5 / 6)
    # 2 of 3 prediction tokens in a 2-token reference: P = 2/3, R = 1, F1 = 0.8
    assert rouge_l("Paris France Europe", "Paris, France") == pytest.approx(80.0)
    assert rouge_l("", "Paris") == 0.0 and rouge_l("", "") == 100.0 and rouge_l("Lyon", "Paris") == 0.0


def test_exact_match_normalises_whitespace_only():
    assert exact_match("  Paris \n", "Paris")
    assert exact_match("New \t York\n City", "New York City")
    assert not exact_match("paris", "Paris")
    assert not exact_match("Paris.", "Paris")


# -- think compliance --------------------------------------------------------------------------
PREDS = {
    "well_formed": "<think>\nThe capital is Paris.\n</think>\n\nParis",
    "empty_block": "<think>\n\n</think>\n\nParis",
    "no_block": "Paris",
    "think_unclosed": "<think>\nStill thinking about it",
    "think_nested": "<think>\nfirst <think> second </think>\n</think>\n\nParis",
    "think_double_open": "<think>\n\n<think>\nThe capital is Paris.\n</think>\n\nParis",
    "think_empty_answer": "<think>\nThe capital is Paris.\n</think>\n\n",
}
REASONED, DIRECT = "<think>\nFrance's capital.\n</think>\n\nParis", "Paris"


def test_each_prediction_lands_in_its_class():
    for expected, text in PREDS.items():
        assert split_prediction(text).think == expected, text
    assert split_prediction("   \n").think == "empty_prediction"
    assert split_prediction(PREDS["think_double_open"]).answer == "Paris"  # cut at the last </think>


def test_compliance_when_thinking_is_expected():
    report = think_compliance(PREDS.values(), enable_thinking=True)
    assert report.total == 7 and report.compliant == 1 and report.expected_reasoning == 7
    assert dict(report.counts) == {name: 1 for name in PREDS}
    assert report.examples[WELL_FORMED] == [0] and report.examples["think_unclosed"] == [3]
    assert report.non_compliant_examples == [1, 2, 3, 4, 5]  # capped at five examples
    assert report.share == pytest.approx(1 / 7) and report.shares["think_nested"] == pytest.approx(1 / 7)


def test_compliance_when_thinking_is_off():
    report = think_compliance(PREDS.values(), enable_thinking=False)
    assert report.compliant == 2 and report.expected_direct == 7 and report.expected_reasoning == 0
    assert report.examples[EMPTY_BLOCK] == [1] and report.examples[NO_BLOCK] == [2]
    assert report.non_compliant_examples == [0, 3, 4, 5, 6]


def test_compliance_when_mixed_follows_each_reference():
    refs = [REASONED, REASONED, DIRECT, REASONED, DIRECT, REASONED, DIRECT]
    report = think_compliance(PREDS.values(), refs, enable_thinking=None)
    # well-formed vs reasoned ref: yes; empty block vs reasoned ref: no; no block vs direct ref: yes
    assert report.compliant == 2 and report.expected_reasoning == 4 and report.expected_direct == 3
    assert report.non_compliant_examples == [1, 3, 4, 5, 6]
    # an explicit empty block in the reference is not reasoning
    assert think_compliance(["Paris"], ["<think>\n\n</think>\n\nParis"], enable_thinking=None).compliant == 1
    # no reference, no expectation: any well-formed shape complies, a malformed one never does
    unknown = think_compliance([PREDS["well_formed"], PREDS["no_block"], PREDS["think_unclosed"]], enable_thinking=None)
    assert unknown.compliant == 2 and unknown.expected_reasoning == unknown.expected_direct == 0


def test_non_canonical_blocks_are_counted_apart():
    report = think_compliance(["<think>reason</think>Paris", PREDS["well_formed"], "  Paris  "], enable_thinking=True)
    assert report.counts[WELL_FORMED] == 2 and report.non_canonical == 1
    assert report.as_dict()["counts"] == {WELL_FORMED: 2, NO_BLOCK: 1}


# -- score_rows ----------------------------------------------------------------------------------
def test_scores_use_the_answer_only():
    ref = "The capital of France is Paris."
    wrong = f"<think>\n{ref}\n</think>\n\nI do not know."
    right = f"<think>\nLet me recall.\n</think>\n\n{ref}"
    result = score_rows([{"prompt": "Capital of France?", "reference": ref, "prediction": wrong},
                         {"prompt": "Capital of France?", "reference": ref, "prediction": right}], enable_thinking=True)
    assert result.kind == "qa" and result.per_direction == {}
    low, high = result.rows
    assert rouge_l(wrong, ref) > 60  # the whole text would score well: the think block holds the reference
    assert low["rouge_l"] < 20 and not low["exact_match"] and low["answer"] == "I do not know."
    assert high["rouge_l"] == pytest.approx(100.0) and high["exact_match"]
    assert result.overall["exact_match"] == pytest.approx(50.0)
    assert result.overall["rouge_l"] == pytest.approx((low["rouge_l"] + 100.0) / 2)
    assert "cjk" in result.overall["rouge_l_tokenizer"]
    assert result.compliance.compliant == 2 and [r["think"] for r in result.rows] == [WELL_FORMED, WELL_FORMED]


def test_translation_scores_use_the_answer_only():
    rows = [{"prompt": "Translate <en> to <ja>.\nGood morning.", "reference": "<think>\n\n</think>\n\nおはようございます。",
             "prediction": "<think>\nおはようございます。\n</think>\n\nこんばんは。"}]
    result = score_rows(rows, enable_thinking=False)
    assert result.kind == "translation" and result.rows[0]["direction"] == "en-ja"
    assert result.rows[0]["answer"] == "こんばんは。" and result.rows[0]["reference"] == "おはようございます。"
    assert result.per_direction["en-ja"]["bleu"] < 20 and result.rows[0]["chrf"] < 20
    assert result.compliance.compliant == 0 and result.rows[0]["think_compliant"] is False


def moses_rows(tmp_path, **options) -> list[dict]:
    src = tmp_path / "corpus"
    src.mkdir()
    for suffix, lines in (("en", EN), ("zh_tw", ZH), ("ja", JA)):
        (src / f"corpus.{suffix}").write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return read_jsonl(convert("moses", str(src), output=str(tmp_path / "o.jsonl"), dedup=False, **options).output)


def _language(text: str) -> str:
    return next(lang for lang, texts in (("en", EN), ("zh_TW", ZH), ("ja", JA)) if text in texts)


def test_translation_direction_round_trips_the_moses_prompt(tmp_path):
    rows = moses_rows(tmp_path)
    assert len(rows) == 18
    seen = set()
    for row in rows:
        expected = (_language(row["input"]), _language(row["output"].split("</think>\n\n")[-1]))
        assert translation_direction(row) == expected
        assert translation_direction(row["instruction"]) == expected
        assert translation_direction({"prompt": chat_prompt(row)}) == expected
        seen.add(expected)
    assert seen == set(permutations(["en", "zh_TW", "ja"], 2))


def test_translation_direction_with_a_custom_template(tmp_path):
    template = "Please translate this {src_name} text into {tgt_name} ({src}->{tgt}):"
    rows = moses_rows(tmp_path, instruction_template=template, langs=["en", "ja"])
    assert {translation_direction(r, template) for r in rows} == {("en", "ja"), ("ja", "en")}
    assert translation_direction(rows[0]) is None  # not the default form


def test_translation_direction_given_or_absent():
    assert translation_direction({"direction": ["EN", "zh-tw"]}) == ("en", "zh_TW")
    assert translation_direction({"direction": "ja-en", "prompt": "Translate <en> to <ja>."}) == ("ja", "en")
    assert translation_direction({"prompt": "What is the capital of France?"}) is None
    assert translation_direction("Translate <xx> to <en>.") is None
    with pytest.raises(QfkError, match="cannot read the direction"):
        translation_direction({"direction": "en"})
    with pytest.raises(QfkError, match="bad instruction template"):
        translation_direction("Translate <en> to <ja>.", "Translate {source} to {tgt_tag}.")


def test_score_rows_translation_per_direction_and_overall(tmp_path):
    rows = [{"prompt": chat_prompt(r), "reference": r["output"], "prediction": r["output"]} for r in moses_rows(tmp_path)]
    rows[0]["prediction"] = "<think>\n\n</think>\n\nsomething else entirely"
    result = score_rows(rows, enable_thinking=None)
    assert result.kind == "translation" and result.n == 18 and len(result.per_direction) == 6
    assert result.per_direction["en-zh_TW"]["bleu_tokenizer"] == "zh"
    assert result.per_direction["zh_TW-ja"]["bleu_tokenizer"] == "ja-mecab"
    assert result.per_direction["ja-en"]["bleu_tokenizer"] == "13a"
    first = result.rows[0]["direction"]
    assert result.per_direction[first]["bleu"] < 100
    assert all(d["bleu"] == pytest.approx(100.0) for k, d in result.per_direction.items() if k != first)
    assert 0 < result.overall["bleu"] < 100 and result.overall["n"] == 18
    assert result.compliance.compliant == 18  # empty blocks, and the references hold no reasoning
    assert result.as_dict()["per_direction"][first]["n"] == 3


def test_kind_resolution(tmp_path):
    qa = {"prompt": "Capital of France?", "reference": "Paris", "prediction": "Paris"}
    mt = {"prompt": "Translate <en> to <ja>.\nThank you.", "reference": "ありがとう。", "prediction": "ありがとう。"}
    with pytest.raises(QfkError, match="1 of 2 rows are translation prompts"):
        score_rows([qa, mt], enable_thinking=False)
    with pytest.raises(QfkError, match="row 0 is not a translation prompt"):
        score_rows([qa, mt], kind="translation", enable_thinking=False)
    as_qa = score_rows([qa, mt], kind="qa", enable_thinking=False)
    assert as_qa.kind == "qa" and as_qa.overall["exact_match"] == pytest.approx(100.0)
    with pytest.raises(QfkError, match="unknown kind"):
        score_rows([qa], kind="bleu", enable_thinking=False)
    with pytest.raises(QfkError, match="no text 'prediction'"):
        score_rows([{"reference": "x"}], enable_thinking=False)
    with pytest.raises(QfkError, match="no predictions"):
        score_rows([], enable_thinking=False)
