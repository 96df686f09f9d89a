"""Medical reasoning rows (ModelScope ``krisfu/delicate_medical_r1_data``) -> Alpaca with reasoning.

Source row: ``{instruction, question, think, answer, metrics: {quality_f1}}``; ``think`` is plain
text without tags. Output: ``{"instruction": question, "input": "", "output":
"<think>\\n{think}\\n</think>\\n\\n{answer}"}`` (the canonical form from :mod:`qwen_factory_kit.think`).
"""

from __future__ import annotations

import re

from ..errors import QfkError
from ..think import format_response, has_think_tags, parse_response
from .core import Converter, Reject, check_text, get_field, text_field

INSTRUCTION_USES = ("ignore", "system", "user")
_ESCAPED_NL = re.compile(r"(?<!\\)\\n")


class MedicalR1(Converter):
    name = "medical-r1"
    summary = "question/think/answer reasoning rows (krisfu/delicate_medical_r1_data) -> Alpaca with <think>"

    def __init__(self, *, min_quality: float | None = None, fix_escaped_newlines: bool = False,
                 instruction_as: str = "ignore", **kw):
        super().__init__(min_quality=min_quality, fix_escaped_newlines=fix_escaped_newlines,
                         instruction_as=instruction_as, **kw)
        if instruction_as not in INSTRUCTION_USES:
            raise QfkError(f"--instruction-as must be one of {', '.join(INSTRUCTION_USES)}, not {instruction_as!r}",
                           "ignore (leave the instruction column out), system (it becomes the system prompt) or user (it becomes the prompt, the question its input)")
        self.min_quality = min_quality
        self.fix = fix_escaped_newlines
        self.instruction_as = instruction_as

    def columns(self) -> dict:
        cols = super().columns()
        if self.instruction_as == "system":
            cols["system"] = "system"
        return cols

    def _unescape(self, text: str, key: str) -> str:
        if "\\n" in text and _ESCAPED_NL.search(text):
            self.notes[f"escaped_newlines_in_{key}"] += 1
            if self.fix:
                self.notes[f"escaped_newlines_fixed_in_{key}"] += 1
                return _ESCAPED_NL.sub("\n", text)
        return text

    def convert(self, row: dict) -> list[dict]:
        question = check_text(text_field(row, "question"), "question", prompt=True)
        answer = check_text(self._unescape(text_field(row, "answer"), "answer"), "answer", prompt=False)
        think = check_text(self._unescape(text_field(row, "think", required=False), "think"), "think", prompt=False)
        if has_think_tags(answer):
            raise Reject("reasoning_in_answer", "field 'answer' contains <think> tags; the reasoning belongs in 'think'")
        if has_think_tags(think):
            # tolerate a think field that is itself one wrapped block; anything else is malformed
            parsed = parse_response(think + "\n\n.")
            if not parsed.ok or parsed.answer != ".":
                raise Reject(parsed.problem or "think_not_plain", f"field 'think' has malformed tags: {parsed.detail}")
            think = parsed.reasoning or ""
            self.notes["think_field_was_tagged"] += 1
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
