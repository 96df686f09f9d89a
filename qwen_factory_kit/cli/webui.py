"""``qfk webui``."""

from __future__ import annotations

import click

from .common import emit_json


def say(line: str) -> None:
    click.echo(line, err=True)


@click.command("webui")
@click.option("--data-dir", type=click.Path(file_okay=False), help="The data dir the WebUI lists datasets from "
              "[default: the first --recipe's dataset_dir, relative to that recipe's folder; without one "
              "$QFK_DATA_DIR, else ./data].")
@click.option("--recipe", "recipes", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A training recipe to offer under Load arguments (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; GRADIO_SERVER_NAME is not read).")
@click.option("--port", default=None, metavar="P|auto",
              help="Port, or auto for a free one [default: $GRADIO_SERVER_PORT, else 7860].")
@click.option("--share", is_flag=True, help="Also publish a public gradio.live link.")
@click.option("--dry-run", is_flag=True,
              help="Print host, port, data dir and the arguments files, then exit: nothing is written or started.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON.")
def webui(data_dir, recipes, host, port, share, dry_run, as_json):
    """LLaMA-Factory's WebUI on the kit's data dir, with recipes under Load arguments.

    Lists the datasets of --data-dir (by default the first --recipe's dataset_dir, read from that
    recipe's folder as qfk train reads it run from there) whatever folder you start it from (it runs
    in the folder that holds the data dir: saves/ and llamaboard_config/ go there). Each --recipe
    R.yaml becomes llamaboard_config/R.yaml: in the Train tab pick R.yaml under "Config path" and
    press "Load arguments"; recipe keys without a WebUI field are carried in "Extra arguments" and
    listed at startup. Training started from the WebUI runs through the kit's entry module (as qfk train), so
    qfk_* raw-row datasets train too. Listens on 127.0.0.1 unless --host says otherwise; one Ctrl-C
    (or SIGTERM) at any moment stops it (exit 130).

    \b
    Examples:
      qfk webui
      qfk webui --data-dir ~/work/data --recipe sft.yaml --port auto
      qfk webui --recipe sft.yaml --dry-run
    """
    from ..launch.webui import plan_webui, serve, startup_lines, stop_signals, write_args_files

    if as_json and not dry_run:
        raise click.UsageError("--json goes with --dry-run (a running WebUI prints its URL)")
    with stop_signals():  # from the first step: one Ctrl-C at any moment stops it, in a background job too
        plan = plan_webui(data_dir=data_dir, recipes=recipes, host=host, port=port, share=share)
        if dry_run and as_json:
            emit_json(plan.as_dict())
            return 0
        for line in startup_lines(plan):
            say(line)
        if dry_run:
            say(f"would serve {plan.url} (dry run: nothing written or started)")
            return 0
        for name in write_args_files(plan):
            say(f"registered mix entry {name} in {plan.data_dir}/dataset_info.json")
        say("starting LLaMA-Factory's WebUI (about 20 s)")
        return serve(plan, say=say)
