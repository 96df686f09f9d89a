"""User-facing errors: what was wrong, where, and what to type instead.

The CLI prints a :class:`QfkError` as a short message plus hint (never a traceback) and exits
with status 2. Anything else escaping to the top is a bug in the kit.
"""

from __future__ import annotations


class QfkError(Exception):
    """A mistake in the user's input or environment, with a hint on how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
