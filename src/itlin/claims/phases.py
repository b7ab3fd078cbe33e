"""S3, the companion's two phases of learning, judged on its runs in its own regime (``metrics_companion``): the
training loss falls faster than a power law in an early, feature-learning phase, then as a power law. Log-log
slopes of each seed's training loss over two windows of steps, resampled over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from itlin import summaries, tables
from itlin.claims.kernels import COMPANION_NTK
from itlin.claims.verdicts import (ModelVerdict, Settings, Test, formatted, groups, join, judged, seed_mean_draws,
                                   seed_means)

COMPANION_METRICS = "metrics_companion"
"""The metrics table of the companion's runs: the table S3 is judged on."""


def check_s3(measured: Mapping[str, pd.DataFrame], settings: Settings, twins: Mapping[str, str]) -> list[ModelVerdict]:
    """S3: per network of the companion's runs (not its deep linear twins), the training loss falls as a power
    law late in training (a negative log-log slope over the late phase) and faster than that power law early
    (the early phase's log-log slope steeper than the late exponent). The step at which the centred alignment
    reaches 90% of its rise is reported beside it: the companion's boundary between the phases."""
    early_from, late_from = settings["S3"]["early_from"], settings["S3"]["late_from"]
    metrics = measured[COMPANION_METRICS]
    loss = metrics[(metrics["split"] == "train") & (metrics["evaluator"] == tables.TRAINED_EVALUATOR)
                   & ~metrics["model"].isin(list(twins))]
    alignment = summaries.kernel_rows(measured[COMPANION_NTK], "alignment")
    results = []
    for group, every in groups(loss):
        diverged = tables.diverged_runs(every)
        note = f"{len(diverged)} diverged run(s) excluded: {tables.describe_runs(diverged)}" if len(diverged) else ""
        rows = every[every["status"] == "ok"]
        if rows.empty:
            results.append(ModelVerdict(*group, note=join("needs runs that trained to the end", note)))
            continue
        slopes = summaries.phase_slopes(rows, early_from, late_from)
        values = slopes[["late", "early"]].to_numpy().T
        rng = settings.bootstrap.generator("S3", *group)
        point, draws = seed_means(values), seed_mean_draws(values, settings.bootstrap.weights(rng, values.shape[1]))
        last = int(rows["step"].max())
        window = lambda start, end: f"steps {int(round(start * last))}–{int(round(end * last))}"  # noqa: E731
        levelled = summaries.rise_share_step(alignment[alignment["model"] == group[1]], 0.9)
        boundary = (f"the centred alignment reaches 90% of its rise by step {levelled} (late phase from step "
                    f"{int(round(late_from * last))})" if levelled is not None else "")
        tests = (Test(f"late-phase exponent: log-log slope of the training loss, {window(late_from, 1)}",
                      *judged(settings.bootstrap, lambda v: v[0], point, draws), "<", 0.0,
                      lacking=settings.too_few_seeds(values[[0]])),
                 Test(f"early-phase slope ({window(early_from, late_from)}) minus the late exponent",
                      *judged(settings.bootstrap, lambda v: v[1] - v[0], point, draws), "<", 0.0,
                      detail=f"early slope {formatted(point[1], '+.2f')}; {boundary}".rstrip("; "),
                      lacking=settings.too_few_seeds(values)))
        results.append(ModelVerdict(*group, tests, note))
    return results
