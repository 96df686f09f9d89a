"""One Ctrl-C (or SIGTERM) stops a long-running command at any moment: ``qfk webui``, ``qfk serve``.

:func:`stop_signals` is entered before anything slow starts, so a signal during startup stops the
command too, and :class:`Stopped` says which signal came (``qfk serve`` exits 130 on SIGINT, 0 on
SIGTERM, the way a service manager expects).
"""

from __future__ import annotations

import contextlib
import signal


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the command (a KeyboardInterrupt: nothing on the way catches it)."""

    @property
    def signum(self) -> int:
        return self.args[0] if self.args else signal.SIGINT


def _raise_stopped(signum, frame):
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals():
    """SIGINT and SIGTERM raise :class:`Stopped` inside the block, also where SIGINT was ignored (a
    background job, ``nohup``); the previous handlers come back after it.

    Entered before anything slow starts, so one signal at any moment stops the command: a handler
    installed only once the server is up loses a signal sent right after the banner (Python ignores
    an inherited SIG_IGN) and lets one during startup skip closing the server."""
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
