"""The kit's LLaMA-Factory extensions, registered in the training process by :mod:`.entry`.

LLaMA-Factory has no plugin entry points: ``register_dataset_converter`` adds to a dictionary in
the running process, and every fresh process (``llamafactory-cli``, torchrun ranks, the WebUI's
training subprocess) starts without it. So the formattings below work under ``qfk train`` (whose
entry module registers them on every rank) and NOT under ``llamafactory-cli``.

* ``qfk_medical_r1``: raw medical R1 rows (question / think / answer) read as they are; each row
  goes through the same converter as ``qfk convert medical-r1``, so the response is the canonical
  ``<think>`` form built by :mod:`qwen_factory_kit.think`.
* ``qfk_sharegpt``: raw FineTome / ShareGPT rows (``conversations`` with from/value, system turns)
  through ``qfk convert sharegpt``'s converter.

A row that converter would reject becomes an empty example, which LLaMA-Factory drops with its
own "Dropped invalid example" warning (``qfk convert`` gives the reasons, with line numbers).
"""

from __future__ import annotations

from typing import Any

from ..lfformat import PLUGIN_FORMATTINGS, alpaca_user_turn


def _to_llamafactory(row: dict | None) -> dict[str, Any]:
    """An Alpaca row from a kit converter -> LLaMA-Factory's aligned example."""
    from llamafactory.data.data_utils import Role

    empty = {"_prompt": [], "_response": [], "_system": "", "_tools": "", "_images": None, "_videos": None, "_audios": None}
    if not row:
        return empty
    prompt = []
    for old_prompt, old_response in row.get("history") or []:
        prompt += [{"role": Role.USER.value, "content": old_prompt}, {"role": Role.ASSISTANT.value, "content": old_response}]
    prompt.append({"role": Role.USER.value, "content": alpaca_user_turn(row.get("instruction"), row.get("input"))})
    return {**empty, "_prompt": prompt, "_response": [{"role": Role.ASSISTANT.value, "content": row["output"]}],
            "_system": row.get("system") or ""}


def _converter_class(formatting: str, kit_converter: str):
    from llamafactory.data.converter import DatasetConverter

    from ..convert import Reject, get_converter

    class KitConverter(DatasetConverter):
        def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
            conv = self.__dict__.get("_kit")
            if conv is None:
                conv = self.__dict__["_kit"] = get_converter(kit_converter)
            try:
                rows = conv.convert(example)
            except Reject:
                rows = []
            return _to_llamafactory(rows[0] if rows else None)

    KitConverter.__name__ = KitConverter.__qualname__ = f"Qfk_{kit_converter.replace('-', '_')}_Converter"
    return KitConverter


def register() -> list[str]:
    """Register the kit's dataset converters in this process (idempotent); returns their names."""
    from llamafactory.data.converter import DATASET_CONVERTERS, register_dataset_converter

    for formatting, kit_converter in PLUGIN_FORMATTINGS.items():
        if formatting not in DATASET_CONVERTERS:
            register_dataset_converter(formatting, _converter_class(formatting, kit_converter))
    return list(PLUGIN_FORMATTINGS)
