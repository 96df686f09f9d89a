"""Qwen3 ``<think>`` blocks: the ONLY place that formats, parses, normalises and validates them.

Rules (see QWEN3-THINK.md in the project docs):

* a response with reasoning is written exactly as
  ``<think>\\n{reasoning.strip()}\\n</think>\\n\\n{answer.strip()}`` (:func:`format_response`);
* a response without reasoning is either the canonical empty form
  ``<think>\\n\\n</think>\\n\\n{answer}`` (``empty="explicit"``) or the bare answer
  (``empty="omit"``);
* :func:`parse_response` is the one parser: it returns the reasoning, the answer and, for
  malformed input, a problem code from :data:`PROBLEMS`;
* :func:`split_partial` splits a response still being generated (``qfk chat`` streams the
  reasoning apart from the answer);
* :class:`ThinkTally` records how a dataset's responses were written (think mode), which the
  recipe emitter and the linter use to choose ``template`` / ``enable_thinking``.

Everything here is pure string work with fast paths: a response without ``<think``/``</think>``
never touches a regular expression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
#: The block LLaMA-Factory's ``qwen3`` template adds to a response without reasoning.
EMPTY_BLOCK = "<think>\n\n</think>\n\n"

EMPTY_STYLES = ("explicit", "omit")

#: Problem codes returned by :func:`parse_response` (and used as reject reasons / lint rule ids).
PROBLEMS = {
    "think_unclosed": "a <think> block is opened but never closed",
    "think_close_without_open": "</think> appears without an opening <think>",
    "think_double_open": "'<think>\\n\\n<think>' (a second <think> where </think> was meant: a known tutorial bug)",
    "think_nested": "a <think> block is opened inside another one",
    "think_multiple_blocks": "more than one <think> block in one response",
    "think_not_at_start": "the <think> block does not start the response",
    "think_empty_answer": "nothing follows the </think> block (no answer)",
}

#: Qwen3 chat control tokens; inside a field they make the chat template apply twice.
_SPECIAL_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_TAG_RE = re.compile(r"</?think>")


def format_response(answer: str, reasoning: str | None = None, *, empty: str = "explicit") -> str:
    """Build a response in the kit's canonical form.

    >>> format_response("42", "6 x 7")
    '<think>\\n6 x 7\\n</think>\\n\\n42'
    >>> format_response("42")
    '<think>\\n\\n</think>\\n\\n42'
    >>> format_response("42", empty="omit")
    '42'
    """
    answer = answer.strip()
    if reasoning is not None:
        reasoning = reasoning.strip()
        if reasoning:
            return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"
    if empty == "explicit":
        return EMPTY_BLOCK + answer
    if empty == "omit":
        return answer
    raise ValueError(f"empty must be one of {EMPTY_STYLES}, not {empty!r}")


def has_think_tags(text: str) -> bool:
    """True when ``text`` contains ``<think>`` or ``</think>`` anywhere."""
    return "think>" in text and (THINK_OPEN in text or THINK_CLOSE in text)


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    """What :func:`parse_response` found in a response string."""

    answer: str
    reasoning: str | None = None  # None: no block; "" : an empty block
    has_block: bool = False
    canonical: bool = True  # text is exactly what format_response would write
    problem: str | None = None  # a key of PROBLEMS when the tags are malformed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def has_reasoning(self) -> bool:
        return bool(self.reasoning)


def _bad(text: str, code: str, where: int) -> ParsedResponse:
    snippet = text[max(0, where - 20): where + 30].replace("\n", "\\n")
    return ParsedResponse(answer=text, canonical=False, problem=code,
                          detail=f"{PROBLEMS[code]} (at character {where}: ...{snippet}...)")


def parse_response(text: str) -> ParsedResponse:
    """Split a response into reasoning and answer, and say whether its tags are well formed.

    A well-formed response has no tags, or exactly one ``<think>...</think>`` block at its start
    (leading whitespace tolerated). ``canonical`` tells whether the whitespace around the tags is
    exactly the kit's form (LLaMA-Factory only strips that exact form under
    ``enable_thinking: false``).
    """
    if not has_think_tags(text):
        return ParsedResponse(answer=text, canonical=(text == text.strip()))
    tags = [(m.start(), m.group()) for m in _TAG_RE.finditer(text)]
    depth = 0
    blocks = 0
    for pos, tag in tags:
        if tag == THINK_OPEN:
            if depth:
                prev_open = text.rfind(THINK_OPEN, 0, pos)
                between = text[prev_open + len(THINK_OPEN): pos]
                code = "think_double_open" if not between.strip() else "think_nested"
                return _bad(text, code, pos)
            depth = 1
        else:
            if not depth:
                return _bad(text, "think_close_without_open", pos)
            depth = 0
            blocks += 1
    if depth:
        return _bad(text, "think_unclosed", tags[-1][0])
    if blocks > 1:
        return _bad(text, "think_multiple_blocks", tags[2][0])
    start = tags[0][0]
    if text[:start].strip():
        return _bad(text, "think_not_at_start", start)
    end = tags[1][0]
    reasoning = text[start + len(THINK_OPEN): end].strip()
    answer = text[end + len(THINK_CLOSE):].strip()
    if not answer:
        return _bad(text, "think_empty_answer", end)
    canonical = text == format_response(answer, reasoning, empty="explicit")
    return ParsedResponse(answer=answer, reasoning=reasoning, has_block=True, canonical=canonical)


class ThinkTagError(ValueError):
    """A response whose think tags cannot be normalised; ``code`` is a key of :data:`PROBLEMS`."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def normalize_response(text: str, *, empty: str = "explicit") -> str:
    """Rewrite ``text`` into canonical form; raise :class:`ThinkTagError` when it is malformed.

    A bare answer gets the empty block (``empty="explicit"``) or stays bare (``"omit"``); an
    existing empty block follows the same policy. A blank text has no answer (``think_empty_answer``).
    """
    parsed = parse_response(text)
    if parsed.problem:
        raise ThinkTagError(parsed.problem, parsed.detail)
    if not parsed.answer.strip():
        raise ThinkTagError("think_empty_answer", f"{PROBLEMS['think_empty_answer']} (the text is blank)")
    return format_response(parsed.answer, parsed.reasoning, empty=empty)


def strip_think(text: str) -> tuple[str | None, str]:
    """Return ``(reasoning, answer)`` for scoring a prediction (``qfk eval``); malformed blocks
    are cut at the last ``</think>`` (or kept whole when there is none)."""
    parsed = parse_response(text)
    if parsed.ok:
        return parsed.reasoning, parsed.answer
    cut = text.rfind(THINK_CLOSE)
    if cut >= 0:
        return text[:cut].replace(THINK_OPEN, "").strip(), text[cut + len(THINK_CLOSE):].strip()
    return None, text.strip()


def split_partial(text: str, *, done: bool = False) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of a response still being generated, to show the two apart as it
    streams: reasoning is None when the text does not open with a think block; inside an open
    block it is the reasoning so far (a partly generated ``</think>`` held back) and the answer is
    empty. Leading newlines of both are dropped. Each part only grows as ``text`` grows (what was
    shown stays a prefix); a finished response is split by :func:`strip_think`, or, to stay a
    continuation of what was streamed, with ``done=True``: nothing held back (a reply cut off inside
    its think block is all reasoning; one that is only ``<thi`` is its answer).

    >>> split_partial("<think>\\nstep one\\n</th")
    ('step one\\n', '')
    >>> split_partial("<think>\\nstep one\\n</think>\\n\\nAnswer")
    ('step one\\n', 'Answer')
    >>> split_partial("<thi"), split_partial("Answer")
    ((None, ''), (None, 'Answer'))
    >>> split_partial("<think>\\nstep one\\n</th", done=True), split_partial("<thi", done=True)
    (('step one\\n</th', ''), (None, '<thi'))
    """
    head = text.lstrip()
    if not head.startswith(THINK_OPEN):
        return (None, "") if THINK_OPEN.startswith(head) and not done else (None, head)
    body = head[len(THINK_OPEN):]
    end = body.find(THINK_CLOSE)
    if end >= 0:
        return body[:end].lstrip("\n"), body[end + len(THINK_CLOSE):].lstrip("\n")
    for k in range(len(THINK_CLOSE) - 1, 0, -1):  # "...</thi": wait for the rest of the tag
        if not done and body.endswith(THINK_CLOSE[:k]):
            body = body[:-k]
            break
    return body.lstrip("\n"), ""


def find_special_tokens(text: str) -> list[str]:
    """Chat control tokens (``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>`` ...) in ``text``."""
    if "<|" not in text:
        return []
    return sorted(set(_SPECIAL_RE.findall(text)))


@dataclass
class ThinkTally:
    """Counts how responses were written, to record a dataset's think mode.

    ``mode``: ``reasoning`` (every response has non-empty reasoning), ``direct`` (none has),
    ``mixed`` or ``none`` (no response seen). ``empty_style``: how responses without reasoning
    were written: ``explicit`` (empty block), ``omit`` (no block), ``mixed`` or ``none``.
    """

    reasoning: int = 0
    empty_block: int = 0
    no_block: int = 0

    def add_text(self, text: str) -> None:
        """Count a response that is already in canonical form."""
        if text.startswith(EMPTY_BLOCK):
            self.empty_block += 1
        elif text.startswith(THINK_OPEN):
            self.reasoning += 1
        else:
            self.no_block += 1

    def add_parsed(self, parsed: ParsedResponse) -> None:
        """Count a response of any form, from :func:`parse_response`."""
        if parsed.has_reasoning:
            self.reasoning += 1
        elif parsed.has_block:
            self.empty_block += 1
        else:
            self.no_block += 1

    @property
    def total(self) -> int:
        return self.reasoning + self.empty_block + self.no_block

    @property
    def mode(self) -> str:
        direct = self.empty_block + self.no_block
        if not self.total:
            return "none"
        if not direct:
            return "reasoning"
        if not self.reasoning:
            return "direct"
        return "mixed"

    @property
    def empty_style(self) -> str:
        if self.empty_block and self.no_block:
            return "mixed"
        if self.empty_block:
            return "explicit"
        if self.no_block:
            return "omit"
        return "none"

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "empty_style": self.empty_style,
            "responses_with_reasoning": self.reasoning,
            "responses_with_empty_block": self.empty_block,
            "responses_without_block": self.no_block,
        }


def training_settings(mode: str, *, instruct_2507: bool = False) -> tuple[str, bool | None]:
    """``(template, enable_thinking)`` that trains what a dataset of think ``mode`` means
    (QWEN3-THINK.md): reasoning -> qwen3 + true; direct -> qwen3 + false (qwen3_nothink on
    Instruct-2507 models); mixed -> qwen3 + null."""
    if mode == "reasoning":
        return "qwen3", True
    if mode == "direct":
        return ("qwen3_nothink", None) if instruct_2507 else ("qwen3", False)
    return "qwen3", None
