"""``qfk convert ...``: one subcommand per converter plug-in, sharing the core's options."""

from __future__ import annotations


import click

from ..scripts import SCRIPT_CHOICES
from .common import JaccardType, KeyValueType, SizeType, console, emit_json, split_csv


def common_options(fn):
    """Options every converter shares (they map onto run_conversion's arguments)."""
    opts = [
        click.argument("source"),
        click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output JSONL (default: DATA_DIR/NAME.jsonl)."),
        click.option("--name", help="Dataset name (default: derived from SOURCE)."),
        click.option("--data-dir", type=click.Path(file_okay=False), envvar="QFK_DATA_DIR",
                     help="LLaMA-Factory dataset_dir (default: $QFK_DATA_DIR or ./data)."),
        click.option("--limit", type=click.IntRange(min=1), help="Keep a seeded random sample of N source rows (not the first N)."),
        click.option("--seed", type=int, default=42, show_default=True, help="Seed for --limit and the splits."),
        click.option("--val-size", type=SizeType(), help="Validation split: fraction (0.05) or row count, written to NAME_val.jsonl."),
        click.option("--test-size", type=SizeType(), help="Test split: fraction or row count, written to NAME_test.jsonl."),
        click.option("--dedup/--no-dedup", default=None, help="Drop exact duplicate rows (default: on for moses, off otherwise)."),
        click.option("--near-dedup", type=JaccardType(), is_flag=False, flag_value="0.8", default=None, metavar="[JACCARD]",
                     help="Drop (near_duplicate) a row whose prompt and answer nearly repeat an earlier kept row's: "
                          "MinHash estimate of the Jaccard similarity of their 5-word (CJK: 5-character) shingles at least "
                          "JACCARD (alone: 0.8, SlimOrca's MinHash dedup). The reject names the kept row. Not with --shard. "
                          "For example: --near-dedup, or --near-dedup 0.9."),
        click.option("--split", default="train", show_default=True, help="For folders/hub datasets: use files whose names mention this split."),
        click.option("--encoding", multiple=True, type=str,
                     help="Input text encoding (default: detected), or FILE=ENCODING for one file (moses)."),
        click.option("--cache-dir", type=click.Path(file_okay=False), help="Where modelscope:// and hf:// downloads go ($QFK_CACHE_DIR)."),
        click.option("--empty-think", type=click.Choice(["explicit", "omit"]), default="explicit", show_default=True,
                     help="Answers without reasoning: write the canonical empty block '<think>\\n\\n</think>\\n\\n', or nothing."),
        click.option("--max-tokens", type=click.IntRange(min=1),
                     help="Reject (too_long) rows longer than N tokens as LLaMA-Factory encodes them: removed, never cut "
                          "(loads the Qwen3 tokenizer)."),
        click.option("--template", default="qwen3", show_default=True, help="LLaMA-Factory template --max-tokens encodes with."),
        click.option("--enable-thinking", type=click.Choice(["true", "false", "null"], case_sensitive=False), default="true",
                     show_default=True, help="enable_thinking --max-tokens encodes with (false drops the reasoning from the count)."),
        click.option("--register/--no-register", default=True, show_default=True,
                     help="Add the output (and NAME_val / NAME_test) to DATA_DIR/dataset_info.json."),
        click.option("--force", is_flag=True, help="Replace a registered dataset of the same name that points to another file."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Processes converting in parallel (default: the cores available, at most 8; 1 for a small source). "
                          "The output is the same byte for byte whatever the number."),
        click.option("--shard", metavar="I/N",
                     help="Convert part I of N (from 0) of the source alone: its rows [I*T/N, (I+1)*T/N) to "
                          "DATA_DIR/NAME/part-I-of-N.jsonl; the parts in order are the whole output. Not with "
                          "--val-size/--test-size, --dedup or --near-dedup. Register the set with: qfk datasets add DATA_DIR/NAME."),
        click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout."),
        click.option("--progress/--no-progress", default=True, help="Progress bar on a terminal."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


ENABLE_THINKING = {"true": True, "false": False, "null": None, "none": None}


def _run(converter_name: str, source: str, *, as_json: bool, encoding: tuple, enable_thinking: str, **kw) -> None:
    from ..convert import convert

    per_file = {k: v for k, v in (e.split("=", 1) for e in encoding if "=" in e)}
    plain = [e for e in encoding if "=" not in e]
    if per_file:
        kw["file_encodings"] = per_file
    result = convert(converter_name, source, encoding=plain[-1] if plain else None, progress=kw.pop("progress") and not as_json,
                     enable_thinking=ENABLE_THINKING[enable_thinking.lower()], **kw)
    if as_json:
        emit_json(result.summary())
        return
    print_summary(result)


def print_summary(result, title: str | None = None) -> None:
    """A conversion's summary for a person (``title``: the first line, default 'converted CONVERTER -> OUTPUT')."""
    out = console()
    s = result.summary()
    out.print(title or f"[bold green]converted[/] {s['converter']} -> [bold]{s['output']}[/]")
    out.print(f"  read {s['read']}  written {s['written']}  rejected {s['rejected']}  rows out {s['rows_out']}")
    for split, info in s["splits"].items():
        if split != "train":
            out.print(f"  {split}: {info['source_rows']} source rows ({info['rows']} rows) -> {info['path']}")
    for split, why in s["splits_short"].items():
        out.print(f"  [yellow]{split} short[/]: {why}")
    if s["token_limit"]:
        t = s["token_limit"]
        out.print(f"  max tokens {t['max_tokens']} (template {t['template']}, enable_thinking "
                  f"{'null' if t['enable_thinking'] is None else str(t['enable_thinking']).lower()})")
    for reason, n in s["rejected_by_reason"].items():
        out.print(f"  [yellow]rejected[/] {n} x {reason}")
    for note, n in s["notes"].items():
        option = s["note_options"].get(note)
        out.print(f"  [cyan]note[/] {note}: {n}" + (f" ({option})" if option else ""))
    t = s["think"]
    out.print(f"  think mode: {t['mode']} (reasoning {t['responses_with_reasoning']}, empty block {t['responses_with_empty_block']}, "
              f"no block {t['responses_without_block']})")
    out.print(f"  rejects: {s['rejects']}\n  manifest: {s['manifest']}")
    if s["registered"]:
        out.print(f"  registered in dataset_info.json as: [bold]{', '.join(s['registered'])}[/]  (dataset: {s['registered'][0]})")
    elif result.shard:
        out.print(f"  part {result.shard['index']} of {result.shard['count']}; when every part is written, register the set: "
                  f"qfk datasets add {result.output.parent} --name {s['name']}")


@click.group("convert")
def convert_group() -> None:
    """Convert a dataset into LLaMA-Factory JSONL with canonical Qwen3 <think> tags.

    Every run writes three files: NAME.jsonl, NAME.rejects.jsonl (each rejected row with its file,
    line and reason) and NAME.manifest.json (options, hashes, counts, think mode). read == written +
    rejected, always. --val-size/--test-size are exact in accepted source rows (a Moses line stays in
    one split with all its directions). --max-tokens N rejects (too_long) a source row with an output
    row longer than N tokens as LLaMA-Factory will encode it (a Moses line with all its directions):
    removed, never cut. A --name already registered for another file stops the run before any row
    is read. Batches are converted by --workers processes (default: the cores, at most 8); the
    output is the same byte for byte whatever their number. --shard I/N converts one contiguous
    part of the source (on another machine, say); qfk datasets add registers the set of parts.
    --near-dedup [JACCARD] also rejects (near_duplicate) a row nearly the same as an earlier kept
    row, naming that row: the same on any --workers, in bounded memory (about 150 bytes a kept row).

    \b
    Examples:
      qfk convert medical-r1 modelscope://krisfu/delicate_medical_r1_data --val-size 0.1
      qfk convert finetome ./FineTome-100k --limit 20000 --seed 1
      qfk convert medical-r1 rows.jsonl --dedup --near-dedup            # near: Jaccard >= 0.8
      qfk convert finetome ./FineTome-100k --near-dedup 0.9 --val-size 0.02
      qfk convert moses ./_dataset --langs en,zh_TW,ja --test-size 500
      qfk convert moses ./opus --no-dedup --shard 0/4      # then 1/4, 2/4, 3/4; qfk datasets add data/opus_...
      qfk convert columns rows.csv --prompt question --response answer
      qfk convert preference pairs.jsonl --prompt prompt --chosen chosen --rejected rejected
    """


@convert_group.command("medical-r1")
@common_options
@click.option("--min-quality", type=float, help="Reject rows whose metrics.quality_f1 is below this.")
@click.option("--fix-escaped-newlines", is_flag=True, help="Turn a literal backslash-n in answers into a line break (counted either way).")
@click.option("--instruction-as", type=click.Choice(["ignore", "system", "user"]), default="ignore", show_default=True,
              help="Use the 'instruction' column as the system prompt, or as the user turn (question then goes to 'input').")
@click.option("--allow-missing-think", is_flag=True,
              help="Keep rows whose 'think' is missing, null or empty, with an empty think block (default: rejected as "
                   "missing_field / null_field / empty_field).")
def medical_r1(source, **kw):
    """Medical reasoning rows {instruction, question, think, answer, metrics} -> Alpaca with reasoning.

    The output of every row is exactly "<think>\\n{think}\\n</think>\\n\\n{answer}". Every row of this
    dataset carries its reasoning: a row whose 'think' is missing, null or empty is rejected
    (missing_field, null_field, empty_field) unless --allow-missing-think.

    \b
    Examples:
      qfk convert medical-r1 modelscope://krisfu/delicate_medical_r1_data
      qfk convert medical-r1 r1_data_example.jsonl --min-quality 0.95 --fix-escaped-newlines --val-size 0.1
      qfk convert medical-r1 r1_data_example.jsonl --instruction-as system --json
      qfk convert medical-r1 r1_data_example.jsonl --max-tokens 2048 --val-size 0.1
    """
    _run("medical-r1", source, **kw)


@convert_group.command("sharegpt")
@common_options
@click.option("--format", "format", type=click.Choice(["alpaca", "sharegpt"]), default="alpaca", show_default=True,
              help="Output Alpaca (multi-turn as 'history') or ShareGPT conversations.")
@click.option("--single-turn-only", is_flag=True, help="Reject multi-turn rows (with a reason) instead of keeping them as history.")
@click.option("--min-score", type=float, help="Reject rows whose 'score' is below this (FineTome scores run about 3.7..5.2).")
@click.option("--conversations-key", help="Column holding the messages (default: conversations, else messages).")
def sharegpt(source, **kw):
    """ShareGPT conversations (FineTome-100k) -> Alpaca with history/system, or ShareGPT.

    Multi-turn rows keep every turn; a leading system turn becomes 'system'. Answers without
    reasoning get the canonical empty think block unless --empty-think omit.

    \b
    Examples:
      qfk convert sharegpt modelscope://AI-ModelScope/FineTome-100k --limit 20000
      qfk convert finetome train-00000-of-00001.parquet --format sharegpt --val-size 0.02
      qfk convert sharegpt chats.jsonl --single-turn-only --empty-think omit
    """
    _run("sharegpt", source, **kw)


convert_group.add_command(sharegpt, "finetome")


@convert_group.command("moses")
@common_options
@click.option("--langs", multiple=True, help="Languages to use, e.g. en,zh_TW,ja (default: all found).")
@click.option("--directions", multiple=True, help="Directions to write, e.g. en-zh_TW,zh_TW-en (default: both ways of every pair).")
@click.option("--lang-map", multiple=True, type=KeyValueType(), help="Map an unusual file suffix to a language, e.g. --lang-map tw=zh_TW.")
@click.option("--instruction-template", default="Translate {src_tag} to {tgt_tag}.", show_default=True,
              help="Instruction; fields {src_tag} {tgt_tag} {src} {tgt} {src_name} {tgt_name}.")
@click.option("--system", default=None, help="System prompt ('' for none; default: a translator prompt).")
@click.option("--unescape-html/--keep-html", default=True, show_default=True, help="Decode HTML entities such as &amp; &#39;.")
@click.option("--max-length-ratio", type=float, help="Reject lines whose lengths differ more than this (CJK-aware, e.g. 3).")
@click.option("--max-chars", type=click.IntRange(min=1), help="Reject lines longer than this many characters.")
@click.option("--to-traditional", is_flag=True,
              help="Convert zh_TW lines written in Simplified Chinese (or mixed) with OpenCC s2twp (Taiwan standard) "
                   "instead of rejecting them as script_mismatch; counted as converted_to_traditional in the manifest.")
def moses(source, langs, directions, lang_map, system, **kw):
    """Moses / OPUS parallel corpora -> translation rows in both directions, with language tags.

    SOURCE is a folder (corpus.en + corpus.zh_tw + corpus.ja, or OPUS Name.en-ja.en + Name.en-ja.ja,
    or OPUS *.txt.zip files) or one OPUS .txt.zip. Three languages give six directions. A line-count
    mismatch stops the run, naming both files and counts. Duplicates are dropped (counted).

    Each line must be in its language's script: a side with letters but none of its script
    (English pasted into corpus.ja, Latin-only text on a zh side) is rejected as language_mismatch;
    a zh_TW line with Simplified-only characters (们, 这 ...) as script_mismatch, unless
    --to-traditional converts it. Lines of numbers or punctuation only pass. A Simplified file
    named .zh is mapped with --lang-map zh=zh_CN.

    \b
    Examples:
      qfk convert moses ./_dataset --test-size 500 --val-size 500
      qfk convert moses en-zh_TW.txt.zip --max-length-ratio 3 --limit 200000
      qfk convert moses en-zh_TW.txt.zip --to-traditional      # Simplified zh_TW lines converted, not rejected
      qfk convert moses en-zh.txt.zip --lang-map zh=zh_CN      # a Simplified Chinese corpus
      qfk convert moses ./kftt --langs en,ja --directions en-ja --encoding kyoto.ja=utf-8
    """
    from ..convert.moses import DEFAULT_SYSTEM

    _run("moses", source, langs=split_csv(langs), directions=split_csv(directions), lang_map=dict(lang_map) or None,
         system=DEFAULT_SYSTEM if system is None else system, **kw)


@convert_group.command("columns")
@common_options
@click.option("--prompt", required=True, help="Column with the user's instruction.")
@click.option("--response", required=True, help="Column with the answer (think tags in it are normalised).")
@click.option("--query", help="Column appended to the instruction (Alpaca 'input').")
@click.option("--system", help="Column with a system prompt.")
@click.option("--think", help="Column with plain reasoning text (becomes the <think> block).")
@click.option("--history", help="Column with [[user, assistant], ...] earlier turns.")
@click.option("--script", metavar="SCRIPT",
              help=f"Every text must be in this Chinese script ({', '.join(SCRIPT_CHOICES)}): a text with Simplified-only "
                   "characters is rejected as script_mismatch (characters shared by both scripts are fine).")
@click.option("--to-traditional", is_flag=True,
              help="Convert texts with Simplified characters with OpenCC s2twp (Taiwan standard) instead of rejecting "
                   "them (implies --script traditional); counted as converted_to_traditional in the manifest.")
def columns(source, **kw):
    """Any table -> Alpaca by naming its columns (dotted names reach into nested objects).

    \b
    Examples:
      qfk convert columns rows.csv --prompt question --response answer
      qfk convert columns qa.parquet --prompt q --response a --think reasoning --system sys --name my_qa
      qfk convert columns zh_tw_qa.jsonl --prompt q --response a --script traditional
      qfk convert columns zh_tw_qa.jsonl --prompt q --response a --to-traditional
    """
    _run("columns", source, **kw)


@convert_group.command("preference")
@common_options
@click.option("--prompt", default="prompt", show_default=True, help="Column with the prompt.")
@click.option("--chosen", default="chosen", show_default=True, help="Column with the preferred answer.")
@click.option("--rejected", default="rejected", show_default=True, help="Column with the dispreferred answer.")
@click.option("--query", help="Column appended to the prompt (Alpaca 'input').")
@click.option("--system", help="Column with a system prompt.")
def preference(source, **kw):
    """Preference pairs -> Alpaca ranking rows {instruction, input, chosen, rejected} for ORPO/DPO.

    \b
    Examples:
      qfk convert preference pairs.jsonl
      qfk convert preference ultrafeedback.parquet --prompt prompt --chosen chosen --rejected rejected --limit 5000
    """
    _run("preference", source, **kw)


