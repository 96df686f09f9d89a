"""The kit's rich consoles wrap on a terminal only: output sent to a pipe or a file keeps every line whole."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import write_jsonl

from qwen_factory_kit.console import PIPE_WIDTH, console


def test_piped_output_is_not_wrapped(tmp_path):
    """qfk's stdout to a pipe, with COLUMNS=40: a long path stays on its line, in a sentence and in a table."""
    folder = tmp_path / ("a_folder_name_long_enough_to_pass_eighty_columns_" * 2)
    rows = write_jsonl(folder / "rows.jsonl", [{"instruction": "What is 2+2?", "input": "", "output": "It is 4."}])
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update(COLUMNS="40", QFK_DATA_DIR=str(tmp_path / "data"))

    def qfk(*args: str) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "qwen_factory_kit", *args], check=False, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    assert len(str(rows)) > 120
    assert any(str(rows) in line and "1 rows" in line for line in qfk("lint", str(rows)))
    qfk("datasets", "add", str(rows), "--name", "long")
    assert any(line.startswith("│ long") and str(rows) in line for line in qfk("datasets", "list"))


def test_a_terminal_still_wraps(monkeypatch):
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as tty:
        monkeypatch.setattr(sys, "stdout", tty)
        on_tty = console()
        assert on_tty.is_terminal and not on_tty.soft_wrap and on_tty.width < PIPE_WIDTH
    os.close(leader)
    piped = console(stderr=True)  # pytest captures stderr: not a terminal
    assert piped.soft_wrap and piped.width == PIPE_WIDTH
