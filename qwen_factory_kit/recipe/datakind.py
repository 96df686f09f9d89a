"""What kind of rows a registered dataset holds, as far as decoding cares: translation or not.

A dataset converted by ``qfk convert moses`` says so in its manifest (``converter: moses``). A
file registered by hand has no manifest: it counts as translation when it has no reasoning
(think mode ``direct``) and its first rows' prompts are the Moses converter's instruction
(``Translate <en> to <ja>.``, read back by :func:`~qwen_factory_kit.convert.moses.instruction_direction`).
"""

from __future__ import annotations

from pathlib import Path

#: converters whose outputs are translation rows
TRANSLATION_CONVERTERS = ("moses",)
#: rows read from a hand-registered file to decide
SCAN_ROWS = 20


def is_translation(entry: dict, mode: str, file: Path | None, data_dir: Path) -> bool:
    """Whether the dataset registered as ``entry`` (think ``mode``, rows in ``file``) is translation data."""
    from ..registry import manifest_for

    manifest = manifest_for(entry, data_dir)
    if manifest and manifest.get("converter"):
        return manifest["converter"] in TRANSLATION_CONVERTERS
    if mode != "direct" or file is None or not file.exists():
        return False
    prompts = first_prompts(file, entry, SCAN_ROWS)
    return bool(prompts) and all(_moses_direction(p) for p in prompts)


def first_prompts(path: Path, entry: dict, limit: int) -> list[str]:
    """The first prompt text of each of the first ``limit`` rows of ``path`` (alpaca or sharegpt)."""
    from ..lint import _texts, iter_rows, layout_from

    out: list[str] = []
    lay = None
    for _, row in iter_rows(path):
        if len(out) >= limit:
            break
        if not isinstance(row, dict):
            continue
        lay = lay or layout_from(entry, row)
        prompt = next((v for kind, _, v in _texts(row, lay) if kind == "prompt" and isinstance(v, str) and v.strip()), None)
        out.append(prompt or "")
    return out


def _moses_direction(text: str) -> bool:
    from ..convert.moses import instruction_direction

    return instruction_direction(text) is not None
