"""``qfk eval``."""

from __future__ import annotations

import click

from .common import console, emit_json

ENABLE_THINKING = {"true": True, "false": False, "null": None}


@click.command("eval")
@click.argument("target", metavar="RUN_DIR_OR_MODEL")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--dataset", required=True, metavar="NAME", help="Registered held-out dataset to predict (NAME_val, NAME_test).")
@click.option("--base", metavar="MODEL|auto", help="Also evaluate a base model on the same rows: auto = the run's base "
                                                    "model (adapter off), or another model folder / hub id.")
@click.option("--max-samples", type=click.IntRange(min=1), help="Predict only the first N rows.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="New tokens per answer (default: 1.5x the longest reference of the rows predicted, "
                   "measured with the Qwen3 tokenizer; at most 4096 thinking, 1024 not).")
@click.option("--sample", is_flag=True, help="Qwen3's recommended sampling for the think mode instead of deterministic decoding.")
@click.option("--template", help="MODEL only: LLaMA-Factory template (default: from the dataset's think mode).")
@click.option("--enable-thinking", type=click.Choice(list(ENABLE_THINKING), case_sensitive=False),
              help="MODEL only: enable_thinking (default: from the dataset's think mode).")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Output folder (default: RUN_DIR/eval-NAME).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="dataset_dir holding dataset_info.json (default: the run's dataset_dir; for a MODEL $QFK_DATA_DIR or ./data).")
@click.option("--cpu", is_flag=True, help="Predict on the CPU: the overrides that run the run's recipe there (use_cpu=true "
                                          "bf16=false ...). Without a GPU they are added anyway, unless the recipe needs "
                                          "a GPU (bf16, QLoRA ...): then qfk eval stops and asks for --cpu.")
@click.option("-v", "--verbose", is_flag=True, help="Show LLaMA-Factory's output (always in OUT/tuned/qfk_train.log).")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json's content and the files written as JSON.")
def eval_cmd(target, overrides, dataset, base, max_samples, max_new_tokens, sample, template, enable_thinking, output,
             data_dir, cpu, verbose, as_json):
    """Evaluate a training run (or a model) on a held-out dataset, and compare it with its base model.

    RUN_DIR is a `qfk train` output_dir (its qfk_run.json gives the base model, the adapter, the
    template, enable_thinking and the dataset_dir); RUN_DIR/checkpoint-N evaluates a checkpoint.
    MODEL is a model folder, a Qwen3 name, or qfk-tiny (the kit's tiny Qwen3, built on first use).
    The predict recipes come from the kit's recipe builder and run through LLaMA-Factory as
    `qfk train` runs them. Answers are scored with the think block split off: translation rows
    with sacreBLEU BLEU and chrF per direction, other rows with ROUGE-L and exact match; think
    compliance is reported apart. Decoding is deterministic unless --sample (thinking mode
    always samples: Qwen3 must never decode greedily there).

    Decoding is bounded by the data: max_new_tokens is 1.5x the longest reference of the rows
    predicted (never above 4096 thinking, 1024 not), and on a CPU the eval batch is chosen for the
    machine's memory; both are printed, with the worst case in new tokens, before predicting.
    A progress bar (plain lines when the output is not a terminal) shows rows done, new tokens/s
    and the ETA for each model.

    OUT (default RUN_DIR/eval-NAME) gets the predict recipes, metrics.json, predictions.jsonl,
    report.md, a self-contained report.html and plots/.

    \b
    Examples:
      qfk eval saves/qwen3-4b/lora/medical --dataset medical_r1_val --base auto
      qfk eval saves/qwen3-1.7b/qlora/mt --dataset translation_test --base auto --max-samples 200
      qfk eval saves/qwen3-4b/lora/medical/checkpoint-500 --dataset medical_r1_val
      qfk eval Qwen3-4B --dataset translation_test --enable-thinking false -o eval/qwen3-4b
      qfk eval saves/run --dataset medical_r1_val per_device_eval_batch_size=8
      qfk eval qfk-tiny --dataset medical_r1_val --max-samples 4 --cpu
    """
    import sys

    from ..post.evaluate import EvalRequest, evaluate
    from ..recipe.build import invoked_command
    from ..recipe.document import parse_overrides

    c = console(stderr=True)
    req = EvalRequest(target=target, dataset=dataset, base=base, max_samples=max_samples, max_new_tokens=max_new_tokens,
                      sample=sample, out=output, data_dir=data_dir, template=template,
                      enable_thinking=ENABLE_THINKING[enable_thinking.lower()] if enable_thinking else "unset",
                      overrides=parse_overrides(overrides), command=invoked_command(sys.argv, ("eval",)), cpu=cpu)
    from ..findings import print_findings

    outcome = evaluate(req, console=c, verbose=verbose, on_leaks=lambda found: print_findings(found, c),
                       on_plan=lambda plan: c.print(f"decoding: {plan.describe()}", soft_wrap=True),
                       on_start=lambda run: c.print(f"predicting {dataset} with the {run.label} model ({run.recipe_path})",
                                                    soft_wrap=True))
    for w in outcome.warnings:
        c.print(f"[yellow]warning:[/] {w}")
    if as_json:
        emit_json({"out": str(outcome.out), "files": outcome.files, "metrics": outcome.metrics})
        return 0
    _show(outcome, c)
    return 0


def _show(outcome, c) -> None:
    from rich.table import Table

    from ..post.report import comparison_table

    m = outcome.metrics
    header, rows = comparison_table(m)
    table = Table(title=f"{m['dataset']}: {m['n']} rows ({m['kind']}, decoding {m['decoding']['kind']})")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[(f"[red]{v}[/]" if v.startswith("-") and v != "-" else f"[green]{v}[/]" if v.startswith("+") else v)
                        if header[j] == "delta" else v for j, v in enumerate(row)])
    out = console()
    out.print(table)
    if (m.get("identical") or {}).get("note"):
        out.print(f"[yellow]note:[/] {m['identical']['note']}", soft_wrap=True)
    if m.get("regressions"):
        out.print(f"{len(m['regressions'])} rows regressed most (sentence {m['row_metric']}): see the report")
    out.print(f"report: {outcome.files['report_html']}", soft_wrap=True)
    out.print(f"metrics: {outcome.files['metrics']}   predictions: {outcome.files['predictions']}", soft_wrap=True)
