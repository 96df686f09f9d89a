"""How many rows of each dataset a token mix takes (pure: token counts in, row counts out).

Each dataset's rows come in its pick order (:func:`.picks.pick_order`) with the label tokens each
trains; taking the first N rows of that order gives a known number of trained tokens. For a scale
S (trained tokens in the whole mix) every dataset takes the N whose tokens come closest to its
ratio times S. The scales tried are the ones at which some dataset's N rows hold exactly its share,
largest first; the first whose shares all lie within :data:`TOLERANCE` of the ratios is the mix.

* Without a total: no dataset repeats a row (N at most its rows), so the largest such mix.
* With ``total`` (``--mix-total``): rows go round the order again when needed, and the mix is the
  one whose row count comes closest to ``total`` (the larger mix on a tie).
* When the rows allow no mix within the tolerance, the one closest to the ratios (``within`` False).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from ...errors import QfkError

#: a token mix holds every ratio within this (one percentage point)
TOLERANCE = 0.01


@dataclass(frozen=True)
class TokenCounts:
    """Rows per dataset and the trained tokens they hold."""

    counts: dict[str, int]
    tokens: dict[str, int]
    ratios: dict[str, float]

    @property
    def shares(self) -> dict[str, float]:
        whole = sum(self.tokens.values()) or 1
        return {n: t / whole for n, t in self.tokens.items()}

    @property
    def off(self) -> float:
        """The largest distance of a share from its ratio (0.004: 0.4 points)."""
        return max(abs(self.shares[n] - r) for n, r in self.ratios.items())

    @property
    def within(self) -> bool:
        return self.off <= TOLERANCE + 1e-12


def token_mix_counts(ratios: dict[str, float], weights: dict[str, list[int]], total: int | None = None,
                     tolerance: float = TOLERANCE) -> TokenCounts:
    """Row counts whose trained tokens hold ``ratios`` (see the module docstring); ``weights``: each
    dataset's trained tokens row by row, in its pick order."""
    for name in ratios:
        if not any(weights.get(name) or ()):
            raise QfkError(f"dataset '{name}' trains no tokens (no row LLaMA-Factory keeps): it cannot carry a token share",
                           f"check it: qfk lint {name}; qfk stats {name}")
    sums = {n: _prefix(weights[n], total if total else len(weights[n])) for n in ratios}
    top = None if total else min(sums[n][-1] / r for n, r in ratios.items())

    def mix_at(scale: float) -> TokenCounts:
        counts = {n: _closest(sums[n], r * scale) for n, r in ratios.items()}
        return TokenCounts(counts, {n: sums[n][c] for n, c in counts.items()}, dict(ratios))

    scales = _scales(ratios, sums, top)
    best: TokenCounts | None = None
    for mix in (map(mix_at, scales) if total is None else _by_gap(scales, total, mix_at)):
        if mix.off <= tolerance + 1e-12:
            return mix
        best = mix if best is None or mix.off < best.off - 1e-12 else best
    if best is None:
        raise QfkError("no token mix fits these rows", "convert more rows, or mix by rows: --mix-by rows")
    return best


def _by_gap(scales: list[float], total: int, mix_at) -> Iterator[TokenCounts]:
    """The mixes at ``scales`` (largest first) in order of how far their rows are from ``total``, the
    larger first on a tie (rows grow with the scale: a binary search, then outwards)."""
    up = scales[::-1]
    lo, hi = 0, len(up)
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(mix_at(up[mid]).counts.values()) < total:
            lo = mid + 1
        else:
            hi = mid
    below, above = lo - 1, lo
    while below >= 0 or above < len(up):
        under = mix_at(up[below]) if below >= 0 else None
        over = mix_at(up[above]) if above < len(up) else None
        gap_under = total - sum(under.counts.values()) if under else float("inf")
        gap_over = sum(over.counts.values()) - total if over else float("inf")
        if gap_over <= gap_under:
            yield over
            above += 1
        else:
            yield under
            below -= 1


def _prefix(weights: list[int], limit: int) -> list[int]:
    """Trained tokens of the first N rows of the order, N = 0 .. ``limit`` (round the order again past its end)."""
    out = [0]
    for w in itertools.islice(itertools.cycle(weights), limit):
        out.append(out[-1] + w)
    return out


def _scales(ratios: dict[str, float], sums: dict[str, list[int]], top: float | None) -> list[float]:
    """Every scale at which one dataset's first N rows hold exactly its share, largest first (at most ``top``)."""
    found = {s / r for n, r in ratios.items() for s in sums[n][1:]}
    return sorted((s for s in found if top is None or s <= top * (1 + 1e-12)), reverse=True)


def _closest(sums: list[int], want: float) -> int:
    """The N >= 1 whose first N rows' tokens come closest to ``want`` (the fewer rows on a tie)."""
    i = bisect.bisect_left(sums, want, lo=1)
    if i >= len(sums):
        return len(sums) - 1
    if i > 1 and want - sums[i - 1] <= sums[i] - want:
        return i - 1
    return i
