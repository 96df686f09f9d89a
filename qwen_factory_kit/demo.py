"""``qfk demo``: the kit's path on the bundled example data, offline, on CPU.

Today: convert every bundled example (medical reasoning rows, a FineTome-style parquet with
multi-turn and system rows, a Moses folder with en/zh_TW/ja, an OPUS zip, preference pairs) into a
fresh workspace, register them in its ``data/dataset_info.json`` and report the counts and think
modes. Later steps (recipe, train, merge, evaluate) are added by the issues that build them.
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
