"""The first phase of unpack: read and check a bundle into one :class:`UnpackPlan`, writing nothing.

The plan says where the recipe goes, which registry entries are registered, and how each dataset
is made: taken from the bundle (``included``), re-converted from its recorded source
(``converted``, one :class:`Reconversion` per manifest), picked again from its base's rows (``picked``:
a token mix's ``NAME__tN`` file, checked against its recorded sha256), or registered as it is
(``remote`` hub entries, ``external`` entries allowed to point outside). Every check of the bundle and of the
destination runs here, so the later phases never refuse a bundle half-way through writing it.
"""

from __future__ import annotations

import os
import posixpath
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import QfkError
from ..document import recipe_datasets
from .format import (
    BUNDLE_JSON,
    DATA_PREFIX,
    FILES_PREFIX,
    FORMAT,
    INFO_MEMBER,
    RECIPE_MEMBER,
    RECIPE_NAME_RE,
    data_splits,
)
from .untrusted import (
    Budget,
    Members,
    bad,
    check_entries,
    check_listing,
    check_manifest,
    check_picked,
    check_recipe_args,
    need,
    parse_json,
    safe_recipe_args,
    scan_members,
)


@dataclass
class DatasetPlan:
    """How one dataset of the bundle is made."""

    how: str                      # included | converted | picked | remote | external
    file: str | None = None       # its data file, relative to the data dir
    manifest: str | None = None   # its manifest member
    base: str | None = None       # the base entry of a NAME__nN / NAME__tN mix entry
    outside: str | None = None    # why its entry points outside the destination (external)
    sha256: str | None = None     # picked: what the file made again must be
    count: int | None = None      # picked: its rows

    def summary(self) -> dict:
        out: dict = {"how": self.how}
        if self.how in ("included", "converted", "picked"):
            out.update(file=self.file, manifest=self.manifest)
        if self.base:
            out["base"] = self.base
        return out


@dataclass
class Reconversion:
    """One recorded conversion to run again: its manifest, the datasets it makes, where its source is."""

    member: str                            # the manifest member
    manifest: dict
    names: list[str] = field(default_factory=list)   # the datasets it makes
    hint: str | None = None                # the absolute source path recorded by pack
    source: tuple[str, str] | None = None  # the --source NAME=PATH given for it


@dataclass
class UnpackPlan:
    """Everything unpack decided from a bundle, before it writes anything."""

    bundle_path: Path
    dest: Path
    bundle: dict                   # bundle.json
    recipe_name: str
    overrides: list[str]
    recipe_bytes: bytes
    args: dict                     # the recipe's arguments with the overrides
    dataset_dir: str
    data_dir: Path
    info: dict[str, dict] = field(default_factory=dict)                # entries to register, in the bundle's order
    datasets: dict[str, DatasetPlan] = field(default_factory=dict)
    manifests: dict[str, dict] = field(default_factory=dict)           # manifest member -> parsed manifest
    reconversions: dict[str, Reconversion] = field(default_factory=dict)  # manifest member -> conversion
    data_members: set[str] = field(default_factory=set)                # data/ members used (files and manifests)
    files: dict[str, str] = field(default_factory=dict)                # bundle.json "files": key -> files/ member
    file_bytes: dict[str, bytes] = field(default_factory=dict)         # files/ member -> its bytes

    @property
    def recipe_out(self) -> Path:
        return self.dest / f"{self.recipe_name}.yaml"

    def included_members(self) -> list[str]:
        """The data members taken from the bundle as they are (data files, not manifests)."""
        return sorted(self.data_members - set(self.manifests))

    def verbatim_manifests(self) -> list[str]:
        """Manifests of included data: the packer's, copied as they are."""
        return [m for m in self.manifests if m not in self.reconversions]

    def recorded_sha(self) -> dict[str, str]:
        """Data-dir relative file -> the sha256 its manifest records."""
        out: dict[str, str] = {}
        for member, manifest in self.manifests.items():
            out.update(_outputs(member, manifest))
        return out


def _outputs(member: str, manifest: dict) -> dict[str, str]:
    d = posixpath.dirname(member[len(DATA_PREFIX):])
    return {posixpath.join(d, out["file"]): out["sha256"] for out in data_splits(manifest).values()}


def plan_unpack(zf: zipfile.ZipFile, bundle_path: Path, dest: Path, *, budget: Budget, sources: dict[str, str],
                trust_remote_code: bool, allow_outside: bool, force: bool) -> tuple[UnpackPlan, Members]:
    """Check the bundle and the destination; returns the plan and the bundle's checked members."""
    members, bundle = _open(zf, bundle_path, budget)
    plan = _read_recipe(members, bundle, bundle_path, dest, trust_remote_code=trust_remote_code, allow_outside=allow_outside)
    records, outside = _read_entries(members, plan, allow_outside=allow_outside)
    _plan_datasets(members, plan, records, outside)
    _read_files(plan, members.listed)
    _check_unused(plan, members.listed)
    _match_sources(plan, sources)
    _check_destination(plan, members, allow_outside=allow_outside, force=force)
    return plan, members


def _open(zf: zipfile.ZipFile, bundle_path: Path, budget: Budget) -> tuple[Members, dict]:
    """Members (names, types, sizes), bundle.json and its member listing."""
    infos = scan_members(zf, budget.max_member, budget.max_total)
    if BUNDLE_JSON not in infos:
        raise bad(f"{bundle_path} has no bundle.json: it is not a qfk recipe bundle",
                  "make one with: qfk recipe pack recipe.yaml -o bundle.zip")
    bundle = parse_json(budget.text(zf, infos[BUNDLE_JSON], None), BUNDLE_JSON)
    need(isinstance(bundle, dict), "not an object")
    if bundle.get("qfk_bundle") != FORMAT:
        raise QfkError(f"{bundle_path} is bundle format {bundle.get('qfk_bundle')!r}; this kit reads format {FORMAT}",
                       "unpack it with the kit version that made it: " + str(bundle.get("kit_version")))
    return Members(zf, infos, check_listing(bundle, infos), budget), bundle


def _read_recipe(members: Members, bundle: dict, bundle_path: Path, dest: Path, *, trust_remote_code: bool,
                 allow_outside: bool) -> UnpackPlan:
    """The recipe record, its text and arguments (safe to run here), and its data dir."""
    recipe = bundle.get("recipe")
    need(isinstance(recipe, dict), "no recipe record")
    rname = recipe.get("name")
    if not isinstance(rname, str) or not RECIPE_NAME_RE.match(rname):
        raise bad(f"the bundle's recipe name {rname!r} is not a plain file name: refused, nothing was written")
    overrides = recipe.get("overrides") or []
    need(isinstance(overrides, list), "recipe overrides is not a list")
    recipe_bytes = members.text(RECIPE_MEMBER)
    need(recipe.get("sha256") == members.listed[RECIPE_MEMBER].get("sha256"), "the recipe's sha256 differs from its member's")
    args = safe_recipe_args(recipe_bytes, overrides)
    check_recipe_args(args, dest, trust_remote_code=trust_remote_code, allow_outside=allow_outside)
    dataset_dir = args.get("dataset_dir") or "data"
    if not isinstance(dataset_dir, str) or dataset_dir == "ONLINE":
        raise bad(f"the bundle's recipe has dataset_dir {dataset_dir!r}, which a bundle cannot fill: refused")
    data_dir = Path(dataset_dir).expanduser() if os.path.isabs(dataset_dir) or dataset_dir.startswith("~") else dest / dataset_dir
    return UnpackPlan(bundle_path, dest, bundle, rname, overrides, recipe_bytes, args, dataset_dir, data_dir)


def _read_entries(members: Members, plan: UnpackPlan, *, allow_outside: bool) -> tuple[dict[str, dict], dict[str, str]]:
    """The registry entries (checked) and bundle.json's dataset records, which must agree with them
    and with the datasets the recipe names; returns the records and the entries pointing outside."""
    info = members.json(INFO_MEMBER)
    need(isinstance(info, dict), "dataset_info.json is not an object")
    outside = check_entries(info, plan.data_dir, allow_outside=allow_outside)
    records = plan.bundle.get("datasets")
    need(isinstance(records, dict) and all(isinstance(r, dict) for r in records.values()), "datasets is not an object")
    names = recipe_datasets(plan.args)
    lacking = [n for n in names if n not in records or n not in info]
    if lacking:
        raise bad(f"the recipe names dataset {lacking[0]!r} but the bundle does not carry it; nothing was written")
    if set(records) != set(info):
        odd = min(set(records) ^ set(info))
        raise bad(f"dataset {odd!r} is in only one of bundle.json and dataset_info.json; nothing was written")
    for n, rec in records.items():
        need(rec.get("entry") == info[n], f"dataset {n}: its entry differs from dataset_info.json's")
        if rec.get("base") is not None:
            need(rec["base"] in info and rec.get("base_entry") == info[rec["base"]], f"dataset {n}: base entry mismatch")
        if n not in names and not any(r.get("base") == n for r in records.values()):
            raise bad(f"the bundle carries dataset {n!r}, which the recipe does not use: refused, nothing was written")
    plan.info = info
    return records, outside


def _plan_datasets(members: Members, plan: UnpackPlan, records: dict[str, dict], outside: dict[str, str]) -> None:
    """How each dataset is made; reads and checks the manifests."""
    for n, rec in records.items():
        base = rec.get("base")
        if rec.get("kind") == "picked":
            check_picked(n, rec, plan.info, records, outside)
            plan.datasets[n] = DatasetPlan("picked", posixpath.normpath(plan.info[n]["file_name"]), None, base,
                                           sha256=rec["sha256"], count=rec["count"])
            continue
        if n in outside or not plan.info[n].get("file_name"):
            need(not rec.get("included"), f"dataset {n}: included data for an entry outside the destination")
            plan.datasets[n] = DatasetPlan("external" if n in outside else "remote", base=base, outside=outside.get(n))
            continue
        fn = posixpath.normpath(plan.info[n]["file_name"])
        target = DATA_PREFIX + fn
        need(rec.get("file") == target, f"dataset {n}: file {rec.get('file')!r} is not {target!r}")
        mmember = _read_manifest(members, plan, n, rec.get("manifest"), fn, target)
        if rec.get("included"):
            _include_members(members.listed, plan, n, rec.get("members"), target)
            plan.datasets[n] = DatasetPlan("included", fn, mmember, base)
        elif mmember is None:
            raise bad(f"dataset {n} carries neither its data nor a manifest to re-make it; nothing was written")
        else:
            rc = plan.reconversions.setdefault(
                mmember, Reconversion(mmember, plan.manifests[mmember], hint=rec["manifest"].get("source_path")))
            rc.names.append(n)
            plan.datasets[n] = DatasetPlan("converted", fn, mmember, base)


def _read_manifest(members: Members, plan: UnpackPlan, n: str, summary, fn: str, target: str) -> str | None:
    """The manifest member of dataset ``n`` (read and checked once), or None when it has none."""
    if summary is None:
        return None
    need(isinstance(summary, dict) and isinstance(summary.get("member"), str), f"dataset {n}: bad manifest record")
    mmember = summary["member"]
    need(mmember in members.listed and mmember.startswith(DATA_PREFIX), f"dataset {n}: manifest {mmember!r} is not a member")
    need(posixpath.dirname(mmember) == posixpath.dirname(target), f"dataset {n}: manifest {mmember!r} is not beside its file")
    if mmember not in plan.manifests:
        manifest = members.json(mmember)
        check_manifest(manifest, mmember)
        plan.manifests[mmember] = manifest
    plan.data_members.add(mmember)
    if not any(o.get("file") == posixpath.basename(fn) for o in data_splits(plan.manifests[mmember]).values()):
        raise bad(f"dataset {n}: {fn} is not an output of its manifest {mmember}; nothing was written")
    return mmember


def _include_members(listed: dict[str, dict], plan: UnpackPlan, n: str, names, target: str) -> None:
    need(isinstance(names, list) and names and all(isinstance(x, str) for x in names), f"dataset {n}: no members")
    for x in names:
        need(x in listed and (x == target or x.startswith(target + "/")), f"dataset {n}: member {x!r} is not under {target}")
        plan.data_members.add(x)


def _read_files(plan: UnpackPlan, listed: dict[str, dict]) -> None:
    """bundle.json "files": only the DeepSpeed config the recipe names."""
    files = plan.bundle.get("files") or {}
    need(isinstance(files, dict), "files is not an object")
    for key, member in files.items():
        need(key == "deepspeed" and isinstance(member, str) and member in listed and member.startswith(FILES_PREFIX),
             f"files entry {key!r} is not a DeepSpeed config member")
        value = plan.args.get("deepspeed")
        need(isinstance(value, str) and posixpath.normpath(value.strip().replace("\\", "/")) == member[len(FILES_PREFIX):],
             f"the DeepSpeed member {member!r} is not what the recipe names")
    plan.files = files


def _check_unused(plan: UnpackPlan, listed: dict[str, dict]) -> None:
    extra = sorted(n for n in listed if n.startswith(DATA_PREFIX) and n not in plan.data_members)
    extra += sorted(n for n in listed if n.startswith(FILES_PREFIX) and n not in plan.files.values())
    if extra:
        raise bad(f"bundle member {extra[0]!r} is not used by any dataset of the recipe: refused, nothing was written")


def _match_sources(plan: UnpackPlan, sources: dict[str, str]) -> None:
    """Give each conversion its --source: named after the manifest or after a dataset it makes."""
    aliases: dict[str, str] = {}
    for member, rc in plan.reconversions.items():
        for alias in (rc.manifest["name"], *rc.names):
            aliases.setdefault(alias, member)
    unknown = sorted(set(sources) - set(aliases))
    if unknown:
        choices = ", ".join(sorted(aliases)) or "none: every dataset is in the bundle"
        raise QfkError(f"--source {unknown[0]}: no dataset of the bundle is re-converted under that name",
                       f"names that take --source: {choices}")
    for member, rc in plan.reconversions.items():
        rc.source = next(((a, sources[a]) for a in sources if aliases.get(a) == member), None)


def _check_destination(plan: UnpackPlan, members: Members, *, allow_outside: bool, force: bool) -> None:
    """Inside DEST unless allowed; nothing already there that this unpack would change, unless --force."""
    from ...registry import Registry

    dest = plan.dest
    if not allow_outside:
        try:
            plan.data_dir.resolve().relative_to(dest.resolve())
        except ValueError:
            raise QfkError(f"dataset_dir {plan.dataset_dir!r} resolves outside {dest}: refused, nothing was written",
                           "if you trust the bundle, add --allow-outside") from None
    out = plan.recipe_out
    if out.exists() and out.stat().st_size and out.read_bytes() != plan.recipe_bytes and not force:
        raise QfkError(f"{out} exists: refused to overwrite it", "unpack into another folder, or add --force to replace it")
    reg = Registry(plan.data_dir)
    current = reg.read()
    clash = [n for n, e in plan.info.items() if n in current and current[n] != e]
    if clash and not force:
        raise QfkError(f"dataset '{clash[0]}' is already registered differently in {reg.path}",
                       "unpack into another folder, or add --force to replace the entries")
    if not force:
        _check_data_files(plan, members.listed)
    for member in plan.files.values():
        plan.file_bytes[member] = members.text(member)
        target = dest / member[len(FILES_PREFIX):]
        if target.exists() and target.read_bytes() != plan.file_bytes[member] and not force:
            raise QfkError(f"{target} exists with other content: refused to overwrite it", "add --force to replace it")


def _check_data_files(plan: UnpackPlan, listed: dict[str, dict]) -> None:
    """The data files this unpack writes: any already there must have the same bytes."""
    from ...io.atomic import sha256_file

    writes: dict[str, str] = {}
    for member in plan.reconversions:
        writes.update(_outputs(member, plan.manifests[member]))
    for member in plan.data_members - set(plan.manifests):
        writes[member[len(DATA_PREFIX):]] = listed[member].get("sha256")
    for d in plan.datasets.values():
        if d.how == "picked":
            writes[d.file] = d.sha256
    for rel, sha in sorted(writes.items()):
        existing = plan.data_dir / rel
        if existing.is_file() and sha256_file(existing) != sha:
            raise QfkError(f"{existing} exists with other content: refused to overwrite it",
                           "unpack into another folder, or add --force to replace it")
