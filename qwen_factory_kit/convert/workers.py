"""``--workers N``: a function mapped over a stream by N processes, the results in order.

:func:`ordered_map` is all the core needs to convert batches in parallel: the parent reads the
source and keeps everything that depends on the order of the rows (sampling, splits, duplicates,
counting, writing, hashing); N - 1 worker processes get one batch at a time and hand back its
converted bytes in shared memory (:class:`_Slots`; the pipe when they do not fit), and the parent
converts a batch itself whenever the workers have enough queued
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
AHEAD = 2
#: the GIL switch interval while a pool runs (Python's default, 5 ms, kept the pool's threads
#: waiting while this process converted a batch, and the workers waiting for their next one)
SWITCH_INTERVAL = 0.0005
#: sources smaller than this are converted in-process when the worker count is left to the kit
#: (a worker would start only to stop again)
SMALL_SOURCE_BYTES = 4 << 20
#: the most processes the kit starts on its own: this process's share (reading, dedup, writing,
#: hashing) is about half the work on 2 cores, so more workers wait on it (``--workers`` asks for more)
DEFAULT_MAX_WORKERS = 8

_STATE: Any = None  # the worker process's state, built by :func:`_start`


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def worker_count(asked: int | None, source_bytes: int) -> int:
    """How many processes convert (this one included): ``asked`` (at least 1), or when None the
    cores available (at most :data:`DEFAULT_MAX_WORKERS`), except for a small source
    (:data:`SMALL_SOURCE_BYTES`), converted in-process, and for a program a worker could not start
    again (:func:`spawnable`)."""
    if asked is not None:
        if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
            raise QfkError(f"--workers must be a whole number >= 1, not {asked!r}", "for example --workers 4 (1: no worker processes)")
        return asked if spawnable() else 1
    return 1 if source_bytes < SMALL_SOURCE_BYTES or not spawnable() else min(available_cores(), DEFAULT_MAX_WORKERS)


def spawnable() -> bool:
    """Whether a spawned worker can import this program's ``__main__``: not when it was read from
    standard input or ``python -c`` (a notebook or the REPL has no file, and is fine)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return path is None or os.path.exists(path)


def ordered_map(task: Callable[[Any, Any], Any], items: Iterable, *, workers: int, setup: Callable[..., Any],
                setup_args: tuple = (), payload: str | None = None) -> Iterator[tuple[Any, Any]]:
    """``(item, task(state, item))`` for each item, in order, computed by ``workers`` processes (this
    one included); ``state = setup(*setup_args)`` is built once per process. ``task``, ``setup``,
    their arguments and the items must be picklable (module-level) when ``workers`` > 1.

    ``payload``: the field of the results (named tuples) that holds their bulk bytes. A worker puts
    them in a slot of shared memory (:class:`_Slots`) instead of sending them through the pipe, and
    this process gets a memoryview of the slot, valid until it asks for the next result."""
    state = setup(*setup_args)
    if workers <= 1:
        for item in items:
            yield item, task(state, item)
        return
    from concurrent.futures import ProcessPoolExecutor

    queued_max = (workers - 1) * (1 + AHEAD)
    pending: deque = deque()  # (item, future or _Here(result), slot), in order
    slots = _Slots.open(queued_max + 2) if payload else None
    pool = ProcessPoolExecutor(workers - 1, mp_context=_context(), initializer=_start, initargs=(setup, setup_args))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)  # the pool's threads send and receive while this one converts
    try:
        for item in items:
            if sum(type(r) is not _Here for _, r, _ in pending) < queued_max:
                slot = slots.take() if slots is not None else None
                pending.append((item, _submit(pool, task, item, (*slots.where(slot), payload) if slot is not None else None), slot))
            else:  # the workers have enough to do: this process converts the batch
                pending.append((item, _Here(task(state, item)), None))
            yield from _settle(pending, queued_max + 1, task, state, slots, payload)
        yield from _settle(pending, 0, task, state, slots, payload)
    finally:
        sys.setswitchinterval(switch)
        pool.shutdown(wait=True, cancel_futures=True)
        if slots is not None:
            slots.close()


def _settle(pending: deque, keep: int, task: Callable[[Any, Any], Any], state: Any, slots: _Slots | None,
            payload: str | None) -> Iterator[tuple[Any, Any]]:
    """Yield the results at the head of ``pending`` that are ready, and wait for more while it holds
    more than ``keep``; a queued item no worker has taken yet is converted here instead of waited for."""
    while pending:
        item, result, slot = pending[0]
        if type(result) is not _Here and not result.done():
            if len(pending) <= keep:
                return
            if result.cancel():  # not started (the workers are still starting, or busy)
                result = _Here(task(state, item))
        pending.popleft()
        out = _result(result)
        if slot is not None and type(getattr(out, payload)) is _InSlot:
            out = out._replace(**{payload: slots.view(slot, getattr(out, payload).size)})
        yield item, out
        if slot is not None:
            slots.give_back(slot)  # the caller is done with the view: it asked for the next result


#: bytes of one shared-memory slot (a batch's converted lines; larger ones go through the pipe)
SLOT_BYTES = 8 << 20
#: where the slots live when it has room: memory, never written back to a disk
SHM_DIR = "/dev/shm"


class _Slots:
    """Shared memory for the workers' results: one file of ``count`` slots of :data:`SLOT_BYTES`,
    in :data:`SHM_DIR` (else the temporary folder), reserved up front (``posix_fallocate``: a full
    file system is found now, never by a worker writing into a hole), mapped here and by each
    worker. A worker writes a result's payload into the slot given with its item; this process
    reads it there, then gives the slot back. The file is removed at the end; one left by a killed
    run (``qfk-slots-PID.tmp``, PID gone) is removed by the next run."""

    def __init__(self, path: str, count: int, fh, mm):
        self.path, self.free, self.fh, self.mm = path, list(range(count)), fh, mm
        self.buf = memoryview(mm)

    @classmethod
    def open(cls, count: int) -> _Slots | None:
        """The slots, or None where they cannot be had (the results then travel through the pipe)."""
        import mmap
        import tempfile

        folder = SHM_DIR if os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK) else tempfile.gettempdir()
        _sweep(folder)
        path = os.path.join(folder, f"qfk-slots-{os.getpid()}-{os.urandom(4).hex()}.tmp")
        try:
            fh = open(path, "w+b")
        except OSError:
            return None
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fh.fileno(), 0, count * SLOT_BYTES)
            else:  # pragma: no cover - macOS
                fh.truncate(count * SLOT_BYTES)
            return cls(path, count, fh, mmap.mmap(fh.fileno(), count * SLOT_BYTES))
        except (OSError, ValueError):
            fh.close()
            os.unlink(path)
            return None

    def take(self) -> int | None:
        return self.free.pop() if self.free else None

    def give_back(self, slot: int) -> None:
        self.free.append(slot)

    def where(self, slot: int) -> tuple[str, int, int]:
        return self.path, slot * SLOT_BYTES, SLOT_BYTES

    def view(self, slot: int, size: int) -> memoryview:
        return self.buf[slot * SLOT_BYTES: slot * SLOT_BYTES + size]

    def close(self) -> None:
        try:
            self.buf.release()
            self.mm.close()
        except BufferError:  # a view is still held somewhere: the mapping goes with the process
            pass
        self.fh.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:  # pragma: no cover
            pass


def _sweep(folder: str) -> None:
    """Remove the slot files of runs whose process is gone (killed outright)."""
    import re

    try:
        names = os.listdir(folder)
    except OSError:  # pragma: no cover
        return
    for name in names:
        m = re.fullmatch(r"qfk-slots-(\d+)-[0-9a-f]{8}\.tmp", name)
        if m and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class _InSlot:
    """Stands for a payload a worker wrote into its slot (``size`` bytes)."""

    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size

    def __reduce__(self):
        return (_InSlot, (self.size,))


def _submit(pool, task: Callable[[Any, Any], Any], item: Any, slot: tuple | None = None):
    """``pool.submit`` with SIGINT blocked: a worker it starts inherits the blocked signal, so Ctrl-C
    stops the parent alone (which then shuts the pool down) and never a worker half-way."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        return pool.submit(_run, task, item, slot)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(_run, task, item, slot)
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


_MAPS: dict[str, Any] = {}  # the slot files this worker has mapped


def _run(task: Callable[[Any, Any], Any], item: Any, slot: tuple[str, int, int, str] | None = None) -> Any:
    """``task`` on ``item`` in a worker; with a ``slot`` (file, offset, size, payload field), the
    result's payload is written there when it fits."""
    try:
        result = task(_STATE, item)
    except QfkError as exc:
        return _Raised(exc.message, exc.hint)
    if slot is None:
        return result
    path, offset, size, field = slot
    data = getattr(result, field)
    if len(data) > size:
        return result  # too large for a slot: through the pipe
    mm = _MAPS.get(path)
    if mm is None:
        import mmap

        with open(path, "r+b") as fh:
            mm = _MAPS[path] = mmap.mmap(fh.fileno(), 0)
    mm[offset: offset + len(data)] = data
    return result._replace(**{field: _InSlot(len(data))})


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
