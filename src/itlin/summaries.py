"""Summaries of the tables that both the claims (``itlin.claims``) and the figures (``itlin.plots``) rest
on, computed once here so that a verdict and the figure beside it always show the same number. Queries
over the tables only: no plotting, no bootstrap, no JAX.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from itlin import record, tables


def period_runs(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs with a fixed re-linearisation period K (not switch runs)."""
    return table[table["switch_step"].isna()]


def kernel_rows(ntk: pd.DataFrame, metric: str, point: str = tables.TRAINED_POINT) -> pd.DataFrame:
    """Rows of ``metric`` at ``point`` (the trained kernel, θ_lin, by default) of the period runs."""
    rows = period_runs(ntk)
    return rows[(rows["metric"] == metric) & (rows["point"] == point)]


def specialisation_contrast(entries: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Per value of ``keys``, the specialisation contrast of the class-specialisation entries (rows with
    ``output_class``, ``target_class`` and ``value``): mean diagonal minus mean off-diagonal ``value``, 0 for
    kernels that treat every class alike. NaN entries (degenerate kernels) are left out of the means; the
    contrast is NaN where every diagonal or every off-diagonal entry is."""
    diagonal = entries["output_class"] == entries["target_class"]
    on = entries[diagonal].groupby(list(keys), dropna=False)["value"].mean()
    off = entries[~diagonal].groupby(list(keys), dropna=False)["value"].mean()
    return (on - off).rename("contrast")


def diagonal_dominance(entries: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Per value of ``keys``, the share of output heads c whose class-specialisation entry is largest with their
    own class: S[c, c] above every S[c, c'] of its row, strictly (a kernel that treats every class alike has
    none). A head with a NaN entry (a degenerate kernel) is left out; NaN where every head is."""
    rows = entries.groupby([*keys, "output_class"], dropna=False)
    own = entries[entries["output_class"] == entries["target_class"]].set_index([*keys, "output_class"])["value"]
    others = entries[entries["output_class"] != entries["target_class"]]
    strongest_other = others.groupby([*keys, "output_class"], dropna=False)["value"].max()
    defined = rows["value"].apply(lambda values: values.notna().all())
    dominant = (own > strongest_other.reindex(own.index)).where(defined.reindex(own.index))
    return dominant.astype(float).groupby(list(keys), dropna=False).mean().rename("dominant_share")


def target_rank(ntk: pd.DataFrame) -> int | None:
    """The rank k = C − 1 at which S4 reads the target energy C(k): the number of directions the centred one-hot
    targets of C classes span (C from the specialisation rows' classes); None without such rows."""
    classes = ntk["output_class"].dropna()
    return int(classes.max()) if len(classes) else None


def loglog_slope(steps: np.ndarray, losses: np.ndarray) -> float:
    """The least-squares slope of log loss against log step (NaN with fewer than 3 points or a loss <= 0)."""
    if len(steps) < 3 or (losses <= 0).any() or not np.isfinite(losses).all():
        return float("nan")
    return float(np.polyfit(np.log(steps), np.log(losses), 1)[0])


def phase_slopes(rows: pd.DataFrame, early_from: float, late_from: float) -> pd.DataFrame:
    """Per seed of one model's training-loss rows: the log-log slope over the late phase (steps from
    ``late_from``·T to T, T the last step) and over the early phase (from ``early_from``·T to ``late_from``·T)."""
    last = rows["step"].max()
    slopes = {}
    for seed, run in rows.groupby("seed"):
        run = run[run["step"] > 0].sort_values("step")
        late = run[run["step"] >= late_from * last]
        early = run[(run["step"] >= early_from * last) & (run["step"] <= late_from * last)]
        slopes[seed] = (loglog_slope(late["step"].to_numpy(), late["loss"].to_numpy()),
                        loglog_slope(early["step"].to_numpy(), early["loss"].to_numpy()))
    return pd.DataFrame.from_dict(slopes, orient="index", columns=["late", "early"])


def rise_share_step(rows: pd.DataFrame, share: float) -> int | None:
    """The first snapshot step at which the mean over seeds of a K = 1 measure (``rows``: one model's) has made
    ``share`` of its rise from step 0 to its last step; None without a rise."""
    curve = rows[rows["K"] == 1].groupby("step")["value"].mean().sort_index()
    if len(curve) < 2 or not curve.iloc[-1] > curve.iloc[0]:
        return None
    reached = curve[curve - curve.iloc[0] >= share * (curve.iloc[-1] - curve.iloc[0])]
    return int(reached.index[0])


WIDTH_KEYS = ["dataset", "model", "variant"]
"""A width sweep's series: one architecture (the label without its width) in one regime (variant)."""


def by_width(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` of the width sweep with its label split into ``model`` (the architecture) and ``width``."""
    parsed = rows["model"].map(record.parse_width_label)
    return rows.assign(model=parsed.str[0], width=parsed.str[1].astype("int64"))


def kernel_change_by_width(ntk: pd.DataFrame) -> pd.DataFrame:
    """Per K = 1 run of the width sweep (``WIDTH_KEYS``, ``width``, ``seed``): the relative change
    ‖Θ_T − Θ₀‖/‖Θ₀‖ of its trace NTK at its last snapshot (C7); diverged runs left out."""
    rows = kernel_rows(ntk, "relative_change")
    rows = rows[(rows["K"] == 1) & (rows["status"] == "ok")]
    last = rows.sort_values("step").groupby(["dataset", "model", "variant", "seed"], sort=True).tail(1)
    return by_width(last)[[*WIDTH_KEYS, "width", "seed", "value"]].sort_values([*WIDTH_KEYS, "width", "seed"],
                                                                              ignore_index=True)


def accuracy_by_width(metrics: pd.DataFrame, tolerance_pt: float) -> pd.DataFrame:
    """Per series and width of the width sweep (``WIDTH_KEYS``, ``width``), from the seeds' mean final test
    accuracy of f_lin: ``gap``, K = 1 minus K = ∞ in points (C2's measure), and ``updates_on_par``, the fewest
    feature updates of a K whose accuracy is within ``tolerance_pt`` of K = 1's (C1's measure; NaN if none)."""
    final = by_width(tables.final_metrics(period_runs(metrics)))
    mean = final.groupby([*WIDTH_KEYS, "width", "K"], sort=True).agg(
        accuracy=("accuracy", "mean"), updates=("feature_updates", "max")).reset_index()
    rows = []
    for keys, series in mean.groupby([*WIDTH_KEYS, "width"], sort=True):
        by_K = series.set_index("K")
        reference = by_K["accuracy"].get(1.0, np.nan)
        on_par = by_K[by_K["accuracy"] >= reference - tolerance_pt / 100]
        rows.append(dict(zip([*WIDTH_KEYS, "width"], keys), gap=100 * (reference - by_K["accuracy"].get(math.inf, np.nan)),
                         updates_on_par=float(on_par["updates"].min()) if len(on_par) else math.nan))
    return pd.DataFrame(rows, columns=[*WIDTH_KEYS, "width", "gap", "updates_on_par"])


def width_exponent(widths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The least-squares slope of log value against log width, per column of ``values`` (widths × draws): the
    exponent of a power law in width; NaN for a column with a value <= 0 or not finite."""
    x = np.log(np.asarray(widths, np.float64))
    x = x - x.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(values)
        slopes = (x[:, None] * (logs - logs.mean(0))).sum(0) / (x ** 2).sum()
    return np.where(np.isfinite(logs).all(0), slopes, np.nan)


def kernel_regression_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, model, seed) and step: the largest |trained − closed form| over the test outputs,
    the test accuracy and train loss of each, the condition number and the last step ``steps``. At step inf
    (kernel regression) ``difference`` compares the trained model at its last step, and ``convergence_gap``
    is the largest |closed form at the last step − kernel regression|: how far from t → ∞ the run stopped.
    A run without a finite step (no trained model) has no rows."""
    rows = []
    for (dataset, model, seed), run in table.groupby(["dataset", "model", "seed"], sort=True):
        last = run.loc[np.isfinite(run["step"]), "step"].max()
        if np.isnan(last):
            continue
        at_last = run[run["step"] == last].set_index(["example", "output_class"]).sort_index()
        for step, at in run.groupby("step", sort=True):
            at = at.set_index(["example", "output_class"]).sort_index()
            trained = at_last if np.isinf(step) else at
            rows.append(dict(
                dataset=dataset, model=model, seed=seed, step=step, steps=last,
                difference=float((trained["trained"] - at["closed_form"]).abs().max()),
                convergence_gap=(float((at_last["closed_form"] - at["closed_form"]).abs().max()) if np.isinf(step)
                                 else math.nan),
                trained_accuracy=_output_accuracy(trained, "trained"),
                closed_form_accuracy=_output_accuracy(at, "closed_form"),
                trained_train_loss=float(trained["trained_train_loss"].iloc[0]),
                closed_form_train_loss=float(at["closed_form_train_loss"].iloc[0]),
                condition_number=float(at["condition_number"].iloc[0])))
    return pd.DataFrame(rows)


def _output_accuracy(rows: pd.DataFrame, column: str) -> float:
    """Test accuracy (fraction) of the argmax class of ``column``, rows indexed by (example, output_class)."""
    outputs = rows[column].unstack("output_class")
    labels = rows["label"].groupby(level="example").first().reindex(outputs.index)
    return float((outputs.to_numpy().argmax(1) == labels.to_numpy()).mean())
