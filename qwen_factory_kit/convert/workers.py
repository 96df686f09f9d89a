"""``--workers N``: a function mapped over a stream by N processes, the results in order.

:func:`ordered_map` is all the core needs to convert batches in parallel: the parent reads the
source and keeps everything that depends on the order of the rows (sampling, splits, duplicates,
counting, writing, hashing); N - 1 worker processes get one batch at a time and send back its
converted bytes, and the parent converts a batch itself whenever the workers have enough queued
(so it is never idle, and a short run is done before a worker has started). At most
:data:`AHEAD` batches per worker are queued, so memory stays bounded whatever the size of the
source. With N = 1 nothing is started. The output does not depend on N: every batch goes through
the same function, in-process or not.

Workers are started with ``spawn`` (a fresh interpreter: unlike ``fork``, safe with the parent's
threads and Arrow's thread pools; the parent does not wait for them to start: it converts the
first batches itself meanwhile). Each worker builds its state once, from ``setup(*setup_args)``.
As with any program using :mod:`multiprocessing`, a script that asks for workers needs the
``if __name__ == "__main__":`` guard (the workers import the script's ``__main__`` module).
"""

from __future__ import annotations

import os
import sys
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from ..errors import QfkError

#: batches queued per worker beyond the one it converts (bounds memory, keeps workers busy)
AHEAD = 1
#: the GIL switch interval while a pool runs (Python's default, 5 ms, kept the pool's threads
#: waiting while this process converted a batch, and the workers waiting for their next one)
SWITCH_INTERVAL = 0.0005
#: sources smaller than this are converted in-process when the worker count is left to the kit
#: (a worker would start only to stop again)
SMALL_SOURCE_BYTES = 4 << 20

_STATE: Any = None  # the worker process's state, built by :func:`_start`


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def worker_count(asked: int | None, source_bytes: int) -> int:
    """How many processes convert (this one included): ``asked`` (at least 1), or when None the
    cores available, except for a small source (:data:`SMALL_SOURCE_BYTES`), converted in-process,
    and for a program a worker could not start again (:func:`spawnable`)."""
    if asked is not None:
        if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
            raise QfkError(f"--workers must be a whole number >= 1, not {asked!r}", "for example --workers 4 (1: no worker processes)")
        return asked if spawnable() else 1
    return 1 if source_bytes < SMALL_SOURCE_BYTES or not spawnable() else available_cores()


def spawnable() -> bool:
    """Whether a spawned worker can import this program's ``__main__``: not when it was read from
    standard input or ``python -c`` (a notebook or the REPL has no file, and is fine)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return path is None or os.path.exists(path)


def ordered_map(task: Callable[[Any, Any], Any], items: Iterable, *, workers: int, setup: Callable[..., Any],
                setup_args: tuple = ()) -> Iterator[tuple[Any, Any]]:
    """``(item, task(state, item))`` for each item, in order, computed by ``workers`` processes (this
    one included); ``state = setup(*setup_args)`` is built once per process. ``task``, ``setup``,
    their arguments and the items must be picklable (module-level) when ``workers`` > 1."""
    state = setup(*setup_args)
    if workers <= 1:
        for item in items:
            yield item, task(state, item)
        return
    from concurrent.futures import ProcessPoolExecutor

    queued_max = (workers - 1) * (1 + AHEAD)
    pending: deque = deque()  # (item, future or _Here(result)), in order
    pool = ProcessPoolExecutor(workers - 1, mp_context=_context(), initializer=_start, initargs=(setup, setup_args))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)  # the pool's threads send and receive while this one converts
    try:
        for item in items:
            if sum(type(r) is not _Here for _, r in pending) < queued_max:
                pending.append((item, _submit(pool, task, item)))
            else:  # the workers have enough to do: this process converts the batch
                pending.append((item, _Here(task(state, item))))
            yield from _settle(pending, queued_max + 1, task, state)
        yield from _settle(pending, 0, task, state)
    finally:
        sys.setswitchinterval(switch)
        pool.shutdown(wait=True, cancel_futures=True)


def _settle(pending: deque, keep: int, task: Callable[[Any, Any], Any], state: Any) -> Iterator[tuple[Any, Any]]:
    """Yield the results at the head of ``pending`` that are ready, and wait for more while it holds
    more than ``keep``; a queued item no worker has taken yet is converted here instead of waited for."""
    while pending:
        item, result = pending[0]
        if type(result) is not _Here and not result.done():
            if len(pending) <= keep:
                return
            if result.cancel():  # not started (the workers are still starting, or busy)
                result = _Here(task(state, item))
        pending.popleft()
        yield item, _result(result)


def _submit(pool, task: Callable[[Any, Any], Any], item: Any):
    """``pool.submit`` with SIGINT blocked: a worker it starts inherits the blocked signal, so Ctrl-C
    stops the parent alone (which then shuts the pool down) and never a worker half-way."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        return pool.submit(_run, task, item)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(_run, task, item)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Here:
    """A result computed in this process, waiting in line behind the workers' earlier ones."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def _context():
    import multiprocessing

    return multiprocessing.get_context("spawn")


class _Raised:
    """A :class:`QfkError` raised in a worker, sent back whole (its hint survives the trip)."""

    def __init__(self, message: str, hint: str | None):
        self.message, self.hint = message, hint


def _start(setup: Callable[..., Any], setup_args: tuple) -> None:
    global _STATE
    _STATE = setup(*setup_args)


def _run(task: Callable[[Any, Any], Any], item: Any) -> Any:
    try:
        return task(_STATE, item)
    except QfkError as exc:
        return _Raised(exc.message, exc.hint)


def _result(result) -> Any:
    if type(result) is _Here:
        return result.value
    from concurrent.futures.process import BrokenProcessPool

    try:
        out = result.result()
    except BrokenProcessPool:
        raise QfkError("a worker process stopped abruptly (killed, or out of memory?); nothing was written",
                       "run the command again, with --workers 1 to convert in this process alone") from None
    if type(out) is _Raised:
        raise QfkError(out.message, out.hint)
    return out
