"""``qfk recipe pack`` / ``qfk recipe unpack``: shareable recipe bundles (registered into ``qfk recipe``)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import KeyValueType, console, emit_json


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


@click.command("pack")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="The bundle to write (default: RECIPE_NAME.zip).")
@click.option("--with-data", is_flag=True, help="Put the converted data files in the bundle (else they are re-made from their sources).")
@click.option("--force", is_flag=True, help="Replace an existing -o file.")
@click.option("--json", "as_json", is_flag=True, help="Print what was packed as JSON.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def pack(recipe, output, with_data, force, as_json, overrides):
    """Pack a recipe with what it needs to run elsewhere: its registry entries, the qfk manifests
    of its datasets (sources with ids and revisions, conversion options, sha256 of the converted
    files), its DeepSpeed config, and with --with-data the converted files themselves.

    Run it from the folder the recipe runs from (dataset_dir and deepspeed are relative to it).
    The zip is deterministic: the same inputs give the same bytes. KEY=VALUE overrides choose the
    datasets packed and travel in the bundle (unpack prints them with the next command).

    \b
    Examples:
      qfk recipe pack sft.yaml -o sft-bundle.zip
      qfk recipe pack sft.yaml -o sft-data.zip --with-data
      qfk recipe pack sft.yaml -o sft-bundle.zip learning_rate=5.0e-5 --json
    """
    from ..recipe.bundle import pack as pack_bundle

    out = output or f"{Path(recipe).stem}.zip"
    result = pack_bundle(recipe, out, overrides=list(overrides), with_data=with_data, force=force)
    if as_json:
        emit_json(result)
        return
    c = console(stderr=True)
    c.print(f"[green]packed[/] {recipe} -> {result['output']}  ({len(result['members'])} members, {_human(result['bytes'])}, "
            f"sha256 {result['sha256'][:16]}...)")
    for name, d in result["datasets"].items():
        how = "data included" if d["included"] else ("remote entry" if d["kind"] == "remote" else "re-made from its source")
        c.print(f"  {name}: {how}" + (f" (mix entry of {d['base']})" if d.get("base") else ""))
    for w in result["warnings"]:
        c.print(f"[yellow]warning[/] {w}")
    c.print(f"next: qfk recipe unpack {result['output']} DIR")


@click.command("unpack")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--source", "sources", multiple=True, type=KeyValueType(), metavar="NAME=PATH",
              help="A local copy of dataset NAME's source (when the recorded path does not exist here). Repeatable.")
@click.option("--trust-remote-code", is_flag=True, help="Accept a recipe that sets trust_remote_code: true.")
@click.option("--allow-outside", is_flag=True,
              help="Accept recipe paths and registry entries that point outside DEST (absolute, '..', script_url).")
@click.option("--force", is_flag=True, help="Replace an existing recipe, data files or registry entries in DEST.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Where modelscope:// and hf:// sources are downloaded ($QFK_CACHE_DIR).")
@click.option("--max-member-bytes", type=click.IntRange(min=1), default=None, metavar="N",
              help="Largest member accepted, uncompressed (default 4 GiB).")
@click.option("--max-total-bytes", type=click.IntRange(min=1), default=None, metavar="N",
              help="Largest total accepted, uncompressed (default 16 GiB).")
@click.option("--json", "as_json", is_flag=True, help="Print what was unpacked as JSON.")
def unpack(bundle, dest, sources, trust_remote_code, allow_outside, force, cache_dir, max_member_bytes, max_total_bytes, as_json):
    """Unpack a recipe bundle into DEST (the folder to train from): DEST/NAME.yaml, the datasets in
    DEST/<dataset_dir>, registered in its dataset_info.json.

    Datasets are taken from the bundle or re-converted from their recorded sources (source files
    checked by sha256 first); every converted file must match the sha256 its manifest records
    before anything is registered. Bundles are untrusted input: unsafe members, YAML tags,
    interpolations, trust_remote_code and paths outside DEST are refused unless allowed.

    \b
    Examples:
      qfk recipe unpack sft-bundle.zip ./run
      qfk recipe unpack sft-bundle.zip ./run --source demo_medical=/data/copies/rows.jsonl
      qfk recipe unpack sft-bundle.zip ./run --allow-outside --json
    """
    from ..recipe.bundle import DEFAULT_MAX_MEMBER_BYTES, DEFAULT_MAX_TOTAL_BYTES
    from ..recipe.bundle import unpack as unpack_bundle

    result = unpack_bundle(bundle, dest, trust_remote_code=trust_remote_code, allow_outside=allow_outside,
                           sources=dict(sources), force=force, cache_dir=cache_dir,
                           max_member_bytes=max_member_bytes or DEFAULT_MAX_MEMBER_BYTES,
                           max_total_bytes=max_total_bytes or DEFAULT_MAX_TOTAL_BYTES)
    if as_json:
        emit_json(result)
        return
    c = console(stderr=True)
    c.print(f"[green]unpacked[/] {bundle} -> {result['recipe']}  (datasets in {result['data_dir']})")
    for name, d in result["datasets"].items():
        how = {"included": "from the bundle", "converted": "re-converted, sha256 verified", "remote": "hub entry",
               "external": "points outside DEST: not written"}[d["how"]]
        c.print(f"  {name}: {how}" + (f"  {d['file']}" if d.get("file") else ""))
    for name, conv in result["conversions"].items():
        c.print(f"  converted {name} from {conv['source']} ({conv['rows']} rows)")
    for w in result["warnings"]:
        c.print(f"[yellow]warning[/] {w}")
    c.print(f"registered {', '.join(result['registered'])} in {Path(result['data_dir']) / 'dataset_info.json'}")
    c.print(f"next: {result['next']}")
