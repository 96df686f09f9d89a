"""A tiny, randomly initialised Qwen3 model with the real Qwen3 tokenizer, for CPU demos and tests.

Same architecture and tokenizer as Qwen3 (so templates, think tokens, LoRA targets and the whole
LLaMA-Factory path are exercised), 2 layers of width 64: it trains on CPU in seconds and its
outputs are nonsense. Built locally (no download) into a cache folder; never committed. Every
command that names a model takes it as ``qfk-tiny`` (:func:`qwen_factory_kit.recipe.presets.resolve_model`).
"""

from __future__ import annotations

import os
from pathlib import Path

TINY_CONFIG = dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, tie_word_embeddings=True,
                   bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
TINY_NAME = "tiny-qwen3"
#: the model name every command that names a model accepts for the tiny model (``--model qfk-tiny``, ``qfk chat qfk-tiny``)
TINY_ALIAS = "qfk-tiny"


def cache_dir() -> Path:
    return Path(os.environ.get("QFK_CACHE") or Path.home() / ".cache" / "qwen_factory_kit")


def tiny_model_dir() -> Path:
    """Where the tiny model is built (``$QFK_CACHE/tiny-qwen3``, else ``~/.cache/qwen_factory_kit/tiny-qwen3``)."""
    return cache_dir() / TINY_NAME


def is_built(folder: str | os.PathLike) -> bool:
    out = Path(folder)
    return (out / "config.json").is_file() and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def build_tiny_model(dest: str | os.PathLike | None = None, *, seed: int = 0) -> Path:
    """Build (once) and return the folder of the tiny model."""
    out = Path(dest) if dest else tiny_model_dir()
    if is_built(out):
        return out
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from .lfbridge import load_tokenizer

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(**TINY_CONFIG))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" would interleave with the kit's own output
    try:
        model.save_pretrained(tmp)
    finally:
        hf_logging.enable_progress_bar()
    load_tokenizer().save_pretrained(tmp)
    import shutil

    if out.exists() and not (out / "model.safetensors").is_file():
        shutil.rmtree(out, ignore_errors=True)  # a half-built folder from a killed run
    try:
        tmp.replace(out)
    except OSError:  # another process built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return out
