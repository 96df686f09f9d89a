"""Atomic writes: a temporary file in the target folder, fsync, then ``os.replace``.

An interrupted run leaves the previous file intact and no partial file behind. A process killed
outright (SIGKILL, power loss) cannot remove its temporary file ``.NAME.PID.tmp``: the next run
that writes into the folder removes those of processes that no longer exist
(:func:`sweep_stale_temps`). A full disk (or file size limit) is a :class:`QfkError` naming the
file, with the temporary file removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

from ..errors import QfkError

#: the temporary file of an atomic write of NAME by process PID: ``.NAME.PID.tmp`` next to NAME
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[1-9][0-9]{0,9})\.tmp$")

#: write errors that mean "the file system is full" (or this file may not grow), and their words
DISK_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free some space there, or write elsewhere (-o / --data-dir)"),
    errno.EDQUOT: ("disk quota exceeded", "free some space within your quota, or write elsewhere (-o / --data-dir)"),
    errno.EFBIG: ("file too large (over the file system's or the process's file size limit)",
                  "raise the limit (ulimit -f), or write to a file system that allows larger files"),
}


def temp_path(path: Path, pid: int | None = None) -> Path:
    """Where an atomic write of ``path`` by process ``pid`` (default: this one) stages its bytes."""
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts; so does another user's process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # it exists but is not ours, or we cannot tell: keep its files
    return True


def sweep_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (``.NAME.PID.tmp``) that atomic writes of processes that no
    longer exist left in ``folder``; return them. Files of a live process, and files of any other
    name, are never touched. Does nothing off POSIX (where ``os.kill`` cannot probe a process)."""
    if os.name != "posix":
        return []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        found = TEMP_RE.match(entry.name)
        if found is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(found["pid"])
        if pid == os.getpid() or process_exists(pid):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:  # another run swept it first
            continue
        removed.append(Path(entry.path))
    return removed


def disk_error(exc: OSError, path: Path) -> QfkError | None:
    """The user's error for a write to ``path`` that failed because the disk is full (or the file
    may not grow), else None."""
    words = DISK_ERRORS.get(exc.errno)
    if words is None:
        return None
    what, hint = words
    return QfkError(f"cannot write {path}: {what}; nothing was written there (a previous {path.name} is unchanged)",
                    f"{hint}, then run the command again")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A binary file that appears at ``path`` only on :meth:`commit`; keeps a running sha256."""

    def __init__(self, path: str | os.PathLike, *, buffering: int = 1 << 20):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        try:
            self._fh = open(self.tmp, "wb", buffering=buffering)
        except OSError as exc:
            raise disk_error(exc, self.path) or exc from None
        self._sha = hashlib.sha256()
        self.bytes = 0
        self.done = False

    def write(self, data: bytes) -> None:
        try:
            self._fh.write(data)
        except OSError as exc:
            raise self._failed(exc) from None
        self._sha.update(data)
        self.bytes += len(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def commit(self) -> Path:
        if self.done:
            return self.path
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise self._failed(exc) from None
        _fsync_dir(self.path.parent)
        self.done = True
        return self.path

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self._fh.close()
        except OSError:  # the buffered tail cannot be flushed (a full disk): the file goes anyway
            pass
        finally:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass

    def _failed(self, exc: OSError) -> BaseException:
        """Abort after a failed write; the error to raise (a :class:`QfkError` for a full disk)."""
        self.abort()
        return disk_error(exc, self.path) or exc

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; return its sha256."""
    with AtomicFile(path) as fh:
        fh.write(data)
    return fh.sha256


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in large chunks (hashlib releases the GIL on them)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
    return sha.hexdigest()
