"""``--dedup`` in bounded memory: the 16-byte digests of the rows written so far.

The latest digests are kept in a set (:data:`RECENT` of them at most); when it is full they are
sorted into a *run*, a temporary file of 16-byte digests next to the output, described in memory
by a Bloom filter (2 bytes a digest) and a sparse index (the first digest of each 4 KiB block).
A digest is looked up in the set, then in each run whose Bloom filter may hold it, by reading the
one block the index points to. Memory grows by the Bloom filters alone (about 10 MB for 5 million
rows) instead of about 100 bytes a row; the verdicts are those of one exact set of digests.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: digests kept in memory before they are sorted into a run on disk
RECENT = 1 << 18
DIGEST = 16
BLOCK = 256  # digests a block (4 KiB)
BLOOM_BITS = 16  # bits a digest
BLOOM_HASHES = 11


class Seen:
    """The digests of the rows kept so far; :meth:`on_disk` looks a batch's digests up in the runs,
    ``in``/:meth:`add` keep the in-memory part exact row by row, :meth:`settle` spills it when full."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.recent: set[bytes] = set()
        self.runs: list[_Run] = []

    def __contains__(self, digest: bytes) -> bool:
        return digest in self.recent

    def add(self, digest: bytes) -> None:
        self.recent.add(digest)

    def on_disk(self, digests: list[bytes]) -> list[bool]:
        """Whether each digest is in a run (rows kept before the in-memory set was last spilled)."""
        if not self.runs or not digests:
            return [False] * len(digests)
        import numpy as np

        queries = np.frombuffer(b"".join(digests), dtype=f"S{DIGEST}")
        found = np.zeros(len(digests), dtype=bool)
        halves = np.frombuffer(queries.tobytes(), dtype="<u8").reshape(-1, 2)
        for run in self.runs:
            maybe = ~found & run.bloom_has(halves)
            for i in np.flatnonzero(maybe):
                found[i] = run.holds(queries[i])
        return found.tolist()

    def settle(self) -> None:
        """Spill the in-memory digests into a run once there are :data:`RECENT` of them."""
        if len(self.recent) >= RECENT:
            self.runs.append(_Run(self.recent, self.folder))
            self.recent = set()

    def close(self) -> None:
        for run in self.runs:
            run.close()
        self.runs = []


class _Run:
    """Sorted digests in an anonymous temporary file, with their Bloom filter and sparse index."""

    def __init__(self, digests: set[bytes], folder: Path):
        import numpy as np

        keys = np.sort(np.frombuffer(b"".join(digests), dtype=f"S{DIGEST}"))  # numpy's order, as searchsorted's
        folder.mkdir(parents=True, exist_ok=True)
        self.fh = tempfile.TemporaryFile(dir=folder, prefix=".qfk-dedup-")
        self.fh.write(keys.tobytes())
        self.fh.flush()
        self.index = keys[::BLOCK].copy()
        self.bits = max(64, len(keys) * BLOOM_BITS)
        self.bloom = np.zeros((self.bits + 7) // 8, dtype=np.uint8)
        halves = np.frombuffer(keys.tobytes(), dtype="<u8").reshape(-1, 2)
        for start in range(0, len(halves), 1 << 16):  # a chunk at a time: the positions are 88 bytes a digest
            positions = self._positions(halves[start:start + (1 << 16)])
            np.bitwise_or.at(self.bloom, positions >> 3, (1 << (positions & 7)).astype(np.uint8))

    def _positions(self, halves):
        import numpy as np

        h1, h2 = halves[:, 0:1], halves[:, 1:2] | np.uint64(1)
        steps = np.arange(BLOOM_HASHES, dtype=np.uint64)
        return (h1 + steps * h2) % np.uint64(self.bits)  # wraps modulo 2**64, as intended

    def bloom_has(self, halves):
        import numpy as np

        positions = self._positions(halves)
        bits = (self.bloom[positions >> 3] >> (positions & 7).astype(np.uint8)) & 1
        return bits.all(axis=1)

    def holds(self, digest) -> bool:
        import numpy as np

        block = int(np.searchsorted(self.index, digest, side="right")) - 1
        if block < 0:
            return False
        data = os.pread(self.fh.fileno(), BLOCK * DIGEST, block * BLOCK * DIGEST)
        keys = np.frombuffer(data, dtype=f"S{DIGEST}")
        i = int(np.searchsorted(keys, digest))
        return i < len(keys) and keys[i] == digest

    def close(self) -> None:
        self.fh.close()
