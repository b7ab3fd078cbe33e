"""The kernel figures, drawn from the NTK table: C3 (how the trained kernel moves), S1 (kernel-target
alignment per K and depth) and S2 (class-specialisation matrices, the network against its deep linear
twin).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from itlin import summaries, tables
from itlin.plots.style import (LINEARISED_STYLE, SEED_BAND, K_colours, K_label, by_group, finish, group_palette,
                               line_handle, mean_curve, note_figure, styled, symlog_threshold, symlog_x)


NO_NTK_RUNS = "No period runs (switch_step unset) in the NTK table: nothing to draw."
NTK_STEP_LABEL = "training step (symlog scale)"
NTK_LEGEND_TITLE = f"kernel of the trained model f_lin (at θ_lin), probe set;\nline: mean over seeds, {SEED_BAND}"


@styled
def ntk_distance(ntk: pd.DataFrame, out_pdf: Path, out_png: Path) -> Figure:
    """C3: how the trained kernel moves, one row per model, colour = K: its relative change
    ‖Θ − Θ₀‖/‖Θ₀‖ (log scale; scale-aware), its centred distance from Θ₀ (blind to the constant mode),
    the Fort distance from Θ₀ (blind to scale) and the velocity d(Θ_t, Θ_{t+δ})/δ at a fixed interval δ
    (log scale), against step; mean over seeds with range bands.

    The trained kernel is that of f_lin, at θ_lin (``tables.TRAINED_POINT``): it never moves for K = ∞
    (black dashed, at zero). Snapshots are log-spaced, so the step axis is symlog. Deep linear twins
    (S2's control) are left out.
    """
    title = "C3: change of the empirical NTK during training, per K"
    rows = tables.nonlinear(_trained_kernel_rows(ntk, tuple(metric for metric, _, _ in NTK_CHANGE_PANELS)))
    if rows.empty:
        return note_figure(title, NO_NTK_RUNS, out_pdf, out_png)
    colours = K_colours(rows["K"].unique())
    groups = by_group(rows)
    fig, axes = plt.subplots(len(groups), len(NTK_CHANGE_PANELS), figsize=(4.2 * len(NTK_CHANGE_PANELS) + 2.2,
                             3.2 * len(groups) + 0.6), layout="constrained", squeeze=False)
    for row, (group, runs) in zip(axes, groups):
        for ax, (metric, ylabel, log_scale) in zip(row, NTK_CHANGE_PANELS):
            _K_curves(ax, runs[runs["metric"] == metric], colours)
            if log_scale:  # the values are never negative: no negative side
                ax.set_yscale("symlog", linthresh=symlog_threshold(runs.loc[runs["metric"] == metric, "value"]))
                ax.set_ylim(bottom=0)
            ax.set(title=f"{group}: {ylabel.split(' (')[0]}", xlabel=NTK_STEP_LABEL, ylabel=ylabel)
    handles = [line_handle(colours[K], K_label(K) + kernel_note(rows[rows["K"] == K]), K) for K in sorted(colours)]
    return finish(fig, title, handles, out_pdf, out_png, legend_title=NTK_LEGEND_TITLE)


NTK_CHANGE_PANELS: tuple[tuple[str, str, bool], ...] = (
    ("relative_change", "relative change ‖Θ−Θ₀‖/‖Θ₀‖ (symlog)", True),
    ("centred_distance", "centred distance from Θ₀", False),
    ("distance_from_init", "Fort distance from Θ₀ (scale-blind)", False),
    ("velocity", "velocity d(Θ_t, Θ_t+δ)/δ (symlog)", True),
)
"""The ``ntk_distance`` panels: metric, axis label, whether the value axis is symlog."""


@styled
def kernel_alignment(ntk: pd.DataFrame, out_pdf: Path, out_png: Path, *,
                     twins: Mapping[str, str] | None = None) -> Figure:
    """S1: centred (left) and uncentred (right) kernel-target alignment of the trained kernel against
    step: where the table has several K, one row per model (colour = K; K = ∞ black dashed); and a row
    comparing the models (depths) under K = 1, each deep linear twin (``twins``: twin -> model) dotted in its
    network's colour (S5). Mean over seeds with range bands; symlog step axis. The verdict rests on the
    centred alignment: the uncentred one of a ReLU kernel is dominated by its constant mode."""
    title = "S1: kernel-target alignment during training, per depth (and per K where measured)"
    every = _trained_kernel_rows(ntk, ALIGNMENTS)
    rows = tables.nonlinear(every)
    if rows.empty:
        return note_figure(title, NO_NTK_RUNS, out_pdf, out_png)
    colours = K_colours(rows["K"].unique())
    standard = rows[rows["K"] == 1]
    groups = by_group(rows) if len(colours) > 1 or standard.empty else []
    compare_models = not standard.empty and (standard["model"].nunique() > 1 or not groups)
    fig, axes = plt.subplots(len(groups) + compare_models, 2, figsize=(10.5, 3.2 * (len(groups) + compare_models) + 0.6),
                             layout="constrained", squeeze=False)
    names = {"alignment": "centred alignment (verdict)", "alignment_uncentred": "uncentred alignment"}
    for row, (group, runs) in zip(axes, groups):
        for ax, metric in zip(row, ALIGNMENTS):
            _K_curves(ax, runs[runs["metric"] == metric], colours)
            ax.set(title=f"{group}: {names[metric]}", xlabel=NTK_STEP_LABEL, ylabel=names[metric].split(" (")[0])
    handles = [line_handle(colours[K], K_label(K) + kernel_note(rows[rows["K"] == K]), K)
               for K in sorted(colours) if groups]
    if compare_models:
        palette = group_palette(standard.assign(group=tables.group_labels(standard)))
        twin_rows = tables.linear(every)
        twin_of = {model: twin for twin, model in (twins or {}).items()}
        for ax, metric in zip(axes[-1], ALIGNMENTS):
            for group, runs in by_group(standard[standard["metric"] == metric]):
                mean_curve(ax, runs, "value", {"color": palette[group], "linestyle": "-"})
                twin = twin_rows[(twin_rows["model"] == twin_of.get(runs["model"].iloc[0])) & (twin_rows["metric"] == metric)]
                if not twin.empty:
                    mean_curve(ax, twin, "value", {"color": palette[group], "linestyle": ":"})
            symlog_x(ax, symlog_threshold(standard["step"]))
            ax.set(title=f"by model, K = 1: {names[metric]}", xlabel=NTK_STEP_LABEL, ylabel=names[metric].split(" (")[0])
        for group, runs in by_group(standard):
            depth = runs["depth"].iloc[0]
            label = f"{group} (depth {depth})" if pd.notna(depth) else group
            note = "" if groups else kernel_note(runs)  # with one K, its runs' notes go on the models' lines
            handles.append(Line2D([], [], color=palette[group], linewidth=2.4, label=f"K = 1: {label}{note}"))
        if twin_of and not twin_rows.empty:
            handles.append(Line2D([], [], color="0.3", linestyle=":", linewidth=2.0,
                                  label="dotted: the deep linear twin (S5)"))
    return finish(fig, title, handles, out_pdf, out_png, legend_title=NTK_LEGEND_TITLE)


ALIGNMENTS = ("alignment", "alignment_uncentred")


@styled
def kernel_specialisation(ntk: pd.DataFrame, out_pdf: Path, out_png: Path, *,
                          twins: dict[str, str] | None = None) -> Figure:
    """S2: class-specialisation matrices of the trained kernel at the end of training: for each model
    with a deep linear twin (``twins``: twin label -> model), two rows (the per-head kernels of every
    parameter, and of the backbone below the readout) and three columns (the network at K = 1, its
    deep linear twin at K = 1, and the network at K = ∞, whose kernel is frozen: the reference). Entry
    [c, c'] is the centred alignment of output c's kernel with class c''s one-hot target column, mean
    over seeds; each title gives the specialisation contrast (mean diagonal minus mean off-diagonal).
    Models without a twin get the K = 1 and K = ∞ columns only; a table without K = ∞ runs (the companion's)
    has no K = ∞ column.

    Diverged runs have no kernel at the end of training: they are left out, and the panel names
    them. Degenerate kernels (NaN entries) are left out of the means, and the panel says so.
    """
    title = ("S2: class specialisation of the NTK at the end of training,\nnetwork vs deep linear twin (K = 1; K = ∞ frozen "
             "where measured);\nbackbone: every parameter below the readout")
    rows = _trained_kernel_rows(ntk, tables.SPECIALISATION_METRICS)
    rows = rows[(rows["K"] == 1) | np.isinf(rows["K"])]
    if rows.empty:
        return note_figure(title, "No runs with K = 1 or K = ∞ in the NTK table: nothing to compare.",
                           out_pdf, out_png)
    twin_of = {model: twin for twin, model in (twins or {}).items()}
    ended = rows[rows["status"] == "ok"]
    final = ended[ended["step"] == ended.groupby(tables.RUN_KEYS, dropna=False)["step"].transform("max")]
    matrices = final.groupby(["model", "metric", "K", "output_class", "target_class"])["value"].mean()
    contrasts = summaries.specialisation_contrast(matrices.reset_index(), ["model", "metric", "K"])
    steps = final.groupby(["model", "K"])["step"].max()
    limit = max(float(np.nan_to_num(matrices.abs().max())), 1e-6)
    models_ = sorted(set(tables.nonlinear(rows)["model"]))
    kernels = {"specialisation": "all parameters", "specialisation_backbone": "backbone"}
    # Seaborn draws the whole figure for each heatmap (to check its tick labels for overlap): the cells are
    # annotated once every heatmap is drawn, or each draw renders every annotation before it, and the layout
    # is constrained only then, or each draw lays out every axes (1 s a heatmap for the default's twelve).
    annotated = []
    frozen = bool(np.isinf(rows["K"]).any())
    fig, axes = plt.subplots(2 * len(models_), 2 + frozen, figsize=(4.4 * (2 + frozen), 3.6 * 2 * len(models_) + 0.8),
                             squeeze=False)
    for index, model in enumerate(models_):
        columns = [(model, 1.0, f"{model}, K = 1"), (twin_of.get(model), 1.0, f"deep linear twin {twin_of.get(model)}, K = 1"),
                   (model, math.inf, f"{model}, K = ∞ (frozen kernel)")][:2 + frozen]
        for offset, (metric, kernel) in enumerate(kernels.items()):
            for column, (ax, (label, K, name)) in enumerate(zip(axes[2 * index + offset], columns)):
                runs = rows[(rows["model"] == label) & (rows["K"] == K) & (rows["metric"] == metric)]
                diverged = tables.diverged_runs(runs)
                if label is None or (label, metric, K) not in matrices.index.droplevel([3, 4]):
                    ax.set_axis_off()
                    missing = ("no deep linear twin in the config" if label is None else
                               f"{name}: every run diverged before the end of training:\n{tables.describe_runs(diverged)}"
                               if not diverged.empty else f"no runs: {name}")
                    ax.text(0.5, 0.5, missing, transform=ax.transAxes, ha="center", va="center", color="0.3",
                            wrap=True, bbox={"facecolor": "white", "edgecolor": "0.7"})
                    continue
                matrix = matrices.loc[(label, metric, K)].unstack("target_class")
                sns.heatmap(matrix, ax=ax, cmap="vlag", vmin=-limit, vmax=limit, center=0, square=True,
                            cbar=column == len(columns) - 1, cbar_kws={"label": "centred alignment (shared scale)", "shrink": 0.8,
                                                                         "use_gridspec": False})
                if len(matrix) <= 10:
                    annotated.append((ax, matrix))
                contrast = contrasts[label, metric, K]
                text = (f"{name}\n{kernel}, step {int(steps[label, K])}, contrast "
                        + (f"{contrast:+.3f}" if np.isfinite(contrast) else "undefined"))
                at_end = final[(final["model"] == label) & (final["K"] == K) & (final["metric"] == metric)]
                degenerate = at_end[at_end["value"].isna()].groupby(tables.RUN_KEYS, dropna=False).ngroups
                if degenerate:
                    text += f"\n{degenerate} run(s): degenerate kernel (NaN), left out"
                if not diverged.empty:
                    text += f"\n{len(diverged)} run(s) diverged, left out: {tables.describe_runs(diverged)}"
                ax.set(title=text, xlabel="target class c' (one-hot column)", ylabel="output class c (its kernel)")
    for ax, matrix in annotated:
        _annotate_cells(ax, matrix)
    fig.set_layout_engine("constrained")
    return finish(fig, title, [], out_pdf, out_png)


def _annotate_cells(ax: plt.Axes, matrix: pd.DataFrame) -> None:
    """Each cell's value (two decimals) on a heatmap seaborn drew on ``ax``, dark on light cells and white
    on dark ones, as seaborn's own ``annot`` writes them."""
    mesh = ax.collections[0]
    mesh.update_scalarmappable()
    for (row, column), value, colour in zip(np.ndindex(matrix.shape), matrix.to_numpy().ravel(), mesh.get_facecolors()):
        if np.isfinite(value):
            ax.text(column + 0.5, row + 0.5, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color=".15" if sns.utils.relative_luminance(colour) > 0.408 else "w")


def _trained_kernel_rows(ntk: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Rows of ``metrics`` for the trained kernel (``tables.TRAINED_POINT``) of period runs, with a group label."""
    rows = summaries.period_runs(tables.validate("ntk", ntk, "ntk"))
    rows = rows[rows["metric"].isin(metrics) & (rows["point"] == tables.TRAINED_POINT)].copy()
    rows["group"] = tables.group_labels(rows)
    return rows


def kernel_note(runs: pd.DataFrame) -> str:
    """Legend suffix for the kernel rows of one K: how many of its runs diverged (drawn until their
    divergence) and how many have degenerate kernels (NaN values, not drawn); '' when neither."""
    total = runs.groupby(tables.RUN_KEYS, dropna=False).ngroups
    notes = []
    diverged = tables.diverged_runs(runs)
    if not diverged.empty:
        steps = ", ".join(str(step) for step in sorted(set(diverged["diverged_step"])))
        notes.append(f"{len(diverged)} of {total} runs diverged (drawn until step {steps})")
    degenerate = runs[runs["value"].isna()].groupby(tables.RUN_KEYS, dropna=False).ngroups
    if degenerate:
        notes.append(f"{degenerate} of {total} runs with degenerate kernels (NaN, not drawn)")
    return "".join(f", {note}" for note in notes)


def _K_curves(ax: plt.Axes, rows: pd.DataFrame, colours: dict[float, tuple]) -> None:
    """One mean-over-seeds curve of ``value`` against step per K (K = ∞ black dashed), symlog steps."""
    for K, runs in rows.groupby("K", sort=True):
        mean_curve(ax, runs, "value", LINEARISED_STYLE if math.isinf(K) else {"color": colours[K], "linestyle": "-"})
    symlog_x(ax, symlog_threshold(rows["step"]))
