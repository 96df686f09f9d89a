"""Preference pairs (ORPO/DPO/SimPO) -> Alpaca ranking rows ``{instruction, input, chosen, rejected}``,
registered with ``"ranking": true``."""

from __future__ import annotations

from .contract import Converter, Reject, check_text, text_field


class Preference(Converter):
    name = "preference"
    summary = "prompt + chosen + rejected columns -> Alpaca ranking data for ORPO/DPO"
    ranking = True
    response_fields = ("chosen", "rejected")

    def __init__(self, *, prompt: str = "prompt", chosen: str = "chosen", rejected: str = "rejected",
                 query: str | None = None, system: str | None = None, **kw):
        super().__init__(prompt=prompt, chosen=chosen, rejected=rejected, query=query, system=system, **kw)
        self.prompt, self.chosen, self.rejected_col, self.query, self.system = prompt, chosen, rejected, query, system

    def columns(self) -> dict:
        cols = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}
        if self.system:
            cols["system"] = "system"
        return cols

    def convert(self, row: dict) -> list[dict]:
        prompt = check_text(text_field(row, self.prompt), self.prompt, prompt=True)
        query = check_text(text_field(row, self.query, required=False), self.query, prompt=True) if self.query else ""
        chosen = self.response(_response_text(row, self.chosen), self.chosen)
        rejected = self.response(_response_text(row, self.rejected_col), self.rejected_col)
        if chosen == rejected:
            raise Reject("chosen_equals_rejected", "chosen and rejected are identical: the pair teaches nothing")
        out = {"instruction": prompt, "input": query, "chosen": chosen, "rejected": rejected}
        if self.system:
            out["system"] = check_text(text_field(row, self.system, required=False), self.system, prompt=True)
        return [out]


def _response_text(row: dict, key: str) -> str:
    """A response column: a string, or a chat-style list whose last assistant message is used."""
    value = row.get(key)
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        last = value[-1]
        value = last.get("content", last.get("value"))
        if not isinstance(value, str):
            raise Reject("wrong_type", f"'{key}' last message has no string content")
        row = {key: value}
    return text_field(row, key)
