"""dataset_info.json: complete entries, safety (locks, atomic writes, .bak, user entries kept)."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, write_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.registry import Registry, build_entry, check_entry, validate_entry

USER_FILE = """{
  "user_set": {"file_name": "user.json", "columns": {"prompt": "q", "response": "a", "query": "ctx"}, "formatting": "alpaca"},
  "hub_set": {"hf_hub_url": "someone/data", "split": "train"}
}
"""


def test_convert_registers_with_complete_blocks_and_keeps_user_entries(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(USER_FILE)
    res = convert("sharegpt", str(EXAMPLES / "finetome"), data_dir=str(data), register=True, val_size=2, name="ft")
    assert res.registered == ["ft", "ft_val"]
    info = json.loads((data / "dataset_info.json").read_text())
    assert list(info) == ["user_set", "hub_set", "ft", "ft_val"]
    assert info["user_set"] == json.loads(USER_FILE)["user_set"]
    assert list(info["user_set"]) == ["file_name", "columns", "formatting"]  # key order kept
    assert info["ft"]["columns"] == {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                                     "history": "history"}
    assert info["ft_val"]["file_name"] == "ft_val.jsonl"
    assert (data / "dataset_info.json.bak").read_text() != (data / "dataset_info.json").read_text()


def test_sharegpt_and_ranking_entries_are_complete():
    sg = build_entry("x.jsonl", formatting="sharegpt", columns={"messages": "conversations", "system": "system"})
    assert sg["tags"] == {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                          "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
    rk = build_entry("p.jsonl", ranking=True, columns={"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"})
    assert rk["columns"] == {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}
    for name, e in (("sg", sg), ("rk", rk)):
        validate_entry(name, e)


def test_schema_rejects_what_llamafactory_would_trip_on():
    with pytest.raises(QfkError, match="columns"):
        validate_entry("bad", {"file_name": "x.jsonl", "columns": {"promt": "instruction"}})
    with pytest.raises(QfkError):
        validate_entry("bad", {"formatting": "alpaca"})  # no source
    with pytest.raises(QfkError, match="formatting"):
        validate_entry("bad", {"file_name": "x", "formatting": "chatml"})


def test_name_collision_refused_unless_force(tmp_path, qfk):
    data = tmp_path / "data"
    src = EXAMPLES / "preference" / "pairs.jsonl"
    assert qfk("convert", "preference", src, "--data-dir", data, "--name", "prefs")[0] == 0
    other = write_jsonl(tmp_path / "other.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    code, _, err = qfk("convert", "preference", other, "--data-dir", data, "--name", "prefs", "-o", tmp_path / "o.jsonl")
    assert code == 2 and "already registered" in err and "--force" in err
    assert json.loads((data / "dataset_info.json").read_text())["prefs"]["file_name"] == "prefs.jsonl"
    code, _, _ = qfk("convert", "preference", other, "--data-dir", data, "--name", "prefs", "-o", tmp_path / "o.jsonl", "--force")
    assert code == 0
    assert json.loads((data / "dataset_info.json").read_text())["prefs"]["file_name"] == str((tmp_path / "o.jsonl").resolve())


def test_name_collision_is_found_before_any_row_is_read(tmp_path, qfk, monkeypatch):
    """The registry is checked before the conversion starts: exit 2, the same message and hint, nothing written."""
    from qwen_factory_kit.convert.contract import TableSource

    data = tmp_path / "data"
    Registry.at(data).add("prefs", build_entry("elsewhere.jsonl", ranking=True, columns={"chosen": "chosen", "rejected": "rejected"}))
    before = (data / "dataset_info.json").read_text()

    def no_reading(self):
        raise AssertionError("rows were read before the registry was checked")

    monkeypatch.setattr(TableSource, "batches", no_reading)
    monkeypatch.setattr(TableSource, "count", no_reading)
    src = EXAMPLES / "preference" / "pairs.jsonl"
    code, _, err = qfk("convert", "preference", src, "--data-dir", data, "--name", "prefs", "--val-size", "2")
    assert code == 2 and "dataset 'prefs' is already registered for elsewhere.jsonl" in err
    assert "choose another --name, or pass --force to replace it" in err
    assert not [p.name for p in data.iterdir() if "prefs" in p.name]  # no output, rejects or manifest
    assert (data / "dataset_info.json").read_text() == before


@pytest.mark.parametrize("taken", ["x_val", "x_test"])
def test_split_names_are_checked_too(tmp_path, qfk, taken):
    data = tmp_path / "data"
    Registry.at(data).add(taken, build_entry("other.jsonl"))
    src = write_jsonl(tmp_path / "in.jsonl", [{"q": f"q{i}", "a": "a"} for i in range(10)])
    args = ("convert", "columns", src, "--prompt", "q", "--response", "a", "--data-dir", data, "--name", "x")
    code, _, err = qfk(*args, "--val-size", "2", "--test-size", "2")
    assert code == 2 and f"dataset '{taken}' is already registered for other.jsonl" in err
    assert not (data / "x.jsonl").exists() and not (data / "x.rejects.jsonl").exists()
    other = "--test-size" if taken == "x_val" else "--val-size"
    code, _, err = qfk(*args, other, "2")  # that split is not asked for: no conflict
    assert code == 0, err
    code, _, err = qfk(*args, other, "2")  # the same files again: no conflict either
    assert code == 0, err
    code, _, err = qfk(*args, "--val-size", "2", "--test-size", "2", "--force")
    assert code == 0, err
    assert Registry.at(data).get(taken)["file_name"] == f"{taken}.jsonl"


def test_check_free_matches_add(tmp_path):
    reg = Registry.at(tmp_path / "data")
    reg.add("a", build_entry("a.jsonl"))
    reg.check_free({"a": tmp_path / "data" / "a.jsonl", "new": tmp_path / "data" / "n.jsonl"})  # same file, free name
    with pytest.raises(QfkError, match="already registered for a.jsonl"):
        reg.check_free({"a": tmp_path / "elsewhere.jsonl"})
    reg.check_free({"a": tmp_path / "elsewhere.jsonl"}, force=True)
    reg.add("hub", {"hf_hub_url": "someone/data"})
    with pytest.raises(QfkError, match="already registered for"):
        reg.check_free({"hub": tmp_path / "data" / "hub.jsonl"})


def test_malformed_registry_is_reported_and_never_overwritten(tmp_path, qfk):
    data = tmp_path / "data"
    data.mkdir()
    broken = '{\n  "a": {"file_name": "a.jsonl"},\n  "b": {"file_name": "b.jsonl",}\n}\n'
    (data / "dataset_info.json").write_text(broken)
    code, _, err = qfk("convert", "medical-r1", EXAMPLES / "medical_r1" / "rows.jsonl", "--data-dir", data)
    assert code == 2 and "line 3, column" in err and "Traceback" not in err
    assert (data / "dataset_info.json").read_text() == broken


def _add_many(args):
    data_dir, worker = args
    reg = Registry(Path(data_dir))
    for i in range(25):
        reg.add(f"w{worker}_{i}", build_entry(f"w{worker}_{i}.jsonl"))
    return worker


def test_eight_processes_adding_25_entries_each_lose_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(USER_FILE)
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        assert sorted(pool.map(_add_many, [(str(data), w) for w in range(8)])) == list(range(8))
    info = json.loads((data / "dataset_info.json").read_text())
    assert len(info) == 202 and "user_set" in info and all(f"w{w}_{i}" in info for w in range(8) for i in range(25))


KILL_SCRIPT = r"""
import os, sys, time
from pathlib import Path
import qwen_factory_kit.io.atomic as atomic
from qwen_factory_kit.registry import Registry, build_entry
real_replace = os.replace
def slow_replace(src, dst):
    print("WRITING", flush=True)
    time.sleep(30)
    real_replace(src, dst)
atomic.os.replace = slow_replace
Registry(Path(sys.argv[1])).add("new_entry", build_entry("new.jsonl"))
"""


def test_killed_during_write_leaves_old_file_intact(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(USER_FILE)
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(data)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"  # temp file written and fsynced, rename pending
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (data / "dataset_info.json").read_text() == USER_FILE
    reg = Registry(data)
    assert "new_entry" not in reg.read()
    reg.add("after", build_entry("after.jsonl"))  # the lock is released with the dead process
    assert set(reg.read()) == {"user_set", "hub_set", "after"}


def test_datasets_commands(tmp_path, qfk, qfk_json):
    data = tmp_path / "data"
    convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), data_dir=str(data), register=True, name="med")
    listing = qfk_json("datasets", "list", "--data-dir", data)
    assert list(listing) == ["med"]
    code, out, _ = qfk("datasets", "show", "med", "--data-dir", data)
    shown = json.loads(out)
    assert code == 0 and shown["manifest"]["converter"] == "medical-r1"
    code, out, _ = qfk("datasets", "check", "--data-dir", data, "--json")
    assert code == 0 and json.loads(out)[0]["severity"] == "ok"
    # add an outside file: absolute file_name; settings from the rows
    ext = write_jsonl(tmp_path / "ext" / "pairs.jsonl", [{"instruction": "p", "input": "", "chosen": "a", "rejected": "b"}])
    entry = qfk_json("datasets", "add", ext, "--name", "pairs", "--data-dir", data)["pairs"]
    assert entry["ranking"] is True and entry["file_name"] == str(ext.resolve())
    code, _, err = qfk("datasets", "add", ext, "--name", "bad name", "--data-dir", data)
    assert code == 2 and "--name bad_name" in err
    code, _, err = qfk("datasets", "remove", "nope", "--data-dir", data)
    assert code == 2 and "qfk datasets list" in err
    assert qfk("datasets", "remove", "med", "--data-dir", data, "--delete-files")[0] == 0
    assert not (data / "med.jsonl").exists() and not (data / "med.manifest.json").exists()
    assert list(json.loads((data / "dataset_info.json").read_text())) == ["pairs"]


def test_check_finds_what_llamafactory_trips_on(tmp_path):
    data = tmp_path
    write_jsonl(data / "a.jsonl", [{"instruction": "q", "output": "a"}])
    write_jsonl(data / "sg.jsonl", [{"conversations": [{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]}])
    write_jsonl(data / "p.jsonl", [{"instruction": "q", "input": "", "chosen": "a", "rejected": "b"}])
    cases = {
        "missing_file": ({"file_name": "nope.jsonl"}, "not found"),
        "missing_column": ({"file_name": "a.jsonl", "columns": {"prompt": "question", "response": "output"}}, "not in the file"),
        "partial_block": ({"file_name": "a.jsonl", "columns": {"prompt": "instruction"}}, "no 'response'"),
        "roles": (build_entry("sg.jsonl", formatting="sharegpt"), "roles"),
        "ranking": ({"file_name": "a.jsonl", "ranking": True, "columns": {"prompt": "instruction", "chosen": "c", "rejected": "r"}}, "chosen"),
        "bad_ext": ({"file_name": "a.jsonl.bak"}, "extension"),
    }
    (data / "a.jsonl.bak").write_text("x")
    for name, (entry, words) in cases.items():
        findings = check_entry(name, entry, data)
        assert any(f.severity == "error" and f.where == name and words in f.message for f in findings), (name, findings)
    assert [f.severity for f in check_entry("p", build_entry("p.jsonl", ranking=True), data)] == ["ok"]
    sft = check_entry("p", build_entry("p.jsonl", columns={"response": "chosen"}), data)
    assert [(f.id, f.severity, "ranking is false" in f.message) for f in sft] == [("ranking", "warn", True)]


def test_catalog_names_hub_datasets(qfk):
    code, out, _ = qfk("datasets", "catalog", "--json")
    cat = json.loads(out)
    assert code == 0 and cat["medical_r1"]["modelscope"] == "krisfu/delicate_medical_r1_data"
    assert cat["finetome"]["converter"] == "sharegpt"


def test_check_counts_rows_that_break_the_turn_rule(tmp_path):
    """datasets check applies the converter's and lint's turn rule (lfformat.turn_problem) to the rows read."""
    def sg(*roles):
        return {"conversations": [{"from": r, "value": "x"} for r in roles]}

    write_jsonl(tmp_path / "some.jsonl", [sg("human", "gpt"), sg("human"), sg("gpt", "human"), sg("human", "gpt")])
    write_jsonl(tmp_path / "all.jsonl", [sg("human"), sg("human", "system", "gpt")])
    some = check_entry("some", build_entry("some.jsonl", formatting="sharegpt"), tmp_path)
    assert [(f.id, f.severity, f.where) for f in some] == [("turn_rule", "warn", "some")]
    assert "2 of 4 rows" in some[0].message and "ends_without_answer: 1, role_order: 1" in some[0].message
    assert "qfk lint some" in some[0].fix
    every = check_entry("all", build_entry("all.jsonl", formatting="sharegpt"), tmp_path)
    assert [f.severity for f in every] == ["error"] and "system_not_first: 1" in every[0].message


def test_datasets_list_names_entries_that_are_not_objects(tmp_path, qfk):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text('{"good": {"file_name": "x.jsonl"}, "bad": [1, 2], "worse": "text"}')
    code, out, err = qfk("datasets", "list", "--data-dir", data)
    assert code == 0, err
    assert "good" in out and "not an entry (list)" in out and "not an entry (str)" in out
    assert "2 entries are not a JSON object: bad, worse" in " ".join(out.split())
    assert "qfk datasets remove bad" in " ".join(out.split())
