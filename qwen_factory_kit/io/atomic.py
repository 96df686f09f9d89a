"""Atomic writes: a temporary file in the target folder, fsync, then ``os.replace``.

An interrupted run leaves the previous file intact and no partial file behind.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._fh = open(self.tmp, "wb", buffering=buffering)
        self._sha = hashlib.sha256()
        self.bytes = 0
        self.done = False

    def write(self, data: bytes) -> None:
        self._fh.write(data)
        self._sha.update(data)
        self.bytes += len(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def commit(self) -> Path:
        if self.done:
            return self.path
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        self.done = True
        return self.path

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self._fh.close()
        finally:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass

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
