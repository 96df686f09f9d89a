"""ShareGPT chat rows (FineTome-100k and friends) -> Alpaca (with ``history``/``system``) or ShareGPT.

Source row: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}``; also
accepted: a ``messages`` list, ``role``/``content`` keys, and the roles ``user``/``assistant``.
Multi-turn rows keep every turn (Alpaca ``history`` or ShareGPT output); a leading system turn
becomes ``system``. The rules are LLaMA-Factory's (:func:`qwen_factory_kit.lfformat.turn_problem`):
system only first, user and assistant alternate, the last turn is the assistant's. Assistant
answers get canonical think blocks.
"""

from __future__ import annotations

from ..errors import QfkError
from ..lfformat import ASSISTANT, FUNCTION, OBSERVATION, SHAREGPT_TAGS, SYSTEM, USER, turn_problem
from ..think import format_response
from .contract import CHECKED_MARKERS, Converter, Reject, check_text, get_field
from .fit import MESSAGE_KEYS

_M0, _M1, _M2 = CHECKED_MARKERS

ROLE_ALIASES = {
    "human": USER, "user": USER,
    "gpt": ASSISTANT, "assistant": ASSISTANT, "model": ASSISTANT, "bot": ASSISTANT, "chatgpt": ASSISTANT,
    "system": SYSTEM,
    "function_call": FUNCTION, "tool_call": FUNCTION, "function": FUNCTION,
    "observation": OBSERVATION, "tool": OBSERVATION, "function_response": OBSERVATION, "ipython": OBSERVATION,
}
FORMATS = ("alpaca", "sharegpt")


class ShareGPT(Converter):
    name = "sharegpt"
    aliases = ("finetome",)
    summary = "ShareGPT conversations (FineTome-100k) -> Alpaca with history/system, or ShareGPT"
    dedup_on_lines = True

    def __init__(self, *, format: str = "alpaca", single_turn_only: bool = False, min_score: float | None = None,
                 conversations_key: str | None = None, **kw):
        super().__init__(format=format, single_turn_only=single_turn_only, min_score=min_score,
                         conversations_key=conversations_key, **kw)
        if format not in FORMATS:
            raise QfkError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}",
                           "--format alpaca (instruction/output with history) or --format sharegpt (conversations)")
        self.out_format = format
        self.single_turn_only = single_turn_only
        self.min_score = min_score
        self.key = conversations_key
        self.formatting = format  # instance value overrides the class default

    def columns(self) -> dict:
        if self.out_format == "sharegpt":
            return {"messages": "conversations", "system": "system"}
        return {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}

    def tags(self) -> dict | None:
        return dict(SHAREGPT_TAGS) if self.out_format == "sharegpt" else None

    def responses(self, out: dict):
        if self.out_format == "sharegpt":
            return (m["value"] for m in out["conversations"] if m["from"] == ASSISTANT)
        return super().responses(out)

    def note_option(self, note: str) -> str:
        return "kept with their history; --single-turn-only rejects them" if note == "multi_turn_rows" else ""

    def _messages(self, row: dict) -> list:
        key = self.key or next((k for k in MESSAGE_KEYS if k in row), None)
        if key is None:
            raise Reject("missing_field", "no 'conversations' or 'messages' list (use --conversations-key NAME)")
        msgs = get_field(row, key)
        if not isinstance(msgs, list) or not msgs:
            raise Reject("wrong_type" if not isinstance(msgs, list) else "empty_conversation",
                         "the conversation must be a non-empty list of {from, value} messages")
        return msgs

    def _check_score(self, score) -> None:
        if not isinstance(score, (int, float)) or score < self.min_score:
            raise Reject("below_min_score", f"score {score!r} < --min-score {self.min_score}")

    def convert(self, row: dict) -> list[dict]:
        if self.min_score is not None:
            self._check_score(row.get("score"))
        roles, values = [], []
        for i, msg in enumerate(self._messages(row)):
            if not isinstance(msg, dict):
                raise Reject("wrong_type", f"message {i} is not an object")
            roles.append(msg.get("from", msg.get("role")))
            values.append(msg.get("value", msg.get("content")))
        return self._build(roles, values)

    def convert_batch(self, batch, keep):
        """Columnar fast path for Parquet: roles and values come out of Arrow as two flat lists
        (no per-message dicts); rows with a null list or null message take :meth:`convert`."""
        fast = _arrow_messages(batch.arrow, self.key)
        if fast is None:
            yield from super().convert_batch(batch, keep)
            return
        roles, values, starts, dirty = fast
        scores = None
        if self.min_score is not None:
            names = batch.arrow.schema.names
            scores = batch.arrow.column("score").to_pylist() if "score" in names else [None] * len(batch)
        build = self._build
        for i in range(len(batch)):
            if keep is not None and not keep[i]:
                yield None
                continue
            try:
                if dirty is not None and dirty[i]:
                    yield self.convert(batch.row(i))
                    continue
                if scores is not None:
                    self._check_score(scores[i])
                s, e = starts[i], starts[i + 1]
                yield build(roles[s:e], values[s:e])
            except Reject as r:
                yield r

    def _build(self, roles: list, values: list) -> list[dict]:
        """The ShareGPT rules on one conversation (roles and values as parallel lists): each
        message, then LLaMA-Factory's turn rule (:func:`~qwen_factory_kit.lfformat.turn_problem`),
        then the output row."""
        if not roles:
            raise Reject("empty_conversation", "the conversation must be a non-empty list of {from, value} messages")
        system, canon, turns, positions = self._turns(roles, values)
        problem = turn_problem(canon, positions=positions)
        if problem:
            raise Reject(*problem)
        pairs = len(turns) // 2
        if self.single_turn_only and pairs > 1:
            raise Reject("multi_turn", f"{pairs} user/assistant pairs and --single-turn-only was given")
        if pairs > 1:
            self.notes["multi_turn_rows"] += 1
        if system:
            self.notes["rows_with_system"] += 1
        if self.out_format == "sharegpt":
            return [{"conversations": [{"from": r, "value": v} for r, v in turns], "system": system}]
        return [_alpaca_row(turns, system, pairs)]

    def _turns(self, roles: list, values: list) -> tuple[str, list[str], list[tuple[str, str]], list[int] | None]:
        """(system text, canonical role of each message kept, (role, text) of the user/assistant turns,
        message numbers of the kept messages when some were left out). Empty system turns are left
        out; unknown roles, non-string values, empty turns and bad texts are rejected. Texts without
        ``<|``, ``think>`` and NUL skip the token and tag checks (same result, faster)."""
        system = ""
        canon: list[str] = []
        turns: list[tuple[str, str]] = []
        positions: list[int] | None = None  # None while every message is kept (message number == index)
        empty = self.empty
        for i, (role, value) in enumerate(zip(roles, values)):
            c = (ROLE_ALIASES.get(role) or ROLE_ALIASES.get(role.lower())) if isinstance(role, str) else None
            if c is None:
                raise Reject("invalid_role", f"message {i} has role {role!r}; known roles: human/user, gpt/assistant, system, function_call, observation")
            if type(value) is not str:
                if value is not None:
                    raise Reject("wrong_type", f"message {i} ({role}) value must be a string, got {type(value).__name__}")
                value = ""
            text = value.strip()
            if not text:
                if c != SYSTEM:
                    raise Reject("empty_turn", f"message {i} ({role}) is empty")
                if positions is None:
                    positions = list(range(i))
                continue
            if positions is not None:
                positions.append(i)
            canon.append(c)
            clean = _M0 not in text and _M1 not in text and _M2 not in text  # nothing check_text looks for
            if c == SYSTEM:
                system = text if clean else check_text(text, "system", prompt=True)
            elif c == ASSISTANT:
                turns.append((c, format_response(text, None, empty=empty) if clean else self.response(value, f"message {i}")))
            else:
                turns.append((c, text if clean else check_text(text, f"message {i}", prompt=c == USER)))
        return system, canon, turns, positions


def _alpaca_row(turns: list[tuple[str, str]], system: str, pairs: int) -> dict:
    """The last pair as instruction/output, the earlier pairs as history."""
    if pairs > 1 or turns[0][0] != USER or turns[1][0] != ASSISTANT:
        roles_seen = {r for r, _ in turns}
        if FUNCTION in roles_seen or OBSERVATION in roles_seen:
            raise Reject("tool_turns_need_sharegpt", "function_call/observation turns cannot be written as Alpaca; use --format sharegpt")
    history = [[turns[j][1], turns[j + 1][1]] for j in range(0, len(turns) - 2, 2)]
    return {"instruction": turns[-2][1], "input": "", "output": turns[-1][1], "system": system, "history": history}


def _arrow_messages(rb, key: str | None):
    """(roles, values, row starts, dirty flags or None) from a ``list<struct<from|role,
    value|content>>`` column, or None when the batch is not columnar or has another shape. A row
    is dirty when its list or one of its messages (or roles) is null."""
    if rb is None:
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    names = rb.schema.names
    name = key or next((k for k in MESSAGE_KEYS if k in names), None)
    if name not in names:
        return None
    col = rb.column(name)
    typ = col.type
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)) or not pa.types.is_struct(typ.value_type):
        return None
    fields = {typ.value_type.field(j).name for j in range(typ.value_type.num_fields)}
    role_f = "from" if "from" in fields else "role" if "role" in fields else None
    value_f = "value" if "value" in fields else "content" if "content" in fields else None
    if role_f is None or value_f is None or len(fields) != 2:
        return None
    if not pa.types.is_string(typ.value_type.field(value_f).type) or not pa.types.is_string(typ.value_type.field(role_f).type):
        return None
    flat = col.flatten()
    offsets = col.offsets.to_pylist()  # (not to_numpy(): pyarrow would import pandas, half a second)
    first = offsets[0]
    starts = [o - first for o in offsets]
    dirty = None
    if col.null_count or flat.null_count or flat.field(role_f).null_count:
        bad = pc.or_(pc.is_null(flat), pc.is_null(flat.field(role_f))).to_pylist()
        null_rows = col.is_null().to_pylist()
        dirty = [null_rows[i] or any(bad[starts[i]:starts[i + 1]]) for i in range(len(col))]
    return flat.field(role_f).to_pylist(), flat.field(value_f).to_pylist(), starts, dirty
