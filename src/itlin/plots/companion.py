"""The companion's own figures, drawn from its runs (its regime: full-batch gradient descent on squared loss,
K = 1, networks at several depths and their deep linear twins): S3 (the two phases of the training loss, with
the alignment on the same time axis) and S4 (the targets' energy in the NTK's top eigenvectors).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from itlin import summaries, tables
from itlin.plots.kernels import kernel_note
from itlin.plots.style import SEED_BAND, STANDARD_COLOUR, finish, mean_curve, note_figure, styled

REGIME = "companion's regime: full-batch gradient descent, squared loss, K = 1"
TWIN_STYLE = {"color": "0.45", "linestyle": ":"}
NO_COMPANION_RUNS = "No runs of the companion's regime in the table: nothing to draw."


@styled
def loss_phases(metrics: pd.DataFrame, out_pdf: Path, out_png: Path, *, ntk_companion: pd.DataFrame,
                early_from: float, late_from: float, twins: Mapping[str, str] | None = None) -> Figure:
    """S3: per network (a column each, by depth), the training loss of f_lin on log-log axes (mean over seeds, range
    band), its deep linear twin dotted, the early and late phases shaded and the late phase's power law fitted
    (dashed, exponent in the title); below, on the same step axis, the centred kernel-target alignment, with the
    step at which it has made 90% of its rise."""
    title = f"S3: two phases of the training loss ({REGIME})"
    twins = dict(twins or {})
    loss = metrics[(metrics["split"] == "train") & (metrics["evaluator"] == tables.TRAINED_EVALUATOR)
                   & (metrics["step"] > 0)]
    networks = sorted(set(loss["model"]) - set(twins))
    if not networks:
        return note_figure(title, NO_COMPANION_RUNS, out_pdf, out_png)
    alignment = summaries.kernel_rows(ntk_companion, "alignment")
    twin_of = {model: twin for twin, model in twins.items()}
    fig, axes = plt.subplots(2, len(networks), figsize=(4.2 * len(networks) + 2.6, 7.0), layout="constrained",
                             squeeze=False, sharex="col")
    for (top, bottom), model in zip(axes.T, networks):
        runs = loss[loss["model"] == model]
        last = runs["step"].max()
        top.axvspan(early_from * last, late_from * last, color="0.92", zorder=0)
        top.axvspan(late_from * last, last, color="0.85", zorder=0)
        mean_curve(top, runs, "loss", {"color": STANDARD_COLOUR})
        if model in twin_of:
            mean_curve(top, loss[loss["model"] == twin_of[model]], "loss", TWIN_STYLE)
        late = runs[runs["step"] >= late_from * last].groupby("step")["loss"].mean()
        exponent = summaries.phase_slopes(runs, early_from, late_from)
        if len(late) >= 3 and (late > 0).all():
            slope, intercept = np.polyfit(np.log(late.index), np.log(late.to_numpy()), 1)
            steps = np.geomspace(late_from * last, last, 20)
            top.plot(steps, np.exp(intercept) * steps**slope, color="black", linestyle="--", linewidth=1.2)
        top.set(xscale="log", yscale="log", ylabel="training loss (log)",
                title=f"{model}: late exponent {exponent['late'].mean():+.2f}, early slope {exponent['early'].mean():+.2f}")
        curves = alignment[alignment["model"].isin([model, twin_of.get(model)])]
        for label, style in ((model, {"color": STANDARD_COLOUR}), (twin_of.get(model), TWIN_STYLE)):
            if label is not None and (curves["model"] == label).any():
                mean_curve(bottom, curves[(curves["model"] == label) & (curves["step"] > 0)], "value", style)
        levelled = summaries.rise_share_step(curves[curves["model"] == model], 0.9)
        if levelled:
            bottom.axvline(levelled, color="black", linewidth=0.8)
            bottom.annotate(f"90% of the rise\nby step {levelled}", (levelled, 0.05), xycoords=("data", "axes fraction"),
                            xytext=(4, 0), textcoords="offset points", fontsize=8)
        bottom.set(xscale="log", xlabel="training step (log)", ylabel="centred kernel-target alignment")
    handles = [Line2D([], [], color=STANDARD_COLOUR, linewidth=1.8, label="network (K = 1)"),
               Line2D([], [], **TWIN_STYLE, linewidth=1.8, label="its deep linear twin"),
               Line2D([], [], color="black", linestyle="--", linewidth=1.2, label="late phase: fitted power law"),
               plt.Rectangle((0, 0), 1, 1, color="0.92", label=f"early phase ({early_from:g}·T to {late_from:g}·T)"),
               plt.Rectangle((0, 0), 1, 1, color="0.85", label=f"late phase ({late_from:g}·T to T)")]
    return finish(fig, title, handles, out_pdf, out_png, legend_title=f"mean over seeds; {SEED_BAND}")


@styled
def eigenfunction_alignment(ntk: pd.DataFrame, out_pdf: Path, out_png: Path, *,
                            twins: Mapping[str, str] | None = None) -> Figure:
    """S4: per network (a column each, by depth; its deep linear twin below), the share C(k) of the centred
    targets' energy in the top-k eigenvectors of the trace NTK against k, one curve per snapshot step (darker
    later, mean over seeds), the rank C − 1 that S4 reads marked."""
    title = f"S4: the targets' energy in the NTK's top eigenvectors ({REGIME})"
    twins = dict(twins or {})
    energy = summaries.kernel_rows(ntk, "target_energy")
    energy = energy[energy["K"] == 1]
    networks = sorted(set(tables.nonlinear(energy)["model"]))
    if not networks:
        return note_figure(title, NO_COMPANION_RUNS, out_pdf, out_png)
    twin_of = {model: twin for twin, model in twins.items()}
    rows = 2 if any(model in twin_of for model in networks) else 1
    fig, axes = plt.subplots(rows, len(networks), figsize=(4.0 * len(networks) + 2.0, 3.4 * rows + 0.6),
                             layout="constrained", squeeze=False, sharey=True)
    steps = sorted(energy["step"].unique())
    colours = dict(zip(steps, plt.get_cmap("viridis")(np.linspace(0.9, 0.0, len(steps)))))
    rank = summaries.target_rank(ntk)
    for column, model in enumerate(networks):
        for row, label in enumerate([model, twin_of.get(model)][:rows]):
            ax = axes[row, column]
            if label is None:  # a network without a twin
                ax.set_axis_off()
                continue
            curves = energy[energy["model"] == label].groupby(["step", "top_k"])["value"].mean()
            for step in steps:
                if step in curves.index.get_level_values("step"):
                    curve = curves.loc[step]
                    ax.plot(curve.index, curve.to_numpy(), color=colours[step], linewidth=1.4, marker=".")
            if rank:
                ax.axvline(rank, color="black", linewidth=0.8, linestyle="--")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            kind = "network" if row == 0 else "deep linear twin"
            ax.set(title=f"{label} ({kind}){kernel_note(energy[energy['model'] == label])}",
                   xlabel="k (top eigenvectors of the trace NTK)",
                   ylabel="C(k): share of the centred targets", ylim=(0, 1.02))
    handles = [Line2D([], [], color=colours[step], linewidth=1.6, label=f"step {step}") for step in steps]
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.8, label=f"k = C − 1 = {rank} (S4)"))
    return finish(fig, title, handles, out_pdf, out_png, legend_title="snapshot (mean over seeds)")
