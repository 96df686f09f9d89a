"""``qfk doctor``."""

from __future__ import annotations

import click

from .common import console, emit_json


@click.command("doctor")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="QFK_DATA_DIR", help="Data dir to check (default ./data).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def doctor(ctx, data_dir, as_json):
    """Check the installation and say how to fix what is wrong.

    Checks LLaMA-Factory's version, torch/torchvision/torchaudio agreement, CUDA, bitsandbytes and
    flash-attn (GPU paths), the data dir and its dataset_info.json, and the offline Qwen3 tokenizer.
    Exits 1 when a check fails.

    \b
    Examples:
      qfk doctor
      qfk doctor --json | jq '.[] | select(.severity != "ok")'
    """
    from ..doctor import run_checks
    from ..findings import failures, print_findings

    findings = run_checks(data_dir)
    if as_json:
        emit_json([f.as_dict() for f in findings])
    else:
        print_findings(findings, console())
    ctx.exit(1 if failures(findings) else 0)
