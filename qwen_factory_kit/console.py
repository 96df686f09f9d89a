"""The rich consoles the kit prints through.

On a terminal a console wraps to the terminal's width. Sent to a file or a pipe (``qfk ... > log``,
``| grep``, ``| tee``), nothing is wrapped or cut: a long path, a command to copy or a finding stays
on one line, whatever ``COLUMNS`` says.
"""

from __future__ import annotations

#: width of a console that does not print to a terminal: tables take their natural width
PIPE_WIDTH = 10_000


def console(stderr: bool = False):
    """A rich console on stdout (or stderr) that wraps on a terminal only (``FORCE_COLOR`` keeps the
    colours of piped output, not the wrapping)."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not is_tty(out.file):
        out.soft_wrap = True
        out.width = PIPE_WIDTH
    return out


def is_tty(stream) -> bool:
    """Whether ``stream`` is a terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
