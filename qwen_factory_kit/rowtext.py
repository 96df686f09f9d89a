"""What a LLaMA-Factory row asks and answers: the one definition every comparison of rows uses.

* :class:`Layout` / :func:`layout_from`: which columns of a row hold prompts and responses (from a
  ``dataset_info.json`` entry, or guessed from a row's keys);
* :func:`qa_parts`: a row's prompt (every user-side text, in order: Alpaca history prompts, prompt
  and query; ShareGPT user turns) and answer without its think block (the response, ``chosen``
  for preference rows; ShareGPT: the last assistant answer), as written;
* :func:`qa_texts`: the same normalised (NFKC, whitespace collapsed): what the exact row key of the
  leak checks digests (:mod:`qwen_factory_kit.leaks`);
* :func:`near_text`: the text whose shingles near-duplicate checks compare (``qfk convert
  --near-dedup``, ``qfk lint``: :mod:`qwen_factory_kit.minhash`), prompt then answer; the n-gram
  cutter normalises it itself, so it is not normalised twice.

It sits low in the import graph (think and LLaMA-Factory's format constants only) so that the
converters' core, lint and the leak checks can all use it.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

from .lfformat import ALPACA_DEFAULTS, SHAREGPT_TAGS
from .think import strip_think


@dataclass
class Layout:
    formatting: str = "alpaca"
    ranking: bool = False
    columns: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)


def layout_from(entry: dict | None, sample: dict | None) -> Layout:
    if entry:
        fmt = entry.get("formatting", "alpaca")
        cols = entry.get("columns") or ({"messages": "conversations"} if fmt == "sharegpt" else dict(ALPACA_DEFAULTS))
        return Layout(fmt, bool(entry.get("ranking")), cols, entry.get("tags") or dict(SHAREGPT_TAGS))
    keys = set(sample or {})
    if "conversations" in keys or "messages" in keys:
        return Layout("sharegpt", False, {"messages": "conversations" if "conversations" in keys else "messages",
                                          **({"system": "system"} if "system" in keys else {})}, dict(SHAREGPT_TAGS))
    cols = {k: k2 for k, k2 in ALPACA_DEFAULTS.items()}
    for k in ("system", "history"):
        if k in keys:
            cols[k] = k
    ranking = "chosen" in keys and "rejected" in keys
    if ranking:
        cols.pop("response", None)
        cols.update(chosen="chosen", rejected="rejected")
    return Layout("alpaca", ranking, cols, dict(SHAREGPT_TAGS))


def normalise(text: str) -> str:
    """NFKC, whitespace runs collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def qa_parts(row: dict, layout: Layout) -> tuple[str, str]:
    """A row's prompt (its user-side texts joined by line breaks) and answer (without its think
    block), as written; empty strings for what the row lacks or holds as another type."""
    prompts, answer = _sharegpt_qa(row, layout) if layout.formatting == "sharegpt" else _alpaca_qa(row, layout)
    prompt = "\n".join(p for p in prompts if isinstance(p, str))
    return prompt, strip_think(answer)[1] if isinstance(answer, str) else ""


def qa_texts(row: dict, layout: Layout) -> tuple[str, str]:
    """The normalised prompt and answer of a row (see :func:`qa_parts`)."""
    prompt, answer = qa_parts(row, layout)
    return normalise(prompt), normalise(answer)


def near_text(row: dict, layout: Layout) -> str:
    """What a near-duplicate check shingles of a row: its prompt, then its answer (think block aside)."""
    prompt, answer = qa_parts(row, layout)
    return f"{prompt}\n{answer}"


def _alpaca_qa(row: dict, lay: Layout) -> tuple[list[Any], Any]:
    cols = lay.columns
    prompts: list[Any] = []
    history = row.get(cols["history"]) if cols.get("history") else None
    for pair in history if isinstance(history, list) else []:
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            prompts.append(pair[0])
    prompts += [row.get(cols[k]) for k in ("prompt", "query") if cols.get(k)]
    answer_col = cols.get("chosen") if lay.ranking else cols.get("response")
    return prompts, _content(row.get(answer_col) if answer_col else None, lay)


def _sharegpt_qa(row: dict, lay: Layout) -> tuple[list[Any], Any]:
    cols, tags = lay.columns, lay.tags
    msgs = row.get(cols.get("messages", "conversations"))
    msgs = [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []
    role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    prompts = [m.get(content) for m in msgs if m.get(role) == tags.get("user_tag", "human")]
    if lay.ranking and cols.get("chosen"):
        return prompts, _content(row.get(cols["chosen"]), lay)
    answers = [m.get(content) for m in msgs if m.get(role) == tags.get("assistant_tag", "gpt")]
    return prompts, answers[-1] if answers else None


def _content(value: Any, lay: Layout) -> Any:
    """A response column's text: a string, a message dict (ShareGPT ranking) or a list ending with one."""
    if isinstance(value, list) and value:
        value = value[-1]
    if isinstance(value, dict):
        return value.get(lay.tags.get("content_tag", "value"), value.get("content"))
    return value
