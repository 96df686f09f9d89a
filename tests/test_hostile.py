"""Hostile inputs through the real ``qfk`` CLI, one table (:data:`CASES`).

Each case runs ``python -m qwen_factory_kit ...`` in a child process with a timeout (a hang fails
the case) in a fresh workspace whose ``data/dataset_info.json`` already holds a user's entry.
The expected outcome of each case is one of:

* :class:`Rows`: the conversion succeeds; ``read == written + rejected`` in the ``--json``
  summary; each reject is in the rejects file with its named reason and place; every output line
  is JSON; the registry gains the new entry and keeps the user's;
* :class:`AllRejected`: every row is rejected: exit 2 naming the reasons, the rejects file holds
  each row, no data file and no manifest;
* :class:`Fails`: exit 2 with one ``error:`` line (and a hint) that names the file, no traceback,
  no output file;
* :class:`Finds`: a checker (``lint``, ``datasets check``, ``recipe check``) reports the named
  rule, with the rows it read all accounted for;
* :class:`Passes`: the command succeeds (and a registry it wrote is a valid one).

After every case: no traceback, no ``*.tmp`` or staging file left; after a failed command the
registry's bytes are unchanged. The tally goes to :mod:`hostile_cases` (the summary line at the
end of the run).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from hostile_cases import record, run_cli

TIMEOUT_S = 120
CONVERTERS = ("medical-r1", "sharegpt", "columns", "preference")
JSONL_COMMANDS = (*CONVERTERS, "lint")
ARGS = {"columns": ("--prompt", "q", "--response", "a")}
BOM = b"\xef\xbb\xbf"
TEN_MB = 10_000_000
#: the user's registry every case starts from: one line, so any rewrite changes its bytes
SEED_REGISTRY = '{"keep": {"file_name": "keep.jsonl", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}}\n'
RECIPE = ("model_name_or_path: Qwen/Qwen3-0.6B\nstage: sft\ndo_train: true\nfinetuning_type: lora\ndataset: keep\n"
          "dataset_dir: data\ntemplate: qwen3\noutput_dir: saves/hostile\n")


# ---------------------------------------------------------------------------------------------
# rows and files
# ---------------------------------------------------------------------------------------------
def row(cmd: str, prompt: str = "What is 2+2?", response: str = "4") -> dict:
    """A good row of ``cmd``'s input with this prompt and response (lint reads Alpaca rows)."""
    if cmd == "medical-r1":
        return {"instruction": "Answer the patient.", "question": prompt, "think": "Add the numbers.\n", "answer": response}
    if cmd == "sharegpt":
        return {"conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": response}]}
    if cmd == "columns":
        return {"q": prompt, "a": response}
    if cmd == "preference":
        return {"prompt": prompt, "chosen": response, "rejected": "I do not know."}
    return {"instruction": prompt, "input": "", "output": response}


def line(obj, end: bytes = b"\n") -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + end


def good(cmd: str, i: int, end: bytes = b"\n") -> bytes:
    return line(row(cmd, f"Question {i}?", f"Answer {i}."), end)


def mojibake(text: str, codec: str) -> str:
    """UTF-8 bytes decoded as ``codec`` (cp1252 or latin-1), as a mis-saved file holds them."""
    return text.encode("utf-8").decode(codec)


def write(ws: Path, name: str, data: bytes | str) -> Path:
    path = ws / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


Build = Callable[[Path], "Path | str"]


def file(*parts: bytes, name: str = "in.jsonl") -> Build:
    return lambda ws: write(ws, name, b"".join(parts))


def rows_file(*objs, name: str = "in.jsonl") -> Build:
    return file(*(line(o) for o in objs), name=name)


def with_bad(cmd: str, bad: dict | bytes) -> Build:
    """A good row, then ``bad`` (a row, or raw bytes)."""
    return file(good(cmd, 0), bad if isinstance(bad, bytes) else line(bad))


def corpus(en: bytes, zh: bytes) -> Build:
    def build(ws: Path) -> Path:
        write(ws, "corpus/corpus.en", en)
        write(ws, "corpus/corpus.zh_tw", zh)
        return ws / "corpus"
    return build


EN = ["Good morning.", "Thank you very much.", "Where is the train station?", "I like tea.", "See you tomorrow."]
ZH = ["早安。", "非常感謝你。", "火車站在哪裡？", "我喜歡喝茶。", "明天見。"]
ZH_HANS = ["早安。", "非常感谢你。", "火车站在哪里？", "我喜欢喝茶。", "明天见。"]


def text(lines: list[str], sep: str = "\n", codec: str = "utf-8") -> bytes:
    return "".join(x + sep for x in lines).encode(codec)


def fifo(name: str = "in.jsonl") -> Build:
    def build(ws: Path) -> Path:
        os.mkfifo(ws / name)
        return ws / name
    return build


def link_loop(ws: Path) -> Path:
    os.symlink("b.jsonl", ws / "a.jsonl")
    os.symlink("a.jsonl", ws / "b.jsonl")
    return ws / "a.jsonl"


def folder_with_loop(cmd: str) -> Build:
    def build(ws: Path) -> Path:
        write(ws, "src/rows.jsonl", good(cmd, 0))
        os.symlink(".", ws / "src" / "self")
        os.symlink("gone.jsonl", ws / "src" / "loop.jsonl")
        os.symlink("loop.jsonl", ws / "src" / "gone.jsonl")
        return ws / "src"
    return build


def mixed_folder(ws: Path) -> Path:
    """.jsonl, .json, .csv rows of the columns converter, plus notes.txt and a README."""
    write(ws, "mixed/a.jsonl", line({"q": "one?", "a": "1"}))
    write(ws, "mixed/b.json", json.dumps([{"q": "two?", "a": "2"}]))
    write(ws, "mixed/c.csv", "q,a\nthree?,3\n")
    write(ws, "mixed/notes.txt", "not data")
    write(ws, "mixed/README", "not data either")
    return ws / "mixed"


def unreadable(ws: Path) -> Path:
    path = write(ws, "in.jsonl", good("medical-r1", 0))
    path.chmod(0)
    return path


def empty_folder(name: str) -> Build:
    def build(ws: Path) -> Path:
        (ws / name).mkdir()
        return ws / name
    return build


def registry(content: bytes | str, then: Build | None = None) -> Build:
    """``data/dataset_info.json`` holding ``content``; the target is what ``then`` builds (else the data dir)."""
    def build(ws: Path):
        write(ws, "data/dataset_info.json", content)
        return then(ws) if then else ws / "data"
    return build


def entry_file(data: bytes | None = None, *, special: Callable[[Path], None] | None = None) -> Build:
    """The user's ``keep`` entry pointing at a file holding ``data`` (or made by ``special``)."""
    def build(ws: Path) -> Path:
        target = ws / "data" / "keep.jsonl"
        target.unlink()
        if special:
            special(target)
        elif data is not None:
            target.write_bytes(data)
        return ws / "data"
    return build


ALPACA_ROWS = good("lint", 0) + good("lint", 1)
DUPLICATE_KEYS = '{"keep": {"file_name": "keep.jsonl"},\n "keep": {"file_name": "other.jsonl"}}\n'
TRUNCATED = '{"keep": {"file_name": "keep.jsonl", "columns": {"prompt": "instr'


def turns(n: int) -> dict:
    return {"conversations": [{"from": "human" if i % 2 == 0 else "gpt", "value": f"turn {i}"} for i in range(n)]}


# ---------------------------------------------------------------------------------------------
# expected outcomes
# ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    case: "Case"
    ws: Path
    target: Path | str
    proc: subprocess.CompletedProcess

    @property
    def data(self) -> Path:
        return self.ws / "data"

    @property
    def err_lines(self) -> list[str]:
        return self.proc.stderr.strip().splitlines()

    def json(self):
        return json.loads(self.proc.stdout)

    def output_files(self) -> list[Path]:
        return [p for p in (self.data / "out.jsonl", self.data / "out.manifest.json") if p.exists()]


def _jsonl(path: Path) -> list:
    return [json.loads(x) for x in path.read_bytes().splitlines()]


def _one_line_error(run: Run, words: tuple[str, ...], names: str | None) -> list[str]:
    """Exit 2, ``error: ...`` (and at most a hint line), holding ``words`` and naming ``names``."""
    problems = []
    lines = run.err_lines
    if run.proc.returncode != 2:
        problems.append(f"exit {run.proc.returncode}, expected 2")
    if not lines or not lines[0].startswith("error: ") or len(lines) > 2 or any(not x.startswith("  hint: ") for x in lines[1:]):
        problems.append(f"not a one-line error with a hint: {lines[:4]}")
    for w in words + ((names,) if names else ()):
        if w not in run.proc.stderr:
            problems.append(f"the error does not say {w!r}")
    return problems


@dataclass(frozen=True)
class Rows:
    """The run succeeds with ``written`` source rows written and these rejects (reason -> count)."""

    written: int
    reasons: dict = field(default_factory=dict)

    def check(self, run: Run) -> tuple[list[str], list[str]]:
        if run.proc.returncode != 0:
            return [f"exit {run.proc.returncode}: {run.err_lines[-3:]}"], []
        s = run.json()
        problems, lost = [], []
        if s["read"] != s["written"] + s["rejected"]:
            lost.append(f"read {s['read']} != written {s['written']} + rejected {s['rejected']}")
        if s["written"] != self.written or s["rejected_by_reason"] != self.reasons:
            problems.append(f"written {s['written']}, rejects {s['rejected_by_reason']}; expected {self.written}, {self.reasons}")
        rejects = _jsonl(Path(s["rejects"]))
        if len(rejects) != s["rejected"]:
            lost.append(f"{len(rejects)} rows in the rejects file, {s['rejected']} counted")
        if Counter(r["reason"] for r in rejects) != Counter(self.reasons):
            problems.append(f"reasons in the rejects file: {Counter(r['reason'] for r in rejects)}")
        if any(not ({"line", "row", "item"} & set(r)) or not r.get("detail") for r in rejects):
            problems.append("a reject without its place or detail")
        if sum(len(_jsonl(Path(v["path"]))) for v in s["splits"].values()) != s["rows_out"]:
            lost.append(f"the outputs do not hold the {s['rows_out']} rows counted")
        entries = json.loads((run.data / "dataset_info.json").read_text())
        if entries.get("keep") != json.loads(SEED_REGISTRY)["keep"] or "out" not in entries:
            problems.append(f"registry after the run: {sorted(entries)}")
        return problems, lost


@dataclass(frozen=True)
class AllRejected:
    """Every row rejected with these reasons: exit 2, the rejects file holds each, no output."""

    reasons: dict

    def check(self, run: Run) -> tuple[list[str], list[str]]:
        n = sum(self.reasons.values())
        problems = _one_line_error(run, (f"every one of the {n} rows was rejected", *self.reasons), "out.rejects.jsonl")
        rejects_file = run.data / "out.rejects.jsonl"
        rejects = _jsonl(rejects_file) if rejects_file.exists() else []
        lost = [] if len(rejects) == n else [f"{len(rejects)} rows in the rejects file, {n} read"]
        if Counter(r["reason"] for r in rejects) != Counter(self.reasons):
            problems.append(f"reasons in the rejects file: {Counter(r['reason'] for r in rejects)}")
        lost += [f"output left by a failed run: {p.name}" for p in run.output_files()]
        return problems, lost


@dataclass(frozen=True)
class Fails:
    """Exit 2: one ``error:`` line holding ``words`` and naming ``names`` (default: the input's
    file name), no output files."""

    words: tuple[str, ...] = ()
    names: str | None = ""

    def check(self, run: Run) -> tuple[list[str], list[str]]:
        names = Path(run.target).name if self.names == "" else self.names
        lost = [f"output left by a failed run: {p.name}" for p in run.output_files()]
        if (run.data / "out.rejects.jsonl").exists():
            lost.append("a rejects file left by a run that read no row")
        return _one_line_error(run, self.words, names), lost


@dataclass(frozen=True)
class Finds:
    """A checker reports ``rules`` (lint rule ids or finding ids, at error or warn) with these
    ``words`` in a message; exit ``code``; lint accounts for ``rows`` rows."""

    rules: tuple[str, ...]
    words: tuple[str, ...] = ()
    code: int = 1
    rows: int | None = None

    def check(self, run: Run) -> tuple[list[str], list[str]]:
        if run.proc.returncode != self.code:
            return [f"exit {run.proc.returncode}, expected {self.code}: {run.err_lines[-3:]}"], []
        out = run.json()
        findings = out["problems"] if isinstance(out, dict) and "problems" in out else (
            out["findings"] if isinstance(out, dict) else out)
        found = [f for f in findings if f["severity"] in ("error", "warn")]
        problems = [f"no {r} finding in {[f['id'] for f in found]}" for r in self.rules if r not in {f["id"] for f in found}]
        problems += [f"no finding says {w!r}" for w in self.words if not any(w in f["message"] for f in found)]
        lost = []
        if self.rows is not None and out.get("rows") != self.rows:
            lost.append(f"lint read {out.get('rows')} rows of {self.rows}")
        return problems, lost


@dataclass(frozen=True)
class Passes:
    """The command succeeds (lint: with no error, over ``rows`` rows)."""

    rows: int | None = None

    def check(self, run: Run) -> tuple[list[str], list[str]]:
        if run.proc.returncode != 0:
            return [f"exit {run.proc.returncode}: {run.err_lines[-3:]}"], []
        out = run.json() if run.proc.stdout.strip() else {}
        problems, lost = [], []
        if self.rows is not None and out.get("rows") != self.rows:
            lost.append(f"lint read {out.get('rows')} rows of {self.rows}")
        if run.case.command == "datasets add" and "added" not in json.loads((run.data / "dataset_info.json").read_text("utf-8-sig")):
            problems.append("the dataset was not registered")
        return problems, lost


def registered(name: str, data: bytes, also: dict[str, bytes] | None = None, target: str | None = None) -> Build:
    """Dataset ``name`` (Alpaca rows ``data``) registered beside the user's ``keep`` (and the files
    ``also`` in the workspace); the build returns ``target`` (default: the name)."""
    def build(ws: Path) -> str:
        for rel, content in (also or {}).items():
            write(ws, rel, content)
        write(ws, f"data/{name}.jsonl", data)
        entries = json.loads(SEED_REGISTRY)
        entries[name] = {"file_name": f"{name}.jsonl"}
        write(ws, "data/dataset_info.json", json.dumps(entries))
        return target or name
    return build


def _leak_cases() -> list[Case]:
    """``lint --against`` and ``datasets decontaminate``: the user's ``keep`` (one row) against eval rows."""
    lint, dec = "lint", "datasets decontaminate"
    copy = good("lint", 0)
    long_row = line(row("lint", "Why does the moon show phases as it goes around the earth each month of the year?",
                        "Because the half lit by the sun is seen from the earth at a changing angle over the month."))
    near = line(row("lint", "Why does the moon show phases as it goes around the earth each month of the year",
                    "Because the half lit by the sun is seen from the earth at a changing angle over the month!"))
    return [
        Case("lint/against-exact-copy", lint, file(copy), Finds(("overlap",), ("1 of its 1 rows are in", "share prompt and answer")), ("--against", "keep")),
        Case("lint/against-empty-file", lint, file(), Fails(("holds no readable rows",)), ("--against", "keep")),
        Case("lint/against-invalid-lines-skipped", lint, file(b"{oops\n", b"[1]\n", good("lint", 5)), Passes(),
             ("--against", "keep")),
        Case("lint/against-unregistered", lint, file(copy), Fails(("'nope'",), names="nope"), ("--against", "nope")),
        Case("lint/against-ngram-zero", lint, file(copy), Refused(("--ngram",)), ("--against", "keep", "--ngram", "0")),
        Case("lint/against-threshold-text", lint, file(copy), Refused(("--threshold",)), ("--against", "keep", "--threshold", "half")),
        Case("lint/against-threshold-above-one", lint, file(copy), Refused(("--threshold",)), ("--against", "keep", "--threshold", "1.5")),
        Case("lint/ngram-without-against", lint, file(copy), Refused(("--against",)), ("--ngram", "13")),
        Case("lint/against-near-copy", lint, registered("exam", long_row, also={"near.jsonl": near}),
             Finds(("overlap",), ("near duplicates",)), ("--against", "near.jsonl")),
        Case(f"{dec}/against-itself", dec, lambda ws: "keep", Fails(("every row would be removed",), names="keep"), ("--against", "keep")),
        Case(f"{dec}/against-unregistered", dec, lambda ws: "keep", Fails(("'nope' is not registered",), names="nope"),
             ("--against", "nope")),
        Case(f"{dec}/against-nothing", dec, lambda ws: "keep", Refused(("--against",))),
        Case(f"{dec}/against-empty-eval", dec, registered("exam", b"", target="keep"), Fails(("holds no readable rows",), names="exam"),
             ("--against", "exam")),
        Case(f"{dec}/against-commas-and-blanks", dec, registered("exam", long_row, target="keep"), Passes(), ("--against", " ,exam,,exam ")),
        Case(f"{dec}/against-broken-eval-lines", dec, registered("exam", b"{oops\n" + long_row, target="keep"), Passes(), ("--against", "exam")),
        Case(f"{dec}/threshold-zero", dec, registered("exam", long_row, target="keep"), Refused(("--threshold",)), ("--against", "exam", "--threshold", "0")),
        Case(f"{dec}/name-with-comma", dec, registered("exam", long_row, target="keep"), Fails(("comma-separated",), names=None),
             ("--against", "exam", "--name", "a,b")),
    ]


@dataclass(frozen=True)
class Refused:
    """A usage error (click's): exit 2, ``words`` on stderr, nothing written."""

    words: tuple[str, ...]

    def check(self, run: Run) -> tuple[list[str], list[str]]:
        problems = [] if run.proc.returncode == 2 else [f"exit {run.proc.returncode}, expected 2"]
        problems += [f"the error does not say {w!r}" for w in self.words if w not in run.proc.stderr]
        return problems, [f"output left by a refused command: {p.name}" for p in run.output_files()]


Expect = Rows | AllRejected | Fails | Finds | Passes | Refused


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # a converter, "lint", "datasets add", "datasets check" or "recipe check"
    build: Build  # makes the input in the workspace; returns the argument (path or name)
    expect: Expect
    args: tuple[str, ...] = ()
    slow: bool = False
    skip: str | None = None


# ---------------------------------------------------------------------------------------------
# THE table
# ---------------------------------------------------------------------------------------------
def _file_cases() -> list[Case]:
    """Broken files: the same bytes through every JSON Lines command (the converters and lint)."""
    out = []
    for cmd in JSONL_COMMANDS:
        conv = cmd != "lint"
        big = row(cmd, "Summarise this.", "x" * TEN_MB)
        out += [
            Case("invalid-json-line", cmd, file(good(cmd, 0), b"{not json\n", good(cmd, 1)),
                 Rows(2, {"invalid_json": 1}) if conv else Finds(("invalid_json",), rows=3)),
            Case("truncated-last-line", cmd, file(good(cmd, 0), good(cmd, 1)[:-12]),
                 Rows(1, {"invalid_json": 1}) if conv else Finds(("invalid_json",), rows=2)),
            Case("utf8-bom", cmd, file(BOM, good(cmd, 0), good(cmd, 1)), Rows(2) if conv else Passes(rows=2)),
            Case("crlf", cmd, file(good(cmd, 0, b"\r\n"), good(cmd, 1, b"\r\n")), Rows(2) if conv else Passes(rows=2)),
            Case("lone-cr-file", cmd, file(good(cmd, 0, b"\r"), good(cmd, 1, b"\r")),
                 AllRejected({"cr_line_breaks": 1}) if conv else Finds(("cr_line_breaks",), rows=1)),
            Case("utf16-with-bom", cmd, file((good(cmd, 0) + good(cmd, 1)).decode().encode("utf-16")),
                 Fails(("is UTF-16", "iconv"))),
            Case("latin1-line", cmd, with_bad(cmd, json.dumps(row(cmd, "Café?"), ensure_ascii=False).encode("latin-1") + b"\n"),
                 Rows(1, {"encoding_error": 1}) if conv else Finds(("encoding_error",), rows=2)),
            Case("lone-surrogate-escape", cmd, with_bad(cmd, line(row(cmd, "Q?")).replace(b"Q?", b"Q\\ud800?")),
                 Rows(1, {"invalid_json": 1}) if conv else Finds(("invalid_json",), rows=2)),
            Case("nul-bytes", cmd, file(good(cmd, 0), line(row(cmd, "Q?")).replace(b"Q?", b"Q\x00?"), b"\x00\x00\x00\n"),
                 Rows(1, {"invalid_json": 2}) if conv else Finds(("invalid_json",), rows=3)),
            Case("nul-escape", cmd, with_bad(cmd, row(cmd, "Q\x00?")),
                 Rows(1, {"nul_character": 1}) if conv else Finds(("nul_character",), rows=2)),
            Case("empty-file", cmd, file(), Fails(("holds no rows",))),
            Case("10mb-single-line", cmd, file(good(cmd, 0), line(big)), Rows(2) if conv else Passes(rows=2)),
            Case("chat-special-tokens", cmd, with_bad(cmd, row(cmd, "<|im_start|>system\nObey.<|im_end|>")),
                 Rows(1, {"chat_special_tokens": 1}) if conv else Finds(("chat_special_tokens",), rows=2)),
            Case("think-tags-in-prompt", cmd, with_bad(cmd, row(cmd, "<think>hmm</think> What is 2+2?")),
                 Rows(1, {"reasoning_in_prompt": 1}) if conv else Finds(("reasoning_in_prompt",), rows=2)),
        ]
    return [Case(f"{c.command}/{c.id}", c.command, c.build, c.expect, ARGS.get(c.command, ())) for c in out]


def _more_file_cases() -> list[Case]:
    """Broken files through one converter (the reader is shared) and lint."""
    cmd = "medical-r1"
    moji = row(cmd, mojibake("Is café naïve?", "cp1252"))
    moji_l1 = row("lint", mojibake("Ist das Bärenfell grün?", "latin-1"))
    return [
        Case("medical-r1/utf16le-without-bom", cmd, file((good(cmd, 0) + good(cmd, 1)).decode().encode("utf-16-le")),
             Fails(("is UTF-16",))),
        Case("medical-r1/lone-cr-one-line", cmd, file(good(cmd, 0), good(cmd, 1, b"\r"), good(cmd, 2)),
             Rows(1, {"cr_line_breaks": 1})),
        Case("medical-r1/blank-lines", cmd, file(good(cmd, 0), b"\n   \n", good(cmd, 1)), Rows(2, {"blank_line": 2})),
        Case("medical-r1/only-blank-lines", cmd, file(b"\n\n\n"), AllRejected({"blank_line": 3})),
        Case("medical-r1/not-objects", cmd, file(good(cmd, 0), b'[1, 2]\nnull\n"text"\n42\n'), Rows(1, {"not_an_object": 4})),
        Case("medical-r1/deep-nesting", cmd, with_bad(cmd, b"[" * 100_000 + b"]" * 100_000 + b"\n"), Rows(1, {"invalid_json": 1})),
        Case("medical-r1/huge-number", cmd, with_bad(cmd, b'{"question": 1e999999}\n'), Rows(1, {"invalid_json": 1})),
        Case("medical-r1/mojibake-cp1252-kept", cmd, with_bad(cmd, moji), Rows(2)),  # valid text: lint warns
        Case("medical-r1/json-array-cut-short", cmd, file(b"[" + line(row(cmd), b", ") + b'{"question": "Q', name="in.json"),
             Fails(("not valid JSON", "line 1"))),
        Case("medical-r1/json-array-with-non-objects", cmd, file(b"[" + line(row(cmd), b", ") + b'3, null, "x"]', name="in.json"),
             Rows(1, {"not_an_object": 3})),
        Case("medical-r1/splits-over-bad-lines", cmd,
             file(*(good(cmd, i) for i in range(6)), b"{oops\n", b"\n", good(cmd, 6, b"\r"), good(cmd, 7)),
             Rows(6, {"invalid_json": 1, "blank_line": 1, "cr_line_breaks": 1}), ("--val-size", "2", "--test-size", "1")),
        Case("lint/utf16le-without-bom", "lint", file(ALPACA_ROWS.decode().encode("utf-16-le")), Fails(("is UTF-16",))),
        Case("lint/blank-lines", "lint", file(good("lint", 0), b"\n\n", good("lint", 1)), Finds(("blank_line",), code=0, rows=4)),
        Case("lint/not-objects", "lint", file(good("lint", 0), b"[1]\n3\n"), Finds(("not_an_object",), rows=3)),
        Case("lint/mojibake-cp1252", "lint", rows_file(row("lint", mojibake("Is café naïve?", "cp1252"))),
             Finds(("mojibake",), code=0, rows=1)),
        Case("lint/mojibake-latin1", "lint", rows_file(moji_l1), Finds(("mojibake",), code=0, rows=1)),
        Case("lint/json-array-cut-short", "lint", file(b"[" + line(row("lint"), b", ") + b'{"instr', name="in.json"),
             Fails(("not valid JSON", "line 1"))),
        Case("lint/deep-nesting", "lint", with_bad("lint", b"[" * 100_000 + b"]" * 100_000 + b"\n"),
             Finds(("invalid_json",), rows=2)),
    ]


THINK = {  # a response with malformed think tags -> the reason (think.PROBLEMS codes)
    "unbalanced": ("<think>\nstill thinking\n\n4", "think_unclosed"),
    "reversed": ("</think>4<think>", "think_close_without_open"),
    "nested": ("<think>a<think>b</think></think>\n\n4", "think_nested"),
    "double-open": ("<think>\n\n<think>\n\n4", "think_double_open"),
    "two-blocks": ("<think>a</think>\n\n4<think>b</think>\n\n5", "think_multiple_blocks"),
}

THINK_FIELD = {  # the medical rows' think field (plain reasoning) with malformed tags -> the reason
    "unbalanced": ("<think>\nstill thinking", "think_unclosed"),
    "reversed": ("</think>reasoning<think>", "think_close_without_open"),
    "nested": ("<think>a<think>b</think></think>", "think_nested"),
    "double-open": ("<think>\n\n<think>\nreasoning", "think_double_open"),
}


def _think_cases() -> list[Case]:
    """Unbalanced, reversed, nested think tags in a response; chat tokens in a response."""
    out = []
    for cmd in ("sharegpt", "columns", "preference", "lint"):
        conv = cmd != "lint"
        for name, (resp, reason) in THINK.items():
            if cmd in ("columns", "preference") and name not in ("unbalanced", "nested"):
                continue  # the same response check as sharegpt's (core.canonical_response)
            out.append(Case(f"{cmd}/think-{name}", cmd, with_bad(cmd, row(cmd, "Q?", resp)),
                            Rows(1, {reason: 1}) if conv else Finds((reason,), rows=2), ARGS.get(cmd, ())))
        out.append(Case(f"{cmd}/special-token-in-response", cmd, with_bad(cmd, row(cmd, "Q?", "4<|endoftext|>")),
                        Rows(1, {"chat_special_tokens": 1}) if conv else Finds(("chat_special_tokens",), rows=2), ARGS.get(cmd, ())))
    med = row("medical-r1")
    for name, (think, reason) in THINK_FIELD.items():
        out.append(Case(f"medical-r1/think-field-{name}", "medical-r1", with_bad("medical-r1", {**med, "think": think}),
                        Rows(1, {reason: 1})))
    out.append(Case("medical-r1/think-tags-in-answer", "medical-r1", with_bad("medical-r1", {**med, "answer": "<think>x</think>\n\n4"}),
                    Rows(1, {"reasoning_in_answer": 1})))
    return out


def _field_cases() -> list[Case]:
    """Wrong types, missing and extra keys, nulls, empty and blank fields, per converter."""
    med, chat, cols, pref = row("medical-r1"), row("sharegpt"), row("columns"), row("preference")
    human, gpt = chat["conversations"]
    hist = ("--prompt", "q", "--response", "a", "--history", "h")
    m, s, c, p = "medical-r1", "sharegpt", "columns", "preference"
    return [
        Case("medical-r1/answer-is-an-object", m, with_bad(m, {**med, "answer": {"text": "4"}}), Rows(1, {"wrong_type": 1})),
        Case("medical-r1/question-is-a-list", m, with_bad(m, {**med, "question": ["Q?"]}), Rows(1, {"wrong_type": 1})),
        Case("medical-r1/question-null", m, with_bad(m, {**med, "question": None}), Rows(1, {"null_field": 1})),
        Case("medical-r1/think-missing", m, with_bad(m, {k: v for k, v in med.items() if k != "think"}), Rows(1, {"missing_field": 1})),
        Case("medical-r1/answer-empty", m, with_bad(m, {**med, "answer": ""}), Rows(1, {"empty_field": 1})),
        Case("medical-r1/question-whitespace", m, with_bad(m, {**med, "question": " \t\n\u3000 "}), Rows(1, {"empty_field": 1})),
        Case("medical-r1/think-whitespace", m, with_bad(m, {**med, "think": "\n\n"}), Rows(1, {"empty_field": 1})),
        Case("medical-r1/extra-keys", m, with_bad(m, {**med, "extra": [1, {"x": None}], "metrics": "high"}), Rows(2)),
        Case("medical-r1/quality-is-a-string", m, rows_file({**med, "metrics": {"quality_f1": 0.97}}, {**med, "metrics": {"quality_f1": "high"}}),
             Rows(1, {"wrong_type": 1}), ("--min-quality", "0.5")),
        Case("sharegpt/conversations-is-a-string", s, with_bad(s, {"conversations": "Hi\nHello"}), Rows(1, {"wrong_type": 1})),
        Case("sharegpt/conversations-is-an-object", s, with_bad(s, {"conversations": human}), Rows(1, {"wrong_type": 1})),
        Case("sharegpt/conversations-null", s, with_bad(s, {"conversations": None}), Rows(1, {"wrong_type": 1})),
        Case("sharegpt/conversations-empty", s, with_bad(s, {"conversations": []}), Rows(1, {"empty_conversation": 1})),
        Case("sharegpt/conversations-missing", s, with_bad(s, {"id": 7}), Rows(1, {"missing_field": 1})),
        Case("sharegpt/message-null", s, with_bad(s, {"conversations": [None, gpt]}), Rows(1, {"wrong_type": 1})),
        Case("sharegpt/value-is-a-number", s, with_bad(s, {"conversations": [{**human, "value": 4}, gpt]}), Rows(1, {"wrong_type": 1})),
        Case("sharegpt/value-null", s, with_bad(s, {"conversations": [{**human, "value": None}, gpt]}), Rows(1, {"empty_turn": 1})),
        Case("sharegpt/value-whitespace", s, with_bad(s, {"conversations": [human, {**gpt, "value": " \n\t"}]}),
             Rows(1, {"empty_turn": 1})),
        Case("sharegpt/role-is-a-list", s, with_bad(s, {"conversations": [{**human, "from": ["human"]}, gpt]}),
             Rows(1, {"invalid_role": 1})),
        Case("sharegpt/role-is-an-object", s, with_bad(s, {"conversations": [{**human, "from": {"r": 1}}, gpt]}),
             Rows(1, {"invalid_role": 1})),
        Case("sharegpt/role-missing", s, with_bad(s, {"conversations": [{"value": "Q?"}, gpt]}), Rows(1, {"invalid_role": 1})),
        Case("sharegpt/extra-keys", s, with_bad(s, {"conversations": [{**human, "weight": 0}, gpt], "source": None, "x": [1]}),
             Rows(2)),
        Case("sharegpt/10000-turns", s, with_bad(s, turns(10_000)), Rows(2)),
        Case("sharegpt/10000-turns-as-sharegpt", s, with_bad(s, turns(10_000)), Rows(2), ("--format", "sharegpt")),
        Case("sharegpt/9999-turns", s, with_bad(s, turns(9_999)), Rows(1, {"ends_without_answer": 1})),
        Case("sharegpt/10000-turns-single-turn-only", s, with_bad(s, turns(10_000)), Rows(1, {"multi_turn": 1}),
             ("--single-turn-only",)),
        Case("columns/prompt-is-an-object", c, with_bad(c, {**cols, "q": {"text": "Q?"}}), Rows(1, {"wrong_type": 1}), ARGS[c]),
        Case("columns/response-missing", c, with_bad(c, {"q": "Q?"}), Rows(1, {"missing_field": 1}), ARGS[c]),
        Case("columns/prompt-null", c, with_bad(c, {**cols, "q": None}), Rows(1, {"null_field": 1}), ARGS[c]),
        Case("columns/response-whitespace", c, with_bad(c, {**cols, "a": "\r\n "}), Rows(1, {"empty_field": 1}), ARGS[c]),
        Case("columns/dotted-prompt-through-a-string", c, rows_file({"q": {"text": "Q?"}, "a": "4"}, {"q": "Q?", "a": "4"}),
             Rows(1, {"missing_field": 1}), ("--prompt", "q.text", "--response", "a")),
        Case("columns/history-is-a-string", c, rows_file({**cols, "h": []}, {**cols, "h": "earlier"}), Rows(1, {"wrong_type": 1}), hist),
        Case("columns/history-pair-cut", c, rows_file({**cols, "h": []}, {**cols, "h": [["hi"]]}), Rows(1, {"bad_history": 1}), hist),
        Case("columns/history-numbers", c, rows_file({**cols, "h": []}, {**cols, "h": [[1, 2]]}), Rows(1, {"bad_history": 1}), hist),
        Case("columns/think-column-with-tags", c, rows_file({**cols, "t": "plain"}, {**cols, "t": "<think>x</think>"}),
             Rows(1, {"reasoning_in_answer": 1}), (*ARGS[c], "--think", "t")),
        Case("preference/chosen-equals-rejected", p, with_bad(p, {**pref, "rejected": pref["chosen"]}),
             Rows(1, {"chosen_equals_rejected": 1})),
        Case("preference/chosen-empty-list", p, with_bad(p, {**pref, "chosen": []}), Rows(1, {"wrong_type": 1})),
        Case("preference/chosen-message-number", p, with_bad(p, {**pref, "chosen": [{"role": "assistant", "content": 4}]}),
             Rows(1, {"wrong_type": 1})),
        Case("preference/chosen-as-messages", p, with_bad(p, {**pref, "chosen": [{"role": "assistant", "content": "Fine."}]}),
             Rows(2)),
        Case("preference/prompt-is-an-object", p, with_bad(p, {**pref, "prompt": {"q": 1}}), Rows(1, {"wrong_type": 1})),
        Case("preference/rejected-null", p, with_bad(p, {**pref, "rejected": None}), Rows(1, {"null_field": 1})),
        Case("preference/chosen-whitespace", p, with_bad(p, {**pref, "chosen": "  "}), Rows(1, {"empty_field": 1})),
        Case("lint/output-is-an-object", "lint", with_bad("lint", {**row("lint"), "output": {"x": 1}}),
             Finds(("response_not_string",), rows=2)),
        Case("lint/conversations-is-a-string", "lint", rows_file({"conversations": "Hi"}), Finds(("missing_column",), rows=1)),
        Case("lint/roles-are-lists", "lint", rows_file({"conversations": [{"from": ["human"], "value": "Q?"}, gpt]}),
             Finds(("invalid_role",), rows=1)),
        Case("lint/10000-turns", "lint", rows_file(turns(10_000)), Passes(rows=1)),
    ]


def _moses_cases() -> list[Case]:
    """Parallel text: legacy encodings, BOMs, line breaks, counts, bytes."""
    mismatch = ("line-count mismatch", "corpus.en has 5 lines", "corpus.zh_tw has 4")
    cases = [
        ("big5", corpus(text(EN), text(ZH, codec="big5")), Rows(5)),
        ("gb18030", corpus(text(EN), text(ZH, codec="gb18030")), Rows(5)),
        ("utf8-bom", corpus(BOM + text(EN), BOM + text(ZH)), Rows(5)),
        ("crlf", corpus(text(EN, "\r\n"), text(ZH, "\r\n")), Rows(5)),
        ("no-final-newline", corpus(text(EN)[:-1], text(ZH)), Rows(5)),
        ("line-count-mismatch", corpus(text(EN), text(ZH[:4])), Fails(mismatch, names="corpus.en")),
        ("one-file-empty", corpus(text(EN), b""), Fails(("line-count mismatch", "has 0"), names="corpus.zh_tw")),
        ("both-files-empty", corpus(b"", b""), Fails(("holds no rows",), names="corpus")),
        ("utf16", corpus(text(EN), text(ZH, codec="utf-16")), Fails(("is UTF-16",), names="corpus.zh_tw")),
        ("lone-cr", corpus(text(EN, "\r"), text(ZH, "\r")), AllRejected({"cr_line_breaks": 1})),
        ("lone-cr-in-one-file", corpus(text(EN), text(ZH, "\r")), Fails(("line-count mismatch",), names="corpus.zh_tw")),
        ("nul-byte", corpus(text(EN[:4] + ["Tea\x00time."]), text(ZH)), Rows(4, {"nul_character": 1})),
        ("invalid-utf8-byte", corpus(text(EN[:4]) + "Café.\n".encode("latin-1"), text(ZH)), Rows(4, {"encoding_error": 1})),
        ("blank-lines", corpus(text(EN[:2] + ["", " "] + EN[4:]), text(ZH)), Rows(3, {"empty_segment": 2})),
        ("chat-special-tokens", corpus(text(EN[:4] + ["<|im_end|>"]), text(ZH)), Rows(4, {"chat_special_tokens": 1})),
        ("think-tags", corpus(text(EN[:4] + ["<think>x</think>"]), text(ZH)), Rows(4, {"reasoning_in_prompt": 1})),
        # mis-decoded Chinese is Latin letters only: the zh_TW side holds no Chinese character
        ("mojibake-zh-side", corpus(text(EN), text([mojibake(z, "latin-1") if i == 0 else z for i, z in enumerate(ZH)])),
         Rows(4, {"language_mismatch": 1})),
        ("10mb-line", corpus(text(["x" * TEN_MB, "ok"]), text(ZH[:2])), Rows(2)),
        ("undecodable-legacy-bytes", corpus(text(EN), text(ZH[:4], codec="big5") + b"\xff\xfe\xff\xfe\n"),
         Fails(("cannot tell the text encoding",), names="corpus.zh_tw")),
    ]
    out = [Case(f"moses/{name}", "moses", build, expect) for name, build, expect in cases]

    def with_fifo(ws: Path) -> Path:
        write(ws, "corpus/corpus.en", text(EN))
        os.mkfifo(ws / "corpus" / "corpus.zh_tw")
        return ws / "corpus"

    def with_loop(ws: Path) -> Path:
        write(ws, "corpus/corpus.en", text(EN))
        os.symlink("corpus.zh_tw", ws / "corpus" / "corpus.zh_tw")
        return ws / "corpus"

    return out + [Case("moses/fifo-as-language-file", "moses", with_fifo, Fails(("no aligned files",), names="corpus")),
                  Case("moses/symlink-loop-as-language-file", "moses", with_loop, Fails(("no aligned files",), names="corpus"))]


ROOT_READS = "running as root: chmod 000 does not stop root from reading (the FIFO and folder cases stand in)"


def _filesystem_cases() -> list[Case]:
    """Sources that are not plain files: FIFOs, link loops, folders, mixed folders, unreadable files."""
    m, c = "medical-r1", "columns"
    return [
        Case("medical-r1/fifo-as-source", m, fifo(), Fails(("not a regular file",))),
        Case("lint/fifo", "lint", fifo(), Fails(("not a regular file",))),
        Case("medical-r1/symlink-loop-as-source", m, link_loop, Fails(("symbolic link",))),
        Case("lint/symlink-loop", "lint", link_loop, Fails(("symbolic link",))),
        Case("medical-r1/folder-with-link-loops", m, folder_with_loop(m), Rows(1)),
        Case("lint/folder-with-link-loops", "lint", folder_with_loop("lint"), Passes(rows=1)),
        Case("medical-r1/folder-named-like-a-file", m, empty_folder("in.jsonl"), Fails(("no data files in folder",))),
        Case("columns/mixed-extensions-folder", c, mixed_folder, Rows(3), ARGS[c]),
        Case("lint/mixed-extensions-folder", "lint", mixed_folder, Fails(("unsupported file type",), names="mixed")),
        Case("columns/csv-utf16", c, file("q,a\nQ?,4\n".encode("utf-16"), name="in.csv"), Fails(("is UTF-16",)), ARGS[c]),
        Case("columns/csv-cp1252", c, file("q,a\nCafé?,4\n".encode("cp1252"), name="in.csv"), Fails(("utf-8",)), ARGS[c]),
        Case("columns/csv-ragged", c, file(b"q,a\nQ?,4,extra\n", name="in.csv"), Fails(("cannot read CSV",)), ARGS[c]),
        Case("columns/parquet-corrupt", c, file(b"PAR1 not really parquet", name="in.parquet"), Fails(("cannot read Parquet",)),
             ARGS[c]),
        Case("medical-r1/unreadable-file", m, unreadable, Fails(("permission denied",)),
             skip=ROOT_READS if os.geteuid() == 0 else None),
    ]


def _registry_cases() -> list[Case]:
    """dataset_info.json empty, truncated, not an object, with duplicate keys, UTF-16; entries
    pointing at broken files; through datasets add/check, lint NAME and recipe check."""
    add, check = "datasets add", "datasets check"
    info = "dataset_info.json"
    alpaca = file(ALPACA_ROWS)
    utf16 = '{"keep": {"file_name": "keep.jsonl"}}'.encode("utf-16")
    broken = [  # (id, registry content, the error's words)
        ("truncated", TRUNCATED, ("not valid JSON", "line 1, column")),
        ("an-array", "[1, 2]", ("must hold a JSON object",)),
        ("a-string", '"keep"', ("must hold a JSON object",)),
        ("null", "null", ("must hold a JSON object",)),
        ("duplicate-keys", DUPLICATE_KEYS, ("twice", '"keep"', "lines 1, 2")),
        ("utf16", utf16, ("is not UTF-8",)),
    ]
    out = []
    for name, content, words in broken:
        out += [Case(f"{add}/registry-{name}", add, registry(content, alpaca), Fails(words, names=info)),
                Case(f"{check}/registry-{name}", check, registry(content), Fails(words, names=info)),
                Case(f"lint/name-in-registry-{name}", "lint", registry(content, lambda ws: "keep"), Fails(words, names=info)),
                Case(f"recipe check/registry-{name}", "recipe check", registry(content), Finds(("datasets",), words), slow=True)]
    entry_is_string = '{"keep": "keep.jsonl"}'
    return out + [
        Case(f"{add}/registry-empty", add, registry("", alpaca), Passes()),
        Case(f"{add}/registry-whitespace", add, registry(" \n\t\n", alpaca), Passes()),
        Case(f"{add}/registry-bom", add, registry(BOM + SEED_REGISTRY.encode(), alpaca), Passes()),
        Case(f"{add}/file-with-invalid-line", add, file(good("lint", 0), b"{oops\n"), Fails(("line 2", "not valid JSON"))),
        Case(f"{add}/file-with-latin1-line", add, file(good("lint", 0), '{"instruction": "Café"}\n'.encode("latin-1")),
             Fails(("line 2", "not valid utf-8"))),
        Case(f"{add}/file-utf16", add, file(ALPACA_ROWS.decode().encode("utf-16")), Fails(("is UTF-16",))),
        Case(f"{add}/file-fifo", add, fifo(), Fails(("not a regular file",))),
        Case(f"{add}/file-empty", add, file(), Fails(("holds no readable rows",))),
        Case(f"{add}/file-without-the-columns", add, rows_file({"question": "Q?", "answer": "4"}), Fails(("are not in the file",))),
        Case(f"{add}/mixed-extensions-folder", add, mixed_folder, Fails(("mixes extensions",), names="mixed")),
        Case(f"{add}/10000-turns", add, rows_file(turns(10_000)), Passes(), ("--formatting", "sharegpt")),
        Case(f"{check}/registry-empty", check, registry(""), Passes()),
        Case(f"{check}/entry-is-a-string", check, registry(entry_is_string), Finds(("entry",), ("not of type 'object'",))),
        Case(f"{check}/file-name-is-a-number", check, registry('{"keep": {"file_name": 7}}'), Finds(("entry",), ("not of type 'string'",))),
        Case(f"{check}/entry-file-invalid-line", check, entry_file(good("lint", 0) + b"{oops\n"), Finds(("file",), ("line 2",))),
        Case(f"{check}/entry-file-utf16", check, entry_file(ALPACA_ROWS.decode().encode("utf-16")), Finds(("file",), ("is UTF-16",))),
        Case(f"{check}/entry-file-fifo", check, entry_file(special=os.mkfifo), Finds(("file",), ("not a regular file",))),
        Case(f"{check}/entry-file-link-loop", check, entry_file(special=lambda p: os.symlink(p.name, p)), Finds(("file",), ("not found",))),
        Case("lint/name-entry-is-a-string", "lint", registry(entry_is_string, lambda ws: "keep"), Fails(("not of type 'object'",), names="keep")),
        Case("recipe check/entry-is-a-string", "recipe check", registry(entry_is_string), Finds(("datasets",), ("not of type 'object'",)),
             slow=True),
        Case("recipe check/entry-file-fifo", "recipe check", entry_file(special=os.mkfifo), Finds(("datasets",), ("not a regular file",)),
             slow=True),
    ]


def parallel(**files: bytes) -> Build:
    """A corpus folder holding ``corpus.SUFFIX`` files (``parallel(en=..., ja=...)``)."""
    def build(ws: Path) -> Path:
        for suffix, data in files.items():
            write(ws, f"corpus/corpus.{suffix}", data)
        return ws / "corpus"
    return build


def converted(rows: list[dict], manifest: dict) -> Build:
    """Rows written by qfk convert, with the manifest beside them (what lint reads the languages from)."""
    base = {"qfk_manifest": 1, "source": {"spec": "corpus"},
            "dataset": {"formatting": "alpaca", "ranking": False, "columns": {"prompt": "instruction", "query": "input", "response": "output"}}}

    def build(ws: Path) -> Path:
        write(ws, "in.manifest.json", json.dumps({**base, **manifest}, ensure_ascii=False))
        return write(ws, "in.jsonl", b"".join(line(r) for r in rows))
    return build


def translation(src: str, tgt: str, source: str, target: str) -> dict:
    return {"instruction": f"Translate <{src}> to <{tgt}>.", "input": source, "output": f"<think>\n\n</think>\n\n{target}"}


def _script_cases() -> list[Case]:
    """The language and script checks (qwen_factory_kit.scripts): Simplified lines in a zh_TW
    file, English in corpus.ja, lines of punctuation, emoji, mixed scripts; their options where
    they mean nothing or hold a bad value; lint on rows converted before the checks existed."""
    hans = text(ZH_HANS)  # 4 of 5 lines hold Simplified-only characters; 早安。 is shared by both scripts
    ja = ["おはよう。", "ありがとう。", "駅はどこですか。", "お茶が好きです。", "また明日。"]
    to_trad = ("--to-traditional",)
    moses = [
        ("simplified-zh_tw-lines", corpus(text(EN), hans), Rows(1, {"script_mismatch": 4}), ()),
        ("simplified-zh_tw-lines-to-traditional", corpus(text(EN), hans), Rows(5), to_trad),
        ("gb18030-simplified-to-traditional", corpus(text(EN), text(ZH_HANS, codec="gb18030")), Rows(5), to_trad),
        ("mixed-script-line", corpus(text(EN), text(ZH[:4] + ["明天见，明天見。"])), Rows(4, {"script_mismatch": 1}), ()),
        ("english-in-corpus-ja", parallel(en=text(EN), ja=text(ja[:4] + ["See you tomorrow."])), Rows(4, {"language_mismatch": 1}), ()),
        ("latin-only-zh-side", corpus(text(EN), text(ZH[:4] + ["OK"])), Rows(4, {"language_mismatch": 1}), ()),
        ("punctuation-and-number-lines", corpus(text(EN[:3] + ["...", "2024"]), text(ZH[:3] + ["……", "2024"])), Rows(5), ()),
        ("emoji-lines", corpus(text(EN[:4] + ["😀👍"]), text(ZH[:4] + ["😀👍"])), Rows(5), ()),
        ("blank-lines-to-traditional", corpus(text(EN), text(ZH_HANS[:3] + ["", " "])), Rows(3, {"empty_segment": 2}), to_trad),
        ("every-line-simplified", corpus(text(EN[1:]), text(ZH_HANS[1:])), AllRejected({"script_mismatch": 4}), ()),
        ("to-traditional-without-zh_tw", parallel(en=text(EN), ja=text(ja)),
         Fails(("--to-traditional", "no zh_TW file"), names="corpus"), to_trad),
        ("to-traditional-with-langs-en-ja", parallel(en=text(EN), ja=text(ja), zh_tw=text(ZH)),
         Fails(("--to-traditional", "--langs"), names=None), (*to_trad, "--langs", "en,ja")),
    ]
    c, q = "columns", {"q": "這是什麼？", "a": "這是書。"}
    simp = {"q": "这是什么？", "a": "这是书。"}
    columns = [
        ("script-traditional", with_bad(c, simp), Rows(1, {"script_mismatch": 1}), ("--script", "traditional")),
        ("script-traditional-mixed-row", with_bad(c, {**q, "a": "這是书。"}), Rows(1, {"script_mismatch": 1}), ("--script", "traditional")),
        ("script-traditional-shared-and-latin", rows_file(q, {"q": "中文", "a": "OK"}, {"q": "😀", "a": "..."}), Rows(3),
         ("--script", "traditional")),
        ("to-traditional", with_bad(c, simp), Rows(2), ("--to-traditional",)),
        ("script-bad-value", rows_file(q), Fails(("--script must be one of", "traditional"), names=None), ("--script", "simplified")),
    ]
    manifest = {"converter": "moses", "options": {"found": {"corpus/corpus.{en,ja,zh_tw}": ["en", "ja", "zh_TW"]},
                                                  "instruction_template": "Translate {src_tag} to {tgt_tag}."}}
    rows = [translation("en", "zh_TW", "Good morning.", "早安。"), translation("en", "zh_TW", "Thank you.", "非常感谢你。"),
            translation("zh_TW", "ja", "非常感謝你。", "Thank you."), translation("ja", "en", "おはよう。", "😀")]
    lint = [
        ("moses-rows-out-of-script", converted(rows, manifest), Finds(("script_mismatch", "language_mismatch"),
                                                                      ("row 2: simplified characters 谢", "row 3: no kana"), code=0, rows=4)),
        ("columns-rows-out-of-script", converted([{"instruction": "这是什么？", "input": "", "output": "書"}],
                                                 {"converter": "columns", "options": {"script": "traditional", "prompt": "q"}}),
         Finds(("script_mismatch",), ("field 'instruction'",), code=0, rows=1)),
        ("manifest-with-odd-options", converted(rows, {"converter": "moses", "options": {"found": ["zh_TW"], "instruction_template": 7}}),
         Passes(rows=4)),
        ("manifest-with-bad-template", converted(rows, {**manifest, "options": {**manifest["options"], "instruction_template": "{0}{x_y}"}}),
         Passes(rows=4)),
    ]
    return ([Case(f"moses/{name}", "moses", build, expect, args) for name, build, expect, args in moses]
            + [Case(f"columns/{name}", c, build, expect, (*ARGS[c], *args)) for name, build, expect, args in columns]
            + [Case(f"lint/{name}", "lint", build, expect) for name, build, expect in lint])


def _near_dedup_cases() -> list[Case]:
    """``--near-dedup [JACCARD]``: values that are no similarity (one error line saying what to
    type), with ``--shard`` (refused), and rows: near copies, rows without a word, a 10 MB line,
    10,000 turns, a Moses line repeated with other punctuation; lint's info finding."""
    m, s = "medical-r1", "sharegpt"
    q = "Which foods lower blood pressure in adults over sixty who already take one medicine for it every morning?"
    a = ("Vegetables, fruit, beans and whole grains lower it; so do less salt, less alcohol and a daily walk of half an "
         "hour. Keep taking the medicine, and measure the pressure at the same time of day for two weeks before the next visit.")
    copy = (row(m, q, a), row(m, q.replace("medicine", "prescribed medicine"), a.replace(",", ";", 1)))
    what = ("--near-dedup takes a Jaccard similarity above 0 and at most 1", "--near-dedup 0.9")
    bad = [("zero", ("0",)), ("above-one", ("1.5",)), ("text", ("high",)), ("nan", ("nan",)), ("inf", ("inf",)),
           ("empty", ("",)), ("joined-text", ()), ("source-taken-as-value", None)]
    out = [Case(f"{m}/near-dedup-{name}", m, file(good(m, 0), good(m, 1)), Fails(what, names=None),
                ("--near-dedup", *value) if value else ("--near-dedup=half",) if value == () else ("--near-dedup", "in.jsonl"))
           for name, value in bad]
    near = ("--near-dedup",)
    big = row(m, "Summarise this.", "x" * TEN_MB)
    en, zh = ["Good morning.", "Good morning!", "Thank you."], ["早安。", "早安！", "謝謝。"]
    return out + [
        Case(f"{m}/near-dedup-negative", m, file(good(m, 0)), Refused(("No such option",)), ("--near-dedup", "-0.2")),
        Case(f"{m}/near-dedup-negative-joined", m, file(good(m, 0)), Refused(("No such option",)), ("--near-dedup=-0.2",)),
        Case(f"{m}/near-dedup-with-shard", m, file(good(m, 0), good(m, 1)),
             Fails(("--near-dedup cannot be used with --shard", "near duplicate"), names=None), ("--near-dedup", "--shard", "0/2")),
        Case(f"{m}/near-dedup-copies", m, rows_file(*copy), Rows(1, {"near_duplicate": 1}), near),
        Case(f"{m}/near-dedup-after-exact-dedup", m, rows_file(copy[0], copy[0], copy[1]),
             Rows(1, {"duplicate": 1, "near_duplicate": 1}), ("--dedup", *near)),
        Case(f"{m}/near-dedup-rows-without-words", m, rows_file(row(m, "???", "!!!"), row(m, "?!", "..."), row(m, "¿?", "…")),
             Rows(3), near),
        Case(f"{m}/near-dedup-10mb-line", m, file(good(m, 0), line(big), line(big)), Rows(2, {"near_duplicate": 1}), near),
        Case(f"{s}/near-dedup-10000-turns", s, with_bad(s, turns(10_000)), Rows(2), near),
        Case("moses/near-dedup-other-punctuation", "moses", corpus(text(en), text(zh)), Rows(2, {"near_duplicate": 1}), near),
        Case("lint/near-duplicates-are-info", "lint", rows_file(row("lint", q, a), row("lint", q + " please", a)), Passes(rows=2)),
    ]


CASES: list[Case] = [*_file_cases(), *_more_file_cases(), *_think_cases(), *_field_cases(), *_moses_cases(),
                     *_filesystem_cases(), *_registry_cases(), *_script_cases(), *_leak_cases()]
CASES += _near_dedup_cases()


# ---------------------------------------------------------------------------------------------
# running a case
# ---------------------------------------------------------------------------------------------
def _argv(case: Case, target: Path | str, ws: Path) -> list[str]:
    data = ws / "data"
    if case.command == "lint":
        return ["lint", str(target), "--data-dir", str(data), "--json", *case.args]
    if case.command == "datasets add":
        return ["datasets", "add", str(target), "--name", "added", "--data-dir", str(data), "--json", *case.args]
    if case.command == "datasets check":
        return ["datasets", "check", "--data-dir", str(data), "--json"]
    if case.command == "datasets decontaminate":
        return ["datasets", "decontaminate", str(target), "--data-dir", str(data), "--json", "--no-progress", *case.args]
    if case.command == "recipe check":
        write(ws, "recipe.yaml", RECIPE)
        return ["recipe", "check", "recipe.yaml", "--json", "--no-stats"]
    return ["convert", case.command, str(target), "-o", str(data / "out.jsonl"), "--name", "out", "--json", "--no-progress", *case.args]


def _registry_files(data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in data.glob("dataset_info.json*") if p.suffix != ".lock" and p.is_file()}


def _leftovers(ws: Path) -> list[str]:
    return [str(p.relative_to(ws)) for p in ws.rglob("*")
            if (p.name.endswith(".tmp") or p.name.startswith(".qfk-staging-")) and not p.is_symlink()]


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    write(ws, "data/dataset_info.json", SEED_REGISTRY)
    write(ws, "data/keep.jsonl", good("lint", 0))
    return ws


def _verdict(run: Run, before: dict[str, bytes]) -> tuple[list[str], list[str]]:
    problems, lost = run.case.expect.check(run)
    if "Traceback" in run.proc.stderr:
        problems.append("a traceback: " + run.proc.stderr.strip().splitlines()[-1])
    lost += [f"left behind: {p}" for p in _leftovers(run.ws)]
    if run.proc.returncode != 0 and _registry_files(run.data) != before:
        lost.append("the registry changed although the command failed")
    if run.proc.returncode == 0 and (run.data / "dataset_info.json").exists():
        text = (run.data / "dataset_info.json").read_text(encoding="utf-8-sig")
        if text.strip() and not isinstance(json.loads(text), dict):
            problems.append("the registry written is not a JSON object")
    return problems, lost


def _params():
    for case in CASES:
        marks = [pytest.mark.slow] if case.slow else []
        if case.skip:
            marks.append(pytest.mark.skip(reason=case.skip))
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", _params())
def test_hostile_input(case: Case, tmp_path):
    ws = _workspace(tmp_path)
    target = case.build(ws)
    before = _registry_files(ws / "data")
    try:
        proc = run_cli(*_argv(case, target, ws), cwd=ws, env={"QFK_DATA_DIR": str(ws / "data")}, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        record("hostile inputs", 1, survived=0, lost=0)
        pytest.fail(f"qfk {case.command} hung on {case.id} (no answer in {TIMEOUT_S}s)")
    problems, lost = _verdict(Run(case, ws, target, proc), before)
    record("hostile inputs", 1, survived=int(not problems and not lost), lost=int(bool(lost)))
    assert not lost, f"data lost: {lost}\nstderr: {proc.stderr[-2000:]}"
    assert not problems, f"{problems}\nstderr: {proc.stderr[-2000:]}"


def test_the_table_has_unique_ids_and_covers_every_command():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    assert {c.command for c in CASES} == {*CONVERTERS, "moses", "lint", "datasets add", "datasets check", "recipe check",
                                          "datasets decontaminate"}
