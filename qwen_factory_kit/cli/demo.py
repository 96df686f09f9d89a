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

    \b
    Examples:
      qfk demo
      qfk demo --workdir /tmp/qfk-demo --json
    """
    from ..demo import run_demo

    out = console()

    def show(step, res):
        if as_json:
            return
        s = res.summary()
        out.print(f"[bold green]✓[/] {step.title}")
        out.print(f"    qfk convert {step.converter} {step.source}  ->  {s['output']}")
        rej = ", ".join(f"{k} {v}" for k, v in s["rejected_by_reason"].items()) or "none"
        out.print(f"    read {s['read']} = written {s['written']} + rejected {s['rejected']} ({rej}); "
                  f"{s['rows_out']} rows out; think mode {s['think']['mode']}; registered as {', '.join(s['registered'])}")

    results = run_demo(workdir, on_step=show)
    if as_json:
        emit_json([{"step": st.title, **res.summary()} for st, res in results])
    else:
        out.print(f"\nworkspace: {workdir}/data  (rejected rows and their reasons are in *.rejects.jsonl)")
