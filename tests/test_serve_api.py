"""qfk serve: an OpenAI-compatible API for a model served as it was trained, tried with the stock
``openai`` client.

* The think split: the reasoning in ``reasoning_content``, the answer in ``content``, streamed and
  not, the same; a request's think mode (``chat_template_kwargs``), Qwen3's sampling for that mode
  and the reply budget where the request says nothing. These run the real app (LLaMA-Factory's api
  app with our chat route) under uvicorn with a scripted chat model, since the tiny model's
  replies are random tokens and never hold a think block.
* The real thing (slow): ``python -m qwen_factory_kit serve`` on the tiny model, on CPU, as a
  user starts it; the URL read from what it prints; a completion, a stream, 401 without the key,
  the prompt the template rendered (``--log-prompts``) in the trained think mode and in the one a
  request asks for, the socket bound to 127.0.0.1 only, and SIGINT (130) / SIGTERM (0) with no
  traceback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

openai = pytest.importorskip("openai")

from qwen_factory_kit.errors import QfkError  # noqa: E402
from qwen_factory_kit.post.budget import Budget  # noqa: E402
from qwen_factory_kit.post.openai_api import (ApiDefaults, ChatRequest, ReasoningStream, Refused,  # noqa: E402
                                              generation, request_thinking, split_reply)
from qwen_factory_kit.post.serve import (ServePlan, base_url, bind, plan_serve, ready_lines,  # noqa: E402
                                         start_server, startup_lines, stop_server)
from qwen_factory_kit.post.served import ServedModel  # noqa: E402
from qwen_factory_kit.recipe import presets  # noqa: E402

THOUGHT = "<think>\nFirst, 6 x 7.\nThat is 42.\n</think>\n\nThe answer is 42."
HELLO = [{"role": "user", "content": "What is 6 x 7?"}]


def _defaults(*, thinking=True, can_think=True, log=lambda line: None) -> ApiDefaults:
    return ApiDefaults(thinking, can_think, {m: presets.sampling(m) for m in (True, False)}, {True: 300, False: 100}, log)


# --------------------------------------------------------------------------------------------
# the think split, the think mode of a request, its generation keywords
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, reasoning, content", [
    (THOUGHT, "First, 6 x 7.\nThat is 42.", "The answer is 42."),
    ("<think>\n\n</think>\n\nJust the answer.", "", "Just the answer."),     # the empty block
    ("Just the answer.", None, "Just the answer."),                          # enable_thinking false: no block
    ("<think>\nstill thinking when max_tokens cut it </th", "still thinking when max_tokens cut it </th", ""),
    ("<thi", None, "<thi"),
])
def test_streamed_and_whole_replies_split_the_same(text, reasoning, content):
    assert split_reply(text) == (reasoning, content)
    for step in (1, 3, 7):
        stream, got = ReasoningStream(), ["", ""]
        for i in range(0, len(text), step):
            r, c = stream.feed(text[i:i + step])
            got = [got[0] + r, got[1] + c]
        r, c = stream.finish()
        got = [got[0] + r, got[1] + c]
        assert (got[0].strip() if reasoning is not None else None, got[1].strip()) == (reasoning, content), step
        assert "<think>" not in got[1] and "</think>" not in got[1]


def test_a_request_switches_the_think_mode():
    d = _defaults()
    assert request_thinking(None, d) == (True, "trained")
    assert request_thinking({"enable_thinking": False}, d) == (False, "chat_template_kwargs")
    assert request_thinking({"other": 1}, _defaults(thinking=False)) == (False, "trained")
    with pytest.raises(Refused, match="true or false"):
        request_thinking({"enable_thinking": "no"}, d)
    with pytest.raises(Refused, match="never thinks"):
        request_thinking({"enable_thinking": True}, _defaults(thinking=False, can_think=False))


def test_what_a_request_leaves_out_is_qwen3s_sampling_and_the_budget_of_its_mode():
    d = _defaults()
    request = ChatRequest(model="m", messages=HELLO)
    kw, ignored = generation(request, True, d)
    assert kw == {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "max_new_tokens": 300,
                  "num_return_sequences": 1} and ignored == []
    kw, _ = generation(request, False, d)
    assert (kw["temperature"], kw["top_p"], kw["top_k"], kw["max_new_tokens"]) == (0.7, 0.8, 20, 100)
    request = ChatRequest(model="m", messages=HELLO, temperature=0.2, top_k=5, max_tokens=9, presence_penalty=1.5,
                          repetition_penalty=1.05, stop=["\n"])
    kw, ignored = generation(request, True, d)
    assert (kw["temperature"], kw["top_p"], kw["top_k"], kw["max_new_tokens"], kw["repetition_penalty"]) == \
        (0.2, 0.95, 5, 9, 1.05)
    assert ignored == ["presence_penalty", "stop"]
    assert generation(ChatRequest(model="m", messages=HELLO, max_completion_tokens=12), True, d)[0]["max_new_tokens"] == 12


# --------------------------------------------------------------------------------------------
# the plan: what is served, where, with which key; what is printed
# --------------------------------------------------------------------------------------------
def _plan(*, host="127.0.0.1", api_key=None, thinking=True, template="qwen3") -> ServePlan:
    served = ServedModel("merged", "models/med", "models/med", None, template, thinking)
    return ServePlan(served, host, 0, api_key, "--api-key" if api_key else None, thinking,
                     {True: Budget(300, 4096, source="t"), False: Budget(100, 1024, source="t")}, "med")


def _merged(folder: Path, tiny: Path, enable_thinking: bool) -> Path:
    """A folder as qfk merge leaves it (the tiny model's files and qfk_serving.json)."""
    folder.mkdir()
    for f in tiny.iterdir():
        (folder / f.name).symlink_to(f)
    (folder / "qfk_serving.json").write_text(json.dumps({"template": "qwen3", "enable_thinking": enable_thinking}))
    return folder


def test_plan_takes_the_trained_mode_the_key_and_the_port(tmp_path, tiny_model):
    merged = _merged(tmp_path / "med", tiny_model, False)
    plan = plan_serve(str(merged), environ={})
    assert (plan.thinking, plan.host, plan.port, plan.api_key, plan.model_name) == (False, "127.0.0.1", 0, None, "med")
    assert plan.budgets[False].max_new_tokens == 1024 and plan.budgets[True].max_new_tokens == 4096
    plan = plan_serve(str(merged), port="8123", think=True, max_new_tokens=16, environ={"API_KEY": "k1"})
    assert (plan.thinking, plan.port, plan.api_key, plan.key_from, plan.budgets[True].max_new_tokens) == \
        (True, 8123, "k1", "$API_KEY", 16)
    assert plan_serve(str(merged), api_key="k2", environ={"API_KEY": "k1"}).key_from == "--api-key"
    with pytest.raises(QfkError, match="neither a number nor auto"):
        plan_serve(str(merged), port="eighty", environ={})


def test_another_host_warns_and_recommends_a_key():
    assert not any(line.startswith("warning:") for line in startup_lines(_plan()))
    warning = [line for line in startup_lines(_plan(host="0.0.0.0")) if line.startswith("warning:")]
    assert len(warning) == 1 and "reachable from the network" in warning[0] and "--api-key" in warning[0]
    warning = [line for line in startup_lines(_plan(host="0.0.0.0", api_key="k")) if line.startswith("warning:")]
    assert "reachable from the network" in warning[0] and "--api-key" not in warning[0]
    assert base_url("0.0.0.0", 8000) == "http://127.0.0.1:8000/v1" and base_url("::1", 8) == "http://[::1]:8/v1"


def test_ready_lines_are_copy_pasteable():
    lines = ready_lines(_plan(api_key="k"), 8123)
    assert lines[0].startswith("OpenAI-compatible API: http://127.0.0.1:8123/v1")
    python = "\n".join(line[4:] for line in lines if line.startswith("    "))
    compile(python, "snippet", "exec")  # the python lines run as they are
    assert 'api_key=os.environ["API_KEY"]' in python and '"k"' not in "\n".join(lines)  # the key is never printed
    curl = next(line for line in lines if line.startswith("  curl: "))
    assert "http://127.0.0.1:8123/v1/chat/completions" in curl and 'Bearer $API_KEY' in curl
    assert "Bearer" not in "\n".join(ready_lines(_plan(), 8123))  # no key: no header
    assert '"enable_thinking": False' in lines[-1]


def test_a_port_in_use_is_refused_before_loading(tmp_path, tiny_model, qfk):
    taken = bind("127.0.0.1", 0)
    taken.listen(1)
    try:
        code, _, err = qfk("serve", str(_merged(tmp_path / "med", tiny_model, False)), "--port",
                           str(taken.getsockname()[1]))
    finally:
        taken.close()
    assert code == 2 and "cannot listen on 127.0.0.1:" in err and "--port auto" in err and "loading" not in err, err


# --------------------------------------------------------------------------------------------
# the app with a scripted model: reasoning_content, the think mode and sampling of each request, the key
# --------------------------------------------------------------------------------------------
class ScriptedModel:
    """What the app uses of LLaMA-Factory's ChatModel; replies ``reply`` and records each call with
    the think mode the template was set to."""

    def __init__(self, reply: str):
        self.reply, self.calls = reply, []
        self.engine = SimpleNamespace(name="scripted", can_generate=True,
                                      template=SimpleNamespace(enable_thinking=None, extract_tool=lambda text: text))

    def _record(self, messages, system, kw):
        self.calls.append({"messages": messages, "system": system, "thinking": self.engine.template.enable_thinking, **kw})

    async def achat(self, messages, system=None, tools=None, images=None, videos=None, audios=None, **kw):
        self._record(messages, system, kw)
        return [SimpleNamespace(response_text=self.reply, response_length=11, prompt_length=5, finish_reason="stop")]

    async def astream_chat(self, messages, system=None, tools=None, images=None, videos=None, audios=None, **kw):
        self._record(messages, system, kw)
        for i in range(0, len(self.reply), 4):
            yield self.reply[i:i + 4]


@pytest.fixture(scope="module")
def scripted():
    """The app serving a ScriptedModel (thinking trained) with key 'k', under uvicorn as qfk serve runs it."""
    model, log = ScriptedModel(THOUGHT), []
    plan = _plan(api_key="k")  # trained thinking
    sock = bind("127.0.0.1", 0)
    server, thread = start_server(plan, model, sock, log.append)
    url = base_url("127.0.0.1", sock.getsockname()[1])
    yield SimpleNamespace(model=model, log=log, url=url,
                          client=openai.OpenAI(base_url=url, api_key="k", max_retries=0))
    assert stop_server(server, thread)


def test_reasoning_content_apart_from_the_answer(scripted):
    message = scripted.client.chat.completions.create(model="med", messages=HELLO).choices[0].message
    assert message.content == "The answer is 42." and message.reasoning_content == "First, 6 x 7.\nThat is 42."
    call = scripted.model.calls[-1]
    assert call["thinking"] is True and call["messages"] == HELLO
    assert (call["temperature"], call["top_p"], call["top_k"], call["max_new_tokens"]) == (0.6, 0.95, 20, 300)
    assert scripted.log[-1].startswith("reply: thinking on (trained), max_tokens 300 (default), 5+11 tokens, stop")


def test_streamed_reasoning_content_on_the_deltas(scripted):
    reasoning, content, finish = "", "", []
    for chunk in scripted.client.chat.completions.create(model="med", messages=HELLO, stream=True):
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
        finish.append(chunk.choices[0].finish_reason)
        assert "think>" not in (delta.content or "")
    assert reasoning.strip() == "First, 6 x 7.\nThat is 42." and content == "The answer is 42."
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert scripted.log[-1].startswith("streamed reply: thinking on (trained)")


def test_a_request_turns_thinking_off_with_the_sampling_of_that_mode(scripted):
    scripted.client.chat.completions.create(model="med", messages=[{"role": "system", "content": "Be brief."}, *HELLO],
                                            max_tokens=7, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    call = scripted.model.calls[-1]
    assert call["thinking"] is False and call["system"] == "Be brief."
    assert (call["temperature"], call["top_p"], call["max_new_tokens"]) == (0.7, 0.8, 7)
    assert "thinking off (chat_template_kwargs), max_tokens 7 (request)" in scripted.log[-1]
    scripted.client.chat.completions.create(model="med", messages=HELLO)  # the next request: the trained mode again
    assert scripted.model.calls[-1]["thinking"] is True
    with pytest.raises(openai.BadRequestError, match="true or false"):
        scripted.client.chat.completions.create(model="med", messages=HELLO,
                                                extra_body={"chat_template_kwargs": {"enable_thinking": "off"}})


def test_the_key_is_required(scripted):
    for key in ("wrong", "none"):
        with pytest.raises(openai.AuthenticationError) as info:
            openai.OpenAI(base_url=scripted.url, api_key=key, max_retries=0).chat.completions.create(
                model="med", messages=HELLO)
        assert info.value.status_code == 401
    assert _status(scripted.url + "/models") == 401  # no Authorization header at all
    assert _status(scripted.url + "/models", key="k") == 200
    assert [m.id for m in scripted.client.models.list()] == [os.environ.get("API_MODEL_NAME", "med")]


def _status(url: str, *, key: str | None = None, body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# --------------------------------------------------------------------------------------------
# the real thing: qfk serve on the tiny model (CPU), as a user starts it
# --------------------------------------------------------------------------------------------
class Served:
    """``python -m qwen_factory_kit serve ARGS`` in a process: its URL, its stderr lines as they come."""

    def __init__(self, *args: str, cwd: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("API_KEY", None)
        self.process = subprocess.Popen([sys.executable, "-m", "qwen_factory_kit", "serve", *args, "--port", "auto"],
                                        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        threading.Thread(target=lambda: self.err.extend(self.process.stderr), daemon=True).start()
        self.out = []
        for line in self.process.stdout:  # the first line once it accepts requests
            self.out.append(line)
            break
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", "".join(self.out))
        assert match, (self.out, self.stderr())
        self.url, self.port = match.group(), int(match.group(1))
        threading.Thread(target=lambda: self.out.extend(self.process.stdout), daemon=True).start()

    def stderr(self) -> str:
        return "".join(self.err)

    def logged(self, start: str, since: int = 0) -> list[str]:
        deadline = time.time() + 10
        while time.time() < deadline:
            found = [line.rstrip("\n") for line in self.err[since:] if line.startswith(start)]
            if found:
                return found
            time.sleep(0.05)
        return []

    def stop(self, sig) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(60)
        time.sleep(0.2)
        return code, self.stderr()


@pytest.fixture(scope="module")
def served_tiny(tiny_model, tmp_path_factory):
    """qfk serve qfk-tiny (trained thinking: the base model) with a key, prompts logged, 8 new tokens."""
    served = Served("qfk-tiny", "--api-key", "s3cret", "--log-prompts", "--max-new-tokens", "8",
                    cwd=tmp_path_factory.mktemp("serve"))
    yield served
    if served.process.poll() is None:
        served.process.kill()
        served.process.wait(30)


PROMPT = "<|im_start|>user\nWhat is 6 x 7?<|im_end|>\n<|im_start|>assistant\n"


def _prompt(served: Served, since: int) -> str:
    lines = served.logged("prompt: ", since)
    assert lines, served.stderr()
    return json.loads(lines[-1][len("prompt: "):])


@pytest.mark.slow
def test_tiny_completion_in_the_trained_think_mode(served_tiny):
    client = openai.OpenAI(base_url=served_tiny.url, api_key="s3cret", max_retries=0)
    since = len(served_tiny.err)
    response = client.chat.completions.create(model="qfk-tiny", messages=HELLO, max_tokens=4)
    choice = response.choices[0]
    assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    assert "reasoning_content" in choice.message.model_dump()  # the field is always there (null: no think block)
    assert 0 < response.usage.completion_tokens <= 4 and response.usage.prompt_tokens > 0
    assert _prompt(served_tiny, since) == PROMPT  # thinking (qwen3, enable_thinking true): no empty block in the prompt
    assert served_tiny.logged("reply: thinking on (trained), max_tokens 4 (request)", since), served_tiny.stderr()
    since = len(served_tiny.err)
    client.chat.completions.create(model="qfk-tiny", messages=HELLO)
    assert served_tiny.logged("reply: thinking on (trained), max_tokens 8 (default)", since), served_tiny.stderr()


@pytest.mark.slow
def test_tiny_stream(served_tiny):
    client = openai.OpenAI(base_url=served_tiny.url, api_key="s3cret", max_retries=0)
    chunks = list(client.chat.completions.create(model="qfk-tiny", messages=HELLO, max_tokens=8, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    text = "".join((c.choices[0].delta.content or "") + (getattr(c.choices[0].delta, "reasoning_content", None) or "")
                   for c in chunks)
    assert text.strip() and len({c.id for c in chunks}) == 1


@pytest.mark.slow
def test_tiny_request_without_thinking(served_tiny):
    client = openai.OpenAI(base_url=served_tiny.url, api_key="s3cret", max_retries=0)
    since = len(served_tiny.err)
    message = client.chat.completions.create(model="qfk-tiny", messages=HELLO, max_tokens=4, extra_body={
        "chat_template_kwargs": {"enable_thinking": False}}).choices[0].message
    assert _prompt(served_tiny, since) == PROMPT + "<think>\n\n</think>\n\n"  # the empty block is in the prompt
    assert message.reasoning_content is None  # the reply opens with no think block


@pytest.mark.slow
def test_tiny_needs_the_key(served_tiny):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served_tiny.url, api_key="wrong", max_retries=0).chat.completions.create(
            model="qfk-tiny", messages=HELLO, max_tokens=2)
    assert _status(served_tiny.url + "/chat/completions", body={"model": "m", "messages": HELLO}) == 401
    assert _status(served_tiny.url + "/models", key="s3cret") == 200


def _listening(port: int) -> dict[str, list[str]]:
    """The local addresses (hex, as /proc/net lists them) listening on ``port``, by table."""
    found: dict[str, list[str]] = {}
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.setdefault(table, []).append(address)
    return found


@pytest.mark.slow
def test_tiny_listens_on_the_loopback_only(served_tiny):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux's /proc/net/tcp")
    assert _listening(served_tiny.port) == {"tcp": ["0100007F"]}  # 127.0.0.1, nothing on IPv6 or other addresses


@pytest.mark.slow
def test_tiny_sigterm_stops_it_with_0(served_tiny):  # the last test on served_tiny: it stops it
    code, err = served_tiny.stop(signal.SIGTERM)
    assert code == 0 and "stopping the server" in err and "Traceback" not in err, err


@pytest.mark.slow
def test_merged_non_thinking_model_is_served_without_thinking_and_sigint_stops_it(tmp_path, tiny_model):
    merged = _merged(tmp_path / "med", tiny_model, False)
    served = Served(str(merged), "--log-prompts", "--max-new-tokens", "8", cwd=tmp_path)
    try:
        assert served.logged("  default: non-thinking"), served.stderr()
        client = openai.OpenAI(base_url=served.url, api_key="none", max_retries=0)
        response = client.chat.completions.create(model="med", messages=HELLO)
        assert response.choices[0].message.reasoning_content is None and response.usage.completion_tokens <= 8
        assert _prompt(served, 0) == PROMPT + "<think>\n\n</think>\n\n"  # qfk_serving.json: enable_thinking false
        assert served.logged("reply: thinking off (trained), max_tokens 8 (default)"), served.stderr()
        code, err = served.stop(signal.SIGINT)
        assert code == 130 and "stopping the server" in err and "Traceback" not in err, err
    finally:
        if served.process.poll() is None:
            served.process.kill()
