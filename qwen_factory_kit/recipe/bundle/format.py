"""The bundle format: member names, the ``bundle.json`` version, and the deterministic zip.

Both :mod:`.pack` (which writes bundles) and :mod:`.unpack` (which reads them) take their
names from here; the zip writer fixes every piece of metadata so that the same inputs give the
same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

FORMAT = 1
BUNDLE_JSON = "bundle.json"
RECIPE_MEMBER = "recipe.yaml"
INFO_MEMBER = "dataset_info.json"
DATA_PREFIX = "data/"
FILES_PREFIX = "files/"

#: fixed zip metadata: the same inputs give byte-identical bundles
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
ZIP_MODE = 0o100644
CHUNK = 1 << 20

#: a recipe name that can travel as ``NAME.yaml`` (a plain file name)
RECIPE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")

#: registry entry keys that make LLaMA-Factory run code or read from outside the data dir
OUTSIDE_ENTRY_KEYS = ("script_url", "cloud_file_name")
REMOTE_ENTRY_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


def json_bytes(obj: Any, *, sort_keys: bool = True) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n").encode("utf-8")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_splits(manifest: dict) -> dict[str, dict]:
    """A qfk manifest's data outputs (train, val, test), without its rejects file."""
    outs = manifest.get("outputs")
    return {k: v for k, v in outs.items() if k != "rejects"} if isinstance(outs, dict) else {}


def _zinfo(name: str, size: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.create_system = 3
    zi.external_attr = ZIP_MODE << 16
    zi.file_size = size
    return zi


def write_zip(output: Path, members: dict[str, bytes | Path]) -> tuple[int, str]:
    """Write ``members`` (name -> bytes or a file to stream) sorted, with fixed metadata, atomically;
    returns the zip's size and sha256."""
    from ...io.atomic import _fsync_dir, sha256_file

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name in sorted(members):
                    src = members[name]
                    if isinstance(src, bytes):
                        zf.writestr(_zinfo(name, len(src)), src)
                        continue
                    size = src.stat().st_size
                    with open(src, "rb") as inp, zf.open(_zinfo(name, size), "w", force_zip64=size > (1 << 31)) as out:
                        shutil.copyfileobj(inp, out, CHUNK)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output)
        _fsync_dir(output.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output.stat().st_size, sha256_file(output)
