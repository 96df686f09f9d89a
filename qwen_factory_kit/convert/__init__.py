"""Converters: small plug-ins (:mod:`.contract`) over one streaming core (:mod:`.pipeline`).

>>> from qwen_factory_kit.convert import convert
>>> result = convert("medical-r1", "examples/medical_r1/rows.jsonl", output="/tmp/med.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import QfkError
from .columns import Columns
from .contract import Converter, Reject
from .pipeline import run_conversion
from .sinks import ConvertResult
from .medical_r1 import MedicalR1
from .moses import Moses
from .preference import Preference
from .sharegpt import ShareGPT

CONVERTERS: dict[str, type[Converter]] = {}
for _cls in (MedicalR1, ShareGPT, Moses, Columns, Preference):
    for _name in (_cls.name, *_cls.aliases):
        CONVERTERS[_name] = _cls

RUN_OPTIONS = ("output", "name", "data_dir", "limit", "seed", "val_size", "test_size", "dedup", "split", "encoding",
               "cache_dir", "progress", "max_tokens", "template", "enable_thinking", "workers", "shard", "near_dedup")


def get_converter(name: str, **options: Any) -> Converter:
    try:
        cls = CONVERTERS[name]
    except KeyError:
        raise QfkError(f"unknown converter '{name}'", f"choose one of: {', '.join(sorted(CONVERTERS))}") from None
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:  # a required option left out (columns --prompt/--response)
        raise QfkError(f"converter '{name}': {exc}", f"see its options: qfk convert {name} --help") from None
    return cls(**options)


def convert(converter: str, source: str, *, register: bool = False, force: bool = False, **options: Any) -> ConvertResult:
    """Run converter ``converter`` on ``source``; options are the CLI's, in snake_case.

    ``register=True`` adds the outputs to ``DATA_DIR/dataset_info.json`` (the CLI's default):
    NAME, and NAME_val / NAME_test for the splits. A name registered for another file stops the
    run before any row is read, unless ``force`` (which replaces that entry)."""
    run = {k: options.pop(k) for k in list(options) if k in RUN_OPTIONS}
    plugin = get_converter(converter, **options)
    if not register or run.get("shard"):  # a part is registered with its set: qfk datasets add FOLDER
        return run_conversion(plugin, source, **run)
    from ..registry import check_names_free, register_result

    data_dir = run.get("data_dir")
    result = run_conversion(plugin, source, **run,
                            before_rows=lambda name, outputs: check_names_free(name, outputs, data_dir=data_dir, force=force))
    result.registered = register_result(result, data_dir=data_dir, force=force)
    return result


__all__ = ["CONVERTERS", "ConvertResult", "Converter", "Reject", "convert", "get_converter", "run_conversion"]
