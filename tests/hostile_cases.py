"""The reliability suites' shared tally: what each suite tried, what survived, what was lost.

A suite calls :func:`record` once per input or fault it tried; ``tests/conftest.py`` prints
:func:`summary_line` at the end of the run, for example::

    reliability suite: 143 hostile inputs tried, 143 survived; 50 kills, 50 intact; data lost: 0

``survived``: the expected outcome was met (a reject with its reason, a one-line error, an intact
previous file...). ``lost``: rows unaccounted for (read != written + rejected), a partial output
left behind, or a registry changed by a failed command. A failed case also fails its test; the
tally only says how much was tried and how much held.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: how each kind reads in the summary line; a kind not listed reads "N KIND tried, N survived"
PHRASES: dict[str, tuple[str, str]] = {
    "hostile inputs": ("{tried} hostile inputs tried", "{survived} survived"),
    "faults injected": ("{tried} faults injected", "{survived} recovered"),
    "kills": ("{tried} kills", "{survived} intact"),
    "SIGKILL during qfk convert": ("{tried} SIGKILLs during qfk convert", "{survived} intact"),
    "SIGKILL between the renames of a conversion": ("{tried} SIGKILLs between renames", "{survived} intact"),
    "SIGKILL during registry writes": ("{tried} SIGKILLs during registry writes", "{survived} intact"),
    "full disk (tmpfs)": ("{tried} full-disk writes", "{survived} refused cleanly"),
    "file size limit": ("{tried} file-size-limit writes", "{survived} refused cleanly"),
    "concurrent registry writers (8 processes)": ("{tried} concurrent registry operations (8 processes)",
                                                  "{survived} exact"),
}

_tally: dict[str, Counter] = {}


def record(kind: str, tried: int = 1, survived: int = 0, lost: int = 0) -> None:
    """Count ``tried`` inputs (or faults) of ``kind``, ``survived`` of which met their expected
    outcome and ``lost`` of which lost data (rows or files)."""
    c = _tally.setdefault(kind, Counter())
    c["tried"] += tried
    c["survived"] += survived
    c["lost"] += lost


def counts(kind: str) -> dict[str, int]:
    c = _tally.get(kind, Counter())
    return {"tried": c["tried"], "survived": c["survived"], "lost": c["lost"]}


def summary_line() -> str | None:
    """``reliability suite: ...; data lost: N``, or None when nothing was recorded."""
    if not _tally:
        return None
    parts = []
    for kind, c in _tally.items():
        tried, survived = PHRASES.get(kind, ("{tried} " + kind + " tried", "{survived} survived"))
        parts.append(f"{tried.format(tried=c['tried'])}, {survived.format(survived=c['survived'])}")
    lost = sum(c["lost"] for c in _tally.values())
    return f"reliability suite: {'; '.join(parts)}; data lost: {lost}"


def run_cli(*args: str, cwd: str | os.PathLike, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m qwen_factory_kit ARGS`` in a child process, with this checkout first on the
    import path; raises ``subprocess.TimeoutExpired`` when it runs past ``timeout`` (a hang)."""
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full.get("PYTHONPATH", "")) if p)
    full.setdefault("DISABLE_VERSION_CHECK", "1")
    full.setdefault("HF_HUB_OFFLINE", "1")
    return subprocess.run([sys.executable, "-m", "qwen_factory_kit", *map(str, args)], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
