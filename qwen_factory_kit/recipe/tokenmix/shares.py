"""A mix's shares per epoch in rows, in trained (label) tokens and in all tokens.

Tokens are LLaMA-Factory's own encoding with the recipe's template, ``enable_thinking`` and
``cutoff_len`` (:func:`qwen_factory_kit.tokens.file_stats`, cached: a recipe check after
``recipe new`` tokenizes nothing again): ``trained`` counts the label tokens of each row at
``cutoff_len`` (what the loss is taken over), ``total`` the input ids.

What a recipe's dataset entry trains per epoch (:func:`entry_share`):

* a file trained whole (NAME, NAME__tN, NAME__max<N> ...): its rows and their tokens, exact;
* an entry with ``num_samples: N`` (NAME__nN): N rows drawn at random at training time, so the
  token figures are expected values, N times the mean of its rows (``sampled``).

A row mix measures the first ``--stats-rows`` rows of each file, as the cutoff choice does, and
estimates the rest from them (``sampled``, a ``~`` in the header): the whole of a 100,000-row
dataset would take minutes to tokenize. A token mix measures every row: its counts depend on them.

:func:`share_lines` writes the header block and :func:`read_share_lines` reads it back (the one
format, both ways), for ``qfk recipe check`` to compare with the data as it is now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..document import scalar

HEADER = "Shares per epoch"
#: the first words of a token mix's header block (its shares are measured on every row)
TOKEN_MIX_TITLE = "Mix by trained tokens"
_HEADER_RE = re.compile(rf"^{HEADER} \((?P<settings>template [^;]*); ")
#: the note of a share estimated from the first rows of a file (and how it is read back)
SAMPLE_NOTE = "estimated from the first {seen:,} of {rows:,} rows"
_SAMPLE_RE = re.compile(r"estimated from the first ([\d,]+) of ")
_LINE_RE = re.compile(r"^  (?P<name>[^\s:]+): rows (?P<rows>\d+(?:\.\d+)?)%, trained tokens (?P<trained>\d+(?:\.\d+)?)%, "
                      r"all tokens (?P<total>\d+(?:\.\d+)?)%")


@dataclass(frozen=True)
class Settings:
    """How LLaMA-Factory encodes the rows: the recipe's template, enable_thinking and cutoff_len."""

    template: str = "qwen3"
    enable_thinking: bool | None = True
    cutoff_len: int = 2048

    @classmethod
    def of(cls, args: dict) -> Settings:
        return cls(str(args.get("template") or "qwen3"), args.get("enable_thinking", True), int(args.get("cutoff_len") or 2048))

    @property
    def text(self) -> str:
        return f"template {self.template}, enable_thinking {scalar(self.enable_thinking)}, cutoff_len {self.cutoff_len}"


@dataclass(frozen=True)
class Share:
    """What one dataset entry of a mix trains per epoch."""

    entry: str           # the name the recipe's ``dataset`` gives
    rows: float
    trained: float       # label tokens
    total: float         # input tokens
    sampled: bool = False  # num_samples draws the rows at training time: tokens are expected values
    note: str = ""


def measure(file: Path, entry: dict, settings: Settings, tokenizer: Any = None, max_rows: int | None = None, *,
            progress: bool | str = False, total: int | None = None):
    """The first ``max_rows`` rows (None: every row) of ``file`` as LLaMA-Factory encodes them with
    ``settings`` (the cached statistics); ``progress``, ``total``: :func:`~qwen_factory_kit.tokens.token_stats`' bar."""
    from ...tokens import file_stats

    return file_stats(file, entry, tokenizer=tokenizer, template=settings.template, enable_thinking=settings.enable_thinking,
                      cutoff_len=settings.cutoff_len, max_rows=max_rows, progress=progress, total=total)


def by_row(stats) -> dict[int, tuple[int, int]]:
    """Row number -> (trained tokens, all tokens) of every row of ``stats``; a row LLaMA-Factory drops trains none."""
    out = {n: (0, 0) for n in stats.dropped}
    out.update({r.row: (r.trained, r.kept) for r in stats.rows})
    return out


def entry_share(name: str, entry: dict, file: Path, settings: Settings, tokenizer: Any = None,
                num_samples: int | None = None, *, max_rows: int | None = None, rows: int | None = None) -> Share:
    """What entry ``name`` (``rows`` rows in ``file``) trains per epoch; ``num_samples`` (default: the
    entry's) draws that many of the file's rows at random; ``max_rows``: measure the first rows only
    and estimate the others from them."""
    st = measure(file, entry, settings, tokenizer, max_rows)
    n = num_samples if num_samples is not None else entry.get("num_samples")
    seen = len(st.rows) + len(st.dropped)
    rows = max(seen, rows or 0)
    kept, trained, total = len(st.rows), sum(r.trained for r in st.rows), sum(r.kept for r in st.rows)
    notes = [SAMPLE_NOTE.format(seen=seen, rows=rows)] if seen < rows else []
    draws = rows if n is None else int(n)
    if draws != rows:
        notes.append(f"expected: num_samples draws {draws} of {rows} rows at random when training starts")
    per = draws / seen if seen else 0.0
    if not notes:
        return Share(name, kept, trained, total)
    return Share(name, kept * per, trained * per, total * per, True, "; ".join(notes))


def share_lines(shares: list[Share], settings: Settings, extra: str = "") -> list[str]:
    """The header block: a title with the settings, then one line per entry."""
    rows = sum(s.rows for s in shares) or 1
    trained = sum(s.trained for s in shares) or 1
    total = sum(s.total for s in shares) or 1
    lines = [f"{HEADER} ({settings.text}; trained tokens: the labels LLaMA-Factory trains{extra}):"]
    for s in shares:
        sign = "~" if s.sampled else ""
        what = f"{_n(s.rows)} rows, {sign}{_n(s.trained)} trained tokens, {sign}{_n(s.total)} in all"
        lines.append(f"  {s.entry}: rows {100 * s.rows / rows:.1f}%, trained tokens {100 * s.trained / trained:.1f}%, "
                     f"all tokens {100 * s.total / total:.1f}% ({what}{'; ' + s.note if s.note else ''})")
    return lines


def share_table(shares: list[Share]) -> dict[str, dict[str, float]]:
    """Entry -> its shares in percent (rows, trained, total), rounded as the header writes them."""
    sums = {k: sum(getattr(s, k) for s in shares) or 1 for k in ("rows", "trained", "total")}
    return {s.entry: {k: round(100 * getattr(s, k) / sums[k], 1) for k in sums} for s in shares}


def read_share_lines(header: list[str]) -> tuple[str | None, dict[str, dict[str, float]]]:
    """The settings text and the shares a recipe header states (``# `` already stripped); (None, {}) without a block."""
    settings, out, inside = None, {}, False
    for line in header:
        head = _HEADER_RE.match(line)
        if head:
            settings, inside = head["settings"], True
            continue
        m = _LINE_RE.match(line) if inside else None
        if m:
            out[m["name"]] = {k: float(m[k]) for k in ("rows", "trained", "total")}
        elif inside and not line.startswith("  "):
            inside = False
    return settings, out


def stated_sample(header: list[str]) -> int | None:
    """The rows per dataset the header's shares were estimated from (None: measured on every row)."""
    found = _SAMPLE_RE.search("\n".join(header))
    return int(found[1].replace(",", "")) if found else None


def _n(x: float) -> str:
    return f"{round(x):,}"
