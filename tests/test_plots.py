"""The kit's plots: an axis that counts things (rows, steps, tokens, characters) reads 0, 1, 2 ...,
never 0.5, even when the counts are small; every plot is drawn and saved through qwen_factory_kit.plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_factory_kit.plots import count_axis, pyplot

Figure = pytest.importorskip("matplotlib.figure").Figure
PACKAGE = Path(__file__).resolve().parent.parent / "qwen_factory_kit"


@pytest.fixture
def drawn(monkeypatch):
    """The figures the kit saves, kept after they are written (ticks and labels are final then)."""
    figures = []
    real = Figure.savefig

    def keep(self, *args, **kwargs):
        real(self, *args, **kwargs)
        figures.append(self)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def whole_ticks(axis) -> list[str]:
    """The tick labels shown inside the axis' range, after checking that each tick is a whole number."""
    low, high = sorted(axis.get_view_interval())
    shown = [t for t in axis.get_major_ticks() if low <= t.get_loc() <= high]
    assert len(shown) >= 2
    assert all(float(t.get_loc()).is_integer() for t in shown), [t.get_loc() for t in shown]
    return [t.label1.get_text() for t in shown]


def test_the_helper_gives_whole_ticks_where_matplotlib_would_give_halves(tmp_path):
    fig, (plain, counted) = pyplot().subplots(1, 2)
    for ax in (plain, counted):
        ax.bar([0, 1], [1, 2])
    count_axis(counted.yaxis, "rows")
    fig.savefig(tmp_path / "two.png")
    assert any(not float(t).is_integer() for t in plain.get_yticks() if 0 <= t <= 2)  # what the fix is for
    assert whole_ticks(counted.yaxis)[:3] == ["0", "1", "2"] and counted.get_ylabel() == "rows"
    pyplot().close(fig)


def test_stats_histogram_counts_rows_and_tokens(tmp_path, drawn):
    from qwen_factory_kit.tokens import RowStats, Stats, plot_lengths

    st = Stats("qa.jsonl", 64, "qwen3", False, rows=[RowStats(1, 23, 16, 7), RowStats(2, 25, 16, 9), RowStats(3, 26, 19, 7)])
    assert plot_lengths(st, tmp_path / "len.png").read_bytes()[:4] == b"\x89PNG"
    ax = drawn[-1].axes[0]
    assert ax.get_ylabel() == "rows" and ax.get_ylim()[1] < 3  # one row a bar: matplotlib alone ticks 0.2 apart
    whole_ticks(ax.yaxis), whole_ticks(ax.xaxis)


def test_loss_curve_counts_steps(tmp_path, drawn):
    from qwen_factory_kit.post.training import plot_loss

    plot_loss([{"step": s, "loss": 2.0 - s / 10} for s in (1, 2, 3)] + [{"step": 3, "eval_loss": 1.9}], tmp_path / "loss.png")
    ax = drawn[-1].axes[0]
    assert ax.get_xlabel() == "step" and whole_ticks(ax.xaxis)[:3] == ["1", "2", "3"]


def test_report_answer_lengths_count_rows(tmp_path, drawn):
    from qwen_factory_kit.post.report import plot_lengths

    rows = [{"base": {"answer": "a" * n}, "tuned": {"answer": "b" * (n + 3)}, "reference_answer": "c" * (n + 1)} for n in (5, 9)]
    plot_lengths(rows, tmp_path / "answer_lengths.png")
    ax = drawn[-1].axes[0]
    assert ax.get_ylabel() == "rows"
    whole_ticks(ax.yaxis), whole_ticks(ax.xaxis)


def test_every_plot_is_saved_through_the_helper():
    """matplotlib is set up and figures are written in qwen_factory_kit/plots.py only."""
    for path in PACKAGE.rglob("*.py"):
        if path.name != "plots.py":
            text = path.read_text(encoding="utf-8")
            assert "savefig" not in text and "matplotlib.use" not in text, path
