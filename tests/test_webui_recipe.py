"""``qfk webui --recipe R`` started from another folder: the data dir is R's dataset_dir read from
R's folder (fast, the plan); the WebUI's model name is taken from R's model path (fast, pure); and
one SIGINT stops a real ``qfk webui`` process at any moment, sent as a background job's shell
would (SIGINT ignored at start) right after the "Ctrl-C stops it" banner, or while it is starting
(slow: the real WebUI; no browser needed)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.launch.webui import pick_data_dir, plan_webui, startup_lines
from qwen_factory_kit.recipe.document import recipe_data_dir

RECIPE = {"model_name_or_path": "Qwen/Qwen3-4B", "stage": "sft", "do_train": True, "finetuning_type": "lora",
          "dataset": "med", "dataset_dir": "data", "template": "qwen3", "enable_thinking": True,
          "output_dir": "saves/qwen3-4b/lora/med", "learning_rate": 1.0e-5, "report_to": "none"}


def tables():
    return {"stages": {"sft": "Supervised Fine-Tuning"}}


def make_workspace(root: Path, recipe: dict = RECIPE) -> Path:
    """ROOT/ws/data with one registered dataset, ROOT/ws/sft.yaml, and ROOT/elsewhere (the folder qfk starts in)."""
    ws = root / "ws"
    (ws / "data").mkdir(parents=True)
    (ws / "data" / "med.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    (ws / "data" / "dataset_info.json").write_text(
        json.dumps({"med": {"file_name": "med.jsonl", "formatting": "alpaca", "ranking": False}}))
    (ws / "sft.yaml").write_text(yaml.safe_dump(recipe))
    (root / "elsewhere").mkdir()
    return ws


# --------------------------------------------------------------------------------------------
# the data dir (fast)
# --------------------------------------------------------------------------------------------
def test_the_recipe_data_dir_rule():
    assert recipe_data_dir({}) == Path("data") and recipe_data_dir({"dataset_dir": None}) == Path("data")
    assert recipe_data_dir({"dataset_dir": "d"}, "/r") == Path("/r/d")
    assert recipe_data_dir({"dataset_dir": "/abs/d"}, "/r") == Path("/abs/d")


def test_a_recipe_started_from_another_folder_lists_its_own_data_dir(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    monkeypatch.chdir(tmp_path / "elsewhere")  # no data/ here; $QFK_DATA_DIR (the test's) is not it either
    plan = plan_webui(recipes=[ws / "sft.yaml"], port="auto", choices=tables)
    assert (plan.data_dir, plan.workdir, plan.datasets) == (ws / "data", ws, ["med"])
    assert plan.data_from == "sft.yaml's dataset_dir data"
    assert plan.args_files[0].notes == []  # the recipe's dataset_dir is the WebUI's Data dir: nothing to say
    assert plan.args_files[0].values["train.dataset_dir"] == str(ws / "data")
    assert startup_lines(plan)[0] == f"data dir: {ws / 'data'} (1 datasets; from sft.yaml's dataset_dir data)"
    # --data-dir still wins, and the recipe whose dataset_dir differs is told so
    other = tmp_path / "other"
    other.mkdir()
    plan = plan_webui(data_dir=other, recipes=[ws / "sft.yaml"], choices=tables)
    assert plan.data_dir == other and plan.data_from == "--data-dir"
    assert plan.args_files[0].notes[0] == f"its dataset_dir data is not {other}: the WebUI's Data dir is used"


def test_data_dir_paths_relative_and_absolute_and_online(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    monkeypatch.chdir(tmp_path / "elsewhere")
    nested = ws / "recipes" / "sft.yaml"
    nested.parent.mkdir()
    nested.write_text(yaml.safe_dump({**RECIPE, "dataset_dir": "../data"}))
    assert plan_webui(recipes=[nested], choices=tables).data_dir == ws / "data"
    absolute = {**RECIPE, "dataset_dir": str(ws / "data")}
    assert pick_data_dir(None, [(str(tmp_path / "x.yaml"), absolute)]) == (ws / "data", f"x.yaml's dataset_dir {ws / 'data'}")
    # hub-only recipes give no data dir: $QFK_DATA_DIR, else ./data, as without a recipe
    online = {**RECIPE, "dataset_dir": "ONLINE"}
    assert pick_data_dir(None, [("/r/x.yaml", online)], {"QFK_DATA_DIR": str(ws / "data")}) == (ws / "data", "$QFK_DATA_DIR")
    monkeypatch.chdir(ws)
    assert pick_data_dir(None, [("/r/x.yaml", online)], {}) == (ws / "data", "the current folder's data")


def test_a_recipe_data_dir_that_is_not_there_is_refused_with_the_option(tmp_path, monkeypatch, qfk):
    ws = make_workspace(tmp_path)
    lonely = tmp_path / "recipes" / "sft.yaml"  # written elsewhere: data/ is not next to it
    lonely.parent.mkdir()
    lonely.write_text((ws / "sft.yaml").read_text())
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(QfkError, match="relative to the recipe's folder") as exc:
        plan_webui(recipes=[lonely], choices=tables)
    assert exc.value.hint.endswith("--data-dir PATH")
    monkeypatch.chdir(ws)  # where the recipe's data is: the hint names it
    with pytest.raises(QfkError) as exc:
        plan_webui(recipes=[lonely], choices=tables)
    assert exc.value.hint.endswith("--data-dir data")
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = qfk("webui", "--recipe", lonely, "--dry-run")
    assert code == 2 and f"the data dir {tmp_path / 'recipes' / 'data'} is not a folder" in err and "Traceback" not in err
    assert "--data-dir" in err


# --------------------------------------------------------------------------------------------
# a real qfk webui process and one SIGINT (slow)
# --------------------------------------------------------------------------------------------
START_TIMEOUT_S = 240  # about 30 s on a free 2-core machine
STOP_TIMEOUT_S = 60
URL_LINE = re.compile(r"LLaMA-Factory WebUI: http://127\.0\.0\.1:(\d+)")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `qfk webui &` gets from a non-interactive shell


class Webui:
    """``qfk webui`` in its own session, its output collected by a thread (the pipe never fills)."""

    def __init__(self, args: list, cwd: Path, env: dict):
        self.proc = subprocess.Popen([sys.executable, "-m", "qwen_factory_kit", "webui", *map(str, args)], cwd=cwd,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, preexec_fn=_ignore_sigint)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            if self.proc.poll() is not None and self.lines.empty():
                pytest.fail(f"qfk webui exited with {self.proc.returncode} before {text!r}:\n{self.output[-3000:]}")
            try:
                self.seen.append(self.lines.get(timeout=max(0.0, min(1.0, deadline - time.monotonic()))))
            except queue.Empty:
                if time.monotonic() > deadline:
                    pytest.fail(f"no {text!r} within {timeout} s:\n{self.output[-3000:]}")

    def stop_time(self) -> float:
        """Seconds from now until the process exits (it fails the test past STOP_TIMEOUT_S)."""
        start = time.monotonic()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"one SIGINT did not stop qfk webui within {STOP_TIMEOUT_S} s:\n{self.output[-3000:]}")
        time.sleep(0.2)  # the reader thread takes the last lines
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return time.monotonic() - start

    @property
    def output(self) -> str:
        return "".join(self.seen)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def group_left(pgid: int) -> list[int]:
    """Processes still in the process group ``pgid`` (qfk webui's session)."""
    import psutil

    left = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                left.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return left


@pytest.fixture
def elsewhere_env(tmp_path):
    ws = make_workspace(tmp_path)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    for var in ("QFK_DATA_DIR", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        env.pop(var, None)
    return ws, tmp_path / "elsewhere", env


@pytest.mark.slow
def test_one_sigint_right_after_the_banner_stops_it(elsewhere_env):
    """Started from another folder with only --recipe (the data dir comes from the recipe's folder),
    as a background job (SIGINT ignored at start): the signal sent the moment the banner appears
    stops it, the server closed, nothing of it left listening."""
    ws, elsewhere, env = elsewhere_env
    webui = Webui(["--recipe", ws / "sft.yaml", "--port", "auto"], elsewhere, env)
    try:
        webui.wait_for("Ctrl-C stops it", START_TIMEOUT_S)
        webui.proc.send_signal(signal.SIGINT)
        took = webui.stop_time()
    finally:
        webui.kill()
    out = webui.output
    assert webui.proc.returncode == 130 and "stopping the WebUI" in out and "Traceback" not in out, out[-3000:]
    assert took < STOP_TIMEOUT_S and group_left(webui.proc.pid) == []
    port = int(URL_LINE.search(out)[1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert f"data dir: {ws / 'data'} (1 datasets; from sft.yaml's dataset_dir data)" in out
    assert f"working folder: {ws} " in out and (ws / "llamaboard_config" / "sft.yaml").is_file()
    # the page opened on the recipe's model under its own name, not LLaMA-Factory's "Qwen3-4B-Thinking"
    opened = yaml.safe_load((ws / "llamaboard_cache" / "user_config.yaml").read_text())
    assert opened["last_model"] == "Qwen3-4B" and opened["path_dict"]["Qwen3-4B"] == "Qwen/Qwen3-4B"
    assert yaml.safe_load((ws / "llamaboard_config" / "sft.yaml").read_text())["top.model_name"] == "Qwen3-4B"


@pytest.mark.slow
def test_one_sigint_while_it_starts_stops_it(elsewhere_env):
    """The signal sent while LLaMA-Factory's WebUI is still being imported and built stops it too."""
    ws, elsewhere, env = elsewhere_env
    webui = Webui(["--recipe", ws / "sft.yaml", "--port", "auto"], elsewhere, env)
    try:
        webui.wait_for("starting LLaMA-Factory's WebUI", START_TIMEOUT_S)
        webui.proc.send_signal(signal.SIGINT)
        webui.stop_time()
    finally:
        webui.kill()
    out = webui.output
    assert webui.proc.returncode == 130 and "stopped before the WebUI was up" in out, out[-3000:]
    assert "Traceback" not in out and "LLaMA-Factory WebUI: http" not in out and group_left(webui.proc.pid) == []
