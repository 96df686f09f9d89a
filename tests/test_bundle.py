"""qfk recipe pack / unpack: round trips (re-converted from sources, or with the data), exact-mix
entries, moved and hub sources, and hostile bundles refused with nothing written outside DIR."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
import zipfile
from pathlib import Path

import pytest
from conftest import EXAMPLES

from qwen_factory_kit.convert import convert
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.recipe.bundle import pack, unpack
from qwen_factory_kit.recipe.bundle.untrusted import Budget
from qwen_factory_kit.registry import Registry

RECIPE = """\
# a hand-written recipe
### model
model_name_or_path: Qwen/Qwen3-0.6B

### method
stage: sft
do_train: true
finetuning_type: lora
lora_target: all

### data
dataset: demo_medical,demo_finetome
eval_dataset: demo_medical_val
dataset_dir: data
template: qwen3
cutoff_len: 1024

### output
output_dir: saves/demo
"""


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """A workspace (the folder recipes run from) with two converted examples, sources copied to src/."""
    src = tmp_path / "src"
    (src / "medical").mkdir(parents=True)
    shutil.copy(EXAMPLES / "medical_r1" / "rows.jsonl", src / "medical" / "rows.jsonl")
    shutil.copytree(EXAMPLES / "finetome", src / "finetome")
    w = tmp_path / "ws"
    data = w / "data"
    convert("medical-r1", str(src / "medical" / "rows.jsonl"), data_dir=str(data), name="demo_medical", register=True,
            force=True, fix_escaped_newlines=True, min_quality=0.9, val_size=2)
    convert("sharegpt", str(src / "finetome"), data_dir=str(data), name="demo_finetome", register=True, force=True)
    (w / "recipe.yaml").write_text(RECIPE)
    monkeypatch.chdir(w)
    return w


def _snapshot(root: Path, skip: Path) -> dict:
    """Every path under root except skip (and what is under it): size and mtime."""
    out = {}
    for p in root.rglob("*"):
        if p == skip or skip in p.parents:
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns) if p.is_file() else "dir"
    return out


def _same_files(a: Path, b: Path, names) -> None:
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------
def test_round_trip_reconverts_from_the_recorded_sources(ws, tmp_path):
    res = pack("recipe.yaml", "b.zip")
    assert res["with_data"] is False and set(res["datasets"]) == {"demo_medical", "demo_finetome", "demo_medical_val"}
    with zipfile.ZipFile(ws / "b.zip") as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert set(names) == {"bundle.json", "recipe.yaml", "dataset_info.json", "data/demo_medical.manifest.json",
                              "data/demo_finetome.manifest.json"}
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
        assert zf.read("recipe.yaml") == (ws / "recipe.yaml").read_bytes()
        meta = json.loads(zf.read("bundle.json"))
    assert meta["recipe"]["name"] == "recipe"
    assert meta["recipe"]["sha256"] == hashlib.sha256(RECIPE.encode()).hexdigest()
    med = meta["datasets"]["demo_medical"]["manifest"]
    assert med["converter"] == "medical-r1" and med["options"]["min_quality"] == 0.9
    assert med["source"]["files"][0]["sha256"] == hashlib.sha256((tmp_path / "src/medical/rows.jsonl").read_bytes()).hexdigest()
    assert {m["name"] for m in meta["members"]} == set(names) - {"bundle.json"}

    # deterministic: the same inputs give the same bytes
    pack("recipe.yaml", "again.zip")
    assert (ws / "b.zip").read_bytes() == (ws / "again.zip").read_bytes()
    with pytest.raises(QfkError, match="exists"):
        pack("recipe.yaml", "b.zip")

    out = tmp_path / "elsewhere"
    got = unpack(ws / "b.zip", out)
    assert Path(got["recipe"]) == out / "recipe.yaml" and (out / "recipe.yaml").read_text() == RECIPE
    assert {n: d["how"] for n, d in got["datasets"].items()} == dict.fromkeys(
        ["demo_medical", "demo_finetome", "demo_medical_val"], "converted")
    assert got["conversions"]["demo_medical"]["options_not_passed"] == ["source_records"]
    _same_files(ws / "data", out / "data", ["demo_medical.jsonl", "demo_medical_val.jsonl", "demo_finetome.jsonl"])
    before, after = Registry(ws / "data").read(), Registry(out / "data").read()
    assert set(after) == {"demo_medical", "demo_finetome", "demo_medical_val"}
    assert all(after[n] == before[n] for n in after)
    # the new manifest's source path is relative to the new data dir
    m = json.loads((out / "data" / "demo_medical.manifest.json").read_text())
    assert (out / "data" / m["source"]["path"]).resolve() == (tmp_path / "src/medical/rows.jsonl").resolve()

    # unpacking the same bundle again is a no-op; a changed recipe in DIR is kept unless --force
    unpack(ws / "b.zip", out)
    (out / "recipe.yaml").write_text("mine: 1\n")
    with pytest.raises(QfkError, match="exists"):
        unpack(ws / "b.zip", out)
    assert (out / "recipe.yaml").read_text() == "mine: 1\n"
    unpack(ws / "b.zip", out, force=True)
    assert (out / "recipe.yaml").read_text() == RECIPE


def test_with_data_and_an_exact_mix(ws, tmp_path):
    from qwen_factory_kit.recipe.build import RecipeRequest, new_recipe
    from qwen_factory_kit.tiny import TINY_CONFIG

    model = tmp_path / "models" / "tiny-qwen3"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "qwen3", **TINY_CONFIG}))
    recipe = new_recipe(RecipeRequest(method="lora", model=str(model), datasets=["demo_medical", "demo_finetome"],
                                      mix={"demo_medical": 0.75, "demo_finetome": 0.25}, eval_datasets=["demo_medical_val"],
                                      data_dir="data", output_dir="saves/mix", filename="mix.yaml"))
    (ws / "mix.yaml").write_text(recipe.render())
    assert recipe.args["dataset"] == "demo_medical__n6,demo_finetome__n2"

    res = pack("mix.yaml", "mix.zip", with_data=True)
    assert res["datasets"]["demo_medical__n6"] == {"kind": "file", "included": True, "manifest": True, "base": "demo_medical"}
    meta = json.loads(zipfile.ZipFile(ws / "mix.zip").read("bundle.json"))
    assert meta["datasets"]["demo_medical__n6"]["base_entry"] == Registry(ws / "data").read()["demo_medical"]
    assert {m["name"] for m in meta["members"]} >= {"data/demo_medical.jsonl", "data/demo_medical_val.jsonl",
                                                     "data/demo_finetome.jsonl"}
    shutil.rmtree(tmp_path / "src")  # the data must come from the bundle

    out = tmp_path / "run"
    with pytest.raises(QfkError, match="model_name_or_path"):  # a local model path is outside DIR
        unpack(ws / "mix.zip", out)
    assert not out.exists()
    got = unpack(ws / "mix.zip", out, allow_outside=True)
    assert {d["how"] for d in got["datasets"].values()} == {"included"}
    assert got["datasets"]["demo_finetome__n2"]["base"] == "demo_finetome"
    _same_files(ws / "data", out / "data", ["demo_medical.jsonl", "demo_medical_val.jsonl", "demo_finetome.jsonl",
                                            "demo_medical.manifest.json"])
    before, after = Registry(ws / "data").read(), Registry(out / "data").read()
    assert set(after) == {"demo_medical", "demo_finetome", "demo_medical__n6", "demo_finetome__n2", "demo_medical_val"}
    assert all(after[n] == before[n] for n in after) and after["demo_medical__n6"]["num_samples"] == 6

    # the same mix without the data: re-converted once per source, derived entries registered too
    pack("mix.yaml", "mix-nodata.zip")
    with pytest.raises(QfkError, match="not on this machine"):
        unpack(ws / "mix-nodata.zip", tmp_path / "run2", allow_outside=True)
    assert not (tmp_path / "run2").exists()


def test_moved_source_and_source_option(ws, tmp_path):
    pack("recipe.yaml", "b.zip")
    moved = tmp_path / "moved"
    shutil.move(str(tmp_path / "src"), moved)
    out = tmp_path / "out"
    with pytest.raises(QfkError, match="--source") as err:
        unpack(ws / "b.zip", out)
    assert "not on this machine" in err.value.message
    assert not out.exists()
    with pytest.raises(QfkError, match="no dataset of the bundle"):
        unpack(ws / "b.zip", out, sources={"nope": str(moved)})

    # a copy whose bytes differ is refused before converting, naming both hashes
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes((moved / "medical" / "rows.jsonl").read_bytes() + b"\n")
    with pytest.raises(QfkError, match="does not match the bundle") as err:
        unpack(ws / "b.zip", out, sources={"demo_medical": str(bad), "demo_finetome": str(moved / "finetome")})
    assert hashlib.sha256(bad.read_bytes()).hexdigest() in err.value.message
    assert not out.exists()

    # the dataset's name, or its eval split's, points at the copy
    got = unpack(ws / "b.zip", out, sources={"demo_medical_val": str(moved / "medical" / "rows.jsonl"),
                                             "demo_finetome": str(moved / "finetome")})
    assert got["conversions"]["demo_medical"]["source"] == str(moved / "medical" / "rows.jsonl")
    _same_files(ws / "data", out / "data", ["demo_medical.jsonl", "demo_medical_val.jsonl", "demo_finetome.jsonl"])


def test_hub_source_is_downloaded_again_at_its_revision(tmp_path, monkeypatch):
    from qwen_factory_kit.io import sources

    calls = []

    def fake_download(dataset_id, revision, local):
        calls.append((dataset_id, revision, str(local)))
        local.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES / "medical_r1" / "rows.jsonl", local / "train.jsonl")

    monkeypatch.setattr(sources, "_download_modelscope", fake_download)
    w = tmp_path / "ws"
    convert("medical-r1", "modelscope://someone/med@v1", data_dir=str(w / "data"), name="med", register=True,
            cache_dir=str(tmp_path / "cache1"), min_quality=0.9)
    (w / "r.yaml").write_text("model_name_or_path: Qwen/Qwen3-0.6B\nstage: sft\ndataset: med\noutput_dir: saves/x\n")
    monkeypatch.chdir(w)
    pack("r.yaml", "b.zip")
    got = unpack(w / "b.zip", tmp_path / "out", cache_dir=tmp_path / "cache2")
    assert calls[-1][:2] == ("someone/med", "v1") and calls[-1][2].startswith(str(tmp_path / "cache2"))
    assert got["conversions"]["med"]["kind"] == "modelscope"
    _same_files(w / "data", tmp_path / "out" / "data", ["med.jsonl"])


def test_registered_without_a_manifest_needs_with_data(ws, tmp_path):
    hand = ws / "data" / "hand.jsonl"
    hand.write_text(json.dumps({"instruction": "q", "input": "", "output": "a"}) + "\n")
    Registry(ws / "data").add("hand", {"file_name": "hand.jsonl", "formatting": "alpaca", "ranking": False,
                                       "columns": {"prompt": "instruction", "query": "input", "response": "output"}})
    (ws / "hand.yaml").write_text("model_name_or_path: Qwen/Qwen3-0.6B\ndataset: hand,demo_medical\n")
    with pytest.raises(QfkError, match="no qfk manifest") as err:
        pack("hand.yaml", "h.zip")
    assert "--with-data" in err.value.hint
    assert not (ws / "h.zip").exists()
    res = pack("hand.yaml", "h.zip", with_data=True)
    assert res["datasets"]["hand"]["manifest"] is False
    unpack(ws / "h.zip", tmp_path / "o")
    assert (tmp_path / "o" / "data" / "hand.jsonl").read_bytes() == hand.read_bytes()

    # a converted file edited after conversion cannot be re-made from its source
    with open(ws / "data" / "demo_medical.jsonl", "a") as fh:
        fh.write(json.dumps({"instruction": "x", "input": "", "output": "y"}) + "\n")
    with pytest.raises(QfkError, match="changed since it was converted"):
        pack("recipe.yaml", "c.zip")


def test_deepspeed_config_travels(ws, tmp_path):
    (ws / "ds.yaml").write_text(RECIPE + "deepspeed: deepspeed/ds_z3_config.json\n")
    pack("ds.yaml", "ds.zip")  # not in the folder: the kit's shipped config is packed
    assert "files/deepspeed/ds_z3_config.json" in zipfile.ZipFile(ws / "ds.zip").namelist()
    got = unpack(ws / "ds.zip", tmp_path / "o")
    assert json.loads((tmp_path / "o" / "deepspeed" / "ds_z3_config.json").read_text())["zero_optimization"]["stage"] == 3
    assert got["files"] == [str(tmp_path / "o" / "deepspeed" / "ds_z3_config.json")]


# ---------------------------------------------------------------------------------------------
# hostile bundles
# ---------------------------------------------------------------------------------------------
def _rebuild(src: Path, dst: Path, *, put: dict | None = None, drop=(), meta=None, relist: bool = True, infos=()) -> Path:
    """Copy bundle src to dst with members replaced/added (put), removed (drop), bundle.json changed
    (meta: a function), the member listing recomputed (relist) and raw ZipInfo members added (infos)."""
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    bundle = json.loads(members.pop("bundle.json"))
    for n in drop:
        members.pop(n)
    members.update(put or {})
    if meta:
        meta(bundle)
    if relist:
        bundle["members"] = [{"name": n, "sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)}
                             for n, b in sorted(members.items())]
    members["bundle.json"] = json.dumps(bundle).encode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
            for n, b in members.items():
                zf.writestr(n, b)
            for info, data in infos:
                zf.writestr(info, data)
    return dst


@pytest.fixture
def good(ws) -> Path:
    pack("recipe.yaml", "good.zip")
    return ws / "good.zip"


@pytest.fixture
def good_data(ws) -> Path:
    pack("recipe.yaml", "data.zip", with_data=True)
    return ws / "data.zip"


def _refused(bundle: Path, tmp_path: Path, match: str, **kw) -> QfkError:
    """Unpack must raise, write nothing outside DIR, and leave no recipe or registry in DIR."""
    out = tmp_path / "victim"
    before = _snapshot(tmp_path, out)
    with pytest.raises(QfkError, match=match) as err:
        unpack(bundle, out, **kw)
    assert _snapshot(tmp_path, out) == before
    assert not out.exists() or not any(out.rglob("*.yaml")) and not any(out.rglob("dataset_info.json"))
    assert "\n" not in err.value.message
    return err.value


def _set_recipe(text: str):
    return {"recipe.yaml": text.encode()}


def _meta_recipe_sha(text: str):
    def change(b):
        b["recipe"]["sha256"] = hashlib.sha256(text.encode()).hexdigest()
        b["recipe"]["bytes"] = len(text.encode())
    return change


@pytest.mark.parametrize("name, match", [("../evil", "'..'"), ("/tmp/evil", "absolute"), ("data/..\\..\\evil", "backslash"),
                                         ("C:/evil", "drive"), ("data/./x", "'.'"), ("dir/", "directory")])
def test_bad_member_names(good, tmp_path, name, match):
    _refused(_rebuild(good, tmp_path / "h.zip", put={name: b"x"}), tmp_path, match)


def test_symlink_duplicate_unknown_and_unlisted_members(good, tmp_path):
    link = zipfile.ZipInfo("data/link.jsonl")
    link.create_system = 3
    link.external_attr = 0o120777 << 16
    _refused(_rebuild(good, tmp_path / "s.zip", infos=[(link, b"/etc/passwd")]), tmp_path, "symbolic link")
    dup = _rebuild(good, tmp_path / "d.zip", infos=[(zipfile.ZipInfo("recipe.yaml"), b"output_dir: /etc\n")])
    _refused(dup, tmp_path, "twice")
    _refused(_rebuild(good, tmp_path / "u.zip", put={"notes.txt": b"hi"}), tmp_path, "not a part of a recipe bundle")
    _refused(_rebuild(good, tmp_path / "x.zip", put={"data/extra.jsonl": b"{}\n"}), tmp_path, "not used by any dataset")
    _refused(_rebuild(good, tmp_path / "n.zip", put={"data/extra.jsonl": b"{}\n"}, relist=False), tmp_path, "not listed")
    _refused(_rebuild(good, tmp_path / "l.zip", put={"recipe.yaml": RECIPE.encode() + b"#\n"}, relist=False), tmp_path,
             "does not match bundle.json")


def test_size_limits_and_zip_bombs(good, tmp_path):
    _refused(good, tmp_path, "over the limit", max_member_bytes=1000)
    _refused(good, tmp_path, "add up to more than", max_total_bytes=5000)
    bomb = _rebuild(good, tmp_path / "bomb.zip", put={"data/bomb.jsonl": b"\0" * (4 << 20)})
    _refused(bomb, tmp_path, "zip bomb")


def test_limits_are_enforced_on_the_bytes_read_not_the_header(good, tmp_path):
    """A member whose header under-states its size is stopped by the bytes actually read."""
    budget = Budget(max_member=10, max_total=1 << 30)
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("recipe.yaml")
        with pytest.raises(QfkError, match="larger than 10 bytes"):
            budget.read(zf, info, lambda _: None)


@pytest.mark.parametrize("text, match", [
    ("dataset: demo_medical\nx: !!python/object/apply:os.system ['touch PWNED']\n", "not plain YAML"),
    ("dataset: demo_medical\noutput_dir: ${oc.env:HOME}\n", "interpolation"),
    ("dataset: demo_medical\na: &x [1]\nb: *x\n", "anchors"),
    ("- a list\n", "not a YAML mapping"),
    ("dataset: demo_medical\noutput_dir: /etc/x\n", "output_dir"),
    ("dataset: demo_medical\ndataset_dir: ../../data\n", "dataset_dir"),
    ("dataset: demo_medical\nadapter_name_or_path: saves/a,/etc/b\n", "adapter_name_or_path"),
    ("dataset: demo_medical\nmodel_name_or_path: /models/Qwen3-4B\n", "model_name_or_path"),
    ("dataset: demo_medical\ncache_dir: ~/.cache\n", "cache_dir"),
    ("dataset: demo_medical\ntrust_remote_code: true\n", "trust_remote_code"),
])
def test_unsafe_recipes(good, tmp_path, text, match):
    bad = _rebuild(good, tmp_path / "r.zip", put=_set_recipe(text), meta=_meta_recipe_sha(text))
    _refused(bad, tmp_path, match)
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "ws" / "PWNED").exists()


def test_trust_remote_code_and_outside_paths_when_allowed(good, tmp_path):
    text = RECIPE + "trust_remote_code: true\n"
    b1 = _rebuild(good, tmp_path / "t.zip", put=_set_recipe(text), meta=_meta_recipe_sha(text))
    _refused(b1, tmp_path, "trust_remote_code")
    unpack(b1, tmp_path / "ok1", trust_remote_code=True)
    assert (tmp_path / "ok1" / "recipe.yaml").read_text() == text

    text = RECIPE.replace("output_dir: saves/demo", "output_dir: /etc/x")
    b2 = _rebuild(good, tmp_path / "o.zip", put=_set_recipe(text), meta=_meta_recipe_sha(text))
    _refused(b2, tmp_path, "output_dir")
    unpack(b2, tmp_path / "ok2", allow_outside=True)
    assert not Path("/etc/x").exists()

    # overrides recorded in bundle.json are checked like the recipe
    b3 = _rebuild(good, tmp_path / "ov.zip", meta=lambda b: b["recipe"].update(overrides=["trust_remote_code=true"]))
    _refused(b3, tmp_path, "trust_remote_code")


def _with_entry(good: Path, dst: Path, name: str, entry: dict) -> Path:
    with zipfile.ZipFile(good) as zf:
        info = json.loads(zf.read("dataset_info.json"))
    info[name] = entry

    def change(b):
        b["datasets"][name] = {**b["datasets"][name], "entry": entry}

    return _rebuild(good, dst, put={"dataset_info.json": json.dumps(info).encode()}, meta=change)


def test_entries_pointing_outside(good, tmp_path):
    base = {"formatting": "alpaca", "ranking": False, "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    _refused(_with_entry(good, tmp_path / "s.zip", "demo_finetome", {**base, "script_url": "evil_script"}), tmp_path, "script_url")
    _refused(_with_entry(good, tmp_path / "a.zip", "demo_finetome", {**base, "file_name": "/etc/passwd"}), tmp_path, "absolute")
    _refused(_with_entry(good, tmp_path / "e.zip", "demo_finetome", {**base, "file_name": "../../x.jsonl"}), tmp_path, "'..'")


def test_tampered_data_is_refused_and_nothing_registered(good_data, good, tmp_path):
    with zipfile.ZipFile(good_data) as zf:
        data = zf.read("data/demo_medical.jsonl")
    tampered = data.replace(b"\"output\"", b"\"output\" ", 1)
    # listing updated to match: the manifest's sha256 catches it
    err = _refused(_rebuild(good_data, tmp_path / "t.zip", put={"data/demo_medical.jsonl": tampered}), tmp_path, "sha256 mismatch")
    assert hashlib.sha256(tampered).hexdigest() in err.message and "demo_medical.jsonl" in err.message
    # listing not updated: the member check catches it
    _refused(_rebuild(good_data, tmp_path / "t2.zip", put={"data/demo_medical.jsonl": tampered}, relist=False), tmp_path,
             "does not match bundle.json")

    # a manifest that records other outputs: re-conversion does not match, nothing registered, DIR left empty
    with zipfile.ZipFile(good) as zf:
        manifest = json.loads(zf.read("data/demo_finetome.manifest.json"))
    manifest["outputs"]["train"]["sha256"] = "0" * 64
    bad = _rebuild(good, tmp_path / "m.zip", put={"data/demo_finetome.manifest.json": json.dumps(manifest).encode()})
    err = _refused(bad, tmp_path, "sha256 mismatch")
    assert "0" * 64 in err.message and "demo_finetome.jsonl" in err.message
    assert not (tmp_path / "victim").exists()


def test_not_a_bundle(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(QfkError, match="not a zip"):
        unpack(tmp_path / "x.zip", tmp_path / "o")
    with zipfile.ZipFile(tmp_path / "y.zip", "w") as zf:
        zf.writestr("recipe.yaml", "a: 1\n")
    with pytest.raises(QfkError, match="no bundle.json"):
        unpack(tmp_path / "y.zip", tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------------------------
def test_cli_pack_and_unpack(ws, tmp_path, qfk, qfk_json):
    res = qfk_json("recipe", "pack", "recipe.yaml", "-o", "cli.zip", "cutoff_len=2048")
    assert res["output"] == "cli.zip" and res["with_data"] is False and len(res["sha256"]) == 64
    code, out, err = qfk("recipe", "unpack", "cli.zip", tmp_path / "cli-out")
    assert code == 0, err
    assert "unpacked" in err and "cutoff_len=2048" in err
    assert (tmp_path / "cli-out" / "data" / "demo_medical.jsonl").is_file()
    got = qfk_json("recipe", "unpack", "cli.zip", tmp_path / "cli-json")
    assert got["overrides"] == ["cutoff_len=2048"] and "demo_medical" in got["registered"]

    text = RECIPE.replace("output_dir: saves/demo", "output_dir: /etc/x")
    hostile = _rebuild(ws / "cli.zip", tmp_path / "hostile.zip", put=_set_recipe(text), meta=_meta_recipe_sha(text))
    code, out, err = qfk("recipe", "unpack", hostile, tmp_path / "cli-bad")
    assert code == 2 and "Traceback" not in err and out == ""
    assert err.splitlines()[0].startswith("error: ") and "output_dir" in err.splitlines()[0]
    assert err.splitlines()[1].strip().startswith("hint:")
    assert not (tmp_path / "cli-bad").exists()

    code, out, err = qfk("recipe", "pack", "--help")
    assert code == 0 and "qfk recipe pack" in out


def test_files_outside_the_data_dir_and_hub_entries(ws, tmp_path):
    ext = tmp_path / "ext"
    convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), output=str(ext / "med.jsonl"), name="med",
            min_quality=0.9)
    reg = Registry(ws / "data")
    reg.add("med", {"file_name": str(ext / "med.jsonl"), "formatting": "alpaca", "ranking": False,
                    "columns": {"prompt": "instruction", "query": "input", "response": "output"}})
    reg.add("hub", {"hf_hub_url": "someone/data", "split": "train"})
    (ws / "ext.yaml").write_text("model_name_or_path: Qwen/Qwen3-0.6B\ndataset: med,hub\n")
    res = pack("ext.yaml", "ext.zip")
    assert any("outside data" in w for w in res["warnings"]) and res["datasets"]["hub"]["kind"] == "remote"
    with zipfile.ZipFile(ws / "ext.zip") as zf:
        info = json.loads(zf.read("dataset_info.json"))
        assert "data/med.manifest.json" in zf.namelist()
    assert list(info) == ["med", "hub"] and info["med"]["file_name"] == "med.jsonl"  # relocated into the data dir
    got = unpack(ws / "ext.zip", tmp_path / "o")
    assert got["datasets"]["hub"]["how"] == "remote" and got["datasets"]["med"]["how"] == "converted"
    assert (tmp_path / "o" / "data" / "med.jsonl").read_bytes() == (ext / "med.jsonl").read_bytes()
    assert Registry(tmp_path / "o" / "data").read() == info


@pytest.mark.slow
def test_unpacked_mix_recipe_passes_check_elsewhere(tmp_path, monkeypatch, qfk, qfk_json):
    """qfk recipe new (an exact 75/25 mix) -> pack -> unpack in another folder -> qfk recipe check passes there."""
    from qwen_factory_kit.demo import run_demo
    from qwen_factory_kit.tiny import TINY_CONFIG

    model = tmp_path / "models" / "tiny-qwen3"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "qwen3", **TINY_CONFIG}))
    w = tmp_path / "work"
    run_demo(w)
    monkeypatch.chdir(w)
    monkeypatch.setenv("QFK_DATA_DIR", str(w / "data"))
    code, _, err = qfk("recipe", "new", "--model", str(model), "--method", "lora", "--dataset", "demo_medical,demo_finetome",
                       "--mix", "demo_medical=0.75,demo_finetome=0.25", "-o", "mix.yaml", "use_cpu=true", "bf16=false")
    assert code == 0, err
    packed = qfk_json("recipe", "pack", "mix.yaml", "-o", "mix.zip")
    assert any("--allow-outside" in w_ for w_ in packed["warnings"])  # the local model folder is an absolute path
    assert any(d.get("base") for d in packed["datasets"].values())

    out = tmp_path / "colleague"
    code, _, err = qfk("recipe", "unpack", str(w / "mix.zip"), str(out))
    assert code == 2 and "model_name_or_path" in err and not out.exists()
    got = qfk_json("recipe", "unpack", str(w / "mix.zip"), str(out), "--allow-outside")
    mixed = [n for n, d in got["datasets"].items() if d.get("base")]
    assert mixed and all("__n" in n for n in mixed)
    for name in ("demo_medical.jsonl", "demo_finetome.jsonl"):
        assert (out / "data" / name).read_bytes() == (w / "data" / name).read_bytes()
    monkeypatch.chdir(out)
    monkeypatch.setenv("QFK_DATA_DIR", str(out / "data"))
    code, stdout, err = qfk("recipe", "check", "mix.yaml", "--json")
    res = json.loads(stdout)
    assert code == 0 and res["ok"], res["findings"]
    assert any(f["id"] == "datasets" and f["severity"] == "ok" for f in res["findings"])
