"""What every figure shares: the style, the colours of K, seed bands over the range of the seeds,
curves against symlog steps, the legend outside the axes, the files written and the note drawn when
a table holds nothing to draw.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from itlin import record, tables


PNG_DPI = 150
LINEARISED_STYLE = {"color": "black", "linestyle": "--"}
STANDARD_COLOUR = sns.color_palette("colorblind")[0]
SEED_BAND = "band: range over seeds (min to max)"


def seed_range(values: np.ndarray) -> tuple[float, float]:
    """Range over seeds (min, max), the seaborn ``errorbar`` of every figure.

    Runs have two or three seeds, too few for a confidence interval to mean much: a 95% Student-t
    interval is ±6.4 times the seed spread with two seeds and runs far outside [0, 100] % accuracy. The range
    shows every seed, reads at a glance and stays within the values drawn. One seed gives zero width.
    """
    values = np.asarray(values, dtype=float)
    return float(values.min()), float(values.max())


def styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw the figure under a white-grid seaborn style, without changing the global style."""
    @functools.wraps(draw)
    def in_style(*args, **kwargs) -> Figure:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
            return draw(*args, **kwargs)

    return in_style


def K_label(K: float) -> str:
    """Legend label of a period K, naming the two special cases."""
    if K == 1:
        return "K = 1 (standard)"
    if math.isinf(K):
        return "K = ∞ (linearised)"
    return f"K = {record.format_K(K)}"


def K_colours(Ks: Sequence[float]) -> dict[float, tuple]:
    """Colour per K: a sequential palette ordered by finite K (pale end cut off), black for K = ∞."""
    finite = sorted(K for K in set(Ks) if not math.isinf(K))
    colourmap = plt.get_cmap("viridis")
    colours = {K: colourmap(position) for K, position in zip(finite, np.linspace(0.0, 0.85, max(len(finite), 1)))}
    colours.update({K: LINEARISED_STYLE["color"] for K in Ks if math.isinf(K)})
    return colours


def by_group(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per model/dataset/variant group, sorted by label."""
    rows = rows.assign(group=tables.group_labels(rows))
    return list(rows.groupby("group", sort=True))


def group_palette(rows: pd.DataFrame) -> dict[str, tuple]:
    """Categorical colour per group label."""
    groups = sorted(rows["group"].unique())
    return dict(zip(groups, sns.color_palette("colorblind", len(groups))))


def mean_curve(ax: plt.Axes, rows: pd.DataFrame, y: str, style: dict) -> None:
    """Mean over seeds of ``y`` against step with a band over their range (NaN rows of diverged runs dropped)."""
    finite = rows[np.isfinite(rows[y])]
    sns.lineplot(finite, x="step", y=y, ax=ax, errorbar=seed_range, legend=False, linewidth=1.6, **style)


def line_handle(colour, label: str, K: float) -> Line2D:
    """Legend line for one K (K = ∞ dashed)."""
    return Line2D([], [], color=colour, linestyle="--" if math.isinf(K) else "-", linewidth=1.8, label=label)


def symlog_threshold(x: pd.Series) -> float:
    """End of the linear part of a symlog axis over ``x``: its smallest positive value (the first
    snapshot or switch step after 0), 1 when there is none, so that 0 and the dense early values are
    both visible."""
    positive = x[x > 0]
    return float(positive.min()) if not positive.empty else 1.0


def symlog_x(ax: plt.Axes, linthresh: float) -> None:
    """Symlog x axis from 0 to the largest x drawn (at least ``linthresh``), with a 5% margin of the
    symlog extent each side.

    The data are never negative: starting just below 0 keeps a point at x = 0 whole without a negative
    side (ticks −10ⁿ), and a margin taken on the symlog scale (not the linear one that autoscaling may
    use) keeps a point at the largest x whole. Call after drawing the data.
    """
    ax.set_xscale("symlog", linthresh=linthresh)
    scale = ax.xaxis.get_transform()
    extent = scale.transform(np.array([max(ax.dataLim.x1, linthresh)]))[0]
    left, right = scale.inverted().transform(np.array([-0.05, 1.05]) * extent)
    ax.set_xlim(left, right)


def finish(fig: Figure, title: str, handles: list, out_pdf: Path, out_png: Path, *, legend_loc: str = "outside right center",
           legend_columns: int = 1, legend_title: str | None = None) -> Figure:
    """Add the title and a legend outside the axes, write PDF and PNG, close and return the figure."""
    fig.suptitle(title, fontsize=12, fontweight="bold")
    if handles:
        fig.legend(handles=handles, loc=legend_loc, ncols=legend_columns, frameon=False, fontsize=9,
                   title=legend_title, title_fontsize=9)
    for path, options in ((out_pdf, {}), (out_png, {"dpi": PNG_DPI})):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, **options)
    plt.close(fig)
    return fig


def note_figure(title: str, note: str, out_pdf: Path, out_png: Path) -> Figure:
    """A figure holding only ``title`` and a centred ``note`` saying which data are missing."""
    fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
    ax.set_axis_off()
    ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True, fontsize=11, color="0.25")
    return finish(fig, title, [], out_pdf, out_png)
