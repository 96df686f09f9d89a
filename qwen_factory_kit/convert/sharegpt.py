"""ShareGPT chat rows (FineTome-100k and friends) -> Alpaca (with ``history``/``system``) or ShareGPT.

Source row: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}``; also
accepted: a ``messages`` list, ``role``/``content`` keys, and the roles ``user``/``assistant``.
Multi-turn rows keep every turn (Alpaca ``history`` or ShareGPT output); a leading system turn
becomes ``system``. The rules are LLaMA-Factory's: system only first, user and assistant
alternate, the last turn is the assistant's. Assistant answers get canonical think blocks.
"""

from __future__ import annotations

from .core import Converter, Reject, check_text, get_field

USER, ASSISTANT, SYSTEM, FUNCTION, OBSERVATION = "human", "gpt", "system", "function_call", "observation"
ROLE_ALIASES = {
    "human": USER, "user": USER,
    "gpt": ASSISTANT, "assistant": ASSISTANT, "model": ASSISTANT, "bot": ASSISTANT, "chatgpt": ASSISTANT,
    "system": SYSTEM,
    "function_call": FUNCTION, "tool_call": FUNCTION, "function": FUNCTION,
    "observation": OBSERVATION, "tool": OBSERVATION, "function_response": OBSERVATION, "ipython": OBSERVATION,
}
USER_SIDE = (USER, OBSERVATION)
ASSISTANT_SIDE = (ASSISTANT, FUNCTION)
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": USER, "assistant_tag": ASSISTANT,
                 "observation_tag": OBSERVATION, "function_tag": FUNCTION, "system_tag": SYSTEM}
FORMATS = ("alpaca", "sharegpt")


class ShareGPT(Converter):
    name = "sharegpt"
    aliases = ("finetome",)
    summary = "ShareGPT conversations (FineTome-100k) -> Alpaca with history/system, or ShareGPT"

    def __init__(self, *, format: str = "alpaca", single_turn_only: bool = False, min_score: float | None = None,
                 conversations_key: str | None = None, **kw):
        super().__init__(format=format, single_turn_only=single_turn_only, min_score=min_score,
                         conversations_key=conversations_key, **kw)
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        self.out_format = format
        self.single_turn_only = single_turn_only
        self.min_score = min_score
        self.key = conversations_key
        self.formatting = format  # instance value overrides the class default
        if format == "sharegpt":
            self.response_fields = ()

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

    def _messages(self, row: dict) -> list:
        if self.key:
            msgs = get_field(row, self.key)
        elif "conversations" in row:
            msgs = row["conversations"]
        elif "messages" in row:
            msgs = row["messages"]
        else:
            raise Reject("missing_field", "no 'conversations' or 'messages' list (use --conversations-key NAME)")
        if not isinstance(msgs, list) or not msgs:
            raise Reject("wrong_type" if not isinstance(msgs, list) else "empty_conversation",
                         "the conversation must be a non-empty list of {from, value} messages")
        return msgs

    def convert(self, row: dict) -> list[dict]:
        if self.min_score is not None:
            score = row.get("score")
            if not isinstance(score, (int, float)) or score < self.min_score:
                raise Reject("below_min_score", f"score {score!r} < --min-score {self.min_score}")
        turns: list[tuple[str, str]] = []
        system = ""
        for i, msg in enumerate(self._messages(row)):
            if not isinstance(msg, dict):
                raise Reject("wrong_type", f"message {i} is not an object")
            role = msg.get("from", msg.get("role"))
            value = msg.get("value", msg.get("content"))
            canon = ROLE_ALIASES.get(role.lower() if isinstance(role, str) else role)
            if canon is None:
                raise Reject("invalid_role", f"message {i} has role {role!r}; known roles: human/user, gpt/assistant, system, function_call, observation")
            if value is None or (isinstance(value, str) and not value.strip()):
                if canon == SYSTEM:
                    continue
                raise Reject("empty_turn", f"message {i} ({role}) is empty")
            if not isinstance(value, str):
                raise Reject("wrong_type", f"message {i} ({role}) value must be a string, got {type(value).__name__}")
            if canon == SYSTEM:
                if i != 0:
                    raise Reject("system_not_first", f"message {i} is a system turn; LLaMA-Factory only accepts one at the start")
                system = check_text(value.strip(), "system", prompt=True)
                continue
            expected = USER_SIDE if len(turns) % 2 == 0 else ASSISTANT_SIDE
            if canon not in expected:
                raise Reject("role_order", f"message {i} is '{role}' where a {'user' if expected is USER_SIDE else 'assistant'} turn must come (turns must alternate)")
            if canon == ASSISTANT:
                value = self.response(value, f"message {i}")
            else:
                value = check_text(value.strip(), f"message {i}", prompt=canon == USER)
            turns.append((canon, value))
        if not turns:
            raise Reject("empty_conversation", "no user/assistant turns")
        if len(turns) % 2:
            raise Reject("ends_without_answer", f"{len(turns)} turns: the last turn must be the assistant's answer")
        pairs = len(turns) // 2
        if self.single_turn_only and pairs > 1:
            raise Reject("multi_turn", f"{pairs} user/assistant pairs and --single-turn-only was given")
        if pairs > 1:
            self.notes["multi_turn_rows"] += 1
        if system:
            self.notes["rows_with_system"] += 1
        if self.out_format == "sharegpt":
            return [{"conversations": [{"from": r, "value": v} for r, v in turns], "system": system}]
        roles = {r for r, _ in turns}
        if FUNCTION in roles or OBSERVATION in roles:
            raise Reject("tool_turns_need_sharegpt", "function_call/observation turns cannot be written as Alpaca; use --format sharegpt")
        history = [[turns[j][1], turns[j + 1][1]] for j in range(0, len(turns) - 2, 2)]
        return [{"instruction": turns[-2][1], "input": "", "output": turns[-1][1], "system": system, "history": history}]
