"""``qfk datasets ...``: manage LLaMA-Factory's data/dataset_info.json."""

from __future__ import annotations

from pathlib import Path

import click

from .common import console, emit_json, near_options, near_settings

data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), envvar="QFK_DATA_DIR",
                               help="LLaMA-Factory dataset_dir holding dataset_info.json (default: $QFK_DATA_DIR or ./data).")


@click.group("datasets")
def datasets_group() -> None:
    """Manage the datasets registered in LLaMA-Factory's data/dataset_info.json.

    Entries written by you or other tools are kept exactly; every write is validated, locked,
    atomic, and leaves the previous file as dataset_info.json.bak.

    \b
    Examples:
      qfk datasets list
      qfk datasets add data/my.jsonl --name my_data
      qfk datasets check
      qfk datasets filter my_data --max-tokens 2048
      qfk datasets remove my_data
    """


@datasets_group.command("add")
@click.argument("path")
@click.option("--name", required=True, help="Dataset name (what recipes put in dataset:).")
@click.option("--formatting", type=click.Choice(["alpaca", "sharegpt", "qfk_medical_r1", "qfk_sharegpt"]), default=None,
              help="Default: from the manifest, else alpaca. qfk_* keep raw rows for qfk train's plugin (qfk train only).")
@click.option("--ranking/--no-ranking", default=None, help="Preference data (chosen/rejected). Default: from the manifest or the rows.")
@click.option("--column", "columns", multiple=True, metavar="KEY=COLUMN", help="Extra columns, e.g. --column system=sys.")
@click.option("--force", is_flag=True, help="Replace an entry of the same name that points to another file.")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
def add(path, name, formatting, ranking, columns, force, data_dir, as_json):
    """Register a file (or folder) under NAME with complete columns/tags blocks.

    Formatting, ranking and columns come from the file's qfk manifest when there is one. The parts
    written by qfk convert --shard I/N are registered as one dataset: give their folder (or the part
    files, comma-separated); every part must be there, alone in the folder, unchanged.

    \b
    Examples:
      qfk datasets add data/medical.jsonl --name medical
      qfk datasets add /data/pairs.jsonl --name prefs --ranking
      qfk datasets add chats.jsonl --name chats --formatting sharegpt
      qfk datasets add raw_r1.jsonl --name raw_r1 --formatting qfk_medical_r1   # raw rows: qfk train only
      qfk datasets add data/opus --name opus        # the parts of qfk convert ... --shard I/N
    """
    from ..convert.shards import add_shard_set, shard_set
    from ..errors import QfkError
    from ..registry import Registry, add_path

    reg = Registry.at(data_dir)
    extra = dict(c.split("=", 1) for c in columns if "=" in c)
    shards = shard_set(path)
    if shards is not None:
        entry = add_shard_set(reg, shards, name, formatting=formatting, ranking=ranking, columns=extra, force=force)
    elif not Path(path).exists():
        raise QfkError(f"'{path}' does not exist", "give a data file, a folder, or the parts of a --shard run")
    else:
        entry = add_path(reg, Path(path), name, formatting=formatting, ranking=ranking, columns=extra, force=force)
    if as_json:
        emit_json({name: entry})
    else:
        console().print(f"[green]registered[/] {name} -> {entry['file_name']} in {reg.path}")


@datasets_group.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def list_(data_dir, as_json):
    """List the registered datasets.

    \b
    Examples:
      qfk datasets list
      qfk datasets list --data-dir /work/LLaMA-Factory/data --json
    """
    from ..registry import Registry, resolve_file

    reg = Registry.at(data_dir)
    data = reg.read()
    if as_json:
        emit_json(data)
        return
    from rich.table import Table

    table = Table("name", "file", "formatting", "ranking", "exists", title=str(reg.path))
    bad = []
    for name, entry in data.items():
        if not isinstance(entry, dict):  # LLaMA-Factory would fail on it: shown, and named below
            bad.append(name)
            table.add_row(name, f"[red]not an entry ({type(entry).__name__})[/]", "", "", "[red]no[/]")
            continue
        path = resolve_file(entry, reg.data_dir)
        src = entry.get("file_name") or entry.get("hf_hub_url") or entry.get("ms_hub_url") or "?"
        table.add_row(name, str(src), str(entry.get("formatting", "alpaca")), str(entry.get("ranking", False)),
                      "yes" if path and path.exists() else ("hub" if path is None else "[red]no[/]"))
    console().print(table)
    if bad:
        console().print(f"[red]{len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} not a JSON object: "
                        f"{', '.join(bad)}[/] (LLaMA-Factory cannot load them): fix them in {reg.path}, "
                        f"or remove them with: qfk datasets remove {bad[0]}")


@datasets_group.command("show")
@click.argument("name")
@data_dir_option
def show(name, data_dir):
    """Print one entry (and its manifest summary when there is one).

    \b
    Examples:
      qfk datasets show medical
    """
    from ..registry import Registry, manifest_for

    reg = Registry.at(data_dir)
    entry = reg.get(name)
    emit_json({"name": name, "entry": entry, "manifest": manifest_for(entry, reg.data_dir)})


@datasets_group.command("check")
@click.argument("names", nargs=-1)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def check(ctx, names, data_dir, as_json):
    """Check entries against their files: file exists, extension loadable, columns present,
    ShareGPT roles match the tags, ranking matches the rows. Exits 1 on a failure.

    \b
    Examples:
      qfk datasets check
      qfk datasets check medical finetome --json
    """
    from ..findings import failures, print_findings
    from ..registry import Registry, check_entry

    reg = Registry.at(data_dir)
    data = reg.read()
    targets = names or tuple(data)
    findings = []
    for n in targets:
        findings += check_entry(n, reg.get(n), reg.data_dir)
    if as_json:
        emit_json([f.as_dict() for f in findings])
    else:
        print_findings(findings, console())
        if not targets:
            console().print(f"no datasets registered in {reg.path}")
    ctx.exit(1 if failures(findings) else 0)


@datasets_group.command("filter")
@click.argument("name")
@click.option("--max-tokens", type=click.IntRange(min=1), required=True,
              help="Keep the rows of at most N tokens as LLaMA-Factory encodes them (the recipe's cutoff_len).")
@click.option("--template", default=None, help="LLaMA-Factory template (default: from the dataset's think mode, as qfk recipe new picks it).")
@click.option("--enable-thinking", type=click.Choice(["true", "false", "null"], case_sensitive=False), default=None,
              help="Default: from the dataset's think mode (reasoning: true, direct: false, mixed: null).")
@click.option("--name", "new_name", help="Name of the filtered dataset (default: NAME__max<N>).")
@click.option("--force", is_flag=True, help="Replace a dataset of the new name that points to another file.")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on a terminal.")
def filter_(name, max_tokens, template, enable_thinking, new_name, force, data_dir, as_json, progress):
    """Register NAME without its rows longer than --max-tokens: NAME__max<N>, written next to NAME's
    file with its .rejects.jsonl (each long row, reason too_long, with its length) and .manifest.json.

    Rows are removed, never cut: every row kept fits cutoff_len N whole. They are measured with
    LLaMA-Factory's own encoding, the template and enable_thinking a recipe for this data uses.

    \b
    Examples:
      qfk datasets filter medical_r1 --max-tokens 2048          # -> dataset medical_r1__max2048
      qfk datasets filter finetome --max-tokens 4096 --name finetome_short --json
      qfk recipe check sft.yaml dataset=medical_r1__max2048
    """
    from ..convert.filter import AUTO, filter_dataset
    from .convert import ENABLE_THINKING, print_summary

    result = filter_dataset(name, max_tokens, data_dir=data_dir, template=template, new_name=new_name, force=force,
                            enable_thinking=AUTO if enable_thinking is None else ENABLE_THINKING[enable_thinking.lower()],
                            progress=progress and not as_json)
    if as_json:
        emit_json(result.summary())
        return
    print_summary(result, f"[bold green]filtered[/] {name} -> [bold]{result.output}[/]: {result.written} of {result.read} rows "
                          f"fit {max_tokens} tokens")


@datasets_group.command("decontaminate")
@click.argument("name")
@click.option("--against", "against", multiple=True, required=True, metavar="EVAL[,EVAL...]",
              help="The eval datasets (registered names); repeat it or separate names with commas.")
@near_options
@click.option("--name", "new_name", help="Name of the decontaminated dataset (default: NAME__clean).")
@click.option("--force", is_flag=True, help="Replace a dataset of the new name that points to another file.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes that look rows up (default: the cores, for a large file).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on a terminal.")
def decontaminate_cmd(name, against, ngram, threshold, new_name, force, workers, data_dir, as_json, progress):
    """Register NAME without its rows that leak into the eval sets: NAME__clean, written next to
    NAME's file with its .rejects.jsonl (each removed row with the eval row it matched) and
    .manifest.json (the eval sets with their sha256, the n-gram settings, the counts).

    A row is removed when it has the same prompt and answer as an eval row (reason leak), is a
    near duplicate of one (near_leak: at least --threshold of the n-grams of --ngram units of the shorter row
    shared: words, or characters of Chinese and Japanese), is an eval translation pair in the other
    direction (reversed_leak), or holds an eval source sentence as its source or target
    (source_leak). The eval sets are held in memory; NAME is streamed.

    \b
    Examples:
      qfk datasets decontaminate medical --against exam          # -> dataset medical__clean
      qfk datasets decontaminate kftt_en_ja --against kftt_ja_en_test,wmt_test --json
      qfk recipe check sft.yaml dataset=medical__clean eval_dataset=exam
    """
    from ..convert.decontaminate import decontaminate
    from .convert import print_summary

    evals = [n.strip() for item in against for n in item.split(",") if n.strip()]
    result = decontaminate(name, evals, data_dir=data_dir, new_name=new_name, force=force, workers=workers,
                           progress=progress and not as_json, **near_settings(ngram, threshold))
    if as_json:
        emit_json(result.summary())
        return
    removed = result.read - result.written
    print_summary(result, f"[bold green]decontaminated[/] {name} -> [bold]{result.output}[/]: kept {result.written} of "
                          f"{result.read} rows, removed {removed} that leak into {', '.join(evals)}")


@datasets_group.command("remove")
@click.argument("name")
@click.option("--only", is_flag=True, help="Remove NAME's entry alone; its splits, mix, filter and clean entries stay registered.")
@click.option("--delete-files", is_flag=True,
              help="Also delete the data files and their .rejects.jsonl / .manifest.json (never one a remaining entry uses).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print what was removed, deleted and kept as JSON.")
def remove(name, only, delete_files, data_dir, as_json):
    """Remove dataset NAME with the entries that belong to it: its splits (NAME_val, NAME_test) and
    its mix, filter and decontaminated entries (NAME__nN, NAME__tN, NAME__max<N>, NAME__clean). The data
    stays unless --delete-files; a file another remaining entry still uses is never deleted.

    \b
    Examples:
      qfk datasets remove old_data                    # also old_data_val, old_data__n500, ...
      qfk datasets remove old_data --delete-files
      qfk datasets remove old_data__n500 --only       # just the mix entry
    """
    from ..registry import Registry

    reg = Registry.at(data_dir)
    removal = reg.remove(name, only=only, delete_files=delete_files)
    if as_json:
        emit_json(removal.as_dict())
        return
    out = console()
    for n, entry in removal.removed.items():
        out.print(f"removed {n} ({entry.get('file_name') or 'no local file'})" if isinstance(entry, dict) else f"removed {n}")
    for path in removal.deleted:
        out.print(f"deleted {path}")
    for path, user in removal.kept.items():
        out.print(f"kept {path}: dataset {user} still uses it")
    if removal.left:
        out.print(f"still registered: {', '.join(removal.left)} (remove one with: qfk datasets remove {removal.left[0]})")


@datasets_group.command("catalog")
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def catalog_cmd(as_json):
    """List the known sources (hub ids, schema, license, converter).

    \b
    Examples:
      qfk datasets catalog
      qfk convert medical-r1 modelscope://krisfu/delicate_medical_r1_data   # named medical_r1 from the catalog
    """
    from ..catalog import catalog

    cat = catalog()
    if as_json:
        emit_json(cat)
        return
    out = console()
    for key, item in cat.items():
        ids = ", ".join(f"{k}://{item[k]}" for k in ("modelscope", "huggingface") if item.get(k)) or item.get("url", "")
        out.print(f"[bold]{key}[/]: {item['title']}\n    source: {ids}\n    convert: qfk convert {item['converter']} ...   "
                  f"license: {item['license']}\n    schema: {item['schema']}")
