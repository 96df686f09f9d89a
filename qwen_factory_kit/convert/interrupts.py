"""Ctrl-C during a conversion, never lost and never half-way through the pool's bookkeeping.

CPython raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT lands.
In a conversion that can be inside ``concurrent.futures``' locks (``future.result()``: "cannot
release un-acquired lock", a traceback and exit 1) or inside a callback run during an import (the
interrupt is "ignored" and the conversion goes on to exit 0); both were seen, about one Ctrl-C in
thirty, when the signal came as the output files appeared.

:class:`Interrupts` (entered by the conversion, in the main thread, when SIGINT has Python's
default handler) remembers every SIGINT. Outside :meth:`Interrupts.deferring` it raises at once,
as Python would; inside it (the batch loop, where the workers' futures are waited on) it only
remembers, and :meth:`Interrupts.check`, called between batches and before anything is committed,
raises it. A remembered interrupt is raised there even when the first raise was swallowed.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Interrupts:
    """SIGINT, remembered (see the module docstring)."""

    def __init__(self) -> None:
        self.requested = False
        self._deferred = False
        self._previous = None

    def __enter__(self) -> "Interrupts":
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if not self._deferred:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise the interrupt a SIGINT asked for (a safe point: between batches, before a commit)."""
        if self.requested:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferring(self):
        """Inside: a SIGINT is only remembered, for :meth:`check` to raise."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
