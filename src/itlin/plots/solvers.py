"""The solver figures, each drawn from its own table: C5 (iterative linearisation against damped
Gauss-Newton over the damping) and C6 (K = ∞ trained on MSE against its closed form and kernel
regression).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from itlin import record, summaries, tables
from itlin.plots.style import SEED_BAND, STANDARD_COLOUR, finish, note_figure, seed_range, styled


METHOD_STYLES = {"iterative_linearisation": {"color": sns.color_palette("colorblind")[0], "marker": "o"},
                 "gauss_newton": {"color": sns.color_palette("colorblind")[3], "marker": "s"}}
METHOD_LABELS = {"iterative_linearisation": "iterative linearisation, K = 1/(ηλ)",
                 "gauss_newton": "damped Gauss-Newton, λ (T/K rounds)"}
EVALUATOR_STYLES = {"linear": {"linestyle": "-", "linewidth": 1.8}, "network": {"linestyle": ":", "linewidth": 1.2}}


@styled
def gauss_newton_damping(table: pd.DataFrame, out_pdf: Path, out_png: Path, *, tolerance_pt: float | None = None) -> Figure:
    """C5: over the damping λ, iterative linearisation at K = 1/(ηλ) and damped Gauss-Newton at λ (the same
    time ηT), one column per model and loss: final test accuracy (top), relative change of the kernel
    from θ₀ (middle) and the accuracy difference of the two (bottom), with the C5 tolerance
    (``tolerance_pt``, the config's ``claims.C5``) shaded around zero. Solid: the trained linear model
    f_lin and its kernel at θ_lin; dotted: the network at its final θ. Mean over seeds, bands over their
    range (for the difference, of the seeds' paired differences); the top axis gives K."""
    title = "C5: iterative linearisation against damped Gauss-Newton at λ = 1/(ηK), the same time ηT"
    table = tables.validate("gauss_newton", table, "C5 table")
    if table.empty:
        return note_figure(title, "No C5 runs: nothing to draw.", out_pdf, out_png)
    table = table.assign(test_accuracy=100 * table["test_accuracy"],
                         group=tables.group_labels(table) + " / " + table["loss"])
    groups = sorted(table["group"].unique())
    fig, axes = plt.subplots(3, len(groups), figsize=(4.4 * len(groups) + 2.6, 8.4), layout="constrained",
                             squeeze=False, sharex="col")
    panels = (("test_accuracy", "final test accuracy (%)"), ("relative_change", "relative kernel change ‖Θ − Θ₀‖/‖Θ₀‖"))
    for column, group in enumerate(groups):
        rows = table[table["group"] == group]
        completed = rows[rows["status"] == "ok"]
        for row, (y, ylabel) in enumerate(panels):
            ax = axes[row, column]
            for (method, evaluator), runs in completed.groupby(["method", "evaluator"]):
                sns.lineplot(runs, x="damping", y=y, ax=ax, errorbar=seed_range, err_kws={"alpha": 0.12}, legend=False,
                             markersize=5, **METHOD_STYLES[method], **EVALUATOR_STYLES[evaluator])
            ax.set(ylabel=ylabel if column == 0 else "", title=group if row == 0 else "")
        ax = axes[2, column]
        paired = completed.pivot_table(index=["evaluator", "K", "damping", "seed"], columns="method",
                                       values="test_accuracy").dropna().reset_index()
        paired["difference"] = paired["iterative_linearisation"] - paired["gauss_newton"]
        if tolerance_pt is not None:
            ax.axhspan(-tolerance_pt, tolerance_pt, color="0.5", alpha=0.15, linewidth=0)
        ax.axhline(0, color="0.3", linewidth=0.8)
        for evaluator, runs in paired.groupby("evaluator"):
            sns.lineplot(runs, x="damping", y="difference", ax=ax, color="0.15", marker="D", markersize=4,
                         errorbar=seed_range, err_kws={"alpha": 0.15}, legend=False, **EVALUATOR_STYLES[evaluator])
        ax.set(xlabel="damping λ (log scale)", ylabel="IL − GN test accuracy (pt)" if column == 0 else "")
        ax.set_xscale("log")
        eta = float(rows["learning_rate"].iloc[0])
        inverse = lambda value, eta=eta: 1 / (eta * np.clip(value, 1e-300, None))  # noqa: E731  (λ ↔ K, its own inverse)
        top = axes[0, column].secondary_xaxis("top", functions=(inverse, inverse))
        top.set_xlabel(f"period K = 1/(ηλ), η = {eta:g}", fontsize=9)
        _note_diverged_runs(axes[0, column], rows[(rows["status"] != "ok") & (rows["evaluator"] == "linear")])
    handles = [Line2D([], [], **METHOD_STYLES[method], label=label) for method, label in METHOD_LABELS.items()]
    handles += [Line2D([], [], color="0.3", **EVALUATOR_STYLES["linear"], label="linear model f_lin (kernel at θ_lin)"),
                Line2D([], [], color="0.3", **EVALUATOR_STYLES["network"], label="network f at the final θ"),
                Line2D([], [], color="0.15", marker="D", label="IL − GN, paired by seed")]
    if tolerance_pt is not None:
        handles.append(Patch(color="0.5", alpha=0.3, label=f"within ±{tolerance_pt:g} pt (C5 tolerance)"))
    return finish(fig, title, handles, out_pdf, out_png, legend_title=f"mean over seeds,\n{SEED_BAND}")


@styled
def kernel_regression(table: pd.DataFrame, out_pdf: Path, out_png: Path, *, tolerance: float | None = None) -> Figure:
    """C6: K = ∞ trained by full-batch gradient descent on MSE against the closed form of its outputs,
    over the step t, one row per model: the largest |trained − closed form| over the test outputs
    (left, with the C6 ``tolerance`` and, dashed, the trained model at its last step against kernel
    regression, t → ∞) and the test accuracy of both (right, kernel regression dashed). Mean over
    seeds, bands over their range."""
    title = "C6: K = ∞ trained by full-batch GD on MSE against its closed form at every step"
    table = tables.validate("kernel_regression", table, "kernel-regression table")
    if table.empty:
        return note_figure(title, "No kernel-regression runs: nothing to draw.", out_pdf, out_png)
    summary = summaries.kernel_regression_summary(table)
    summary["group"] = tables.group_labels(summary)
    groups = sorted(summary["group"].unique())
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 3.4 * len(groups) + 0.8), layout="constrained",
                             squeeze=False)
    trained_style = {"color": STANDARD_COLOUR, "marker": "o", "linestyle": "none", "markersize": 6}
    closed_style = {"color": "0.2", "linestyle": "-", "linewidth": 1.4}
    for (left, right), group in zip(axes, groups):
        runs = summary[summary["group"] == group]
        finite, limit = runs[np.isfinite(runs["step"])], runs[np.isinf(runs["step"])]
        floor = np.finfo(np.float64).tiny
        sns.lineplot(finite.assign(difference=finite["difference"].clip(lower=floor)), x="step", y="difference",
                     ax=left, errorbar=seed_range, legend=False, **{**closed_style, "color": STANDARD_COLOUR}, marker="o")
        left.axhline(limit["difference"].mean(), color=STANDARD_COLOUR, linestyle="--", linewidth=1.2)
        if tolerance is not None:
            left.axhline(tolerance, color="0.4", linestyle=":", linewidth=1.2)
        left.set(xscale="log", yscale="log", xlabel="gradient-descent step t (log scale)",
                 ylabel="largest |trained − closed form|", title=f"{group}: deviation from the closed form")
        sns.lineplot(finite.assign(accuracy=100 * finite["closed_form_accuracy"]), x="step", y="accuracy", ax=right,
                     errorbar=seed_range, legend=False, **closed_style)
        right.scatter(finite["step"], 100 * finite["trained_accuracy"], zorder=4, **{k: v for k, v in trained_style.items()
                                                                                     if k not in ("linestyle", "markersize")})
        right.axhline(100 * limit["closed_form_accuracy"].mean(), color="0.2", linestyle="--", linewidth=1.2)
        right.set(xscale="log", xlabel="gradient-descent step t (log scale)", ylabel="test accuracy (%)",
                  title=f"{group}: n = {table.loc[table['model'] == runs['model'].iloc[0], 'train_size'].iloc[0]}, "
                        f"condition number {runs['condition_number'].max():.2g}")
    handles = [Line2D([], [], color=STANDARD_COLOUR, marker="o", label="trained vs closed form at t (left)"),
               Line2D([], [], color=STANDARD_COLOUR, linestyle="--", label="trained at the last step vs kernel regression"),
               Line2D([], [], **trained_style, label="trained linear model f_lin (right)"),
               Line2D([], [], **closed_style, label="closed form f₀ + Θ(x, X)Θ⁻¹(I − (I − ηΘ/n)^t)(Y − f₀)"),
               Line2D([], [], color="0.2", linestyle="--", label="kernel regression (t → ∞)")]
    if tolerance is not None:
        handles.append(Line2D([], [], color="0.4", linestyle=":", label=f"C6 tolerance {tolerance:g}"))
    return finish(fig, title, handles, out_pdf, out_png, legend_loc="outside lower center", legend_columns=2,
                  legend_title=f"float64; line: mean over seeds, {SEED_BAND}")


def _note_diverged_runs(ax: plt.Axes, diverged: pd.DataFrame) -> None:
    """Name the diverged runs of a panel in its corner (they have no final accuracy to draw)."""
    if not diverged.empty:
        names = [f"{'IL' if method == 'iterative_linearisation' else 'GN'} K={record.format_K(K)} seed {seed}"
                 for method, K, seed in diverged[["method", "K", "seed"]].itertuples(index=False)]
        ax.text(0.02, 0.02, "diverged: " + ", ".join(sorted(set(names))), transform=ax.transAxes, fontsize=8,
                color="0.25", bbox={"facecolor": "white", "edgecolor": "0.7"})
