"""What ``qfk recipe new`` writes for a ``--mix``: the recipe's dataset names, the header lines, and
the entries to register once the recipe is made (:func:`register`).

* ``--mix-by rows`` (the default): row counts in exactly the ratios (:func:`..mix._exact_mix`,
  ``NAME__nN`` entries with ``num_samples``);
* ``--mix-by tokens``: every dataset's rows measured with the recipe's template, enable_thinking
  and cutoff_len, row counts whose trained tokens hold the ratios (:mod:`.solve`), the rows picked
  by a fixed seed (:mod:`.picks`) as ``NAME__tN`` files.

Either way the header states the shares per epoch in rows, trained tokens and all tokens (:mod:`.shares`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import QfkError
from ..request import DatasetFacts, RecipeRequest
from . import MIX_BY
from .shares import HEADER, TOKEN_MIX_TITLE, Settings, Share, by_row, entry_share, measure, share_lines, share_table


@dataclass
class PickJob:
    """A ``NAME__tN`` to write and register: ``count`` rows of ``base``, with their token counts."""

    name: str
    base: str
    entry: dict
    count: int
    rows: list[int]       # the source rows it will hold
    tokens: dict


@dataclass
class MixPlan:
    names: list[str]                                        # the recipe's dataset value
    lines: list[str] = field(default_factory=list)          # header lines
    entries: dict[str, dict] = field(default_factory=dict)  # NAME__nN entries to register
    picks: list[PickJob] = field(default_factory=list)      # NAME__tN files to write and register
    info: dict = field(default_factory=dict)                # for recipe.info: mix_by, shares
    warnings: list[str] = field(default_factory=list)


def check_request(req: RecipeRequest) -> None:
    """``--mix-by`` against the rest of the request (a user mistake is a :class:`QfkError`)."""
    if req.mix_by is not None and req.mix_by not in MIX_BY:
        raise QfkError(f"--mix-by {req.mix_by!r} is not one of {', '.join(MIX_BY)}",
                       "--mix-by rows (row counts in the ratios) or --mix-by tokens (trained tokens in the ratios)")
    if req.mix_by == "tokens" and not req.mix:
        raise QfkError("--mix-by tokens weighs the datasets of a --mix, and there is no --mix",
                       "for example: --mix medical_r1=0.75,finetome=0.25 --mix-by tokens")
    if req.mix_by == "tokens" and not req.stats:
        raise QfkError("--mix-by tokens measures every row's tokens, which --no-stats skips", "drop --no-stats, or --mix-by rows")


def plan_mix(req: RecipeRequest, facts: list[DatasetFacts], args: dict, data_dir: Path) -> MixPlan:
    """The mix ``req`` asks for over ``facts``, its tokens measured as ``args`` (the recipe's keys) encode them."""
    if not req.mix:
        return MixPlan([f.name for f in facts])
    settings = Settings.of(args)
    if req.mix_by == "tokens":
        return _token_mix(req, facts, settings, data_dir)
    return _row_mix(req, facts, settings)


def _row_mix(req: RecipeRequest, facts: list[DatasetFacts], settings: Settings) -> MixPlan:
    from ..mix import _exact_mix

    names, lines, entries = _exact_mix(req, facts)
    plan = MixPlan(names, lines, entries, info={"mix_by": "rows", "shares": None})
    why = _unmeasurable(req, facts)
    if why:
        plan.lines.append(f"{HEADER} in tokens: not measured ({why}); qfk recipe check measures them")
        return plan
    from ...tokens import TokenizerRef

    tokenizer = TokenizerRef()
    shares = [entry_share(name, f.entry, f.file, settings, tokenizer, num_samples=entries.get(name, {}).get("num_samples"),
                          max_rows=req.stats_rows, rows=f.rows)
              for f, name in zip(facts, names)]
    plan.lines += share_lines(shares, settings)
    plan.info["shares"] = share_table(shares)
    return plan


def _unmeasurable(req: RecipeRequest, facts: list[DatasetFacts]) -> str:
    if not req.stats:
        return "--no-stats"
    for f in facts:
        if f.ranking:
            return "preference data: the kit measures SFT rows"
        if f.file is None or not f.file.exists() or f.entry.get("formatting", "alpaca") not in ("alpaca", "sharegpt"):
            return f"{f.name} is not an alpaca/sharegpt file the kit can render"
    return ""


def _token_mix(req: RecipeRequest, facts: list[DatasetFacts], settings: Settings, data_dir: Path) -> MixPlan:
    from ...registry import picked_name
    from ...tokens import TokenizerRef
    from ..mix import check_ratios
    from .picks import chosen_indexes, pick_order, source_file
    from .solve import TOLERANCE, token_mix_counts

    check_ratios(req.mix)
    if any(f.ranking for f in facts):
        raise QfkError("--mix-by tokens weighs SFT rows by their trained tokens; preference data has no single answer",
                       "mix preference data by rows: --mix-by rows")
    tokenizer = TokenizerRef()
    measured: dict[str, tuple[list[int], dict, list[int]]] = {}   # name -> (positions, by row, order)
    for f in facts:
        label = f"tokenizing {f.name} (--mix-by tokens: every row)"
        rows = by_row(measure(source_file(f.name, f.entry, data_dir), f.entry, settings, tokenizer,
                              progress=label if req.progress else False, total=f.rows))
        positions = sorted(rows)
        measured[f.name] = (positions, rows, pick_order(len(positions)))
    weights = {n: [rows[pos[i]][0] for i in order] for n, (pos, rows, order) in measured.items()}
    sol = token_mix_counts(req.mix, weights, req.mix_total)
    plan = MixPlan([], info={"mix_by": "tokens"})
    shares = []
    for f in facts:
        positions, rows, order = measured[f.name]
        n = sol.counts[f.name]
        chosen = chosen_indexes(len(positions), n, order=order)
        held = [positions[i] for i in chosen]
        name = f.name if n == len(positions) else picked_name(f.name, n)
        if name != f.name:
            tokens = {**vars(settings), "trained": [rows[p][0] for p in held], "total": [rows[p][1] for p in held]}
            plan.picks.append(PickJob(name, f.name, f.entry, n, held, tokens))
        plan.names.append(name)
        trained_rows = sum(1 for p in held if rows[p] != (0, 0))
        shares.append(Share(name, trained_rows, sum(rows[p][0] for p in held), sum(rows[p][1] for p in held)))
    plan.lines = _token_lines(req, facts, sol, plan.names, measured, TOLERANCE) + share_lines(shares, settings)
    plan.info["shares"] = share_table(shares)
    plan.info["token_mix"] = {"counts": sol.counts, "off_points": round(100 * sol.off, 2), "within": sol.within}
    if not sol.within:
        plan.warnings.append(f"the rows allow no token mix within {100 * TOLERANCE:.0f} point of {_asked(req.mix)}: the closest "
                             f"is off by {100 * sol.off:.1f} points ({_got(sol)}). Convert more rows, or give --mix-total")
    return plan


def _token_lines(req: RecipeRequest, facts: list[DatasetFacts], sol, names: list[str], measured: dict, tolerance: float) -> list[str]:
    from .picks import PICK_SEED

    total = sum(sol.counts.values())
    held = (f"shares within {100 * tolerance:.0f} point of the asked ones" if sol.within
            else f"the closest the rows allow: off by {100 * sol.off:.1f} points")
    lines = [f"{TOKEN_MIX_TITLE} (--mix-by tokens; rows per epoch = {total}; {held}; *__tN entries are files of the N "
             f"rows picked by seed {PICK_SEED}, beside their dataset with a .manifest.json of the rows and their tokens):"]
    for f, name in zip(facts, names):
        n, rows = sol.counts[f.name], len(measured[f.name][0])
        how = f"all {rows} rows" if n == rows else f"{n} of {rows} rows" + (f" (every row about {n / rows:.1f}x)" if n > rows else "")
        lines.append(f"  {f.name}: {how}{'' if name == f.name else f' as {name}'} = {100 * sol.shares[f.name]:.1f}% "
                     f"of trained tokens (asked {req.mix[f.name]:.2%})")
    return lines


def _asked(ratios: dict[str, float]) -> str:
    return "/".join(f"{100 * r:g}" for r in ratios.values())


def _got(sol) -> str:
    return ", ".join(f"{n} {100 * s:.1f}%" for n, s in sol.shares.items())


def register(plan: MixPlan, data_dir: Path) -> list[str]:
    """Register the ``NAME__nN`` entries and write and register the ``NAME__tN`` files of ``plan``; returns their names."""
    from ...registry import Registry
    from .picks import write_picked

    reg = Registry.at(data_dir)
    for name, entry in plan.entries.items():
        reg.add(name, entry)
    for job in plan.picks:
        picked = write_picked(job.name, job.base, job.entry, data_dir, count=job.count, tokens=job.tokens)
        if picked.rows != job.rows:
            raise QfkError(f"{job.base} changed while the token mix was made: {job.name} does not hold the rows measured",
                           "make the recipe again")
        reg.add(job.name, picked.entry, force=True)
    return [*plan.entries, *(j.name for j in plan.picks)]
