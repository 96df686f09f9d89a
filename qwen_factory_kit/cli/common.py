"""Helpers shared by the CLI commands: option types, output (rich or --json), errors."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from ..console import console  # noqa: F401  (the commands print through it)


class SizeType(click.ParamType):
    """A fraction in (0, 1) or a whole row count."""

    name = "FRACTION|COUNT"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return value
        try:
            f = float(value)
        except ValueError:
            self.fail(f"'{value}' is neither a fraction such as 0.05 nor a row count such as 2000", param, ctx)
        if f <= 0:
            self.fail("must be > 0", param, ctx)
        return f if f < 1 else int(f) if f.is_integer() else self.fail("a count must be a whole number", param, ctx)


class KeyValueType(click.ParamType):
    """``key=value`` (used for --lang-map and per-file --encoding)."""

    name = "KEY=VALUE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        if "=" not in value:
            self.fail(f"'{value}' is not KEY=VALUE", param, ctx)
        k, v = value.split("=", 1)
        return k.strip(), v.strip()


class JaccardType(click.ParamType):
    """A Jaccard similarity in (0, 1] (``--near-dedup``); a bad one is the library's error, with what to type."""

    name = "JACCARD"

    def convert(self, value, param, ctx):
        from ..minhash import check_threshold

        return check_threshold(value)


def split_csv(values: tuple[str, ...] | None) -> list[str] | None:
    """Options given as ``a,b`` or repeated ``--opt a --opt b``."""
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def emit_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


class Waiting:
    """Something the user waits on without a count (a model loading, an export): a spinner with
    the stage and the elapsed time on a terminal; plain lines (the label, each new stage, the
    time it took) otherwise. A context manager; :meth:`stage` names the current step."""

    def __init__(self, out, label: str):
        self.out, self.label = out, label
        self.bar = self.task = None
        self.started = 0.0

    def __enter__(self) -> "Waiting":
        import time

        self.started = time.time()
        if self.out.is_terminal:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=self.out,
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=None)
        else:
            self.out.print(f"{self.label} ...", soft_wrap=True, markup=False)
        return self

    def stage(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.label}: {text}")
        else:
            self.out.print(f"{self.label}: {text}", soft_wrap=True, markup=False)

    def __exit__(self, kind, value, tb) -> None:
        import time

        if self.bar is not None:
            self.bar.stop()
        if kind is None:
            self.out.print(f"{self.label}: done in {time.time() - self.started:.1f} s", soft_wrap=True, markup=False)


def near_options(fn):
    """``--ngram`` and ``--threshold``: what makes two rows near duplicates (:mod:`qwen_factory_kit.ngrams`)."""
    from ..ngrams import NGRAM, THRESHOLD

    fn = click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=None, metavar="SHARE",
                      help=f"Near duplicates share at least this part of the n-grams of the shorter row [default: {THRESHOLD}, "
                           "marin's 50%].")(fn)
    return click.option("--ngram", type=click.IntRange(1, 64), default=None, metavar="N",
                        help=f"Units an n-gram spans: words, or characters of Chinese/Japanese/Korean [default: {NGRAM}, "
                             "open-r1's word 8-grams; lm-eval's and marin's are 13].")(fn)


def near_settings(ngram: int | None, threshold: float | None) -> dict:
    from ..ngrams import NGRAM, THRESHOLD

    return {"ngram": NGRAM if ngram is None else ngram, "threshold": THRESHOLD if threshold is None else threshold}
