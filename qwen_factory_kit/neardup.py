"""Near duplicates inside one dataset, for ``qfk lint``: the rows ``qfk convert --near-dedup``
would drop, found in the same streaming pass as the other rules.

A row nearly duplicates an earlier row when the MinHash estimate of the Jaccard similarity of
their shingles is at least the threshold (:mod:`qwen_factory_kit.minhash`; default 0.8), over
what the converters compare (:func:`~qwen_factory_kit.rowtext.near_text`: prompt and answer, the
think block aside). As in a conversion, rows are taken in order and a near duplicate is named
after the earlier row it repeats, which stays in the index; exact duplicates (``duplicate_row``)
are left to that rule. Memory is bounded: :data:`BATCH` rows of text, then about 150 bytes a row
(:class:`~qwen_factory_kit.minhash.Index`, its signatures in a temporary file).
"""

from __future__ import annotations

from pathlib import Path

from .findings import Finding
from .minhash import DEFAULT_THRESHOLD, Index, sign
from .rowtext import Layout, near_text

RULE = "near_duplicate"
#: pairs shown in the finding
EXAMPLES = 5
#: rows signed at once
BATCH = 1024


class NearRule:
    """Counts the rows that nearly duplicate an earlier row (:meth:`add` each row in order, then
    :meth:`findings`); keeps the first :data:`EXAMPLES` pairs ``(row, earlier row, similarity)``."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, folder: Path | None = None):
        self.index = Index(threshold, folder)
        self.pending: list[tuple[int, str]] = []
        self.count = 0
        self.examples: list[tuple[int, int, float]] = []

    @property
    def threshold(self) -> float:
        return self.index.threshold

    def add(self, number: int, row: dict, layout: Layout) -> None:
        self.pending.append((number, near_text(row, layout)))
        if len(self.pending) >= BATCH:
            self._check()

    def _check(self) -> None:
        if not self.pending:
            return
        self.index.begin(sign([text for _, text in self.pending]))
        for j, (number, _) in enumerate(self.pending):
            found = self.index.match(j)
            if found is None:
                self.index.keep(j, (0, number))
                continue
            self.count += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append((number, found.place[1], found.similarity))
        self.index.end()
        self.pending = []

    def findings(self) -> list[Finding]:
        """One ``near_duplicate`` info finding (none when no row is one)."""
        self._check()
        self.index.close()
        if not self.count:
            return []
        pairs = "; ".join(f"row {n} ~ row {m} ({sim:.2f})" for n, m, sim in self.examples)
        more = " ..." if self.count > len(self.examples) else ""
        return [Finding(RULE, "info", f"row {self.examples[0][0]}",
                        f"{self.count} rows nearly repeat an earlier row: their prompt and answer have an estimated "
                        f"Jaccard similarity of at least {self.threshold:g} (5-word shingles, MinHash): {pairs}{more}",
                        f"keep the first of each: convert the source with qfk convert ... --near-dedup {self.threshold:g}",
                        self.examples[0][0])]
