"""A registered dataset without its rows longer than N tokens (``qfk datasets filter``).

:func:`filter_dataset` streams NAME's file through the core with the pass-through
:class:`~.registered.Registered` converter and ``max_tokens``: it writes ``NAME__max<N>.jsonl``
next to NAME's file with the rows that fit, its ``.rejects.jsonl`` (every longer row, reason
``too_long``, with its length) and ``.manifest.json`` (the source's sha256, the filter settings,
the counts), then registers ``NAME__max<N>`` with NAME's entry shape under the registry's lock.

Rows are measured as a recipe for the data trains them: template and ``enable_thinking`` come
from the dataset's think mode (its manifest, else its rows) mapped by
:func:`~qwen_factory_kit.think.training_settings`, as ``qfk recipe new`` picks them. Every row kept
fits ``cutoff_len: N`` whole; none is cut.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import QfkError
from ..io.sources import resolve_source
from ..lfformat import PLUGIN_FORMATTINGS
from ..registry import Registry, file_name_for, filtered_name, manifest_for, mix_entry, resolve_file
from ..think import ThinkTally, parse_response, training_settings
from .pipeline import run_conversion
from .sinks import ConvertResult
from .registered import Registered

#: ``enable_thinking=AUTO``: from the dataset's think mode
AUTO: Any = ...


def filter_dataset(name: str, max_tokens: int, *, data_dir: str | os.PathLike | None = None, template: str | None = None,
                   enable_thinking: bool | None = AUTO, new_name: str | None = None, force: bool = False,
                   progress: bool = False) -> ConvertResult:
    """Write and register NAME without the rows longer than ``max_tokens`` tokens (see the module
    docstring). ``template=None`` and ``enable_thinking=AUTO`` (``...``) follow the think mode;
    ``force`` replaces a ``new_name`` registered for another file. Returns the core's result
    (``registered`` holds the new name)."""
    reg = Registry.at(data_dir)
    entry = reg.get(name)
    path = _source_file(name, entry, reg.data_dir, f"filter {{name}} --max-tokens {max_tokens}")
    new_name = _checked_name(new_name or filtered_name(name, max_tokens))
    output = path.parent / f"{new_name}.jsonl"
    if output.resolve() == path.resolve():
        raise QfkError(f"the filtered dataset would overwrite {path}, the file it is read from", "choose another --name")
    converter = Registered(entry=entry, dataset=name, new_name=new_name)
    mode = think_mode(entry, reg.data_dir, converter, path)
    default_template, default_enable = training_settings(mode)
    converter.options.update(think_mode=mode)
    result = run_conversion(converter, str(path), output=output, split=None, progress=progress, max_tokens=max_tokens,
                            template=template or default_template,
                            enable_thinking=default_enable if enable_thinking is AUTO else enable_thinking,
                            before_rows=lambda _name, outputs: reg.check_free({new_name: outputs["train"]}, force=force))
    reg.add(new_name, converter.entry(file_name_for(output, reg.data_dir)), force=force)
    result.registered = [new_name]
    return result


def _source_file(name: str, entry: dict, data_dir: Path, command: str) -> Path:
    """The local file (or folder) of an SFT Alpaca/ShareGPT entry that is not a mix entry, else a
    :class:`QfkError` whose fix is ``qfk datasets COMMAND`` (``{name}`` in it: the dataset to run it on)."""
    mixed = mix_entry(name)
    if mixed:
        raise QfkError(f"dataset '{name}' is a mix entry ({mixed['count']} rows of {mixed['base']} drawn when training): "
                       f"a new dataset made from it would hold every row of {mixed['base']}",
                       f"make it from {mixed['base']}, then mix that: qfk datasets {command.format(name=mixed['base'])}, "
                       "and qfk recipe new --mix with the new name")
    path = resolve_file(entry, data_dir) if isinstance(entry, dict) else None
    if path is None:
        raise QfkError(f"dataset '{name}' is not a local file (hub or script entry): there are no rows to filter here",
                       "convert it first: qfk convert ... (its output is a local file)")
    if not path.exists():
        raise QfkError(f"File {path} of dataset '{name}' not found", f"convert again, or fix file_name; see: qfk datasets check {name}")
    formatting = entry.get("formatting", "alpaca")
    if formatting in PLUGIN_FORMATTINGS:
        raise QfkError(f"dataset '{name}' holds raw rows ({formatting}) that only qfk train's plugin reads",
                       f"convert them first: qfk convert {PLUGIN_FORMATTINGS[formatting]} {path}")
    if formatting not in ("alpaca", "sharegpt"):
        raise QfkError(f"dataset '{name}' has formatting '{formatting}'; filter reads alpaca and sharegpt entries")
    if entry.get("ranking"):
        raise QfkError(f"dataset '{name}' is ranking (preference) data: qfk datasets {command.split()[0]} reads SFT rows",
                       f"run it on the SFT datasets of the recipe: qfk datasets {command.format(name='SFT_NAME')}")
    return path


def _checked_name(name: str) -> str:
    if not name or any(ch.isspace() or ch == "," for ch in name):
        raise QfkError(f"dataset name '{name}' cannot go in a recipe's comma-separated dataset list",
                       "use letters, digits and underscores, for example --name medical_short")
    return name


def think_mode(entry: dict, data_dir: Path, converter: Registered, path: Path) -> str:
    """The dataset's think mode: from its qfk manifest, else counted over its rows."""
    manifest = manifest_for(entry, data_dir)
    mode = ((manifest or {}).get("think") or {}).get("mode")
    if mode:
        return mode
    tally = ThinkTally()
    for batch in converter.open(resolve_source(str(path)), split=None, encoding=None).batches():
        for row in batch.rows:
            if isinstance(row, dict):
                for text in converter.responses(row):
                    tally.add_parsed(parse_response(text))
    return tally.mode
