"""Medical reasoning rows (ModelScope ``krisfu/delicate_medical_r1_data``) -> Alpaca with reasoning.

Source row: ``{instruction, question, think, answer, metrics: {quality_f1}}``; ``think`` is plain
text without tags. Output: ``{"instruction": question, "input": "", "output":
"<think>\\n{think}\\n</think>\\n\\n{answer}"}`` (the canonical form from :mod:`qwen_factory_kit.think`).

Every row of this dataset carries its reasoning, so a row without it is a schema defect and is
rejected like a row without an answer: ``think`` missing -> ``missing_field``, null ->
``null_field``, empty or blank (also an empty ``<think></think>`` block) -> ``empty_field``.
``allow_missing_think=True`` (``--allow-missing-think``) keeps such rows with an empty think block
instead (``--empty-think`` decides its form), counted in the note ``rows_without_reasoning``.
"""

from __future__ import annotations

import re

from ..errors import QfkError
from ..think import format_response, has_think_tags, parse_response
from .contract import Converter, Reject, check_text, get_field, text_field

INSTRUCTION_USES = ("ignore", "system", "user")
_ESCAPED_NL = re.compile(r"(?<!\\)\\n")


class MedicalR1(Converter):
    name = "medical-r1"
    summary = "question/think/answer reasoning rows (krisfu/delicate_medical_r1_data) -> Alpaca with <think>"
    dedup_on_lines = True

    def __init__(self, *, min_quality: float | None = None, fix_escaped_newlines: bool = False,
                 instruction_as: str = "ignore", allow_missing_think: bool = False, **kw):
        super().__init__(min_quality=min_quality, fix_escaped_newlines=fix_escaped_newlines,
                         instruction_as=instruction_as, allow_missing_think=allow_missing_think, **kw)
        if instruction_as not in INSTRUCTION_USES:
            raise QfkError(f"--instruction-as must be one of {', '.join(INSTRUCTION_USES)}, not {instruction_as!r}",
                           "ignore (leave the instruction column out), system (it becomes the system prompt) or user (it becomes the prompt, the question its input)")
        self.min_quality = min_quality
        self.fix = fix_escaped_newlines
        self.instruction_as = instruction_as
        self.allow_missing_think = allow_missing_think

    def columns(self) -> dict:
        cols = super().columns()
        if self.instruction_as == "system":
            cols["system"] = "system"
        return cols

    def note_option(self, note: str) -> str:
        if note.startswith("escaped_newlines_in_") and not self.fix:
            return "--fix-escaped-newlines turns them into line breaks"
        return ""

    def _unescape(self, text: str, key: str) -> str:
        if "\\n" in text and _ESCAPED_NL.search(text):
            self.notes[f"escaped_newlines_in_{key}"] += 1
            if self.fix:
                self.notes[f"escaped_newlines_fixed_in_{key}"] += 1
                return _ESCAPED_NL.sub("\n", text)
        return text

    def _think(self, row: dict) -> str:
        """The reasoning text: required unless --allow-missing-think."""
        try:
            think = text_field(row, "think", required=not self.allow_missing_think)
        except Reject as r:
            if r.reason in ("missing_field", "null_field", "empty_field"):
                raise Reject(r.reason, f"{r.detail}: every row of this dataset carries its reasoning "
                                       "(--allow-missing-think keeps such rows with an empty think block)") from None
            raise
        return check_text(self._unescape(think, "think"), "think", prompt=False)

    def _unwrap(self, think: str) -> str:
        """A think field that is itself one wrapped block, unwrapped; anything else with tags is malformed."""
        parsed = parse_response(think + "\n\n.")
        if not parsed.ok or parsed.answer != ".":
            raise Reject(parsed.problem or "think_not_plain", f"field 'think' has malformed tags: {parsed.detail}")
        if not parsed.reasoning and not self.allow_missing_think:
            raise Reject("empty_field", "field 'think' is an empty <think> block: every row of this dataset carries "
                                        "its reasoning (--allow-missing-think keeps such rows)")
        self.notes["think_field_was_tagged"] += 1
        return parsed.reasoning or ""

    def convert(self, row: dict) -> list[dict]:
        question = check_text(text_field(row, "question"), "question", prompt=True)
        answer = check_text(self._unescape(text_field(row, "answer"), "answer"), "answer", prompt=False)
        think = self._think(row)
        if has_think_tags(answer):
            raise Reject("reasoning_in_answer", "field 'answer' contains <think> tags; the reasoning belongs in 'think'")
        if has_think_tags(think):
            think = self._unwrap(think)
        if self.min_quality is not None:
            try:
                quality = get_field(row, "metrics.quality_f1")
            except Reject:
                raise Reject("missing_quality", "--min-quality needs metrics.quality_f1, which this row lacks") from None
            if not isinstance(quality, (int, float)) or isinstance(quality, bool):
                raise Reject("wrong_type", f"metrics.quality_f1 must be a number, got {type(quality).__name__}")
            if quality < self.min_quality:
                raise Reject("below_min_quality", f"quality_f1 {quality} < --min-quality {self.min_quality}")
        if not think:
            self.notes["rows_without_reasoning"] += 1
        out = {"instruction": question, "input": "", "output": format_response(answer, think, empty=self.empty)}
        if self.instruction_as != "ignore":
            instruction = check_text(text_field(row, "instruction"), "instruction", prompt=True)
            if self.instruction_as == "system":
                out["system"] = instruction
            else:
                out["instruction"], out["input"] = instruction, question
        return [out]
