"""The n-grams of a text, for near-duplicate checks (``qfk lint --against``, ``qfk datasets
decontaminate``, ``qfk convert --near-dedup``): one definition of what two texts share.

A text is normalised (Unicode NFKC, lower case) and cut into *units*: a run of letters and digits
for space-separated scripts (a word), one character for the scripts written without spaces (Han,
kana, Hangul, Thai...), so Chinese and Japanese text is compared by characters, English by words
(whitespace splitting finds no words in Chinese). Punctuation, symbols and spaces are dropped:
a changed question mark or a line break moves no unit.

:func:`batch_grams` gives the distinct n-grams of many texts at once as 64-bit hashes that are the
same in every process and on every machine (a polynomial hash of each unit's code points, the
units combined by another), so a MinHash signature or an index built in a worker matches one built
elsewhere. It works on arrays of code points (numpy), not on Python strings: about 20x faster than
a regular expression's word list on English text, which is what lets a 100,000-row training set be
checked in seconds. A text shorter than
n units gives one gram, the hash of all its units: two short texts match only when their units
are equal.

Defaults, from the published decontamination methods: n = 8 units (open-r1's ``decontaminate.py``
uses word 8-grams; the lm-eval-harness janitor and marin use 13-grams), a row near-duplicating
another when at least half of the n-grams of the shorter one are shared (marin flags a paragraph
at >= 50% of its 13-grams), and either :data:`MIN_SHARED` grams or half of the longer one's.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import NamedTuple

import numpy as np

#: units an n-gram spans, by default (open-r1's word 8-grams)
NGRAM = 8
#: the share of the shorter row's n-grams that makes two rows near duplicates (marin: >= 50%)
THRESHOLD = 0.5
#: grams two rows of very different lengths must share to be near duplicates (a passage of at least
#: NGRAM + 9 units): a short text inside a long one (a title in a sentence that names it) is not a
#: copy of it, an eval question inside a long training conversation is
MIN_SHARED = 10

#: code point ranges of the scripts written without spaces (one character is one unit)
UNSPACED = ((0x0E00, 0x0EFF),    # Thai, Lao
            (0x1100, 0x11FF),    # Hangul jamo
            (0x3040, 0x30FF), (0x31F0, 0x31FF),  # hiragana, katakana
            (0x3100, 0x312F),    # bopomofo
            (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),  # Han
            (0xAC00, 0xD7AF),    # Hangul syllables
            (0x20000, 0x3134F))  # Han extensions B to G
_SEP, _WORD, _CHAR = 0, 1, 2
_U64 = np.uint64
_B1 = _U64(0x100000001B3)        # the code points of a unit
_B2 = _U64(0x9E3779B97F4A7C15)   # the units of a gram


@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(class, lower-case code point) of each BMP code point."""
    kind = np.zeros(0x10000, dtype=np.uint8)
    lower = np.arange(0x10000, dtype=np.uint32)
    for cp in range(0x10000):
        ch = chr(cp)
        if ch.isalnum() or unicodedata.category(ch).startswith("M"):
            kind[cp] = _WORD
            low = ch.lower()
            if len(low) == 1:
                lower[cp] = ord(low)
    for lo, hi in UNSPACED:
        if hi < 0x10000:
            kind[lo: hi + 1] = _CHAR
    return kind, lower


class Units(NamedTuple):
    """The units of a text: their hashes, and where each starts and ends in the normalised text."""

    text: str
    hashes: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def normalise(text: str) -> str:
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)


def units(text: str, *, normalised: bool = False) -> Units:
    """The units of ``text`` (NFKC): words of spaced scripts, characters of the others."""
    text = text if normalised else normalise(text)
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    kind_table, lower_table = _tables()
    if not len(cps) or cps.max() < 0x10000:
        kind, cps = kind_table[cps], lower_table[cps].astype(_U64)
    else:
        bmp = cps < 0x10000
        idx = np.where(bmp, cps, 0)
        kind = np.where(bmp, kind_table[idx], _SEP)
        for lo, hi in UNSPACED:
            kind[~bmp & (cps >= lo) & (cps <= hi)] = _CHAR
        cps = np.where(bmp, lower_table[idx], cps).astype(_U64)
    word = kind == _WORD
    # a unit starts at a CJK character, or at a word character after a non-word one
    prev_word = np.concatenate(([False], word[:-1]))
    starts = np.flatnonzero((kind == _CHAR) | (word & ~prev_word))
    next_word = np.concatenate((word[1:], [False]))
    ends = np.flatnonzero((kind == _CHAR) | (word & ~next_word)) + 1
    if not len(starts):
        empty = np.zeros(0, dtype=np.int64)
        return Units(text, np.zeros(0, dtype=_U64), empty, empty)
    # a polynomial hash of each unit's code points, from prefix sums (wrapping arithmetic mod 2**64)
    with np.errstate(over="ignore"):
        powers = _powers(len(cps))[: len(cps)]
        prefix = np.concatenate(([_U64(0)], np.cumsum((cps + _U64(1)) * powers, dtype=_U64)))
        span = prefix[ends] - prefix[starts]
        # divide by powers[start]: multiply by the inverse of _B1 ** (start + 1) mod 2**64
        hashes = span * _powers(len(cps), inverse=True)[starts] + (ends - starts).astype(_U64)
    return Units(text, hashes, starts, ends)


@lru_cache(maxsize=4)
def _powers_of(size: int, inverse: bool) -> np.ndarray:
    base = _U64(pow(int(_B1), -1, 1 << 64)) if inverse else _B1
    with np.errstate(over="ignore"):
        return np.cumprod(np.full(size, base, dtype=_U64))


def _powers(length: int, *, inverse: bool = False) -> np.ndarray:
    """``_B1 ** (i + 1)`` (or its inverse mod 2**64) for i < at least ``length``: a few sizes, cached."""
    return _powers_of(1 << max(12, (length - 1).bit_length()), inverse)


def gram_array(hashes: np.ndarray, n: int = NGRAM) -> np.ndarray:
    """The hash of each n-gram of units ``hashes`` in order (position i: units i..i+n-1); one gram
    for fewer than n units (none for no unit)."""
    count = len(hashes)
    if not count:
        return np.zeros(0, dtype=_U64)
    n = min(n, count)
    with np.errstate(over="ignore"):
        out = hashes[: count - n + 1].copy()
        for k in range(1, n):
            out = out * _B2 + hashes[k: count - n + 1 + k]
        out ^= _U64(n) * _B2  # a short text's gram never equals an n-gram of the same first units
    return out


def gram_hashes(text: str, n: int = NGRAM) -> np.ndarray:
    """The distinct n-gram hashes of ``text`` (sorted)."""
    return np.unique(gram_array(units(text).hashes, n))


def batch_grams(texts: list[str], n: int = NGRAM, *, distinct: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The n-grams of each of ``texts``, at once: ``(grams, owners)`` (``owners``: the index of the
    text of each gram), in a few numpy passes over the joined texts instead of a few per text.
    ``distinct``: each text's grams once, sorted by owner then gram (:func:`gram_hashes` of each
    text); else in text order, repeats kept (cheaper, for a lookup that only keeps what it finds)."""
    if not texts:
        return np.zeros(0, dtype=_U64), np.zeros(0, dtype=np.int64)
    parts = [normalise(t) for t in texts]
    offsets = np.cumsum([0] + [len(t) + 1 for t in parts[:-1]])
    u = units("\x00".join(parts), normalised=True)
    owner = np.searchsorted(offsets, u.starts, side="right") - 1
    counts = np.bincount(owner, minlength=len(texts))
    grams, owners = [], []
    if len(u.hashes) >= n:
        full = gram_array(u.hashes, n)
        within = owner[: len(full)] == owner[n - 1:]  # no gram across two texts
        grams.append(full[within])
        owners.append(owner[: len(full)][within])
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    for row in np.flatnonzero((counts > 0) & (counts < n)):  # short texts: one gram of all their units
        grams.append(gram_array(u.hashes[first[row]: first[row] + counts[row]], n))
        owners.append(np.array([row], dtype=np.int64))
    if not grams:
        return np.zeros(0, dtype=_U64), np.zeros(0, dtype=np.int64)
    g, o = np.concatenate(grams), np.concatenate(owners)
    return distinct_pairs(g, o) if distinct else (g, o)


def distinct_pairs(g: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each (owner, gram) pair once, sorted by owner then gram."""
    order = np.lexsort((g, o))
    g, o = g[order], o[order]
    keep = np.ones(len(g), dtype=bool)
    keep[1:] = (g[1:] != g[:-1]) | (o[1:] != o[:-1])
    return g[keep], o[keep]


def shared_span(text: str, known: np.ndarray, n: int = NGRAM) -> str:
    """The longest run of ``text`` made of n-grams in ``known`` (sorted hashes), as it is written
    (NFKC), for a finding's example; empty when none is."""
    u = units(text)
    grams = gram_array(u.hashes, n)
    if not len(grams):
        return ""
    hit = np.isin(grams, known)
    best, best_len, run_start = None, 0, None
    for i, h in enumerate(np.append(hit, False)):
        if h and run_start is None:
            run_start = i
        elif not h and run_start is not None:
            if i - run_start > best_len:
                best, best_len = run_start, i - run_start
            run_start = None
    if best is None:
        return ""
    last_unit = min(best + best_len - 1 + min(n, len(u.hashes)) - 1, len(u.ends) - 1)
    return u.text[u.starts[best]: u.ends[last_unit]]
