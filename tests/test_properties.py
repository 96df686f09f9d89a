"""Property-based tests (hypothesis): the think format, the converters' count invariant, and the
registry under any sequence of changes.

What the think round trip promises (``think.format_response`` then ``think.parse_response``):

* when neither the answer nor the reasoning holds ``<think>`` or ``</think>`` and the answer is
  not blank, parsing gives back exactly ``reasoning.strip()`` and ``answer.strip()`` (the empty
  string for no reasoning), in canonical form;
* a part that holds a tag is outside that promise, and no converter writes it: the row is
  rejected with a reason (checked through the ``columns`` converter with ``--think``, and the
  ``medical-r1`` converter).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("hypothesis", reason="pip install -e '.[test]' (hypothesis is in the test extra)")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_factory_kit.convert import get_converter, run_conversion
from qwen_factory_kit.convert.contract import Reject
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.registry import Registry, build_entry, validate_entry
from qwen_factory_kit.think import ThinkTagError, format_response, has_think_tags, normalize_response, parse_response

SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FILE_SETTINGS = settings(SETTINGS, max_examples=60)  # each example converts files

#: pieces that make texts interesting for the think parser and the converters' checks
PIECES = ["<think>", "</think>", "<think", "think>", "</", "\n", "\n\n", " ", "\t", "\r", "<|im_end|>", "\x00", "\\n", "é", "思考"]
TEXT = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=6).map("".join)
PLAIN = TEXT.filter(lambda t: not has_think_tags(t))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                           max_leaves=6)


# ---------------------------------------------------------------------------------------------
# think: format then parse
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(answer=PLAIN.filter(str.strip), reasoning=st.one_of(st.none(), PLAIN), empty=st.sampled_from(["explicit", "omit"]))
def test_format_then_parse_gives_the_parts_back(answer, reasoning, empty):
    parsed = parse_response(format_response(answer, reasoning, empty=empty))
    assert parsed.ok, parsed.detail
    assert parsed.answer == answer.strip()
    has_reasoning = bool(reasoning and reasoning.strip())
    assert (parsed.reasoning or "") == (reasoning.strip() if has_reasoning else "")
    assert parsed.has_block == (has_reasoning or empty == "explicit")
    assert parsed.canonical


@SETTINGS
@given(text=TEXT, empty=st.sampled_from(["explicit", "omit"]))
def test_normalize_is_idempotent_or_refuses(text, empty):
    try:
        once = normalize_response(text, empty=empty)
    except ThinkTagError as exc:
        assert exc.code == (parse_response(text).problem or "think_empty_answer")
        return
    assert normalize_response(once, empty=empty) == once
    parsed = parse_response(once)
    assert parsed.ok and parsed.canonical and parsed.answer == parse_response(text).answer.strip()


@SETTINGS
@given(answer=TEXT, reasoning=TEXT)
def test_a_converter_writes_the_parts_back_or_rejects_the_row(answer, reasoning):
    """``columns --think``: the output parses back into the two columns, or the row is rejected."""
    conv = get_converter("columns", prompt="q", response="a", think="t")
    try:
        (out,) = conv.convert({"q": "Question?", "a": answer, "t": reasoning})
    except Reject as r:
        assert has_think_tags(answer) or has_think_tags(reasoning) or not answer.strip() or r.reason in (
            "chat_special_tokens", "nul_character"), r.reason
        return
    assert not has_think_tags(answer) and not has_think_tags(reasoning)
    parsed = parse_response(out["output"])
    assert parsed.ok and parsed.canonical
    assert (parsed.answer, parsed.reasoning) == (answer.strip(), reasoning.strip())


@SETTINGS
@given(answer=TEXT, think=TEXT)
def test_medical_rows_keep_their_reasoning_or_are_rejected(answer, think):
    conv = get_converter("medical-r1")
    try:
        (out,) = conv.convert({"question": "Question?", "answer": answer, "think": think})
    except Reject:
        return
    parsed = parse_response(out["output"])
    assert parsed.ok and parsed.canonical and parsed.answer == answer.strip()
    if not has_think_tags(think):
        assert parsed.reasoning == think.strip()
    else:  # a think field that is itself one wrapped block is unwrapped
        assert parsed.reasoning == parse_response(think + "\n\n.").reasoning


# ---------------------------------------------------------------------------------------------
# converters: read == written + rejected on any rows
# ---------------------------------------------------------------------------------------------
RAW_LINES = st.sampled_from([b"", b"   ", b"{oops", b"[1, 2]", b"null", b"\x00\x00", b"\xff{", "{\"question\": \"caf\xe9\"}".encode("latin-1"),
                             b'{"question": "Q", "answer": "A", "think": "T"}\r{"question": "Q"}', b'{"n": 1e999}'])
MEDICAL_ROWS = st.fixed_dictionaries({}, optional={
    "instruction": st.one_of(TEXT, JSON_VALUES), "question": st.one_of(TEXT, TEXT, JSON_VALUES),
    "think": st.one_of(TEXT, TEXT, JSON_VALUES), "answer": st.one_of(TEXT, TEXT, JSON_VALUES),
    "metrics": st.one_of(st.fixed_dictionaries({"quality_f1": st.one_of(st.floats(0, 1), JSON_VALUES)}), JSON_VALUES)})
ROLES = st.one_of(st.sampled_from(["human", "gpt", "system", "user", "assistant", "observation", "function_call", "GPT"]),
                  JSON_VALUES)
MESSAGES = st.one_of(st.fixed_dictionaries({}, optional={"from": ROLES, "value": st.one_of(TEXT, JSON_VALUES)}), JSON_VALUES)
PAIRS = st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=4).map(
    lambda ps: [{"from": r, "value": v} for q, a in ps for r, v in (("human", q), ("gpt", a))])
CHAT_ROWS = st.fixed_dictionaries({}, optional={"conversations": st.one_of(PAIRS, st.lists(MESSAGES, max_size=6), JSON_VALUES),
                                                "score": JSON_VALUES})


def _lines(rows: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in rows)


@contextmanager
def _folder():
    path = Path(tempfile.mkdtemp(prefix="qfk-prop-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _jsonl(path: Path) -> list:
    return [json.loads(x) for x in path.read_bytes().splitlines()]


def _convert_and_count(name: str, src: Path, n_rows: int, **options):
    """Convert ``src``; the counts must account for every row whether the run succeeds or refuses."""
    out = src.with_name("out.jsonl")
    rejects = src.with_name("out.rejects.jsonl")
    try:
        res = run_conversion(get_converter(name, **options), str(src), output=str(out))
    except QfkError as exc:  # the two refusals of a whole run: nothing to read, every row rejected
        assert not out.exists() and not out.with_name("out.manifest.json").exists()
        if "every one of the" in exc.message:
            assert len(_jsonl(rejects)) == n_rows
        else:
            assert "holds no rows" in exc.message and n_rows == 0
        res = None
    else:
        assert res.read == n_rows == res.written + res.rejected
        assert sum(res.rejected_by_reason.values()) == res.rejected == len(_jsonl(rejects))
        assert len(_jsonl(out)) == res.rows_out
    assert not [p for p in src.parent.iterdir() if p.name.endswith(".tmp")]
    return res


@FILE_SETTINGS
@given(rows=st.lists(st.one_of(MEDICAL_ROWS, MEDICAL_ROWS, RAW_LINES), max_size=12),
       options=st.fixed_dictionaries({}, optional={"allow_missing_think": st.booleans(), "min_quality": st.floats(0, 1),
                                                   "fix_escaped_newlines": st.booleans(),
                                                   "instruction_as": st.sampled_from(["ignore", "system", "user"])}))
def test_medical_counts_every_row(rows, options):
    with _folder() as d:
        (d / "in.jsonl").write_bytes(_lines(rows))
        _convert_and_count("medical-r1", d / "in.jsonl", len(rows), **options)


@FILE_SETTINGS
@given(rows=st.lists(st.one_of(CHAT_ROWS, CHAT_ROWS, RAW_LINES), max_size=12),
       options=st.fixed_dictionaries({}, optional={"format": st.sampled_from(["alpaca", "sharegpt"]),
                                                   "single_turn_only": st.booleans(), "min_score": st.floats(3, 5)}))
def test_sharegpt_counts_every_row(rows, options):
    with _folder() as d:
        (d / "in.jsonl").write_bytes(_lines(rows))
        _convert_and_count("sharegpt", d / "in.jsonl", len(rows), **options)


ARROW_TEXT = st.one_of(st.none(), TEXT)
ARROW_MESSAGES = st.one_of(st.none(), st.fixed_dictionaries({"from": st.one_of(st.none(), st.sampled_from(["human", "gpt", "system", "tool", "x"])),
                                                              "value": ARROW_TEXT}))
ARROW_ROWS = st.fixed_dictionaries({"conversations": st.one_of(st.none(), PAIRS, st.lists(ARROW_MESSAGES, max_size=5))})


@FILE_SETTINGS
@given(rows=st.lists(ARROW_ROWS, min_size=1, max_size=10), fmt=st.sampled_from(["alpaca", "sharegpt"]))
def test_sharegpt_parquet_fast_path_matches_the_row_path(rows, fmt):
    """The columnar Parquet path (nulls included) writes and rejects exactly what the row path does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    msg = pa.struct([("from", pa.string()), ("value", pa.string())])
    with _folder() as d:
        (d / "a").mkdir()
        (d / "b").mkdir()
        (d / "a" / "in.jsonl").write_bytes(_lines(rows))
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("conversations", pa.list_(msg))])), d / "b" / "in.parquet")
        results = [_convert_and_count("sharegpt", d / sub / name, len(rows), format=fmt)
                   for sub, name in (("a", "in.jsonl"), ("b", "in.parquet"))]
        if results[0] is None or results[1] is None:
            assert results[0] is results[1] is None
            return
        assert (d / "a" / "out.jsonl").read_bytes() == (d / "b" / "out.jsonl").read_bytes()
        rej = [[(r.get("line") or r.get("row"), r["reason"], r["detail"]) for r in _jsonl(d / sub / "out.rejects.jsonl")]
               for sub in ("a", "b")]
        assert rej[0] == rej[1]


# ---------------------------------------------------------------------------------------------
# registry: any sequence of add / force-add / remove keeps a valid file
# ---------------------------------------------------------------------------------------------
NAMES = ["alpha", "beta", "gamma_val", "d-4"]
USER = {"hub_set": {"hf_hub_url": "someone/data", "split": "train", "columns": {"prompt": "q", "response": "a"}}}
OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.sampled_from(NAMES), st.sampled_from(["a.jsonl", "b.jsonl", "sub/c.json"]),
              st.sampled_from(["alpaca", "sharegpt", "ranking"]), st.booleans()),
    st.tuples(st.just("remove"), st.sampled_from(NAMES))), max_size=15)


def _entry(file_name: str, kind: str) -> dict:
    if kind == "sharegpt":
        return build_entry(file_name, formatting="sharegpt", columns={"messages": "conversations", "system": "system"})
    if kind == "ranking":
        return build_entry(file_name, ranking=True)
    return build_entry(file_name, columns={"system": "system", "history": "history"})


def _apply(reg: Registry, model: dict, op: tuple) -> None:
    """One operation on the registry and on the model: a conflicting add (another file, no force)
    and the removal of a missing name are refused, and leave the file's bytes as they were."""
    before = reg.path.read_bytes()
    if op[0] == "add":
        _, name, file_name, kind, force = op
        entry = _entry(file_name, kind)
        allowed = force or name not in model or model[name]["file_name"] == file_name
    else:
        name = op[1]
        allowed = name in model
    try:
        if op[0] == "add":
            reg.add(name, entry, force=force)
        else:
            reg.remove(name)
    except QfkError:
        assert not allowed, f"{op} was refused"
        assert reg.path.read_bytes() == before
        return
    assert allowed, f"{op} was accepted"
    if op[0] == "add":
        model[name] = entry
    else:
        del model[name]


def _registry_after(ops: list, folder: Path) -> tuple[Registry, dict]:
    reg = Registry(folder / "data")
    reg.data_dir.mkdir()
    reg.path.write_text(json.dumps(USER, indent=1) + "\n")
    model: dict = {}
    for op in ops:
        _apply(reg, model, op)
        data = json.loads(reg.path.read_text())
        assert data == {**USER, **model}
        for name, entry in data.items():
            validate_entry(name, entry)
    return reg, model


@SETTINGS
@given(ops=OPS)
def test_any_sequence_of_changes_keeps_a_valid_registry(ops):
    with _folder() as d:
        reg, _ = _registry_after(ops, d)
        data = json.loads(reg.path.read_text())
        assert next(iter(data)) == "hub_set" and data["hub_set"] == USER["hub_set"]  # the user's entry: first, unchanged


@pytest.mark.slow
@settings(SETTINGS, max_examples=25)
@given(ops=OPS)
def test_llamafactory_reads_the_registry_after_any_sequence(ops):
    from llamafactory.data.parser import get_dataset_list

    with _folder() as d:
        reg, model = _registry_after(ops, d)
        names = list(model)
        attrs = get_dataset_list(names, str(reg.data_dir))
        assert [a.dataset_name for a in attrs] == [model[n]["file_name"] for n in names]
        for attr, name in zip(attrs, names):
            entry = model[name]
            assert attr.load_from == "file" and attr.formatting == entry["formatting"] and attr.ranking == entry["ranking"]
            for key, column in entry["columns"].items():
                assert getattr(attr, key) == column
            for key, tag in entry.get("tags", {}).items():
                assert getattr(attr, key) == tag
