"""SOURCE arguments: local files and folders, ``modelscope://OWNER/NAME[@REV]``, ``hf://OWNER/NAME[@REV]``.

Hub sources are downloaded with the hub's own SDK into an explicit local folder
(``--cache-dir``, else ``$QFK_CACHE_DIR``, else ``~/.cache/qwen_factory_kit``), never into a
guessed cache path; without a network the error says how to download by hand.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import QfkError
from .readers import TABLE_EXTENSIONS, TableFile

_HUB_RE = re.compile(r"^(modelscope|ms|hf|huggingface)://([A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+)(?:@([A-Za-z0-9_.\-/]+))?/?$")
#: Files in a dataset folder that are metadata, not rows.
_SKIP_NAMES = {"dataset_info.json", "dataset_infos.json", "configuration.json", "dataset_dict.json", "state.json"}
_SKIP_SUFFIXES = (".manifest.json", ".rejects.jsonl")


@dataclass
class ResolvedSource:
    spec: str  # what the user typed
    kind: str  # "local" | "modelscope" | "hf"
    path: Path  # local file or folder holding the data
    dataset_id: str | None = None
    revision: str | None = None

    def describe(self) -> dict:
        d = {"spec": self.spec, "kind": self.kind, "path": str(self.path)}
        if self.dataset_id:
            d.update(dataset_id=self.dataset_id,
                     revision=self.revision or ("master" if self.kind == "modelscope" else "main"))
        return d


def default_cache_dir() -> Path:
    return Path(os.environ.get("QFK_CACHE_DIR") or Path.home() / ".cache" / "qwen_factory_kit")


def resolve_source(spec: str, *, cache_dir: str | os.PathLike | None = None) -> ResolvedSource:
    """Turn a SOURCE argument into a local path, downloading hub datasets when needed."""
    m = _HUB_RE.match(spec)
    if m:
        hub, dataset_id, revision = m.groups()
        hub = "modelscope" if hub in ("modelscope", "ms") else "hf"
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        local = root / hub / dataset_id.replace("/", "__") / (revision or "default")
        if hub == "modelscope":
            _download_modelscope(dataset_id, revision, local)
        else:
            _download_hf(dataset_id, revision, local)
        return ResolvedSource(spec, hub, local, dataset_id, revision)
    if "://" in spec:
        raise QfkError(f"unknown source scheme in '{spec}'",
                       "use a local path, modelscope://OWNER/NAME[@REVISION] or hf://OWNER/NAME[@REVISION]")
    path = Path(spec).expanduser()
    if not path.exists() and path.is_symlink():
        raise QfkError(f"source '{spec}' is a symbolic link that leads nowhere (its target is missing, or the links form a loop)",
                       "point at the data file or folder itself")
    if not path.exists():
        parent = path.parent if str(path.parent) not in ("", ".") else Path(".")
        near = sorted(p.name for p in parent.glob("*") if p.name[:3].lower() == path.name[:3].lower())[:5] if parent.is_dir() else []
        hint = f"did you mean one of: {', '.join(near)}?" if near else (
            "give a local .jsonl/.json/.parquet/.csv file or folder, or modelscope://OWNER/NAME")
        raise QfkError(f"source '{spec}' does not exist", hint)
    return ResolvedSource(spec, "local", path)


def _offline_hint(hub: str, dataset_id: str, local: Path) -> str:
    if hub == "modelscope":
        return (f"download it by hand where there is a network: modelscope download --dataset {dataset_id} "
                f"--local_dir {local}  then run the same qfk command with that folder as SOURCE")
    return (f"download it by hand where there is a network: huggingface-cli download {dataset_id} --repo-type dataset "
            f"--local-dir {local}  then run the same qfk command with that folder as SOURCE")


def _download_modelscope(dataset_id: str, revision: str | None, local: Path) -> None:
    try:
        from modelscope.hub.snapshot_download import dataset_snapshot_download
    except Exception as exc:  # pragma: no cover - modelscope is a dependency
        raise QfkError(f"cannot import the modelscope SDK ({exc})", "pip install modelscope") from None
    local.mkdir(parents=True, exist_ok=True)
    kwargs = {"dataset_id": dataset_id, "local_dir": str(local)}
    if revision:
        kwargs["revision"] = revision
    try:
        dataset_snapshot_download(**kwargs)
    except Exception as exc:
        raise QfkError(f"cannot download modelscope://{dataset_id} ({type(exc).__name__}: {str(exc)[:200]})",
                       _offline_hint("modelscope", dataset_id, local)) from None


def _download_hf(dataset_id: str, revision: str | None, local: Path) -> None:
    try:
        from huggingface_hub import snapshot_download
    except Exception as exc:  # pragma: no cover
        raise QfkError(f"cannot import huggingface_hub ({exc})", "pip install huggingface_hub") from None
    try:
        snapshot_download(repo_id=dataset_id, repo_type="dataset", revision=revision, local_dir=str(local))
    except Exception as exc:
        raise QfkError(f"cannot download hf://{dataset_id} ({type(exc).__name__}: {str(exc)[:200]})",
                       _offline_hint("hf", dataset_id, local)) from None


def _is_data_file(p: Path) -> bool:
    name = p.name
    return (p.is_file() and p.suffix.lower() in TABLE_EXTENSIONS and not name.startswith(".")
            and name not in _SKIP_NAMES and not name.endswith(_SKIP_SUFFIXES))


def table_files(src: ResolvedSource, *, split: str | None = None, encoding: str | None = None) -> list[TableFile]:
    """The data files of a source in a deterministic order.

    A folder is searched recursively (hidden folders skipped). When ``split`` is given and some
    file names mention it (``train-00000-of-00001.parquet``), only those are used.
    """
    path = src.path
    if not path.is_dir():  # a file (TableFile refuses a FIFO or a device)
        return [TableFile(path, display=_display(path, src), encoding=encoding)]
    files = sorted(
        (p for p in path.rglob("*") if _is_data_file(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    if split:
        named = [p for p in files if re.search(rf"(^|[^a-z]){re.escape(split)}([^a-z]|$)", p.name.lower())]
        if named:
            files = named
    if not files:
        raise QfkError(f"no data files in folder '{src.spec}'",
                       f"the folder needs {', '.join(TABLE_EXTENSIONS)} files (searched recursively)")
    return [TableFile(p, display=_display(p, src), encoding=encoding) for p in files]


def _display(p: Path, src: ResolvedSource) -> str:
    if src.kind != "local":
        return f"{src.spec.rstrip('/')}/{p.relative_to(src.path).as_posix()}"
    return str(p)
