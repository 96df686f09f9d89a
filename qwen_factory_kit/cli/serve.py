"""``qfk merge``, ``qfk chat``, ``qfk translate`` and ``qfk serve``: after training."""

from __future__ import annotations

import sys

import click

from .common import Waiting, console, emit_json


@click.command("merge")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=True), help="Folder for the merged model (default: RUN_DIR-merged).")
@click.option("--force", is_flag=True, help="Write into a non-empty OUT (its model files are replaced).")
@click.option("--json", "as_json", is_flag=True, help="Print the result (paths, serving settings) as JSON.")
def merge(run_dir, out, force, as_json):
    """Merge a LoRA run's adapter into its base model, ready to serve.

    Reads RUN_DIR/qfk_run.json (base model, template, enable_thinking), writes the export recipe
    (OUT/qfk_merge.yaml: a QLoRA adapter merges onto the unquantized base) and runs
    `llamafactory-cli export` (log: OUT/qfk_merge.log). Then OUT/generation_config.json gets Qwen3's
    recommended sampling for the run's think mode and OUT/qfk_serving.json records how to serve
    it (template, enable_thinking, sampling, base model, adapter, source run, the vLLM command).

    The merged model keeps the think mode it was trained in wherever it is served: for a run
    trained without thinking, the chat template's enable_thinking defaults to false (a client that
    passes nothing gets the empty think block; enable_thinking=True still thinks), and
    OUT/Modelfile (replacing LLaMA-Factory's plain ChatML one) is Ollama's Qwen3 format with the
    think switch, Qwen3's sampling for the mode and the ChatML stop tokens. A full fine-tune has
    nothing to merge: its output_dir is the model.

    \b
    Examples:
      qfk merge saves/qwen3-4b/lora/medical_r1
      qfk merge saves/qwen3-4b/lora/medical_r1 -o models/medical-4b
      qfk merge saves/qwen3-4b/lora/medical_r1/checkpoint-500 -o models/medical-4b-500 --force
      ollama create medical-4b -f models/medical-4b/Modelfile     # after the merge
    """
    from ..post.merge import plan_merge, run_merge
    from ..recipe.build import invoked_command

    plan = plan_merge(run_dir, out, force=force, command=invoked_command(sys.argv, ("merge",)))
    mode = "thinking" if plan.thinking else "non-thinking"
    for warning in plan.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    click.echo(f"merging {plan.recipe.args['adapter_name_or_path']} into {plan.recipe.args['model_name_or_path']} "
               f"(template {plan.recipe.info['template']}, {mode}) -> {plan.out}", err=True)
    with Waiting(console(stderr=True), "llamafactory-cli export") as wait:
        result = run_merge(plan, on_stage=wait.stage)
    if as_json:
        emit_json(result.as_dict())
        return 0
    for line in merged_lines(result):
        click.echo(line, err=True)
    return 0


def merged_lines(result) -> list[str]:
    s = result.serving
    sampling = ", ".join(f"{k} {v}" for k, v in s["sampling"].items() if k != "do_sample")
    lines = [f"merged model: {result.out}",
             f"  generation_config.json: {s['sampling_source']}: {sampling}",
             f"  qfk_serving.json: template {s['template']}, enable_thinking {str(s['enable_thinking']).lower()}",
             f"  recipe: {result.files['recipe']}   log: {result.files['log']}"]
    template = s.get("chat_template") or {}
    lines.append(f"  chat template: {template.get('file')} " + ("changed: " if template.get("changed") else "kept: ")
                 + str(template.get("why")) if template.get("file") else f"  chat template: {template.get('why')}")
    lines.append(f"  Ollama: {result.modelfile} (Qwen3's think switch, sampling and stops): "
                 f"ollama create {result.out.name} -f {result.modelfile}")
    lines.append(f"  vLLM: {s['vllm_command']}")
    lines += [f"note: {s['serve_note']}", f"next: qfk chat {result.out}"]
    return lines


@click.command("chat")
@click.argument("model")
@click.option("--think/--no-think", default=None, help="Thinking mode (default: the mode the model was trained in).")
@click.option("-m", "--message", help="Answer this one message and exit.")
@click.option("--hide-think", is_flag=True, help="Do not show the reasoning.")
@click.option("--max-new-tokens", type=click.IntRange(min=1),
              help="Longest reply (default: 1.5x the longest response of the run's training rows; "
                   "else 4096 thinking, 1024 not).")
@click.option("--system", help="A system prompt.")
@click.option("--json", "as_json", is_flag=True, help="With -m: print {think, answer} as JSON.")
def chat(model, think, message, hide_think, max_new_tokens, system, as_json):
    """Chat with a model as it was trained: merged folder, run folder or Qwen3 model.

    MODEL is a folder from qfk merge (its qfk_serving.json), a qfk train output_dir (its
    qfk_run.json: base model + adapter, or the model of a full fine-tune), a plain Qwen3 model
    folder or name, or qfk-tiny (the kit's tiny Qwen3, built on first use). It is loaded in this process through LLaMA-Factory's ChatModel with the
    training template and thinking mode, and Qwen3's recommended sampling for that mode.

    The reasoning streams dimmed on stderr, the answer on stdout. A line ending with a backslash
    continues on the next line; /reset clears the history; /exit (or Ctrl-D) quits. The history
    keeps the answers only, as Qwen's chat template does.

    \b
    Examples:
      qfk chat models/medical-4b
      qfk chat saves/qwen3-4b/lora/medical_r1 --no-think
      qfk chat models/medical-4b -m "What causes anaemia?" --hide-think
      qfk chat models/medical-4b -m "hi" --json
      qfk chat qfk-tiny -m "hi" --max-new-tokens 16
    """
    from ..errors import QfkError
    from ..post.chat import ChatSession
    from ..post.served import resolve_served

    if as_json and message is None:
        raise QfkError("--json needs -m MESSAGE", 'qfk chat MODEL -m "hello" --json')
    from ..post.chat import think_mode
    from ..post.served import reply_budget

    served = resolve_served(model)
    budget = reply_budget(served, think_mode(served, think), max_new_tokens)
    with Waiting(console(stderr=True), f"loading {served.describe()}"):
        session = ChatSession(served, think=think, max_new_tokens=budget.max_new_tokens, system=system)
    if not as_json:
        click.echo(f"replies: {budget.describe()}", err=True)
    if message is not None:
        reply = _answer(session, message, hide_think=hide_think or as_json, quiet=as_json)
        if as_json:
            emit_json(reply.as_dict())
        return 0
    return _interactive(session, hide_think)


def _answer(session, message: str, *, hide_think: bool, quiet: bool = False):
    """Stream one reply: the reasoning dimmed on stderr (unless hidden), the answer on stdout."""
    err = console(stderr=True)
    thought = False
    for piece in session.stream(message):
        if quiet:
            continue
        if piece.kind == "think":
            if hide_think and not thought:
                err.print("(thinking ...)", style="dim", markup=False, highlight=False)
            elif not hide_think:
                err.print(piece.text, style="dim", end="", markup=False, highlight=False, soft_wrap=True)
            thought = True
            continue
        if thought and not hide_think:
            click.echo("", err=True)
        thought = False
        click.echo(piece.text, nl=False)
    if not quiet:
        click.echo("")
    return session.last


def _interactive(session, hide_think: bool) -> int:
    from ..post.chat import COMMANDS, command_of, read_message

    mode = "thinking" if session.thinking else "non-thinking"
    sampling = ", ".join(f"{k} {v}" for k, v in session.generation.items() if k != "do_sample")
    click.echo(f"{mode} mode ({sampling}). A line ending with \\ continues on the next; "
               + "; ".join(f"{k}: {v}" for k, v in COMMANDS.items()), err=True)
    while True:
        message = read_message(input)
        if message is None:
            return 0
        command = command_of(message)
        if command == "/exit":
            return 0
        if command == "/reset":
            session.reset()
            click.echo("history cleared", err=True)
            continue
        if message.strip():
            _answer(session, message, hide_think=hide_think)


@click.command("translate")
@click.argument("model")
@click.argument("text", required=False)
@click.option("--src", required=True, help="Source language code (en, zh_TW, ja ...).")
@click.option("--tgt", required=True, help="Target language code.")
@click.option("--instruction-template", help="The converter's --instruction-template (default: the training data's, "
                                             "else 'Translate {src_tag} to {tgt_tag}.').")
@click.option("--system", help="The converter's --system prompt (default: the training data's, else the converter's).")
@click.option("--max-new-tokens", type=click.IntRange(min=1),
              help="Longest translation (default: 1.5x the longest target of the run's training rows, else 1024).")
def translate(model, text, src, tgt, instruction_template, system, max_new_tokens):
    """Translate TEXT (or each line of stdin) with the prompt the model was trained on.

    The prompt is exactly the one `qfk convert moses` writes into training rows: its instruction
    with the language tags (Translate <en> to <ja>.), its system prompt, the text; when MODEL's
    run record names Moses training data, that data's prompt options. Decoding is deterministic
    (do_sample false) in non-thinking mode; only the answer is printed. From stdin: one
    translation per line (line breaks inside a translation become spaces; an empty line stays empty).

    \b
    Examples:
      qfk translate models/opus-1.7b --src zh_TW --tgt en "早安。"
      qfk translate saves/qwen3-1.7b/qlora/opus --src en --tgt ja "Good morning."
      qfk translate models/opus-1.7b --src en --tgt zh_TW < sentences.en > sentences.zh_TW
    """
    from ..post.served import resolve_served
    from ..post.translate import Translator, prompt_options

    from ..post.served import reply_budget

    served = resolve_served(model)
    budget = reply_budget(served, False, max_new_tokens)
    with Waiting(console(stderr=True), f"loading {served.describe()}"):
        translator = Translator(served, src, tgt, options=prompt_options(served, instruction_template, system),
                                max_new_tokens=budget.max_new_tokens)
    click.echo(f"translations: {budget.describe()}", err=True)
    if text is not None:
        click.echo(translator.translate(text))
        return 0
    if sys.stdin.isatty():
        click.echo("translating the lines you type (Ctrl-D ends)", err=True)
    for line in sys.stdin:
        line = line.rstrip("\r\n")
        click.echo(_one_line(translator.translate(line)) if line.strip() else "")
    return 0


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


@click.command("serve")
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, reachable from the network: set --api-key).")
@click.option("--port", default="auto", show_default=True, metavar="N|auto", help="Port, or auto for a free one.")
@click.option("--api-key", help="Requests must send 'Authorization: Bearer KEY' (else 401) [default: $API_KEY, "
                                "LLaMA-Factory's variable; unset: no key].")
@click.option("--think/--no-think", default=None,
              help="Default think mode (default: the mode the model was trained in); a request can still switch it.")
@click.option("--max-new-tokens", type=click.IntRange(min=1),
              help="max_tokens of a request that gives none (default: 1.5x the longest response of the run's "
                   "training rows; else 4096 thinking, 1024 not).")
@click.option("--log-prompts", is_flag=True, help="Also log each request's prompt as rendered by the template (stderr).")
def serve(model, host, port, api_key, think, max_new_tokens, log_prompts):
    """Serve a model as it was trained behind an OpenAI-compatible API (/v1/chat/completions).

    MODEL is what qfk chat takes: a folder from qfk merge, a qfk train output_dir (base model +
    adapter), a Qwen3 model folder or name, or qfk-tiny. It runs LLaMA-Factory's api app in this
    process (Hugging Face backend) with the training template, the trained think mode and Qwen3's
    recommended sampling for it as defaults; a request's own temperature, top_p, top_k and
    max_tokens win. Prints the base URL (http://127.0.0.1:PORT/v1) and a client snippet when it
    accepts requests; one line a request on stderr. Ctrl-C stops it (exit 130), SIGTERM too (exit 0).

    The reasoning of a thinking model is sent apart from the answer, as vLLM and DeepSeek send it:
    message.reasoning_content (streamed: delta.reasoning_content) holds the think block's text,
    content only the answer. A request switches the think mode with
    chat_template_kwargs {"enable_thinking": false} (openai: extra_body=...). Not supported by
    LLaMA-Factory's Hugging Face backend: stop and presence_penalty (ignored; use
    repetition_penalty). Requests are answered one at a time.

    It listens on 127.0.0.1 only unless --host says otherwise: anyone who reaches the port can use
    the model, so set --api-key (or $API_KEY) with --host.

    \b
    Examples:
      qfk serve models/medical-4b
      qfk serve saves/qwen3-4b/lora/medical_r1 --port 8000
      qfk serve models/medical-4b --host 0.0.0.0 --port 8000 --api-key "$(openssl rand -hex 16)"
      qfk serve qfk-tiny --no-think --max-new-tokens 64 --log-prompts
    \b
    A client:
      from openai import OpenAI
      client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
      m = client.chat.completions.create(model="medical-4b", messages=[{"role": "user", "content": "Hi"}],
            extra_body={"chat_template_kwargs": {"enable_thinking": False}}).choices[0].message
      print(m.reasoning_content, m.content)
    """
    from ..launch.signals import stop_signals
    from ..post.serve import plan_serve, serve as run, startup_lines

    def say(line: str) -> None:
        click.secho(line, fg="yellow" if line.startswith("warning:") else None, err=True)

    with stop_signals():  # from the first step (qfk-tiny may be built, training rows read): one Ctrl-C stops it
        plan = plan_serve(model, host=host, port=port, api_key=api_key, think=think, max_new_tokens=max_new_tokens,
                          log_prompts=log_prompts)
        for line in startup_lines(plan):
            say(line)
        return run(plan, say=say, show=click.echo,
                   loading=lambda: Waiting(console(stderr=True), f"loading {plan.served.describe()}"))
