"""The accuracy figures, drawn from the metrics table: C1 (training curves per K, final accuracy
against the number of feature updates), C2 (the network against its linearisation) and C4 (final
accuracy against the switch step).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from itlin import record, summaries, tables
from itlin.plots.style import (LINEARISED_STYLE, SEED_BAND, STANDARD_COLOUR, K_colours, K_label, by_group, finish,
                               group_palette, line_handle, mean_curve, note_figure, seed_range, styled, symlog_threshold,
                               symlog_x)


DIVERGED_HANDLE = Line2D(
    [], [], marker="x", linestyle="none", color="0.25", markersize=8, markeredgewidth=2,
    label="diverged run (x: its last finite accuracy)",
)
STEP_LABEL = "training step (optimiser updates)"
CURVES_LEGEND_TITLE = f"line: mean over seeds,\n{SEED_BAND}"
NO_PERIOD_RUNS = "No period runs (switch_step unset) with test metrics: nothing to draw."


@styled
def training_curves(metrics: pd.DataFrame, out_pdf: Path, out_png: Path) -> Figure:
    """C1: test accuracy against step, one panel per model (and dataset/variant), colour = K.

    Only period runs (no switch step). Accuracy is that of the linear evaluator for every K, the
    model being trained (for K = 1 it equals the network up to one step). Mean over seeds with a
    band over their range; K = ∞ black dashed; diverged runs end in an 'x'.
    """
    title = "C1: test accuracy during training, per re-linearisation period K"
    curves = _trained_rows(summaries.period_runs(tables.validate("metrics", metrics, "metrics")), "test")
    if curves.empty:
        return note_figure(title, NO_PERIOD_RUNS, out_pdf, out_png)
    finals = tables.final_metrics(curves)
    colours = K_colours(curves["K"].unique())
    groups = by_group(curves)
    fig, axes = _grid(len(groups))
    for ax, (group, rows) in zip(axes, groups):
        for K, runs in rows.groupby("K", sort=True):
            style = LINEARISED_STYLE if math.isinf(K) else {"color": colours[K], "linestyle": "-"}
            mean_curve(ax, runs, "accuracy_pct", style)
            _mark_diverged(ax, tables.final_metrics(runs), "step", style["color"])
        ax.set(title=group, xlabel=STEP_LABEL, ylabel="test accuracy (%)")
    handles = [line_handle(colours[K], K_label(K) + _diverged_note(finals[finals["K"] == K]), K)
               for K in sorted(colours)]
    handles += _diverged_handles(finals)
    return finish(fig, title, handles, out_pdf, out_png, legend_title=CURVES_LEGEND_TITLE)


@styled
def accuracy_vs_feature_updates(metrics: pd.DataFrame, out_pdf: Path, out_png: Path, *,
                                tolerance_pt: float | None = None) -> Figure:
    """C1: final test accuracy against the number of feature updates of each run, per model.

    Points are single seeds, lines the mean with bars over the seed range; the dotted line is K = 1
    and the shaded band the C1 tolerance (``tolerance_pt``, the config's ``claims.C1``) below it. The x
    axis is symlog so K = ∞ (0 updates) is shown.
    """
    title = "C1: final test accuracy vs number of feature updates"
    finals = _final_with_groups(summaries.period_runs(tables.validate("metrics", metrics, "metrics")))
    if finals.empty:
        return note_figure(title, NO_PERIOD_RUNS, out_pdf, out_png)
    palette = group_palette(finals)
    completed = finals[finals["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    handles = []
    for group, runs in completed.groupby("group", sort=True):
        colour = palette[group]
        _seed_points(ax, runs, "feature_updates", colour)
        _standard_training_line(ax, runs.loc[runs["K"] == 1, "accuracy_pct"], colour, tolerance_pt)
        handles.append(Line2D([], [], color=colour, marker="o", label=f"{group}: mean, bars: range over seeds"))
    for group, runs in finals.groupby("group", sort=True):
        _mark_diverged(ax, runs, "feature_updates", palette[group])
    symlog_x(ax, linthresh=1.0)
    ax.set(xlabel="feature updates per run (re-linearisations, symlog scale)", ylabel="final test accuracy (%)")
    _label_K_on_top(ax, completed)
    handles.append(Line2D([], [], color="0.3", linestyle=":", label="K = 1 (standard training), mean"))
    handles += _tolerance_handles(tolerance_pt, "C1")
    return finish(fig, title, handles + _diverged_handles(finals), out_pdf, out_png)


@styled
def network_vs_linearised(metrics: pd.DataFrame, out_pdf: Path, out_png: Path) -> Figure:
    """C2: train and test accuracy over training of the network (K = 1, solid) and its linearisation
    (K = ∞, dashed), one row per model, columns train / test; mean over seeds with range bands."""
    title = "C2: network (K = 1) vs its linearisation at init (K = ∞)"
    runs = summaries.period_runs(tables.validate("metrics", metrics, "metrics"))
    runs = runs[(runs["K"] == 1) | np.isinf(runs["K"])]
    if runs.empty:
        return note_figure(title, "No runs with K = 1 or K = ∞ (period runs): nothing to compare.", out_pdf, out_png)
    styles = {1.0: {"color": STANDARD_COLOUR, "linestyle": "-"}, math.inf: LINEARISED_STYLE}
    labels = {1.0: "K = 1 (standard network)", math.inf: "K = ∞ (linearised)"}
    groups = by_group(runs)
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 3.3 * len(groups) + 0.6), layout="constrained",
                             squeeze=False)
    for row, (group, rows) in zip(axes, groups):
        for ax, split in zip(row, ("train", "test")):
            curves = _trained_rows(rows, split)
            finals = tables.final_metrics(curves, split=split)
            for K, style in styles.items():
                if (curves["K"] == K).any():
                    mean_curve(ax, curves[curves["K"] == K], "accuracy_pct", style)
                    _mark_diverged(ax, finals[finals["K"] == K], "step", style["color"])
            _note_missing_K(ax, curves, labels)
            _annotate_gap(ax, finals)
            ax.set(title=f"{group}: {split}", xlabel=STEP_LABEL, ylabel=f"{split} accuracy (%)")
    finals = tables.final_metrics(runs)
    handles = [Line2D([], [], **styles[K], label=label + _diverged_note(finals[finals["K"] == K]))
               for K, label in labels.items()]
    handles += _diverged_handles(finals)
    return finish(fig, title, handles, out_pdf, out_png, legend_loc="outside lower center",
                  legend_columns=len(handles), legend_title=CURVES_LEGEND_TITLE)


@styled
def linearise_after_t(metrics: pd.DataFrame, out_pdf: Path, out_png: Path, *,
                      tolerance_pt: float | None = None) -> Figure:
    """C4: final test accuracy against the switch step t (standard training until t, then the linear
    model at θ_t), per model; K = ∞ is drawn at t = 0 and K = 1 at t = T (training length) as
    reference points, K = 1 also as a dotted line with the C4 tolerance (``tolerance_pt``, the config's
    ``claims.C4``) shaded below it. Points are seeds, lines the mean with bars over the seed range."""
    title = "C4: final test accuracy vs switch step t (standard until t, then linearised)"
    finals = _final_with_groups(tables.validate("metrics", metrics, "metrics"))
    switched = finals[finals["switch_step"].notna()].copy()
    if switched.empty:
        return note_figure(title, "No switch runs (switch_step set) in the metrics: nothing to draw.",
                           out_pdf, out_png)
    switched["t"] = switched["switch_step"].astype("float64")
    period = finals[finals["switch_step"].isna() & finals["group"].isin(switched["group"])]
    training_length = switched.groupby("group")["step"].max()
    linearised = period[np.isinf(period["K"])].assign(t=0.0)
    standard = period[period["K"] == 1].assign(t=lambda runs: runs["group"].map(training_length).astype("float64"))
    points = pd.concat([switched, linearised, standard], ignore_index=True)
    completed = points[points["status"] == "ok"]
    palette = group_palette(points)
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    handles = []
    for group, runs in completed.groupby("group", sort=True):
        colour = palette[group]
        _seed_points(ax, runs, "t", colour)
        for references, marker in ((linearised, "s"), (standard, "D")):
            mean = references[(references["group"] == group) & (references["status"] == "ok")]
            if not mean.empty:
                ax.scatter(mean["t"].iloc[0], mean["accuracy_pct"].mean(), marker=marker, s=90,
                           facecolors="none", edgecolors=colour, linewidths=2, zorder=4)
        _standard_training_line(
            ax, standard.loc[(standard["group"] == group) & (standard["status"] == "ok"), "accuracy_pct"], colour,
            tolerance_pt)
        handles.append(Line2D([], [], color=colour, marker="o", label=f"{group}: mean, bars: range over seeds"))
    handles += _tolerance_handles(tolerance_pt, "C4")
    for group, runs in points.groupby("group", sort=True):
        _mark_diverged(ax, runs, "t", palette[group])
    symlog_x(ax, symlog_threshold(points["t"]))
    ax.set(xlabel="switch step t (standard-training steps before linearising, symlog scale)",
           ylabel="final test accuracy (%)")
    handles += [
        Line2D([], [], marker="s", linestyle="none", markerfacecolor="none", markeredgecolor="0.3", markersize=9,
               label="t = 0: K = ∞ (linearised at init)"),
        Line2D([], [], marker="D", linestyle=":", markerfacecolor="none", markeredgecolor="0.3", color="0.3",
               markersize=8, label="t = T: K = 1 (standard training)"),
    ]
    return finish(fig, title, handles + _diverged_handles(points), out_pdf, out_png)


def _trained_rows(metrics: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of ``split`` by the trained (linear) evaluator, with accuracy in percent and a group label."""
    rows = metrics[(metrics["split"] == split) & (metrics["evaluator"] == tables.TRAINED_EVALUATOR)].copy()
    rows["accuracy_pct"] = 100 * rows["accuracy"]
    rows["group"] = tables.group_labels(rows)
    return rows


def _final_with_groups(metrics: pd.DataFrame) -> pd.DataFrame:
    """Final test metrics per run with percent accuracies and a group label."""
    finals = tables.final_metrics(metrics)
    finals["accuracy_pct"] = 100 * finals["accuracy"]
    finals["last_accuracy_pct"] = 100 * finals["last_accuracy"]
    finals["group"] = tables.group_labels(finals)
    return finals


def _standard_training_line(ax: plt.Axes, accuracies: pd.Series, colour, tolerance_pt: float | None) -> None:
    """A group's mean K = 1 accuracy as a dotted line, over the band ``tolerance_pt`` below it (none without runs)."""
    if accuracies.empty:
        return
    reference = accuracies.mean()
    ax.axhline(reference, color=colour, linestyle=":", linewidth=1.2)
    if tolerance_pt is not None:
        ax.axhspan(reference - tolerance_pt, reference, color=colour, alpha=0.1, linewidth=0)


def _tolerance_handles(tolerance_pt: float | None, claim: str) -> list[Patch]:
    """The legend entry of the band drawn by ``_standard_training_line`` (none without a tolerance)."""
    if tolerance_pt is None:
        return []
    return [Patch(color="0.3", alpha=0.15, label=f"within {tolerance_pt:g} pt of K = 1 ({claim} tolerance)")]


def _seed_points(ax: plt.Axes, runs: pd.DataFrame, x: str, colour: tuple) -> None:
    """Each seed's final accuracy as a faint point, and the mean per x value with bars over the
    seed range, joined by a line."""
    ax.scatter(runs[x], runs["accuracy_pct"], color=colour, alpha=0.4, s=22, linewidths=0)
    sns.lineplot(runs, x=x, y="accuracy_pct", ax=ax, color=colour, marker="o", markersize=7, errorbar=seed_range,
                 err_style="bars", legend=False, err_kws={"capsize": 3})


def _mark_diverged(ax: plt.Axes, finals: pd.DataFrame, x: str, colour) -> None:
    """Draw an 'x' at the last step and last finite accuracy of each diverged run in ``finals``."""
    diverged = finals[finals["status"] == "diverged"]
    if diverged.empty:
        return
    y = 100 * diverged["last_accuracy"]
    ax.scatter(diverged[x], y, marker="x", s=80, linewidths=2.2, color=colour, zorder=6)
    for x_value, y_value in zip(diverged[x], y):
        ax.annotate("diverged", (x_value, y_value), xytext=(0, -15), textcoords="offset points", ha="center", fontsize=8,
                    color=colour)


def _diverged_note(finals: pd.DataFrame) -> str:
    """', 1 of 3 runs diverged' for a legend label, or '' when none diverged."""
    diverged = int((finals["status"] == "diverged").sum())
    return f", {diverged} of {len(finals)} runs diverged" if diverged else ""


def _diverged_handles(finals: pd.DataFrame) -> list[Line2D]:
    """The legend entry explaining the diverged marker, when any run diverged."""
    return [DIVERGED_HANDLE] if (finals["status"] == "diverged").any() else []


def _note_missing_K(ax: plt.Axes, curves: pd.DataFrame, labels: dict[float, str]) -> None:
    """Write in the panel which of the compared runs are absent."""
    missing = [label for K, label in labels.items() if not (curves["K"] == K).any()]
    if missing:
        ax.text(0.5, 0.5, "no runs: " + ", ".join(missing), transform=ax.transAxes, ha="center", va="center",
                color="0.3", bbox={"facecolor": "white", "edgecolor": "0.7"})


def _annotate_gap(ax: plt.Axes, finals: pd.DataFrame) -> None:
    """Write the final mean accuracy gap K = 1 minus K = ∞ in the panel's lower right corner."""
    completed = finals[finals["status"] == "ok"]
    standard = completed.loc[completed["K"] == 1, "accuracy"].mean()
    linearised = completed.loc[np.isinf(completed["K"]), "accuracy"].mean()
    if np.isfinite(standard) and np.isfinite(linearised):
        ax.text(0.97, 0.05, f"final gap K=1 − K=∞: {100 * (standard - linearised):+.1f} pt", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=9, bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9})


def _label_K_on_top(ax: plt.Axes, completed: pd.DataFrame) -> None:
    """Mark the K of each feature-update count on a top axis, when every group maps K to the same count."""
    updates_per_K = completed.groupby("K")["feature_updates"].unique()
    if updates_per_K.empty or updates_per_K.map(len).max() != 1:
        return
    top = ax.twiny()
    top.set_xscale(ax.get_xscale(), **({"linthresh": 1} if ax.get_xscale() == "symlog" else {}))
    top.set_xlim(ax.get_xlim())
    top.set_xlabel("re-linearisation period K of these runs", fontsize=9)
    top.set_xticks([values[0] for values in updates_per_K], [f"K={record.format_K(K)}" for K in updates_per_K.index])
    top.xaxis.set_minor_locator(NullLocator())
    top.tick_params(axis="x", labelsize=8, length=3)
    top.grid(False)


def _grid(panels: int) -> tuple[Figure, list[plt.Axes]]:
    """A figure with one axes per panel: one row up to three panels, else a near-square grid."""
    columns = panels if panels <= 3 else math.ceil(math.sqrt(panels))
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns + 2.2, 3.4 * rows), layout="constrained",
                             squeeze=False, sharey=True)
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.remove()
    return fig, flat[:panels]
