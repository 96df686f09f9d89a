"""``qfk demo``: the kit's path on the bundled example data, offline, on CPU.

1. convert every bundled example (medical reasoning rows, a FineTome-style parquet with multi-turn
   and system rows, a Moses folder with en/zh_TW/ja, an OPUS zip, preference pairs) into a fresh
   workspace, register them in its ``data/dataset_info.json`` and lint them;
2. build a tiny Qwen3-architecture model with the real Qwen3 tokenizer (:mod:`.tiny`);
3. write a LoRA recipe (``qfk recipe new --device cpu``: medical reasoning + FineTome 75/25, exact
   mix, template and enable_thinking from the data) with a few quick steps, and train it with
   ``qfk train`` (LLaMA-Factory's ``run_exp`` through the kit's entry module): loss plot, run record, summary;
4. evaluate the run against its base model on the held-out medical rows (``qfk eval --base auto``:
   metrics, predictions, ``report.html``) and merge its adapter for serving (``qfk merge``);
5. say where the tiny model is and the three commands that put a file of one's own through the
   same CPU path (:func:`own_data_commands`: convert, ``recipe new --model qfk-tiny --device cpu``, train).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .convert import ConvertResult, convert
from .errors import QfkError


def examples_dir() -> Path:
    """The bundled examples: ``$QFK_EXAMPLES``, else ``examples/`` beside the package (source checkout)."""
    env = os.environ.get("QFK_EXAMPLES")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "examples")
    for c in candidates:
        if (c / "medical_r1" / "rows.jsonl").is_file():
            return c
    raise QfkError("cannot find the bundled examples folder",
                   "run qfk demo from a clone of the repository (pip install -e .), or set QFK_EXAMPLES=/path/to/examples")


@dataclass
class DemoStep:
    title: str
    converter: str
    source: str
    options: dict


def steps(ex: Path) -> list[DemoStep]:
    return [
        DemoStep("medical reasoning rows -> Alpaca with <think>", "medical-r1", str(ex / "medical_r1" / "rows.jsonl"),
                 dict(name="demo_medical", fix_escaped_newlines=True, min_quality=0.9, val_size=2)),
        DemoStep("FineTome-style parquet (multi-turn, system) -> Alpaca with history", "sharegpt", str(ex / "finetome"),
                 dict(name="demo_finetome")),
        DemoStep("Moses en/zh_TW/ja -> six translation directions", "moses", str(ex / "moses"),
                 dict(name="demo_translation", test_size=4)),
        DemoStep("OPUS en-ja zip -> both directions", "moses", str(ex / "opus" / "en-ja.txt.zip"), dict(name="demo_opus")),
        DemoStep("preference pairs -> ranking data for ORPO/DPO", "preference", str(ex / "preference" / "pairs.jsonl"),
                 dict(name="demo_preference")),
    ]


#: What makes the CPU recipe (``--device cpu``) a demo run: a few quick steps of the tiny model.
DEMO_OVERRIDES = dict(max_steps=6, logging_steps=1, save_steps=3, eval_steps=3, cutoff_len=1024, per_device_train_batch_size=2,
                      gradient_accumulation_steps=1, learning_rate=1e-3, overwrite_output_dir=True)
DEMO_RECIPE = "demo-lora.yaml"
#: the dataset name and the recipe of :func:`own_data_commands`
OWN_NAME, OWN_RECIPE = "mine", "mine.yaml"


def demo_recipe(workdir: str | os.PathLike, model_dir: str | os.PathLike):
    """Write WORKDIR/demo-lora.yaml (paths relative to WORKDIR, where it is run from)."""
    import contextlib

    from .recipe.build import RecipeRequest, new_recipe
    from .recipe.document import write_text

    with contextlib.chdir(workdir):
        req = RecipeRequest(method="lora", model=str(model_dir), datasets=["demo_medical", "demo_finetome"],
                            mix={"demo_medical": 0.75, "demo_finetome": 0.25}, eval_datasets=["demo_medical_val"],
                            data_dir="data", output_dir="saves/demo-lora", overrides=dict(DEMO_OVERRIDES), filename=DEMO_RECIPE,
                            device="cpu",
                            command="qfk recipe new --model qfk-tiny --device cpu --method lora --dataset demo_medical,demo_finetome "
                                    "--mix demo_medical=0.75,demo_finetome=0.25 --eval-dataset demo_medical_val (+ demo steps)")
        recipe = new_recipe(req)
        write_text(DEMO_RECIPE, recipe.render(), force=True)
    return Path(workdir) / DEMO_RECIPE, recipe


def train_demo(workdir: str | os.PathLike, *, console=None):
    """Build the tiny model, write the demo recipe and train it with ``qfk train``'s runner."""
    import contextlib

    from .launch.runner import run_training
    from .tiny import build_tiny_model

    model = build_tiny_model()
    path, recipe = demo_recipe(workdir, model)
    with contextlib.chdir(workdir):
        result = run_training(DEMO_RECIPE, [], console=console)
    return path, recipe, result


#: ``qfk eval`` of the demo run: a few held-out rows, short answers (the tiny model's are nonsense)
EVAL_DATASET, EVAL_ROWS, EVAL_NEW_TOKENS = "demo_medical_val", 2, 24


def evaluate_and_merge_demo(workdir: str | os.PathLike, run_dir: str, *, console=None):
    """``qfk eval RUN --dataset demo_medical_val --base auto`` and ``qfk merge RUN`` on the demo run."""
    import contextlib

    from .post.evaluate import EvalRequest, evaluate
    from .post.merge import plan_merge, run_merge

    with contextlib.chdir(workdir):
        outcome = evaluate(EvalRequest(target=run_dir, dataset=EVAL_DATASET, base="auto", max_samples=EVAL_ROWS,
                                       max_new_tokens=EVAL_NEW_TOKENS, data_dir="data",
                                       command=f"qfk eval {run_dir} --dataset {EVAL_DATASET} --base auto "
                                               f"--max-samples {EVAL_ROWS} --max-new-tokens {EVAL_NEW_TOKENS}"),
                           console=console)
        merged = run_merge(plan_merge(run_dir, force=True, command=f"qfk merge {run_dir}"))
    return outcome, merged


def own_data_commands() -> list[str]:
    """The three commands that put a file of one's own through the demo's CPU path, run from any
    folder (its ``./data`` holds the dataset): convert (here the bundled medical rows, to be replaced
    by one's own file), a CPU recipe for the tiny model, train."""
    from .tiny import TINY_ALIAS

    rows = examples_dir() / "medical_r1" / "rows.jsonl"
    return [f"qfk convert medical-r1 {shlex.quote(str(rows))} --name {OWN_NAME}",
            f"qfk recipe new --model {TINY_ALIAS} --device cpu --method lora --dataset {OWN_NAME} -o {OWN_RECIPE}",
            f"qfk train {OWN_RECIPE}"]


#: what to say about the file in :func:`own_data_commands`: which converter reads which rows
OWN_DATA_NOTE = ("your file in place of rows.jsonl: medical-r1 reads question/think/answer rows, sharegpt conversations "
                 "or messages, columns any table (--prompt COLUMN --response COLUMN); qfk convert --help lists them all")


def run_demo(workdir: str | os.PathLike, *, on_step=None) -> list[tuple[DemoStep, ConvertResult, dict]]:
    """Run the demo in ``workdir`` (its ``data/`` is the LLaMA-Factory dataset_dir): convert,
    register and lint each bundled example with the template settings its think mode calls for."""
    from .lint import lint
    from .think import training_settings

    work = Path(workdir)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    results = []
    for step in steps(examples_dir()):
        res = convert(step.converter, step.source, data_dir=str(data), register=True, force=True, **step.options)
        template, enable_thinking = training_settings(res.think["mode"])
        report = lint(res.name, data_dir=str(data), template=template, enable_thinking=enable_thinking).summary()
        report.update(template=template, enable_thinking=enable_thinking)
        results.append((step, res, report))
        if on_step:
            on_step(step, res, report)
    return results
