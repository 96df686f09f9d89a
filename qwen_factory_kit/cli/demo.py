"""``qfk demo``."""

from __future__ import annotations

import click

from .common import console, emit_json


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False), default="qfk-demo", show_default=True,
              help="Folder for the demo workspace (its data/ is LLaMA-Factory's dataset_dir).")
@click.option("--no-train", is_flag=True, help="Stop after converting, registering and linting (no model, seconds).")
@click.option("--no-eval", is_flag=True, help="Train, but skip qfk eval (base vs tuned) and qfk merge.")
@click.option("--json", "as_json", is_flag=True, help="Print each step's summary as JSON.")
def demo(workdir, no_train, no_eval, as_json):
    """Run the kit's path on the bundled example data: offline, no GPU, about a minute.

    Converts each bundled example, registers it in WORKDIR/data/dataset_info.json and lints it
    with the template and enable_thinking its think mode calls for. Then builds a tiny
    Qwen3-architecture model (real Qwen3 tokenizer, random weights, cached), writes
    WORKDIR/demo-lora.yaml with qfk recipe new --device cpu (medical + FineTome 75/25) and
    trains it a few steps with qfk train: loss plot, run record and summary in
    WORKDIR/saves/demo-lora. Then evaluates the run against its base model on held-out rows
    (qfk eval --base auto: metrics.json, predictions.jsonl, report.html) and merges the adapter
    (qfk merge: WORKDIR/saves/demo-lora-merged with Qwen3's sampling in generation_config.json).
    The model's answers are nonsense: the demo shows the pipeline. It ends with the tiny model's
    folder and the three commands that put your own rows through the same CPU path
    (qfk convert, qfk recipe new --model qfk-tiny --device cpu, qfk train).

    \b
    Examples:
      qfk demo
      qfk demo --workdir /tmp/qfk-demo --json
      qfk demo --no-train
    """
    from ..demo import run_demo

    out = console()

    def show(step, res, report):
        if as_json:
            return
        s = res.summary()
        out.print(f"[bold green]✓[/] {step.title}")
        out.print(f"    qfk convert {step.converter} {step.source}  ->  {s['output']}")
        rej = ", ".join(f"{k} {v}" for k, v in s["rejected_by_reason"].items()) or "none"
        out.print(f"    read {s['read']} = written {s['written']} + rejected {s['rejected']} ({rej}); "
                  f"{s['rows_out']} rows out; think mode {s['think']['mode']}; registered as {', '.join(s['registered'])}")
        et = {True: "true", False: "false", None: "null"}[report["enable_thinking"]]
        out.print(f"    qfk lint {s['name']} --template {report['template']} --enable-thinking {et}: "
                  f"{report['errors']} errors, {report['warnings']} warnings")

    results = run_demo(workdir, on_step=show)
    trained = None
    if not no_train:
        from ..demo import train_demo
        from ..post.training import summary_lines

        if not as_json:
            out.print("[bold]training the tiny Qwen3 model on CPU[/] (qfk recipe new + qfk train) ...")
        path, recipe, trained = train_demo(workdir, console=console(stderr=True))
        if not as_json:
            mark = "[bold green]✓[/]" if trained.returncode == 0 else "[bold red]✗[/]"
            out.print(f"{mark} {path}: template {recipe.info['template']}, enable_thinking "
                      f"{ {True: 'true', False: 'false', None: 'null'}[recipe.info['enable_thinking']] }, "
                      f"mix {recipe.args['dataset']}")
            for line in summary_lines(trained.summary, base=workdir) if trained.summary else []:
                out.print(f"    {line}")
            out.print(f"    run record: {workdir}/{trained.output_dir}/qfk_run.json")
    evaluated = None
    if trained is not None and trained.returncode == 0 and not no_eval:
        from ..demo import evaluate_and_merge_demo

        if not as_json:
            out.print("[bold]evaluating base vs tuned and merging the adapter[/] (qfk eval --base auto, qfk merge) ...")
        outcome, merged = evaluate_and_merge_demo(workdir, trained.output_dir, console=console(stderr=True))
        evaluated = {"eval": {"out": str(outcome.out), "files": outcome.files}, "merge": merged.as_dict()}
        if not as_json:
            out.print(f"[bold green]✓[/] qfk eval: {workdir}/{outcome.out}/metrics.json, predictions.jsonl")
            out.print(f"[bold green]✓[/] qfk merge: {workdir}/{merged.out} (generation_config.json with Qwen3's sampling, "
                      f"qfk_serving.json, Ollama Modelfile); serve it: qfk serve {workdir}/{merged.out}")
            out.print(f"report: {workdir}/{outcome.files['report_html']}")
    from ..demo import OWN_DATA_NOTE, own_data_commands
    from ..tiny import TINY_ALIAS, is_built, tiny_model_dir

    tiny, own = tiny_model_dir(), own_data_commands()
    if as_json:
        emit_json({"steps": [{"step": st.title, **res.summary(),
                              "lint": {k: rep[k] for k in ("errors", "warnings", "by_rule", "template", "enable_thinking")}}
                             for st, res, rep in results],
                   "train": trained.as_dict() if trained else None, **(evaluated or {}),
                   "tiny_model": str(tiny), "own_data": own})
    else:
        out.print(f"\nworkspace: {workdir}/data  (rejected rows and their reasons are in *.rejects.jsonl)")
        out.print(f"next: cd {workdir} && qfk datasets list && qfk recipe check {'demo-lora.yaml' if not no_train else '...'}"
                  f" && llamafactory-cli train demo-lora.yaml")
        built = "" if is_built(tiny) else ", built on first use"
        out.print(f"\ntiny model: {tiny}  (--model {TINY_ALIAS}: random weights, the real Qwen3 tokenizer{built})", soft_wrap=True)
        out.print("your own rows through the same CPU path, from any folder (its ./data holds the datasets):")
        for command in own:
            out.print(f"  {command}", soft_wrap=True, markup=False, highlight=False)
        out.print(f"  ({OWN_DATA_NOTE})", soft_wrap=True, markup=False, highlight=False)
    if trained is not None and trained.returncode != 0:
        from ..errors import QfkError

        raise QfkError(f"the demo training failed: {trained.error}", f"see {trained.log}")
