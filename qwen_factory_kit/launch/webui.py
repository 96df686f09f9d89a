"""``qfk webui``: LLaMA-Factory's WebUI on the kit's data dir, with the kit's recipes and plugin.

LLaMA-Factory's WebUI lists datasets from ``data/`` under the folder it was started from (an empty
list anywhere else), cannot load a recipe ("Load arguments" reads its own saved format), binds
0.0.0.0, and trains through ``llamafactory-cli train`` (where the kit's ``qfk_*`` formattings do not
exist). Here:

* the WebUI runs in the workspace, the folder that holds the data dir (``--data-dir``, else the
  first recipe's dataset_dir read from the recipe's folder: :func:`pick_data_dir`; ``saves/``,
  ``llamaboard_config/`` and ``llamaboard_cache/`` go there; recipes' relative paths mean what they
  mean under ``qfk train``), and its Data dir box holds the data dir's absolute path;
* each ``--recipe`` becomes ``llamaboard_config/NAME.yaml`` (:mod:`.webui_args`): pick NAME.yaml in
  "Config path" and press "Load arguments"; the mix entries it names (``NAME__nN``, ``NAME__tN``) are registered;
* the process has the kit's plugin registered, and the WebUI's training runs start as the kit's
  entry module (the command ``qfk train`` runs: plugin, callbacks, run record) instead of
  ``llamafactory-cli train``, so ``qfk_*`` raw-row datasets train from the WebUI too, with the
  environment ``qfk train`` gives (:func:`.torchrun.compose`: expandable segments on a GPU);
* it binds 127.0.0.1 unless told otherwise, and one Ctrl-C (or SIGTERM) at any moment, startup
  included, stops it cleanly (:func:`stop_signals`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import QfkError
from ..lfbridge import WEBUI_CONFIG_DIR
from .signals import stop_signals
from .webui_args import lost_keys, model_name_for, webui_arguments

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860  # the WebUI's own (GRADIO_SERVER_PORT overrides it)
#: first line of every arguments file qfk writes: a file without it is the user's, never replaced
ARGS_HEADER = "# qfk webui:"


@dataclass
class ArgsFile:
    """One ``--recipe`` as the WebUI's saved arguments."""

    recipe: str
    path: Path                       # WORKDIR/llamaboard_config/NAME.yaml
    values: dict[str, Any]           # element id -> widget value
    unmapped: list[str]              # recipe keys without a widget (carried in Extra arguments)
    datasets: list[str] = field(default_factory=list)
    model: str = ""                  # model_name_or_path
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_name(self) -> str:
        return self.values.get("top.model_name", "Custom")


@dataclass
class WebuiPlan:
    host: str
    port: int
    share: bool
    data_dir: Path                   # absolute
    workdir: Path                    # the folder holding the data dir: the WebUI's working folder
    datasets: list[str]              # names registered in data_dir/dataset_info.json
    args_files: list[ArgsFile]
    data_from: str = "--data-dir"    # where data_dir comes from (:func:`pick_data_dir`)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def as_dict(self) -> dict:
        return {"host": self.host, "port": self.port, "url": self.url, "share": self.share, "data_dir": str(self.data_dir),
                "data_dir_from": self.data_from, "workdir": str(self.workdir), "datasets": self.datasets,
                "args_files": [{"recipe": a.recipe, "path": str(a.path), "unmapped": a.unmapped} for a in self.args_files]}


def pick_port(port: str | int | None, environ: dict | None = None) -> int:
    """``auto``: a free port; a number; nothing: ``$GRADIO_SERVER_PORT`` or 7860."""
    from .torchrun import free_port, port_number

    env = os.environ if environ is None else environ
    if port is None:
        port = env.get("GRADIO_SERVER_PORT") or DEFAULT_PORT
    value = port_number(port, DEFAULT_PORT)
    return free_port() if value is None else value


def registered_datasets(data_dir: Path) -> list[str]:
    from ..registry import Registry

    return list(Registry.at(data_dir).read())


def _unregistered(names: list[str], registered: list[str]) -> list[str]:
    """Names neither registered nor a ``BASE__nN`` / ``BASE__tN`` mix entry of a registered BASE (registered at startup)."""
    from ..registry import mix_entry

    def known(name: str) -> bool:
        m = mix_entry(name)
        return name in registered or bool(m and m["base"] in registered)

    return [n for n in names if not known(n)]


def _args_file(recipe: str, args: dict, plan: WebuiPlan, stages: dict, model_name: str) -> ArgsFile:
    from ..recipe.document import recipe_data_dir, recipe_datasets

    values, unmapped = webui_arguments(args, data_dir=str(plan.data_dir), stages=stages, model_name=model_name, name=recipe)
    datasets = recipe_datasets(args)
    notes = [f"{k}: {args[k]!r} does not fit the WebUI's field, which replaces it" for k in lost_keys(unmapped)]
    if not _online(args) and recipe_data_dir(args, Path(recipe).parent).resolve() != plan.data_dir:
        notes.append(f"its dataset_dir {recipe_data_dir(args)} is not {plan.data_dir}: the WebUI's Data dir is used")
    missing = _unregistered(datasets, plan.datasets)
    if missing:
        notes.append(f"not registered in {plan.data_dir}: {', '.join(missing)}")
    return ArgsFile(recipe, plan.workdir / WEBUI_CONFIG_DIR / f"{Path(recipe).stem}.yaml", values, unmapped, datasets,
                    str(args.get("model_name_or_path") or ""), notes)


def _online(args: dict) -> bool:
    """A recipe whose datasets all come from a hub (dataset_dir ONLINE or REMOTE:...): no data dir."""
    value = str(args.get("dataset_dir") or "")
    return value == "ONLINE" or value.startswith("REMOTE:")


def pick_data_dir(explicit: str | os.PathLike | None, recipes: list[tuple[str, dict]],
                  environ: dict | None = None) -> tuple[Path, str]:
    """The data dir the WebUI lists (absolute) and where it comes from: ``--data-dir``; else the
    first recipe's dataset_dir, a relative one from the recipe's folder (as ``qfk train R`` reads it
    run from there: :func:`~qwen_factory_kit.recipe.document.recipe_data_dir`); else
    ``$QFK_DATA_DIR`` or ``./data``. Refused when it is not a folder."""
    from ..recipe.document import recipe_data_dir
    from ..workspace import DATA_DIR_ENV

    env = os.environ if environ is None else environ
    given = next(((Path(p), a) for p, a in recipes if not _online(a)), None)
    if explicit:
        data, source = Path(explicit).expanduser(), "--data-dir"
    elif given:
        data, source = recipe_data_dir(given[1], given[0].parent), f"{given[0].name}'s dataset_dir {recipe_data_dir(given[1])}"
    elif env.get(DATA_DIR_ENV):
        data, source = Path(env[DATA_DIR_ENV]).expanduser(), f"${DATA_DIR_ENV}"
    else:
        data, source = Path("data"), "the current folder's data"
    data = data.resolve()
    if data.is_dir():
        return data, source
    if given and not explicit:
        here = recipe_data_dir(given[1])
        raise QfkError(f"the data dir {data} is not a folder ({source}, relative to the recipe's folder {given[0].parent})",
                       f"give the folder that holds dataset_info.json: --data-dir {here if here.is_dir() else 'PATH'}")
    raise QfkError(f"the data dir {data} is not a folder ({source})",
                   "give the folder that holds dataset_info.json (--data-dir), or register data first: qfk convert ...")


def plan_webui(*, data_dir: str | os.PathLike | None = None, recipes: list[str] | tuple[str, ...] = (),
               host: str = DEFAULT_HOST, port: str | int | None = None, share: bool = False,
               choices: Callable[[], dict] | None = None) -> WebuiPlan:
    """What ``qfk webui`` would start, written nowhere. ``data_dir``: ``--data-dir`` (None: see
    :func:`pick_data_dir`); ``choices``: the WebUI's tables (default: LLaMA-Factory's own, which
    imports torch: only asked for when there are recipes)."""
    from ..recipe.document import load_recipe

    stems = [Path(r).stem for r in recipes]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise QfkError(f"two recipes would both be {twice[0]}.yaml in the WebUI", "rename one of them")
    paths = [str(Path(r).resolve()) for r in recipes]
    loaded = [load_recipe(p) for p in paths]
    data, source = pick_data_dir(data_dir, list(zip(paths, loaded)))
    plan = WebuiPlan(host, pick_port(port), share, data, data.parent, registered_datasets(data), [], source)
    if loaded:
        from ..lfbridge import webui_choices

        tables = (choices or webui_choices)()
        name = model_name_for([a.get("model_name_or_path") for a in loaded])
        plan.args_files = [_args_file(p, a, plan, tables["stages"], name) for p, a in zip(paths, loaded)]
    return plan


def startup_lines(plan: WebuiPlan) -> list[str]:
    lines = [f"data dir: {plan.data_dir} ({len(plan.datasets)} datasets; from {plan.data_from})",
             f"working folder: {plan.workdir} (saves/, {WEBUI_CONFIG_DIR}/ and llamaboard_cache/ go here)"]
    if not (plan.data_dir / "dataset_info.json").is_file():
        lines.append(f"warning: {plan.data_dir} holds no dataset_info.json: the WebUI's dataset list is empty "
                     "(register data with qfk convert / qfk datasets add, or give --data-dir)")
    for a in plan.args_files:
        lines.append(f"recipe {a.recipe} -> {a.path}  (Train tab: Config path {a.name}, then Load arguments)")
        if a.unmapped:
            lines.append(f"  no WebUI field, carried in Extra arguments: {', '.join(a.unmapped)}")
        lines += [f"  note: {n}" for n in a.notes]
    if plan.host not in ("127.0.0.1", "localhost", "::1"):
        lines.append(f"warning: listening on {plan.host}: anyone who can reach this machine can start training runs")
    if plan.share:
        lines.append("warning: --share publishes the WebUI through a public gradio.live link")
    return lines


def write_args_files(plan: WebuiPlan) -> list[str]:
    """Register the mix entries the recipes name, and write their arguments files (never over a
    file the WebUI itself saved). Returns the mix entries registered."""
    import yaml

    from ..io.atomic import atomic_write_bytes
    from ..recipe.mix import ensure_mix_entries

    made: list[str] = []
    for a in plan.args_files:
        made += ensure_mix_entries(a.datasets, plan.data_dir)
        if a.path.exists() and not a.path.read_text(encoding="utf-8", errors="replace").startswith(ARGS_HEADER):
            raise QfkError(f"{a.path} exists and was not written by qfk webui (a WebUI \"Save arguments\" file?)",
                           f"rename the recipe, or move {a.path} away")
        a.path.parent.mkdir(parents=True, exist_ok=True)
        text = f"{ARGS_HEADER} recipe {a.recipe}\n" + yaml.safe_dump(a.values, allow_unicode=True, sort_keys=False)
        atomic_write_bytes(a.path, text.encode("utf-8"))
    return made


def kit_training_command(argv: list[str], env: dict, *, devices: int | None = None) -> tuple[list[str], dict] | None:
    """The WebUI's ``llamafactory-cli train ARGS.yaml`` as the kit's entry module (under torchrun
    where llamafactory-cli would use it), in the user's environment (without the kit's quieting of
    LLaMA-Factory's logs, which the WebUI shows); None for any other command."""
    if len(argv) != 3 or Path(argv[0]).name != "llamafactory-cli" or argv[1] != "train":
        return None
    from ..lfbridge import QUIETED
    from ..recipe.document import load_recipe
    from .torchrun import compose

    env = {k: v for k, v in env.items() if k not in QUIETED}
    launch = compose(argv[2], [], args=load_recipe(argv[2]), environ=env, devices=devices)
    return launch.argv, {**env, **launch.env}


def serve(plan: WebuiPlan, say: Callable[[str], None] = print) -> int:
    """Start the WebUI as planned and serve until Ctrl-C or SIGTERM, which stop it at any moment,
    starting included (then 130, server closed)."""
    demo = None
    with stop_signals():
        try:
            demo = _build(plan)
            try:
                demo.queue().launch(server_name=plan.host, server_port=plan.port, share=plan.share, inbrowser=False,
                                    prevent_thread_lock=True, quiet=True)
            except OSError as exc:
                raise QfkError(f"cannot listen on {plan.host}:{plan.port}: {exc}",
                               "choose another --port, or --port auto") from None
            say(f"LLaMA-Factory WebUI: {plan.url}" + (f"   public: {demo.share_url}" if plan.share and demo.share_url else ""))
            say("Ctrl-C stops it")
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:  # Stopped, or Python's own where the handler was not yet in place
            say("stopping the WebUI" if demo is not None and demo.is_running else "stopped before the WebUI was up")
        finally:
            if demo is not None:
                demo.close(verbose=False)
    return 130


def _build(plan: WebuiPlan):
    """The WebUI as planned, not launched: in the working folder, with the kit's plugin and training
    command, opening on the recipes' model."""
    from .. import lfbridge
    from . import plugin

    os.chdir(plan.workdir)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    plugin.register()
    lfbridge.webui_train_with(kit_training_command)
    if plan.args_files:  # the page opens on the recipes' model: loading one does not reset its path and template
        first = plan.args_files[0]
        lfbridge.webui_remember_model(first.model_name, first.model, first.values.get("top.template"))
    return lfbridge.webui_build(str(plan.data_dir))
