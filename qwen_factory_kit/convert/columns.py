"""Generic column mapping -> Alpaca: name the prompt/response (and optional query, system, think,
history) columns of any table."""

from __future__ import annotations

from ..think import format_response, has_think_tags
from .core import Converter, Reject, check_text, get_field, text_field


class Columns(Converter):
    name = "columns"
    summary = "any table: map --prompt/--response (and --query/--system/--think/--history) columns -> Alpaca"

    def __init__(self, *, prompt: str, response: str, query: str | None = None, system: str | None = None,
                 think: str | None = None, history: str | None = None, **kw):
        super().__init__(prompt=prompt, response=response, query=query, system=system, think=think, history=history, **kw)
        self.prompt, self.response_col, self.query, self.system, self.think, self.history = prompt, response, query, system, think, history

    def columns(self) -> dict:
        cols = super().columns()
        if self.system:
            cols["system"] = "system"
        if self.history:
            cols["history"] = "history"
        return cols

    def convert(self, row: dict) -> list[dict]:
        prompt = check_text(text_field(row, self.prompt), self.prompt, prompt=True)
        query = check_text(text_field(row, self.query, required=False), self.query, prompt=True) if self.query else ""
        answer = text_field(row, self.response_col)
        if self.think:
            reasoning = check_text(text_field(row, self.think, required=False), self.think, prompt=False)
            check_text(answer, self.response_col, prompt=False)
            if has_think_tags(answer) or has_think_tags(reasoning):
                raise Reject("reasoning_in_answer", f"with --think, neither '{self.response_col}' nor '{self.think}' may carry <think> tags")
            output = format_response(answer, reasoning, empty=self.empty)
        else:
            output = self.response(answer, self.response_col)
        out = {"instruction": prompt, "input": query, "output": output}
        if self.system:
            out["system"] = check_text(text_field(row, self.system, required=False), self.system, prompt=True)
        if self.history:
            out["history"] = self._history(get_field(row, self.history))
        return [out]

    def _history(self, value) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise Reject("wrong_type", f"'{self.history}' must be a list of [user, assistant] pairs")
        pairs = []
        for i, pair in enumerate(value):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) and x.strip() for x in pair)):
                raise Reject("bad_history", f"'{self.history}' item {i} is not a [user, assistant] pair of non-empty strings")
            pairs.append([check_text(pair[0].strip(), f"{self.history}[{i}][0]", prompt=True),
                          self.response(pair[1], f"{self.history}[{i}][1]")])
        return pairs
