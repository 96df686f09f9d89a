"""The reliability suite's tally: each fault test records how many faults it caused, how many the
data survived and how many lost data; the terminal summary prints one line of it
(``reliability suite: ... data lost: 0``, from the hook in conftest.py)."""

from __future__ import annotations

_COUNTS: dict[str, list[int]] = {}


def record(kind: str, tried: int, survived: int, lost: int) -> None:
    """Add one test's counts under ``kind`` (a few words: "SIGKILL during qfk convert")."""
    counts = _COUNTS.setdefault(kind, [0, 0, 0])
    for i, n in enumerate((tried, survived, lost)):
        counts[i] += n


def summary_line() -> str | None:
    """``reliability suite: KIND survived/tried, ...; data lost: N`` (None when no fault test ran)."""
    if not _COUNTS:
        return None
    parts = ", ".join(f"{kind} {survived}/{tried}" for kind, (tried, survived, _) in _COUNTS.items())
    lost = sum(c[2] for c in _COUNTS.values())
    return f"reliability suite: {parts}; data lost: {lost}"
