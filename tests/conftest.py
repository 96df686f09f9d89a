from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHARED = ROOT.parent / "shared" / "real-samples"

os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture
def real_samples() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/real-samples is absent (a user's fresh clone has no ../shared)")
    return SHARED


@pytest.fixture
def qfk(capsys):
    """Run ``qfk ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from qwen_factory_kit.cli.main import main

    def run(*args: str):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def qfk_json(qfk):
    def run(*args: str) -> dict:
        code, out, err = qfk(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    return run


def run_qfk_process(*args: str, cwd: str | os.PathLike | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run qfk as a separate process (as a user would)."""
    return subprocess.run([sys.executable, "-m", "qwen_factory_kit", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def write_jsonl(path, rows, *, raw_lines: list[str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + (raw_lines or [])
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return path


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A workspace holding the bundled examples, converted and registered (as qfk demo --no-train)."""
    from qwen_factory_kit.demo import run_demo

    w = tmp_path / "work"
    run_demo(w)
    monkeypatch.chdir(w)
    monkeypatch.setenv("QFK_DATA_DIR", str(w / "data"))
    return w


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny Qwen3 (2 layers, real tokenizer), built once into the cache."""
    from qwen_factory_kit.tiny import build_tiny_model

    return build_tiny_model()


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """Every test registers into its own data dir, never the checkout's ./data."""
    monkeypatch.setenv("QFK_DATA_DIR", str(tmp_path / "data"))


def pytest_terminal_summary(terminalreporter):
    """The reliability suites' one line (tests/hostile_cases.py), when one of them ran."""
    from hostile_cases import summary_line

    line = summary_line()
    if line:
        terminalreporter.write_line(line)
