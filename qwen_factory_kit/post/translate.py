"""``qfk translate``: translate with a trained model, asking exactly as the training rows did.

The prompt is the Moses converter's (:func:`qwen_factory_kit.convert.moses.translation_prompt`:
its instruction with the language tags, its system prompt; the options of the training data's
Moses manifest when the run record has one), turned into the user message the way
LLaMA-Factory reads an Alpaca row. Decoding is deterministic (``do_sample`` false) in
non-thinking mode, and only the answer is returned.
"""

from __future__ import annotations

from ..errors import QfkError
from ..recipe import presets
from .served import ServedModel

#: deterministic decoding: the same text, the same translation
DETERMINISTIC = {"do_sample": False}


def language(code: str) -> str:
    """A language code as the converter writes it (``zh-tw`` -> ``zh_TW``)."""
    from ..langs import known_codes, normalize_code

    norm = normalize_code(code)
    if not norm:
        raise QfkError(f"unknown language code '{code}'", f"known codes: {', '.join(known_codes())}")
    return norm


def prompt_options(served: ServedModel, instruction_template: str | None = None, system: str | None = None) -> dict:
    """The converter's prompt options: given ones, else the training data's (its Moses manifest),
    else the converter's defaults."""
    options = dict(served.translation)
    if instruction_template is not None:
        options["instruction_template"] = instruction_template
    if system is not None:
        options["system"] = system
    return options


def translation_messages(src: str, tgt: str, text: str, options: dict | None = None) -> tuple[str | None, list[dict]]:
    """``(system, messages)`` for translating ``text`` from ``src`` to ``tgt``: the Moses converter's
    row for that direction, as LLaMA-Factory turns an Alpaca row into a conversation."""
    from ..convert.moses import translation_prompt
    from ..lfformat import alpaca_user_turn

    row = translation_prompt(src, tgt, text.strip(), **(options or {}))
    return row.get("system") or None, [{"role": "user", "content": alpaca_user_turn(row["instruction"], row["input"])}]


class Translator:
    """A model loaded once for many lines; ``model`` may be given (a loaded ChatModel) for reuse."""

    def __init__(self, served: ServedModel, src: str, tgt: str, *, options: dict | None = None,
                 max_new_tokens: int | None = None, model=None):
        from .chat import chat_args

        self.src, self.tgt = language(src), language(tgt)
        if self.src == self.tgt:
            raise QfkError(f"--src and --tgt are both {self.src}", "give two different languages")
        self.options = options if options is not None else prompt_options(served)
        if model is None:
            from ..lfbridge import load_chat_model

            model = load_chat_model(chat_args(served, thinking=False, generation=DETERMINISTIC,
                                              max_new_tokens=max_new_tokens or presets.max_new_tokens(False)))
        self.model = model

    def translate(self, text: str) -> str:
        """The answer only (a think block, if the model writes one anyway, is cut off)."""
        from ..lfbridge import stream_reply
        from ..think import strip_think

        system, messages = translation_messages(self.src, self.tgt, text, self.options)
        return strip_think("".join(stream_reply(self.model, messages, system)))[1].strip()
