"""``qfk recipe new|check|ls|cp|pack|unpack``."""

from __future__ import annotations

import sys

import click

from ..recipe import presets
from ..recipe.tokenmix import MIX_BY
from .common import console, emit_json, split_csv
from .datasets import data_dir_option

OVERRIDES = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")


@click.group("recipe")
def recipe_group() -> None:
    """LLaMA-Factory YAML recipes: write, check, copy, share.

    \b
    Examples:
      qfk recipe new --model Qwen3-4B --method lora --dataset medical_r1,finetome --mix medical_r1=0.75,finetome=0.25 -o sft.yaml
      qfk recipe check sft.yaml
      qfk recipe ls && qfk recipe cp qwen3-4b-medical-lora my.yaml
      qfk recipe pack sft.yaml -o bundle.zip && qfk recipe unpack bundle.zip ./elsewhere
    """


@recipe_group.command("new")
@click.option("--model", help="Qwen3 name (Qwen3-0.6B ... Qwen3-235B-A22B, *-Instruct-2507, *-Thinking-2507), a local folder, "
                                "or qfk-tiny (the kit's tiny Qwen3 for CPU runs, built on first use).")
@click.option("--method", type=click.Choice(presets.METHODS), required=False,
              help="Training method, or predict / merge companions.")
@click.option("--dataset", "datasets", multiple=True, metavar="A,B", help="Registered training datasets.")
@click.option("--mix", metavar="A=0.75,B=0.25", help="Exact mixing ratios (per-dataset num_samples from the real row counts).")
@click.option("--mix-total", type=click.IntRange(min=1), help="Rows per epoch of the mix (default: as many as fit without repeats).")
@click.option("--mix-by", type=click.Choice(MIX_BY, case_sensitive=False), default=None,
              help="What the --mix ratios hold in: rows (default; NAME__nN entries with num_samples) or tokens (the label "
                   "tokens LLaMA-Factory trains, within 1 point where the rows allow it; NAME__tN files of the rows chosen). "
                   "The header states the shares in rows and in tokens either way.")
@click.option("--eval-dataset", "eval_datasets", multiple=True, metavar="X", help="Held-out dataset(s) (for predict: the rows to predict).")
@click.option("--from", "from_recipe", type=click.Path(exists=True, dir_okay=False),
              help="predict/merge: the training recipe (model, adapter, template, enable_thinking come from it).")
@click.option("--adapter", help="predict/merge: adapter folder (default: the --from recipe's output_dir); "
                                "none: the base model (predict only).")
@click.option("--base", is_flag=True, help="predict: the base model with no adapter (same as --adapter none).")
@click.option("--sample/--deterministic", "sample", default=None,
              help="predict: Qwen3's sampling, or deterministic decoding (do_sample false). Default: deterministic for "
                   "translation data (reproducible BLEU/chrF), sampling otherwise; thinking mode always samples.")
@click.option("--deepspeed", type=click.Choice([*presets.DEEPSPEED, presets.NO_DEEPSPEED]),
              help="DeepSpeed ZeRO config shipped by the kit (default: z3 for full fine-tuning of 4B and up).")
@click.option("--output-dir", help="output_dir (export_dir for merge). Default: saves/MODEL/METHOD/DATASETS.")
@click.option("--device", type=click.Choice(["gpu", "cpu"]), default=None,
              help="cpu: a recipe that trains on a CPU as it is (use_cpu true, bf16 false, 1 preprocessing worker, "
                   "no QLoRA/DeepSpeed/liger, no GPU sizing). Default gpu: for a CUDA GPU.")
@click.option("--gpu-memory", type=click.FloatRange(min=1), metavar="GB",
              help="Fit the recipe to a GPU of this many GB: per-device batch / accumulation (same effective batch), "
                   "gradient checkpointing, liger. Default: this machine's card, if it has one.")
@click.option("--gpus", type=click.IntRange(min=1), metavar="N", help="GPUs the run uses (ZeRO shards memory over them). Default: this machine's count.")
@click.option("--cutoff-len", type=click.IntRange(min=16), metavar="N",
              help="cutoff_len as given (default: the smallest multiple of 256 that holds every measured row).")
@click.option("--max-cutoff", type=click.IntRange(min=256), metavar="N",
              help="Never choose a cutoff_len above N (as well as what fits the GPU, and 8192).")
@click.option("--drop-long", is_flag=True,
              help="Rows longer than the cutoff: drop them (registers NAME__max<N> as qfk datasets filter does, and "
                   "trains it) instead of stopping (or, with --cutoff-len, letting LLaMA-Factory cut them).")
@click.option("--liger/--no-liger", default=None,
              help="enable_liger_kernel (default: on for SFT on a CUDA GPU with liger-kernel installed).")
@click.option("--packing/--no-packing", default=None,
              help="packing + neat_packing for single-turn SFT rows that cutoff_len does not cut (default: with liger on a CUDA GPU).")
@click.option("--no-stats", is_flag=True, help="Do not measure the training rows' token lengths: keep the preset cutoff_len (2048).")
@click.option("--stats-rows", type=click.IntRange(min=1), default=2000, show_default=True, help="Rows per dataset measured for cutoff_len.")
@click.option("--explain-memory", is_flag=True, help="Print the GPU memory estimate part by part (stderr; in --json: decided.memory.lines).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the recipe here (default: print it).")
@click.option("--force", is_flag=True, help="Replace an existing -o file.")
@data_dir_option
@click.option("--list-models", is_flag=True, help="List the model names --model accepts and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print what was decided (and the recipe text) as JSON.")
@OVERRIDES
def new(model, method, datasets, mix, mix_total, mix_by, eval_datasets, from_recipe, adapter, base, sample, deepspeed, output_dir,
        device, gpu_memory, gpus, cutoff_len, max_cutoff, drop_long, liger, packing, no_stats, stats_rows, explain_memory, output, force,
        data_dir, list_models, as_json, overrides):
    """Write a LLaMA-Factory recipe that `llamafactory-cli train` runs as it is.

    Presets (one table: qwen_factory_kit/recipe/presets.py) follow the Qwen3 guidance: LoRA r=32,
    alpha=64, dropout 0.05 on all linear layers; per-size learning rate, batch and epochs. The
    template and enable_thinking come from what the datasets hold (their qfk manifests). cutoff_len
    holds every training row (token lengths as LLaMA-Factory encodes them; rows over what the GPU or
    --max-cutoff allows stop it, or with --drop-long are filtered out); the batch fits the GPU
    (--gpu-memory, or this machine's card); on a CUDA GPU with liger-kernel, SFT recipes use the
    liger kernel and neat packing. The header says why for each. KEY=VALUE overrides win over everything.

    \b
    Examples:
      qfk recipe new --model Qwen3-4B --method lora --dataset medical_r1,finetome \\
          --mix medical_r1=0.75,finetome=0.25 --eval-dataset medical_r1_val -o sft.yaml
      qfk recipe new --model Qwen3-4B --method lora --mix medical_r1=0.75,finetome=0.25 --mix-by tokens -o sft.yaml
      qfk recipe new --model Qwen3-1.7B --method qlora --dataset opus_opensubtitles -o mt.yaml
      qfk recipe new --model Qwen3-4B --method orpo --dataset prefs -o orpo.yaml
      qfk recipe new --model Qwen3-4B --method lora --dataset medical_r1 --gpu-memory 24 --explain-memory -o sft.yaml
      qfk recipe new --model Qwen3-4B --method lora --dataset medical_r1 --max-cutoff 4096 --drop-long -o sft.yaml
      qfk recipe new --method predict --from sft.yaml --eval-dataset medical_r1_val -o predict.yaml
      qfk recipe new --method predict --from mt.yaml --base --eval-dataset translation_test -o before.yaml
      qfk recipe new --method merge --from sft.yaml -o merge.yaml
      qfk recipe new --model qfk-tiny --device cpu --method lora --dataset demo_medical -o cpu.yaml
    """
    from ..recipe.build import RecipeRequest, invoked_command, new_recipe, next_command, recipe_warnings, save_recipe
    from ..recipe.mix import parse_mix
    from ..recipe.document import parse_overrides, scalar

    if list_models:
        from ..tiny import TINY_ALIAS

        for name, (size, kind) in presets.MODELS.items():
            click.echo(f"{name:32} {size:10} {kind}")
        click.echo(f"{TINY_ALIAS:32} {'tiny':10} hybrid (random weights, the real Qwen3 tokenizer: for CPU runs)")
        return
    if not method:
        raise click.UsageError(f"--method is required ({', '.join(presets.METHODS)})")
    adapter = _adapter_choice(method, adapter, base, sample)
    req = RecipeRequest(method=method, model=model, datasets=split_csv(datasets) or [], mix=parse_mix(mix), mix_total=mix_total,
                        mix_by=mix_by.lower() if mix_by else None,
                        eval_datasets=split_csv(eval_datasets) or [], data_dir=data_dir, output_dir=output_dir, adapter=adapter,
                        sample=sample, from_recipe=from_recipe, deepspeed=deepspeed, overrides=parse_overrides(overrides),
                        filename=output or "recipe.yaml", command=invoked_command(sys.argv), cutoff_len=cutoff_len,
                        liger=liger, packing=packing, gpu_memory=gpu_memory, gpus=gpus, max_cutoff=max_cutoff,
                        drop_long=drop_long, stats=not no_stats, stats_rows=stats_rows, device=device,
                        progress=sys.stderr.isatty() and not as_json)
    recipe = new_recipe(req)
    text = recipe.render()
    if explain_memory and not as_json:
        memory = recipe.info.get("memory")
        click.echo("\n".join(memory["lines"]) if memory else "no memory estimate for this recipe (predict/merge, or a model "
                   "the kit has no memory model for)", err=True)
    written = [str(p) for p in save_recipe(recipe, output, force=force)] if output else []
    warnings = recipe_warnings(recipe)
    for w in warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    if as_json:
        emit_json({"output": output, "recipe": text, "args": recipe.args, "decided": recipe.info, "files_written": written,
                   "warnings": warnings})
        return
    if not output:
        sys.stdout.write(text)
        return
    c = console(stderr=True)
    c.print(f"[green]wrote[/] {output}  ({recipe.info.get('template')}, enable_thinking {scalar(recipe.info.get('enable_thinking'))})")
    for w in written:
        c.print(f"[green]wrote[/] {w}")
    for name, d in (recipe.info.get("dropped") or {}).items():
        c.print(f"dropped {d['dropped']} of {d['read']} rows of {name} over {d['max_tokens']} tokens: registered {d['dataset']} "
                f"({d['file']}, rejects in {d['rejects']})")
    if recipe.info.get("mix"):
        c.print("mix entries: " + ", ".join(f"{k} -> {v}" for k, v in recipe.info["mix"].items()))
    c.print(f"next: {next_command(recipe, output)}")
    if recipe.kind == "train" and recipe.info.get("device") != "cpu":
        from ..launch.torchrun import device_count
        from ..recipe.cpu import cpu_plan

        if cpu_plan(recipe.args, device_count() > 0).refused:
            c.print(f"note: this machine has no CUDA GPU, so qfk train refuses {output} here: qfk train {output} --cpu "
                    "runs it on the CPU (or write the recipe with --device cpu)", soft_wrap=True)


def _adapter_choice(method: str, adapter: str | None, base: bool, sample: bool | None) -> str | None:
    """--adapter, with --base as --adapter none; --base and --sample/--deterministic refused for training methods."""
    if method in presets.TRAIN_METHODS:
        used = [o for o, v in (("--base", base), ("--sample/--deterministic", sample is not None)) if v]
        if used:
            raise click.UsageError(f"{', '.join(used)}: for --method predict, not {method}")
    if base:
        from ..recipe.inference import is_no_adapter

        if adapter is not None and not is_no_adapter(adapter):
            raise click.UsageError(f"--base (no adapter) contradicts --adapter {adapter}")
        return presets.NO_ADAPTER
    return adapter


@recipe_group.command("check")
@click.argument("recipe", type=click.Path(dir_okay=False))
@OVERRIDES
@click.option("--no-stats", is_flag=True, help="Skip the token-length check (it loads the tokenizer: a few seconds).")
@click.option("--stats-rows", type=click.IntRange(min=1), default=2000, show_default=True, help="Rows per dataset for the length check.")
@click.option("--gpu", "for_gpu", is_flag=True, help="Check it for a GPU machine: on one without CUDA, what the recipe needs a GPU "
                                                     "for (bf16, QLoRA, DeepSpeed ...) is not an error here.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def check(recipe, overrides, no_stats, stats_rows, for_gpu, as_json):
    """Check a recipe with LLaMA-Factory's own parser and the kit's rules (no model load).

    Exit status 1 when a check fails. Run it from the folder you will train from: dataset_dir and
    output_dir are relative to it, as for llamafactory-cli. On a machine without a CUDA GPU, a
    recipe that needs one is an error (its fix: the overrides that run it on the CPU); --gpu checks
    it for a GPU machine instead.

    \b
    Examples:
      qfk recipe check sft.yaml
      qfk recipe check sft.yaml cutoff_len=4096 --json
      qfk recipe check sft.yaml --gpu          # on a laptop, for the GPU machine
    """
    from ..findings import failures, print_findings
    from ..recipe.check import Machine, check_recipe

    findings = check_recipe(recipe, list(overrides), stats=not no_stats, stats_rows=stats_rows,
                            machine=Machine.here(for_gpu=for_gpu))
    failed = len(failures(findings))
    if as_json:
        emit_json({"recipe": recipe, "ok": not failed, "findings": [f.as_dict() for f in findings]})
    else:
        c = console()
        print_findings(findings, c)
        warned = sum(f.severity == "warn" for f in findings)
        c.print(f"\n{recipe}: [{'red' if failed else 'green'}]{failed} failed[/], {warned} warnings")
    return 1 if failed else 0


@recipe_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def ls(as_json):
    """List the curated recipes (the repository's recipes/ folder).

    \b
    Examples:
      qfk recipe ls
      qfk recipe cp qwen3-4b-medical-lora my.yaml
    """
    from ..recipe.curated import curated, describe

    items = {name: {"path": str(p), "description": describe(p)} for name, p in curated().items()}
    if as_json:
        emit_json(items)
        return
    from rich.table import Table

    t = Table("name", "what it does", title="curated recipes (qfk recipe cp NAME DEST)")
    for name, item in items.items():
        t.add_row(name, item["description"])
    console().print(t)


@recipe_group.command("cp")
@click.argument("name")
@click.argument("dest", type=click.Path())
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
def cp(name, dest, force):
    """Copy curated recipe NAME to DEST (a file or a folder) to start from it.

    The header's commands name the copy (DEST as given), so they run it as they are.

    \b
    Examples:
      qfk recipe cp qwen3-4b-medical-lora sft.yaml
      qfk recipe cp qwen3-1.7b-translation-qlora recipes/
    """
    from ..recipe.curated import command_path, copy_curated

    copied = copy_curated(name, dest, force=force)
    c = console(stderr=True)
    c.print(f"[green]copied[/] {name} -> {copied.path}")
    for made in copied.registered:
        c.print(f"registered mix entry {made} in {copied.data_dir}/dataset_info.json")
    c.print(f"next: qfk recipe check {command_path(copied.path)}")
