"""What a recipe is made from: the request (``qfk recipe new``'s options), the facts of the
registered datasets it names (rows, think mode: from their qfk manifests, or a scan of their rows
when a dataset was registered by hand) and the think mode those datasets call for."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QfkError
from . import presets, sizing
from .document import scalar


@dataclass
class DatasetFacts:
    """What a registered dataset holds, as far as a recipe cares."""

    name: str
    entry: dict
    rows: int | None
    mode: str            # reasoning | direct | mixed | none
    empty_style: str     # explicit | omit | mixed | none
    source: str          # where mode and rows came from
    file: Path | None = None

    @property
    def ranking(self) -> bool:
        return bool(self.entry.get("ranking"))


def _scan(path: Path, entry: dict) -> tuple[int, dict]:
    """Rows and think tally of a file registered without a qfk manifest (read to the end)."""
    from ..lint import _texts, iter_rows, layout_from
    from ..think import ThinkTally, parse_response

    tally, rows, lay = ThinkTally(), 0, None
    for _, row in iter_rows(path):
        rows += 1
        if not isinstance(row, dict):
            continue
        lay = lay or layout_from(entry, row)
        for kind, _, value in _texts(row, lay):
            if kind == "response" and isinstance(value, str):
                tally.add_parsed(parse_response(value))
    return rows, tally.as_dict()


def dataset_facts(name: str, data_dir: str | os.PathLike) -> DatasetFacts:
    from ..registry import Registry, resolve_file

    reg = Registry.at(data_dir)
    if not reg.path.exists():
        raise QfkError(f"no {reg.path}: dataset '{name}' is not registered",
                       "convert and register first: qfk convert ... (or qfk datasets add FILE --name NAME)")
    entry = reg.get(name)
    path = resolve_file(entry, reg.data_dir)
    if path is None:
        raise QfkError(f"dataset '{name}' is a hub entry: the kit cannot see its think mode offline",
                       "convert it with qfk convert, or set it yourself: template=qwen3 enable_thinking=true|false")
    if not path.exists():
        raise QfkError(f"dataset '{name}': File {path} not found", f"convert it again, or: qfk datasets remove {name}")
    return file_facts(name, entry, path)


def file_facts(name: str, entry: dict, path: Path) -> DatasetFacts:
    """What the rows of ``path`` (read as ``entry`` says) hold: from the qfk manifest written next to
    it, else from a scan of its rows."""
    from ..registry import manifest_for

    manifest = manifest_for({"file_name": str(Path(path).resolve())}, Path("."))
    if manifest and "think" in manifest:
        rows = None
        for out in manifest.get("outputs", {}).values():
            if Path(out.get("file", "")).name == path.name:
                rows = out.get("rows")
        if rows is None:
            rows, _ = _scan(path, entry)
        think = manifest["think"]
        return DatasetFacts(name, entry, rows, think["mode"], think.get("empty_style", "none"),
                            f"manifest {path.with_suffix('').name}.manifest.json", path)
    rows, think = _scan(path, entry)
    return DatasetFacts(name, entry, rows, think["mode"], think["empty_style"], f"scanned {rows} rows", path)


@dataclass
class RecipeRequest:
    """Everything ``qfk recipe new`` was asked for."""

    method: str
    model: str | None = None
    datasets: list[str] = field(default_factory=list)
    mix: dict[str, float] | None = None
    mix_total: int | None = None
    mix_by: str | None = None  # --mix-by: "rows" (None: the default) or "tokens" (the ratios hold in trained tokens)
    eval_datasets: list[str] = field(default_factory=list)
    data_dir: str | None = None
    output_dir: str | None = None
    adapter: str | None = None  # predict/merge: an adapter folder, presets.NO_ADAPTER (the base model), or None (--from's)
    sample: bool | None = None  # predict: Qwen3's sampling (True), deterministic (False), or None (by the data)
    from_recipe: str | None = None
    deepspeed: str | None = None  # a presets.DEEPSPEED key, "none" (no DeepSpeed), or None (the method's default)
    overrides: dict = field(default_factory=dict)
    filename: str = "recipe.yaml"
    command: str = ""
    curated: bool = False  # written for the recipes/ collection: no local row counts or file names in the header
    notes: list[str] = field(default_factory=list)  # extra header lines (how to prepare the data)
    # sizing a training recipe (recipe/sizing.py); None leaves the choice to the kit
    cutoff_len: int | None = None     # --cutoff-len: no choice from the data
    liger: bool | None = None         # --liger / --no-liger (default: on for SFT on a CUDA GPU with liger-kernel)
    packing: bool | None = None       # --packing / --no-packing (default: with liger on a CUDA GPU)
    gpu_memory: float | None = None   # --gpu-memory GB (default: this machine's card, if any)
    gpus: int | None = None           # --gpus N (default: this machine's count, else 1)
    max_cutoff: int | None = None     # --max-cutoff N: never choose a cutoff_len above N
    drop_long: bool = False           # --drop-long: drop the rows over the cutoff (qfk datasets filter), not stop or cut
    dropped: dict = field(default_factory=dict)  # what --drop-long dropped: dataset -> DroppedRows (set by recipe new)
    stats: bool = True                # measure the training rows' token lengths (--no-stats: keep the preset cutoff)
    stats_rows: int = 2000            # rows per dataset measured
    progress: bool = False            # a bar on stderr while every row is tokenized (--mix-by tokens)
    gpu: sizing.Gpu | None = None     # None: this machine's (tests and curated recipes pass one)
    device: str | None = None         # --device: "cpu" writes a recipe that runs on a CPU as it is (recipe/cpu.py); None/"gpu": for a GPU


@dataclass
class ThinkChoice:
    """How the recipe trains (or generates) think blocks, and why."""

    template: str
    enable: bool | None
    why: str
    mode: str | None = None  # the data's think mode; None when taken from a training recipe

    @property
    def line(self) -> str:
        """``template qwen3, enable_thinking false (why)``: how the kit says which it chose."""
        return f"template {self.template}, enable_thinking {scalar(self.enable)} ({self.why})"


def _facts_for(names: list[str], data_dir: Path) -> list[DatasetFacts]:
    return [dataset_facts(n, data_dir) for n in names]


def _think_from_data(facts: list[DatasetFacts], model: presets.ModelInfo) -> ThinkChoice:
    mode = presets.combine_modes([f.mode for f in facts])
    template, enable, why = presets.think_settings(mode, model)
    return ThinkChoice(template, enable, why, mode)


#: what ``enable_thinking`` is when the caller leaves it to the data (None is LLaMA-Factory's ``null``)
FROM_DATA = "from the data"
#: the model :func:`think_for_rows` chooses for when none is named or it is not a Qwen3 model the kit knows
ANY_HYBRID = presets.ModelInfo("Qwen3", "Qwen/Qwen3-0.6B", "0.6b", "hybrid")


def think_for_rows(path: Path, entry: dict, *, model: str | None = None, template: str | None = None,
                   enable_thinking: bool | None | str = FROM_DATA) -> ThinkChoice:
    """The template and ``enable_thinking`` to encode the rows of ``path`` with (``qfk stats``,
    ``qfk render``): what ``qfk recipe new`` would train them with on ``model`` (a hybrid Qwen3 when
    None or unknown), from the file's manifest or a scan of its rows; a ``template`` or
    ``enable_thinking`` the caller gives is kept. ``why`` says where each came from."""
    given_template, given_enable = template is not None, enable_thinking != FROM_DATA
    if given_template and given_enable:
        return ThinkChoice(template, enable_thinking, "as given")
    facts = file_facts(Path(path).stem, entry, Path(path))
    if facts.mode == "none":
        data = ThinkChoice("qwen3", True, "no response tells the think mode: LLaMA-Factory's defaults", facts.mode)
    else:
        data = _think_from_data([facts], _model_or_hybrid(model))
    if not given_template and not given_enable:
        return ThinkChoice(data.template, data.enable, f"{facts.mode} data, {facts.source}: {data.why}", facts.mode)
    if given_template:
        given, taken = f"template {template}", f"enable_thinking {scalar(data.enable)}"
    else:
        given, taken = f"enable_thinking {scalar(enable_thinking)}", f"template {data.template}"
    return ThinkChoice(template if given_template else data.template,
                       enable_thinking if given_enable else data.enable,
                       f"{given} as given; {taken} for the {facts.mode} data, {facts.source}", facts.mode)


def _model_or_hybrid(spec: str | None) -> presets.ModelInfo:
    if not spec:
        return ANY_HYBRID
    try:
        return presets.resolve_model(spec)
    except QfkError:  # a tokenizer folder without config.json, or not a Qwen3 model: the rule of a hybrid Qwen3
        return ANY_HYBRID


def _think_lines(facts: list[DatasetFacts], think: ThinkChoice, curated: bool = False) -> list[str]:
    parts = ", ".join(f"{f.name} {f.mode}" + ("" if curated else f" ({f.source})") for f in facts)
    return [f"Think mode: {parts}",
            f"  -> {think.mode}: {think.line}"]
