"""C7's figure, drawn from the width sweep's runs (``ntk_width`` and ``metrics_width``): how the kernel's change
after training, the K = 1 minus K = ∞ accuracy gap and the fewest feature updates on par scale with width, in the
NTK theory's regime and in the paper's.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from itlin import record, summaries
from itlin.plots.style import SEED_BAND, finish, note_figure, seed_range, styled


@styled
def width_scaling(ntk: pd.DataFrame, out_pdf: Path, out_png: Path, *, metrics_width: pd.DataFrame, theory_regime: str,
                  exponent: float, tolerance_pt: float) -> Figure:
    """C7: per architecture (a row each), against width on log axes: the relative change ‖Θ_T − Θ₀‖/‖Θ₀‖ of the
    K = 1 trace NTK (log-log; mean over seeds with their range, the fitted power law dashed, its exponent in the
    legend, and the theory's width^exponent through the theory regime's first point, grey); the K = 1 minus K = ∞
    test accuracy gap; the fewest feature updates within ``tolerance_pt`` of K = 1. One colour per regime."""
    title = "C7: the kernel's change, and the need for feature learning, against width"
    changes = summaries.kernel_change_by_width(ntk)
    if changes.empty:
        return note_figure(title, "No K = 1 runs of the width sweep in the table: nothing to draw.", out_pdf, out_png)
    accuracy = summaries.accuracy_by_width(metrics_width, tolerance_pt)
    regimes = sorted(changes["variant"].unique())
    colours = dict(zip(regimes, sns.color_palette("colorblind", len(regimes))))
    architectures = sorted(changes["model"].unique())
    fig, axes = plt.subplots(len(architectures), 3, figsize=(13.5, 3.8 * len(architectures)), layout="constrained",
                             squeeze=False)
    handles = []
    for row, model in zip(axes, architectures):
        change_ax, gap_ax, updates_ax = row
        for variant in regimes:
            runs = changes[(changes["model"] == model) & (changes["variant"] == variant)]
            if runs.empty:
                continue
            colour = colours[variant]
            sns.lineplot(runs, x="width", y="value", ax=change_ax, errorbar=seed_range, marker="o", color=colour,
                         legend=False)
            mean = runs.groupby("width")["value"].mean()
            fitted = summaries.width_exponent(mean.index.to_numpy(), mean.to_numpy()[:, None])[0]
            if np.isfinite(fitted):
                logs = np.log(mean.to_numpy())
                intercept = logs.mean() - fitted * np.log(mean.index.to_numpy()).mean()
                change_ax.plot(mean.index, np.exp(intercept) * mean.index.to_numpy() ** fitted, color=colour,
                               linestyle="--", linewidth=1)
            if variant == record.width_variant(theory_regime):
                first = mean.index[0]
                change_ax.plot(mean.index, mean.iloc[0] * (mean.index.to_numpy() / first) ** exponent, color="0.6",
                               linewidth=3, alpha=0.5, zorder=0)
            if model == architectures[0]:
                regime = variant.removeprefix(record.width_variant(""))
                handles.append(Line2D([], [], color=colour, marker="o",
                                      label=f"{regime} regime (fitted exponent {fitted:+.2f})"))
            beside = accuracy[(accuracy["model"] == model) & (accuracy["variant"] == variant)]
            gap_ax.plot(beside["width"], beside["gap"], marker="o", color=colour)
            updates_ax.plot(beside["width"], beside["updates_on_par"], marker="o", color=colour)
        change_ax.set(xscale="log", yscale="log", xlabel="width", ylabel="relative change ‖Θ_T − Θ₀‖/‖Θ₀‖",
                      title=f"{model}: kernel change after training (K = 1)")
        gap_ax.axhline(0, color="0.5", linewidth=0.8)
        gap_ax.set(xscale="log", xlabel="width", ylabel="K = 1 minus K = ∞ (pt)", title="accuracy gap (test, f_lin)")
        updates_ax.set_yscale("symlog", linthresh=1)  # 0 (K = ∞ on par), a handful, or hundreds (only K = 1)
        updates_ax.set(xscale="log", xlabel="width", ylabel="feature updates (symlog)",
                       title=f"fewest updates within {tolerance_pt:g} pt of K = 1")
        widths = sorted(changes["width"].unique())
        for ax in row:
            ax.set_xticks(widths, labels=[str(w) for w in widths])
            ax.xaxis.set_minor_locator(NullLocator())
    handles.append(Line2D([], [], color="0.6", linewidth=3, alpha=0.5, label=f"theory: width^{exponent:g}"))
    handles.append(Line2D([], [], color="0.3", linestyle="--", label="power law fitted to the means"))
    return finish(fig, title + f" ({SEED_BAND})", handles, out_pdf, out_png, legend_loc="outside lower center",
                  legend_columns=2)
