"""``qfk recipe unpack``: plan (every check, nothing written), fetch the included data or re-convert
from the recorded sources into a staging folder, pick the token mixes' rows again from their base,
verify against the manifests and recorded sha256s, move into place, register. A failure before the
move leaves nothing behind."""

from __future__ import annotations

import os
import secrets
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import QfkError
from .format import DATA_PREFIX, FILES_PREFIX
from .plan import UnpackPlan, plan_unpack
from .reconvert import reconvert
from .untrusted import (
    DEFAULT_MAX_MEMBER_BYTES,
    DEFAULT_MAX_TOTAL_BYTES,
    Budget,
    Members,
    parse_sources,
    verify_sha,
)


def unpack(bundle_zip: str | os.PathLike, dest_dir: str | os.PathLike, *, trust_remote_code: bool = False,
           allow_outside: bool = False, sources: dict[str, str] | None = None,
           max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
           force: bool = False, cache_dir: str | os.PathLike | None = None) -> dict:
    """Unpack a bundle into ``dest_dir`` (the folder the recipe runs from): the recipe as
    ``DEST/NAME.yaml``, the datasets in ``DEST/<dataset_dir>`` (taken from the bundle, or
    re-converted from their recorded sources and checked against their manifests), registered in
    ``DEST/<dataset_dir>/dataset_info.json``. Everything is checked before anything is written."""
    bundle_path = Path(bundle_zip)
    dest = Path(dest_dir)
    if not bundle_path.is_file():
        raise QfkError(f"bundle {bundle_path} not found", "make one with: qfk recipe pack recipe.yaml -o bundle.zip")
    if dest.exists() and not dest.is_dir():
        raise QfkError(f"{dest} exists and is not a folder", "give a folder to unpack into")
    source_map = parse_sources(sources)
    try:
        zf = zipfile.ZipFile(bundle_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise QfkError(f"{bundle_path} is not a zip file ({exc})", "make one with: qfk recipe pack recipe.yaml -o bundle.zip") from None
    with zf:
        return _unpack(zf, bundle_path, dest, trust_remote_code=trust_remote_code, allow_outside=allow_outside,
                       sources=source_map, budget=Budget(max_member_bytes, max_total_bytes), force=force, cache_dir=cache_dir)


def _unpack(zf: zipfile.ZipFile, bundle_path: Path, dest: Path, *, trust_remote_code: bool, allow_outside: bool,
            sources: dict[str, str], budget: Budget, force: bool, cache_dir) -> dict:
    plan, members = plan_unpack(zf, bundle_path, dest, budget=budget, sources=sources, trust_remote_code=trust_remote_code,
                                allow_outside=allow_outside, force=force)
    warnings: list[str] = []
    with _staging(plan) as staging:
        _fetch(plan, members, staging)
        _verify_included(plan, staging)
        conversions = {rc.manifest["name"]: reconvert(rc, staging, plan.data_dir, cache_dir, warnings)
                       for _, rc in sorted(plan.reconversions.items())}
        _pick_again(plan, staging)
        _move_into_place(plan, staging)
        registered = _register(plan, force=force)
    for n, d in plan.datasets.items():
        if d.how == "external":
            warnings.append(f"dataset {n} points outside {dest} ({d.outside}): registered as it is, its data was not written")
    return _summary(plan, conversions, registered, warnings)


@contextmanager
def _staging(plan: UnpackPlan) -> Iterator[Path]:
    """A staging folder inside the data dir (same file system: the moves are renames). It is always
    removed; on failure so are the folders created for it."""
    data_dir, dest = plan.data_dir, plan.dest
    created = [p for p in (data_dir, *data_dir.parents) if not p.exists()]  # deepest first: removed on failure
    if not dest.exists() and dest not in created:
        created.append(dest)
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".qfk-unpack-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    ok = False
    try:
        yield staging
        ok = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not ok:
            for p in created:  # deepest first
                try:
                    p.rmdir()
                except OSError:
                    pass


def _fetch(plan: UnpackPlan, members: Members, staging: Path) -> None:
    """The included data files, then the packer's manifests of included data, verbatim."""
    for member in plan.included_members():
        members.extract(member, staging / member[len(DATA_PREFIX):])
    for member in plan.verbatim_manifests():
        members.extract(member, staging / member[len(DATA_PREFIX):])


def _verify_included(plan: UnpackPlan, staging: Path) -> None:
    """Included files with a manifest must be what it records."""
    recorded = plan.recorded_sha()
    for n, d in plan.datasets.items():
        if d.how == "included" and d.manifest and d.file in recorded:
            staged = staging / d.file
            if staged.is_file():
                verify_sha(staged, recorded[d.file], f"{d.file} (dataset {n}) in the bundle")


def _pick_again(plan: UnpackPlan, staging: Path) -> None:
    """Each token mix's ``NAME__tN`` file, picked from its base's staged file as ``qfk recipe new`` picked
    it (with its manifest), must be the file the packer had."""
    from ..tokenmix.picks import write_picked

    for n, d in plan.datasets.items():
        if d.how == "picked":
            picked = write_picked(n, d.base, plan.info[d.base], staging, count=d.count)
            verify_sha(picked.file, d.sha256, f"{d.file} (dataset {n}, picked again from {d.base})")


def _move_into_place(plan: UnpackPlan, staging: Path) -> None:
    """The staged data into the data dir, then the recipe and its files."""
    from ...io.atomic import atomic_write_bytes

    for p in sorted(x for x in staging.rglob("*") if x.is_file()):
        final = plan.data_dir / p.relative_to(staging)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, final)
    atomic_write_bytes(plan.recipe_out, plan.recipe_bytes)
    for member, data in plan.file_bytes.items():
        atomic_write_bytes(plan.dest / member[len(FILES_PREFIX):], data)


def _register(plan: UnpackPlan, *, force: bool) -> list[str]:
    """Register the bundle's entries (base entries of mix entries first); returns their names."""
    from ...registry import Registry

    reg = Registry(plan.data_dir)
    info = plan.info
    bases = [n for n in info if any(d.base == n for d in plan.datasets.values())]
    order = list(dict.fromkeys(bases + list(info)))

    def change(data: dict) -> list[str]:
        now = [n for n in order if n in data and data[n] != info[n]]
        if now and not force:
            raise QfkError(f"dataset '{now[0]}' was registered differently in {reg.path} meanwhile", "add --force to replace it")
        for n in order:
            data[n] = info[n]
        return list(order)

    return reg.update(change)


def _summary(plan: UnpackPlan, conversions: dict, registered: list[str], warnings: list[str]) -> dict:
    run_over = " ".join(plan.overrides)
    then = f" {run_over}" if run_over else ""
    return {
        "bundle": str(plan.bundle_path), "dir": str(plan.dest), "recipe": str(plan.recipe_out), "dataset_dir": plan.dataset_dir,
        "data_dir": str(plan.data_dir), "kit_version": plan.bundle.get("kit_version"),
        "with_data": bool(plan.bundle.get("with_data")),
        "datasets": {n: d.summary() for n, d in plan.datasets.items()},
        "conversions": conversions, "registered": registered, "overrides": plan.overrides,
        "files": [str(plan.dest / m[len(FILES_PREFIX):]) for m in plan.files.values()], "warnings": warnings,
        "next": f"cd {plan.dest} && qfk recipe check {plan.recipe_name}.yaml{then} && qfk train {plan.recipe_name}.yaml{then}",
    }
