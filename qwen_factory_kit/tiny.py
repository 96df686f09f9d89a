"""A tiny, randomly initialised Qwen3 model with the real Qwen3 tokenizer, for CPU demos and tests.

Same architecture and tokenizer as Qwen3 (so templates, think tokens, LoRA targets and the whole
LLaMA-Factory path are exercised), 2 layers of width 64: it trains on CPU in seconds and its
outputs are nonsense. Built locally (no download) into a cache folder; never committed.
"""

from __future__ import annotations

import os
from pathlib import Path

TINY_CONFIG = dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, tie_word_embeddings=True,
                   bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
TINY_NAME = "tiny-qwen3"


def cache_dir() -> Path:
    return Path(os.environ.get("QFK_CACHE") or Path.home() / ".cache" / "qwen_factory_kit")


def build_tiny_model(dest: str | os.PathLike | None = None, *, seed: int = 0) -> Path:
    """Build (once) and return the folder of the tiny model."""
    out = Path(dest) if dest else cache_dir() / TINY_NAME
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
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
