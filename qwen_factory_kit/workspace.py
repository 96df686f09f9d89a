"""Where things live: the data dir (LLaMA-Factory's ``dataset_dir``) and dataset names."""

from __future__ import annotations

import os
import re
from pathlib import Path

DATA_DIR_ENV = "QFK_DATA_DIR"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``--data-dir``, else ``$QFK_DATA_DIR``, else ``./data`` (where ``llamafactory-cli`` and the
    WebUI look by default)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path("data")


def slug(text: str) -> str:
    """A dataset name LLaMA-Factory accepts in a comma-separated ``dataset:`` list."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    return s or "dataset"
