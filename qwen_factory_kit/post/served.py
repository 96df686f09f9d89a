"""What a trained model is and how it is served: a run folder (its ``qfk_run.json``), a merged
folder (its ``qfk_serving.json``) or a plain Qwen3 model -> base model, adapter, template, think
mode and the training data's translation prompt.

``qfk merge`` writes ``qfk_serving.json`` into the merged folder; ``qfk chat`` and ``qfk translate``
read it, so a model is served with the template and thinking mode it was trained with (a merged
model keeps Qwen's chat template, which thinks unless told ``enable_thinking=False``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QfkError
from ..launch.record import RECORD_NAME

SERVING_NAME = "qfk_serving.json"
ADAPTER_CONFIG = "adapter_config.json"
#: fine-tuning types whose output_dir holds the whole model (nothing to merge)
WHOLE_MODEL_TYPES = ("full", "freeze")


@dataclass
class TrainedRun:
    """A folder ``qfk train`` wrote (or a checkpoint in it) and its run record."""

    run_dir: Path       # the folder asked for: the adapter (or the model of a full fine-tune)
    record: dict
    record_path: Path

    @property
    def args(self) -> dict:
        return self.record.get("args") or {}

    @property
    def finetuning_type(self) -> str:
        return str(self.args.get("finetuning_type") or "lora")

    @property
    def template(self) -> str | None:
        return self.args.get("template")

    @property
    def enable_thinking(self) -> bool | None:
        return self.args.get("enable_thinking", True)

    def base_model(self) -> str:
        """``model_name_or_path`` as trained, a relative folder found from the run's working folder."""
        return resolve_path(str(self.args.get("model_name_or_path") or ""), self.record.get("cwd"))

    def translation(self) -> dict:
        """The Moses converter options (``instruction_template``, ``system``) of the training data,
        from the datasets' qfk manifests in the record; empty when no dataset came from ``qfk convert moses``."""
        for used in (self.record.get("datasets") or {}).values():
            manifest = (used or {}).get("manifest") if isinstance(used, dict) else None
            if isinstance(manifest, dict) and manifest.get("converter") == "moses":
                options = manifest.get("options") or {}
                return {k: options[k] for k in ("instruction_template", "system") if k in options}
        return {}


def resolve_path(value: str, cwd: str | None) -> str:
    """``value`` as it is when it exists from here (or is absolute), else from ``cwd`` when it
    exists there (as an absolute path); a hub id is returned unchanged."""
    path = Path(value).expanduser()
    if not value or path.is_absolute() or path.exists():
        return value
    if cwd and (Path(cwd) / path).exists():
        return str((Path(cwd) / path).resolve())
    return value


def read_run(folder: str | Path) -> TrainedRun:
    """The run in ``folder``: its ``qfk_run.json``, or the run record above a ``checkpoint-N`` folder."""
    run_dir = Path(folder)
    if not run_dir.is_dir():
        raise QfkError(f"{run_dir} is not a folder", "give the output_dir of a qfk train run (saves/...)")
    for candidate in (run_dir / RECORD_NAME, run_dir.parent / RECORD_NAME):
        if candidate.is_file() and (candidate.parent == run_dir or run_dir.name.startswith("checkpoint-")):
            return TrainedRun(run_dir, _read_json(candidate), candidate)
    raise QfkError(f"{run_dir} has no {RECORD_NAME}: it was not trained with qfk train",
                   "for a run trained with llamafactory-cli, write the merge recipe from its training recipe: "
                   "qfk recipe new --method merge --from TRAIN.yaml -o merge.yaml && llamafactory-cli export merge.yaml")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QfkError(f"cannot read {path}: {exc}", "it is written by qfk train/qfk merge; was it edited?") from None
    if not isinstance(data, dict):
        raise QfkError(f"{path} is not a JSON object", "it is written by qfk train/qfk merge; was it edited?")
    return data


def serving_thinking(template: str, enable_thinking: bool | None) -> bool:
    """Whether a model trained with ``template`` and ``enable_thinking`` thinks when served: not with
    a ``*_nothink`` template or ``enable_thinking: false``; otherwise yes (null, the mixed mode,
    lets it think, as Qwen's own chat template does by default)."""
    return not str(template).endswith("_nothink") and enable_thinking is not False


@dataclass
class ServedModel:
    """What ``qfk chat`` / ``qfk translate`` load, and how."""

    source: str                  # merged | run | model
    given: str                   # the folder or name the user gave
    model: str                   # model_name_or_path
    adapter: str | None          # adapter_name_or_path (a LoRA run served unmerged)
    template: str
    thinking: bool               # the think mode it was trained for
    translation: dict = field(default_factory=dict)  # Moses prompt options of the training data
    record: dict | None = None   # the run record (a run), for the training rows
    serving: dict | None = None  # qfk_serving.json (a merged folder)

    @property
    def can_think(self) -> bool:
        return not self.template.endswith("_nothink")

    def describe(self) -> str:
        what = f"{self.model} + adapter {self.adapter}" if self.adapter else self.model
        return f"{what} (template {self.template}, trained {'thinking' if self.thinking else 'non-thinking'})"


def resolve_served(spec: str) -> ServedModel:
    """A merged folder (``qfk_serving.json``), a run folder (``qfk_run.json``: base model + adapter,
    or the model of a full fine-tune) or a plain Qwen3 model folder or name."""
    path = Path(spec)
    if (path / SERVING_NAME).is_file():
        info = _read_json(path / SERVING_NAME)
        return ServedModel("merged", spec, spec, None, str(info.get("template") or "qwen3"),
                           bool(info.get("enable_thinking", True)), dict(info.get("translation_prompt") or {}),
                           serving=info)
    if path.is_dir() and ((path / RECORD_NAME).is_file() or (path.name.startswith("checkpoint-")
                                                              and (path.parent / RECORD_NAME).is_file())):
        return _served_run(read_run(path), spec)
    if (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
        raise QfkError(f"{path} is a LoRA adapter without a qfk run record ({RECORD_NAME}): its base model and "
                       "template are unknown", "merge it with a recipe that names them: qfk recipe new --method merge "
                       f"--from TRAIN.yaml --adapter {path} -o merge.yaml && llamafactory-cli export merge.yaml")
    if path.is_dir() and not (path / "config.json").is_file():
        raise QfkError(f"{path} is not a model: it holds no {SERVING_NAME} (qfk merge), no {RECORD_NAME} (qfk train) "
                       "and no config.json (a Hugging Face model)",
                       "give as MODEL a folder qfk merge wrote, the output_dir of a qfk train run (saves/...), a Hugging "
                       "Face model folder, or a Qwen3 name such as Qwen3-0.6B")
    return _served_plain(spec)


def _served_run(run: TrainedRun, spec: str) -> ServedModel:
    if not run.template:
        raise QfkError(f"{run.record_path} names no template", "train with a recipe from qfk recipe new (it sets template)")
    thinking = serving_thinking(run.template, run.enable_thinking)
    if run.finetuning_type in WHOLE_MODEL_TYPES:
        if not (run.run_dir / "config.json").is_file():
            raise QfkError(f"{run.run_dir} holds no model (no config.json): did the {run.finetuning_type} run finish?",
                           f"see {run.record_path} (status) and qfk_train.log")
        return ServedModel("run", spec, str(run.run_dir), None, run.template, thinking, run.translation(), run.record)
    require_adapter(run)
    return ServedModel("run", spec, run.base_model(), str(run.run_dir), run.template, thinking, run.translation(),
                       run.record)


def run_budget(record: dict, enable_thinking: bool | None):
    """:func:`.budget.training_budget` of a ``qfk_run.json`` record (its datasets, its dataset_dir
    found from the folder it ran in); None when it names no dataset with a local file."""
    from ..recipe.document import split_names
    from .budget import training_budget

    args = record.get("args") or {}
    names = split_names(args.get("dataset"))
    if not names:
        return None
    data_dir = Path(resolve_path(str(args.get("dataset_dir") or "data"), record.get("cwd")))
    return training_budget(names, data_dir, enable_thinking)


def reply_budget(served: ServedModel, thinking: bool, given: int | None = None):
    """How long a reply may be (a :class:`.budget.Budget`): ``given`` (--max-new-tokens); else
    from the run's training rows (a run), or the budget ``qfk merge`` measured on them (a merged
    folder) when the model is asked in the mode it was trained in; else the think mode's default."""
    from ..recipe import presets
    from .budget import Budget

    ceiling = presets.max_new_tokens(thinking)
    if given is not None:
        return Budget(given, ceiling, source="--max-new-tokens")
    if thinking == served.thinking:
        if served.record is not None:
            budget = run_budget(served.record, thinking)
            if budget is not None:
                return budget
        saved = (served.serving or {}).get("reply_budget")
        if isinstance(saved, dict) and isinstance(saved.get("max_new_tokens"), int):
            return Budget(saved["max_new_tokens"], ceiling, saved.get("longest_reference"), saved.get("references") or 0,
                          str(saved.get("source") or "qfk merge"))
    return Budget(ceiling, ceiling, source="the think mode's default: no training rows to measure")


def require_adapter(run: TrainedRun) -> None:
    """A LoRA run whose folder holds its adapter."""
    if run.finetuning_type in WHOLE_MODEL_TYPES:
        raise QfkError(f"{run.run_dir} is a {run.finetuning_type} fine-tune: there is no adapter, so nothing to merge",
                       f"the trained model is the run's output_dir itself: {run.run_dir} "
                       f"(chat with it: qfk chat {run.run_dir})")
    if run.finetuning_type != "lora":
        raise QfkError(f"{run.run_dir} is a {run.finetuning_type} run: qfk merges LoRA adapters",
                       f"write a merge recipe and edit it: qfk recipe new --method merge --adapter {run.run_dir} ...")
    if not (run.run_dir / ADAPTER_CONFIG).is_file():
        status = run.record.get("status", "unknown")
        raise QfkError(f"{run.run_dir} holds no LoRA adapter ({ADAPTER_CONFIG} is missing; the run's status: {status})",
                       "an unfinished run keeps its adapters in checkpoint-N folders: give one of those, "
                       "or finish the run (the same qfk train command resumes it)")


def _served_plain(spec: str) -> ServedModel:
    from ..recipe.presets import resolve_model

    model = resolve_model(spec)
    template = "qwen3_nothink" if model.kind == "instruct-2507" else "qwen3"
    return ServedModel("model", spec, model.path, None, template, model.kind != "instruct-2507")
