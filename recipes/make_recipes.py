"""Regenerate the curated recipes in this folder from the kit's presets (one source of truth).

    python recipes/make_recipes.py            # rewrite recipes/*.yaml
    python recipes/make_recipes.py --check    # exit 1 if a committed recipe differs (run by the tests)

The recipes are built with ``qfk recipe new``'s own code against a scratch workspace holding the
bundled examples under the names the real datasets get (medical_r1, finetome, translation,
prefs), so the template / enable_thinking lines come from real think-mode manifests.

They must not depend on the machine that generates them, nor on the examples' (short) rows: the
training recipes are made with ``--no-stats --no-liger --no-packing`` and no GPU (``NO_GPU``), so
they keep the preset cutoff_len and batch, and the header's memory estimate is the model's figure
for those settings.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from qwen_factory_kit.convert import convert  # noqa: E402
from qwen_factory_kit.demo import examples_dir  # noqa: E402
from qwen_factory_kit.recipe.build import RecipeRequest, new_recipe  # noqa: E402
from qwen_factory_kit.recipe.sizing import NO_GPU  # noqa: E402

#: the machine-independent training recipe: what --no-stats --no-liger --no-packing (and no GPU) ask for
FIXED = dict(stats=False, liger=False, packing=False, gpu=NO_GPU)
FIXED_FLAGS = "--no-stats --no-liger --no-packing"

PREP_MEDICAL = [
    "Prepare the data once (names are the defaults qfk convert gives these sources):",
    "  qfk convert medical-r1 modelscope://krisfu/delicate_medical_r1_data --val-size 0.1",
    "  qfk convert sharegpt modelscope://AI-ModelScope/FineTome-100k",
    "  qfk recipe cp qwen3-4b-medical-lora sft.yaml     # registers the *__nN mix entries",
    "For a mix sized to your own row counts: qfk recipe new --model Qwen3-4B --method lora "
    "--dataset medical_r1,finetome --mix medical_r1=0.75,finetome=0.25",
]
PREP_TRANSLATION = [
    "Prepare the data once (a Moses folder with corpus.en / corpus.zh_tw / corpus.ja, or OPUS .txt.zip files):",
    "  qfk convert moses _dataset/ --name translation --val-size 2000 --test-size 2000",
]
PREP_ORPO = [
    "Prepare the data once (rows with prompt, chosen, rejected):",
    "  qfk convert preference pairs.jsonl --name prefs",
]


def specs() -> list[tuple[str, RecipeRequest]]:
    def req(filename: str, command: str, notes: list[str], **kw) -> tuple[str, RecipeRequest]:
        return filename, RecipeRequest(filename=filename, command=command, curated=True, notes=notes, **kw)

    def companions(train: str, eval_dataset: str, predict_note: str, merge_note: str) -> list[tuple[str, RecipeRequest]]:
        """The predict and merge recipes that follow the training recipe ``train``."""
        stem = train.removesuffix(".yaml").removesuffix("-lora").removesuffix("-qlora")
        return [
            req(f"{stem}-predict.yaml", f"qfk recipe new --method predict --from {train} --eval-dataset {eval_dataset}",
                [predict_note], method="predict", from_recipe=train, eval_datasets=[eval_dataset]),
            req(f"{stem}-merge.yaml", f"qfk recipe new --method merge --from {train}",
                [merge_note], method="merge", from_recipe=train),
        ]

    return [
        req("qwen3-4b-medical-lora.yaml",
            "qfk recipe new --model Qwen3-4B --method lora --dataset medical_r1,finetome --mix medical_r1=0.75,finetome=0.25 "
            f"--mix-total 2880 --eval-dataset medical_r1_val --output-dir saves/qwen3-4b/lora/medical {FIXED_FLAGS}",
            PREP_MEDICAL, method="lora", model="Qwen3-4B", datasets=["medical_r1", "finetome"],
            mix={"medical_r1": 0.75, "finetome": 0.25}, mix_total=2880, eval_datasets=["medical_r1_val"],
            output_dir="saves/qwen3-4b/lora/medical", **FIXED),
        *companions("qwen3-4b-medical-lora.yaml", "medical_r1_val",
                    "Run after qwen3-4b-medical-lora.yaml; predictions go to OUTPUT_DIR/generated_predictions.jsonl.",
                    "Run after qwen3-4b-medical-lora.yaml. Serve the merged model with the same enable_thinking."),
        req("qwen3-1.7b-translation-qlora.yaml",
            "qfk recipe new --model Qwen3-1.7B --method qlora --dataset translation --eval-dataset translation_val "
            f"--output-dir saves/qwen3-1.7b/qlora/translation {FIXED_FLAGS}",
            PREP_TRANSLATION, method="qlora", model="Qwen3-1.7B", datasets=["translation"], eval_datasets=["translation_val"],
            output_dir="saves/qwen3-1.7b/qlora/translation", **FIXED),
        *companions("qwen3-1.7b-translation-qlora.yaml", "translation_test",
                    "Run after qwen3-1.7b-translation-qlora.yaml, on the held-out test split (for BLEU/chrF).",
                    "Run after qwen3-1.7b-translation-qlora.yaml: the 4-bit adapter merges into the bf16 base model."),
        req("qwen3-4b-orpo.yaml",
            f"qfk recipe new --model Qwen3-4B --method orpo --dataset prefs --output-dir saves/qwen3-4b/orpo/prefs {FIXED_FLAGS}",
            PREP_ORPO, method="orpo", model="Qwen3-4B", datasets=["prefs"], output_dir="saves/qwen3-4b/orpo/prefs",
            **FIXED),
        *companions("qwen3-4b-orpo.yaml", "medical_r1_val",
                    "Run after qwen3-4b-orpo.yaml; predict on any held-out SFT split (here the medical one).",
                    "Run after qwen3-4b-orpo.yaml."),
    ]


def prepare(work: Path) -> None:
    """The bundled examples, registered under the real datasets' names."""
    ex = examples_dir()
    data = str(work / "data")
    convert("medical-r1", str(ex / "medical_r1" / "rows.jsonl"), data_dir=data, name="medical_r1", register=True, force=True,
            fix_escaped_newlines=True, val_size=2)
    convert("sharegpt", str(ex / "finetome"), data_dir=data, name="finetome", register=True, force=True)
    convert("moses", str(ex / "moses"), data_dir=data, name="translation", register=True, force=True, val_size=4, test_size=4)
    convert("preference", str(ex / "preference" / "pairs.jsonl"), data_dir=data, name="prefs", register=True, force=True)


def build_all(work: Path) -> dict[str, str]:
    """{file name: recipe text}, built inside ``work`` (the scratch workspace)."""
    prepare(work)
    out: dict[str, str] = {}
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for filename, req in specs():
            text = new_recipe(req).render()
            (work / filename).write_text(text, encoding="utf-8")  # the predict/merge recipes read their --from
            out[filename] = text
    finally:
        os.chdir(cwd)
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    os.environ.pop("QFK_DATA_DIR", None)
    with tempfile.TemporaryDirectory(prefix="qfk-recipes-") as tmp:
        built = build_all(Path(tmp))
    stale = []
    for filename, text in built.items():
        path = HERE / filename
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(filename)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale curated recipes (run: python recipes/make_recipes.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
