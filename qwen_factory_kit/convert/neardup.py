"""``--near-dedup [JACCARD]``: a row that nearly duplicates an earlier kept row is rejected as
``near_duplicate``, its detail naming that row (its line or row number) and the similarity.

Two rows are near duplicates when the MinHash estimate of the Jaccard similarity of their
shingles is at least the threshold (:mod:`qwen_factory_kit.minhash`: 5-unit shingles, 128
permutations, LSH bands; default 0.8). What is compared of a row is what the exact checks compare:
the prompt and the answer of each of its output rows, the think block aside
(:func:`~qwen_factory_kit.rowtext.near_text`, the columns as the converter's registry entry names
them): the same question and answer with other reasoning is a near duplicate (similarity 1).

Where it runs: :class:`Signer` signs a batch's accepted rows where the batch is converted (a
worker process, like the ``--dedup`` digest); :class:`NearScreen` looks each row up in the index
of the rows kept so far, in the calling process and in source order, and keeps it when no kept row
is near enough. So the earlier kept row wins and the output is the same byte for byte whatever
``--workers``. Rows rejected for any other reason (an exact ``--dedup`` duplicate, checked first;
``--max-tokens``, checked after) never enter the index. With ``--shard`` it is refused: a row's
near duplicate may sit in another part.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from ..io.readers import Batch
from ..minhash import Index, Signed, sign
from ..rowtext import layout_from, near_text
from .contract import Converter, Reject

#: the reject reason
NEAR_DUPLICATE = "near_duplicate"


class Signer:
    """Signs the accepted rows of a batch, in the process that converts it."""

    def __init__(self, converter: Converter):
        self.layout = layout_from(converter.entry(), None)

    def sign(self, outs: list[list[dict]]) -> Signed:
        """The signatures of rows whose output rows are ``outs`` (one list a source row)."""
        texts: list[str] = []
        owners: list[int] = []
        for a, rows in enumerate(outs):
            for out in rows:
                texts.append(near_text(out, self.layout))
                owners.append(a)
        return sign(texts, owners, len(outs))

    def sign_lines(self, lines: list[bytes]) -> Signed:
        """:meth:`sign` for rows given as their written lines (a converter's fast path)."""
        return self.sign([[orjson.loads(x) for x in data.splitlines()] for data in lines])


class NearScreen:
    """The rows kept so far, in bounded memory (:class:`~qwen_factory_kit.minhash.Index`, its
    signatures in a temporary file in ``folder``), and their places for the rejects' details."""

    def __init__(self, threshold: float, folder: Path):
        self.index = Index(threshold, folder)
        self.sources: list[tuple[str, str]] = []  # (file, unit) of the batches rows were kept from
        self._numbers: dict[tuple[str, str], int] = {}
        self.current = 0

    def begin(self, batch: Batch, signed: Signed) -> None:
        """Start a batch whose accepted rows have signatures ``signed`` (in order)."""
        where = (batch.source, batch.unit)
        if where not in self._numbers:
            self._numbers[where] = len(self.sources)
            self.sources.append(where)
        self.current = self._numbers[where]
        self.index.begin(signed)

    def check(self, a: int) -> Reject | None:
        """The reject of the batch's accepted row ``a`` when it nearly duplicates a kept row."""
        found = self.index.match(a)
        if found is None:
            return None
        number, position = found.place
        source, unit = self.sources[number]
        where = f"{unit} {position}" + ("" if number == self.current else f" of {source}")
        return Reject(NEAR_DUPLICATE, f"nearly the same as {where}, kept (estimated Jaccard similarity "
                                      f"{found.similarity:.2f} >= --near-dedup {self.index.threshold:g})")

    def keep(self, a: int, position: int) -> None:
        """The batch's accepted row ``a`` (at ``position`` in its file) is written."""
        self.index.keep(a, (self.current, int(position)))

    def end(self) -> None:
        self.index.end()

    def close(self) -> None:
        self.index.close()
