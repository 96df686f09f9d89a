"""The bundle's untrusted-input checks called alone (qwen_factory_kit/recipe/bundle/untrusted.py):
member names, the zip scan, the size budget, the member listing, plain-YAML recipes, recipe
paths, registry entries and manifests. No bundle is packed here; tests/test_bundle.py covers the
same refusals through unpack."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.recipe.bundle import untrusted as u

SHA0 = "0" * 64


def _zip(*members: tuple[str | zipfile.ZipInfo, bytes], compression=zipfile.ZIP_DEFLATED) -> zipfile.ZipFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return zipfile.ZipFile(io.BytesIO(buf.getvalue()))


# ---- member names and the zip scan --------------------------------------------------------------
@pytest.mark.parametrize("name", ["recipe.yaml", "data/demo.jsonl", "data/sub/x.manifest.json", "files/deepspeed/ds.json"])
def test_plain_member_names_pass(name):
    assert u.member_name_problem(name) is None


@pytest.mark.parametrize("name, why", [
    ("", "empty name"), ("data/a\x00b", "control characters"), ("data\\x", "backslash"), ("/etc/passwd", "absolute"),
    ("C:/x", "drive"), ("data/a:b", "drive"), ("../x", "'..'"), ("data/../../x", "'..'"), ("data/", "directory"),
    ("data//x", "empty or '.'"), ("./x", "empty or '.'"),
])
def test_member_name_problems(name, why):
    assert why in u.member_name_problem(name)


def test_scan_refuses_twins_links_folders_and_odd_compression():
    with pytest.raises(QfkError, match="only in case"):
        u.scan_members(_zip(("data/A.jsonl", b"x"), ("data/a.jsonl", b"y")), 1 << 20, 1 << 20)
    with pytest.raises(QfkError, match="only in case or Unicode form"):  # NFC and NFD spellings of é
        u.scan_members(_zip(("data/\u00e9.jsonl", b"x"), ("data/e\u0301.jsonl", b"y")), 1 << 20, 1 << 20)
    link = zipfile.ZipInfo("data/link")
    link.create_system, link.external_attr = 3, 0o120777 << 16
    with pytest.raises(QfkError, match="symbolic link"):
        u.scan_members(_zip((link, b"/etc/passwd")), 1 << 20, 1 << 20)
    fifo = zipfile.ZipInfo("data/fifo")
    fifo.create_system, fifo.external_attr = 3, 0o010644 << 16
    with pytest.raises(QfkError, match="not a regular file"):
        u.scan_members(_zip((fifo, b"")), 1 << 20, 1 << 20)
    with pytest.raises(QfkError, match="compression method 12"):
        u.scan_members(_zip(("data/x.jsonl", b"x"), compression=zipfile.ZIP_BZIP2), 1 << 20, 1 << 20)


def test_scan_checks_declared_sizes_ratio_and_count(monkeypatch):
    zf = _zip(("a.txt", b"x" * 600), ("b.txt", b"y" * 600))
    assert set(u.scan_members(zf, 1000, 2000)) == {"a.txt", "b.txt"}
    with pytest.raises(QfkError, match="over the limit of 500"):
        u.scan_members(zf, 500, 2000)
    with pytest.raises(QfkError, match="add up to more than 1000 bytes uncompressed"):
        u.scan_members(zf, 1000, 1000)
    with pytest.raises(QfkError, match="zip bomb"):
        u.scan_members(_zip(("data/bomb.jsonl", b"\0" * (2 << 20))), 4 << 20, 4 << 20)
    monkeypatch.setattr(u, "MAX_MEMBERS", 1)
    with pytest.raises(QfkError, match="2 members"):
        u.scan_members(zf, 1000, 2000)


# ---- the budget: bytes actually read ------------------------------------------------------------
def test_budget_counts_the_bytes_read_per_member_and_in_total():
    zf = _zip(("a.txt", b"a" * 600), ("b.txt", b"b" * 600))
    budget = u.Budget(max_member=1000, max_total=1000)
    got = []
    n, digest = budget.read(zf, zf.getinfo("a.txt"), got.append)
    assert (n, digest, b"".join(got)) == (600, hashlib.sha256(b"a" * 600).hexdigest(), b"a" * 600)
    with pytest.raises(QfkError, match="add up to more than 1000 bytes when decompressed") as err:
        budget.read(zf, zf.getinfo("b.txt"), got.append)
    assert "--max-total-bytes" in err.value.hint
    with pytest.raises(QfkError, match="larger than 100 bytes"):
        u.Budget(max_member=100, max_total=1 << 20).read(zf, zf.getinfo("a.txt"), got.append)


def test_budget_text_limit_and_listing(monkeypatch):
    zf = _zip(("recipe.yaml", b"a: 1\n"))
    info = zf.getinfo("recipe.yaml")
    listed = {"name": "recipe.yaml", "sha256": hashlib.sha256(b"a: 1\n").hexdigest(), "bytes": 5}
    assert u.Budget(1 << 20, 1 << 20).text(zf, info, listed) == b"a: 1\n"
    with pytest.raises(QfkError, match="does not match bundle.json"):
        u.Budget(1 << 20, 1 << 20).text(zf, info, {**listed, "bytes": 6})
    monkeypatch.setattr(u, "TEXT_LIMIT", 4)  # texts (recipe, registry, manifests) have their own, lower limit
    with pytest.raises(QfkError, match="larger than 4 bytes"):
        u.Budget(1 << 20, 1 << 20).text(zf, info, None)


def test_listing_must_match_the_zip():
    infos = {n: None for n in ("bundle.json", "recipe.yaml", "dataset_info.json", "data/x.jsonl")}
    entry = [{"name": n} for n in ("recipe.yaml", "dataset_info.json", "data/x.jsonl")]
    assert set(u.check_listing({"members": entry}, infos)) == {"recipe.yaml", "dataset_info.json", "data/x.jsonl"}
    with pytest.raises(QfkError, match="not listed"):
        u.check_listing({"members": entry[:2]}, infos)
    with pytest.raises(QfkError, match="the zip lacks it"):
        u.check_listing({"members": [*entry, {"name": "data/y.jsonl"}]}, infos)
    with pytest.raises(QfkError, match="not a part of a recipe bundle"):
        u.check_listing({"members": [*entry, {"name": "notes.txt"}]}, {**infos, "notes.txt": None})
    with pytest.raises(QfkError, match="lists a name twice"):
        u.check_listing({"members": [*entry, entry[0]]}, infos)


# ---- the recipe: plain YAML, no interpolation ---------------------------------------------------
@pytest.mark.parametrize("text, match", [
    (b"a: !!python/object/apply:os.system ['true']\n", "not plain YAML"),
    (b"a: !custom 1\n", "not plain YAML"),
    (b"a: &x [1]\nb: *x\n", "anchors/aliases"),
    (b"base: &b {lr: 1}\nrun:\n  <<: *b\n", "anchors/aliases"),
    (b"a: \xff\n", "not UTF-8"),
    (b"- a\n- b\n", "not a YAML mapping"),
    (b"1: a\n", "not a YAML mapping"),
    (b"a: ${oc.env:HOME}\n", "interpolation"),
    (b"a: " + b"[" * 60 + b"]" * 60 + b"\n", "nests too deeply"),
])
def test_safe_recipe_args_refuses(text, match):
    with pytest.raises(QfkError, match=match) as err:
        u.safe_recipe_args(text, [])
    assert "nothing was written" in err.value.message


def test_safe_recipe_args_reads_plain_yaml_with_overrides():
    assert u.safe_recipe_args(b"", []) == {}
    assert u.safe_recipe_args(b"a: 1\nb: x\n", ["a=2", "c=3.0e-5"]) == {"a": 2, "b": "x", "c": 3.0e-5}
    with pytest.raises(QfkError, match="interpolation"):  # overrides are checked like the recipe
        u.safe_recipe_args(b"a: 1\n", ["output_dir=${oc.env:HOME}"])
    with pytest.raises(QfkError, match="KEY=VALUE strings"):
        u.safe_recipe_args(b"a: 1\n", [1])


def test_recipe_paths_and_trust_remote_code(tmp_path):
    dest = tmp_path / "run"
    ok = {"model_name_or_path": "Qwen/Qwen3-0.6B", "deepspeed": '{"zero_optimization": {"stage": 3}}',
          "output_dir": "saves/x", "adapter_name_or_path": "saves/a,saves/b"}
    u.check_recipe_args(ok, dest, trust_remote_code=False, allow_outside=False)
    with pytest.raises(QfkError, match="adapter_name_or_path: '/etc/b'"):
        u.check_recipe_args({**ok, "adapter_name_or_path": "saves/a,/etc/b"}, dest, trust_remote_code=False, allow_outside=False)
    with pytest.raises(QfkError, match=r"model_name_or_path: '\.\./models/q', which escapes"):  # a path, not a hub id
        u.check_recipe_args({**ok, "model_name_or_path": "../models/q"}, dest, trust_remote_code=False, allow_outside=False)
    u.check_recipe_args({**ok, "output_dir": "/etc/x"}, dest, trust_remote_code=False, allow_outside=True)
    with pytest.raises(QfkError, match="trust_remote_code") as err:
        u.check_recipe_args({"trust_remote_code": "yes"}, dest, trust_remote_code=False, allow_outside=True)
    assert "--trust-remote-code" in err.value.hint
    u.check_recipe_args({"trust_remote_code": "yes"}, dest, trust_remote_code=True, allow_outside=False)


def test_outside_reason(tmp_path):
    root = tmp_path / "run"
    (root / "data").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    assert u.outside_reason("data/x.jsonl", root, root) is None
    assert u.outside_reason("data/../x.jsonl", root, root) is None
    assert u.outside_reason("../x", root / "data", root) is None  # base data/ is inside root
    assert u.outside_reason("../../x", root / "data", root) == "escapes with '..'"
    assert u.outside_reason("link/x", root, root) == "resolves outside through a symbolic link"
    assert u.outside_reason("~/x", root, root) == "starts with ~ (a home folder)"
    assert u.outside_reason("a\tb", root, root) == "has control characters"
    assert u.outside_reason("D:/x", root, root).startswith("is a Windows path")


# ---- registry entries and manifests -------------------------------------------------------------
ALPACA = {"formatting": "alpaca", "ranking": False, "columns": {"prompt": "instruction", "query": "input", "response": "output"}}


def test_entries(tmp_path):
    data = tmp_path / "run" / "data"
    assert u.check_entries({"ok": {**ALPACA, "file_name": "ok.jsonl"}}, data, allow_outside=False) == {}
    with pytest.raises(QfkError, match="named '../evil'"):
        u.check_entries({"../evil": {**ALPACA, "file_name": "x.jsonl"}}, data, allow_outside=True)
    with pytest.raises(QfkError, match="not an object"):
        u.check_entries({"x": ["file_name"]}, data, allow_outside=True)
    outside = u.check_entries({"s": {**ALPACA, "script_url": "evil"}, "a": {**ALPACA, "file_name": "/etc/passwd"}}, data,
                              allow_outside=True)
    assert outside == {"s": "script_url", "a": "file_name is absolute"}


def _manifest(**change) -> dict:
    m = {"converter": "sharegpt", "name": "x", "options": {},
         "source": {"kind": "local", "path": "../src", "files": [{"path": "../src/a.jsonl", "sha256": SHA0}]},
         "outputs": {"train": {"file": "x.jsonl", "sha256": SHA0}, "val": {"file": "x_val.jsonl", "sha256": SHA0},
                     "rejects": {"file": "x.rejects.jsonl"}}}
    m.update(change)
    return m


def test_manifests():
    u.check_manifest(_manifest(), "data/x.manifest.json")
    hub = {"kind": "hf", "dataset_id": "owner/name", "revision": "main", "files": [{"path": "a.jsonl", "sha256": SHA0}]}
    u.check_manifest(_manifest(source=hub), "data/x.manifest.json")
    for manifest, member, match in [
        (_manifest(), "data/y.manifest.json", "not named after its output"),
        (_manifest(converter="nope"), "data/x.manifest.json", "unknown converter"),
        (_manifest(source={**hub, "dataset_id": "../../x"}), "data/x.manifest.json", "bad hub dataset id"),
        (_manifest(source={**hub, "files": [{"path": "a.jsonl", "sha256": "abc"}]}), "data/x.manifest.json", "no source files"),
        (_manifest(outputs={"train": {"file": "sub/x.jsonl", "sha256": SHA0}}), "data/x.manifest.json", "not a plain file name"),
        (_manifest(outputs={"train": {"file": "x.jsonl", "sha256": SHA0}, "val": {"file": "y_val.jsonl", "sha256": SHA0}}),
         "data/x.manifest.json", "output val is not x_val.jsonl"),
    ]:
        with pytest.raises(QfkError, match=match):
            u.check_manifest(manifest, member)


def test_verify_sha_names_both_hashes(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_bytes(b"{}\n")
    u.verify_sha(f, hashlib.sha256(b"{}\n").hexdigest(), "x.jsonl")
    with pytest.raises(QfkError, match="sha256 mismatch") as err:
        u.verify_sha(f, SHA0, "x.jsonl")
    assert SHA0 in err.value.message and hashlib.sha256(b"{}\n").hexdigest() in err.value.message


@pytest.mark.parametrize("value, path", [("Qwen/Qwen3-0.6B", False), ("./models/q", True), ("/models/q", True),
                                         ("~/q", True), ("a/b/c", True), ("C:\\m", True), ("Qwen3-0.6B", False)])
def test_looks_like_path(value, path):
    assert u.looks_like_path(value) is path


@pytest.mark.parametrize("value, true", [(True, True), ("Yes", True), (" on ", True), (1, True), (0, False), ("false", False),
                                         (None, False), ("", False)])
def test_is_true(value, true):
    assert u.is_true(value) is true


def test_bad_is_a_user_error_with_a_hint():
    err = u.bad("x")
    assert isinstance(err, QfkError) and "qfk recipe pack" in err.hint
