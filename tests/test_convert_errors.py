"""A bad converter option is the user's mistake: a QfkError with a hint (exit 2, no traceback),
whether it comes from the Python API, the command line or a bundle's manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import EXAMPLES

from qwen_factory_kit.convert import CONVERTERS, convert, get_converter
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.recipe.bundle import pack

BAD_OPTIONS = [
    ("sharegpt", {"format": "xml"}, "--format"),
    ("medical-r1", {"instruction_as": "assistant"}, "--instruction-as"),
    ("moses", {"langs": ["xx_nowhere"]}, "unknown language code"),
    ("moses", {"directions": ["en"]}, "cannot read direction"),
    ("moses", {"instruction_template": "{nope}"}, "--instruction-template"),
    ("columns", {"response": "output"}, "prompt"),
    ("preference", {"empty_think": "never"}, "--empty-think"),
]


@pytest.mark.parametrize("name, options, words", BAD_OPTIONS)
def test_a_bad_option_is_a_user_error(name, options, words):
    with pytest.raises(QfkError, match=words) as err:
        get_converter(name, **options)
    assert err.value.hint


@pytest.mark.parametrize("name", sorted({cls.name for cls in CONVERTERS.values()}))
def test_every_converter_checks_empty_think(name):
    required = {"columns": {"prompt": "q", "response": "a"}}.get(name, {})
    with pytest.raises(QfkError, match="--empty-think") as err:
        get_converter(name, empty_think="sometimes", **required)
    assert "explicit" in err.value.hint


def _set_manifest_format(bundle: Path, out: Path, member: str, fmt: str) -> Path:
    """Copy ``bundle`` with the manifest ``member`` asking for ``--format fmt``; bundle.json's
    listing (sha256 and size of each member) follows the new bytes."""
    with zipfile.ZipFile(bundle) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members[member])
    assert manifest["converter"] == "sharegpt" and manifest["options"]["format"] == "alpaca"
    manifest["options"]["format"] = fmt
    members[member] = json.dumps(manifest).encode()
    meta = json.loads(members["bundle.json"])
    for m in meta["members"]:
        if m["name"] == member:
            m.update(sha256=hashlib.sha256(members[member]).hexdigest(), bytes=len(members[member]))
    members["bundle.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for n in sorted(members):
            zf.writestr(n, members[n])
    return out


def test_a_bundle_whose_manifest_asks_for_format_xml(tmp_path, monkeypatch, qfk):
    src = tmp_path / "src" / "finetome"
    shutil.copytree(EXAMPLES / "finetome", src)
    ws = tmp_path / "ws"
    convert("sharegpt", str(src), data_dir=str(ws / "data"), name="chat", register=True)
    (ws / "recipe.yaml").write_text("model_name_or_path: Qwen/Qwen3-0.6B\nstage: sft\ndo_train: true\n"
                                    "dataset: chat\ndataset_dir: data\ntemplate: qwen3\noutput_dir: saves/x\n")
    monkeypatch.chdir(ws)
    pack("recipe.yaml", "good.zip")
    code, _, err = qfk("recipe", "unpack", "good.zip", tmp_path / "ok")
    assert code == 0, err  # the bundle as packed unpacks

    bad = _set_manifest_format(ws / "good.zip", tmp_path / "xml.zip", "data/chat.manifest.json", "xml")
    code, out, err = qfk("recipe", "unpack", bad, tmp_path / "victim")
    assert code == 2 and out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert lines[0].startswith("error: ") and "--format" in lines[0] and "'xml'" in lines[0]
    assert lines[1].strip().startswith("hint:")
    assert not (tmp_path / "victim").exists()
