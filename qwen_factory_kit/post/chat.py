"""``qfk chat``: talk to a trained model through LLaMA-Factory's ``ChatModel``, in this process.

The model is served as it was trained (:mod:`.served`): template, thinking mode and Qwen3's
recommended sampling for that mode. A reply streams as :class:`Piece` s, the reasoning apart
from the answer (split by :func:`qwen_factory_kit.think.split_partial` while it streams,
:func:`qwen_factory_kit.think.strip_think` when it is done). The history keeps the answers only,
as Qwen's chat template does with earlier turns.

Input: a line ending with a backslash continues on the next line (the backslash is dropped);
``/reset`` clears the history, ``/exit`` (or end of input) quits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from ..errors import QfkError
from ..recipe import presets
from .served import ServedModel

#: the interactive commands and what they do
COMMANDS = {"/reset": "clear the conversation history", "/exit": "quit (also /quit, Ctrl-D)"}
CONTINUE = "\\"


@dataclass(frozen=True)
class Piece:
    """Part of a reply as it streams: ``kind`` is ``think`` (reasoning) or ``answer``."""

    kind: str
    text: str


@dataclass(frozen=True)
class Reply:
    text: str                 # as generated
    think: str | None         # the reasoning (None: no think block)
    answer: str

    def as_dict(self) -> dict:
        return {"think": self.think, "answer": self.answer}


def think_mode(served: ServedModel, think: bool | None) -> bool:
    """``--think`` / ``--no-think``, else the mode the model was trained in."""
    if think is None:
        return served.thinking
    if think and not served.can_think:
        raise QfkError(f"template {served.template} never thinks, so --think cannot apply",
                       "drop --think (Instruct-2507 models answer without thinking)")
    return think


def chat_args(served: ServedModel, *, thinking: bool, generation: dict, max_new_tokens: int) -> dict:
    """LLaMA-Factory's inference arguments for ``served`` in think mode ``thinking``."""
    args = {"model_name_or_path": served.model, "template": served.template, "infer_backend": "huggingface",
            **generation, "max_new_tokens": max_new_tokens}
    if served.can_think:
        args["enable_thinking"] = thinking
    if served.adapter:
        args.update(adapter_name_or_path=served.adapter, finetuning_type="lora")
    return args


class ChatSession:
    """One conversation with a loaded model; ``model`` may be given (a loaded ChatModel) for reuse."""

    def __init__(self, served: ServedModel, *, think: bool | None = None, max_new_tokens: int | None = None,
                 generation: dict | None = None, system: str | None = None, model=None):
        self.served = served
        self.thinking = think_mode(served, think)
        self.generation = dict(generation) if generation is not None else presets.sampling(self.thinking)
        self.max_new_tokens = max_new_tokens or presets.max_new_tokens(self.thinking)
        self.system = system
        self.history: list[dict] = []
        self.last: Reply | None = None
        if model is None:
            from ..lfbridge import load_chat_model

            model = load_chat_model(chat_args(served, thinking=self.thinking, generation=self.generation,
                                              max_new_tokens=self.max_new_tokens))
        self.model = model

    def stream(self, message: str) -> Iterator[Piece]:
        """The reply to ``message``, piece by piece; when it is done, ``last`` holds it and the
        history has the turn (a reply not read to its end leaves the history as it was)."""
        from ..lfbridge import stream_reply
        from ..think import split_partial, strip_think

        messages = [*self.history, {"role": "user", "content": message}]
        text, shown_think, shown_answer = "", "", ""
        for chunk in stream_reply(self.model, messages, self.system):
            text += chunk
            think, answer = split_partial(text)
            if think and len(think) > len(shown_think):
                yield Piece("think", think[len(shown_think):])
                shown_think = think
            if len(answer) > len(shown_answer):
                yield Piece("answer", answer[len(shown_answer):])
                shown_answer = answer
        reasoning, answer = strip_think(text)
        answer = answer.strip()
        self.last = Reply(text, reasoning, answer)
        self.history += [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]

    def ask(self, message: str) -> Reply:
        for _ in self.stream(message):
            pass
        assert self.last is not None
        return self.last

    def reset(self) -> None:
        self.history.clear()


def read_message(read_line: Callable[[str], str], prompt: str = "you> ", more: str = "...  ") -> str | None:
    """One message from ``read_line`` (``input``): a line ending with a backslash continues on the
    next one. None at the end of input with nothing read."""
    lines: list[str] = []
    while True:
        try:
            line = read_line(prompt if not lines else more)
        except EOFError:
            return "\n".join(lines) if lines else None
        if line.endswith(CONTINUE):
            lines.append(line[:-len(CONTINUE)])
            continue
        lines.append(line)
        return "\n".join(lines)


def command_of(message: str) -> str | None:
    """``/reset`` or ``/exit`` when ``message`` is one of the commands (``/quit`` is ``/exit``)."""
    word = message.strip().lower()
    if word == "/quit":
        return "/exit"
    return word if word in COMMANDS else None
