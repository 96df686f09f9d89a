"""LLaMA-Factory 0.9.5's dataset formats: the names it reads and the ShareGPT turn rule.

A leaf module (it imports nothing of the kit): the converters, lint, the registry and the plugin
all take these facts from here.

* :data:`SHAREGPT_TAGS`: the ``tags`` block of a ShareGPT entry as the kit writes it (the role
  names :data:`USER`, :data:`ASSISTANT`, :data:`SYSTEM`, :data:`FUNCTION`, :data:`OBSERVATION`
  are LLaMA-Factory's defaults);
* :data:`ALPACA_DEFAULTS`: the ``columns`` an Alpaca entry needs (LLaMA-Factory's defaults);
* :data:`PLUGIN_FORMATTINGS`: the formattings served by the kit's LLaMA-Factory plugin;
* :func:`alpaca_user_turn`: the user message LLaMA-Factory builds from an Alpaca row;
* :func:`turn_problem`: the ShareGPT turn rule (system only first, user and assistant alternate,
  the last turn is the assistant's). Its codes (:data:`TURN_PROBLEMS`) are at once the
  converter's reject reasons, lint's rule ids and what ``qfk datasets check`` counts.
"""

from __future__ import annotations

from typing import Mapping, Sequence

USER, ASSISTANT, SYSTEM, FUNCTION, OBSERVATION = "human", "gpt", "system", "function_call", "observation"
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": USER, "assistant_tag": ASSISTANT,
                 "observation_tag": OBSERVATION, "function_tag": FUNCTION, "system_tag": SYSTEM}
ALPACA_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output"}
#: formattings served by the kit's LLaMA-Factory plugin (qwen_factory_kit.launch.plugin): ``qfk train`` only;
#: each maps to the ``qfk convert`` converter that reads the raw rows
PLUGIN_FORMATTINGS = {"qfk_medical_r1": "medical-r1", "qfk_sharegpt": "sharegpt"}


def alpaca_user_turn(instruction: str | None, query: str | None) -> str:
    """The user message LLaMA-Factory's Alpaca converter makes of a row: ``instruction + "\\n" + input``,
    an empty part left out.

    >>> alpaca_user_turn("Translate <en> to <ja>.", "Hello")
    'Translate <en> to <ja>.\\nHello'
    """
    return "\n".join(part for part in (instruction, query) if part)


#: Codes returned by :func:`turn_problem` (reject reasons, lint rule ids, datasets check counts).
TURN_PROBLEMS = {
    "empty_conversation": "no user/assistant turns",
    "invalid_role": "a role that is not in the tags block",
    "system_not_first": "a system turn after the first message",
    "role_order": "user and assistant turns do not alternate",
    "ends_without_answer": "the last turn is not the assistant's answer",
}


def turn_problem(roles: Sequence, tags: Mapping = SHAREGPT_TAGS, *,
                 positions: Sequence[int] | None = None) -> tuple[str, str] | None:
    """``(code, detail)`` when a ShareGPT conversation with these roles breaks LLaMA-Factory's turn
    rule (it drops such a row), None when it keeps it.

    ``roles`` are the messages' role values in order; ``tags`` names the roles (an entry's ``tags``
    block); ``positions`` gives each role's message number for the detail (default: its index).
    The first problem found wins, in message order; then an empty or odd conversation.

    >>> turn_problem(["system", "human", "gpt"])
    >>> turn_problem(["gpt", "human"])
    ('role_order', "message 0 is 'gpt' where a user turn must come (turns must alternate)")
    >>> turn_problem(["human"])
    ('ends_without_answer', "1 turns: the last turn must be the assistant's answer")
    """
    system, user_side, bot_side = _DEFAULT_SIDES if tags is SHAREGPT_TAGS else _sides(tags)
    start = 1 if roles and roles[0] == system and system is not None else 0
    sides = (user_side, bot_side)
    for i in range(start, len(roles)):
        role = roles[i]
        turn = i - start
        if role in sides[turn & 1] and role is not None:
            continue
        at = positions[i] if positions is not None else i
        if role is not None and role == system:
            return "system_not_first", f"message {at} is a system turn; LLaMA-Factory only accepts one at the start"
        if role is None or role not in user_side + bot_side:
            return "invalid_role", f"message {at} has role {role!r}, which the tags block does not name"
        return "role_order", (f"message {at} is {role!r} where a {'user' if turn % 2 == 0 else 'assistant'} "
                              "turn must come (turns must alternate)")
    turns = len(roles) - start
    if not turns:
        return "empty_conversation", "no user/assistant turns"
    if turns % 2:
        return "ends_without_answer", f"{turns} turns: the last turn must be the assistant's answer"
    return None


def _sides(tags: Mapping) -> tuple:
    """(system tag, user-side tags, assistant-side tags) of a tags block."""
    return (tags.get("system_tag"), (tags.get("user_tag"), tags.get("observation_tag")),
            (tags.get("assistant_tag"), tags.get("function_tag")))


_DEFAULT_SIDES = _sides(SHAREGPT_TAGS)
