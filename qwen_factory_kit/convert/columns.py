"""Generic column mapping -> Alpaca: name the prompt/response (and optional query, system, think,
history) columns of any table.

``script="traditional"`` (``--script traditional``): every text written must be in Traditional
Chinese; a text with Simplified-only characters is rejected as ``script_mismatch``
(:mod:`qwen_factory_kit.scripts`), or, with ``to_traditional``, converted with OpenCC ``s2twp``
(the rows counted in the note ``converted_to_traditional``).
"""

from __future__ import annotations

from ..errors import QfkError
from ..scripts import CONVERTED_TO_TRADITIONAL, SCRIPT_CHOICES, SCRIPT_MISMATCH, TRADITIONAL, checker, resolve
from ..think import format_response, has_think_tags
from .contract import Converter, Reject, check_text, get_field, text_field


class Columns(Converter):
    name = "columns"
    summary = "any table: map --prompt/--response (and --query/--system/--think/--history) columns -> Alpaca"

    def __init__(self, *, prompt: str, response: str, query: str | None = None, system: str | None = None,
                 think: str | None = None, history: str | None = None, script: str | None = None,
                 to_traditional: bool = False, **kw):
        script = TRADITIONAL if to_traditional and script is None else script
        if script is not None and script not in SCRIPT_CHOICES:
            raise QfkError(f"--script must be one of {', '.join(SCRIPT_CHOICES)}, not '{script}'",
                           "--script traditional rejects texts with Simplified Chinese characters")
        checks = {"script": script, **({"to_traditional": True} if to_traditional else {})} if script else {}
        super().__init__(prompt=prompt, response=response, query=query, system=system, think=think, history=history, **checks, **kw)
        self.prompt, self.response_col, self.query, self.system, self.think, self.history = prompt, response, query, system, think, history
        self.script, self.to_traditional = script, to_traditional

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
        return [self._in_script(out) if self.script else out]

    def note_option(self, note: str) -> str:
        if note == CONVERTED_TO_TRADITIONAL:
            return f"rows with Simplified text converted by --to-traditional; without it they are rejected as {SCRIPT_MISMATCH}"
        return ""

    def _in_script(self, out: dict) -> dict:
        """The row with its texts in --script's script: a text out of it is rejected, or, with
        --to-traditional, converted (:func:`~qwen_factory_kit.scripts.resolve`)."""
        response = f"{self.response_col}' / '{self.think}" if self.think else self.response_col
        places = [(out, key, col) for key, col in (("instruction", self.prompt), ("input", self.query), ("output", response),
                                                  ("system", self.system)) if out.get(key)]
        places += [(pair, j, f"{self.history}[{i}][{j}]") for i, pair in enumerate(out.get("history", ())) for j in (0, 1)]
        converted = False
        for holder, key, col in places:
            text, found, done = resolve(holder[key], checker(script=self.script, where=f"field '{col}'"), convert=self.to_traditional)
            if found is not None:
                raise Reject(found.code, found.detail)
            holder[key], converted = text, converted or done
        if converted:
            self.notes[CONVERTED_TO_TRADITIONAL] += 1
        return out

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
