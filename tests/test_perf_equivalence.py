"""The fast paths give what the plain paths give: token lengths equal to LLaMA-Factory's own
``input_ids``, the statistics cache, and the light import set of ``qfk convert``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT

from qwen_factory_kit import tokens
from qwen_factory_kit.convert import convert

sys.path.insert(0, str(ROOT / "bench"))
import workloads  # noqa: E402


# ---------------------------------------------------------------------------------------------
# token statistics
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_rows(tmp_path_factory) -> dict[str, Path]:
    """A few hundred rows of the benchmark workloads, converted by qfk."""
    tmp = tmp_path_factory.mktemp("bench")
    out = {}
    chat = workloads.make_finetome(tmp / "finetome.parquet", 300, seed=3, row_group_size=100)
    out["alpaca"] = convert("sharegpt", str(chat), output=str(tmp / "alpaca.jsonl")).output
    out["sharegpt"] = convert("sharegpt", str(chat), output=str(tmp / "sharegpt.jsonl"), format="sharegpt").output
    med = workloads.make_medical(tmp / "medical.jsonl", 200, seed=3)
    out["medical"] = convert("medical-r1", str(med), output=str(tmp / "medical_out.jsonl")).output
    return out


@pytest.fixture(scope="module")
def tok():
    from qwen_factory_kit.lfbridge import load_tokenizer

    return load_tokenizer()


def _register(data: Path, path: Path) -> str:
    from qwen_factory_kit.registry import Registry, add_path

    add_path(Registry.at(data), path, "ds")
    return "ds"


@pytest.mark.slow
@pytest.mark.parametrize("kind,et", [("alpaca", True), ("alpaca", None), ("sharegpt", False), ("medical", True),
                                     ("medical", False)])
def test_stats_lengths_equal_llamafactory_input_ids_on_bench_rows(bench_rows, tok, tmp_path, kind, et):
    from qwen_factory_kit.lfbridge import preprocess
    from qwen_factory_kit.registry import Registry

    data = tmp_path / "data"
    name = _register(data, bench_rows[kind])
    entry = Registry.at(data).get(name)
    st = tokens.file_stats(bench_rows[kind], entry, tokenizer=tok, enable_thinking=et, cutoff_len=tokens.NO_LIMIT, cache=False)
    lf = preprocess(data, name, tokenizer=tok, enable_thinking=et, cutoff_len=tokens.NO_LIMIT)
    assert len(st.rows) >= 190 and not st.dropped
    assert [r.total for r in st.rows] == [len(ex["input_ids"]) for ex in lf]
    assert [r.response for r in st.rows] == [sum(1 for t in ex["labels"] if t != -100) for ex in lf]


@pytest.mark.slow
@pytest.mark.parametrize("kind,cutoff,lost", [("alpaca", 400, "answer"), ("medical", 700, "think_close")])
def test_stats_cut_rows_equal_the_per_row_encoding(bench_rows, tok, kind, cutoff, lost):
    """Rows over cutoff_len: what is lost is what LLaMA-Factory's processor cuts, row by row."""
    from qwen_factory_kit.io.readers import file_rows
    from qwen_factory_kit.registry import build_entry

    entry = build_entry("x.jsonl", columns={"system": "system", "history": "history"} if kind == "alpaca" else None)
    st = tokens.file_stats(bench_rows[kind], entry, tokenizer=tok, cutoff_len=cutoff, cache=False)
    enc = tokens.Encoder(entry, tokenizer=tok, cutoff_len=cutoff)
    want = []
    for n, row in file_rows(bench_rows[kind]):
        ids, labels = enc.encode(row, limit=False)
        cut = tokens._lost(labels, enc.encode(row, limit=True)[1]) if len(ids) > cutoff else None
        want.append((n, len(ids), sum(1 for t in labels if t != -100), cut))
    assert [(r.row, r.total, r.response, r.lost) for r in st.rows] == want
    assert lost in {r.lost for r in st.rows}


def _fake_stats(calls: list):
    def fake(rows, entry, *, path="", tokenizer=None, template="qwen3", enable_thinking=True, cutoff_len=2048, progress=False,
             total=None):
        calls.append(cutoff_len)
        st = tokens.Stats(path, cutoff_len, template, enable_thinking)
        for n, row in rows:
            st.rows.append(tokens.RowStats(n, 10 * n, n, 9 * n, "answer" if 10 * n > cutoff_len else None))
        return st
    return fake


def test_stats_cache_second_call_does_not_tokenize(tmp_path, monkeypatch):
    monkeypatch.setenv("QFK_CACHE_DIR", str(tmp_path / "cache"))
    calls: list = []
    monkeypatch.setattr(tokens, "token_stats", _fake_stats(calls))
    monkeypatch.setattr(tokens.TokenizerRef, "identity", lambda self: "id:test")
    data = tmp_path / "rows.jsonl"
    data.write_bytes((EXAMPLES / "medical_r1" / "rows.jsonl").read_bytes())
    entry = {"file_name": "rows.jsonl", "formatting": "alpaca"}
    loads = []
    monkeypatch.setattr(tokens.TokenizerRef, "get", lambda self: loads.append(1))

    def stats(**kw):
        return tokens.file_stats(data, entry, tokenizer=tokens.TokenizerRef(),
                                 **(dict(template="qwen3", enable_thinking=True, cutoff_len=30) | kw))

    first = stats()
    assert calls == [30] and loads == [1]
    again = stats()
    assert calls == [30] and loads == [1]  # neither tokenized nor a tokenizer loaded
    assert again.summary() == first.summary() and again.rows and again.path == str(data)
    for changed in (dict(cutoff_len=60), dict(enable_thinking=False), dict(template="qwen3_nothink"), dict(max_rows=3)):
        stats(**changed)
    assert calls == [30, 60, 30, 30, 30]  # every setting is part of the key
    stats(cache=False)
    assert len(calls) == 6  # no cache: always measured
    with open(data, "ab") as fh:
        fh.write(b'{"instruction": "q", "input": "", "output": "a"}\n')
    stats()
    assert len(calls) == 7  # new data, new sha256
    monkeypatch.setattr(tokens.TokenizerRef, "identity", lambda self: "id:other")
    stats()
    assert len(calls) == 8  # another tokenizer


def test_stats_cli_reuses_the_cache(tmp_path, monkeypatch, qfk):
    monkeypatch.setenv("QFK_CACHE_DIR", str(tmp_path / "cache"))
    calls: list = []
    monkeypatch.setattr(tokens, "token_stats", _fake_stats(calls))
    monkeypatch.setattr(tokens.TokenizerRef, "get", lambda self: object())
    data = tmp_path / "data"
    convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), data_dir=str(data), register=True, name="med")
    outs = []
    for extra in ((), (), ("--no-cache",)):
        code, out, err = qfk("stats", "med", "--data-dir", data, "--cutoff-len", "30", "--json", *extra)
        assert code == 0, err
        outs.append(json.loads(out))
    assert len(calls) == 2 and outs[0] == outs[1] == outs[2]
    assert list((tmp_path / "cache" / "stats").glob("*.json"))


# ---------------------------------------------------------------------------------------------
# startup: qfk convert imports neither torch nor LLaMA-Factory
# ---------------------------------------------------------------------------------------------
HEAVY = ("torch", "llamafactory", "transformers", "datasets", "pandas", "matplotlib", "modelscope", "tokenizers")


def test_convert_path_imports_no_heavy_package(tmp_path):
    code = f"""
import json, sys
from qwen_factory_kit.cli.main import main
assert main(["convert", "--help"]) == 0
assert main(["convert", "medical-r1", "--help"]) == 0
assert main(["convert", "medical-r1", {str(EXAMPLES / "medical_r1" / "rows.jsonl")!r}, "-o", {str(tmp_path / "m.jsonl")!r},
             "--no-register", "--json"]) == 0
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "qwen_factory_kit" in loaded and "orjson" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


# ---------------------------------------------------------------------------------------------
# --workers: the same bytes whatever the number of processes
# ---------------------------------------------------------------------------------------------
def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _convert_with(workers: int, kind: str, src: Path, out: Path, **opts) -> dict[str, bytes]:
    out.mkdir()
    res = convert(kind, str(src), output=str(out / "rows.jsonl"), workers=workers, **opts)
    assert res.read == res.written + res.rejected
    return _files(out)


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of a few hundred rows, so that a small source still makes many of them."""
    from qwen_factory_kit.convert import moses
    from qwen_factory_kit.io import readers

    monkeypatch.setattr(readers, "BATCH_ROWS", 256)
    monkeypatch.setattr(readers, "BLOCK_BYTES", 1 << 16)
    monkeypatch.setattr(moses, "BATCH_ROWS", 256)


WORKLOADS = {  # converter: (source name, maker, options, a reject reason the run must show)
    "moses": ("corpus", lambda p: workloads.make_moses(p, 4000, seed=5),
              dict(val_size=40, test_size=0.05, max_length_ratio=3.0), "duplicate"),
    "medical-r1": ("rows.jsonl", lambda p: workloads.make_medical(p, 1500, seed=5),
                   dict(limit=1200, val_size=0.1, test_size=100, dedup=True, fix_escaped_newlines=True), "empty_field"),
    "sharegpt": ("chats.parquet", lambda p: workloads.make_finetome(p, 3000, seed=5, row_group_size=700),
                 dict(dedup=True, min_score=4.0), "below_min_score"),
}


@pytest.mark.parametrize("kind", [pytest.param("moses"), pytest.param("medical-r1", marks=pytest.mark.slow),
                                  pytest.param("sharegpt", marks=pytest.mark.slow)])
def test_workers_write_the_same_bytes(tmp_path, small_batches, kind):
    name, make, opts, reason = WORKLOADS[kind]
    src = make(tmp_path / name)
    one = _convert_with(1, kind, src, tmp_path / "w1", **opts)
    three = _convert_with(3, kind, src, tmp_path / "w3", **opts)
    assert one == three  # rows, splits, rejects and manifest, byte for byte
    splits = {"rows_val.jsonl", "rows_test.jsonl"} if "val_size" in opts else set()
    assert set(one) == {"rows.jsonl", "rows.rejects.jsonl", "rows.manifest.json"} | splits
    assert f'"reason":"{reason}"'.encode() in one["rows.rejects.jsonl"]


def test_workers_option_on_the_command_line(tmp_path, small_batches, qfk_json):
    src = workloads.make_moses(tmp_path / "corpus", 1000, seed=2)
    a = qfk_json("convert", "moses", src, "-o", tmp_path / "a" / "rows.jsonl", "--workers", "2", "--no-register")
    b = qfk_json("convert", "moses", src, "-o", tmp_path / "b" / "rows.jsonl", "--workers", "1", "--no-register")
    assert a["rows_out"] == b["rows_out"] > 0
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def _slow_square(state, n):
    import time

    time.sleep(0.01 * (n % 3))
    if n == 13:
        from qwen_factory_kit.errors import QfkError

        raise QfkError("thirteen", "a hint that crosses the process boundary")
    return state + n * n


def test_ordered_map_keeps_the_order_and_the_error_hints():
    from qwen_factory_kit.convert.workers import ordered_map
    from qwen_factory_kit.errors import QfkError

    got = list(ordered_map(_slow_square, range(12), workers=3, setup=int, setup_args=(100,)))
    assert got == [(n, 100 + n * n) for n in range(12)]
    with pytest.raises(QfkError) as err:
        list(ordered_map(_slow_square, range(20), workers=2, setup=int, setup_args=(0,)))
    assert err.value.message == "thirteen" and err.value.hint == "a hint that crosses the process boundary"


def _die_in_a_worker(state, n):
    import multiprocessing
    import os
    import time

    if multiprocessing.parent_process() is None:
        time.sleep(0.05)  # the parent is slow: a worker surely starts and takes an item
    elif n >= 5:  # killed outright, as the OOM killer would
        os._exit(9)
    return n


def test_a_worker_that_dies_is_a_one_line_error():
    from qwen_factory_kit.convert.workers import ordered_map
    from qwen_factory_kit.errors import QfkError

    with pytest.raises(QfkError) as err:
        list(ordered_map(_die_in_a_worker, range(40), workers=2, setup=int))
    assert "stopped abruptly" in err.value.message and "--workers 1" in err.value.hint


def test_no_workers_for_a_program_read_from_stdin(tmp_path):
    src = workloads.make_moses(tmp_path / "corpus", 200, seed=1)
    script = (f"from qwen_factory_kit.convert import convert\n"
              f"r = convert('moses', {str(src)!r}, output={str(tmp_path / 'o.jsonl')!r}, workers=2)\n"
              f"print(r.rows_out)\n")
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # a spawned worker could not import "<stdin>": none is started
    assert int(done.stdout.strip()) > 0


def test_worker_count(monkeypatch):
    from qwen_factory_kit.convert import workers
    from qwen_factory_kit.convert.workers import SMALL_SOURCE_BYTES, available_cores, worker_count
    from qwen_factory_kit.errors import QfkError

    assert worker_count(3, 0) == 3
    assert worker_count(None, SMALL_SOURCE_BYTES - 1) == 1  # a small source: no process started
    assert worker_count(None, SMALL_SOURCE_BYTES) == min(available_cores(), 8)
    monkeypatch.setattr(workers, "available_cores", lambda: 64)
    assert worker_count(None, SMALL_SOURCE_BYTES) == 8 and worker_count(20, 0) == 20
    with pytest.raises(QfkError, match="--workers"):
        worker_count(0, 0)


# ---------------------------------------------------------------------------------------------
# --shard I/N: the parts in order are the whole output
# ---------------------------------------------------------------------------------------------
SHARDED = {  # converter: (source name, maker, options)
    "moses": ("corpus", lambda p: workloads.make_moses(p, 3000, seed=7), dict(dedup=False, limit=2500, max_length_ratio=3.0)),
    "medical-r1": ("rows.jsonl", lambda p: workloads.make_medical(p, 900, seed=7), dict(limit=700)),
    "sharegpt": ("chats.parquet", lambda p: workloads.make_finetome(p, 2000, seed=7, row_group_size=450), dict(min_score=4.2)),
}


@pytest.mark.parametrize("kind", ["moses", "medical-r1", pytest.param("sharegpt", marks=pytest.mark.slow)])
def test_shards_concatenate_to_the_whole_output(tmp_path, small_batches, kind):
    name, make, opts = SHARDED[kind]
    src = make(tmp_path / name)
    whole = convert(kind, str(src), output=str(tmp_path / "whole" / "rows.jsonl"), **opts)
    parts = [convert(kind, str(src), output=str(tmp_path / "set" / "rows.jsonl"), shard=f"{i}/4", workers=1 + i % 2, **opts)
             for i in range(4)]
    folder, sidecars = tmp_path / "set" / "rows", tmp_path / "set" / "rows.shards"
    assert sorted(p.name for p in folder.iterdir()) == [f"part-{i:05d}-of-00004.jsonl" for i in range(4)]  # data alone
    assert b"".join(p.output.read_bytes() for p in parts) == whole.output.read_bytes()
    assert b"".join(p.rejects.read_bytes() for p in parts) == whole.rejects.read_bytes()
    assert sum(p.read for p in parts) == whole.read and sum(p.rows_out for p in parts) == whole.rows_out
    rows = parts[-1].shard["last_row"]  # the source's rows, in four contiguous ranges
    assert [(p.shard["first_row"], p.shard["last_row"]) for p in parts] == [(i * rows // 4 + 1, (i + 1) * rows // 4)
                                                                              for i in range(4)]
    manifest = json.loads((sidecars / "part-00002-of-00004.manifest.json").read_text())
    assert manifest["options"]["shard"]["index"] == 2 and manifest["counts"]["read"] == parts[2].read


def test_shard_refuses_what_it_cannot_do_exactly(tmp_path):
    from qwen_factory_kit.errors import QfkError

    src = workloads.make_moses(tmp_path / "corpus", 200, seed=1)
    out = str(tmp_path / "o.jsonl")
    with pytest.raises(QfkError, match="moses drops duplicates by default"):
        convert("moses", str(src), output=out, shard="0/2")
    with pytest.raises(QfkError, match="cannot drop duplicates"):
        convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), output=out, shard="0/2", dedup=True)
    with pytest.raises(QfkError, match="--val-size/--test-size cannot be used with --shard"):
        convert("moses", str(src), output=out, shard="1/2", dedup=False, val_size=0.1)
    for bad in ("2/2", "-1/2", "1", "a/b"):
        with pytest.raises(QfkError, match="--shard must be I/N"):
            convert("moses", str(src), output=out, shard=bad, dedup=False)
    with pytest.raises(QfkError, match="holds no rows: the source has 200"):
        convert("moses", str(src), output=out, shard="0/300", dedup=False)


def _shard_set(tmp_path, parts: int = 3) -> tuple[Path, dict]:
    src = workloads.make_moses(tmp_path / "corpus", 600, seed=4)
    for i in range(parts):
        convert("moses", str(src), data_dir=str(tmp_path / "data"), name="opus", dedup=False, shard=f"{i}/{parts}")
    whole = convert("moses", str(src), output=str(tmp_path / "whole.jsonl"), dedup=False)
    return tmp_path / "data" / "opus", {"rows": whole.rows_out}


def test_datasets_add_registers_a_complete_shard_set(tmp_path, qfk):
    folder, whole = _shard_set(tmp_path)
    data = tmp_path / "data"
    assert not (data / "dataset_info.json").exists()  # a part is not registered on its own
    code, out, err = qfk("datasets", "add", folder, "--name", "opus", "--data-dir", data, "--json")
    assert code == 0, err
    entry = json.loads(out)["opus"]
    assert entry["file_name"] == "opus" and entry["columns"]["system"] == "system" and entry["formatting"] == "alpaca"
    parts = ",".join(str(p) for p in sorted(folder.iterdir()))
    code, out, err = qfk("datasets", "add", parts, "--name", "opus2", "--data-dir", data, "--json")
    assert code == 0, err
    assert json.loads(out)["opus2"]["file_name"] == "opus"
    code, _, err = qfk("datasets", "add", parts.rsplit(",", 1)[0], "--name", "opus3", "--data-dir", data)
    assert code == 2 and "holds other files besides the parts" in err  # LLaMA-Factory would load the third too
    (folder / "part-00001-of-00003.jsonl").write_bytes(b'{"instruction": "x", "input": "", "output": "y"}\n')
    code, _, err = qfk("datasets", "add", folder, "--name", "opus4", "--data-dir", data)
    assert code == 2 and "changed after it was written" in err
    (folder / "part-00001-of-00003.jsonl").unlink()
    code, _, err = qfk("datasets", "add", folder, "--name", "opus5", "--data-dir", data)
    assert code == 2 and "incomplete shard set" in err


@pytest.mark.slow
def test_llamafactory_loads_a_registered_shard_set(tmp_path, qfk):
    from qwen_factory_kit.lfbridge import preprocess

    folder, whole = _shard_set(tmp_path)
    assert qfk("datasets", "add", folder, "--name", "opus", "--data-dir", tmp_path / "data")[0] == 0
    rows = preprocess(tmp_path / "data", "opus", enable_thinking=False, cutoff_len=1024)
    assert len(rows) == whole["rows"]


# ---------------------------------------------------------------------------------------------
# --dedup in bounded memory: the runs spilled to disk give the verdicts of one set
# ---------------------------------------------------------------------------------------------
def test_dedup_spilled_to_disk_gives_the_same_rows(tmp_path, small_batches, monkeypatch):
    from qwen_factory_kit.convert import dedup

    src = workloads.make_moses(tmp_path / "corpus", 4000, seed=9)
    kept = _convert_with(1, "moses", src, tmp_path / "memory")
    monkeypatch.setattr(dedup, "RECENT", 150)  # a run every 150 rows kept: about 25 runs
    spilled = _convert_with(1, "moses", src, tmp_path / "spilled")
    assert kept == spilled
    assert b'"reason":"duplicate"' in spilled["rows.rejects.jsonl"]
    assert not [p for p in (tmp_path / "spilled").iterdir() if p.name.startswith(".qfk-dedup")]  # runs removed


def test_seen_runs_answer_like_a_set(tmp_path, monkeypatch):
    import hashlib

    from qwen_factory_kit.convert import dedup

    monkeypatch.setattr(dedup, "RECENT", 64)
    seen = dedup.Seen(tmp_path)
    digests = [hashlib.sha256(str(i).encode()).digest()[:16] for i in range(1000)]
    for d in digests[:700]:
        seen.add(d)
        seen.settle()
    assert len(seen.runs) == 10 and len(seen.recent) == 60
    found = seen.on_disk(digests)
    assert found[:640] == [True] * 640 and not any(found[640:])  # 640 spilled; the rest in memory or never seen
    assert all(d in seen for d in digests[640:700]) and not any(d in seen for d in digests[700:])
    seen.close()


@pytest.mark.parametrize("kind", ["moses", pytest.param("sharegpt", marks=pytest.mark.slow)])
def test_limit_and_splits_do_not_depend_on_the_batch_size(tmp_path, monkeypatch, kind):
    """--limit and the splits draw for blocks of DRAW_ROWS rows whatever the batches: a seed keeps its rows."""
    from qwen_factory_kit.convert import moses
    from qwen_factory_kit.io import readers

    src = (workloads.make_moses(tmp_path / "corpus", 9000, seed=3) if kind == "moses" else
           workloads.make_finetome(tmp_path / "chats.parquet", 9000, seed=3, row_group_size=2500))
    opts = dict(limit=7000, val_size=0.1, test_size=300, **({"dedup": False} if kind == "moses" else {}))
    outputs = []
    for rows in (readers.DRAW_ROWS, 1024, 512):
        monkeypatch.setattr(readers, "BATCH_ROWS", rows)
        monkeypatch.setattr(moses, "BATCH_ROWS", rows)
        outputs.append(_convert_with(1, kind, src, tmp_path / f"b{rows}", **opts))
    assert outputs[0] == outputs[1] == outputs[2]


# ---------------------------------------------------------------------------------------------
# Moses: lines put together from the segments' JSON == the rows dumped one by one
# ---------------------------------------------------------------------------------------------
HOSTILE_SEGMENTS = [  # (en, zh_TW, ja) raw lines: every rule of the Moses converter, and JSON's escapes
    (b"Hello.", "\u4f60\u597d\u3002".encode(), "\u3053\u3093\u306b\u3061\u306f\u3002".encode()),
    (b'He said "50%s" \\ done', "\u4ed6\u8aaa\u300c50%\u300d".encode(), "\u5f7c\u306f\u8a00\u3063\u305f %d".encode()),
    (b"  padded\t ", b"\t\xe5\xa5\xbd ", b" \xe3\x81\x82\xe3\x80\x80"),
    (b"Tom &amp; Jerry", "\u6e6f\u59c6&amp;\u5091\u745e".encode(), b"&lt;b&gt;"),
    (b"AT&T stays", b"R&D", b"a & b"),
    (b"", b"\xe7\xa9\xba", b"\xe7\xa9\xba"),
    (b"tab\tinside", b"x", b"y"),
    (b"nul \x00 byte", b"x", b"y"),
    (b"<|im_start|>user", b"x", b"y"),
    (b"<think>reasoning</think>", b"x", b"y"),
    (b"about think> tags", b"x", b"y"),
    (b"bad utf-8 \xff\xfe", b"x", b"y"),
    (b"lone \r carriage return", b"x", b"y"),
    (b"\xef\xbb\xbfbom here", b"x", b"y"),
    (b"Hello.", "\u4f60\u597d\u3002".encode(), "\u3053\u3093\u306b\u3061\u306f\u3002".encode()),  # a duplicate
    (b"control \x1b\x7f \xe2\x80\xa8 sep", b"\xf0\x9f\x98\x80 emoji", b"\xe2\x80\x8b zero width"),
    (("x" * 300 + " long").encode(), b"short", b"short"),
]


def _hostile_corpus(folder: Path, repeat: int, crlf: bool) -> Path:
    folder.mkdir(parents=True)
    end = b"\r\n" if crlf else b"\n"
    for k, name in enumerate(("corpus.en", "corpus.zh_tw", "corpus.ja")):
        lines = [seg[k] + f" {n}".encode() if n % 5 == 4 else seg[k]
                 for n in range(repeat) for seg in HOSTILE_SEGMENTS]
        (folder / name).write_bytes(end.join(lines) + end)
    return folder


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("opts", [
    {},
    {"empty_think": "omit", "system": ""},
    {"max_chars": 120, "dedup": False},
    {"directions": ["en-ja", "ja-zh_TW"], "instruction_template": "%s {src_name} -> {tgt_name} 100%"},
    {"unescape_html": False, "langs": ["en", "ja"]},
])
def test_moses_lines_equal_the_rows_dumped_one_by_one(tmp_path, small_batches, monkeypatch, opts, crlf):
    from qwen_factory_kit.convert.moses import Moses

    src = _hostile_corpus(tmp_path / "corpus", 40, crlf)
    fast = _convert_with(1, "moses", src, tmp_path / "fast", encoding="utf-8", **opts)
    monkeypatch.setattr(Moses, "lines_batch", lambda self, batch, keep: None)
    monkeypatch.setattr("qwen_factory_kit.convert.moses._decode_columns", lambda decoders, raw: None)
    plain = _convert_with(1, "moses", src, tmp_path / "plain", encoding="utf-8", **opts)
    assert fast == plain  # rows, rejects (reasons, places) and manifest (counts, notes, think tally)
    counts = json.loads(fast["rows.manifest.json"])["counts"]
    assert counts["written"] > 0 and counts["read"] == 40 * len(HOSTILE_SEGMENTS)
    assert {"empty_segment", "nul_character", "chat_special_tokens", "encoding_error", "cr_line_breaks"} <= set(counts["rejected_by_reason"])


# ---------------------------------------------------------------------------------------------
# --workers: results through shared-memory slots, or the pipe when a slot is too small
# ---------------------------------------------------------------------------------------------
def test_worker_results_through_slots_or_the_pipe_give_the_same_bytes(tmp_path, small_batches, monkeypatch):
    from qwen_factory_kit.convert import workers

    src = workloads.make_moses(tmp_path / "corpus", 3000, seed=4)
    one = _convert_with(1, "moses", src, tmp_path / "one")
    slots = _convert_with(2, "moses", src, tmp_path / "slots")
    monkeypatch.setattr(workers, "SLOT_BYTES", 4096)  # every batch's lines are larger: the pipe
    piped = _convert_with(2, "moses", src, tmp_path / "piped")
    monkeypatch.setattr(workers, "SHM_DIR", str(tmp_path / "no-shm"))  # slots in the temporary folder
    tmp_slots = _convert_with(2, "moses", src, tmp_path / "tmp_slots")
    assert one == slots == piped == tmp_slots
    assert json.loads(one["rows.manifest.json"])["counts"]["written"] > 2000


def test_slot_files_are_removed_and_those_of_killed_runs_swept(tmp_path, monkeypatch):
    from qwen_factory_kit.convert import workers

    monkeypatch.setattr(workers, "SHM_DIR", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"qfk-slots-{dead.stdout.strip()}-0123abcd.tmp"
    stale.write_bytes(b"x" * 100)
    mine = tmp_path / f"qfk-slots-{os.getpid()}-89abcdef.tmp"  # a live process's file stays
    mine.write_bytes(b"x")
    slots = workers._Slots.open(3)
    assert slots is not None and not stale.exists() and mine.exists()
    made = Path(slots.path)
    assert made.stat().st_size == 3 * workers.SLOT_BYTES
    slots.view(1, 5)
    slots.close()
    assert not made.exists()


def test_a_folder_with_parts_of_two_shard_runs_names_them(tmp_path, qfk):
    src = workloads.make_moses(tmp_path / "corpus", 300, seed=3)
    data = tmp_path / "data"
    for spec in ("0/2", "1/2", "3/4"):
        code, _, err = qfk("convert", "moses", src, "--no-dedup", "--shard", spec, "--data-dir", data, "--name", "c")
        assert code == 0, err
    code, _, err = qfk("datasets", "add", data / "c", "--name", "c", "--data-dir", data)
    assert code == 2 and "different part counts (2 of 2, 1 of 4)" in err and "rm " in err
    (data / "c" / "part-00003-of-00004.jsonl").unlink()  # the fix the hint names
    code, out, err = qfk("datasets", "add", data / "c", "--name", "c", "--data-dir", data)
    assert code == 0, err
