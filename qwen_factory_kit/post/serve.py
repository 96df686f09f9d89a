"""``qfk serve``: a trained model behind an OpenAI-compatible API, served as it was trained.

What is served is what ``qfk chat`` loads (:func:`.served.resolve_served`): a run folder serves
its base model with the adapter, a merged folder itself, ``qfk-tiny`` the kit's tiny model; with
the training template, its think mode as the default and Qwen3's recommended sampling for the
mode; the reply budget (:func:`.served.reply_budget`) is the default ``max_tokens``. The app is
LLaMA-Factory's api app with the reasoning apart from the answer (:mod:`.openai_api`), in this
process under uvicorn.

* It binds 127.0.0.1 unless ``--host`` says otherwise (then a warning, and the advice to set a
  key); ``--port auto`` (the default) lets the system pick a free port: the socket is bound
  before the model loads, so the port is known, and taken, from the start.
* ``--api-key`` (else LLaMA-Factory's ``$API_KEY``) makes every request without
  ``Authorization: Bearer KEY`` fail with 401.
* The URL and a client snippet are printed once it accepts requests (:func:`ready_lines`).
* One Ctrl-C (exit 130) or SIGTERM (exit 0) stops it at any moment, loading included
  (:func:`~qwen_factory_kit.launch.signals.stop_signals`); a reply still being generated after
  the grace time is abandoned.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

from ..errors import QfkError
from ..recipe import presets
from .served import ServedModel, reply_budget, resolve_served

DEFAULT_HOST = "127.0.0.1"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: LLaMA-Factory's api app reads its key from this variable
API_KEY_ENV = "API_KEY"
#: seconds open requests get to finish once a signal came, then seconds more before exiting anyway
GRACE_S = 3
ABANDON_S = 10


@dataclass
class ServePlan:
    served: ServedModel
    host: str
    port: int                         # 0: a free one, picked when the socket is bound
    api_key: str | None
    key_from: str | None              # --api-key | $API_KEY
    thinking: bool                    # the default think mode
    budgets: dict                     # think mode -> Budget: the default max_tokens
    model_name: str                   # the id /v1/models lists
    log_prompts: bool = False

    @property
    def exposed(self) -> bool:
        return self.host not in LOOPBACK


def parse_port(port: str | int | None) -> int:
    """``auto`` (or nothing): 0, a free port picked when binding; else a port number."""
    from ..launch.torchrun import port_number

    return port_number("auto" if port is None else port, 8000) or 0


def plan_serve(model: str, *, host: str = DEFAULT_HOST, port: str | int | None = "auto", api_key: str | None = None,
               think: bool | None = None, max_new_tokens: int | None = None, log_prompts: bool = False,
               environ: dict | None = None) -> ServePlan:
    """What ``qfk serve MODEL`` would serve, and how; nothing is loaded or bound."""
    from .chat import think_mode

    env = os.environ if environ is None else environ
    served = resolve_served(model)
    thinking = think_mode(served, think)
    budgets = {mode: reply_budget(served, mode, max_new_tokens) for mode in (True, False)}
    key, key_from = (api_key, "--api-key") if api_key else (env.get(API_KEY_ENV) or None, f"${API_KEY_ENV}")
    return ServePlan(served, host, parse_port(port), key, key_from if key else None, thinking, budgets,
                     env.get("API_MODEL_NAME") or model_name(served), log_prompts)


def model_name(served: ServedModel) -> str:
    """The name clients use: the folder (or hub id) given, without its path."""
    return Path(str(served.given).rstrip("/\\")).name or str(served.given)


def startup_lines(plan: ServePlan) -> list[str]:
    mode = "thinking" if plan.thinking else "non-thinking"
    sampling = ", ".join(f"{k} {v}" for k, v in presets.sampling(plan.thinking).items() if k != "do_sample")
    lines = [f"serving {plan.served.describe()}",
             f"  default: {mode} ({presets.QWEN_SAMPLING}: {sampling}); "
             f"max_tokens {plan.budgets[plan.thinking].describe().removeprefix('max_new_tokens ')}"]
    if plan.api_key:
        lines.append(f"  API key: from {plan.key_from}; requests without it get 401")
    if plan.exposed:
        lines.append(f"warning: listening on {plan.host}: reachable from the network; anyone who reaches this port "
                     "can use the model" + ("" if plan.api_key else ": set a key with --api-key"))
    return lines


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses (every interface: the loopback one)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1"


def ready_lines(plan: ServePlan, port: int) -> list[str]:
    """The URL, a Python (openai) snippet and a curl line, once requests are accepted."""
    url = base_url(plan.host, port)
    key = 'os.environ["API_KEY"]' if plan.api_key else '"none"'
    auth = ' -H "Authorization: Bearer $API_KEY"' if plan.api_key else ""
    body = json.dumps({"model": plan.model_name, "messages": [{"role": "user", "content": "Hello"}]}, ensure_ascii=False)
    lines = [f"OpenAI-compatible API: {url}   (model {plan.model_name}; Ctrl-C stops it)",
             "  python:",
             f"    {'import os; ' if plan.api_key else ''}from openai import OpenAI; "
             f"client = OpenAI(base_url=\"{url}\", api_key={key})",
             f"    m = client.chat.completions.create(model=\"{plan.model_name}\", "
             "messages=[{\"role\": \"user\", \"content\": \"Hello\"}]).choices[0].message",
             "    print(getattr(m, \"reasoning_content\", None), m.content)",
             f"  curl: curl {url}/chat/completions -H \"Content-Type: application/json\"{auth} -d '{body}'"]
    if plan.api_key:
        lines.append("  (the client's shell needs the key: export API_KEY=...)")
    if plan.host in ("0.0.0.0", "::", ""):
        lines.append(f"  from another machine: {base_url('HOST', port)} (HOST: this machine's address on that network)")
    if plan.served.can_think:
        other = "False" if plan.thinking else "True"
        lines.append(f"  {'non-thinking' if plan.thinking else 'thinking'} for one request: create(..., "
                     f"extra_body={{\"chat_template_kwargs\": {{\"enable_thinking\": {other}}}}})")
    return lines


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise QfkError(f"cannot listen on {host}:{port}: {exc}", "choose another --port, or --port auto") from None
    return sock


def api_defaults(plan: ServePlan, log: Callable[[str], None]):
    from .openai_api import ApiDefaults

    return ApiDefaults(plan.thinking, plan.served.can_think, {m: presets.sampling(m) for m in (True, False)},
                       {m: b.max_new_tokens for m, b in plan.budgets.items()}, log, plan.log_prompts)


def load_model(plan: ServePlan):
    """LLaMA-Factory's ChatModel for the plan: the trained template and default think mode, Qwen3's
    sampling for it and its reply budget."""
    from ..lfbridge import load_chat_model
    from .chat import chat_args

    return load_chat_model(chat_args(plan.served, thinking=plan.thinking, generation=presets.sampling(plan.thinking),
                                     max_new_tokens=plan.budgets[plan.thinking].max_new_tokens))


def serve(plan: ServePlan, *, say: Callable[[str], None], show: Callable[[str], None],
          loading: Callable[[], ContextManager] = contextlib.nullcontext) -> int:
    """Bind, load, serve until SIGINT (130) or SIGTERM (0); ``say``: notes and one line a request,
    ``show``: the ready lines; ``loading``: the context the model loads in (progress)."""
    from ..launch.signals import Stopped, stop_signals

    server = thread = sock = None
    with stop_signals():
        try:
            sock = bind(plan.host, plan.port)
            with loading():
                model = load_model(plan)
            server, thread = start_server(plan, model, sock, say)
            for line in ready_lines(plan, sock.getsockname()[1]):
                show(line)
            while thread.is_alive():
                time.sleep(0.2)
            raise QfkError("the server stopped on its own", "see the messages above")
        except Stopped as exc:
            code = 0 if exc.signum == signal.SIGTERM else 130
        except KeyboardInterrupt:  # Python's own, before the handler was in place
            code = 130
        finally:
            if sock is not None and server is None:
                sock.close()
        say("stopping the server" if server is not None else "stopped before the server was up")
        if server is not None and not stop_server(server, thread):
            say(f"a reply was still being generated after {GRACE_S + ABANDON_S} s: abandoned")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


def start_server(plan: ServePlan, model, sock: socket.socket, say: Callable[[str], None]):
    """uvicorn serving the app on ``sock`` in a thread (the main thread keeps the signals); returns
    once it accepts requests."""
    import uvicorn

    from .openai_api import build_app

    app = build_app(model, api_defaults(plan, say), api_key=plan.api_key, model_name=plan.model_name)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=GRACE_S))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="qfk-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise QfkError("the server did not start", "see the messages above")
        time.sleep(0.05)
    return server, thread


def stop_server(server, thread: threading.Thread) -> bool:
    """Close the server (open requests get :data:`GRACE_S`); False when its thread is still busy
    after :data:`ABANDON_S` more (a reply still being generated)."""
    server.should_exit = True
    thread.join(GRACE_S + ABANDON_S)
    return not thread.is_alive()
