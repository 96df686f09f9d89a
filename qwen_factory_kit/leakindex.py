"""What one side of a leak check holds, and which rows of the other side leak into it.

:class:`LeakIndex` is built from one side's rows (the smaller side of ``qfk lint A --against B``;
the eval sets of ``qfk datasets decontaminate``) and holds, per distinct row (*doc*: rows with the
same exact key are one doc):

* the exact key (:func:`qwen_factory_kit.leaks.row_key`);
* its n-grams (:mod:`qwen_factory_kit.ngrams`), in two sorted arrays (gram, doc), without the
  *common* grams, those of more than :func:`common_limit` docs (a shared instruction, a greeting:
  boilerplate that would make every row look like every other); a doc's *size* is its count of
  distinct grams that are not common;
* for translation rows, the digests of the source and target sentences.

:meth:`LeakIndex.lookup` takes a batch of the other side's rows and gives each its verdict, the
first that holds of:

``leak``      the same prompt and answer (the exact key);
``reversed``  a translation row whose source and target are a doc's target and source;
``near``      at least ``threshold`` of the grams of the shorter of the two rows are shared
              (the *similarity*), and either :data:`~.ngrams.MIN_SHARED` grams or ``threshold`` of
              the longer row's (a title inside a long sentence is not a copy of it); the doc with
              the highest similarity is named;
``source``    a translation row whose source sentence is a doc's source or target, or whose source
              or target is a doc's source (the eval source was seen in training).

The docs each row matched are marked in the same order of precedence, so both sides are counted
from one pass over the larger side. Memory grows with the indexed side only: about 16 bytes a gram
plus the keys; the other side is read in batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

import numpy as np

from .ngrams import MIN_SHARED, NGRAM, THRESHOLD, batch_grams, shared_span

#: verdicts, in order of precedence
KINDS = ("leak", "reversed", "near", "source")
#: examples kept of each kind
EXAMPLES = 5
#: the low bits of a gram that index the table of the grams held (8 MiB; a few % false hits)
_MASK = np.uint64((1 << 23) - 1)


class RowText(NamedTuple):
    """What a leak check compares of one row."""

    number: int                            # its row (line) number
    key: bytes                             # the exact key (normalised prompt and answer)
    text: str                              # what its n-grams are taken from
    pair: tuple[bytes, bytes] | None = None  # digests of (source, target) of a translation row


class Verdict(NamedTuple):
    kind: str                  # one of KINDS
    docs: tuple[int, ...]      # the docs it matched (near: the most similar)
    similarity: float = 1.0


def common_limit(docs: int) -> int:
    """A gram in more docs than this is boilerplate, not evidence: 1% of the docs, at least 10."""
    return max(10, docs // 100)


@dataclass
class LeakIndex:
    ngram: int = NGRAM
    threshold: float = THRESHOLD
    docs: list[list[int]] = field(default_factory=list)      # row numbers of each doc
    texts: list[str] = field(default_factory=list)
    keys: dict[bytes, int] = field(default_factory=dict)      # exact key -> doc
    pairs: dict[bytes, list[int]] = field(default_factory=dict)    # digest(source, target) -> docs
    sources: dict[bytes, list[int]] = field(default_factory=dict)  # digest(source) -> docs
    sentences: set = field(default_factory=set)               # every source and target digest
    marks: dict[str, set] = field(default_factory=lambda: {k: set() for k in KINDS})
    examples: dict[str, list[dict]] = field(default_factory=lambda: {k: [] for k in KINDS})

    @classmethod
    def build(cls, rows: Iterable[RowText], ngram: int = NGRAM, threshold: float = THRESHOLD) -> "LeakIndex":
        index = cls(ngram, threshold)
        for row in rows:
            index._add(row)
        index._grams()
        return index

    def _add(self, row: RowText) -> None:
        doc = self.keys.get(row.key)
        if doc is not None:
            self.docs[doc].append(row.number)
            return
        doc = self.keys[row.key] = len(self.docs)
        self.docs.append([row.number])
        self.texts.append(row.text)
        if row.pair is not None:
            source, target = row.pair
            self.pairs.setdefault(_pair(source, target), []).append(doc)
            self.sources.setdefault(source, []).append(doc)
            self.sentences.update(row.pair)

    def _grams(self) -> None:
        grams, owners = [], []
        for start in range(0, len(self.texts), 512):
            g, o = batch_grams(self.texts[start: start + 512], self.ngram)
            grams.append(g)
            owners.append(o + start)
        g = np.concatenate(grams) if grams else np.zeros(0, dtype=np.uint64)
        o = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
        order = np.argsort(g, kind="stable")
        g, o = g[order], o[order]
        uniq, first, counts = np.unique(g, return_index=True, return_counts=True)
        common = counts > common_limit(len(self.docs))
        self.common = uniq[common]
        keep = ~np.repeat(common, counts)
        self.gram_docs = o[keep]
        self.uniq, self.counts = uniq[~common], counts[~common]
        self.first = np.concatenate(([0], np.cumsum(self.counts)[:-1])).astype(np.int64)
        self.sizes = np.bincount(self.gram_docs, minlength=len(self.docs))
        self._table()
        self.texts = self.texts if len(self.texts) <= 100_000 else []  # spans of examples need them; bounded

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "bits"}  # rebuilt where it lands

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "uniq" in state:
            self._table()

    def _table(self) -> None:
        self.bits = np.zeros(int(_MASK) + 1, dtype=bool)
        self.bits[(self.uniq & _MASK).astype(np.intp)] = True

    # ----------------------------------------------------------------------------------------
    def lookup(self, rows: list[RowText]) -> list[Verdict | None]:
        """The verdict of each of ``rows`` (None: no leak). Pure: it can run in a worker process;
        :meth:`record` counts a verdict on this side."""
        out: list[Verdict | None] = [None] * len(rows)
        near = self._near(rows)
        for i, row in enumerate(rows):
            doc = self.keys.get(row.key)
            if doc is not None:
                out[i] = Verdict("leak", (doc,))
                continue
            if row.pair is not None:
                rev = self.pairs.get(_pair(row.pair[1], row.pair[0]))
                if rev:
                    out[i] = Verdict("reversed", tuple(rev))
                    continue
            if i in near:
                doc, sim = near[i]
                out[i] = Verdict("near", (doc,), sim)
                continue
            if row.pair is not None:
                source, target = row.pair
                docs = self.sources.get(source, []) + self.sources.get(target, [])
                if docs or source in self.sentences:
                    out[i] = Verdict("source", tuple(docs))
        return out

    def record(self, number: int, text: str, verdict: Verdict) -> None:
        """Mark the docs ``verdict`` (of the other side's row ``number``, ``text``) matched; keep it
        as an example while there are fewer than :data:`EXAMPLES` of its kind."""
        self.marks[verdict.kind].update(verdict.docs)
        examples = self.examples[verdict.kind]
        if len(examples) < EXAMPLES:
            doc = verdict.docs[0] if verdict.docs else None
            example = {"row": number, "other_row": self.docs[doc][0] if doc is not None else None}
            if verdict.kind == "near":
                example["similarity"] = round(verdict.similarity, 3)
                example["span"] = self.span(text, doc)
            examples.append(example)

    def rows_of(self, verdict: Verdict) -> list[int]:
        """This side's row numbers ``verdict`` matched."""
        return sorted(n for d in verdict.docs for n in self.docs[d])

    def _near(self, rows: list[RowText]) -> dict[int, tuple[int, float]]:
        """{row index: (best doc, similarity)} of the rows with a near duplicate here."""
        if not rows or not len(self.uniq):
            return {}
        g, o = batch_grams([r.text for r in rows], self.ngram, distinct=False)
        positions = np.bincount(o, minlength=len(rows))  # at least each row's distinct grams
        maybe = self.bits[(g & _MASK).astype(np.intp)]  # most grams are in no doc: one lookup in a table
        g, o = g[maybe], o[maybe]
        pos = np.searchsorted(self.uniq, g)
        pos[pos >= len(self.uniq)] = 0
        hit = self.uniq[pos] == g
        if not hit.any():
            return {}
        o, pos = o[hit], pos[hit]
        pair = np.unique(o.astype(np.int64) * len(self.uniq) + pos)  # each (row, gram) once
        o, pos = pair // len(self.uniq), pair % len(self.uniq)
        lengths = self.counts[pos]
        total = int(lengths.sum())
        offsets = np.repeat(self.first[pos] - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        docs = self.gram_docs[np.arange(total) + offsets]
        owners = np.repeat(o, lengths)
        ids, shared = np.unique(owners * len(self.docs) + docs, return_counts=True)
        owners, docs = ids // len(self.docs), ids % len(self.docs)
        # sure to fail: under the threshold even against the row's positions (its size or more)
        maybe = shared >= self.threshold * np.minimum(self.sizes[docs], positions[owners])
        sizes: dict[int, int] = {}
        found: dict[int, tuple[int, float]] = {}
        for owner, doc, count in zip(owners[maybe].tolist(), docs[maybe].tolist(), shared[maybe].tolist()):
            if owner not in sizes:
                sizes[owner] = self._size(rows[owner].text)
            shorter, longer = sorted((sizes[owner], int(self.sizes[doc])))
            sim = count / max(1, shorter)
            # a short text inside a long one is a near copy only when the shared passage is long
            enough = count >= MIN_SHARED or count >= self.threshold * longer
            if sim >= self.threshold and enough and sim > found.get(owner, (0, 0.0))[1]:
                found[owner] = (doc, sim)
        return found

    def _size(self, text: str) -> int:
        """Distinct grams of ``text`` that are not common here."""
        g, _ = batch_grams([text], self.ngram)
        return int(len(g) - np.isin(g, self.common).sum())

    def span(self, text: str, doc: int) -> str:
        """The longest run of ``text`` made of grams of ``doc``, as written (NFKC, whitespace runs as one
        space, at most 200 characters)."""
        if not self.texts:
            return ""
        g, _ = batch_grams([self.texts[doc]], self.ngram)
        found = " ".join(shared_span(text, g, self.ngram).split())  # on one line
        return found if len(found) <= 200 else found[:199] + "…"

    # ----------------------------------------------------------------------------------------
    def rows_marked(self) -> dict[str, list[int]]:
        """Row numbers of this side per kind, each row under the first kind that holds for it."""
        seen: set[int] = set()
        out: dict[str, list[int]] = {}
        for kind in KINDS:
            docs = sorted(self.marks[kind] - seen)
            seen.update(docs)
            out[kind] = sorted(n for d in docs for n in self.docs[d])
        return out

    @property
    def rows(self) -> int:
        return sum(map(len, self.docs))


def _pair(source: bytes, target: bytes) -> bytes:
    return source + b"\x00" + target
