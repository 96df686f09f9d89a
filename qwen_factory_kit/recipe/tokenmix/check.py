"""``qfk recipe check``'s findings about a mix (id ``mix``), beside the ``num_samples`` repeat check.

* ``NAME__tN`` files whose rows are no longer what their manifest names: the source dataset was
  re-converted (its sha256 differs) or the file itself changed (:func:`.picks.staleness`); no
  tokenizer needed.
* The shares per epoch the header states (rows, trained tokens, all tokens: :mod:`.shares`)
  against the same shares measured now with the recipe's template, enable_thinking and cutoff_len:
  a share that moved by more than :data:`SLACK` points is a warning (the data changed, or the
  settings the recipe now trains with did). A mixed recipe without a stated block gets the shares as
  information. Measuring tokenizes (cached), so it runs where the length check runs, on the rows
  ``qfk recipe new`` measured: every row for a token mix, else the first ``stats_rows`` of each file.
"""

from __future__ import annotations

from pathlib import Path

from ...findings import Finding
from ..document import read_header, recipe_data_dir, split_names
from .shares import TOKEN_MIX_TITLE, Settings, entry_share, read_share_lines, share_table, stated_sample

#: points a stated share may differ from the data before recipe check warns
SLACK = 0.5
_KEYS = {"rows": "rows", "trained": "trained tokens", "total": "all tokens"}


def check_token_mix(args: dict, recipe_path: str | None, *, stats: bool, stats_rows: int | None = None,
                    rows: dict[str, int | None] | None = None) -> list[Finding]:
    """The findings of the module docstring for a train recipe's ``dataset`` (``stats``: measure the
    shares; ``rows``: each dataset's row count, for the estimates from its first ``stats_rows``)."""
    from ...registry import Registry

    names = split_names(args.get("dataset"))
    reg = Registry.at(recipe_data_dir(args))
    try:
        registry = reg.read()
    except Exception:  # noqa: BLE001 - the datasets check reports a broken registry
        return []
    entries = {n: registry[n] for n in names if isinstance(registry.get(n), dict)}
    header = read_header(recipe_path) if recipe_path else []
    out = _stale(entries, reg.data_dir, header)
    if stats and len(names) > 1 and len(entries) == len(names) and _is_mix(entries, reg.data_dir, header):
        # the rows the header's shares came from: every row for a token mix, else the first rows it names
        every = any(line.startswith(TOKEN_MIX_TITLE) for line in header)
        out += _shares(entries, reg.data_dir, Settings.of(args), header,
                       None if every else stated_sample(header) or stats_rows, rows or {})
    return out


def _is_mix(entries: dict[str, dict], data_dir: Path, header: list[str]) -> bool:
    """A recipe whose header states shares, or that trains a mix entry (num_samples, or a token mix's file)."""
    from .picks import read_manifest

    return (read_share_lines(header)[0] is not None
            or any(e.get("num_samples") or read_manifest(e, data_dir) for e in entries.values()))


def _stale(entries: dict[str, dict], data_dir: Path, header: list[str]) -> list[Finding]:
    from .picks import staleness

    out = []
    for name, entry in entries.items():
        why = staleness(name, entry, data_dir)
        if why:
            out.append(Finding("mix", "warn", name, f"{name} no longer holds the rows its token mix measured: {why}; "
                                                    "the recipe's stated shares describe the rows as they were",
                               _remake(header)))
    return out


def _shares(entries: dict[str, dict], data_dir: Path, settings: Settings, header: list[str], max_rows: int | None,
            rows: dict[str, int | None]) -> list[Finding]:
    from ...registry import resolve_file
    from ...tokens import TokenizerRef

    tokenizer, measured = TokenizerRef(), []
    for name, entry in entries.items():
        path = resolve_file(entry, data_dir)
        if entry.get("ranking") or path is None or not path.exists() or entry.get("formatting", "alpaca") not in ("alpaca", "sharegpt"):
            return []  # nothing the kit can render: the other checks say why
        measured.append(entry_share(name, entry, path, settings, tokenizer, max_rows=max_rows, rows=rows.get(name)))
    now = share_table(measured)
    shown = "; ".join(f"{n} " + ", ".join(f"{_KEYS[k]} {v[k]:.1f}%" for k in _KEYS) for n, v in now.items())
    stated_settings, stated = read_share_lines(header)
    if stated_settings is None:
        return [Finding("mix", "info", None, f"shares per epoch ({settings.text}): {shown}", "")]
    moved = [f"{n} {_KEYS[k]} {stated[n][k]:.1f}% -> {now[n][k]:.1f}%" for n in now if n in stated for k in _KEYS
             if abs(stated[n][k] - now[n][k]) > SLACK]
    moved += [f"{n}: not in the stated shares" for n in now if n not in stated]
    if not moved:
        return [Finding("mix", "ok", None, f"the stated shares per epoch hold ({settings.text}): {shown}")]
    changed = "" if stated_settings == settings.text else f"; they were measured with {stated_settings}, the recipe now trains with {settings.text}"
    return [Finding("mix", "warn", None, f"the shares the header states no longer match the data: {', '.join(moved)}{changed}",
                    _remake(header))]


def _remake(header: list[str]) -> str:
    """Make the recipe again: the command its header records, else the general form."""
    made = next((line.split(": ", 1)[1] for line in header if line.startswith("Made by") and ": " in line), "")
    if made.startswith("qfk recipe new"):
        made += "" if " --force" in made else " --force"
        return f"make the recipe again from the data as it is now (it measures and picks the rows again): {made}"
    return "make the recipe again from the data as it is now: qfk recipe new ... --mix A=0.75,B=0.25 [--mix-by tokens]"
