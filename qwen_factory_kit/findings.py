"""A finding of a check (doctor, datasets check, recipe check): status, message and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass

STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "info": "cyan"}


@dataclass
class Finding:
    check: str
    status: str  # ok | warn | fail | info
    message: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def print_findings(findings: list[Finding], console) -> None:
    for f in findings:
        console.print(f"[{STATUS_STYLE[f.status]}]{f.status:>4}[/] [bold]{f.check}[/]: {f.message}")
        if f.fix:
            console.print(f"      fix: {f.fix}")
