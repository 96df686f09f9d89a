"""MinHash signatures of rows, and an LSH index of the rows kept so far: near duplicates inside
one dataset in one pass, in bounded memory (``qfk convert --near-dedup``, ``qfk lint``).

*Shingles.* A row's shingles are its :data:`SHINGLE`-unit n-grams (:func:`~qwen_factory_kit.ngrams.batch_grams`:
words of spaced scripts, characters of Chinese/Japanese/Korean, each a seeded 64-bit hash). Five
units, as BigCode's and text-dedup's MinHash near-deduplication and datatrove's ``MinhashConfig``:
long enough that two unrelated texts share almost none, short enough that an edit moves few of
them (an added word moves at most 5; with 13-grams a 60-word row edited twice falls under 0.8).

*Signature.* :data:`PERMS` (128) minimums, one per hash function h_k(x) = (a_k x + b_k) mod 2**32
over each shingle (its 64 bits mixed down to 32 by murmur3's finaliser), a_k (odd) and b_k drawn
from a fixed seed by splitmix64 in plain Python: the same in every process, run, machine and
numpy version. The share of equal positions of two signatures estimates the Jaccard similarity of
their shingle sets (standard error sqrt(J(1-J)/128): 0.035 at 0.8). A batch is signed at once by
numpy: (128 x 8192)-shingle products, then a minimum per row. Measured against rensa and
datasketch in ``bench/neardup_bench.py``.

*Index* (:class:`Index`). Locality-sensitive hashing with ``b`` bands of ``r`` positions
(:func:`bands`: the largest ``r`` that still makes a pair at the threshold a candidate with
probability >= 98%: 18 bands of 7 at 0.8). A row is a candidate of an earlier kept row when one of
its band hashes is equal; the verdict is the signatures' estimate >= the threshold (the shingles
themselves are not kept: their size has no bound, so the exact Jaccard is not confirmed). Memory
per kept row: ``b`` entries of 8 bytes (the 32-bit band hash and the row's 32-bit id, in sorted
runs per band, merged two by two like a log-structured tree): 144 bytes at 0.8, about 144 MB for
a million rows; the signature and the place of the row (528 bytes) go to a temporary file, read
back only for a candidate. Rows are looked up and kept in order by the caller, so the earlier
kept row is the one a near duplicate is named after, whatever process made the signatures.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from .errors import QfkError
from .ngrams import batch_grams

#: hash functions of a signature
PERMS = 128
#: units a shingle spans (words, or CJK characters)
SHINGLE = 5
#: the default threshold of ``--near-dedup``: the Jaccard similarity of SlimOrca's MinHash deduplication
DEFAULT_THRESHOLD = 0.8
#: the least probability that LSH makes a pair at the threshold a candidate (:func:`bands`)
FIND = 0.98
#: shingles signed in one numpy pass ((PERMS, CHUNK) uint32: 4 MiB)
CHUNK = 8192
#: kept rows taken from one band of one run for a row (an over-full bucket: boilerplate)
BUCKET = 16
#: candidates whose signatures are compared with a row's, at most (the most bands shared first)
CANDIDATES = 64

_M64 = (1 << 64) - 1
_EMPTY = np.uint32(0xFFFFFFFF)
#: what the temporary file holds per kept row: its signature and its place (two numbers of the caller's)
RECORD = np.dtype([("sig", "<u4", (PERMS,)), ("place", "<i8", (2,))])


def _splitmix64(seed: int, count: int) -> list[int]:
    out = []
    for _ in range(count):
        seed = (seed + 0x9E3779B97F4A7C15) & _M64
        z = ((seed ^ (seed >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out.append(z ^ (z >> 31))
    return out


_DRAWS = _splitmix64(0x71666B2D6E656172, 3 * PERMS)  # "qfk-near"
_MUL = np.array([(d & 0xFFFFFFFF) | 1 for d in _DRAWS[:PERMS]], dtype=np.uint32)[:, None]
_ADD = np.array([d & 0xFFFFFFFF for d in _DRAWS[PERMS: 2 * PERMS]], dtype=np.uint32)[:, None]
_BAND_SEEDS = np.array(_DRAWS[2 * PERMS:], dtype=np.uint64)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def check_threshold(value) -> float:
    """``value`` as a Jaccard similarity in (0, 1], or a :class:`QfkError` saying what to type."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if isinstance(value, bool) or not 0 < t <= 1:
        raise QfkError(f"--near-dedup takes a Jaccard similarity above 0 and at most 1, not {value!r}",
                       f"--near-dedup alone means {DEFAULT_THRESHOLD}, or give a share after it: --near-dedup 0.9; "
                       "right before SOURCE write --near-dedup=0.8 (or put SOURCE first)")
    return t


def bands(threshold: float) -> tuple[int, int]:
    """``(b, r)``: LSH bands of ``r`` signature positions for ``threshold``, the largest ``r`` (the
    fewest false candidates) with which a pair at ``threshold`` shares a band with probability >= :data:`FIND`."""
    best = (PERMS, 1)
    for r in range(1, PERMS + 1):
        b = PERMS // r
        if 1 - (1 - threshold ** r) ** b >= FIND:
            best = (b, r)
    return best


def _mix(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser, the high 32 bits."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(33))
        x *= np.uint64(0xFF51AFD7ED558CCD)
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xC4CEB9FE1A85EC53)
        x ^= x >> np.uint64(33)
    return (x >> np.uint64(32)).astype(np.uint32)


class Signed(NamedTuple):
    """The signatures of a batch's rows: ``sig`` (rows, :data:`PERMS`) uint32; ``empty``: the rows
    without any unit (never a near duplicate, never indexed)."""

    sig: np.ndarray
    empty: np.ndarray


def sign(texts: Sequence[str], rows_of: Sequence[int] | None = None, rows: int | None = None) -> Signed:
    """The signatures of ``rows`` rows whose texts are ``texts``; text ``i`` belongs to row
    ``rows_of[i]`` (None: one text a row). A row's shingles are those of all its texts."""
    rows = len(texts) if rows is None else rows
    g, o = batch_grams(list(texts), SHINGLE, distinct=False)  # repeats do not change a minimum
    if rows_of is not None and len(o):
        o = np.asarray(rows_of, dtype=np.int64)[o]
    order = np.argsort(o, kind="stable")  # text order, short texts' grams last: two sorted runs
    return minimums(g[order], o[order], rows)


def minimums(grams: np.ndarray, owners: np.ndarray, rows: int) -> Signed:
    """The signatures of ``rows`` rows from their shingle hashes ``grams`` (``owners``: the row of
    each, nondecreasing), :data:`CHUNK` shingles at a time (a row may span chunks)."""
    out = np.full((PERMS, rows), _EMPTY, dtype=np.uint32)
    empty = np.bincount(owners, minlength=rows)[:rows] == 0 if len(owners) else np.ones(rows, dtype=bool)
    if len(grams):
        x = _mix(grams)
        firsts = np.flatnonzero(np.concatenate(([True], owners[1:] != owners[:-1])))
        ids = owners[firsts]
        buf = np.empty((PERMS, min(CHUNK, len(x))), dtype=np.uint32)
        for a in range(0, len(x), CHUNK):
            b = min(a + CHUNK, len(x))
            lo, hi = np.searchsorted(firsts, a, "right") - 1, np.searchsorted(firsts, b, "left")
            starts = firsts[lo:hi] - a
            starts[0] = 0  # a row begun in the previous chunk
            v = buf[:, : b - a]
            np.multiply(_MUL, x[None, a:b], out=v)
            np.add(v, _ADD, out=v)
            cols = ids[lo:hi]
            out[:, cols] = np.minimum(out[:, cols], np.minimum.reduceat(v, starts, axis=1))
    return Signed(np.ascontiguousarray(out.T), empty)


def band_keys(sig: np.ndarray, b: int, r: int) -> np.ndarray:
    """(b, rows) uint32: the hash of each band of ``r`` positions of each signature."""
    rows = len(sig)
    v = sig[:, : b * r].reshape(rows, b, r).astype(np.uint64)
    h = np.repeat(_BAND_SEEDS[None, :b], rows, axis=0)
    with np.errstate(over="ignore"):
        for j in range(r):
            h ^= v[:, :, j]
            h *= _GOLDEN
            h ^= h >> np.uint64(29)
    return np.ascontiguousarray(_mix(h).T)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The Jaccard similarity two signatures estimate: the share of equal positions."""
    return int(np.count_nonzero(a == b)) / PERMS


class Match(NamedTuple):
    """The kept row a row nearly duplicates: its id (in keeping order), its place, the similarity."""

    id: int
    place: tuple[int, int]
    similarity: float


class Index:
    """The rows kept so far (see the module docstring). Per batch, in the rows' order:
    :meth:`begin` (its signatures), then for each row :meth:`match` and, when the caller keeps
    it, :meth:`keep`; :meth:`end` adds the rows kept to the runs. ``folder``: where the temporary
    file of signatures goes (the system's default when None)."""

    def __init__(self, threshold: float, folder: Path | None = None):
        self.threshold = check_threshold(threshold)
        self.b, self.r = bands(self.threshold)
        self.folder = folder
        self.runs: list[list[np.ndarray]] = []  # per run, per band: sorted (hash << 32 | id)
        self.kept = 0  # ids given
        self.stored = 0  # ids whose records are in the file
        self.fh = None
        self._batch: Signed | None = None

    # -- a batch ---------------------------------------------------------------------------
    def begin(self, signed: Signed) -> None:
        """Start a batch: its rows' candidates among the kept rows of earlier batches, and the pairs
        of its own rows that share a band."""
        self._batch = signed
        self._empty = signed.empty.tolist()
        self._keys = band_keys(signed.sig, self.b, self.r) if len(signed.sig) else np.zeros((self.b, 0), np.uint32)
        self._local: dict[int, int] = {}  # batch row -> id, for the rows kept in this batch
        self._new: list[tuple[int, tuple[int, int]]] = []  # (batch row, place) of each, in order
        live = np.flatnonzero(~signed.empty)
        self._found = self._lookup(live)
        self._inner = self._pairs(live)

    def match(self, j: int) -> Match | None:
        """The earlier kept row that batch row ``j`` nearly duplicates (the most similar; the
        earliest of equals), or None."""
        found, inner = self._found.get(j), self._inner.get(j)
        if found is None and inner is None:  # most rows: no band shared (a row without units has none)
            return None
        shared = dict(found or {})
        for k, n in (inner or {}).items():
            kid = self._local.get(k)
            if kid is not None:
                shared[kid] = shared.get(kid, 0) + n
        best: Match | None = None
        for kid, _ in sorted(shared.items(), key=lambda kv: (-kv[1], kv[0]))[:CANDIDATES]:
            sig, place = self._record(kid)
            sim = similarity(sig, self._batch.sig[j])
            if sim >= self.threshold and (best is None or (sim, -kid) > (best.similarity, -best.id)):
                best = Match(kid, place, sim)
        return best

    def keep(self, j: int, place: tuple[int, int]) -> None:
        """Batch row ``j`` is kept: later rows are compared with it (a row without units is not indexed)."""
        if not self._empty[j]:
            self._local[j] = self.kept
            self._new.append((j, place))
            self.kept += 1

    def end(self) -> None:
        """Store the records of the rows kept in the batch, and add them to the runs."""
        if self._batch is None:
            return
        if self._new:
            rows = np.array([j for j, _ in self._new], dtype=np.int64)
            rec = np.zeros(len(rows), dtype=RECORD)
            rec["sig"] = self._batch.sig[rows]
            rec["place"] = [p for _, p in self._new]
            self._file().write(rec.tobytes())
            self.fh.flush()
            ids = np.arange(self.stored, self.kept, dtype=np.uint64)
            keys = self._keys[:, rows].astype(np.uint64) << np.uint64(32)
            self.runs.append([np.sort(keys[band] | ids) for band in range(self.b)])
            self.stored = self.kept
            self._merge()
        self._batch = None

    # -- lookups -----------------------------------------------------------------------------
    def _lookup(self, live: np.ndarray) -> dict[int, dict[int, int]]:
        """{batch row: {kept id: bands shared}} against the runs (at most :data:`BUCKET` ids per band and run)."""
        if not self.runs or not len(live):
            return {}
        qrows, qids = [], []
        for band in range(self.b):
            q = self._keys[band, live].astype(np.uint64)
            order = np.argsort(q)  # sorted queries: searchsorted walks each run once
            q, live_q = q[order], live[order]
            lo_key = q << np.uint64(32)
            for run in self.runs:
                arr = run[band]
                lo = np.searchsorted(arr, lo_key)
                inside = lo < len(arr)
                hit = np.zeros(len(q), dtype=bool)
                hit[inside] = (arr[lo[inside]] >> np.uint64(32)) == q[inside]
                for i in np.flatnonzero(hit):  # rare: a shared band
                    end = min(int(np.searchsorted(arr, lo_key[i] | np.uint64(0xFFFFFFFF), "right")), int(lo[i]) + BUCKET)
                    found = (arr[lo[i]:end] & np.uint64(0xFFFFFFFF)).astype(np.int64)
                    qrows.append(np.full(len(found), live_q[i], dtype=np.int64))
                    qids.append(found)
        if not qrows:
            return {}
        pairs, counts = np.unique(np.concatenate(qrows) << 32 | np.concatenate(qids), return_counts=True)
        out: dict[int, dict[int, int]] = {}
        for pair, n in zip(pairs.tolist(), counts.tolist()):
            out.setdefault(pair >> 32, {})[pair & 0xFFFFFFFF] = n
        return out

    def _pairs(self, live: np.ndarray) -> dict[int, dict[int, int]]:
        """{batch row: {earlier batch row: bands shared}} (at most :data:`BUCKET` earlier rows per band)."""
        out: dict[int, dict[int, int]] = {}
        if len(live) < 2:
            return out
        for band in range(self.b):
            q = self._keys[band, live]
            order = np.argsort(q, kind="stable")
            sq = q[order]
            same = sq[1:] == sq[:-1]
            if not same.any():
                continue
            starts = np.flatnonzero(np.concatenate(([True], ~same)))
            lengths = np.diff(np.append(starts, len(sq)))
            for s, n in zip(starts[lengths > 1].tolist(), lengths[lengths > 1].tolist()):
                members = live[order[s: s + n]].tolist()  # in source order (a stable sort)
                for at in range(1, n):
                    row = out.setdefault(members[at], {})
                    for k in members[: min(at, BUCKET)]:
                        row[k] = row.get(k, 0) + 1
        return out

    def _record(self, kid: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The signature and place of kept row ``kid``."""
        if kid >= self.stored:
            j, place = self._new[kid - self.stored]
            return self._batch.sig[j], place
        data = os.pread(self.fh.fileno(), RECORD.itemsize, kid * RECORD.itemsize)
        rec = np.frombuffer(data, dtype=RECORD)[0]
        return rec["sig"], (int(rec["place"][0]), int(rec["place"][1]))

    def _file(self):
        if self.fh is None:
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
            self.fh = tempfile.TemporaryFile(dir=self.folder, prefix=".qfk-neardup-")
        return self.fh

    def _merge(self) -> None:
        """Merge the last two runs while the older is at most twice the newer, a band at a time (two
        sorted runs: one merge pass of timsort), freeing each old band once merged."""
        while len(self.runs) >= 2 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            older, newer = self.runs[-2], self.runs[-1]
            merged = []
            for band in range(self.b):
                merged.append(np.sort(np.concatenate((older[band], newer[band])), kind="stable"))
                older[band] = newer[band] = None
            self.runs[-2:] = [merged]

    # -- size and end ---------------------------------------------------------------------------
    def nbytes(self) -> int:
        """Bytes the runs hold in memory."""
        return sum(a.nbytes for run in self.runs for a in run)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
