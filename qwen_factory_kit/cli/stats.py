"""``qfk stats`` and ``qfk render``."""

from __future__ import annotations

import sys

import click

from .common import console, emit_json
from .lint import ENABLE_THINKING, enable_thinking_from_data

TEMPLATE_HELP = "LLaMA-Factory template [default: what qfk recipe new picks for the data]."


def _target(target, data_dir):
    from ..lint import iter_rows, layout_from, resolve_target
    from ..registry import build_entry

    path, entry = resolve_target(target, data_dir)
    if entry is None:
        first = next(iter_rows(path), (None, None))[1]
        lay = layout_from(None, first if isinstance(first, dict) else None)
        entry = build_entry(str(path), formatting=lay.formatting, ranking=lay.ranking, columns=lay.columns,
                            tags=lay.tags if lay.formatting == "sharegpt" else None)
    return path, entry


def _think(path, entry, tokenizer_path, template, enable_thinking):
    """The template and enable_thinking to encode with: the ones given, the rest as ``qfk recipe new`` picks them."""
    from ..recipe.request import FROM_DATA, think_for_rows

    enable = FROM_DATA if enable_thinking is None else ENABLE_THINKING[enable_thinking.lower()]
    return think_for_rows(path, entry, model=tokenizer_path, template=template, enable_thinking=enable)


def _tokenizer(path_or_id):
    if not path_or_id:
        return None
    from ..lfbridge import load_tokenizer

    return load_tokenizer(path_or_id)


@click.command("stats")
@click.argument("target", metavar="PATH_OR_NAME")
@click.option("--tokenizer", "tokenizer_path", help="Tokenizer folder or hub id (default: the real Qwen3 tokenizer, offline); "
              "a Qwen3 model's counts as that model in the default template (qwen3_nothink for Instruct-2507).")
@click.option("--template", help=TEMPLATE_HELP)
@enable_thinking_from_data
@click.option("--cutoff-len", type=click.IntRange(min=16), default=2048, show_default=True, help="LLaMA-Factory cutoff_len.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a histogram of row lengths (PNG).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="QFK_DATA_DIR", help="Where NAME is registered (default ./data).")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Reuse the statistics of the same data and settings (kept in $QFK_CACHE_DIR/stats, keyed by the data's sha256).")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON (with every row's length).")
def stats(target, tokenizer_path, template, enable_thinking, cutoff_len, plot, data_dir, cache, as_json):
    """Token lengths of every row exactly as LLaMA-Factory encodes it, and what cutoff_len cuts.

    Uses LLaMA-Factory's own converter, template and processor with the real Qwen3 tokenizer, in the
    template and enable_thinking qfk recipe new picks for the data (from its manifest, or a scan of
    its rows) unless --template/--enable-thinking are given; it prints which and why. The
    result is cached: the same data with the same settings is not tokenized again. Prints min/p50/p90/p99/max of prompt, response and total, a recommended cutoff_len, and the rows
    that would lose </think> or part of the answer (LLaMA-Factory truncates silently).

    \b
    Examples:
      qfk stats medical --cutoff-len 2048 --plot medical_lengths.png
      qfk stats data/finetome.jsonl --enable-thinking null --json
      qfk stats translation --tokenizer /models/Qwen3-1.7B --cutoff-len 512
    """
    from ..tokens import TokenizerRef, file_stats, plot_lengths

    path, entry = _target(target, data_dir)
    think = _think(path, entry, tokenizer_path, template, enable_thinking)
    st = file_stats(path, entry, tokenizer=TokenizerRef(tokenizer_path), template=think.template,
                    enable_thinking=think.enable, cutoff_len=cutoff_len, cache=cache,
                    progress=sys.stderr.isatty() and not as_json)
    s = {**st.summary(), "think_mode": think.mode, "settings_why": think.why}
    if plot:
        s["plot"] = str(plot_lengths(st, plot))
    if as_json:
        emit_json(s)
        return
    from rich.markup import escape

    out = console()
    out.print(f"[bold]{escape(s['path'])}[/]: {s['rows']} rows")
    out.print(f"  {escape(think.line)}")
    for key in ("prompt", "response", "total"):
        p = s[key]
        out.print(f"  {key:<8} min {p['min']:>6}  p50 {p['p50']:>6}  p90 {p['p90']:>6}  p99 {p['p99']:>6}  max {p['max']:>6}")
    held = (f"{s['rows_over_recommended']} rows are longer: the cap" if s["rows_over_recommended"]
            else f"holds every row, longest {s['total'].get('max', 0)}")
    out.print(f"  recommended cutoff_len: [bold]{s['recommended_cutoff_len']}[/] ({held})")
    colour = "red" if s["rows_over_cutoff"] else "green"
    out.print(f"  [{colour}]{s['rows_over_cutoff']} rows over cutoff_len {cutoff_len}[/]"
              + (f": lose </think> at rows {s['rows_losing_think_close'][:20]}" if s["rows_losing_think_close"] else "")
              + (f"; lose part of the answer at rows {s['rows_losing_answer'][:20]}" if s["rows_losing_answer"] else ""))
    if s["dropped_by_llamafactory"]:
        out.print(f"  [red]LLaMA-Factory drops rows {s['dropped_by_llamafactory'][:20]}[/] (qfk lint says why)")
    if plot:
        out.print(f"  plot: {s['plot']}")


@click.command("render")
@click.argument("target", metavar="PATH_OR_NAME")
@click.option("--row", "row_no", type=click.IntRange(min=1), required=True, help="Row number (1-based, as in lint and rejects).")
@click.option("--tokenizer", "tokenizer_path", help="Tokenizer folder or hub id (default: the real Qwen3 tokenizer).")
@click.option("--template", help=TEMPLATE_HELP)
@enable_thinking_from_data
@click.option("--cutoff-len", type=click.IntRange(min=16), default=None, help="Apply LLaMA-Factory's truncation too.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="QFK_DATA_DIR", help="Where NAME is registered (default ./data).")
@click.option("--json", "as_json", is_flag=True, help="Print the segments as JSON.")
def render(target, row_no, tokenizer_path, template, enable_thinking, cutoff_len, data_dir, as_json):
    """Show the exact text LLaMA-Factory trains on for one row: trained part vs masked prompt.

    On a terminal the trained part is green and the masked part dim; piped, trained text is
    wrapped in [[TRAIN]] ... [[/TRAIN]] markers. Template and enable_thinking: as in qfk stats.

    \b
    Examples:
      qfk render medical --row 1
      qfk render medical --row 1 --enable-thinking false      # see the reasoning stripped
      qfk render data/finetome.jsonl --row 3 --template qwen3_nothink | less
    """
    from ..errors import QfkError
    from ..lint import iter_rows
    from ..tokens import NO_LIMIT, render_row

    path, entry = _target(target, data_dir)
    row = next((r for n, r in iter_rows(path) if n == row_no), None)
    if row is None:
        raise QfkError(f"{path} has no row {row_no}", "row numbers are 1-based lines (see qfk lint)")
    think = _think(path, entry, tokenizer_path, template, enable_thinking)
    segments = render_row(row, entry, tokenizer=_tokenizer(tokenizer_path), template=think.template,
                          enable_thinking=think.enable, cutoff_len=cutoff_len or NO_LIMIT)
    if as_json:
        emit_json([{"text": t, "trained": tr} for t, tr in segments])
        return
    if sys.stdout.isatty():
        from rich.markup import escape
        from rich.text import Text

        text = Text()
        for t, tr in segments:
            text.append(t, style="bold green" if tr else "dim")
        console().print(text)
        console().print("[dim]dim: masked (prompt)[/]  [bold green]green: trained[/]  "
                        f"[dim]{escape(think.line)}[/]")
    else:
        sys.stdout.write("".join(f"[[TRAIN]]{t}[[/TRAIN]]" if tr else t for t, tr in segments) + "\n")
