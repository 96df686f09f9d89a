"""``qfk serve``'s OpenAI-compatible app: LLaMA-Factory's api app with its chat completions route
replaced by one that serves a model as it was trained and keeps the reasoning apart.

LLaMA-Factory's own route (``llamafactory.api.chat``) sends the think block inside ``content``,
renders every prompt in the think mode the model was loaded with, and uses LLaMA-Factory's
sampling for what a request leaves out. Here (everything else of its app is kept: ``/v1/models``,
``/v1/score/evaluation``, CORS, its bearer-key check, its request parsing):

* the reasoning goes in ``reasoning_content`` (on the message; streamed, on each delta), the
  answer in ``content`` without the think block, as vLLM's and DeepSeek's servers send them; split
  by :func:`qwen_factory_kit.think.split_partial`, while streaming and at the end alike;
* ``chat_template_kwargs: {"enable_thinking": false}`` (vLLM's and SGLang's field) switches the
  think mode of one request; without it the model's trained mode applies;
* sampling a request leaves out is Qwen3's recommended sampling for the request's think mode, and
  ``max_tokens`` (or ``max_completion_tokens``) the reply budget of that mode; ``top_k`` and
  ``repetition_penalty`` are taken too (vLLM's extra fields). ``presence_penalty`` is not
  (LLaMA-Factory would pass it as repetition_penalty, where 0.5 encourages repetition) and ``stop``
  is not supported by the Hugging Face backend: both are ignored and the log says so;
* an error is OpenAI's body (``{"error": {"message", "type", "code"}}``, which clients show) with
  LLaMA-Factory's ``detail`` kept beside it.

Requests are answered one at a time (the think mode is the template's, shared by all requests).
A streamed reply ends with finish_reason ``stop`` even when max_tokens cut it: LLaMA-Factory's
stream does not say which.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from llamafactory.api.protocol import ChatCompletionRequest

from ..think import split_partial

#: the request field that switches the think mode (vLLM's and SGLang's)
TEMPLATE_KWARGS = "chat_template_kwargs"
#: OpenAI's error types by HTTP status
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error"}


class ChatRequest(ChatCompletionRequest):
    """LLaMA-Factory's chat request and the fields of vLLM's that ``qfk serve`` reads too."""

    top_k: int | None = None
    repetition_penalty: float | None = None
    max_completion_tokens: int | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class Refused(ValueError):
    """A request that cannot be served as asked (answered 400 with this message)."""


@dataclass(frozen=True)
class ApiDefaults:
    """What a request that says nothing gets, by think mode."""

    thinking: bool                          # the trained think mode
    can_think: bool                         # False for a *_nothink template
    sampling: dict[bool, dict]              # Qwen3's, by think mode
    max_tokens: dict[bool, int]             # the reply budget, by think mode
    log: Callable[[str], None] = print      # one line a request
    log_prompts: bool = False               # and the prompt as rendered


def request_thinking(kwargs: dict | None, defaults: ApiDefaults) -> tuple[bool, str]:
    """The think mode of a request and where it comes from: ``chat_template_kwargs.enable_thinking``,
    else the trained mode."""
    value = (kwargs or {}).get("enable_thinking")
    if value is None:
        return defaults.thinking, "trained"
    if not isinstance(value, bool):
        raise Refused(f"{TEMPLATE_KWARGS}.enable_thinking must be true or false, not {value!r}")
    if value and not defaults.can_think:
        raise Refused("this model's template never thinks (an Instruct-2507 model): enable_thinking true cannot apply")
    return value, TEMPLATE_KWARGS


def generation(request: ChatRequest, thinking: bool, defaults: ApiDefaults) -> tuple[dict, list[str]]:
    """LLaMA-Factory's generation keywords for ``request`` in think mode ``thinking`` (Qwen3's
    sampling and the reply budget where the request says nothing), and the fields it ignores."""
    sampling = defaults.sampling[thinking]

    def given(value, default):
        return default if value is None else value

    kw = {"do_sample": given(request.do_sample, sampling["do_sample"]),
          "temperature": given(request.temperature, sampling["temperature"]),
          "top_p": given(request.top_p, sampling["top_p"]),
          "top_k": given(request.top_k, sampling["top_k"]),
          "max_new_tokens": request.max_completion_tokens or request.max_tokens or defaults.max_tokens[thinking],
          "num_return_sequences": request.n}
    if request.repetition_penalty:
        kw["repetition_penalty"] = request.repetition_penalty
    ignored = [name for name in ("presence_penalty", "stop") if getattr(request, name) not in (None, 0, 0.0, [], "")]
    return kw, ignored


def split_reply(text: str) -> tuple[str | None, str]:
    """``(reasoning_content, content)`` of a finished reply: the reasoning (None without a think
    block; all of it when the reply was cut off inside the block) and the answer, stripped."""
    reasoning, answer = split_partial(text, done=True)
    return (reasoning.strip() if reasoning is not None else None), answer.strip()


@dataclass
class ReasoningStream:
    """Streamed text pieces -> ``(reasoning delta, content delta)``: what is new of each part since
    the last piece (a partly generated tag is held back until it is known)."""

    text: str = ""
    shown: list[str] = field(default_factory=lambda: ["", ""])

    def feed(self, piece: str, *, done: bool = False) -> tuple[str, str]:
        self.text += piece
        reasoning, answer = split_partial(self.text, done=done)
        deltas = []
        for i, part in enumerate((reasoning or "", answer)):
            deltas.append(part[len(self.shown[i]):] if part.startswith(self.shown[i]) else "")
            if len(part) > len(self.shown[i]):
                self.shown[i] = part
        return deltas[0], deltas[1]

    def finish(self) -> tuple[str, str]:
        return self.feed("", done=True)


def build_app(model, defaults: ApiDefaults, *, api_key: str | None, model_name: str):
    """The app to serve ``model`` (a loaded LLaMA-Factory ChatModel) with."""
    from fastapi import HTTPException, status
    from fastapi.responses import JSONResponse
    from sse_starlette import EventSourceResponse

    from .. import lfbridge

    app, checks = lfbridge.api_app(model, api_key=api_key, model_name=model_name)
    one_at_a_time = asyncio.Lock()

    @app.exception_handler(HTTPException)
    async def openai_error(request, exc: HTTPException):  # OpenAI's error body (clients show its message), and LF's detail
        return JSONResponse({"error": {"message": str(exc.detail), "type": _ERROR_TYPES.get(exc.status_code, "error"),
                                       "code": exc.status_code}, "detail": exc.detail},
                            status_code=exc.status_code, headers=exc.headers)

    def prepare(request: ChatRequest):
        try:
            thinking, source = request_thinking(request.chat_template_kwargs, defaults)
        except Refused as exc:
            raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None
        parts = lfbridge.api_messages(request)
        kw, ignored = generation(request, thinking, defaults)
        budget = "request" if (request.max_completion_tokens or request.max_tokens) else "default"
        note = (f"thinking {'on' if thinking else 'off'} ({source}), max_tokens {kw['max_new_tokens']} ({budget})"
                + (f", ignored: {', '.join(ignored)}" if ignored else ""))
        return thinking, parts, kw, note

    def begin(thinking: bool, parts: tuple) -> None:  # holding the lock
        if defaults.can_think:
            lfbridge.use_thinking(model, thinking)
        if defaults.log_prompts:
            defaults.log("prompt: " + json.dumps(lfbridge.rendered_prompt(model, parts[0], parts[1], parts[2]),
                                                 ensure_ascii=False))

    @app.post(lfbridge.CHAT_COMPLETIONS, dependencies=checks)
    async def chat_completions(request: ChatRequest):
        if request.stream and request.n > 1:
            raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail="Cannot stream multiple responses.")
        thinking, parts, kw, note = prepare(request)
        if request.stream:
            if parts[2]:
                raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail="Cannot stream function calls.")
            return EventSourceResponse(_stream(request, parts, kw, note, thinking), media_type="text/event-stream",
                                       sep="\n")
        started = time.monotonic()
        async with one_at_a_time:
            begin(thinking, parts)
            replies = await model.achat(*parts, **kw)
        body = _completion(model, request, replies, tools=bool(parts[2]))
        usage = body["usage"]
        defaults.log(f"reply: {note}, {usage['prompt_tokens']}+{usage['completion_tokens']} tokens, "
                     f"{', '.join(c['finish_reason'] for c in body['choices'])}, {time.monotonic() - started:.1f}s")
        return body

    async def _stream(request, parts, kw, note, thinking) -> AsyncIterator[str]:
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict, finish: str | None = None) -> str:
            return json.dumps({"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                               "model": request.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]},
                              ensure_ascii=False)

        started, split = time.monotonic(), ReasoningStream()
        yield chunk({"role": "assistant", "content": ""})
        async with one_at_a_time:
            begin(thinking, parts)
            async for piece in model.astream_chat(*parts, **kw):
                for delta in _deltas(split.feed(piece)):
                    yield chunk(delta)
        for delta in _deltas(split.finish()):
            yield chunk(delta)
        yield chunk({}, "stop")
        yield "[DONE]"
        defaults.log(f"streamed reply: {note}, {time.monotonic() - started:.1f}s")

    return app


def _deltas(pair: tuple[str, str]) -> list[dict]:
    reasoning, content = pair
    return ([{"reasoning_content": reasoning}] if reasoning else []) + ([{"content": content}] if content else [])


def _completion(model, request: ChatRequest, replies, *, tools: bool) -> dict:
    """The chat.completion body: each reply's reasoning apart from its answer (or its tool calls)."""
    from .. import lfbridge

    choices, prompt, completion = [], 0, 0
    for i, reply in enumerate(replies):
        reasoning, answer = split_reply(reply.response_text)
        message: dict[str, Any] = {"role": "assistant", "content": answer, "reasoning_content": reasoning}
        finish = "stop" if reply.finish_reason == "stop" else "length"
        calls = lfbridge.extract_tool_calls(model, answer) if tools else None
        if calls:
            message["content"] = None
            message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex}", "type": "function", "function": call}
                                     for call in calls]
            finish = "tool_calls"
        choices.append({"index": i, "message": message, "finish_reason": finish})
        prompt, completion = reply.prompt_length, completion + reply.response_length
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": request.model, "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}
