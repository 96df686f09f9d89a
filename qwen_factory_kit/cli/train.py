"""``qfk train``."""

from __future__ import annotations

import click

from .common import console, emit_json


@click.command("train", context_settings={"ignore_unknown_options": False})
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--nproc", type=click.IntRange(min=1), help="Processes (GPUs) on this node: launches through torchrun. "
                                                          "Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT.")
@click.option("--cpu", is_flag=True, help="Train on the CPU: put the overrides that make the recipe run there before yours "
                                          "(use_cpu=true bf16=false, and e.g. quantization_bit=null deepspeed=null "
                                          "where the recipe needs a GPU); qfk_run.json records them as cpu_overrides.")
@click.option("--no-check", is_flag=True, help="Skip the checks before launching (LLaMA-Factory's argument parsing, the kit's quick checks, "
                                               "the refusal of a GPU recipe on a machine without one).")
@click.option("--dry-run", is_flag=True, help="Print the command that would run, and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Show LLaMA-Factory's output (always in OUTPUT_DIR/qfk_train.log).")
@click.option("--json", "as_json", is_flag=True, help="Print the result (status, summary, paths) as JSON.")
def train(recipe, overrides, nproc, cpu, no_check, dry_run, verbose, as_json):
    """Run a recipe through LLaMA-Factory with the kit's plugin: progress, run record, loss plot.

    Same arguments as `llamafactory-cli train RECIPE KEY=VALUE...`. The training process is
    `python -m qwen_factory_kit.launch` (under torchrun with --nproc, NNODES>1, or DeepSpeed): it
    registers the kit's dataset converters (formatting qfk_medical_r1 / qfk_sharegpt read raw rows)
    and callbacks, then calls LLaMA-Factory's run_exp. OUTPUT_DIR gets qfk_run.json (recipe, data
    manifests, versions, git state), qfk_loss.png, qfk_summary.json and qfk_train.log.

    On a machine without a CUDA GPU, a recipe that needs one (bf16, QLoRA, DeepSpeed, liger,
    unsloth, flash_attn fa3 ...) is refused before anything is written, naming the overrides that
    run it on the CPU; --cpu applies them.

    Ctrl-C stops after the current step and saves a checkpoint; the same command resumes.
    Exit status: 0 done, 1 failed (including a nan/inf loss), 2 bad recipe, 130 stopped.

    \b
    Examples:
      qfk train sft.yaml
      qfk train sft.yaml learning_rate=5.0e-6 num_train_epochs=3
      qfk train sft.yaml --nproc 4
      NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 qfk train sft.yaml --nproc 8
      qfk train sft.yaml --dry-run
      qfk train sft.yaml --cpu max_steps=10
    """
    from ..launch.runner import TrainingRefused, prepare_training, run_training

    c = console(stderr=True)
    try:
        plan = prepare_training(recipe, overrides, nproc=nproc, check=not no_check, cpu=cpu)
    except TrainingRefused as exc:
        _show_plan(exc.plan, c, as_json)
        raise
    _show_plan(plan, c, as_json, cpu)
    if dry_run:
        launch = plan.launch.redacted()  # a dry run's output ends up in logs and issues: no secrets
        if as_json:
            emit_json({"argv": launch.argv, "env": launch.env, "distributed": launch.distributed, "nproc": launch.nproc,
                       "nnodes": launch.nnodes})
        else:
            click.echo(launch.describe())
        return 0
    result = run_training(recipe, plan.overrides, nproc=nproc, console=c, verbose=verbose, launch=plan.launch)
    if as_json:
        emit_json({**result.as_dict(), "cpu_overrides": plan.cpu} if cpu else result.as_dict())
    else:
        _show_result(result, recipe, [*overrides, *(["--cpu"] if cpu else [])], c)
    return result.returncode


def _show_plan(plan, c, as_json: bool, cpu: bool = False) -> None:
    from ..findings import print_findings
    from ..recipe.document import scalar

    for name in plan.registered:
        c.print(f"registered mix entry {name} in {plan.data_dir}/dataset_info.json")
    if cpu and not as_json:
        added = " ".join(f"{k}={scalar(v)}" for k, v in plan.cpu.items()) or "your overrides only (they set every CPU key)"
        c.print(f"--cpu: training on the CPU with {added}", soft_wrap=True)
    if plan.findings and not as_json:
        print_findings(plan.findings, c)


def _show_result(result, recipe: str, overrides, c) -> None:
    from ..post.training import summary_lines

    for line in summary_lines(result.summary) if result.summary else []:
        c.print(line)
    c.print(f"run record: {result.output_dir}/qfk_run.json   log: {result.log}")
    if result.status == "stopped":
        c.print(f"[yellow]stopped at step {result.last_step}[/]: resume with: qfk train {recipe} " + " ".join(overrides))
    elif result.returncode != 0:
        for line in result.tail[-15:]:
            c.print(f"  | {line}", markup=False, highlight=False)
        c.print(f"[red]training failed[/] (exit {result.returncode}): {result.error}")
