"""Figures testing the paper's claims, drawn from the tidy metrics table (see ``itlin.tables``).

Every figure function has the signature ``(metrics, out_pdf, out_png) -> Figure`` (``FIGURES``), or
``(table, out_pdf, out_png)`` for the figures drawn from another table (``NTK_FIGURES``: the NTK
table; ``SOLVER_FIGURES``: the damping and kernel-regression tables; ``READERS`` names each one): it
writes the figure as PDF and PNG and returns the (closed) matplotlib figure so callers can inspect it.
Seeds are aggregated as a mean with a band (or bars) spanning the range over seeds (``seed_range``).
Every run is evaluated with ``tables.TRAINED_EVALUATOR`` (the linear model f_lin, which is what
is trained; for K = 1 it equals the network up to one optimiser step). No JAX is imported here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after selecting the Agg backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from itlin import record, summaries, tables  # noqa: E402

PNG_DPI = 150
LINEARISED_STYLE = {"color": "black", "linestyle": "--"}
STANDARD_COLOUR = sns.color_palette("colorblind")[0]
DIVERGED_HANDLE = Line2D(
    [], [], marker="x", linestyle="none", color="0.25", markersize=8, markeredgewidth=2,
    label="diverged run (x: its last finite accuracy)",
)
STEP_LABEL = "training step (optimiser updates)"
SEED_BAND = "band: range over seeds (min to max)"
CURVES_LEGEND_TITLE = f"line: mean over seeds,\n{SEED_BAND}"
NO_PERIOD_RUNS = "No period runs (switch_step unset) with test metrics: nothing to draw."
NO_NTK_RUNS = "No period runs (switch_step unset) in the NTK table: nothing to draw."
NTK_STEP_LABEL = "training step (symlog scale)"
NTK_LEGEND_TITLE = f"kernel of the trained model f_lin (at θ_lin), probe set;\nline: mean over seeds, {SEED_BAND}"


def seed_range(values: np.ndarray) -> tuple[float, float]:
    """Range over seeds (min, max), the seaborn ``errorbar`` of every figure.

    Runs have two or three seeds, too few for a confidence interval to mean much: a 95% Student-t
    interval is ±6.4 times the seed spread with two seeds and runs far outside [0, 100] % accuracy. The range
    shows every seed, reads at a glance and stays within the values drawn. One seed gives zero width.
    """
    values = np.asarray(values, dtype=float)
    return float(values.min()), float(values.max())


def _styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw the figure under a white-grid seaborn style, without changing the global style."""
    @functools.wraps(draw)
    def styled(*args, **kwargs) -> Figure:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
            return draw(*args, **kwargs)

    return styled


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


@_styled
def training_curves(metrics: pd.DataFrame, out_pdf: Path, out_png: Path) -> Figure:
    """C1: test accuracy against step, one panel per model (and dataset/variant), colour = K.

    Only period runs (no switch step). Accuracy is that of the linear evaluator for every K, the
    model being trained (for K = 1 it equals the network up to one step). Mean over seeds with a
    band over their range; K = ∞ black dashed; diverged runs end in an 'x'.
    """
    title = "C1: test accuracy during training, per re-linearisation period K"
    curves = _trained_rows(_period_runs(tables.validate(metrics, "metrics")), "test")
    if curves.empty:
        return _note_figure(title, NO_PERIOD_RUNS, out_pdf, out_png)
    finals = tables.final_metrics(curves)
    colours = K_colours(curves["K"].unique())
    groups = _groups(curves)
    fig, axes = _grid(len(groups))
    for ax, (group, rows) in zip(axes, groups):
        for K, runs in rows.groupby("K", sort=True):
            style = LINEARISED_STYLE if math.isinf(K) else {"color": colours[K], "linestyle": "-"}
            _mean_curve(ax, runs, "accuracy_pct", style)
            _mark_diverged(ax, tables.final_metrics(runs), "step", style["color"])
        ax.set(title=group, xlabel=STEP_LABEL, ylabel="test accuracy (%)")
    handles = [_line_handle(colours[K], K_label(K) + _diverged_note(finals[finals["K"] == K]), K)
               for K in sorted(colours)]
    handles += _diverged_handles(finals)
    return _finish(fig, title, handles, out_pdf, out_png, legend_title=CURVES_LEGEND_TITLE)


@_styled
def accuracy_vs_feature_updates(metrics: pd.DataFrame, out_pdf: Path, out_png: Path, *,
                                tolerance_pt: float | None = None) -> Figure:
    """C1: final test accuracy against the number of feature updates of each run, per model.

    Points are single seeds, lines the mean with bars over the seed range; the dotted line is K = 1
    and the shaded band the C1 tolerance (``tolerance_pt``, the config's ``claims.C1``) below it. The x
    axis is symlog so K = ∞ (0 updates) is shown.
    """
    title = "C1: final test accuracy vs number of feature updates"
    finals = _final_with_groups(_period_runs(tables.validate(metrics, "metrics")))
    if finals.empty:
        return _note_figure(title, NO_PERIOD_RUNS, out_pdf, out_png)
    palette = _group_palette(finals)
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
    _symlog_x(ax, linthresh=1.0)
    ax.set(xlabel="feature updates per run (re-linearisations, symlog scale)", ylabel="final test accuracy (%)")
    _label_K_on_top(ax, completed)
    handles.append(Line2D([], [], color="0.3", linestyle=":", label="K = 1 (standard training), mean"))
    handles += _tolerance_handles(tolerance_pt, "C1")
    return _finish(fig, title, handles + _diverged_handles(finals), out_pdf, out_png)


@_styled
def network_vs_linearised(metrics: pd.DataFrame, out_pdf: Path, out_png: Path) -> Figure:
    """C2: train and test accuracy over training of the network (K = 1, solid) and its linearisation
    (K = ∞, dashed), one row per model, columns train / test; mean over seeds with range bands."""
    title = "C2: network (K = 1) vs its linearisation at init (K = ∞)"
    runs = _period_runs(tables.validate(metrics, "metrics"))
    runs = runs[(runs["K"] == 1) | np.isinf(runs["K"])]
    if runs.empty:
        return _note_figure(title, "No runs with K = 1 or K = ∞ (period runs): nothing to compare.", out_pdf, out_png)
    styles = {1.0: {"color": STANDARD_COLOUR, "linestyle": "-"}, math.inf: LINEARISED_STYLE}
    labels = {1.0: "K = 1 (standard network)", math.inf: "K = ∞ (linearised)"}
    groups = _groups(runs)
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 3.3 * len(groups) + 0.6), layout="constrained",
                             squeeze=False)
    for row, (group, rows) in zip(axes, groups):
        for ax, split in zip(row, ("train", "test")):
            curves = _trained_rows(rows, split)
            finals = tables.final_metrics(curves, split=split)
            for K, style in styles.items():
                if (curves["K"] == K).any():
                    _mean_curve(ax, curves[curves["K"] == K], "accuracy_pct", style)
                    _mark_diverged(ax, finals[finals["K"] == K], "step", style["color"])
            _note_missing_K(ax, curves, labels)
            _annotate_gap(ax, finals)
            ax.set(title=f"{group}: {split}", xlabel=STEP_LABEL, ylabel=f"{split} accuracy (%)")
    finals = tables.final_metrics(runs)
    handles = [Line2D([], [], **styles[K], label=label + _diverged_note(finals[finals["K"] == K]))
               for K, label in labels.items()]
    handles += _diverged_handles(finals)
    return _finish(fig, title, handles, out_pdf, out_png, legend_loc="outside lower center",
                   legend_columns=len(handles), legend_title=CURVES_LEGEND_TITLE)


@_styled
def linearise_after_t(metrics: pd.DataFrame, out_pdf: Path, out_png: Path, *,
                      tolerance_pt: float | None = None) -> Figure:
    """C4: final test accuracy against the switch step t (standard training until t, then the linear
    model at θ_t), per model; K = ∞ is drawn at t = 0 and K = 1 at t = T (training length) as
    reference points, K = 1 also as a dotted line with the C4 tolerance (``tolerance_pt``, the config's
    ``claims.C4``) shaded below it. Points are seeds, lines the mean with bars over the seed range."""
    title = "C4: final test accuracy vs switch step t (standard until t, then linearised)"
    finals = _final_with_groups(tables.validate(metrics, "metrics"))
    switched = finals[finals["switch_step"].notna()].copy()
    if switched.empty:
        return _note_figure(title, "No switch runs (switch_step set) in the metrics: nothing to draw.",
                            out_pdf, out_png)
    switched["t"] = switched["switch_step"].astype("float64")
    period = finals[finals["switch_step"].isna() & finals["group"].isin(switched["group"])]
    training_length = switched.groupby("group")["step"].max()
    linearised = period[np.isinf(period["K"])].assign(t=0.0)
    standard = period[period["K"] == 1].assign(t=lambda runs: runs["group"].map(training_length).astype("float64"))
    points = pd.concat([switched, linearised, standard], ignore_index=True)
    completed = points[points["status"] == "ok"]
    palette = _group_palette(points)
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
    _symlog_x(ax, _linthresh(points["t"]))
    ax.set(xlabel="switch step t (standard-training steps before linearising, symlog scale)",
           ylabel="final test accuracy (%)")
    handles += [
        Line2D([], [], marker="s", linestyle="none", markerfacecolor="none", markeredgecolor="0.3", markersize=9,
               label="t = 0: K = ∞ (linearised at init)"),
        Line2D([], [], marker="D", linestyle=":", markerfacecolor="none", markeredgecolor="0.3", color="0.3",
               markersize=8, label="t = T: K = 1 (standard training)"),
    ]
    return _finish(fig, title, handles + _diverged_handles(points), out_pdf, out_png)


@_styled
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
        return _note_figure(title, NO_NTK_RUNS, out_pdf, out_png)
    colours = K_colours(rows["K"].unique())
    groups = _groups(rows)
    fig, axes = plt.subplots(len(groups), len(NTK_CHANGE_PANELS), figsize=(4.2 * len(NTK_CHANGE_PANELS) + 2.2,
                             3.2 * len(groups) + 0.6), layout="constrained", squeeze=False)
    for row, (group, runs) in zip(axes, groups):
        for ax, (metric, ylabel, log_scale) in zip(row, NTK_CHANGE_PANELS):
            _K_curves(ax, runs[runs["metric"] == metric], colours)
            if log_scale:  # the values are never negative: no negative side
                ax.set_yscale("symlog", linthresh=_linthresh(runs.loc[runs["metric"] == metric, "value"]))
                ax.set_ylim(bottom=0)
            ax.set(title=f"{group}: {ylabel.split(' (')[0]}", xlabel=NTK_STEP_LABEL, ylabel=ylabel)
    handles = [_line_handle(colours[K], K_label(K) + _kernel_note(rows[rows["K"] == K]), K) for K in sorted(colours)]
    return _finish(fig, title, handles, out_pdf, out_png, legend_title=NTK_LEGEND_TITLE)


NTK_CHANGE_PANELS: tuple[tuple[str, str, bool], ...] = (
    ("relative_change", "relative change ‖Θ−Θ₀‖/‖Θ₀‖ (symlog)", True),
    ("centred_distance", "centred distance from Θ₀", False),
    ("distance_from_init", "Fort distance from Θ₀ (scale-blind)", False),
    ("velocity", "velocity d(Θ_t, Θ_t+δ)/δ (symlog)", True),
)
"""The ``ntk_distance`` panels: metric, axis label, whether the value axis is symlog."""


@_styled
def kernel_alignment(ntk: pd.DataFrame, out_pdf: Path, out_png: Path) -> Figure:
    """S1: centred (left) and uncentred (right) kernel-target alignment of the trained kernel against
    step, one row per model (colour = K), plus a row comparing the models (depths) under K = 1 when
    there are several. Mean over seeds with range bands; K = ∞ black dashed; symlog step axis. The
    verdict rests on the centred alignment: the uncentred one of a ReLU kernel is dominated by its
    constant mode. Deep linear twins are left out."""
    title = "S1: kernel-target alignment during training, per K and depth"
    rows = tables.nonlinear(_trained_kernel_rows(ntk, ALIGNMENTS))
    if rows.empty:
        return _note_figure(title, NO_NTK_RUNS, out_pdf, out_png)
    colours = K_colours(rows["K"].unique())
    groups = _groups(rows)
    standard = rows[rows["K"] == 1]
    compare_models = standard["model"].nunique() > 1
    fig, axes = plt.subplots(len(groups) + compare_models, 2, figsize=(10.5, 3.2 * (len(groups) + compare_models) + 0.6),
                             layout="constrained", squeeze=False)
    names = {"alignment": "centred alignment (verdict)", "alignment_uncentred": "uncentred alignment"}
    for row, (group, runs) in zip(axes, groups):
        for ax, metric in zip(row, ALIGNMENTS):
            _K_curves(ax, runs[runs["metric"] == metric], colours)
            ax.set(title=f"{group}: {names[metric]}", xlabel=NTK_STEP_LABEL, ylabel=names[metric].split(" (")[0])
    handles = [_line_handle(colours[K], K_label(K) + _kernel_note(rows[rows["K"] == K]), K) for K in sorted(colours)]
    if compare_models:
        palette = _group_palette(standard.assign(group=tables.group_labels(standard)))
        for ax, metric in zip(axes[-1], ALIGNMENTS):
            for group, runs in _groups(standard[standard["metric"] == metric]):
                _mean_curve(ax, runs, "value", {"color": palette[group], "linestyle": "-"})
            _symlog_x(ax, _linthresh(standard["step"]))
            ax.set(title=f"K = 1 (standard), by model: {names[metric]}", xlabel=NTK_STEP_LABEL,
                   ylabel=names[metric].split(" (")[0])
        for group, runs in _groups(standard):
            depth = runs["depth"].iloc[0]
            label = f"{group} (depth {depth})" if pd.notna(depth) else group
            handles.append(Line2D([], [], color=palette[group], linewidth=2.4, label=f"K = 1: {label}"))
    return _finish(fig, title, handles, out_pdf, out_png, legend_title=NTK_LEGEND_TITLE)


ALIGNMENTS = ("alignment", "alignment_uncentred")


@_styled
def kernel_specialisation(ntk: pd.DataFrame, out_pdf: Path, out_png: Path, *,
                          twins: dict[str, str] | None = None) -> Figure:
    """S2: class-specialisation matrices of the trained kernel at the end of training: for each model
    with a deep linear twin (``twins``: twin label -> model), two rows (the per-head kernels of every
    parameter, and of the backbone below the readout) and three columns (the network at K = 1, its
    deep linear twin at K = 1, and the network at K = ∞, whose kernel is frozen: the reference). Entry
    [c, c'] is the centred alignment of output c's kernel with class c''s one-hot target column, mean
    over seeds; each title gives the specialisation contrast (mean diagonal minus mean off-diagonal).
    Models without a twin get the K = 1 and K = ∞ columns only.

    Diverged runs have no kernel at the end of training: they are left out, and the panel names
    them. Degenerate kernels (NaN entries) are left out of the means, and the panel says so.
    """
    title = ("S2: class specialisation of the NTK at the end of training,\nnetwork vs deep linear twin (K = 1), K = ∞ frozen;"
             " backbone: every parameter below the readout")
    rows = _trained_kernel_rows(ntk, tables.SPECIALISATION_METRICS)
    rows = rows[(rows["K"] == 1) | np.isinf(rows["K"])]
    if rows.empty:
        return _note_figure(title, "No runs with K = 1 or K = ∞ in the NTK table: nothing to compare.",
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
    fig, axes = plt.subplots(2 * len(models_), 3, figsize=(13, 3.6 * 2 * len(models_) + 0.8), layout="constrained",
                             squeeze=False)
    for index, model in enumerate(models_):
        columns = [(model, 1.0, f"{model}, K = 1"), (twin_of.get(model), 1.0, f"deep linear twin {twin_of.get(model)}, K = 1"),
                   (model, math.inf, f"{model}, K = ∞ (frozen kernel)")]
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
                            annot=len(matrix) <= 10, fmt=".2f", annot_kws={"fontsize": 6}, cbar=column == 2,
                            cbar_kws={"label": "centred alignment (shared scale)", "shrink": 0.8})
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
    return _finish(fig, title, [], out_pdf, out_png)


FIGURES: dict[str, Callable[[pd.DataFrame, Path, Path], Figure]] = {
    "training_curves": training_curves,
    "accuracy_vs_feature_updates": accuracy_vs_feature_updates,
    "network_vs_linearised": network_vs_linearised,
    "linearise_after_t": linearise_after_t,
}
"""Figure name -> function ``(metrics, out_pdf, out_png)`` drawing it."""

NTK_FIGURES: dict[str, Callable[[pd.DataFrame, Path, Path], Figure]] = {
    "ntk_distance": ntk_distance,
    "kernel_alignment": kernel_alignment,
    "kernel_specialisation": kernel_specialisation,
}
"""Figure name -> function ``(ntk, out_pdf, out_png)`` drawing it from the NTK table
(``tables.read_ntk``, schema ``tables.NTK_COLUMNS``)."""


METHOD_STYLES = {"iterative_linearisation": {"color": sns.color_palette("colorblind")[0], "marker": "o"},
                 "gauss_newton": {"color": sns.color_palette("colorblind")[3], "marker": "s"}}
METHOD_LABELS = {"iterative_linearisation": "iterative linearisation, K = 1/(ηλ)",
                 "gauss_newton": "damped Gauss-Newton, λ (T/K rounds)"}
EVALUATOR_STYLES = {"linear": {"linestyle": "-", "linewidth": 1.8}, "network": {"linestyle": ":", "linewidth": 1.2}}


@_styled
def gauss_newton_damping(table: pd.DataFrame, out_pdf: Path, out_png: Path, *, tolerance_pt: float | None = None) -> Figure:
    """C5: over the damping λ, iterative linearisation at K = 1/(ηλ) and damped Gauss-Newton at λ (the same
    time ηT), one column per model and loss: final test accuracy (top), relative change of the kernel
    from θ₀ (middle) and the accuracy difference of the two (bottom), with the C5 tolerance
    (``tolerance_pt``, the config's ``claims.C5``) shaded around zero. Solid: the trained linear model
    f_lin and its kernel at θ_lin; dotted: the network at its final θ. Mean over seeds, bands over their
    range (for the difference, of the seeds' paired differences); the top axis gives K."""
    title = "C5: iterative linearisation against damped Gauss-Newton at λ = 1/(ηK), the same time ηT"
    table = tables.validate_gauss_newton(table, "C5 table")
    if table.empty:
        return _note_figure(title, "No C5 runs: nothing to draw.", out_pdf, out_png)
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
    return _finish(fig, title, handles, out_pdf, out_png, legend_title=f"mean over seeds,\n{SEED_BAND}")


@_styled
def kernel_regression(table: pd.DataFrame, out_pdf: Path, out_png: Path, *, tolerance: float | None = None) -> Figure:
    """C6: K = ∞ trained by full-batch gradient descent on MSE against the closed form of its outputs,
    over the step t, one row per model: the largest |trained − closed form| over the test outputs
    (left, with the C6 ``tolerance`` and, dashed, the trained model at its last step against kernel
    regression, t → ∞) and the test accuracy of both (right, kernel regression dashed). Mean over
    seeds, bands over their range."""
    title = "C6: K = ∞ trained by full-batch GD on MSE against its closed form at every step"
    table = tables.validate_kernel_regression(table, "kernel-regression table")
    if table.empty:
        return _note_figure(title, "No kernel-regression runs: nothing to draw.", out_pdf, out_png)
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
    return _finish(fig, title, handles, out_pdf, out_png, legend_loc="outside lower center", legend_columns=2,
                   legend_title=f"float64; line: mean over seeds, {SEED_BAND}")


def _note_diverged_runs(ax: plt.Axes, diverged: pd.DataFrame) -> None:
    """Name the diverged runs of a panel in its corner (they have no final accuracy to draw)."""
    if not diverged.empty:
        names = [f"{'IL' if method == 'iterative_linearisation' else 'GN'} K={record.format_K(K)} seed {seed}"
                 for method, K, seed in diverged[["method", "K", "seed"]].itertuples(index=False)]
        ax.text(0.02, 0.02, "diverged: " + ", ".join(sorted(set(names))), transform=ax.transAxes, fontsize=8,
                color="0.25", bbox={"facecolor": "white", "edgecolor": "0.7"})


SOLVER_FIGURES: dict[str, Callable[[pd.DataFrame, Path, Path], Figure]] = {
    "gauss_newton_damping": gauss_newton_damping,
    "kernel_regression": kernel_regression,
}
"""Figure name -> function drawing it from its own table: ``gauss_newton_damping`` from the C5 table
(``tables.read_gauss_newton``), ``kernel_regression`` from the kernel-regression table."""

READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    **{name: tables.read for name in FIGURES},
    **{name: tables.read_ntk for name in NTK_FIGURES},
    "gauss_newton_damping": tables.read_gauss_newton,
    "kernel_regression": tables.read_kernel_regression,
}
"""Figure name -> the reader (and validator) of the table it is drawn from."""

ALL_FIGURES = FIGURES | NTK_FIGURES | SOLVER_FIGURES
"""Every figure the pipeline can draw, by name."""


def _trained_kernel_rows(ntk: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Rows of ``metrics`` for the trained kernel (``tables.TRAINED_POINT``) of period runs, with a group label."""
    rows = _period_runs(tables.validate_ntk(ntk, "ntk"))
    rows = rows[rows["metric"].isin(metrics) & (rows["point"] == tables.TRAINED_POINT)].copy()
    rows["group"] = tables.group_labels(rows)
    return rows


def _kernel_note(runs: pd.DataFrame) -> str:
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
        _mean_curve(ax, runs, "value", LINEARISED_STYLE if math.isinf(K) else {"color": colours[K], "linestyle": "-"})
    _symlog_x(ax, _linthresh(rows["step"]))


def _linthresh(x: pd.Series) -> float:
    """End of the linear part of a symlog axis over ``x``: its smallest positive value (the first
    snapshot or switch step after 0), 1 when there is none, so that 0 and the dense early values are
    both visible."""
    positive = x[x > 0]
    return float(positive.min()) if not positive.empty else 1.0


def _symlog_x(ax: plt.Axes, linthresh: float) -> None:
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


def _period_runs(metrics: pd.DataFrame) -> pd.DataFrame:
    """Runs that re-linearise with a fixed period K (not switch runs)."""
    return metrics[metrics["switch_step"].isna()]


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


def _groups(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per model/dataset/variant group, sorted by label."""
    rows = rows.assign(group=tables.group_labels(rows))
    return list(rows.groupby("group", sort=True))


def _group_palette(rows: pd.DataFrame) -> dict[str, tuple]:
    """Categorical colour per group label."""
    groups = sorted(rows["group"].unique())
    return dict(zip(groups, sns.color_palette("colorblind", len(groups))))


def _mean_curve(ax: plt.Axes, rows: pd.DataFrame, y: str, style: dict) -> None:
    """Mean over seeds of ``y`` against step with a band over their range (NaN rows of diverged runs dropped)."""
    finite = rows[np.isfinite(rows[y])]
    sns.lineplot(finite, x="step", y=y, ax=ax, errorbar=seed_range, legend=False, linewidth=1.6, **style)


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


def _line_handle(colour, label: str, K: float) -> Line2D:
    """Legend line for one K (K = ∞ dashed)."""
    return Line2D([], [], color=colour, linestyle="--" if math.isinf(K) else "-", linewidth=1.8, label=label)


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


def _finish(fig: Figure, title: str, handles: list, out_pdf: Path, out_png: Path, *, legend_loc: str = "outside right center",
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


def _note_figure(title: str, note: str, out_pdf: Path, out_png: Path) -> Figure:
    """A figure holding only ``title`` and a centred ``note`` saying which data are missing."""
    fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
    ax.set_axis_off()
    ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True, fontsize=11, color="0.25")
    return _finish(fig, title, [], out_pdf, out_png)
