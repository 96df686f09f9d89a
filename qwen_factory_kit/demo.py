"""``qfk demo``: the kit's path on the bundled example data, offline, on CPU.

1. convert every bundled example (medical reasoning rows, a FineTome-style parquet with multi-turn
   and system rows, a Moses folder with en/zh_TW/ja, an OPUS zip, preference pairs) into a fresh
   workspace, register them in its ``data/dataset_info.json`` and lint them;
2. build a tiny Qwen3-architecture model with the real Qwen3 tokenizer (:mod:`.tiny`);
3. write a LoRA recipe (``qfk recipe new``: medical reasoning + FineTome 75/25, exact mix, template
   and enable_thinking from the data) with CPU overrides, and train it a few steps with ``qfk train``
   (LLaMA-Factory's ``run_exp`` through the kit's entry module): loss plot, run record, summary;
4. evaluate the run against its base model on the held-out medical rows (``qfk eval --base auto``:
   metrics, predictions, ``report.html``) and merge its adapter for serving (``qfk merge``).
"""

from __future__ import annotations

import os
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


#: What turns a GPU recipe into a CPU demo run (a few steps of the tiny model).
CPU_OVERRIDES = dict(use_cpu=True, bf16=False, max_steps=6, logging_steps=1, save_steps=3, eval_steps=3, cutoff_len=1024,
                     per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-3,
                     preprocessing_num_workers=1, dataloader_num_workers=0, overwrite_output_dir=True)
DEMO_RECIPE = "demo-lora.yaml"


def demo_recipe(workdir: str | os.PathLike, model_dir: str | os.PathLike):
    """Write WORKDIR/demo-lora.yaml (paths relative to WORKDIR, where it is run from)."""
    import contextlib

    from .recipe.build import RecipeRequest, new_recipe
    from .recipe.document import write_text

    with contextlib.chdir(workdir):
        req = RecipeRequest(method="lora", model=str(model_dir), datasets=["demo_medical", "demo_finetome"],
                            mix={"demo_medical": 0.75, "demo_finetome": 0.25}, eval_datasets=["demo_medical_val"],
                            data_dir="data", output_dir="saves/demo-lora", overrides=dict(CPU_OVERRIDES), filename=DEMO_RECIPE,
                            command="qfk recipe new --model MODEL --method lora --dataset demo_medical,demo_finetome "
                                    "--mix demo_medical=0.75,demo_finetome=0.25 --eval-dataset demo_medical_val (+ CPU overrides)")
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
