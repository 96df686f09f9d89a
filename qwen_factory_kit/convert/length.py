"""``--max-tokens``: rows too long for training are removed explicitly, never cut.

A converted row is encoded exactly as LLaMA-Factory will encode it (:class:`~qwen_factory_kit.tokens.Encoder`:
the dataset_info entry the output is registered with, the template, ``enable_thinking``, the Qwen3
tokenizer). A source row whose longest output row has more than ``max_tokens`` tokens is rejected
as ``too_long`` (all its output rows together: a Moses line keeps its directions together), and a
row LLaMA-Factory would drop as invalid as ``dropped_by_llamafactory``. A row that fits is never
cut by ``cutoff_len: max_tokens``.

Constructing a :class:`TokenLimit` imports LLaMA-Factory and loads the tokenizer (seconds); the
core does it only when ``max_tokens`` is given.
"""

from __future__ import annotations

from typing import Any

from .. import tokens
from ..errors import QfkError


class TokenLimit:
    """Rejects rows whose LLaMA-Factory encoding is longer than ``max_tokens``."""

    def __init__(self, max_tokens: int, entry: dict, *, template: str = "qwen3", enable_thinking: bool | None = True,
                 tokenizer: Any = None):
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise QfkError(f"--max-tokens must be a whole number of tokens >= 1, not {max_tokens!r}", "for example --max-tokens 2048")
        if entry.get("ranking"):
            raise QfkError("--max-tokens measures SFT rows; this output is ranking (preference) data",
                           "leave --max-tokens out for preference data")
        self.max_tokens = max_tokens
        self.template = template
        self.enable_thinking = enable_thinking
        self.encoder = tokens.Encoder(entry, tokenizer=tokenizer, template=template, enable_thinking=enable_thinking,
                                      cutoff_len=max_tokens)

    def settings(self) -> dict:
        return {"max_tokens": self.max_tokens, "template": self.template, "enable_thinking": self.enable_thinking}

    def length(self, row: dict) -> int | None:
        """Tokens of ``row`` as LLaMA-Factory encodes it (None: it drops the row)."""
        encoded = self.encoder.encode(row, limit=False)
        return None if encoded is None else len(encoded[0])

    def check(self, outs: list[dict]) -> tuple[str, str] | None:
        """``(reason, detail)`` for a source row whose output rows do not all fit, else None
        (the core turns it into a reject)."""
        longest = 0
        for out in outs:
            n = self.length(out)
            if n is None:
                return ("dropped_by_llamafactory",
                        "LLaMA-Factory drops this row (invalid turn structure), so its length cannot be measured")
            longest = max(longest, n)
        if longest > self.max_tokens:
            return ("too_long", (f"{longest} tokens > --max-tokens {self.max_tokens} "
                                 f"(template {self.template}, enable_thinking {_scalar(self.enable_thinking)})"))
        return None


def _scalar(value: bool | None) -> str:
    return "null" if value is None else str(value).lower()
