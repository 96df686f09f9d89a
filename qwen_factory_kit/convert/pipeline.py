"""The streaming core under every converter: one run, from the source to the outputs.

A converter plug-in (:class:`~.contract.Converter`) only says how ONE source row becomes output
rows, or why it is rejected. The core does the rest, in one pass over the source with constant memory
(with splits, a second pass over the accepted rows, staged in a temporary file):

* reads record batches from the source (with file and line/row numbers);
* samples ``--limit`` rows with seeded selection sampling (exactly N rows, spread over the
  whole source, in source order: never "the first N");
* splits train/val/test with the same seeded method, the sizes exact in accepted rows (:mod:`.splits`);
* optionally drops duplicates (a 16-byte digest per kept row, in bounded memory: :mod:`.dedup`);
* optionally drops near duplicates of the rows kept (``--near-dedup``: a MinHash signature per row,
  an LSH index of the kept rows in bounded memory: :mod:`.neardup`);
* with ``--max-tokens``, rejects the rows longer than that as LLaMA-Factory encodes them (:mod:`.length`);
* writes JSON Lines (orjson bytes) to temporary files, and renames them into place only when
  the whole run succeeded (an interrupted run leaves the previous output intact);
* writes ``<stem>.rejects.jsonl`` (every rejected row with its place and reason) and
  ``<stem>.manifest.json`` (options, source, hashes, counts, think mode, versions).

This module is the run (:func:`run_conversion`) and the work loop; the converter contract is
:mod:`.contract`, the output files and the manifest are :mod:`.sinks`.

Batches are converted to bytes by :class:`_Work` (the converter's rows, dumped, with their think
tally, dedup digest and near-dedup signature), in ``--workers`` processes (:mod:`.workers`);
everything that depends on the order of the rows (sampling, splits, duplicates and near
duplicates, counting, writing, hashing) stays in the
calling process, so the output is the same whatever the number of workers. ``--shard I/N``
converts one contiguous part of the source (:mod:`.shards`).

Invariant: ``read == written + rejected`` where the counts are in source rows (one Moses line
may produce several output rows: see ``rows_out``).
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import sys
from collections import Counter
from itertools import accumulate
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import orjson

from ..errors import QfkError
from ..io.readers import Batch
from ..io.sources import ResolvedSource, resolve_source
from ..think import ThinkTally
from ..workspace import data_dir as resolve_data_dir
from ..workspace import slug
from .contract import DUMPS_OPTS, Converter, Reject, reject_line
from .dedup import Seen
from .interrupts import Interrupts
from .shards import Shard, check_options, no_rows
from .sinks import ConvertResult, Hasher, Outputs, finish, output_paths
from .splits import SPLITS, TRAIN, Selector, SplitPlan
from .workers import ordered_map, worker_count

#: what :attr:`Converted.kinds` says of a row
SKIPPED, REJECTED, ACCEPTED = 0, 1, 2


class Converted(NamedTuple):
    """A batch, converted to bytes. ``kinds``: per row :data:`SKIPPED` (not selected),
    :data:`REJECTED` or :data:`ACCEPTED`; per accepted row, in order: the end of its lines in
    ``blob``, its number of output rows, its ``--dedup`` digest (``digests``, None without dedup);
    per rejected row, in order: ``(reason, rejects-file line)``; the think tally of every accepted
    row's responses, and the converter's notes counted on the batch; ``near``: the accepted rows'
    ``--near-dedup`` signatures (:class:`~qwen_factory_kit.minhash.Signed`, None without it)."""

    kinds: bytearray
    blob: bytes | bytearray | memoryview  # a memoryview of a shared-memory slot when a worker made it
    ends: list[int]
    counts: list[int]
    digests: list[bytes] | None
    rejects: list[tuple[str, bytes]]
    tally: tuple[int, int, int]
    notes: Counter
    near: Any = None


class _Work:
    """What a worker holds: the converter (with the state ``open()`` gave it), whether to digest
    rows, and the signer of ``--near-dedup`` (None without it)."""

    def __init__(self, converter: Converter, dedup: bool, near_dedup: float | None = None):
        self.converter, self.dedup = converter, dedup
        self.signer = None
        if near_dedup is not None:
            from .neardup import Signer

            self.signer = Signer(converter)

    def convert(self, batch: Batch, keep: list[bool] | None) -> Converted:
        """The batch's rows converted, dumped, tallied and digested. The garbage collector is off
        meanwhile: the batch's thousands of young dicts would make it scan them again and again
        (conversion makes no reference cycles that need it; it runs again after the batch)."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._convert(batch, keep)
        finally:
            if enabled:
                gc.enable()

    def _convert(self, batch: Batch, keep: list[bool] | None) -> Converted:
        conv = self.converter
        lines = conv.lines_batch(batch, keep)
        if lines is not None:
            return self._from_lines(batch, lines)
        kinds = bytearray(len(batch))
        blob = bytearray()  # orjson gives each line a 4 KiB buffer: appended here, only the bytes are kept
        ends: list[int] = []
        counts: list[int] = []
        digests: list[bytes] | None = [] if self.dedup else None
        rejects: list[tuple[str, bytes]] = []
        kept_outs: list[list[dict]] | None = [] if self.signer is not None else None
        tally = ThinkTally()
        dumps, responses = orjson.dumps, conv.responses
        for i, outs in enumerate(conv.convert_batch(batch, keep)):
            if outs is None:
                continue
            if type(outs) is Reject:
                kinds[i] = REJECTED
                rejects.append((outs.reason, reject_line(batch, i, outs)))
                continue
            kinds[i] = ACCEPTED
            for out in outs:
                blob += dumps(out, option=DUMPS_OPTS)
                for text in responses(out):
                    tally.add_text(text)
            ends.append(len(blob))
            counts.append(len(outs))
            if kept_outs is not None:
                kept_outs.append(outs)
            if digests is not None and not conv.dedup_on_lines:
                digests.append(_digest(conv.dedup_key(batch, i, outs)))
        if digests is not None and conv.dedup_on_lines:
            with memoryview(blob) as view:
                digests = [_digest(view[a:b]) for a, b in zip([0, *ends], ends)]
        notes, conv.notes = conv.notes, Counter()
        near = self.signer.sign(kept_outs) if kept_outs is not None else None
        return Converted(kinds, blob, ends, counts, digests, rejects, (tally.reasoning, tally.empty_block, tally.no_block), notes,
                         near)

    def _from_lines(self, batch: Batch, items: Iterator) -> Converted:
        """:meth:`_convert` for a converter's :meth:`Converter.lines_batch`."""
        kinds = bytearray(len(batch))
        pieces: list[bytes] = []
        counts: list[int] = []
        digests: list[bytes] | None = [] if self.dedup else None
        rejects: list[tuple[str, bytes]] = []
        reasoning = empty = none = 0
        for i, item in enumerate(items):
            if item is None:
                continue
            if type(item) is Reject:
                kinds[i] = REJECTED
                rejects.append((item.reason, reject_line(batch, i, item)))
                continue
            kinds[i] = ACCEPTED
            data, count, (r, e, n), key = item
            pieces.append(data)
            counts.append(count)
            reasoning, empty, none = reasoning + r, empty + e, none + n
            if digests is not None:
                digests.append(_digest(data if key is None else key))
        notes, self.converter.notes = self.converter.notes, Counter()
        ends = list(accumulate(map(len, pieces)))
        near = self.signer.sign_lines(pieces) if self.signer is not None else None
        return Converted(kinds, b"".join(pieces), ends, counts, digests, rejects, (reasoning, empty, none), notes, near)


def _digest(key) -> bytes:
    """128 bits of the row's sha256 (with SHA instructions the fastest of hashlib's)."""
    return hashlib.sha256(key).digest()[:16]


def _convert(work: _Work, item: tuple[Batch, list[bool] | None, Any]) -> Converted:
    return work.convert(item[0], item[1])


def _tally(converter: Converter, lines: bytes) -> ThinkTally:
    """The think tally of one accepted row's responses, read back from its lines."""
    tally = ThinkTally()
    for line in lines.splitlines():
        for text in converter.responses(orjson.loads(line)):
            tally.add_text(text)
    return tally


def run_conversion(
    converter: Converter,
    source: str | ResolvedSource,
    *,
    output: str | os.PathLike | None = None,
    name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 42,
    val_size: float | int | None = None,
    test_size: float | int | None = None,
    dedup: bool | None = None,
    split: str | None = "train",
    encoding: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    max_tokens: int | None = None,
    template: str = "qwen3",
    enable_thinking: bool | None = True,
    before_rows: Callable[[str, dict[str, Path]], None] | None = None,
    workers: int | None = 1,
    shard: str | Shard | None = None,
    near_dedup: float | None = None,
) -> ConvertResult:
    """Convert ``source`` with ``converter``; see the module docstring for what is written.

    ``max_tokens``: reject as ``too_long`` every row whose LLaMA-Factory encoding (``template``,
    ``enable_thinking``, the entry the converter registers) is longer (:mod:`.length`); the
    tokenizer is loaded only then. ``before_rows(name, outputs)`` gets the dataset name and the
    file of each split asked for before any row is read (``convert()`` checks the registry there).
    ``workers``: processes converting batches (:mod:`.workers`; 1: none started, None: the cores
    available, or none for a small source); the output is the same byte for byte whatever the
    number. A script that asks for workers needs the ``if __name__ == "__main__":`` guard, as any
    program using :mod:`multiprocessing` does. ``shard`` (``"I/N"``): convert part I of N of the
    source alone (:mod:`.shards`: where it is written, what works with it). ``near_dedup``: reject
    as ``near_duplicate`` a row whose estimated Jaccard similarity with an earlier kept row is at
    least this (:mod:`.neardup`; not with ``shard``)."""
    src = source if isinstance(source, ResolvedSource) else resolve_source(source, cache_dir=cache_dir)
    records = converter.open(src, split=split, encoding=encoding)
    name = slug(name) if name else converter.default_name(src)
    if limit is not None and limit < 1:
        raise QfkError(f"--limit must be at least 1, not {limit}")
    dedup = converter.dedup_default if dedup is None else dedup
    near_dedup = None if near_dedup is None else _near_threshold(near_dedup)
    shard = _shard(shard, converter, val_size=val_size, test_size=test_size, dedup=dedup, near_dedup=near_dedup)
    hasher = Hasher(records, in_pass=shard is None)  # the files the rows' read hashes; the others in a thread
    paths = output_paths(Path(output) if output else resolve_data_dir(data_dir) / f"{name}.jsonl")
    paths = shard.paths(paths["train"]) if shard is not None else paths
    if before_rows is not None:
        asked = {"train": True, "val": bool(val_size), "test": bool(test_size)}
        before_rows(name, {s: paths[s] for s in SPLITS if asked[s]})
    tokens = _token_limit(converter, max_tokens, template, enable_thinking)
    progress = progress and sys.stderr.isatty()
    total = records.count() if limit or val_size or test_size or progress or shard else None
    if total == 0:
        raise QfkError(f"source '{src.spec}' holds no rows", "check the file (is it empty?) or the --split you asked for")
    if shard is not None and shard.bounds(total)[0] == shard.bounds(total)[1]:
        raise no_rows(shard, total)
    selector, plan = _sampling(total, limit, val_size, test_size, random.Random(seed))
    workers = worker_count(workers, sum(p.stat().st_size for p in records.paths))
    if type(converter).__module__ == "__main__":  # a worker could not import its class
        workers = 1

    hasher.start()
    res = ConvertResult(converter.name, name, paths["train"], paths["rejects"], paths["manifest"],
                        formatting=converter.formatting, ranking=converter.ranking, columns=converter.columns(),
                        tags=converter.tags(), token_limit=tokens.settings() if tokens else {})
    if shard is not None:
        res.shard = shard.describe(total)
    sink = None
    with Interrupts() as stop:
        try:
            sink = Outputs(paths, plan)
            batches = records.batches() if shard is None else _in_part(records.batches(), *shard.bounds(total), selector)
            screen = _Screen(dedup, tokens, paths["train"].parent, near_dedup)
            try:
                _write_rows(converter, batches, sink, res, selector, screen, workers,
                            _Bar(total, src.spec) if progress else None, stop)
            finally:
                screen.close()
            stop.check()  # a Ctrl-C whose KeyboardInterrupt was swallowed still stops the run before anything is committed
            finish(converter, src, res, sink, hasher, paths,
                   dict(limit=limit, seed=seed, val_size=val_size, test_size=test_size, dedup=dedup, near_dedup=near_dedup,
                        split=split, encoding=encoding, source_records=total, **res.token_limit,
                        **({"shard": res.shard} if res.shard else {})))
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
    return res


def _shard(shard: str | Shard | None, converter: Converter, *, val_size, test_size, dedup: bool,
           near_dedup: float | None = None) -> Shard | None:
    """``--shard I/N`` parsed, once the options that cannot be exact with it are refused."""
    if shard is None:
        return None
    shard = shard if isinstance(shard, Shard) else Shard.parse(shard)
    check_options(shard, val_size=val_size, test_size=test_size, dedup=dedup,
                  converter=converter.name if converter.dedup_default else "", near_dedup=near_dedup)
    return shard


def _near_threshold(value) -> float:
    """``--near-dedup``'s similarity, checked (numpy is loaded only then)."""
    from ..minhash import check_threshold

    return check_threshold(value)


def _token_limit(converter: Converter, max_tokens: int | None, template: str, enable_thinking: bool | None):
    """The ``--max-tokens`` check for ``converter``'s output (None when not asked: nothing loaded)."""
    if max_tokens is None:
        return None
    from .length import TokenLimit

    return TokenLimit(max_tokens, converter.entry(), template=template, enable_thinking=enable_thinking)


def _sampling(total: int | None, limit: int | None, val_size, test_size,
              rng: random.Random) -> tuple[Selector | None, SplitPlan | None]:
    """The ``--limit`` selector and the ``--val-size``/``--test-size`` plan (None when not asked)."""
    n_read = min(limit, total) if limit and total is not None else total
    selector = Selector(total, limit, rng) if limit and total is not None and limit < total else None
    plan = SplitPlan(n_read, val_size, test_size, rng) if val_size or test_size else None
    return selector, plan


_DUPLICATE = Reject("duplicate", "same content as an earlier row")


class _Screen:
    """The last checks of a converted row: a duplicate of a written row (``--dedup``, by the digest
    the worker computed, in a bounded-memory set: :mod:`.dedup`), then a near duplicate of a written
    row (``--near-dedup``, by the signature the worker computed: :mod:`.neardup`), then longer than
    ``--max-tokens`` (measured only for rows that are neither, on the rows read back from their
    lines). Only the rows that pass all three enter the sets the next rows are checked against."""

    def __init__(self, dedup: bool, tokens, folder: Path, near_dedup: float | None = None):
        self.tokens = tokens
        self.seen: Seen | None = Seen(folder) if dedup else None
        self.near_dedup = near_dedup
        self.near = None
        if near_dedup is not None:
            from .neardup import NearScreen

            self.near = NearScreen(near_dedup, folder)
        self.active = dedup or tokens is not None or near_dedup is not None

    def __call__(self, digest: bytes | None, lines: bytes, on_disk: bool, a: int = 0, position: int = 0) -> Reject | None:
        """``on_disk``: the digest was found among the rows spilled to disk (:meth:`Seen.on_disk`);
        ``a``: the row's number among the batch's accepted rows, ``position``: its place in its file."""
        seen, near = self.seen, self.near
        if seen is not None and (on_disk or digest in seen):
            return _DUPLICATE
        if near is not None:
            similar = near.check(a)
            if similar is not None:
                return similar
        if self.tokens is not None:
            too_long = self.tokens.check([orjson.loads(line) for line in bytes(lines).splitlines()])
            if too_long is not None:
                return Reject(*too_long)
        if seen is not None:
            seen.add(digest)
        if near is not None:
            near.keep(a, position)
        return None

    def duplicates(self, digests: list[bytes]) -> list[bool] | None:
        """Without ``--max-tokens``, the duplicate verdict of each of a batch's accepted rows at once
        (the rows kept are added as they are met: a row may repeat one of its own batch); None
        when the rows must be screened one by one (:meth:`__call__`)."""
        if self.seen is None or self.tokens is not None or self.near is not None:
            return None
        recent, add = self.seen.recent, self.seen.recent.add
        dups = self.seen.on_disk(digests)
        for a, digest in enumerate(digests):
            if dups[a] or digest in recent:
                dups[a] = True
            else:
                add(digest)
        return dups

    def close(self) -> None:
        if self.seen is not None:
            self.seen.close()
        if self.near is not None:
            self.near.close()


def _in_part(batches: Iterator[Batch], start: int, end: int, selector: Selector | None) -> Iterator[Batch]:
    """The source rows ``[start, end)`` (``--shard``), in batches; the selector draws for the rows
    before them, so that ``--limit`` picks the rows the whole source's run picks."""
    seen = 0
    for batch in batches:
        n = len(batch)
        a, b = min(max(start - seen, 0), n), min(end - seen, n)
        if selector is not None:
            for _ in range(a):
                selector.pick()
        if a < b:
            yield batch if (a, b) == (0, n) else batch.slice(a, b)
        seen += n
        if seen >= end:
            return


def _write_rows(converter: Converter, batches: Iterator[Batch], sink: Outputs, res: ConvertResult,
                selector: Selector | None, screen: _Screen, workers: int, bar: "_Bar | None", stop: Interrupts) -> None:
    """Convert the source batch by batch (in ``workers`` processes), writing the batches in source
    order; each batch's rows are picked (``--limit``) and given their first-pass split as it is read.
    A Ctrl-C stops it between batches (``stop``), never inside the wait for a worker's batch."""
    notes, converter.notes = converter.notes, Counter()  # open()'s notes, then each batch's
    drawn = _drawn(batches, selector, sink.plan)
    try:
        with stop.deferring():
            for (batch, _, splits), converted in ordered_map(_convert, drawn, workers=workers, setup=_Work, payload="blob",
                                                             setup_args=(converter, screen.seen is not None, screen.near_dedup)):
                stop.check()
                _write_batch(converter, batch, splits, converted, sink, res, screen)
                notes.update(converted.notes)
                if bar is not None:
                    bar.advance(len(batch))
    finally:
        converter.notes = notes
        if bar is not None:
            bar.stop()


def _drawn(batches: Iterator[Batch], selector: Selector | None, plan: SplitPlan | None) -> Iterator[tuple]:
    """``(batch, keep, splits)``: which rows ``--limit`` picks (None: all) and the first-pass split
    of each picked row (None without splits), drawn from the seeded generator in source order, the
    same draws however far ahead of the writing the batches are read: for each block of batches
    (:data:`~qwen_factory_kit.io.readers.DRAW_ROWS` rows, the batch size of earlier versions), every
    pick, then every picked row's split, so that a seed keeps giving the rows it gave."""
    if selector is None and plan is None:
        for batch in batches:
            yield batch, None, None
        return
    block: list[Batch] = []
    for batch in batches:
        block.append(batch)
        if batch.draw_end:
            yield from _draw_block(block, selector, plan)
            block = []
    yield from _draw_block(block, selector, plan)  # a block left open (the end of a --shard part)


def _draw_block(block: list[Batch], selector: Selector | None, plan: SplitPlan | None) -> Iterator[tuple]:
    keeps = [[selector.pick() for _ in range(len(b))] if selector is not None else None for b in block]
    for batch, keep in zip(block, keeps):
        splits = None
        if plan is not None:
            splits = [plan.assign() if k else None for k in (keep if keep is not None else [True] * len(batch))]
        yield batch, keep, splits


def _write_batch(converter: Converter, batch: Batch, splits: list | None, conv: Converted, sink: Outputs,
                 res: ConvertResult, screen: _Screen) -> None:
    """Count a converted batch and write it: its accepted rows to their splits, its rejects (and
    the rows the screen refuses) to the rejects file, in source order."""
    res.read += len(conv.kinds) - conv.kinds.count(SKIPPED)
    sink.count_think(conv.tally)
    if sink.plan is None and not screen.active:  # every accepted row goes to train as it is
        res.written += len(conv.ends)
        sink.add(conv.blob, sum(conv.counts), len(conv.ends))
        for reason, _ in conv.rejects:
            sink.reasons[reason] += 1
        sink.flush([line for _, line in conv.rejects])
        return
    rej_buf: list[bytes] = []
    reasons = sink.reasons
    blob, ends, counts, digests = memoryview(conv.blob), conv.ends, conv.counts, conv.digests
    dups = screen.duplicates(digests) if screen.active else None
    on_disk = screen.seen.on_disk(digests) if screen.seen is not None and dups is None else None
    if screen.near is not None:
        screen.near.begin(batch, conv.near)
    rejects = iter(conv.rejects)
    a = start = run = 0  # accepted row number; start of its lines; start of the lines not yet added
    written = rows_out = 0
    for i, kind in enumerate(conv.kinds):
        if kind == SKIPPED:
            continue
        target = splits[i] if splits is not None else TRAIN
        if kind == REJECTED:
            reason, line = next(rejects)
            reasons[reason] += 1
            rej_buf.append(line)
            continue
        end = ends[a]
        if dups is not None:
            refused = _DUPLICATE if dups[a] else None
        elif screen.active:
            refused = screen(digests[a] if digests is not None else None, blob[start:end], on_disk is not None and on_disk[a],
                             a, batch.positions[i])
        else:
            refused = None
        if refused is not None:
            reasons[refused.reason] += 1
            rej_buf.append(reject_line(batch, i, refused))
            tally = _tally(converter, blob[start:end].tobytes())
            sink.count_think((tally.reasoning, tally.empty_block, tally.no_block), -1)
            if sink.staging is None and run < start:
                sink.add(blob[run:start], 0, 0)
            run = end
        else:
            written += 1
            if sink.staging is not None:
                sink.stage(target, blob[start:end])
            else:
                rows_out += counts[a]
        a, start = a + 1, end
    res.written += written
    if sink.staging is None:
        sink.split_rows["train"] += rows_out
        sink.split_units["train"] += written
    if sink.staging is None and run < start:
        sink.add(conv.blob if run == 0 and start == len(conv.blob) else blob[run:start], 0, 0)
    sink.flush(rej_buf)
    if screen.seen is not None:
        screen.seen.settle()
    if screen.near is not None:
        screen.near.end()


class _Bar:
    def __init__(self, total: int | None, label: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.console import Console

        self.p = Progress(TextColumn("[bold]converting[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.task = self.p.add_task(label[-40:], total=total)
        self.p.start()

    def advance(self, n: int) -> None:
        self.p.advance(self.task, n)

    def stop(self) -> None:
        self.p.stop()
