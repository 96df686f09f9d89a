"""The kit's data files under ``dataset_info/``: the catalog of known sources and the folder itself.

``dataset_info/catalog.json`` names the sources the kit knows (ModelScope and Hugging Face ids,
schema, license, converter); a converter names its output after the catalog key. A leaf module:
the converters read the catalog without importing the registry.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

from .errors import QfkError


def resource_dir() -> Path:
    """The repository's ``dataset_info/`` folder (schema and catalog)."""
    candidates = [Path(__file__).resolve().parent.parent / "dataset_info",
                  Path(sys.prefix) / "share" / "qwen_factory_kit" / "dataset_info"]
    for c in candidates:
        if (c / "dataset_info.schema.json").is_file():
            return c
    raise QfkError("cannot find dataset_info/dataset_info.schema.json", "reinstall the kit: pip install -e .")


@lru_cache(maxsize=1)
def catalog() -> dict:
    """Catalog key -> what the kit knows of that source."""
    return json.loads((resource_dir() / "catalog.json").read_text(encoding="utf-8"))


def catalog_lookup(dataset_id: str | None) -> tuple[str, dict] | None:
    """The catalog entry whose ModelScope or Hugging Face id is ``dataset_id``."""
    if not dataset_id:
        return None
    for key, item in catalog().items():
        if dataset_id in (item.get("modelscope"), item.get("huggingface")):
            return key, item
    return None
