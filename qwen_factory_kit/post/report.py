"""The evaluation report: ``report.md`` and a self-contained ``report.html`` (plots embedded as
base64 PNG data URIs), from ``metrics.json``'s dict and the rows of ``predictions.jsonl``.

:func:`report_sections` decides what the report says (a list of :class:`Section`); the renderers
only format it. The plots (matplotlib, PNG files in ``OUT/plots/``): the run's loss curve (the last
run of ``trainer_log.jsonl``, which LLaMA-Factory appends to across resumed runs), the metrics of
base and tuned side by side, think compliance, and answer lengths.
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..plots import count_axis, pyplot, save

REPORT_MD, REPORT_HTML, PLOTS_DIR = "report.md", "report.html", "plots"
TRAINER_LOG = "trainer_log.jsonl"
LABELS = {"bleu": "BLEU", "chrf": "chrF", "rouge_l": "ROUGE-L", "exact_match": "exact match %"}
#: the corpus metrics of each kind of data (as :func:`.metrics.score_rows` names them)
SCORE_KEYS = {"translation": ("bleu", "chrf"), "qa": ("rouge_l", "exact_match")}
COLOURS = {"base": "#9ecae1", "tuned": "#08519c", "reference": "#bdbdbd"}
#: longest text a report shows of one prompt, reference or answer
SHOW_CHARS = 1200


# ---------------------------------------------------------------------------------------------
# the run's loss curve
# ---------------------------------------------------------------------------------------------
def last_run(entries: list[dict]) -> list[dict]:
    """The entries of the last run in a ``trainer_log.jsonl``: from the last point where
    ``current_steps`` goes back (a resumed or restarted run appends to the same file)."""
    start, previous = 0, None
    for i, entry in enumerate(entries):
        step = entry.get("current_steps")
        if not isinstance(step, (int, float)):
            continue
        if previous is not None and step < previous:
            start = i
        previous = step
    return entries[start:]


def read_trainer_log(run_dir: Path) -> list[dict]:
    """The JSON objects of ``RUN_DIR/trainer_log.jsonl`` (unreadable lines skipped)."""
    path = Path(run_dir) / TRAINER_LOG
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def loss_history(entries: list[dict]) -> list[dict]:
    """``trainer_log.jsonl`` entries in the ``{"step", "loss", "eval_loss"}`` shape of :func:`.training.plot_loss`."""
    return [{"step": e["current_steps"], **{k: e[k] for k in ("loss", "eval_loss") if k in e}}
            for e in entries if isinstance(e.get("current_steps"), (int, float))]


# ---------------------------------------------------------------------------------------------
# the comparison table
# ---------------------------------------------------------------------------------------------
def models_of(metrics: dict) -> list[str]:
    return [m for m in ("base", "tuned") if isinstance(metrics.get(m), dict)]


def comparison(metrics: dict) -> list[tuple[str, dict[str, float], float | None]]:
    """``(metric name, {model: value}, delta)`` for every corpus metric (overall, then per
    direction) and think compliance (%)."""
    keys, models = SCORE_KEYS[metrics["kind"]], models_of(metrics)
    delta = metrics.get("delta") or {}
    out = []
    for key in keys:
        out.append((LABELS[key], {m: metrics[m]["overall"][key] for m in models}, delta.get("overall", {}).get(key)))
    for direction in metrics["tuned"]["per_direction"]:
        for key in keys:
            values = {m: metrics[m]["per_direction"].get(direction, {}).get(key) for m in models}
            out.append((f"{LABELS[key]} {direction}", values, delta.get("per_direction", {}).get(direction, {}).get(key)))
    out.append(("think compliance %", {m: 100.0 * metrics[m]["compliance"]["share"] for m in models}, delta.get("compliance")))
    return out


def fmt(value, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def comparison_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table (the CLI prints it with rich)."""
    models = models_of(metrics)
    header = ["metric", *models] + (["delta"] if "base" in models else [])
    rows = []
    for name, values, delta in comparison(metrics):
        rows.append([name, *(fmt(values.get(m)) for m in models)] + ([fmt(delta, signed=True)] if "base" in models else []))
    return header, rows


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------
def _grouped_bars(ax, names: list[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / max(len(series), 1)
    for j, (label, values) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [v or 0.0 for v in values], width, label=label, color=COLOURS.get(label))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    top = max((v or 0.0 for values in series.values() for v in values), default=0.0)
    ax.set_ylim(0, 100 if top <= 0 else top * 1.15)  # scores are 0-100: all-zero bars still show a 0-100 axis
    ax.legend()


def plot_metrics(metrics: dict, path: Path) -> Path:
    """Every corpus metric, base and tuned side by side."""
    plt = pyplot()
    rows = [r for r in comparison(metrics) if not r[0].startswith("think")]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4), dpi=110)
    _grouped_bars(ax, [r[0] for r in rows], {m: [r[1].get(m) for r in rows] for m in models_of(metrics)})
    ax.set_ylabel("score (0-100)")
    ax.set_title(f"{metrics['dataset']}: {metrics['n']} rows", fontsize=9)
    return save(fig, path)


def plot_compliance(metrics: dict, path: Path) -> Path:
    """Share of predictions in each think class, per model."""
    plt = pyplot()
    models = models_of(metrics)
    classes = sorted({c for m in models for c in metrics[m]["compliance"]["counts"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(classes) + 2), 4), dpi=110)
    _grouped_bars(ax, classes, {m: [100.0 * metrics[m]["compliance"]["shares"].get(c, 0.0) for c in classes] for m in models})
    ax.set_ylabel("% of predictions")
    expected = metrics["models"]["tuned"].get("enable_thinking")
    ax.set_title(f"think format (enable_thinking {json.dumps(expected)}): "
                 + ", ".join(f"{m} {100.0 * metrics[m]['compliance']['share']:.0f}% compliant" for m in models), fontsize=9)
    return save(fig, path)


def answer_lengths(rows: list[dict]) -> dict[str, list[int]]:
    """Characters of each answer (think block off) per model, and of the references."""
    out: dict[str, list[int]] = {}
    for model in ("base", "tuned"):
        if rows and model in rows[0]:
            out[model] = [len(r[model]["answer"]) for r in rows]
    out["reference"] = [len(r["reference_answer"]) for r in rows]
    return out


def plot_lengths(rows: list[dict], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    lengths = answer_lengths(rows)
    top = max((max(v) for v in lengths.values() if v), default=1)
    bins = [top * i / 20 for i in range(21)] if top else 10
    for label, values in lengths.items():
        ax.hist(values, bins=bins, alpha=0.55, label=label, color=COLOURS.get(label))
    count_axis(ax.xaxis, "answer length (characters, think block off)")
    count_axis(ax.yaxis, "rows")
    ax.legend()
    ax.grid(alpha=0.3)
    return save(fig, path)


def make_plots(out: Path, metrics: dict, rows: list[dict], run_dir: Path | None = None) -> dict[str, Path]:
    """Every plot the report shows, as PNG files in ``OUT/plots``."""
    from .training import plot_loss

    folder = Path(out) / PLOTS_DIR
    plots = {"metrics": plot_metrics(metrics, folder / "metrics.png"),
             "compliance": plot_compliance(metrics, folder / "compliance.png"),
             "lengths": plot_lengths(rows, folder / "answer_lengths.png")}
    if run_dir is not None:
        history = loss_history(last_run(read_trainer_log(run_dir)))
        made = plot_loss(history, folder / "loss.png", f"{run_dir} (last run)") if history else None
        if made:
            plots["loss"] = made
    return plots


# ---------------------------------------------------------------------------------------------
# what the report says
# ---------------------------------------------------------------------------------------------
@dataclass
class Section:
    title: str
    level: int = 2
    text: list[str] = field(default_factory=list)
    table: tuple[list[str], list[list[str]]] | None = None
    image: str | None = None                                     # a key of the plots
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (label, verbatim text)


def report_sections(metrics: dict, rows: list[dict]) -> list[Section]:
    """The report, top to bottom."""
    sections = [_summary(metrics), Section("Scores", table=comparison_table(metrics), image="metrics",
                                           text=[_scores_note(metrics)]),
                _compliance(metrics), _lengths(rows), _leaks(metrics)]
    if "base" in metrics:
        sections += _regressions(metrics, rows)
    sections.append(Section("Training loss (last run)", image="loss"))
    sections.append(_llamafactory(metrics))
    signatures = json.dumps(metrics["signatures"], indent=2, ensure_ascii=False)
    sections.append(Section("Metric signatures", blocks=[("signatures", signatures)]))
    return sections


def _summary(metrics: dict) -> Section:
    models = metrics["models"]
    lines = [f"Dataset {metrics['dataset']}: {metrics['n']} rows scored as {metrics['kind']} "
             f"({', '.join(LABELS[k] for k in _keys(metrics))}; answers only, think blocks split off)."]
    for label in models_of(metrics):
        m = models[label]
        lines.append(f"{label}: {m['model']}" + (f" + adapter {m['adapter']}" if m.get("adapter") else " (no adapter)")
                     + f"; template {m['template']}, enable_thinking {json.dumps(m['enable_thinking'])}")
    d = metrics["decoding"]
    lines.append(f"Decoding: {d.get('note') or d.get('kind')}; "
                 + (f"{d['budget_note']}." if d.get("budget_note") else f"max_new_tokens {d.get('max_new_tokens', '-')}."))
    same = metrics.get("identical") or {}
    if same.get("of"):
        lines.append(f"Identical predictions: tuned = base on {same['rows']} of {same['of']} rows"
                     + (f"; {same['note']}." if same.get("note") else "."))
    return Section(f"Evaluation of {metrics['target']['spec']}", level=1, text=lines)


def _keys(metrics: dict) -> tuple[str, ...]:
    return SCORE_KEYS[metrics["kind"]]


def _scores_note(metrics: dict) -> str:
    if metrics["kind"] == "translation":
        return "Corpus BLEU and chrF (sacreBLEU) per direction, BLEU tokenized for the target language; 0-100."
    return "ROUGE-L F1 (0-100) and exact match after whitespace normalisation (% of rows)."


def _leaks(metrics: dict) -> Section:
    """The leak check of the run's training datasets against the eval dataset."""
    found = metrics.get("leaks")
    if found is None:
        return Section("Leak check", text=["Not checked: no training datasets are known (a model, not a qfk train run)."])
    trained = ", ".join(metrics["target"].get("trained_on") or [])
    severities = {f["severity"] for f in found}
    if "error" in severities:
        verdict = f"LEAK: the model was trained on eval rows of {metrics['dataset']}; these scores are optimistic."
    elif severities <= {"ok", "warn"}:
        verdict = f"No eval row of {metrics['dataset']} is a training row ({trained})."
    else:
        verdict = f"Not every training dataset ({trained}) could be compared with {metrics['dataset']}: see below."
    table = (["severity", "where", "finding", "fix"], [[f["severity"], f["where"] or "", f["message"], f["fix"]] for f in found])
    return Section("Leak check", text=[verdict], table=table)


def _compliance(metrics: dict) -> Section:
    models = models_of(metrics)
    classes = sorted({c for m in models for c in metrics[m]["compliance"]["counts"]})
    counts = {m: metrics[m]["compliance"]["counts"] for m in models}
    table = (["think class", *models], [[c, *(str(counts[m].get(c, 0)) for m in models)] for c in classes])
    expected = metrics["models"]["tuned"].get("enable_thinking")
    want = {True: "a non-empty think block", False: "an empty or no think block", None: "what each reference holds"}[expected]
    return Section("Think compliance", text=[f"enable_thinking {json.dumps(expected)}: a compliant prediction has {want}."],
                   table=table, image="compliance")


def _lengths(rows: list[dict]) -> Section:
    table = (["answers", "mean chars", "median chars"],
             [[k, fmt(statistics.fmean(v)) if v else "-", fmt(statistics.median(v)) if v else "-"]
              for k, v in answer_lengths(rows).items()])
    return Section("Answer lengths", table=table, image="lengths")


def _regressions(metrics: dict, rows: list[dict]) -> list[Section]:
    key = metrics["row_metric"]
    worst = metrics.get("regressions") or []
    head = Section("Worst regressions", text=[
        f"Rows where the tuned model's sentence {LABELS[key]} is lowest relative to the base model ({len(worst)} shown)."
        if worst else f"No row scores lower (sentence {LABELS[key]}) with the tuned model than with the base."])
    by_index = {r["dataset_index"]: r for r in rows}
    out = [head]
    for item in worst:
        r = by_index[item["dataset_index"]]
        title = f"Dataset row {r['dataset_index']}" + (f" ({r['direction']})" if r.get("direction") else "")
        scores = "; ".join(f"{LABELS[k]} base {fmt(r['base']['scores'][k])}, tuned {fmt(r['tuned']['scores'][k])}"
                           for k in r["tuned"]["scores"])
        out.append(Section(f"{title}: {LABELS[key]} {fmt(item[key], signed=True)}", level=3, text=[scores], blocks=[
            ("prompt", _cut(r.get("user") or r["prompt"])), ("reference", _cut(r["reference_answer"])),
            ("tuned", _cut(r["tuned"]["answer"])), ("base", _cut(r["base"]["answer"]))]))
    return out


def _cut(text: str) -> str:
    return text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS] + f" ... ({len(text) - SHOW_CHARS} more characters)"


def _llamafactory(metrics: dict) -> Section:
    lf = metrics.get("llamafactory") or {}
    models = [m for m in models_of(metrics) if lf.get(m)]
    names = sorted({k for m in models for k in lf[m]})
    table = (["name", *models], [[n, *(fmt(lf[m].get(n)) for m in models)] for n in names]) if names else None
    return Section("LLaMA-Factory's own metrics", text=[lf.get("note", "")], table=table)


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------
def render_markdown(sections: list[Section], plots: dict[str, str]) -> str:
    """Markdown; ``plots`` maps image keys to paths relative to the report."""
    out: list[str] = []
    for s in sections:
        if s.image and s.image not in plots and not (s.text or s.table or s.blocks):
            continue
        out += ["#" * s.level + " " + s.title, ""]
        out += [line + "  " for line in s.text if line]
        out += [""] if s.text else []
        if s.table:
            header, rows = s.table
            out += ["| " + " | ".join(_md_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        if s.image in plots:
            out += [f"![{s.title}]({plots[s.image]})", ""]
        for label, text in s.blocks:
            out += [f"**{label}**", "", "~~~~text", text, "~~~~", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


CSS = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
       "td:first-child,th:first-child{text-align:left}pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}"
       "img{max-width:100%}")


def render_html(sections: list[Section], plots: dict[str, Path]) -> str:
    """One self-contained HTML page: every plot embedded as a base64 PNG data URI."""
    body: list[str] = []
    for s in sections:
        if s.image and s.image not in plots and not (s.text or s.table or s.blocks):
            continue
        level = min(s.level, 6)
        body.append(f"<h{level}>{html.escape(s.title)}</h{level}>")
        body += [f"<p>{html.escape(line)}</p>" for line in s.text if line]
        if s.table:
            header, rows = s.table
            body.append("<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in header) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            body.append("</table>")
        if s.image in plots:
            data = base64.b64encode(Path(plots[s.image]).read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(s.title)}" src="data:image/png;base64,{data}">')
        for label, text in s.blocks:
            body.append(f"<p><b>{html.escape(label)}</b></p><pre>{html.escape(text)}</pre>")
    title = html.escape(sections[0].title if sections else "qfk eval")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{CSS}</style></head>\n"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(out: str | Path, metrics: dict, rows: list[dict], *, run_dir: Path | None = None) -> dict[str, str]:
    """``OUT/report.md``, ``OUT/report.html`` and ``OUT/plots/*.png``; returns their paths."""
    from ..io.atomic import atomic_write_bytes

    out = Path(out)
    plots = make_plots(out, metrics, rows, run_dir)
    sections = report_sections(metrics, rows)
    relative = {k: p.relative_to(out).as_posix() for k, p in plots.items()}
    atomic_write_bytes(out / REPORT_MD, render_markdown(sections, relative).encode())
    atomic_write_bytes(out / REPORT_HTML, render_html(sections, plots).encode())
    return {"report_md": str(out / REPORT_MD), "report_html": str(out / REPORT_HTML),
            **{f"plot_{k}": str(p) for k, p in plots.items()}}
