"""Moses parallel corpora (one sentence per line, line i aligned across files) -> translation rows.

SOURCE is a folder (``corpus.en`` + ``corpus.zh_tw`` + ``corpus.ja``; OPUS names such as
``OpenSubtitles.en-zh_TW.en``; OPUS ``*.txt.zip`` files inside it) or one OPUS ``.txt.zip``.
Files are matched by their language suffix, codes are normalised (:mod:`qwen_factory_kit.langs`),
and every aligned line yields both directions of every language pair (three languages: six
directions) with the language tags in the instruction and a translation system prompt.

Files are read in lock-step with constant memory; a line-count mismatch stops the run before
anything is written, naming both files and both counts.

Each segment must be written in its language's script (:mod:`qwen_factory_kit.scripts`): one with
letters but none of its script (English in ``corpus.ja``) is rejected as ``language_mismatch``; a
zh_TW segment with Simplified-only characters as ``script_mismatch``, unless ``to_traditional``
converts it with OpenCC ``s2twp`` (counted in the note ``converted_to_traditional``).
"""

from __future__ import annotations

import html
import io
import re
import shlex
import string
import unicodedata
import zipfile
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate, islice, permutations
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterator

import orjson

from ..errors import QfkError
from ..io.encoding import SAMPLE_BYTES, detect_encoding, normalize_encoding
from ..io.readers import BATCH_ROWS, CR_LINE_BREAKS, BadRecord, Batch, draw_end, open_hashing
from ..io.sources import ResolvedSource
from ..langs import LANG_NAMES, known_codes, name as lang_name, normalize_code, tag
from ..scripts import CONVERTED_TO_TRADITIONAL, SCRIPT_MISMATCH, checker, chinese_script_of, resolve
from ..think import ThinkTally, format_response
from ..workspace import slug
from .contract import CHECKED_MARKERS, Converter, Reject, check_text

DEFAULT_INSTRUCTION = "Translate {src_tag} to {tgt_tag}."
DEFAULT_SYSTEM = "You are a professional translator. Translate the user's text faithfully and fluently, and reply with the translation only."


def translation_prompt(src: str, tgt: str, text: str, *, instruction_template: str = DEFAULT_INSTRUCTION,
                       system: str = DEFAULT_SYSTEM) -> dict:
    """The prompt side of a translation row from ``src`` to ``tgt`` as :meth:`Moses.convert` writes it:
    ``instruction`` (the template with the language tags), ``input`` (the source text) and
    ``system`` when there is one. ``qfk translate`` asks a model with exactly this prompt."""
    row = {"instruction": instruction(src, tgt, instruction_template), "input": text}
    if system:
        row["system"] = system
    return row


def instruction(src: str, tgt: str, template: str = DEFAULT_INSTRUCTION) -> str:
    """The instruction of a translation from ``src`` to ``tgt``: ``template`` with the language tags,
    codes and names filled in."""
    return template.format(src_tag=tag(src), tgt_tag=tag(tgt), src=src, tgt=tgt, src_name=lang_name(src), tgt_name=lang_name(tgt))


def instruction_direction(text: str, template: str = DEFAULT_INSTRUCTION) -> tuple[str, str] | None:
    """``(src, tgt)`` of the first instruction in ``text`` written from ``template`` (the inverse of
    the instruction :meth:`Moses.convert` writes; languages of :data:`LANG_NAMES`), or None."""
    forms = {"tag": {tag(c): c for c in LANG_NAMES}, "": {c: c for c in LANG_NAMES},
             "name": {lang_name(c): c for c in LANG_NAMES}}
    pattern, seen = "", set()
    for literal, fld, _, _ in string.Formatter().parse(template):
        pattern += re.escape(literal)
        if fld in seen:  # a field used twice must repeat the same text
            pattern += f"(?P={fld})"
        elif fld:
            seen.add(fld)
            choices = sorted(forms[fld.partition("_")[2]], key=len, reverse=True)
            pattern += f"(?P<{fld}>{'|'.join(map(re.escape, choices))})"
    found = re.search(pattern, text)
    langs = {f.partition("_")[0]: forms[f.partition("_")[2]][v] for f, v in (found.groupdict() if found else {}).items()}
    return (langs["src"], langs["tgt"]) if {"src", "tgt"} <= set(langs) else None


#: the files moses reads (the hint of every error about a SOURCE that is not a corpus)
CORPUS_NAMES = ("files that share a name and end in a language code, in one folder: corpus.en + corpus.zh_tw + "
                "corpus.ja, or OPUS OpenSubtitles.en-zh_TW.en + OpenSubtitles.en-zh_TW.zh_TW; or OPUS "
                "L1-L2.txt.zip files (en-zh_TW.txt.zip), in a folder or given alone")
#: suffixes that are never a language (OPUS ships README, LICENSE, .ids, .xml alongside the text)
_NOT_LANG = {"txt", "md", "ids", "xml", "tmx", "zip", "gz", "json", "jsonl", "py", "sh", "csv", "tsv", "parquet",
             "scores", "log", "yaml", "yml", "html", "pdf"}
_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);")
#: weight of one ideograph/kana/hangul against one Latin character when comparing lengths
CJK_WEIGHT = 2.75


def weighted_length(text: str) -> float:
    """Sentence length comparable across scripts: Latin characters count 1, CJK characters
    :data:`CJK_WEIGHT` (Chinese and Japanese are written without spaces and pack more per character)."""
    wide = sum(1 for ch in text if ch >= "\u2e80" and unicodedata.east_asian_width(ch) in "WF")
    return len(text) - wide + wide * CJK_WEIGHT


@dataclass
class LangFile:
    lang: str
    display: str
    open: Callable[[], io.BufferedIOBase]
    encoding: str = "utf-8"


@dataclass
class Group:
    display: str
    files: list[LangFile] = field(default_factory=list)

    @property
    def langs(self) -> list[str]:
        return [f.lang for f in self.files]


def _suffix_split(name: str) -> tuple[str, str] | None:
    if name.startswith(".") or "." not in name or name.upper().startswith(("README", "LICENSE", "LICENCE")):
        return None
    prefix, suffix = name.rsplit(".", 1)
    if suffix.lower() in _NOT_LANG or not prefix:
        return None
    return prefix, suffix


class ParallelSource:
    """Aligned lines from one or more groups of language files (folders and OPUS zips). ``paths``:
    the files the manifest hashes (every file of the folder, a zip whole); the language files on
    disk are hashed as their lines are read (:meth:`hash_as_read`), the others by a read of their own."""

    def __init__(self, groups: list[Group], paths: list[Path]):
        self.groups = groups
        self.paths = paths
        self._counts: dict[str, int] | None = None
        self._hashing = False
        self._hashes: dict[str, str] = {}

    def hash_as_read(self) -> list[Path]:
        """Hash the language files on disk as :meth:`batches` reads their lines; those files (a zip's
        members are not its bytes: a zip is hashed apart)."""
        self._hashing = True
        return [p for g in self.groups for f in g.files if (p := self._on_disk(f)) is not None]

    def hashes(self) -> dict[str, str]:
        """sha256 of the files that :meth:`batches` read to their end since :meth:`hash_as_read`."""
        return dict(self._hashes)

    def _on_disk(self, f: LangFile) -> Path | None:
        """The file of the folder that ``f`` reads (its display is its path), None for a zip member."""
        path = Path(f.display)
        return path if path in self.paths else None

    def count(self) -> int:
        """Lines per group; a mismatch inside a group is a :class:`QfkError` naming both files."""
        if self._counts is None:
            counts = {}
            for g in self.groups:
                per_file = []
                for f in g.files:
                    with f.open() as fh:
                        per_file.append((f.display, _count_stream(fh)))
                (a, na) = per_file[0]
                for b, nb in per_file[1:]:
                    if nb != na:
                        raise QfkError(
                            f"line-count mismatch: {a} has {na} lines but {b} has {nb}; nothing was converted",
                            "the files must be aligned line by line: look for blank lines or line breaks inside "
                            f"segments near the end (for example: paste {a} {b} | tail) and fix the shorter file",
                        )
                counts[g.display] = na
            self._counts = counts
        return sum(self._counts.values())

    def batches(self) -> Iterator[Batch]:
        """Aligned lines in batches of their raw bytes (decoded where the rows are built: :func:`decode_aligned`)."""
        self.count()  # never stream a misaligned group
        for g in self.groups:
            on_disk = [self._on_disk(f) if self._hashing else None for f in g.files]
            handles = [f.open() if p is None else open_hashing(p) for f, p in zip(g.files, on_disk)]
            try:
                parse = partial(decode_aligned, tuple((f.lang, f.encoding) for f in g.files))
                lines = zip(*handles)
                lineno, total = 0, self._counts[g.display]
                while chunk := list(islice(lines, BATCH_ROWS)):
                    end = lineno + len(chunk)
                    yield Batch(g.display, "line", range(lineno + 1, end + 1), raw=chunk, parse=parse, draw_end=draw_end(end, total))
                    lineno = end
                for h, p in zip(handles, on_disk):
                    if p is not None:
                        h.read()  # zip() stops at the first file's end: meet the others' (nothing is left)
                        self._hashes[str(p)] = h.raw.sha256
            finally:
                for h in handles:
                    h.close()


def _raw_texts(decoders: tuple[tuple[str, str], ...], lines: tuple[bytes, ...]) -> dict[str, str]:
    """The aligned lines as text whatever their bytes (for the rejects file)."""
    return {lang: raw.decode(enc, "backslashreplace").rstrip("\r\n") for (lang, enc), raw in zip(decoders, lines)}


def decode_aligned(decoders: tuple[tuple[str, str], ...], raw: list[tuple[bytes, ...]]) -> list:
    """Aligned raw lines -> rows ``{lang: text}``, or a :class:`BadRecord` for a line that is not
    valid in its file's encoding or holds a carriage return inside it (``decoders``: (lang,
    encoding) per file). UTF-8 files are decoded a column at a time (:func:`_decode_columns`)."""
    columns = _decode_columns(decoders, raw)
    if columns is not None:
        langs = [lang for lang, _ in decoders]
        return [dict(zip(langs, texts)) for texts in zip(*columns)]
    return _decode_rows(decoders, raw)


def _decode_columns(decoders: tuple[tuple[str, str], ...], raw: list[tuple[bytes, ...]]) -> list[list[str]] | None:
    """Each file's lines of the batch decoded in one call, or None when a line of the batch needs
    the line-by-line path to give its exact result (not UTF-8, not valid, a byte order mark, or a
    carriage return that is not part of a CRLF line end)."""
    if not raw or any(enc not in ("utf-8", "utf-8-sig") for _, enc in decoders):
        return None
    columns = []
    for col in zip(*raw):
        try:
            text = b"".join(col).decode()
        except UnicodeDecodeError:
            return None
        if "\ufeff" in text:
            return None
        if "\r" in text:
            text = text.replace("\r\n", "\n")
            if "\r" in text:
                return None
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        if len(lines) != len(col):  # pragma: no cover - every line but a file's last ends with \n
            return None
        columns.append(lines)
    return columns


def _decode_rows(decoders: tuple[tuple[str, str], ...], raw: list[tuple[bytes, ...]]) -> list:
    rows: list = []
    for lines in raw:
        row: dict | BadRecord = {}
        for (lang, enc), line in zip(decoders, lines):
            try:
                row[lang] = _decode(line, enc).rstrip("\r\n")
            except UnicodeDecodeError as exc:
                row = BadRecord("encoding_error", f"{lang} line is not valid {enc}: {exc.reason} at byte {exc.start}",
                                _raw_texts(decoders, lines))
                break
            if "\r" in row[lang]:
                row = BadRecord("cr_line_breaks", f"{lang}: {CR_LINE_BREAKS}", _raw_texts(decoders, lines))
                break
        rows.append(row)
    return rows


def _decode(line: bytes, encoding: str) -> str:
    """``line.decode(encoding)``; utf-8-sig (the default) through the fast utf-8 codec, same result."""
    if encoding != "utf-8-sig":
        return line.decode(encoding)
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return line.decode(encoding)  # raises the codec's own error
    return text[1:] if text[:1] == "\ufeff" else text


def _count_stream(fh) -> int:
    n, last = 0, b"\n"
    while block := fh.read(1 << 22):
        n += block.count(b"\n")
        last = block[-1:]
    return n + (last != b"\n")


def _parse_directions(spec: list[str] | None, lang_map: dict[str, str]) -> list[tuple[str, str]] | None:
    """``en-zh_TW``, ``en>ja``, ``en->ja`` or ``en:ja`` -> (src, tgt) canonical pairs."""
    if not spec:
        return None
    out = []
    for item in spec:
        item = item.strip()
        parts: list[str] = []
        for sep in ("->", ">", ":"):
            if sep in item:
                parts = item.split(sep, 1)
                break
        else:
            for i, ch in enumerate(item):
                if ch == "-" and normalize_code(item[:i], lang_map) and normalize_code(item[i + 1:], lang_map):
                    parts = [item[:i], item[i + 1:]]
                    break
        codes = [normalize_code(p, lang_map) for p in parts]
        if len(codes) != 2 or not all(codes):
            raise QfkError(f"cannot read direction '{item}'", "write directions as SRC-TGT, for example --directions en-zh_TW,zh_TW-en")
        out.append((codes[0], codes[1]))
    return out


class Moses(Converter):
    name = "moses"
    summary = "Moses/OPUS parallel text (corpus.en + corpus.zh_tw + corpus.ja, *.txt.zip) -> translation rows, both directions"
    dedup_default = True
    dedup_on_lines = True

    def __init__(self, *, langs: list[str] | None = None, directions: list[str] | None = None,
                 lang_map: dict[str, str] | None = None, instruction_template: str = DEFAULT_INSTRUCTION,
                 system: str = DEFAULT_SYSTEM, unescape_html: bool = True, max_length_ratio: float | None = None,
                 max_chars: int | None = None, file_encodings: dict[str, str] | None = None, to_traditional: bool = False,
                 **kw):
        super().__init__(langs=langs, directions=directions, lang_map=lang_map, instruction_template=instruction_template,
                         system=system, unescape_html=unescape_html, max_length_ratio=max_length_ratio,
                         max_chars=max_chars, file_encodings=file_encodings, **kw)
        if to_traditional:  # recorded only when asked: the manifests of other runs stay as they were
            self.options["to_traditional"] = True
        self.lang_map = {k: v for k, v in (lang_map or {}).items()}
        self.langs = None
        if langs:
            self.langs = []
            for code in langs:
                norm = normalize_code(code, self.lang_map)
                if not norm:
                    raise QfkError(f"unknown language code '{code}' in --langs", f"known codes: {', '.join(known_codes())}")
                self.langs.append(norm)
        self.directions = _parse_directions(directions, self.lang_map)
        try:
            instruction_template.format(src_tag="", tgt_tag="", src="", tgt="", src_name="", tgt_name="")
        except (KeyError, IndexError, ValueError) as exc:
            raise QfkError(f"bad --instruction-template ({exc})",
                           "use the fields {src_tag} {tgt_tag} {src} {tgt} {src_name} {tgt_name}") from None
        self.instruction_template = instruction_template
        self.system = system
        self.unescape = unescape_html
        self.max_ratio = max_length_ratio
        self.max_chars = max_chars
        self.file_encodings = file_encodings or {}
        self.to_traditional = to_traditional
        if to_traditional and self.langs and not any(map(chinese_script_of, self.langs)):
            raise _no_traditional_side(self.langs, "--langs asks for")
        self._group_dirs: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        self._plans: dict[tuple[str, ...], list[tuple[str, str, str]]] = {}
        self._found_langs: list[str] = []

    def columns(self) -> dict:
        cols = super().columns()
        if self.system:
            cols["system"] = "system"
        return cols

    def default_name(self, src: ResolvedSource) -> str:
        if src.path.is_file():  # OPUS zips are named after their language pair: en-zh_TW.txt.zip
            return slug(src.path.name.removesuffix(".zip").removesuffix(".txt"))
        return slug(f"{src.path.name}_{'_'.join(sorted(self._found_langs))}")

    def note_option(self, note: str) -> str:
        if note.startswith("encoding_detected:"):
            return f"--encoding {note.partition(':')[2].partition('=')[0]}=ENCODING when that is wrong"
        if note == "html_entities_unescaped":
            return "--keep-html keeps them as written"
        if note == CONVERTED_TO_TRADITIONAL:
            return f"Simplified zh_TW lines converted by --to-traditional; without it they are rejected as {SCRIPT_MISMATCH}"
        return ""

    # -- discovery --------------------------------------------------------------------------
    def open(self, src: ResolvedSource, *, split: str | None, encoding: str | None) -> ParallelSource:
        path = src.path
        if path.is_file() and not zipfile.is_zipfile(path):
            raise self._not_a_corpus(src.spec, path)
        entries, hashed = _entries(path)
        groups = self._groups(entries)
        chosen = self._chosen(groups)
        if not chosen:
            seen = ", ".join(sorted({f"{p}.*" for (_, p) in groups})) or "no language files"
            need = f" with languages {', '.join(self.langs)}" if self.langs else ""
            raise QfkError(f"no aligned files{need} found in '{src.spec}' (saw: {seen})", f"moses reads {CORPUS_NAMES}")
        out_groups = []
        for (container, prefix), langs, pairs in chosen:
            by_lang = groups[(container, prefix)]
            files = []
            for lang in langs:
                display, opener = by_lang[lang]
                files.append(LangFile(lang, display, opener, self._encoding(display, opener, encoding)))
            gdisplay = f"{container}/{prefix}.{{{','.join(by_lang_suffix(by_lang, langs))}}}"
            out_groups.append(Group(gdisplay, files))
            self._group_dirs[tuple(langs)] = pairs
            for l in langs:
                if l not in self._found_langs:
                    self._found_langs.append(l)
        self.options["found"] = {g.display: g.langs for g in out_groups}
        if self.to_traditional and not any(map(chinese_script_of, self._found_langs)):
            raise _no_traditional_side(self._found_langs, f"'{src.spec}' holds")
        return ParallelSource(out_groups, hashed)

    def _groups(self, entries: list[tuple[str, str, Callable]]) -> dict[tuple[str, str], dict[str, tuple[str, Callable]]]:
        """Files grouped into corpora: (container, name) -> {language: (display, opener)}; an unknown
        language suffix on a file of a corpus, or two files of one language, is an error."""
        groups: dict[tuple[str, str], dict[str, tuple[str, Callable]]] = {}
        unknown: list[tuple[str, str, str]] = []
        for container, fname, opener in entries:
            split_name = _suffix_split(fname)
            if not split_name:
                continue
            prefix, suffix = split_name
            lang = normalize_code(suffix, self.lang_map)
            display = f"{container}/{fname}" if not container.endswith(".zip") else f"{container}!{fname}"
            if lang is None:
                unknown.append((container, prefix, display))
                continue
            key = (container, prefix)
            if lang in groups.setdefault(key, {}):
                raise QfkError(f"two files for language {lang} in one corpus: {groups[key][lang][0]} and {display}",
                               "keep one of them, or map codes with --lang-map")
            groups[key][lang] = (display, opener)
        for container, prefix, display in unknown:
            if (container, prefix) in groups:
                suffix = display.rsplit(".", 1)[1]
                raise QfkError(f"unknown language suffix '.{suffix}' on {display}",
                               f"map it with --lang-map {suffix}=CODE (for example --lang-map {suffix}=zh_TW); known codes: {', '.join(known_codes())}")
        return groups

    def _chosen(self, groups: dict) -> list[tuple[tuple[str, str], list[str], list[tuple[str, str]]]]:
        """The corpora converted: (key, languages, directions) of each with two or more of the
        languages asked for (--langs) and a direction asked for (--directions)."""
        out = []
        for key, by_lang in sorted(groups.items()):
            langs = [l for l in (self.langs or sorted(by_lang)) if l in by_lang]
            if len(langs) < 2:
                continue
            pairs = list(permutations(langs, 2))
            if self.directions:
                pairs = [d for d in pairs if d in self.directions]
            if pairs:
                out.append((key, langs, pairs))
        return out

    def _not_a_corpus(self, spec: str, path: Path) -> QfkError:
        """The error for a SOURCE that is a plain file: give its folder when that folder is a corpus
        (the file is one of its aligned files), else say which files moses reads."""
        folder = path.parent
        try:
            corpus = bool(self._chosen(self._groups(_entries(folder)[0])))
        except QfkError:  # a corpus with a problem, which the run on the folder will name
            corpus = True
        except (OSError, zipfile.BadZipFile):
            corpus = False
        if corpus:
            return QfkError(f"'{spec}' is one file of a corpus: moses reads its folder, where the aligned files are",
                            f"give the folder: qfk convert moses {shlex.quote(str(folder))}")
        need = f" with languages {', '.join(self.langs)}" if self.langs else ""
        return QfkError(f"'{spec}' is a file, but moses reads a folder of aligned files or an OPUS .txt.zip "
                        f"(and its folder {folder} holds no aligned files{need})", f"moses reads {CORPUS_NAMES}")

    def _encoding(self, display: str, opener: Callable, default: str | None) -> str:
        base = display.replace("!", "/").rsplit("/", 1)[-1]
        chosen = self.file_encodings.get(base) or default
        if chosen:
            enc = normalize_encoding(chosen)
            return "utf-8-sig" if enc == "utf-8" else enc
        with opener() as fh:
            sample = fh.read(SAMPLE_BYTES)
        enc = detect_encoding(sample, display)
        if enc not in ("utf-8", "utf-8-sig"):
            self.notes[f"encoding_detected:{base}={enc}"] += 1
        return "utf-8-sig" if enc == "utf-8" else enc

    # -- rows -------------------------------------------------------------------------------
    def _clean(self, text: str, lang: str) -> str:
        text = text.strip()
        if self.unescape and "&" in text and _ENTITY.search(text):
            text = html.unescape(text).strip()
            self.notes["html_entities_unescaped"] += 1
        if "\t" in text:
            self.notes["segments_with_tabs"] += 1
        if not text:
            raise Reject("empty_segment", f"the {lang} side is empty")
        if self.max_chars and len(text) > self.max_chars:
            raise Reject("too_long", f"the {lang} side has {len(text)} characters (> --max-chars {self.max_chars})")
        check_text(text, lang, prompt=True)
        check = checker(lang)
        return text if check is None else self._in_script(text, check)

    def _in_script(self, text: str, check) -> str:
        """``text`` written in its language's script (:mod:`~qwen_factory_kit.scripts`): rejected as
        ``language_mismatch`` or ``script_mismatch``, or, with --to-traditional, converted."""
        text, found, converted = resolve(text, check, convert=self.to_traditional)
        if found is not None:
            raise Reject(found.code, found.detail)
        if converted:
            self.notes[CONVERTED_TO_TRADITIONAL] += 1
        return text

    def convert(self, row: dict) -> list[dict]:
        texts = self._texts(row)
        langs = tuple(row)
        plan = self._plans.get(langs) or self._plan(langs)
        answers = {lang: format_response(text, None, empty=self.empty) for lang, text in texts.items()}
        system = self.system
        if system:
            return [{"instruction": ins, "input": texts[src], "output": answers[tgt], "system": system} for src, tgt, ins in plan]
        return [{"instruction": ins, "input": texts[src], "output": answers[tgt]} for src, tgt, ins in plan]

    def lines_batch(self, batch: Batch, keep: list[bool] | None) -> Iterator | None:
        """The batch's rows as JSON Lines, without building the output rows: each segment is
        serialised once and the six lines of a row are put together from those strings and the
        plan's fixed parts (:class:`_Lines`). The bytes are those of :meth:`convert`'s rows dumped
        by the core (tested); a row that any rule might refuse or change (an empty or too long
        segment, ``&``, a tab, a NUL, ``<|``, ``think>``, a segment out of its language's script)
        goes through :meth:`convert`'s checks."""
        if self.max_ratio:
            return None
        return self._lines_batch(batch, keep)

    def _lines_batch(self, batch: Batch, keep: list[bool] | None) -> Iterator:
        rows = batch.rows
        # what _clean() and check_text() look for: a row without any of it passes them unchanged
        suspect = _suspect_rows(rows, ("\t", *CHECKED_MARKERS, *(("&",) if self.unescape else ())))
        max_chars = self.max_chars
        dumps = orjson.dumps
        lines_of: dict[tuple[str, ...], _Lines] = {}
        checks_of: dict[tuple[str, ...], list] = {}
        for i, row in enumerate(rows):
            if keep is not None and not keep[i]:
                yield None
                continue
            if type(row) is BadRecord:
                yield Reject(row.reason, row.detail)
                continue
            texts = [t.strip() for t in row.values()]
            langs = tuple(row)
            checks = checks_of.get(langs)
            if checks is None:  # the script check of each segment that has one (scripts.checker)
                checks = checks_of[langs] = [(k, c) for k, c in enumerate(map(checker, langs)) if c is not None]
            if (i in suspect or not all(texts) or (max_chars and max(map(len, texts)) > max_chars)
                    or any(check(texts[k]) for k, check in checks)):
                try:
                    texts = list(self._texts(row).values())
                except Reject as r:
                    yield r
                    continue
            lines = lines_of.get(langs) or lines_of.setdefault(langs, _Lines(self, langs))
            yield lines.of([dumps(t) for t in texts])

    def _texts(self, row: dict) -> dict[str, str]:
        """The row's segments, cleaned and checked (:class:`Reject` when a rule refuses the row)."""
        texts = {lang: self._clean(text, lang) for lang, text in row.items()}
        if self.max_ratio:
            lengths = {l: weighted_length(t) for l, t in texts.items()}
            lo, hi = min(lengths.values()), max(lengths.values())
            if hi / max(lo, 1.0) > self.max_ratio:
                raise Reject("length_ratio", f"length ratio {hi / max(lo, 1.0):.1f} > --max-length-ratio {self.max_ratio} "
                             f"({', '.join(f'{l}={v:.0f}' for l, v in lengths.items())})")
        return texts

    def responses(self, out: dict) -> tuple[str]:
        return (out["output"],)

    def _plan(self, langs: tuple[str, ...]) -> list[tuple[str, str, str]]:
        """(source, target, instruction) of each direction written for a group's languages."""
        plan = [(src, tgt, instruction(src, tgt, self.instruction_template)) for src, tgt in self._group_dirs[langs]]
        self._plans[langs] = plan
        return plan


class _Lines:
    """A group's output lines put together from its segments' JSON strings. orjson escapes a string
    the same wherever it stands, so the line of a direction is its fixed parts (the instruction, the
    keys, the system prompt) around the source segment's JSON and the target's JSON after the
    empty think block: the bytes ``orjson.dumps`` gives for the row :meth:`Moses.convert` makes.
    A row's lines are one ``bytes % args`` of the group's template (fixed parts with ``%`` doubled)."""

    def __init__(self, conv: Moses, langs: tuple[str, ...]):
        dumps = orjson.dumps
        plan = conv._plans.get(langs) or conv._plan(langs)
        index = {lang: k for k, lang in enumerate(langs)}
        # a response without reasoning is format_response's prefix (the empty block, or nothing)
        # and the answer: the prefix's JSON without its closing quote, then the answer's without its opening one
        prefix = format_response("", None, empty=conv.empty)
        opening = _escaped(dumps(prefix)[:-1])
        end = (b',"system":' + _escaped(dumps(conv.system)) if conv.system else b"") + b"}\n"
        template, picks = b"", []
        for src, tgt, ins in plan:
            template += b'{"instruction":' + _escaped(dumps(ins)) + b',"input":%s,"output":' + opening + b"%s" + end
            picks += (index[src], len(langs) + index[tgt])  # the source's JSON; the target's without its opening quote
        self.template = template
        self.pick = itemgetter(*picks)  # two or more: a direction has a source and a target
        self.rows = len(plan)
        tally = ThinkTally()
        tally.add_text(prefix + "answer")
        self.tally = (tally.reasoning * self.rows, tally.empty_block * self.rows, tally.no_block * self.rows)
        used = sorted({index[src] for src, _, _ in plan} | {index[tgt] for _, tgt, _ in plan})
        self.used = None if len(used) == len(langs) else itemgetter(*used)  # two or more, as above
        self.tag = "|".join(langs).encode() + b"\n"

    def of(self, quoted: list[bytes]) -> tuple[bytes, int, tuple[int, int, int], bytes]:
        """``(lines, rows, think tally, dedup key)`` of a row whose cleaned segments, JSON-encoded, are
        ``quoted``. The key: the group's languages and the segments its lines hold (JSON strings,
        self-delimiting)."""
        lines = self.template % self.pick(quoted + [q[1:] for q in quoted])
        key = self.tag + b"".join(quoted if self.used is None else self.used(quoted))
        return lines, self.rows, self.tally, key


def _no_traditional_side(langs: list[str], where: str) -> QfkError:
    """The error of --to-traditional on a corpus without a Traditional Chinese side."""
    return QfkError(f"--to-traditional converts the zh_TW side, but {where} no zh_TW file (languages: {', '.join(langs)})",
                    "drop --to-traditional, or name the Traditional Chinese file's suffix: --lang-map SUFFIX=zh_TW "
                    "(for example --lang-map tw=zh_TW)")


def _escaped(fixed: bytes) -> bytes:
    """A fixed part of a ``bytes %`` template."""
    return fixed.replace(b"%", b"%%")


def _suspect_rows(rows: list, needles: tuple[str, ...]) -> set[int]:
    """Rows of the batch where a segment holds one of ``needles`` (searched a column at a time)."""
    suspect: set[int] = set()
    dicts = [r for r in rows if type(r) is dict]
    if len(dicts) != len(rows):  # bad records among them: row by row
        return {i for i, r in enumerate(rows) if type(r) is dict and any(n in t for t in r.values() for n in needles)}
    if not rows:
        return suspect
    for col in zip(*(r.values() for r in rows)):
        joined = "\n".join(col)
        starts = None
        for needle in needles:
            pos = joined.find(needle)
            if pos < 0:
                continue
            if starts is None:
                starts = list(accumulate((len(t) + 1 for t in col), initial=0))
            while pos >= 0:
                i = bisect_right(starts, pos) - 1
                suspect.add(i)
                pos = joined.find(needle, starts[i + 1])
    return suspect


def _entries(path: Path) -> tuple[list[tuple[str, str, Callable]], list[Path]]:
    """The files of a folder (and of the OPUS zips in it), or of one OPUS zip: (container display,
    file name, opener) each, and the files read (to hash)."""
    if path.is_file():
        return _zip_entries(path), [path]
    entries: list[tuple[str, str, Callable]] = []
    hashed: list[Path] = []
    for p in sorted(path.iterdir()):
        if p.is_file() and p.name.endswith(".zip") and zipfile.is_zipfile(p):
            entries += _zip_entries(p)
            hashed.append(p)
        elif p.is_file():
            entries.append((str(path), p.name, (lambda p=p: open(p, "rb"))))
            hashed.append(p)
    return entries, hashed


def by_lang_suffix(by_lang: dict, langs: list[str]) -> list[str]:
    return [by_lang[l][0].rsplit(".", 1)[1] for l in langs]


class _ZipMember(io.RawIOBase):
    """A zip member opened with its own ZipFile handle, so several members stream in lock-step."""

    def __init__(self, path: Path, member: str):
        self._zf = zipfile.ZipFile(path)
        self._fh = self._zf.open(member)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self._fh.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
            self._zf.close()
        super().close()


def _zip_entries(path: Path) -> list[tuple[str, str, Callable]]:
    with zipfile.ZipFile(path) as zf:
        names = sorted(i.filename for i in zf.infolist() if not i.is_dir())
    return [(str(path), n.rstrip("/").rsplit("/", 1)[-1],
             (lambda n=n: io.BufferedReader(_ZipMember(path, n), buffer_size=1 << 20))) for n in names]
