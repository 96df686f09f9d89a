"""Scoring predictions against references: translation, QA/chat and think-format compliance.

* Translation: corpus BLEU and chrF with sacreBLEU, per direction and overall. BLEU's tokenizer
  follows the target language (:func:`bleu_tokenizer`): ``zh`` for Chinese, ``ja-mecab`` for
  Japanese, ``13a`` otherwise; every metric records its sacreBLEU signature. Per row: sentence
  BLEU (effective order) and sentence chrF with the same settings.
* QA/chat: ROUGE-L F1 (LCS on tokens, :func:`rouge_tokens`) and exact match after whitespace
  normalisation.
* Think compliance: every prediction is classified with :func:`qwen_factory_kit.think.parse_response`
  (the kit's one parser) against what ``enable_thinking`` expects (QWEN3-THINK.md, rule 4).

Scores are computed on the ANSWER part only (the think block split off with
:func:`qwen_factory_kit.think.strip_think`) and are on a 0-100 scale, like sacreBLEU's.
:func:`score_rows` is the entry point; everything else is a pure function on strings.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from ..convert.moses import DEFAULT_INSTRUCTION, instruction_direction
from ..errors import QfkError
from ..langs import normalize_code
from ..think import PROBLEMS, parse_response, strip_think

KINDS = ("auto", "translation", "qa")
INSTALL_HINT = 'pip install "sacrebleu[ja]"  (sacreBLEU with mecab-python3 and ipadic, for Japanese BLEU)'
#: how many row indices each compliance class keeps as examples
EXAMPLES_PER_CLASS = 5


# -- translation -------------------------------------------------------------------------------
def bleu_tokenizer(lang: str | None) -> str:
    """sacreBLEU tokenizer for a target language: ``zh`` (zh, zh_TW, zh_CN ...), ``ja-mecab``
    (ja), ``13a`` for anything else."""
    code = normalize_code(lang) if lang else None
    if code in ("zh_TW", "zh_CN"):
        return "zh"
    if code == "ja":
        return "ja-mecab"
    return "13a"


class SacreMetrics:
    """sacreBLEU metric objects of one scoring run, each built once (MeCab loads a dictionary)."""

    def __init__(self) -> None:
        self._metrics: dict[tuple[str, bool], Any] = {}
        self._chrf: Any = None

    def bleu(self, tokenizer: str, *, sentence: bool = False):
        key = (tokenizer, sentence)
        if key not in self._metrics:
            self._metrics[key] = _load_bleu(tokenizer, sentence)
        return self._metrics[key]

    def chrf(self):
        if self._chrf is None:
            from sacrebleu.metrics import CHRF

            self._chrf = CHRF()
        return self._chrf


def _load_bleu(tokenizer: str, sentence: bool):
    try:
        from sacrebleu.metrics import BLEU

        return BLEU(tokenize=tokenizer, effective_order=sentence)
    except (ImportError, RuntimeError, AssertionError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QfkError(f"sacreBLEU's '{tokenizer}' tokenizer cannot load ({reason})", INSTALL_HINT) from None


def corpus_translation_scores(hyps: Sequence[str], refs: Sequence[str], tgt_lang: str | None, *,
                              sacre: SacreMetrics | None = None) -> dict:
    """Corpus BLEU and chrF of one direction, with the target language's BLEU tokenizer."""
    sacre = sacre or SacreMetrics()
    tokenizer = bleu_tokenizer(tgt_lang)
    bleu, chrf = sacre.bleu(tokenizer), sacre.chrf()
    bleu_score = bleu.corpus_score(list(hyps), [list(refs)])
    chrf_score = chrf.corpus_score(list(hyps), [list(refs)])
    return {"n": len(hyps), "bleu": bleu_score.score, "chrf": chrf_score.score, "bleu_tokenizer": tokenizer,
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def pooled_translation_scores(groups: dict[tuple[str, str], tuple[list[str], list[str]]], *,
                              sacre: SacreMetrics | None = None) -> dict:
    """Overall BLEU and chrF over several directions ``{(src, tgt): (hyps, refs)}``.

    chrF needs no tokenizer. BLEU pools n-gram statistics: with one tokenizer it is plain corpus
    BLEU; with several, each side is tokenized with its direction's tokenizer and scored with
    ``tokenize="none"`` (the signature names the tokenizers used)."""
    sacre = sacre or SacreMetrics()
    hyps = [h for hs, _ in groups.values() for h in hs]
    refs = [r for _, rs in groups.values() for r in rs]
    chrf = sacre.chrf()
    chrf_score = chrf.corpus_score(hyps, [refs])
    tokenizers = {d: bleu_tokenizer(d[1]) for d in groups}
    if len(set(tokenizers.values())) == 1:
        bleu = sacre.bleu(next(iter(tokenizers.values())))
        bleu_score, signature = bleu.corpus_score(hyps, [refs]), None
    else:
        tokenized_h, tokenized_r = [], []
        for d, (hs, rs) in groups.items():
            tok = sacre.bleu(tokenizers[d]).tokenizer
            tokenized_h += [tok(h.rstrip()) for h in hs]
            tokenized_r += [tok(r.rstrip()) for r in rs]
        bleu = sacre.bleu("none")
        bleu_score = bleu.corpus_score(tokenized_h, [tokenized_r])
        names = sorted({sacre.bleu(t).tokenizer_signature for t in tokenizers.values()})
        signature = str(bleu.get_signature()).replace("tok:none", f"tok:{'+'.join(names)}(per-target)")
    return {"n": len(hyps), "bleu": bleu_score.score, "chrf": chrf_score.score,
            "bleu_tokenizer": "+".join(sorted(set(tokenizers.values()))),
            "bleu_signature": signature or str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def sentence_translation_scores(hyp: str, ref: str, tgt_lang: str | None, *, sacre: SacreMetrics | None = None) -> dict:
    """Sentence BLEU (effective order, the target's tokenizer) and sentence chrF of one row."""
    sacre = sacre or SacreMetrics()
    bleu = sacre.bleu(bleu_tokenizer(tgt_lang), sentence=True)
    return {"bleu": bleu.sentence_score(hyp, [ref]).score, "chrf": sacre.chrf().sentence_score(hyp, [ref]).score}


# -- QA / chat ---------------------------------------------------------------------------------
#: kana, CJK ideographs (with extensions and compatibility forms) and half-width katakana
_CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_CJK_SPLIT = re.compile(f"[{_CJK}]|[^{_CJK}]+")
_WORD = re.compile(r"\w+")
#: a text counts as Chinese/Japanese when at least this share of its letters are CJK characters
CJK_SHARE = 0.3
ROUGE_L_TOKENIZER = (f"cjk-chars/words: when >= {CJK_SHARE:.0%} of the reference's letters are CJK, one token per "
                     "CJK character (other letter/digit runs one token each); otherwise lowercased \\w+ words; "
                     "punctuation dropped")


def is_cjk(text: str) -> bool:
    """True when at least :data:`CJK_SHARE` of the letters of ``text`` are Chinese/Japanese characters."""
    letters = [ch for ch in text if ch.isalpha()]
    return bool(letters) and sum(1 for ch in letters if _CJK_CHAR.match(ch)) / len(letters) >= CJK_SHARE


def rouge_tokens(text: str, *, cjk: bool | None = None) -> list[str]:
    """ROUGE tokens: lowercased ``\\w+`` runs, each CJK character split off on its own when the
    text is Chinese/Japanese (``cjk``; detected with :func:`is_cjk` when None)."""
    words = _WORD.findall(text.lower())
    if not (is_cjk(text) if cjk is None else cjk):
        return words
    return [piece for word in words for piece in _CJK_SPLIT.findall(word)]


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row of memory)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (0-100) of two texts, tokenized alike (CJK or not decided on the reference)."""
    cjk = is_cjk(reference) if any(ch.isalpha() for ch in reference) else None
    pred, ref = rouge_tokens(prediction, cjk=cjk), rouge_tokens(reference, cjk=cjk)
    if not pred or not ref:
        return 100.0 if pred == ref else 0.0
    lcs = lcs_length(pred, ref)
    if not lcs:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 100.0 * 2 * precision * recall / (precision + recall)


def normalize_answer(text: str) -> str:
    """Text for exact match: stripped, every whitespace run collapsed to one space."""
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


# -- think compliance --------------------------------------------------------------------------
WELL_FORMED, EMPTY_BLOCK, NO_BLOCK, EMPTY_PREDICTION = "well_formed", "empty_block", "no_block", "empty_prediction"
#: every class a prediction can fall in: the three well-formed shapes, a blank prediction, and
#: think.py's problem codes (think_unclosed, think_nested, think_double_open, think_empty_answer ...)
THINK_CLASSES = (WELL_FORMED, EMPTY_BLOCK, NO_BLOCK, EMPTY_PREDICTION, *PROBLEMS)


@dataclass(frozen=True)
class SplitPrediction:
    """A prediction cut into its think class, reasoning and answer (the part that is scored)."""

    think: str  # one of THINK_CLASSES
    answer: str
    reasoning: str | None
    canonical: bool  # a block written exactly as the kit's canonical form


def split_prediction(text: str) -> SplitPrediction:
    """Classify ``text`` with :func:`~qwen_factory_kit.think.parse_response` and split off its answer
    (malformed blocks are cut as :func:`~qwen_factory_kit.think.strip_think` does)."""
    parsed = parse_response(text)
    if parsed.problem:
        reasoning, answer = strip_think(text)
        return SplitPrediction(parsed.problem, answer, reasoning, False)
    if not parsed.answer.strip():
        return SplitPrediction(EMPTY_PREDICTION, "", None, True)
    think = WELL_FORMED if parsed.has_reasoning else (EMPTY_BLOCK if parsed.has_block else NO_BLOCK)
    return SplitPrediction(think, parsed.answer.strip(), parsed.reasoning, parsed.canonical or not parsed.has_block)


def expects_reasoning(enable_thinking: bool | None, reference: str | None) -> bool | None:
    """What a prediction should look like: True (a non-empty block), False (an empty or no block),
    None (unknown: ``enable_thinking`` null and no reference). With ``enable_thinking`` null
    (mixed data) a reference with reasoning expects reasoning."""
    if enable_thinking is not None:
        return bool(enable_thinking)
    if reference is None:
        return None
    return bool(strip_think(reference)[0])


def is_compliant(think: str, expected: bool | None) -> bool:
    """A well-formed block when reasoning is expected; an empty or no block when it is not; any
    well-formed shape when the expectation is unknown. Malformed or blank predictions never comply."""
    if think not in (WELL_FORMED, EMPTY_BLOCK, NO_BLOCK):
        return False
    if expected is None:
        return True
    return (think == WELL_FORMED) == expected


@dataclass
class ThinkCompliance:
    """Counts of predictions per think class, against what was expected of each."""

    enable_thinking: bool | None
    total: int = 0
    compliant: int = 0
    expected_reasoning: int = 0  # rows where a non-empty block was expected
    expected_direct: int = 0  # rows where an empty or no block was expected
    non_canonical: int = 0  # well-formed blocks whose whitespace is not the kit's canonical form
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)  # class -> first row indices
    non_compliant_examples: list[int] = field(default_factory=list)

    def add(self, index: int, split: SplitPrediction, expected: bool | None) -> bool:
        ok = is_compliant(split.think, expected)
        self.total += 1
        self.compliant += ok
        self.expected_reasoning += expected is True
        self.expected_direct += expected is False
        self.non_canonical += not split.canonical and split.think in (WELL_FORMED, EMPTY_BLOCK)
        self.counts[split.think] += 1
        _keep(self.examples.setdefault(split.think, []), index)
        if not ok:
            _keep(self.non_compliant_examples, index)
        return ok

    @property
    def share(self) -> float:
        """Share of compliant predictions (0-1; 0 when there are none)."""
        return self.compliant / self.total if self.total else 0.0

    @property
    def shares(self) -> dict[str, float]:
        return {k: v / self.total for k, v in self.counts.items()} if self.total else {}

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(counts=dict(self.counts), share=self.share, shares=self.shares)
        return out


def _keep(indices: list[int], index: int) -> None:
    if len(indices) < EXAMPLES_PER_CLASS:
        indices.append(index)


def think_compliance(predictions: Iterable[str], references: Iterable[str | None] | None = None, *,
                     enable_thinking: bool | None) -> ThinkCompliance:
    """Think-format compliance of predictions (references only matter when ``enable_thinking`` is None)."""
    preds = list(predictions)
    refs = list(references) if references is not None else [None] * len(preds)
    report = ThinkCompliance(enable_thinking)
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        report.add(i, split_prediction(pred), expects_reasoning(enable_thinking, ref))
    return report


# -- rows --------------------------------------------------------------------------------------
def translation_direction(prompt_or_row: Any, template: str = DEFAULT_INSTRUCTION) -> tuple[str, str] | None:
    """``(src, tgt)`` of a translation row, or None when it is not one.

    Takes a row's ``direction`` (``("en", "ja")`` or ``"en-ja"``) when given, else parses the
    Moses converter's instruction (:func:`~qwen_factory_kit.convert.moses.instruction_direction`)
    out of the row's ``instruction`` or ``prompt`` (LLaMA-Factory's rendered prompt), or out of
    a plain string."""
    if isinstance(prompt_or_row, str):
        return _parse_instruction(prompt_or_row, template)
    if not isinstance(prompt_or_row, dict):
        return None
    if prompt_or_row.get("direction") is not None:
        return _given_direction(prompt_or_row["direction"])
    for key in ("instruction", "prompt"):
        if isinstance(prompt_or_row.get(key), str):
            found = _parse_instruction(prompt_or_row[key], template)
            if found:
                return found
    return None


def _parse_instruction(text: str, template: str) -> tuple[str, str] | None:
    try:
        template.format(src_tag="", tgt_tag="", src="", tgt="", src_name="", tgt_name="")  # the fields Moses accepts
        return instruction_direction(text, template)
    except (KeyError, IndexError, ValueError) as exc:
        raise QfkError(f"bad instruction template {template!r} ({exc})",
                       "use the fields {src_tag} {tgt_tag} {src} {tgt} {src_name} {tgt_name}, as in qfk convert moses") from None


def _given_direction(value: Any) -> tuple[str, str]:
    """A row's own direction: ``("en", "ja")``, ``["en", "ja"]`` or ``"en-ja"`` (codes normalised)."""
    parts = value.split("-") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []
    if len(parts) != 2 or not all(isinstance(p, str) and p.strip() for p in parts):
        raise QfkError(f"cannot read the direction {value!r}", "give it as [SRC, TGT] or 'SRC-TGT', for example 'en-zh_TW'")
    src, tgt = (normalize_code(p) or p.strip() for p in parts)
    return src, tgt


@dataclass
class EvalResult:
    """What :func:`score_rows` found: metrics overall and per direction, per-row scores, compliance."""

    kind: str  # translation | qa
    n: int
    overall: dict
    per_direction: dict[str, dict]  # "en-zh_TW" -> corpus metrics (translation only)
    rows: list[dict]  # per row: index, think class, compliance, answer, reference, scores
    compliance: ThinkCompliance

    def as_dict(self) -> dict:
        return {"kind": self.kind, "n": self.n, "overall": self.overall, "per_direction": self.per_direction,
                "compliance": self.compliance.as_dict(), "rows": self.rows}


def score_rows(rows: Iterable[dict], *, kind: str = "auto", enable_thinking: bool | None,
               instruction_template: str = DEFAULT_INSTRUCTION) -> EvalResult:
    """Score rows ``{prompt, reference, prediction, direction?}``: split think blocks off, pick the
    kind (``auto``: translation when every row is a Moses translation prompt, QA when none is),
    score the answers, and report think compliance."""
    rows = list(rows)
    if not rows:
        raise QfkError("there are no predictions to score", "check the predictions file")
    preds = [_text(row, "prediction", i) for i, row in enumerate(rows)]
    refs = [_text(row, "reference", i) for i, row in enumerate(rows)]
    directions = [translation_direction(row, instruction_template) for row in rows]
    kind = resolve_kind(kind, directions)
    splits = [split_prediction(p) for p in preds]
    ref_answers = [strip_think(r)[1] for r in refs]
    compliance = ThinkCompliance(enable_thinking)
    per_row = []
    for i, (split, ref) in enumerate(zip(splits, refs)):
        ok = compliance.add(i, split, expects_reasoning(enable_thinking, ref))
        per_row.append({"index": i, "think": split.think, "think_compliant": ok,
                        "answer": split.answer, "reference": ref_answers[i]})
    answers = [s.answer for s in splits]
    if kind == "translation":
        overall, per_direction = _score_translation(answers, ref_answers, directions, per_row)
    else:
        overall, per_direction = _score_qa(answers, ref_answers, per_row), {}
    return EvalResult(kind, len(rows), overall, per_direction, per_row, compliance)


def _text(row: dict, key: str, index: int) -> str:
    value = row.get(key) if isinstance(row, dict) else None
    if not isinstance(value, str):
        raise QfkError(f"row {index} has no text '{key}' (got {type(value).__name__})",
                       "every row needs a 'prediction' and a 'reference' string")
    return value


def resolve_kind(kind: str, directions: Sequence[tuple[str, str] | None]) -> str:
    """``translation`` or ``qa`` for ``kind`` given the rows' translation directions."""
    if kind not in KINDS:
        raise QfkError(f"unknown kind '{kind}'", f"choose one of {', '.join(KINDS)}")
    found = sum(d is not None for d in directions)
    if kind == "qa":
        return kind
    if kind == "translation" and found < len(directions):
        first = next(i for i, d in enumerate(directions) if d is None)
        raise QfkError(f"row {first} is not a translation prompt ({len(directions) - found} of {len(directions)} rows "
                       "have no 'Translate <src> to <tgt>.' instruction and no direction)",
                       "give those rows a direction (SRC-TGT), or score them as QA")
    if kind == "auto" and 0 < found < len(directions):
        raise QfkError(f"{found} of {len(directions)} rows are translation prompts and the others are not",
                       "score the two kinds separately, or choose the kind (translation or qa) explicitly")
    return "translation" if found else "qa"


def _score_translation(answers: list[str], refs: list[str], directions: list, per_row: list[dict]) -> tuple[dict, dict]:
    sacre = SacreMetrics()
    groups: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for answer, ref, direction, row in zip(answers, refs, directions, per_row):
        hs, rs = groups.setdefault(direction, ([], []))
        hs.append(answer)
        rs.append(ref)
        row["direction"] = f"{direction[0]}-{direction[1]}"
        row.update(sentence_translation_scores(answer, ref, direction[1], sacre=sacre))
    per_direction = {f"{s}-{t}": corpus_translation_scores(hs, rs, t, sacre=sacre)
                     for (s, t), (hs, rs) in sorted(groups.items())}
    return pooled_translation_scores(groups, sacre=sacre), per_direction


def _score_qa(answers: list[str], refs: list[str], per_row: list[dict]) -> dict:
    for answer, ref, row in zip(answers, refs, per_row):
        row.update(rouge_l=rouge_l(answer, ref), exact_match=exact_match(answer, ref))
    n = len(per_row)
    return {"n": n, "rouge_l": sum(r["rouge_l"] for r in per_row) / n,
            "exact_match": 100.0 * sum(r["exact_match"] for r in per_row) / n,
            "rouge_l_tokenizer": ROUGE_L_TOKENIZER, "exact_match_normalisation": "strip, collapse whitespace"}
