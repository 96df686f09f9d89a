"""LLaMA-Factory's ``generated_predictions.jsonl`` -> rows for :func:`.metrics.score_rows`.

LLaMA-Factory 0.9.5 (``do_predict: true``, ``predict_with_generate: true``) writes one
``{"prompt", "predict", "label"}`` object a line: ``prompt`` is the rendered chat with its
special tokens (``<|im_start|>user\\n...<|im_end|>``), ``predict`` and ``label`` are decoded
without special tokens, so ``<think>`` blocks (added tokens, not special) stay in them.

:func:`read_predictions` turns the file into rows ``{line, prompt, prediction, reference,
reasoning, answer}``. :func:`join_dataset` matches each prediction with the dataset row it came
from (by the last user turn), for what the file lost: the full reference (the label is cut at
``cutoff_len``, and loses its reasoning under ``enable_thinking: false``) and the row itself.
"""

from __future__ import annotations

import os
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Iterable

import orjson

from ..errors import QfkError
from ..lint import Layout, iter_rows, layout_from
from ..think import strip_think

PREDICTIONS_FILE = "generated_predictions.jsonl"
#: how the ``qwen3`` templates open and close a user turn in the rendered prompt
USER_TURN, TURN_END = "<|im_start|>user\n", "<|im_end|>"
_PREDICT_HINT = ("run LLaMA-Factory with do_predict: true and predict_with_generate: true; "
                 f"it writes {PREDICTIONS_FILE} into output_dir")


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Rows of a predictions file (or of the folder holding ``generated_predictions.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    if not path.is_file():
        raise QfkError(f"no predictions file at {path}", _PREDICT_HINT)
    rows = []
    with open(path, "rb") as fh:
        for line_no, line in enumerate(fh, 1):
            if line.strip():
                rows.append(prediction_row(_record(line, path, line_no), line_no))
    if not rows:
        raise QfkError(f"{path} holds no predictions", _PREDICT_HINT)
    return rows


def _record(line: bytes, path: Path, line_no: int) -> dict:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise QfkError(f"{path}:{line_no} is not a JSON object ({exc})", _PREDICT_HINT) from None
    bad = [k for k in ("prompt", "predict", "label") if not isinstance(record, dict) or not isinstance(record.get(k), str)]
    if bad:
        raise QfkError(f"{path}:{line_no} has no text {', '.join(repr(k) for k in bad)}",
                       f"each line must be {{\"prompt\", \"predict\", \"label\"}} as LLaMA-Factory writes it; {_PREDICT_HINT}")
    return record


def prediction_row(record: dict, line_no: int = 0) -> dict:
    """One ``{"prompt", "predict", "label"}`` record as a scoring row, its think block split off."""
    reasoning, answer = strip_think(record["predict"])
    return {"line": line_no, "prompt": record["prompt"], "prediction": record["predict"],
            "reference": record["label"], "reasoning": reasoning, "answer": answer}


def last_user_turn(prompt: str) -> str | None:
    """The text of the last user turn of a rendered prompt; None when there is none or it was cut."""
    start = prompt.rfind(USER_TURN)
    if start < 0:
        return None
    start += len(USER_TURN)
    end = prompt.find(TURN_END, start)
    return prompt[start:end] if end >= 0 else None


def dataset_turn(row: dict, layout: Layout) -> tuple[str | None, str | None]:
    """``(user text, response)`` of a dataset row's last turn, as LLaMA-Factory renders it
    (Alpaca: ``instruction + "\\n" + input``, empty parts skipped)."""
    cols = layout.columns
    if layout.formatting == "sharegpt":
        tags = layout.tags
        role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
        msgs = [m for m in row.get(cols.get("messages", "conversations")) or [] if isinstance(m, dict)]
        users = [m.get(content) for m in msgs if m.get(role) == tags.get("user_tag")]
        answers = [m.get(content) for m in msgs if m.get(role) == tags.get("assistant_tag")]
        return (users[-1] if users else None), (answers[-1] if answers else None)
    parts = [row.get(cols[k]) for k in ("prompt", "query") if cols.get(k) and row.get(cols[k])]
    user = "\n".join(p for p in parts if isinstance(p, str)) if parts else None
    return user, row.get(cols["response"]) if cols.get("response") else None


def join_dataset(predictions: list[dict], dataset_rows: Iterable[Any], *, entry: dict | None = None) -> list[dict]:
    """Match each prediction with its dataset row by the last user turn (in order among equal
    turns). A joined row gets ``dataset_index``, ``dataset_row``, the dataset response as
    ``reference`` (the file's own label kept as ``label``) and, for Alpaca rows, ``instruction``."""
    rows = [r for r in dataset_rows if isinstance(r, dict)]
    layout = layout_from(entry, rows[0] if rows else None)
    queues: dict[str, deque] = defaultdict(deque)
    turns = [dataset_turn(r, layout) for r in rows]
    for i, (user, _) in enumerate(turns):
        if isinstance(user, str):
            queues[user.strip()].append(i)
    joined, unmatched = [], []
    for pred in predictions:
        user = last_user_turn(pred["prompt"])
        queue = queues.get(user.strip()) if user is not None else None
        if not queue:
            unmatched.append(pred.get("line") or len(joined) + len(unmatched) + 1)
            continue
        i = queue.popleft()
        joined.append(_joined(pred, i, rows[i], turns[i][1], layout))
    if unmatched:
        raise QfkError(f"{len(unmatched)} of {len(predictions)} predictions match no dataset row "
                       f"(lines {', '.join(map(str, unmatched[:5]))}{' ...' if len(unmatched) > 5 else ''})",
                       "join with the eval dataset the predictions were made from; a prompt cut by cutoff_len cannot be matched")
    return joined


def _joined(pred: dict, index: int, row: dict, response: Any, layout: Layout) -> dict:
    out = {**pred, "label": pred["reference"], "dataset_index": index, "dataset_row": row}
    if isinstance(response, str):
        out["reference"] = response
    prompt_col = layout.columns.get("prompt")
    if layout.formatting != "sharegpt" and prompt_col and isinstance(row.get(prompt_col), str):
        out["instruction"] = row[prompt_col]
    return out


def load_predictions(path: str | os.PathLike, *, dataset: str | os.PathLike | None = None,
                     entry: dict | None = None) -> list[dict]:
    """:func:`read_predictions`, joined with the dataset file (or folder) when one is given."""
    rows = read_predictions(path)
    if dataset is None:
        return rows
    dataset = Path(dataset)
    if not dataset.exists():
        raise QfkError(f"no dataset at {dataset}", "give the eval dataset file the predictions were made from")
    return join_dataset(rows, (row for _, row in iter_rows(dataset)), entry=entry)
