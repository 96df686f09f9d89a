"""Exact ``--mix`` ratios: whole row counts in exactly the requested proportions, made exact with
per-dataset ``NAME__nN`` entries (``num_samples: N``) in ``dataset_info.json``; the warnings for a
dataset a mix repeats many times, and the check that every dataset a recipe names is registered.
Mixes that hold in trained tokens (``--mix-by tokens``, ``NAME__tN`` entries) are :mod:`.tokenmix`'s."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

from ..errors import QfkError
from ..registry import MIXED_RE, PICKED_RE, mix_entry, mixed_name
from .request import DatasetFacts, RecipeRequest
from .skeleton import _rel


def mix_counts(ratios: dict[str, float], rows: dict[str, int], total: int | None = None) -> dict[str, int]:
    """Whole row counts in exactly the requested proportions.

    Without ``total`` the mix is as large as it can be without repeating a row, rounded down to a
    total that the ratios split into whole rows (75/25 -> a multiple of 4), so the mix is exact.
    When no such total fits (or ``total`` is given), counts are rounded by largest remainder."""
    check_ratios(ratios)
    if total is None:
        most = math.floor(min(rows[n] / r for n, r in ratios.items()) + 1e-9)
        # the largest total that splits into whole rows in exactly these proportions (0.75/0.25 -> a multiple of 4)
        step = math.lcm(*(Fraction(r).limit_denominator(10000).denominator for r in ratios.values()))
        total = (most // step) * step if most >= step else most
    if total < len(ratios):
        raise QfkError(f"a mix of {total} rows cannot hold {len(ratios)} datasets", "give --mix-total, or convert more rows")
    exact = {n: total * r for n, r in ratios.items()}
    counts = {n: math.floor(v) for n, v in exact.items()}
    short = total - sum(counts.values())
    for n in sorted(exact, key=lambda k: (counts[k] - exact[k], k))[:short]:
        counts[n] += 1
    return counts


def check_ratios(ratios: dict[str, float]) -> None:
    """Every ``--mix`` ratio above 0, all adding up to 1."""
    if any(r <= 0 for r in ratios.values()):
        raise QfkError(f"every --mix ratio must be > 0: {ratios}", "drop the dataset from --dataset instead")
    s = sum(ratios.values())
    if abs(s - 1) > 1e-6:
        raise QfkError(f"--mix ratios add up to {s:g}, not 1", "for example: --mix medical=0.75,finetome=0.25")


#: a dataset repeated more than this many times per epoch is flagged (header and stderr)
UPSAMPLE_WARN = 2


def upsample_factor(count: int, rows: int | None) -> float | None:
    """How many times each of ``rows`` rows repeats per epoch in ``count`` (None when nothing repeats)."""
    if not rows or count <= rows:
        return None
    return count / rows


def _times(factor: float) -> str:
    return f"{factor:.1f}".removesuffix(".0") if factor < 10 else f"{round(factor)}"


def _mix_share(count: int, rows: int | None) -> tuple[str, str]:
    """How a mix takes ``count`` of a dataset's ``rows`` rows: the header's words, and a note
    when each row repeats more than :data:`UPSAMPLE_WARN` times."""
    if count == rows:
        return "all", ""
    factor = upsample_factor(count, rows)
    if factor is None:
        return (f"{count} sampled", "") if rows else (f"{count} (upsampled)", "")
    if factor > UPSAMPLE_WARN:
        return f"{count} (upsampled {_times(factor)}x)", f": every row repeats about {_times(factor)} times per epoch"
    return f"{count} (upsampled)", ""


def upsampling_warnings(info: dict) -> list[str]:
    """One line per dataset a recipe's mix repeats more than :data:`UPSAMPLE_WARN` times per epoch
    (from ``recipe.info``: the mix entries and the datasets' row counts)."""
    out = []
    for name, entry in (info.get("mix") or {}).items():
        m = mix_entry(str(entry))
        rows = (info.get("datasets") or {}).get(name, {}).get("rows")
        factor = upsample_factor(int(m["count"]), rows) if m else None
        if factor and factor > UPSAMPLE_WARN:
            out.append(f"{name} is upsampled {_times(factor)}x: each of its {rows} rows repeats about {_times(factor)} times "
                       f"per epoch ({m['count']} rows in the mix); the model may memorise them. Convert more rows, "
                       "or lower --mix-total")
    return out


def require_registered(req: RecipeRequest, data_dir: Path) -> None:
    """Every dataset ``--dataset``, ``--mix`` and ``--eval-dataset`` name is registered; else one
    error naming each unknown name with its close matches from the registry."""
    import difflib

    from ..registry import Registry

    reg = Registry.at(data_dir)
    if not reg.path.exists():
        return  # dataset_facts says so, with how to register
    have = reg.read()
    known = [n for n in have if not mix_entry(n)]
    asked = {"--dataset": req.datasets, "--mix": list(req.mix or {}), "--eval-dataset": req.eval_datasets}
    problems: dict[str, str] = {}
    for option, names in asked.items():
        for name in names:
            if name in have or name in problems:
                continue
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            close += [k for k in known if name.lower() in k.lower() and k not in close]
            problems[name] = (f"Undefined dataset '{name}' ({option}): not registered in {_rel(reg.path)}"
                              + (f"; did you mean {', '.join(close[:3])}?" if close else ""))
    if problems:
        raise QfkError("\n  ".join(problems.values()),
                       "list them with: qfk datasets list (register one: qfk convert ... or qfk datasets add FILE --name NAME)")


def parse_mix(text: str | None) -> dict[str, float] | None:
    """``--mix a=0.75,b=25%`` as ``{name: ratio}``; a ratio that is not a finite number, a name given
    twice and a mix entry (``NAME__nN``/``NAME__tN``: mix NAME itself) are the user's mistakes."""
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise QfkError(f"--mix item '{part}' is not NAME=RATIO", "for example: --mix medical=0.75,finetome=0.25")
        name, value = (x.strip() for x in part.split("=", 1))
        try:
            ratio = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
        except ValueError:
            raise QfkError(f"--mix ratio '{value}' for {name} is not a number", "use 0.75 or 75%") from None
        if not math.isfinite(ratio):
            raise QfkError(f"--mix ratio '{value}' for {name} is not a finite number", "use 0.75 or 75%")
        if name in out:
            raise QfkError(f"--mix names {name} twice", f"give each dataset once, with its whole share: {name}={out[name] + ratio:g}")
        mixed = mix_entry(name)
        if mixed:
            raise QfkError(f"--mix names {name}, itself a mix entry ({mixed['count']} rows of {mixed['base']})",
                           f"mix the dataset it was made from: --mix {mixed['base']}={value},...")
        out[name] = ratio
    return out


def ensure_mix_entries(names: list[str], data_dir: str | os.PathLike) -> list[str]:
    """Register the mix entries a recipe names and the registry lacks, when their BASE is registered:
    ``BASE__nN`` (BASE's entry + ``num_samples: N``) and ``BASE__tN`` (N rows of BASE picked by the
    token mix's fixed seed, written beside BASE's file: :func:`.tokenmix.picks.ensure_picked`); a
    registered ``BASE__tN`` whose file is gone (data copied without it) is picked again too.
    Returns the names registered."""
    from ..registry import Registry, resolve_file
    from .tokenmix.picks import ensure_picked

    reg = Registry.at(data_dir)
    if not reg.path.exists():
        return []
    have = reg.read()
    made = []
    for name in names:
        m = mix_entry(name)
        if not m or m["base"] not in have:
            continue
        if name in have:
            path = PICKED_RE.match(name) and isinstance(have[name], dict) and resolve_file(have[name], reg.data_dir)
            if not path or path.exists():
                continue
        if MIXED_RE.match(name):
            reg.add(name, {**have[m["base"]], "num_samples": int(m["count"])})
        else:
            ensure_picked(name, m["base"], have, reg.data_dir, count=int(m["count"]))
        made.append(name)
    return made


def register_mix_entries(args: dict) -> tuple[str, list[str]]:
    """:func:`ensure_mix_entries` for every dataset a recipe's arguments name, in its dataset_dir;
    returns (that dataset_dir, the names registered)."""
    from .document import recipe_data_dir, recipe_datasets

    data_dir = str(recipe_data_dir(args))
    return data_dir, ensure_mix_entries(recipe_datasets(args), data_dir)


def _exact_mix(req: RecipeRequest, facts: list[DatasetFacts]) -> tuple[list[str], list[str], dict[str, dict]]:
    """The dataset names the recipe trains, the header lines that account for a ``--mix``, and the
    ``NAME__nN`` entries to register for it (once the recipe is made: :func:`.tokenmix.plan.register`)."""
    if not req.mix:
        return [f.name for f in facts], [], {}
    counts = mix_counts(req.mix, {f.name: f.rows or 0 for f in facts}, req.mix_total)
    dataset_names, lines, entries = [], [], {}
    total = sum(counts.values())
    for f in facts:
        n = counts[f.name]
        if n == f.rows:
            dataset_names.append(f.name)
        else:
            derived = mixed_name(f.name, n)
            entries[derived] = {**f.entry, "num_samples": n}
            dataset_names.append(derived)
        how, note = _mix_share(n, f.rows)
        if req.curated:
            lines.append(f"  {f.name}: {n} rows = {n / total:.2%}")
        else:
            lines.append(f"  {f.name}: {how} of {f.rows} rows = {n / total:.2%} (asked {req.mix[f.name]:.2%}){note}")
    return dataset_names, [f"Mix (exact, rows per epoch = {total}; *__nN entries carry num_samples: N in dataset_info.json):",
                           *lines], entries
