"""``qfk demo``."""

from __future__ import annotations

import click

from .common import console, emit_json


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False), default="qfk-demo", show_default=True,
              help="Folder for the demo workspace (its data/ is LLaMA-Factory's dataset_dir).")
@click.option("--json", "as_json", is_flag=True, help="Print each step's summary as JSON.")
def demo(workdir, as_json):
    """Run the kit's path on the bundled example data: offline, no GPU, about a minute.

    Converts each bundled example, registers it in WORKDIR/data/dataset_info.json and lints it
    with the template and enable_thinking its think mode calls for.

    \b
    Examples:
      qfk demo
      qfk demo --workdir /tmp/qfk-demo --json
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
    if as_json:
        emit_json([{"step": st.title, **res.summary(), "lint": {k: rep[k] for k in ("errors", "warnings", "by_rule", "template",
                                                                                   "enable_thinking")}}
                   for st, res, rep in results])
    else:
        out.print(f"\nworkspace: {workdir}/data  (rejected rows and their reasons are in *.rejects.jsonl)")
        out.print(f"next: cd {workdir} && qfk datasets list && qfk stats demo_medical --plot lengths.png")
