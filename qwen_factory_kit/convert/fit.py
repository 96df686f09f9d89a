"""Which converter fits a source's rows, told by the fields they have.

When every row of a run is rejected for a missing field, the rows were most likely given to the
wrong converter: FineTome's ``conversations`` rows to ``medical-r1``, say. :func:`fitting_converter`
names the converter (and the options) whose fields the rows have, so the error can say the exact
command to type (:meth:`Fit.command`). One rule, used by the core's all-rejected error.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import orjson

#: where ``sharegpt`` finds a conversation (without ``--conversations-key``), in this order
MESSAGE_KEYS = ("conversations", "messages")
#: the fields ``medical-r1`` reads (``think`` may go missing with ``--allow-missing-think``)
MEDICAL_KEYS = ("question", "think", "answer")
#: the fields of a preference pair, and the prompt column ``preference`` reads by default
PREFERENCE_KEYS = ("chosen", "rejected")
PREFERENCE_PROMPT = "prompt"
#: usual names of the columns ``columns`` maps, most telling first
PROMPT_COLUMNS = ("instruction", "prompt", "question", "query", "input", "q")
RESPONSE_COLUMNS = ("output", "response", "answer", "completion", "a")
THINK_COLUMNS = ("think", "reasoning", "thinking", "reasoning_content")
SYSTEM_COLUMNS = ("system", "system_prompt")
#: what a column the rows do not show is called in a suggested command
PLACEHOLDER = "COLUMN"


@dataclass(frozen=True)
class Fit:
    """A converter and the options that read rows with the fields seen."""

    converter: str
    options: tuple[str, ...] = ()

    def command(self, source: str) -> str:
        """The command to type: ``qfk convert CONVERTER SOURCE OPTIONS``."""
        return " ".join(("qfk", "convert", self.converter, shlex.quote(str(source)), *self.options))


def fitting_converter(fields: Iterable[str]) -> Fit | None:
    """The converter whose fields rows with ``fields`` (their top-level keys) have: ``chosen`` and
    ``rejected`` -> ``preference``; ``conversations`` or ``messages`` -> ``sharegpt``; ``question``
    and ``answer`` -> ``medical-r1``; otherwise ``columns`` with the columns named from the fields
    seen (:data:`PLACEHOLDER` for one they do not show). None when there are no fields."""
    seen = [str(f) for f in fields]
    if not seen:
        return None
    have = set(seen)
    if set(PREFERENCE_KEYS) <= have:
        prompt = PREFERENCE_PROMPT if PREFERENCE_PROMPT in have else _first(PROMPT_COLUMNS, have)
        return Fit("preference", () if prompt == PREFERENCE_PROMPT else ("--prompt", prompt))
    if have & set(MESSAGE_KEYS):
        return Fit("sharegpt")
    question, think, answer = MEDICAL_KEYS
    if {question, answer} <= have:
        return Fit("medical-r1", () if think in have else ("--allow-missing-think",))
    prompt = _first(PROMPT_COLUMNS, have)
    options = ["--prompt", prompt, "--response", _first(RESPONSE_COLUMNS, have - {prompt})]
    if prompt == "instruction" and "input" in have:
        options += ["--query", "input"]
    for option, names in (("--think", THINK_COLUMNS), ("--system", SYSTEM_COLUMNS)):
        name = _first(names, have)
        if name != PLACEHOLDER:
            options += [option, name]
    return Fit("columns", tuple(options))


def _first(names: tuple[str, ...], have: set[str]) -> str:
    return next((n for n in names if n in have), PLACEHOLDER)


def rejected_fields(rejects: Path, reason: str = "missing_field", rows: int = 200) -> list[str]:
    """The top-level fields of the first ``rows`` records a rejects file holds with ``reason``, in
    the order they are first seen."""
    fields: dict[str, None] = {}
    try:
        with open(rejects, "rb") as fh:
            for n, line in enumerate(fh):
                if n >= rows:
                    break
                try:
                    item = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                record = item.get("record") if isinstance(item, dict) and item.get("reason") == reason else None
                if isinstance(record, dict):
                    fields.update(dict.fromkeys(map(str, record)))
    except OSError:
        return []
    return list(fields)
