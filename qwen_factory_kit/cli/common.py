"""Helpers shared by the CLI commands: option types, output (rich or --json), errors."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson


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


def split_csv(values: tuple[str, ...] | None) -> list[str] | None:
    """Options given as ``a,b`` or repeated ``--opt a --opt b``."""
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def emit_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)
