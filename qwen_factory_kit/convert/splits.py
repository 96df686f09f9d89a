"""Sampling and train/val/test splits: exact sizes, seeded, constant memory.

``--limit`` and the splits use selection sampling (:class:`Selector`). A split's size is exact in
*accepted* source rows (a Moses line and all its directions count as one row and stay together),
in two streaming passes:

1. while converting, every read row gets its split from a seeded :class:`Splitter` over the rows
   read (today's one-pass assignment), and each accepted row is staged, with that split, in a
   temporary file next to the output (:class:`Staging`);
2. when the run ends the number of accepted rows is known. A row assigned to val/test but then
   rejected or dropped as a duplicate left its split short, and a fraction is of the accepted rows,
   so :class:`Moves` moves exactly the missing (or surplus) rows between train and val/test,
   chosen with seeded selection sampling, while the staged rows stream into the split files in
   source order.

When the first pass already gave the exact sizes (nothing assigned to val/test was rejected) the
second pass moves nothing: the files are byte for byte what the one pass gives. When fewer rows
were accepted than asked, the splits take what there is and :attr:`Moves.short` says why.
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from pathlib import Path

from ..errors import QfkError
from ..io.atomic import disk_error

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2


class Selector:
    """Selection sampling (Knuth's Algorithm S): call :meth:`pick` once per item, in order;
    exactly ``k`` of ``n`` items are picked, every subset equally likely."""

    __slots__ = ("left", "need", "rng")

    def __init__(self, n: int, k: int, rng: random.Random):
        self.left, self.need, self.rng = n, min(k, n), rng

    def pick(self) -> bool:
        left, need = self.left, self.need
        self.left = left - 1
        if need <= 0:
            return False
        if self.rng.random() * left < need:
            self.need = need - 1
            return True
        return False


def split_size(value: float | int | None, total: int, what: str) -> int:
    """Rows of a split: a fraction in (0, 1) of ``total``, or a row count."""
    if value is None or value == 0:
        return 0
    if isinstance(value, float) and 0 < value < 1:
        return int(round(total * value))
    if float(value).is_integer() and value >= 1:
        return int(value)
    raise QfkError(f"{what} must be a fraction in (0, 1) or a row count >= 1, not {value}", f"for example {what} 0.05 or {what} 2000")


class Splitter:
    """Assigns each row to train, val or test (0, 1, 2): exact sizes, seeded."""

    def __init__(self, total: int, val: int, test: int, rng: random.Random):
        if val + test > total:
            raise QfkError(f"--val-size and --test-size ask for {val + test} rows but only {total} are read",
                           "lower them, or pass fractions such as --val-size 0.05")
        self.test = Selector(total, test, rng) if test else None
        self.val = Selector(total - test, val, rng) if val else None

    def assign(self) -> int:
        if self.test and self.test.pick():
            return TEST
        if self.val and self.val.pick():
            return VAL
        return TRAIN


class SplitPlan:
    """What ``--val-size``/``--test-size`` ask of ``n_read`` rows: the first-pass :class:`Splitter`,
    and the exact sizes once the accepted rows are counted (:meth:`moves`)."""

    def __init__(self, n_read: int, val_size: float | int | None, test_size: float | int | None, rng: random.Random):
        self.asked = {VAL: val_size, TEST: test_size}
        self.rng = rng
        self.first = Splitter(n_read, split_size(val_size, n_read, "--val-size"), split_size(test_size, n_read, "--test-size"), rng)

    @property
    def names(self) -> list[str]:
        """The split files this run writes (train, and val/test when their size is not 0)."""
        return ["train"] + [s for s in ("val", "test") if getattr(self.first, s)]

    def assign(self) -> int:
        return self.first.assign()

    def moves(self, have: Counter, read: int) -> "Moves":
        """The second pass for ``have`` (accepted rows per first-pass split) of ``read`` rows read."""
        accepted = sum(have.values())
        want_test = split_size(self.asked[TEST], accepted, "--test-size")
        want_val = split_size(self.asked[VAL], accepted, "--val-size")
        short = {}
        if want_test > accepted:
            short["test"] = _short_reason("test", want_test, accepted, accepted, read)
            want_test = accepted
        if want_val > accepted - want_test:
            short["val"] = _short_reason("val", want_val, accepted - want_test, accepted, read) + (
                f"; test took {want_test} of them" if want_test else "")
            want_val = accepted - want_test
        if want_val + want_test == accepted:
            short["train"] = f"no rows left for train: val and test take all {accepted} accepted rows"
        return Moves(have, {VAL: want_val, TEST: want_test}, self.rng, short)


def _short_reason(split: str, asked: int, got: int, accepted: int, read: int) -> str:
    return (f"asked {asked} rows for {split}, wrote {got}: only {accepted} of the {read} rows read were accepted "
            f"({read - accepted} rejected or duplicates)")


class Moves:
    """The second pass: each staged row's final split, in source order. Val or test holding more
    rows than wanted gives a seeded selection of them back to train; a split short of rows takes
    a seeded selection from train (and from the rows given back)."""

    def __init__(self, have: Counter, want: dict[int, int], rng: random.Random, short: dict[str, str]):
        self.short = short
        self.demote = {s: Selector(have[s], have[s] - want[s], rng) for s in (VAL, TEST) if have[s] > want[s]}
        missing = {s: want[s] - have[s] for s in (VAL, TEST) if want[s] > have[s]}
        pool = have[TRAIN] + sum(have[s] - want[s] for s in self.demote)
        self.promote = Splitter(pool, missing.get(VAL, 0), missing.get(TEST, 0), rng) if missing else None

    def final(self, split: int) -> int:
        demote = self.demote.get(split)
        if demote is not None and demote.pick():
            split = TRAIN
        if split == TRAIN and self.promote is not None:
            split = self.promote.assign()
        return split


class Staging:
    """Accepted rows with their first-pass split, in an anonymous temporary file in ``folder``:
    per row a header line ``SPLIT COUNT`` and its COUNT output lines."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.fh = tempfile.TemporaryFile(dir=folder, prefix=".qfk-staging-")
        self.have: Counter = Counter()

    def write(self, data: bytes) -> None:
        try:
            self.fh.write(data)
        except OSError as exc:  # a full disk is the user's to fix, not a traceback
            err = disk_error(exc, self.folder / "(staging for exact splits)")
            if err is None:
                raise
            raise err from exc

    @staticmethod
    def unit(split: int, lines: list[bytes]) -> bytes:
        return b"%d %d\n" % (split, len(lines)) + b"".join(lines)

    def drain(self, moves: Moves, files: dict, rows: Counter, units: Counter) -> None:
        """Stream the staged rows into ``files`` (split name -> writer) with their final split."""
        self.fh.flush()
        self.fh.seek(0)
        read = self.fh.readline
        while header := read():
            first, count = header.split()
            name = SPLITS[moves.final(int(first))]
            n = int(count)
            files[name].write(b"".join([read() for _ in range(n)]))
            rows[name] += n
            units[name] += 1

    def close(self) -> None:
        self.fh.close()
