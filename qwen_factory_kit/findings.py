"""A finding: what one check or rule found, in the one shape every checking command reports.

``qfk doctor``, ``qfk datasets check``, ``qfk recipe check``, ``qfk train``'s pre-launch checks and
``qfk lint`` all return :class:`Finding` objects and print them with :func:`print_findings`:

* ``id``: the check or rule id (``keys``, ``cutoff``, ``think_unclosed``, ``tokenizer`` ...);
* ``severity``: one of :data:`SEVERITIES` (``error`` is what makes a command exit 1);
* ``where``: a short locator, or None (lint: ``row 12, field output``; datasets check: the
  dataset name; recipe check: the key or the dataset; doctor: None);
* ``message``: what is wrong (or right), without the locator: :attr:`Finding.text` joins them;
* ``fix``: how to fix it ('' when there is nothing to do);
* ``row``: lint's row number (None for every other command and for lint's whole-file rules).
"""

from __future__ import annotations

from dataclasses import dataclass

#: the severities, mildest first
SEVERITIES = ("ok", "info", "warn", "error")
SEVERITY_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "error": "red"}


@dataclass
class Finding:
    id: str
    severity: str  # ok | info | warn | error
    where: str | None
    message: str
    fix: str = ""
    row: int | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")

    @property
    def text(self) -> str:
        """The message with its locator in front (``lora_rank: 'x' is not a valid value ...``)."""
        return f"{self.where}: {self.message}" if self.where else self.message

    def as_dict(self) -> dict:
        """The ``--json`` form: id, severity, where, message, fix, and row when there is one."""
        out = {"id": self.id, "severity": self.severity, "where": self.where, "message": self.message, "fix": self.fix}
        if self.row is not None:
            out["row"] = self.row
        return out


def failures(findings: list[Finding]) -> list[Finding]:
    """The findings that make a command fail (exit status 1)."""
    return [f for f in findings if f.severity == "error"]


def print_findings(findings: list[Finding], console) -> None:
    """One line per finding (severity, id, locator and message), then its fix."""
    from rich.markup import escape

    for f in findings:
        console.print(f"[{SEVERITY_STYLE[f.severity]}]{f.severity:>5}[/] [bold]{f.id}[/]: {escape(f.text)}")
        if f.fix:
            console.print(f"       fix: {escape(f.fix)}")
