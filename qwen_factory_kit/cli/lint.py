"""``qfk lint``."""

from __future__ import annotations

import click

from .common import console, emit_json, near_options, near_settings

ENABLE_THINKING = {"true": True, "false": False, "null": None, "none": None}


def enable_thinking_option(fn, *, default: str | None = "true", text: str = "LLaMA-Factory's enable_thinking (null: mixed data)."):
    return click.option("--enable-thinking", type=click.Choice(["true", "false", "null"], case_sensitive=False), default=default,
                        show_default=default is not None, help=text)(fn)


def enable_thinking_from_data(fn):
    """``--enable-thinking`` with no default: the command takes it from the data unless it is given."""
    return enable_thinking_option(fn, default=None, text="LLaMA-Factory's enable_thinking (null: mixed data) "
                                  "[default: what qfk recipe new picks for the data]")


@click.command("lint")
@click.argument("target", metavar="PATH_OR_NAME")
@click.option("--template", default="qwen3", show_default=True, help="LLaMA-Factory template the recipe will use.")
@enable_thinking_option
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="QFK_DATA_DIR", help="Where NAME is registered (default ./data).")
@click.option("--max-problems", type=click.IntRange(min=1), default=200, show_default=True, help="Problems listed (all are counted).")
@click.option("--against", "against", multiple=True, metavar="PATH_OR_NAME",
              help="Instead of the rules: the rows of PATH_OR_NAME that are in this dataset: the same prompt and answer "
                   "(think blocks and whitespace aside), near duplicates, translation pairs reversed; repeat it to compare "
                   "several. Exits 1 on any.")
@near_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def lint(ctx, target, template, enable_thinking, data_dir, max_problems, against, ngram, threshold, as_json):
    """Find what LLaMA-Factory would drop, truncate or train wrongly, before training.

    Every problem comes with its row number, rule id, severity and a fix. Exits 1 when there are
    errors. Rules: lines that are not JSON objects (invalid JSON, not UTF-8, CR line breaks),
    malformed or non-canonical think blocks (including the '<think>\\n\\n<think>' tutorial bug),
    chat special tokens and NUL characters inside fields, ShareGPT role order, non-string or empty
    fields, duplicates and conflicting answers, mojibake, mixed think modes, and data/template
    combinations that train the wrong thing. Near duplicates (prompt and answer with an estimated
    Jaccard similarity >= 0.8 to an earlier row: what qfk convert --near-dedup drops) are counted
    as info, with example pairs of row numbers.

    With --against OTHER it compares instead, a finding per OTHER with counts and row numbers on
    both sides: rows with the same normalised prompt and answer (whatever the reasoning), near
    duplicates (at least --threshold of the n-grams of --ngram units of the shorter row shared: words, or
    characters for Chinese and Japanese), translation pairs in the other direction, and (a
    warning) translation sources seen on the other side. Exits 1 when any row is the same, near or
    reversed (an eval set that leaks into training data); remove them from training with
    qfk datasets decontaminate.

    \b
    Examples:
      qfk lint medical                                   # a registered dataset
      qfk lint data/finetome.jsonl --template qwen3 --enable-thinking null
      qfk lint data/translation.jsonl --template qwen3_nothink --json
      qfk lint medical --against medical_val             # does the eval split leak into training?
      qfk lint medical --against exam --ngram 13 --threshold 0.8 --json
    """
    if against:
        ctx.exit(_compare(target, against, data_dir, as_json, ngram, threshold))
    if ngram is not None or threshold is not None:
        raise click.UsageError("--ngram and --threshold go with --against OTHER: qfk lint NAME --against OTHER --ngram 13")
    from ..findings import print_findings
    from ..lint import lint as run_lint

    rep = run_lint(target, data_dir=data_dir, template=template, enable_thinking=ENABLE_THINKING[enable_thinking.lower()],
                   max_problems=max_problems)
    s = rep.summary()
    if as_json:
        emit_json(s)
    else:
        out = console()
        print_findings(rep.problems, out)
        verdict = "[red]FAIL[/]" if s["errors"] else "[green]OK[/]"
        out.print(f"{verdict} {s['path']}: {s['rows']} rows, {s['errors']} errors, {s['warnings']} warnings; think mode {s['think']['mode']}")
    ctx.exit(1 if s["errors"] else 0)


def _compare(target: str, against: tuple[str, ...], data_dir: str | None, as_json: bool,
             ngram: int | None = None, threshold: float | None = None) -> int:
    """``qfk lint TARGET --against OTHER...``: a finding per OTHER; 1 when any has a leaking row."""
    from ..findings import failures, print_findings
    from ..leaks import overlap, overlap_finding

    overlaps = [overlap(target, other, data_dir, **near_settings(ngram, threshold)) for other in against]
    findings = [overlap_finding(ov) for ov in overlaps]
    if as_json:
        emit_json({"target": target, "overlaps": [ov.as_dict() for ov in overlaps],
                   "findings": [f.as_dict() for f in findings]})
    else:
        print_findings(findings, console())
    return 1 if failures(findings) else 0
