"""The streaming core: accounting, sampling, splits, atomic writes, sources, bad input."""

import importlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import read_jsonl, run_qfk_process, write_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.convert.splits import Selector
from qwen_factory_kit.errors import QfkError


def rows(n):
    return [{"prompt": f"q{i}", "answer": f"a{i}"} for i in range(n)]


def cols(src, out, **kw):
    return convert("columns", str(src), output=str(out), prompt="prompt", response="answer", **kw)


def test_selector_exact_and_uniform():
    rng = random.Random(0)
    picks = [0] * 10
    for _ in range(2000):
        s = Selector(10, 3, rng)
        chosen = [i for i in range(10) if s.pick()]
        assert len(chosen) == 3
        for i in chosen:
            picks[i] += 1
    assert all(450 < p < 750 for p in picks)  # 600 expected each


def test_limit_is_a_seeded_sample_not_the_head(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", rows(1000))
    a = cols(src, tmp_path / "a.jsonl", limit=50, seed=1)
    assert (a.read, a.written) == (50, 50)
    got = [int(r["instruction"][1:]) for r in read_jsonl(a.output)]
    assert got == sorted(got) and got != list(range(50)) and max(got) > 500
    b = cols(src, tmp_path / "b.jsonl", limit=50, seed=1)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    c = cols(src, tmp_path / "c.jsonl", limit=50, seed=2)
    assert (tmp_path / "c.jsonl").read_bytes() != (tmp_path / "a.jsonl").read_bytes()
    assert c.read == b.read == 50


def test_splits_exact_and_disjoint(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", rows(200))
    res = cols(src, tmp_path / "o.jsonl", val_size=0.1, test_size=15)
    assert {k: v["rows"] for k, v in res.splits.items()} == {"train": 165, "val": 20, "test": 15}
    seen = [r["instruction"] for s in ("train", "val", "test") for r in read_jsonl(res.splits[s]["path"])]
    assert len(seen) == len(set(seen)) == 200
    with pytest.raises(QfkError, match="only 200 are read"):
        cols(src, tmp_path / "x.jsonl", val_size=150, test_size=100)


def with_bad(n, every):
    """``rows(n)`` where every ``every``-th row has an empty answer (rejected)."""
    return [{"prompt": f"q{i}", "answer": ""} if i % every == 0 else r for i, r in enumerate(rows(n))]


def split_rows(res) -> dict[str, list[int]]:
    return {s: [int(r["instruction"][1:]) for r in read_jsonl(v["path"])] for s, v in res.splits.items()}


@pytest.mark.parametrize("seed", [1, 2, 3, 42])
def test_split_sizes_are_exact_in_accepted_rows(tmp_path, seed):
    src = write_jsonl(tmp_path / "in.jsonl", with_bad(200, 7))  # 29 rejected, 171 accepted
    res = cols(src, tmp_path / "o.jsonl", val_size=20, test_size=30, seed=seed)
    got = split_rows(res)
    assert (res.written, len(got["test"]), len(got["val"]), len(got["train"])) == (171, 30, 20, 121)
    assert sorted(i for v in got.values() for i in v) == [i for i in range(200) if i % 7]  # disjoint, every accepted row once
    assert all(v == sorted(v) for v in got.values())  # each split in source order
    assert res.splits["test"]["source_rows"] == 30 and res.splits_short == {}


def test_fractions_are_of_the_accepted_rows(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", with_bad(200, 5))  # 40 rejected, 160 accepted
    res = cols(src, tmp_path / "o.jsonl", val_size=0.1, test_size=0.25)
    assert {k: v["rows"] for k, v in res.splits.items()} == {"train": 104, "val": 16, "test": 40}


def test_split_sizes_are_exact_after_duplicates(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", rows(60) + rows(60))  # every row twice
    res = cols(src, tmp_path / "o.jsonl", test_size=10, val_size=0.5, dedup=True)
    assert res.rejected_by_reason == {"duplicate": 60}
    assert {k: v["rows"] for k, v in res.splits.items()} == {"train": 20, "val": 30, "test": 10}


def test_first_pass_rows_stay_and_nothing_moves_without_rejects(tmp_path):
    """Nothing rejected: each row lands where the one-pass seeded splitter puts it (the output of
    earlier versions, byte for byte). Rejects: the rows it put in val/test stay there."""
    from qwen_factory_kit.convert.splits import SPLITS, Selector, Splitter

    src = write_jsonl(tmp_path / "in.jsonl", rows(300))
    for limit in (None, 120):
        rng = random.Random(7)
        sel = Selector(300, limit, rng) if limit else None
        kept = [i for i in range(300) if sel is None or sel.pick()]
        splitter = Splitter(len(kept), 12, 25, rng)
        expected = {s: [] for s in SPLITS}
        for i in kept:
            expected[SPLITS[splitter.assign()]].append(i)
        res = cols(src, tmp_path / f"o{limit}.jsonl", val_size=12, test_size=25, seed=7, limit=limit)
        assert split_rows(res) == expected
    bad = write_jsonl(tmp_path / "bad.jsonl", with_bad(300, 4))
    one_pass = split_rows(cols(src, tmp_path / "a.jsonl", val_size=12, test_size=25, seed=7))
    exact = split_rows(cols(bad, tmp_path / "b.jsonl", val_size=12, test_size=25, seed=7))
    for s in ("val", "test"):
        assert {i for i in one_pass[s] if i % 4} <= set(exact[s])


def test_same_seed_same_bytes_with_rejects(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", with_bad(500, 3))
    outs = []
    for name, seed in (("a", 5), ("a", 5), ("b", 6)):
        res = cols(src, tmp_path / f"{name}.jsonl", val_size=0.1, test_size=40, seed=seed)
        outs.append([Path(v["path"]).read_bytes() for v in res.splits.values()])
    assert outs[0] == outs[1] and outs[0] != outs[2]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or temp file left


def test_too_few_accepted_rows_say_why(tmp_path, qfk):
    src = write_jsonl(tmp_path / "in.jsonl", with_bad(20, 2))  # 10 accepted
    res = cols(src, tmp_path / "o.jsonl", test_size=7, val_size=5)
    assert {k: v["rows"] for k, v in res.splits.items()} == {"train": 0, "val": 3, "test": 7}
    assert res.splits_short["val"] == ("asked 5 rows for val, wrote 3: only 10 of the 20 rows read were accepted "
                                       "(10 rejected or duplicates); test took 7 of them")
    assert "no rows left for train" in res.splits_short["train"] and "test" not in res.splits_short
    manifest = json.loads(res.manifest.read_text())
    assert manifest["counts"]["splits_short"] == res.splits_short and manifest["outputs"]["val"]["source_rows"] == 3
    assert res.summary()["splits_short"] == res.splits_short
    src2 = write_jsonl(tmp_path / "in2.jsonl", with_bad(20, 2))
    code, out, err = qfk("convert", "columns", src2, "--prompt", "prompt", "--response", "answer", "-o", tmp_path / "p.jsonl",
                         "--test-size", "15", "--no-register")
    assert code == 0, err
    assert "test short: asked 15 rows for test, wrote 10" in " ".join(out.split())


def test_second_pass_gives_exact_sizes_for_any_first_pass():
    """SplitPlan.moves on random first passes (rows assigned, then some rejected): the final
    splits have exactly the sizes asked of the accepted rows, or all there is."""
    from collections import Counter

    from qwen_factory_kit.convert.splits import SplitPlan

    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 60)
        val, test = rng.choice([0, 0.1, 0.5, rng.randint(1, 20)]), rng.choice([0, 0.2, rng.randint(1, 20)])
        if not (val or test):
            continue
        try:
            plan = SplitPlan(n, val, test, random.Random(1))
        except QfkError:  # asks for more than is read: refused before converting
            continue
        first = [plan.assign() for _ in range(n)]
        accepted = [s for s in first if rng.random() < 0.7]
        if not accepted:
            continue
        moves = plan.moves(Counter(accepted), n)
        final = Counter(moves.final(s) for s in accepted)
        a = len(accepted)
        want_test = min(a, round(a * test) if isinstance(test, float) else test)
        want_val = min(a - want_test, round(a * val) if isinstance(val, float) else val)
        assert (final[2], final[1], final[0]) == (want_test, want_val, a - want_test - want_val), (n, val, test, first)
        assert ("test" in moves.short) == (want_test < (round(a * test) if isinstance(test, float) else test))


def test_deterministic_bytes_and_manifest(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", rows(300) + [{"prompt": "bad"}])
    cols(src, tmp_path / "a.jsonl", val_size=0.2)
    first = {p.name: p.read_bytes() for p in tmp_path.glob("a*")}
    cols(src, tmp_path / "a.jsonl", val_size=0.2)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("a*")} == first
    m = json.loads(first["a.manifest.json"])
    assert m["counts"]["read"] == 301 and m["counts"]["rejected"] == 1
    assert m["source"]["files"][0]["sha256"] and m["outputs"]["train"]["sha256"] and m["outputs"]["val"]["rows"] == 60
    assert m["versions"]["qwen_factory_kit"] and m["options"]["val_size"] == 0.2 and m["converter"] == "columns"


def test_bom_crlf_blank_lines_and_json_array(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "q", "answer": "a"}\r\n\r\n{"prompt": "q2", "answer": "a2"}\r\n')
    res = cols(p, tmp_path / "o.jsonl")
    assert (res.read, res.written, res.rejected_by_reason) == (3, 2, {"blank_line": 1})
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps(rows(3) + [5]))
    res = cols(arr, tmp_path / "p.jsonl")
    assert res.written == 3 and read_jsonl(res.rejects)[0] == {"source": str(arr), "item": 4, "reason": "not_an_object",
                                                                "detail": "expected a JSON object, got int", "record": 5}


def test_csv_source_with_multiline_and_numbers(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text('prompt,answer\n"line1\nline2",42\nq,""\n', encoding="utf-8")
    res = cols(p, tmp_path / "o.jsonl")
    assert read_jsonl(res.output)[0]["instruction"] == "line1\nline2"
    assert read_jsonl(res.output)[0]["output"].endswith("42")
    assert [(r["row"], r["reason"]) for r in read_jsonl(res.rejects)] == [(2, "empty_field")]


def test_parquet_row_numbers_across_batches(tmp_path):
    data = rows(10000)
    data[9000]["answer"] = None
    pq.write_table(pa.Table.from_pylist(data), tmp_path / "t.parquet", row_group_size=3000)
    res = cols(tmp_path / "t.parquet", tmp_path / "o.jsonl")
    assert read_jsonl(res.rejects)[0]["row"] == 9001 and res.written == 9999


@pytest.mark.parametrize("shard", [None, "2/3"])
def test_input_hashes_are_the_files_sha256_read_once(tmp_path, monkeypatch, shard):
    """The manifest's input hashes equal sha256sum's; the rows' own read hashes JSON Lines, JSON and
    CSV, and a second read is left to Parquet (and to every file of a --shard part)."""
    import hashlib

    from qwen_factory_kit.convert import sinks

    src = tmp_path / "src"
    write_jsonl(src / "a.jsonl", rows(3000))
    (src / "b.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows(5)).encode())
    (src / "c.csv").write_text("prompt,answer\n" + "".join(f'"q\n{i}",a{i}\n' for i in range(2000)), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows(700)), src / "d.parquet", row_group_size=300)
    second: list[str] = []
    hash_file = sinks.sha256_file
    monkeypatch.setattr(sinks, "sha256_file", lambda p: second.append(Path(p).name) or hash_file(p))
    res = cols(src, tmp_path / "o.jsonl", shard=shard)
    files = json.loads(res.manifest.read_text())["source"]["files"]
    assert {f["path"].rsplit("/", 1)[-1]: f["sha256"] for f in files} == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(src.iterdir())}
    assert second == (["d.parquet"] if shard is None else ["a.jsonl", "b.json", "c.csv", "d.parquet"])


def test_moses_files_are_hashed_as_their_lines_are_read(tmp_path, monkeypatch):
    import hashlib

    from qwen_factory_kit.convert import sinks

    src = tmp_path / "corpus"
    src.mkdir()
    (src / "corpus.en").write_text("".join(f"line {i}\n" for i in range(500)), encoding="utf-8")
    (src / "corpus.ja").write_text("".join(f"行 {i}\n" for i in range(500)), encoding="utf-8")
    (src / "README").write_text("not a corpus file\n")
    second: list[str] = []
    hash_file = sinks.sha256_file
    monkeypatch.setattr(sinks, "sha256_file", lambda p: second.append(Path(p).name) or hash_file(p))
    res = convert("moses", str(src), output=str(tmp_path / "o.jsonl"))
    files = json.loads(res.manifest.read_text())["source"]["files"]
    assert {f["path"].rsplit("/", 1)[-1]: f["sha256"] for f in files} == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(src.iterdir())}
    assert second == ["README"]  # no row comes from it: read for its hash alone


def test_empty_input_and_missing_source(tmp_path, qfk):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(QfkError, match="holds no rows"):
        cols(tmp_path / "empty.jsonl", tmp_path / "o.jsonl")
    code, out, err = qfk("convert", "medical-r1", tmp_path / "nope.jsonl")
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(QfkError, match="unsupported file type"):
        cols(tmp_path / "x.txt", tmp_path / "o.jsonl")


def test_all_rows_rejected_is_an_error_but_rejects_are_kept(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q"}] * 3)
    (tmp_path / "o.jsonl").write_text('{"previous": true}\n')
    with pytest.raises(QfkError, match="every one of the 3 rows was rejected"):
        cols(src, tmp_path / "o.jsonl")
    assert (tmp_path / "o.jsonl").read_text() == '{"previous": true}\n'  # previous output intact
    assert len(read_jsonl(tmp_path / "o.rejects.jsonl")) == 3


def test_interrupted_run_leaves_previous_output_and_no_partial_file(tmp_path):
    big = tmp_path / "big.jsonl"
    with open(big, "w") as fh:
        for i in range(400_000):
            fh.write(json.dumps({"prompt": f"question {i} " * 5, "answer": f"answer {i} " * 10}) + "\n")
    out = tmp_path / "out" / "o.jsonl"
    out.parent.mkdir()
    out.write_text('{"previous": true}\n')
    proc = subprocess.Popen([sys.executable, "-m", "qwen_factory_kit", "convert", "columns", str(big), "--prompt", "prompt",
                             "--response", "answer", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.parent.glob(".o.jsonl.*.tmp")):
        time.sleep(0.02)
    assert list(out.parent.glob(".o.jsonl.*.tmp")), "the conversion never started writing"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"Traceback" not in err
    assert out.read_text() == '{"previous": true}\n'
    assert sorted(p.name for p in out.parent.iterdir()) == ["o.jsonl"]


def test_modelscope_source_goes_through_the_sdk(tmp_path, monkeypatch):
    sd = importlib.import_module("modelscope.hub.snapshot_download")

    calls = []

    def fake_download(*, dataset_id, local_dir, revision=None, **kw):  # the network boundary
        calls.append((dataset_id, revision))
        write_jsonl(f"{local_dir}/r1_data_example.jsonl", [{"question": "Q", "think": "t", "answer": "A", "instruction": "I"}])
        (tmp_path / "README.md").write_text("x")
        return local_dir

    monkeypatch.setattr(sd, "dataset_snapshot_download", fake_download)
    res = convert("medical-r1", "modelscope://krisfu/delicate_medical_r1_data@v1.0", output=str(tmp_path / "o.jsonl"),
                  cache_dir=str(tmp_path / "cache"))
    assert calls == [("krisfu/delicate_medical_r1_data", "v1.0")] and res.written == 1
    m = json.loads(res.manifest.read_text())
    assert m["source"]["dataset_id"] == "krisfu/delicate_medical_r1_data" and m["source"]["revision"] == "v1.0"
    assert m["source"]["files"][0]["path"] == "r1_data_example.jsonl"
    assert res.name == "medical_r1"  # named from dataset_info/catalog.json


def test_modelscope_offline_error_says_how_to_download(tmp_path, monkeypatch, qfk):
    sd = importlib.import_module("modelscope.hub.snapshot_download")

    def offline(**kw):
        raise ConnectionError("Failed to resolve 'www.modelscope.cn'")

    monkeypatch.setattr(sd, "dataset_snapshot_download", offline)
    code, _, err = qfk("convert", "medical-r1", "modelscope://krisfu/delicate_medical_r1_data", "--cache-dir", tmp_path)
    assert code == 2 and "cannot download" in err and "modelscope download --dataset krisfu/delicate_medical_r1_data" in err
    assert "Traceback" not in err


def test_bad_scheme_and_bad_output(tmp_path, qfk):
    code, _, err = qfk("convert", "sharegpt", "s3://bucket/x")
    assert code == 2 and "unknown source scheme" in err
    src = write_jsonl(tmp_path / "in.jsonl", rows(2))
    code, _, err = qfk("convert", "columns", src, "--prompt", "prompt", "--response", "answer", "-o", tmp_path / "o.csv")
    assert code == 2 and "must end in .jsonl" in err


def test_no_traceback_for_user_mistakes_in_a_real_process(tmp_path):
    p = run_qfk_process("convert", "moses", tmp_path / "missing-dir")
    assert p.returncode == 2 and "error:" in p.stderr and "Traceback" not in p.stderr
    p = run_qfk_process("convert", "medical-r1")
    assert p.returncode == 2 and "Missing argument 'SOURCE'" in p.stderr


def test_hf_source_goes_through_huggingface_hub(tmp_path, monkeypatch):
    hub = importlib.import_module("huggingface_hub")
    calls = []

    def fake_snapshot(*, repo_id, repo_type, revision, local_dir, **kw):  # the network boundary
        calls.append((repo_id, repo_type, revision))
        (tmp_path / "c").mkdir(exist_ok=True)
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        rows = [{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}]
        pq.write_table(pa.Table.from_pylist(rows), Path(local_dir) / "train-00000-of-00001.parquet")
        return local_dir

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot)
    res = convert("finetome", "hf://mlabonne/FineTome-100k", output=str(tmp_path / "o.jsonl"), cache_dir=str(tmp_path / "c"))
    assert calls == [("mlabonne/FineTome-100k", "dataset", None)] and res.written == 1
    assert json.loads(res.manifest.read_text())["source"]["revision"] == "main"
