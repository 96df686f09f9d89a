"""qfk datasets remove: a dataset goes with its splits (NAME_val, NAME_test) and its mix and filter
entries (NAME__nN, NAME__max<N>), or alone with --only; --delete-files never deletes a file that a
remaining entry still uses, and says which entry keeps it."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import EXAMPLES

from qwen_factory_kit.convert import convert
from qwen_factory_kit.recipe.mix import ensure_mix_entries
from qwen_factory_kit.registry import Registry, related_names


@pytest.fixture
def data(tmp_path):
    """med converted with val and test splits, mix entries of med and med_val, a filtered copy
    med__max2048 (its own file), and an unrelated dataset."""
    d = tmp_path / "data"
    convert("sharegpt", str(EXAMPLES / "finetome"), data_dir=str(d), name="med", register=True, val_size=2, test_size=2)
    ensure_mix_entries(["med__n5", "med_val__n3"], d)
    shutil.copy(d / "med.jsonl", d / "med__max2048.jsonl")
    reg = Registry(d)
    reg.add("med__max2048", {**reg.get("med"), "file_name": "med__max2048.jsonl"})
    convert("sharegpt", str(EXAMPLES / "finetome"), data_dir=str(d), name="other", register=True)
    return d


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # rich wraps long lines at the terminal's width (80 here)


def _names(d) -> list[str]:
    return list(json.loads((d / "dataset_info.json").read_text()))


def test_related_names_follow_the_files_and_the_suffixes(data):
    reg = Registry(data)
    info = reg.read()
    assert related_names("med", info, data) == ["med_val", "med_test", "med__n5", "med_val__n3", "med__max2048"]
    assert related_names("med_val", info, data) == ["med_val__n3"]
    assert related_names("other", info, data) == []
    # a dataset of its own that happens to be named like a split is not med's
    info["med_val"]["file_name"] = "other.jsonl"
    assert related_names("med", info, data) == ["med_test", "med__n5", "med__max2048"]


def test_remove_takes_the_related_entries_and_their_files(data, qfk):
    code, out, err = qfk("datasets", "remove", "med", "--delete-files", "--data-dir", data, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert list(res["removed"]) == ["med", "med_val", "med_test", "med__n5", "med_val__n3", "med__max2048"]
    assert res["still_registered"] == [] and res["kept"] == {}
    assert sorted(p.rsplit("/", 1)[-1] for p in res["deleted"]) == sorted(
        ["med.jsonl", "med_val.jsonl", "med_test.jsonl", "med.rejects.jsonl", "med.manifest.json", "med__max2048.jsonl"])
    assert _names(data) == ["other"]
    assert sorted(p.name for p in data.iterdir()) == sorted(
        ["other.jsonl", "other.rejects.jsonl", "other.manifest.json", "dataset_info.json", "dataset_info.json.bak",
         "dataset_info.json.lock"])


def test_only_removes_one_entry_and_keeps_the_files_others_use(data, qfk):
    code, out, err = qfk("datasets", "remove", "med", "--only", "--delete-files", "--data-dir", data)
    assert code == 0, err
    assert "removed med (med.jsonl)" in out
    assert f"kept {data / 'med.jsonl'}: dataset med__n5 still uses it" in out
    assert f"kept {data / 'med.manifest.json'}: dataset med_val still uses it" in out
    assert "still registered: med_val, med_test, med__n5, med_val__n3, med__max2048" in out
    assert "deleted" not in out  # every file of med is used by a remaining entry
    assert _names(data) == ["med_val", "med_test", "med__n5", "med_val__n3", "med__max2048", "other"]
    assert (data / "med.jsonl").is_file() and (data / "med.rejects.jsonl").is_file()

    # the last entry that uses the conversion's file, manifest and rejects takes them with it
    assert qfk("datasets", "remove", "med_val", "--delete-files", "--data-dir", data)[0] == 0
    assert qfk("datasets", "remove", "med_test", "--delete-files", "--data-dir", data)[0] == 0
    assert not (data / "med_val.jsonl").exists() and not (data / "med_test.jsonl").exists()
    assert (data / "med.jsonl").is_file() and (data / "med.manifest.json").is_file()  # med__n5 still uses them
    code, out, _ = qfk("datasets", "remove", "med__n5", "--delete-files", "--data-dir", data)
    assert code == 0
    for name in ("med.jsonl", "med.manifest.json", "med.rejects.jsonl"):
        assert f"deleted {data / name}" in out and not (data / name).exists()
    assert _names(data) == ["med__max2048", "other"]


def test_a_file_shared_with_another_dataset_is_kept(data, qfk):
    reg = Registry(data)
    reg.add("copy", {**reg.get("other")})  # the user registered other.jsonl twice
    code, out, err = qfk("datasets", "remove", "other", "--delete-files", "--data-dir", data, "--json")
    res = json.loads(out)
    assert code == 0 and list(res["removed"]) == ["other"]
    assert res["kept"] == {str(data / "other.jsonl"): "copy", str(data / "other.manifest.json"): "copy",
                           str(data / "other.rejects.jsonl"): "copy"}
    assert res["deleted"] == [] and (data / "other.jsonl").is_file()


def test_without_delete_files_the_data_stays(data, qfk):
    files = sorted(p.name for p in data.iterdir())
    code, out, _ = qfk("datasets", "remove", "med", "--data-dir", data)
    assert code == 0 and "removed med_val (med_val.jsonl)" in out and "removed med__n5 (med.jsonl)" in out
    assert sorted(p.name for p in data.iterdir()) == files and _names(data) == ["other"]
    code, _, err = qfk("datasets", "remove", "med", "--data-dir", data)
    assert code == 2 and "no dataset 'med'" in err
