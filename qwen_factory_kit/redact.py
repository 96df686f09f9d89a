"""Secrets kept out of what the kit writes: which names hold one, and their values replaced.

A variable or argument named like a secret (``HF_TOKEN``, ``WANDB_API_KEY``, ``hf_hub_token``,
``swanlab_api_key``...) never has its value written into a run record, and a recipe that sets
one is not packed into a bundle (:mod:`.recipe.bundle.pack`).
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"
#: an environment variable whose name holds one of these words is never recorded
SECRET_ENV = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
_SECRET_WORDS = ("secret", "password", "passwd", "credential", "credentials", "auth")
_SECRET_ENDINGS = ("token", "key", "secret", "password", "passwd")
_YAML_LINE = re.compile(r"^(\s*([A-Za-z_][\w.\-]*)\s*:[ \t]*)(\S[^\r\n]*)")


def is_secret_name(name: str) -> bool:
    """Whether an argument named ``name`` holds a secret: its last word ends in token, key, secret
    or password (``hf_hub_token``, ``swanlab_api_key``), or a word is secret/password/auth...
    (``ignore_pad_token_for_loss`` and ``tokenized_path`` do not)."""
    parts = [p for p in re.split(r"[^a-z0-9]+", str(name).lower()) if p]
    return bool(parts) and (parts[-1].endswith(_SECRET_ENDINGS) or any(p in _SECRET_WORDS for p in parts))


def secret_keys(args: dict) -> list[str]:
    """The keys of ``args`` named like a secret that hold a value."""
    return [k for k, v in args.items() if is_secret_name(k) and v not in (None, "")]


def redact(value: Any) -> Any:
    """``value`` (arguments, nested) with the value of every key named like a secret replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_name(k) and v not in (None, "") else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def redact_assignments(items: list[str]) -> list[str]:
    """``KEY=VALUE`` overrides (or any argv) with the value of a secret KEY replaced."""
    return [f"{item.split('=', 1)[0]}={REDACTED}" if "=" in item and is_secret_name(item.split("=", 1)[0]) else item
            for item in items]


def redact_recipe_text(text: str) -> str:
    """A recipe's text with the value of every ``key: value`` line of a secret key replaced."""
    def line(text_line: str) -> str:
        found = _YAML_LINE.match(text_line)
        if found is None or not is_secret_name(found[2]):
            return text_line
        return found[1] + REDACTED + text_line[found.end():]

    return "".join(line(l) for l in text.splitlines(keepends=True))
