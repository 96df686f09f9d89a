"""A registered training dataset without the rows that leak into eval sets (``qfk datasets decontaminate``).

:func:`decontaminate` puts the rows of the eval sets in a :class:`~qwen_factory_kit.leakindex.LeakIndex`
(memory grows with the eval sets only) and streams TRAIN's file through the core with the
:class:`Decontaminated` converter, which rejects, with the eval row each matched:

``leak``           the same prompt and answer as an eval row (think blocks and whitespace aside)
``near_leak``      a near duplicate of an eval row (at least ``threshold`` of the ``ngram``-grams of
                   the shorter row shared; the similarity is in the reject)
``reversed_leak``  a translation pair of an eval row in the other direction
``source_leak``    a translation row whose source or target is the source sentence of an eval row

It writes ``TRAIN__clean.jsonl`` next to TRAIN's file with the rows kept, its ``.rejects.jsonl``
and ``.manifest.json`` (the eval sets with their sha256 and row counts, the n-gram settings, the
counts), and registers ``TRAIN__clean`` with TRAIN's entry shape under the registry's lock; the
core's atomic writes and row accounting hold (read = written + rejected).
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from ..errors import QfkError
from ..io.readers import Batch, BadRecord
from ..leakindex import LeakIndex, RowText, Verdict
from ..lint import layout_from
from ..ngrams import NGRAM, THRESHOLD
from ..registry import Registry, clean_name, file_name_for
from .contract import Reject
from .filter import _checked_name, _source_file
from .registered import Registered
from .sinks import ConvertResult

class Decontaminated(Registered):
    """The rows of a registered dataset that no eval row matches (see the module docstring)."""

    name = "decontaminate"
    summary = "rows of a registered dataset without those that leak into eval sets (qfk datasets decontaminate)"

    def __init__(self, *, entry: dict, dataset: str, new_name: str, index: LeakIndex, labels: list[tuple[str, int]],
                 **kw: Any):
        super().__init__(entry=entry, dataset=dataset, new_name=new_name, **kw)
        self.index = index
        self.labels = labels  # (eval set, row number) of each row number the index holds
        self.layout = layout_from(entry, None)

    def convert_batch(self, batch: Batch, keep: list[bool] | None) -> Iterator:
        """Rows with a verdict rejected, the others as they are; a batch looked up at once."""
        from ..leaks import row_text

        texts: dict[int, RowText] = {}
        for i, row in enumerate(batch.rows):
            if (keep is None or keep[i]) and type(row) is not BadRecord and isinstance(row, dict):
                text = row_text(i, row, self.layout)
                if text is not None:
                    texts[i] = text
        verdicts = dict(zip(texts, self.index.lookup(list(texts.values())))) if texts else {}
        for i, row in enumerate(batch.rows):
            if keep is not None and not keep[i]:
                yield None
            elif type(row) is BadRecord:
                yield Reject(row.reason, row.detail)
            elif not isinstance(row, dict):
                yield Reject("wrong_type", f"a row must be a JSON object, got {type(row).__name__}")
            elif verdicts.get(i) is not None:
                yield self.reject(verdicts[i])
            else:
                yield [row]

    def reject(self, verdict: Verdict) -> Reject:
        rows = self.index.rows_of(verdict)
        where = self._where(rows)
        if verdict.kind == "leak":
            return Reject("leak", f"the same prompt and answer as {where}")
        if verdict.kind == "near":
            return Reject("near_leak", f"a near duplicate of {where} (similarity {verdict.similarity:.2f}: that share of the "
                                       f"{self.index.ngram}-grams of the shorter row)")
        if verdict.kind == "reversed":
            return Reject("reversed_leak", f"the translation pair of {where} in the other direction")
        return Reject("source_leak", f"its source or target sentence is the source sentence of {where}")

    def _where(self, rows: list[int]) -> str:
        first = self.labels[rows[0]]
        more = f" (and {len(rows) - 1} more eval rows)" if len(rows) > 1 else ""
        return f"row {first[1]} of {first[0]}{more}"


def decontaminate(name: str, against: list[str], *, data_dir: str | os.PathLike | None = None, ngram: int = NGRAM,
                  threshold: float = THRESHOLD, new_name: str | None = None, force: bool = False, progress: bool = False,
                  workers: int | None = None) -> ConvertResult:
    """Write and register NAME without its rows that leak into the eval sets ``against`` (see the
    module docstring); ``force`` replaces a ``new_name`` registered for another file. Returns the
    core's result (``registered`` holds the new name)."""
    from ..io.atomic import sha256_file
    from ..leaks import registered_side, row_texts, same_dataset
    from .pipeline import run_conversion

    reg = Registry.at(data_dir)
    registry = reg.read()
    entry = reg.get(name)
    against = list(dict.fromkeys(against))
    path = _source_file(name, entry, reg.data_dir, "decontaminate {name} --against " + (",".join(against) or "EVAL"))
    if not against:
        raise QfkError("no eval dataset to decontaminate against", f"for example: qfk datasets decontaminate {name} --against {name}_val")
    for ev in against:
        same = same_dataset(name, ev, registry, reg.data_dir)
        if same:
            raise QfkError(f"{same}: every row would be removed",
                           f"evaluate on rows kept out of training: convert with --val-size 0.1 and use {name}_val")
    new_name = _checked_name(new_name or clean_name(name))
    output = path.parent / f"{new_name}.jsonl"
    if output.resolve() == path.resolve():
        raise QfkError(f"the decontaminated dataset would overwrite {path}, the file it is read from", "choose another --name")
    labels: list[tuple[str, int]] = []
    sets: list[dict] = []

    def rows() -> Iterator[RowText]:
        for ev in against:
            side = registered_side(ev, registry, reg.data_dir)
            count = 0
            for text in row_texts(side):
                labels.append((ev, text.number))
                count += 1
                yield text._replace(number=len(labels) - 1)
            if not count:
                raise QfkError(f"eval dataset {ev} ({side.path}) holds no readable rows: there is nothing to decontaminate against",
                               f"check it: qfk lint {ev}")
            sets.append({"name": ev, "file": str(side.path), "sha256": sha256_file(side.path) if side.path.is_file() else None,
                         "rows": count})

    index = LeakIndex.build(rows(), ngram, threshold)
    converter = Decontaminated(entry=entry, dataset=name, new_name=new_name, index=index, labels=labels)
    converter.options.update(decontaminated_against=sets, ngram=ngram, threshold=threshold)
    result = run_conversion(converter, str(path), output=output, split=None, progress=progress, workers=workers,
                            before_rows=lambda _name, outputs: reg.check_free({new_name: outputs["train"]}, force=force))
    reg.add(new_name, converter.entry(file_name_for(output, reg.data_dir)), force=force)
    result.registered = [new_name]
    return result
