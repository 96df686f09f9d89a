"""The kit's plots (matplotlib, PNG files): pyplot without a display, an axis that counts things,
and saving a figure.

Every plot the kit draws (``qfk stats --plot``, the loss curve of a run, the report's plots) goes
through these, so an axis of rows or steps reads 0, 1, 2 ..., never 0.5.
"""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def count_axis(axis, label: str) -> None:
    """Label ``axis`` (``ax.xaxis``/``ax.yaxis``) as a count of ``label`` (rows, steps ...) and
    give it whole-number ticks only."""
    from matplotlib.ticker import MaxNLocator

    axis.set_label_text(label)
    axis.set_major_locator(MaxNLocator(integer=True))


def save(fig, path: str | os.PathLike) -> Path:
    """Lay ``fig`` out, write it to ``path`` (folders made) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path
