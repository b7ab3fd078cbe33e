"""C7, the project's own test of the NTK theory's prediction: the relative change of the empirical NTK after
training falls with width like width^(−1/2) (NTK parameterisation, gradient descent; Lee et al. 2019). Judged per
architecture and regime on the width sweep's K = 1 runs (``ntk_width``): the exponent of a power law fitted on
log-log axes, resampled over seeds. The K = 1 minus K = ∞ accuracy gap and the fewest feature updates on par
(``metrics_width``) are reported per width beside it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from itlin import record, summaries
from itlin.claims.verdicts import ModelVerdict, Settings, Test, formatted, judged, seed_mean_draws, seed_means
from itlin.summaries import WIDTH_KEYS

MIN_WIDTHS = 3
"""The fewest widths an exponent is fitted on: a line through two points has no residual to speak of."""


def check_c7(measured: Mapping[str, pd.DataFrame], settings: Settings, twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C7: per architecture and regime of the width sweep, the exponent of the relative kernel change in width.
    In the theory's regime (``claims.C7.theory_regime``) it lies within ``exponent_tolerance`` of ``exponent``;
    in another regime the test is whether it falls at all (below −``min_fall``)."""
    rule = settings["C7"]
    changes = summaries.kernel_change_by_width(measured["ntk_width"])
    accuracy = summaries.accuracy_by_width(measured["metrics_width"], settings["C1"]["tolerance_pt"])
    measured = dict(list(changes.groupby(WIDTH_KEYS, sort=True)))
    by_series = accuracy.set_index(WIDTH_KEYS)
    results = []
    for group in sorted(set(measured) | set(by_series.index)):  # a series without a finished K = 1 run too
        note = _beside(by_series.loc[[group]] if group in by_series.index else None)
        if group not in measured:
            results.append(ModelVerdict(*group, note=f"needs K = 1 runs that trained to the end; {note}".rstrip("; ")))
            continue
        grid = measured[group].pivot(index="width", columns="seed", values="value")
        widths, values = grid.index.to_numpy(), grid.to_numpy(np.float64)
        if len(widths) < MIN_WIDTHS:
            results.append(ModelVerdict(*group, note=f"needs K = 1 runs at {MIN_WIDTHS} or more widths, has "
                                                     f"{len(widths)}; {note}".rstrip("; ")))
            continue
        rng = settings.bootstrap.generator("C7", *group)
        point = seed_means(values)
        draws = seed_mean_draws(values, settings.bootstrap.weights(rng, values.shape[1]))
        exponent = lambda means: summaries.width_exponent(widths, means)  # noqa: E731
        value, low, high = judged(settings.bootstrap, exponent, point, draws)
        measure = (f"exponent of ‖Θ_T − Θ₀‖/‖Θ₀‖ in width (K = 1, widths {widths.min()}–{widths.max()})")
        detail = "relative change " + ", ".join(f"{w}: {formatted(v, '.3g')}" for w, v in zip(widths, point))
        lacking = settings.too_few_seeds(values)
        if group[2] == record.width_variant(rule["theory_regime"]):
            target, tolerance = rule["exponent"], rule["exponent_tolerance"]
            tests = (Test(measure, value, low, high, ">", target - tolerance, detail=detail, lacking=lacking),
                     Test(measure, value, low, high, "<", target + tolerance, lacking=lacking))
        else:
            tests = (Test(measure, value, low, high, "<", -rule["min_fall"], detail=detail, lacking=lacking),)
        results.append(ModelVerdict(*group, tests, note))
    return results


def _beside(accuracy: pd.DataFrame | None) -> str:
    """The accuracy gap and the fewest updates on par per width, as the note reports them."""
    if accuracy is None or accuracy.empty:
        return ""
    gaps = ", ".join(f"{row.width}: {formatted(row.gap, '+.1f')}" for row in accuracy.itertuples())
    updates = ", ".join(f"{row.width}: {formatted(row.updates_on_par, '.0f')}" for row in accuracy.itertuples())
    return f"K = 1 minus K = ∞ test accuracy (pt) per width {gaps}; fewest feature updates on par {updates}"
