"""``qfk lint``: what LLaMA-Factory would silently drop, truncate or train wrongly, found before
the GPU does.

Rules are small functions over one row (or the whole file) with an id, a severity and a fix hint
(:data:`RULES`); each problem found is a :class:`~qwen_factory_kit.findings.Finding` whose ``where``
names the row and field (``row 12, field output``) and whose ``row`` holds the row number. Rows are
read with the streaming readers; the registry entry (or the manifest, or the row keys) says which
columns hold prompts and responses. Where the manifest says in which language or Chinese script
the texts are (a Moses conversion, a columns conversion with --script), the rows written outside
it are counted (:class:`ScriptRule`): one warning per rule, with example rows and the command that
fixes them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import QfkError
from .findings import Finding
from .io.readers import BadRecord
from .lfformat import turn_problem
from .rowtext import Layout, layout_from  # noqa: F401  (re-exported: lint.Layout, lint.layout_from)
from .scripts import LANGUAGE_MISMATCH, SCRIPT_CHOICES, SCRIPT_MISMATCH, checker
from .think import PROBLEMS, ParsedResponse, ThinkTally, find_special_tokens, has_think_tags, parse_response

if TYPE_CHECKING:
    from .neardup import NearRule

TEMPLATES_NOTHINK = ("qwen3_nothink", "qwen3_5_nothink")

#: rule id -> (severity: error | warn, what it means, how to fix it)
RULES: dict[str, tuple[str, str, str]] = {
    **{code: ("error", text, "rewrite it as <think>\\n...\\n</think>\\n\\nanswer (qfk convert normalises or rejects these)")
       for code, text in PROBLEMS.items()},
    "think_noncanonical": ("error", "think block whitespace is not '<think>\\n...\\n</think>\\n\\n': LLaMA-Factory will not strip it "
                           "under enable_thinking: false and trains it verbatim", "re-convert with qfk convert (it writes the canonical form)"),
    "chat_special_tokens": ("error", "chat control tokens inside a field: the chat template would be applied twice",
                            "remove <|im_start|>/<|im_end|>/<|endoftext|> from the text; keep plain content"),
    "reasoning_in_prompt": ("error", "<think> tags in a prompt-side field", "move the reasoning into the response"),
    # the ShareGPT turn rule: ids are the codes of lfformat.turn_problem (the converter's reject reasons)
    "empty_conversation": ("error", "the conversation has no user/assistant turns: LLaMA-Factory drops the row",
                           "add the turns or drop the row"),
    "invalid_role": ("error", "a role the tags block does not name: LLaMA-Factory drops the row ('Invalid role tag')",
                     "add the role to the tags block (user_tag/assistant_tag/...), or convert with qfk convert sharegpt"),
    "system_not_first": ("error", "a system turn after the first message: LLaMA-Factory drops the row", "put the system prompt first"),
    "role_order": ("error", "turns do not alternate user/assistant: LLaMA-Factory drops the row ('Invalid role tag')",
                   "fix the order, or convert with qfk convert sharegpt (rejects such rows with a reason)"),
    "ends_without_answer": ("error", "the conversation does not end with an assistant turn: LLaMA-Factory drops the row "
                            "('Invalid message count')", "add the answer or remove the trailing user turn"),
    # rows the reader cannot parse: ids are the readers' reject reasons (qwen_factory_kit.io.readers)
    "invalid_json": ("error", "the line is not valid JSON: LLaMA-Factory's JSON loader fails on the whole file",
                     "fix or drop the line (qfk convert rejects it with its reason)"),
    "encoding_error": ("error", "the line is not valid UTF-8: LLaMA-Factory's JSON loader fails on the whole file",
                       "save the file as UTF-8 (qfk convert --encoding NAME reads other encodings)"),
    "not_an_object": ("error", "the row is not a JSON object", "make every line one {...} object"),
    "cr_line_breaks": ("error", "carriage returns (CR) where line breaks (LF) belong: the rows on this line are not checked",
                       "convert the line endings, for example: tr '\\r' '\\n' < IN > OUT"),
    "blank_line": ("warn", "an empty line", "remove it"),
    "nul_character": ("error", "a NUL character (\\x00) in a field: binary data or a mis-decoded file",
                      "re-read the source with the right --encoding, or drop the row"),
    "response_not_string": ("error", "the response is not a string: LLaMA-Factory drops the row", "make it a string"),
    "empty_prompt": ("error", "empty prompt", "fill it or drop the row"),
    "empty_response": ("error", "empty response", "fill it or drop the row"),
    "missing_column": ("error", "a registered column is missing from the row", "fix the columns block or the row"),
    "duplicate_row": ("warn", "exact duplicate of an earlier row", "deduplicate (qfk convert ... --dedup)"),
    "conflicting_answers": ("warn", "same prompt as an earlier row with a different answer", "keep one answer per prompt, or check the data"),
    "mojibake": ("warn", "text looks mis-decoded (ftfy would change it)", "re-read the source with the right --encoding"),
    "mixed_think_mode": ("warn", "the file mixes rows with and without reasoning",
                         "train with template qwen3 and enable_thinking: null (mixed), or split the file"),
    "empty_block_with_nothink": ("error", "explicit empty think blocks with template qwen3_nothink are trained as literal text",
                                 "convert with --empty-think omit, or train with template qwen3 + enable_thinking: false"),
    "reasoning_stripped": ("error", "reasoning rows with enable_thinking: false: LLaMA-Factory strips the reasoning, only answers are trained",
                           "use enable_thinking: true (all rows reason) or null (mixed)"),
    "think_tags_with_nothink": ("warn", "reasoning rows with template qwen3_nothink: the think block is trained as plain text",
                                "use template qwen3 for reasoning data"),
    # the scripts rules (qwen_factory_kit.scripts): ids are the converters' reject reasons
    SCRIPT_MISMATCH: ("warn", "rows with Simplified Chinese characters where the manifest says Traditional (zh_TW)",
                      "re-convert with --to-traditional (OpenCC s2twp), or without it to reject these rows"),
    LANGUAGE_MISMATCH: ("warn", "rows with a text that has no character of its language's script (English in a ja line)",
                        "re-convert with the current qfk convert (it rejects these rows), or fix the source files"),
}


@dataclass
class LintReport:
    path: str
    rows: int = 0
    problems: list[Finding] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    think: dict = field(default_factory=dict)

    def total(self, severity: str) -> int:
        return sum(v for (_, s), v in self.counts.items() if s == severity)

    def summary(self) -> dict:
        return {"path": self.path, "rows": self.rows, "errors": self.total("error"), "warnings": self.total("warn"),
                "by_rule": {r: v for (r, s), v in sorted(self.counts.items())}, "think": self.think,
                "problems": [p.as_dict() for p in self.problems]}


def _problem(rule: str, row: int | None, field_name: str | None = None, detail: str = "") -> Finding:
    """The finding of ``rule`` at ``row`` (None: the whole file) and ``field_name`` (a column, or ``message N``)."""
    severity, text, hint = RULES[rule]
    return Finding(rule, severity, _where(row, field_name), f"{text}{' (' + detail + ')' if detail else ''}", hint, row)


def _where(row: int | None, field_name: str | None) -> str | None:
    """``row 12, field output``, ``row 3, message 2``, ``row 5``, or None for the whole file."""
    parts = [f"row {row}"] if row is not None else []
    if field_name:
        parts.append(field_name if field_name.startswith("message ") else f"field {field_name}")
    return ", ".join(parts) or None


# --------------------------------------------------------------------------------------------
# row model: which texts are prompts and which are responses
# --------------------------------------------------------------------------------------------
# Layout and layout_from live in rowtext (low in the import graph: the converters' core uses them too)


def _texts(row: dict, lay: Layout) -> Iterator[tuple[str, str, Any]]:
    """(kind, field name, value) for every text of a row; kind is prompt | response | system | bad."""
    cols = lay.columns
    if lay.formatting == "sharegpt":
        msgs = row.get(cols.get("messages", "conversations"))
        if not isinstance(msgs, list):
            yield "bad", "missing_column", cols.get("messages")
            return
        t = lay.tags
        if cols.get("system") and row.get(cols["system"]):
            yield "system", cols["system"], row[cols["system"]]
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                continue
            role, value = m.get(t.get("role_tag", "from")), m.get(t.get("content_tag", "value"))
            kind = "response" if role in (t.get("assistant_tag"), t.get("function_tag")) else ("system" if role == t.get("system_tag") else "prompt")
            yield kind, f"message {i}", value
        return
    for key in ("prompt", "query", "system"):
        col = cols.get(key)
        if col:
            if col not in row:
                yield "bad", "missing_column", col
            else:
                yield ("system" if key == "system" else "prompt"), col, row[col]
    for key in (("chosen", "rejected") if lay.ranking else ("response",)):
        col = cols.get(key)
        if col:
            if col not in row:
                yield "bad", "missing_column", col
            else:
                yield "response", col, row[col]
    hcol = cols.get("history")
    if hcol and isinstance(row.get(hcol), list):
        for i, pair in enumerate(row[hcol]):
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                yield "prompt", f"{hcol}[{i}][0]", pair[0]
                yield "response", f"{hcol}[{i}][1]", pair[1]


def _sharegpt_order(row: dict, lay: Layout, n: int) -> list[Finding]:
    """LLaMA-Factory's turn rule (:func:`~qwen_factory_kit.lfformat.turn_problem`) on one row."""
    msgs = row.get(lay.columns.get("messages", "conversations"))
    if not isinstance(msgs, list) or lay.ranking:  # ranking rows end with the user's turn: chosen/rejected answer it
        return []
    role_tag = lay.tags.get("role_tag", "from")
    positions = [i for i, m in enumerate(msgs) if isinstance(m, dict)]
    found = turn_problem([msgs[i].get(role_tag) for i in positions], lay.tags, positions=positions)
    return [_problem(found[0], n, detail=found[1])] if found else []


@dataclass
class _Seen:
    """What the rows read so far tell the rules on duplicates and on the whole file."""

    tally: ThinkTally = field(default_factory=ThinkTally)
    rows: set = field(default_factory=set)          # digest of each distinct row
    prompts: dict = field(default_factory=dict)     # digest of a row's prompts -> digest of its answers
    first_reasoning_row: int | None = None
    first_empty_row: int | None = None

    def count(self, parsed: ParsedResponse, n: int) -> None:
        self.tally.add_parsed(parsed)
        if parsed.has_reasoning:
            self.first_reasoning_row = self.first_reasoning_row or n
        elif parsed.has_block:
            self.first_empty_row = self.first_empty_row or n


def lint_rows(rows: Iterator[tuple[int, Any]], lay: Layout, *, template: str = "qwen3", enable_thinking: bool | None = True,
              path: str = "", max_problems: int = 200, scripts: "ScriptRule | None" = None,
              near: "NearRule | None" = None) -> LintReport:
    """Run every rule on ``rows`` ((row number, row) pairs): the row rules on each row, then the
    rules on the whole file (``scripts``: the language and script rule the manifest asks for;
    ``near``: the near duplicates among the rows that are not exact duplicates, an info finding)."""
    rep = LintReport(path)
    seen = _Seen()

    def add(problems: list[Finding]) -> None:
        for p in problems:
            rep.counts[(p.id, p.severity)] += 1
            if len(rep.problems) < max_problems:
                rep.problems.append(p)

    for n, row in rows:
        rep.rows += 1
        problems = _row_problems(n, row, lay, seen)
        add(problems)
        if scripts is not None and type(row) is dict:
            scripts.add(n, row, lay)
        if near is not None and type(row) is dict and not any(p.id == "duplicate_row" for p in problems):
            near.add(n, row, lay)
    rep.think = seen.tally.as_dict()
    add(_file_problems(seen, template, enable_thinking))
    if scripts is not None:
        for finding in scripts.findings():  # one finding per rule, counted in rows
            rep.counts[(finding.id, finding.severity)] += scripts.rows[finding.id]
            if len(rep.problems) < max_problems:
                rep.problems.append(finding)
    for finding in near.findings() if near is not None else ():  # one finding, counted in rows
        rep.counts[(finding.id, finding.severity)] += near.count
        if len(rep.problems) < max_problems:
            rep.problems.append(finding)
    return rep


def _row_problems(n: int, row: Any, lay: Layout, seen: _Seen) -> list[Finding]:
    """The turn rule, the rules on each text of the row, then duplicates and conflicting answers."""
    if type(row) is BadRecord:
        return [_problem(row.reason if row.reason in RULES else "invalid_json", n, detail=row.detail)]
    if not isinstance(row, dict):
        return [_problem("not_an_object", n, detail=f"got {type(row).__name__}")]
    out = _sharegpt_order(row, lay, n) if lay.formatting == "sharegpt" else []
    prompt_text, answer_text = [], []
    for kind, name, value in _texts(row, lay):
        problems, parsed = _text_problems(n, kind, name, value, lay)
        out += problems
        if parsed is not None:
            seen.count(parsed, n)
        if kind != "bad" and isinstance(value, str) and value.strip():
            (answer_text if kind == "response" else prompt_text).append(value)
    return out + _repeat_problems(n, row, prompt_text, answer_text, seen)


def _text_problems(n: int, kind: str, name: str, value: Any, lay: Layout) -> tuple[list[Finding], ParsedResponse | None]:
    """The problems of one text of a row, and the parsed response when it is a well-formed one."""
    import ftfy

    if kind == "bad":
        return [_problem("missing_column", n, value)], None
    if not isinstance(value, str):
        return ([_problem("response_not_string", n, name, f"got {type(value).__name__}")] if kind == "response" else []), None
    out = []
    if "\x00" in value:
        out.append(_problem("nul_character", n, name))
    if "<|" in value and find_special_tokens(value):
        out.append(_problem("chat_special_tokens", n, name, ", ".join(find_special_tokens(value))))
    if not value.strip():
        if kind in ("prompt", "response") and not (kind == "prompt" and name == lay.columns.get("query")):
            out.append(_problem("empty_response" if kind == "response" else "empty_prompt", n, name))
        return out, None
    if ftfy.fix_encoding(value) != value:
        out.append(_problem("mojibake", n, name))
    if kind in ("prompt", "system"):
        if has_think_tags(value):
            out.append(_problem("reasoning_in_prompt", n, name))
        return out, None
    parsed = parse_response(value)
    if parsed.problem:
        return out + [_problem(parsed.problem, n, name)], None
    if parsed.has_block and not parsed.canonical:
        out.append(_problem("think_noncanonical", n, name))
    return out, parsed


def _repeat_problems(n: int, row: dict, prompt_text: list[str], answer_text: list[str], seen: _Seen) -> list[Finding]:
    """An exact duplicate of an earlier row, or an earlier row's prompts with other answers."""
    import orjson

    key = hashlib.blake2b(orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=str), digest_size=16).digest()
    if key in seen.rows:
        return [_problem("duplicate_row", n)]
    seen.rows.add(key)
    pkey = hashlib.blake2b("\x00".join(prompt_text).encode(), digest_size=16).digest()
    akey = hashlib.blake2b("\x00".join(answer_text).encode(), digest_size=16).digest()
    conflict = bool(prompt_text) and pkey in seen.prompts and seen.prompts[pkey] != akey
    seen.prompts.setdefault(pkey, akey)
    return [_problem("conflicting_answers", n)] if conflict else []


def _file_problems(seen: _Seen, template: str, enable_thinking: bool | None) -> list[Finding]:
    """The think mode of the whole file against the template and ``enable_thinking``."""
    tally, out = seen.tally, []
    if tally.mode == "mixed":
        out.append(_problem("mixed_think_mode", None, detail=f"{tally.reasoning} with reasoning, {tally.empty_block + tally.no_block} without"))
    if template in TEMPLATES_NOTHINK:
        if tally.empty_block:
            out.append(_problem("empty_block_with_nothink", seen.first_empty_row, detail=f"{tally.empty_block} responses"))
        if tally.reasoning:
            out.append(_problem("think_tags_with_nothink", seen.first_reasoning_row, detail=f"{tally.reasoning} responses"))
    elif enable_thinking is False and tally.reasoning:
        out.append(_problem("reasoning_stripped", seen.first_reasoning_row, detail=f"{tally.reasoning} responses"))
    return out


class ScriptRule:
    """``script_mismatch`` and ``language_mismatch`` over a file whose manifest names its languages:
    a Moses conversion (each row's languages from its instruction, the input in the source
    language, the answer in the target's), or a columns conversion with ``--script`` (every text
    in that script). Streaming: counts and the first :attr:`EXAMPLES` row numbers per rule."""

    EXAMPLES = 5

    def __init__(self, manifest: dict, *, script: str | None = None, template: str | None = None):
        self.manifest, self.script, self.template = manifest, script, template
        self.rows: Counter = Counter()
        self.examples: dict[str, list[tuple[int, str]]] = {}
        self._directions: dict[str, tuple[str, str] | None] = {}

    @staticmethod
    def of(manifest: dict | None) -> "ScriptRule | None":
        """The rule a manifest asks for, or None (no language or script known, or a manifest that
        does not say it in the shape qfk convert writes)."""
        options = manifest.get("options") if isinstance(manifest, dict) else None
        if not isinstance(options, dict):
            return None
        if manifest.get("converter") == "columns":
            script = options.get("script")
            return ScriptRule(manifest, script=script) if isinstance(script, str) and script in SCRIPT_CHOICES else None
        found, template = options.get("found"), options.get("instruction_template")
        if manifest.get("converter") != "moses" or not isinstance(found, dict) or not isinstance(template, str):
            return None
        import re

        from .convert.moses import instruction_direction

        try:
            instruction_direction("", template)
        except (KeyError, ValueError, IndexError, re.error):  # not a template moses accepts
            return None
        langs = {lang for group in found.values() if isinstance(group, list) for lang in group if isinstance(lang, str)}
        return ScriptRule(manifest, template=template) if any(checker(lang) for lang in langs) else None

    def add(self, n: int, row: dict, lay: Layout) -> None:
        """Count row ``n``'s problems (one per rule)."""
        found = {}
        for text, check in self._texts(row, lay):
            if isinstance(text, str) and check is not None and (problem := check(text)) is not None:
                found.setdefault(problem.code, problem.detail)
        for code, detail in found.items():
            self.rows[code] += 1
            examples = self.examples.setdefault(code, [])
            if len(examples) < self.EXAMPLES:
                examples.append((n, detail))

    def _texts(self, row: dict, lay: Layout) -> Iterator[tuple[Any, Any]]:
        if self.script:
            for kind, name, value in _texts(row, lay):
                if kind != "bad":
                    yield value, checker(script=self.script, where=name if name.startswith("message ") else f"field '{name}'")
            return
        cols = lay.columns
        direction = self._direction(row.get(cols.get("prompt", "instruction")))
        if direction is None:
            return
        answer = row.get(cols.get("response", "output"))
        yield row.get(cols.get("query", "input")), checker(direction[0])
        yield (parse_response(answer).answer if isinstance(answer, str) else None), checker(direction[1])

    def _direction(self, instruction: Any) -> tuple[str, str] | None:
        """(source, target) of a Moses row's instruction (remembered: a corpus has few directions)."""
        if not isinstance(instruction, str):
            return None
        if instruction not in self._directions:
            from .convert.moses import instruction_direction

            found = instruction_direction(instruction, self.template)
            if len(self._directions) >= 256:  # not a Moses corpus's handful of instructions: do not remember them all
                return found
            self._directions[instruction] = found
        return self._directions[instruction]

    def findings(self) -> list[Finding]:
        out = []
        for code in (SCRIPT_MISMATCH, LANGUAGE_MISMATCH):
            if not self.rows[code]:
                continue
            severity, text, _ = RULES[code]
            examples = self.examples[code]
            n = self.rows[code]
            rows = ", ".join(str(r) for r, _ in examples) + (", ..." if n > len(examples) else "")
            first = f"rows {rows}; row {examples[0][0]}" if n > 1 else f"row {examples[0][0]}"
            message = f"{n} {'rows' if n > 1 else 'row'} {text.removeprefix('rows ')} ({first}: {examples[0][1]})"
            out.append(Finding(code, severity, None, message, self._fix(code), examples[0][0]))
        return out

    def _fix(self, code: str) -> str:
        """The command that re-converts the source (the manifest's options) with the fix."""
        import shlex

        m = self.manifest
        options = m["options"]
        source = m.get("source")
        spec = source.get("spec") if isinstance(source, dict) else None
        args = ["qfk", "convert", str(m.get("converter")), spec if isinstance(spec, str) and spec else "SOURCE"]
        if m.get("converter") == "columns":
            for key in ("prompt", "response", "query", "system", "think", "history"):
                if options.get(key):
                    args += [f"--{key}", str(options[key])]
        if code == LANGUAGE_MISMATCH:
            return f"re-convert: {shlex.join(args)} (rejects these rows as {LANGUAGE_MISMATCH}), or fix the source files"
        return (f"convert the Simplified texts: {shlex.join(args + ['--to-traditional'])} (OpenCC s2twp), "
                f"or re-convert without it to reject them as {SCRIPT_MISMATCH}")


def _manifest_of(path: Path) -> dict | None:
    """The qfk manifest written next to a data file (None for a folder or a file without one)."""
    from .registry import manifest_for

    return manifest_for({"file_name": str(path.resolve())}, path.parent) if path.is_file() else None


def resolve_target(target: str, data_dir: str | None) -> tuple[Path, dict | None]:
    """PATH or registered NAME -> (file, registry entry or None)."""
    from .registry import Registry, manifest_for, resolve_file, validate_entry

    p = Path(target)
    if p.is_symlink() and not p.exists():
        raise QfkError(f"{target} is a symbolic link that leads nowhere (its target is missing, or the links form a loop)",
                       "point at the data file itself")
    if p.exists():
        reg = Registry.at(data_dir)
        for name, entry in (reg.read().items() if reg.path.exists() else []):
            f = resolve_file(entry, reg.data_dir) if isinstance(entry, dict) else None
            if f is not None and f.exists() and f.resolve() == p.resolve():
                return p, entry
        manifest = manifest_for({"file_name": str(p.resolve())}, reg.data_dir)
        if manifest:
            from .registry import build_entry

            ds = manifest["dataset"]
            return p, build_entry(str(p), formatting=ds["formatting"], ranking=ds["ranking"], columns=ds["columns"], tags=ds.get("tags"))
        return p, None
    reg = Registry.at(data_dir)
    if not reg.path.exists():
        raise QfkError(f"'{target}' is neither a file nor a dataset registered in {reg.path}", "give a path, or --data-dir DIR")
    entry = reg.get(target)
    validate_entry(target, entry)
    f = resolve_file(entry, reg.data_dir)
    if f is None:
        raise QfkError(f"dataset '{target}' is a hub dataset: download and convert it first", "qfk convert ... then lint the output")
    if not f.exists():
        raise QfkError(f"dataset '{target}' points to {f}, which does not exist", f"qfk datasets check {target}")
    return f, entry


def iter_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, row) of every row; a row the reader cannot parse comes as its :class:`BadRecord`."""
    from .io.readers import TableFile

    files = sorted(x for x in path.iterdir() if x.is_file()) if path.is_dir() else [path]
    for f in files:
        for batch in TableFile(f).batches():
            yield from zip(batch.positions, batch.rows)


def iter_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, row) of every row; None for a row the reader cannot parse."""
    for pos, row in iter_records(path):
        yield pos, (None if type(row) is BadRecord else row)


def lint(target: str, *, data_dir: str | None = None, template: str = "qwen3", enable_thinking: bool | None = True,
         max_problems: int = 200, near_dedup: float | None = 0.8) -> LintReport:
    """Every rule on the rows of ``target`` (a file or a registered name); ``near_dedup``: the
    similarity the near-duplicate info finding counts from (None: not looked for)."""
    from .neardup import NearRule

    path, entry = resolve_target(target, data_dir)
    rows = iter_records(path)
    first = next(rows, None)
    if first is None:
        raise QfkError(f"{path} holds no rows", "check the file")
    lay = layout_from(entry, first[1] if isinstance(first[1], dict) else None)

    def chained():
        yield first
        yield from rows

    return lint_rows(chained(), lay, template=template, enable_thinking=enable_thinking, path=str(path), max_problems=max_problems,
                     scripts=ScriptRule.of(_manifest_of(path)), near=NearRule(near_dedup) if near_dedup is not None else None)
