"""The solver claims, judged on their own tables: C5 (with large K, iterative linearisation is a damped
Gauss-Newton method whose damping controls feature learning and generalisation) and C6 (K = ∞ trained
to convergence on MSE equals kernel regression with the NTK at initialisation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from itlin import record, summaries, tables
from itlin.claims.verdicts import (ModelVerdict, Settings, Test, correct_grid, differences_detail, formatted, join,
                                   judged, paired_accuracies, present_runs, seed_matrix, seed_mean_draws, seed_means)


def spearman(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Spearman's ρ of ``x`` (C,) with each column of ``values`` (C, R): the correlation of their ranks
    (ties share their mean rank); NaN for a column without spread."""
    x_ranks = pd.Series(x).rank().to_numpy()
    ranks = pd.DataFrame(values).rank(axis=0).to_numpy()
    centred_x, centred = x_ranks - x_ranks.mean(), ranks - ranks.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (centred * centred_x[:, None]).sum(0) / np.sqrt((centred**2).sum(0) * (centred_x**2).sum())


def _c5_runs(rows: pd.DataFrame, Ks: Sequence[float], seeds: Sequence[int], column: str) -> np.ndarray:
    """(2·len(Ks), S) values of ``column`` per (method, K) condition (methods in ``GAUSS_NEWTON_METHODS``
    order, then K) and seed; NaN for a missing or diverged run."""
    completed = rows[rows["status"] == "ok"]
    return np.vstack([seed_matrix(completed[(completed["method"] == method) & (completed["K"] == K)], seeds, column)
                      for method in tables.GAUSS_NEWTON_METHODS for K in Ks])


def check_c5(measured: Mapping[str, pd.DataFrame], settings: Settings,
             twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C5: per model and loss, from iterative linearisation (IL) and damped Gauss-Newton (GN) at λ = 1/(ηK):
    (a) for large K (at most ``max_rounds`` rounds) IL's test accuracy is within ``tolerance_pt`` of GN's;
    (b) GN's damping orders the kernel change (|Spearman ρ| of λ and the relative change of the network's
    kernel at the final θ); (c) the direction of the damping's effect on generalisation (signed ρ of λ and
    GN's test accuracy) against "more damping generalises better". (a) and (c) on the trained model
    (``tables.TRAINED_EVALUATOR``: f_lin at θ_lin), the network at θ reported beside them. (b) on the
    network's kernel: the linear model's, at θ_lin, is θ₀'s at the one-round K by construction and cannot
    change whatever the truth, so it is reported beside, not judged. Intervals resample seeds and test
    examples together, paired across methods and periods."""
    options = settings["C5"]
    table, predictions = measured["gauss_newton"], measured["gauss_newton_predictions"]
    results = []
    for (dataset, model, loss), runs in table.groupby(["dataset", "model", "loss"], sort=True) if len(table) else []:
        failed = runs[(runs["status"] != "ok") & (runs["evaluator"] == tables.TRAINED_EVALUATOR)]
        note = ("" if failed.empty else f"{len(failed)} diverged run(s) excluded: " + ", ".join(
            f"{row.method} K={record.format_K(row.K)} seed {row.seed}" for row in failed.itertuples()))
        trained, network = (runs[runs["evaluator"] == evaluator] for evaluator in (tables.TRAINED_EVALUATOR, "network"))
        completed = trained.loc[trained["status"] == "ok", ["method", "K", "seed"]]
        Ks = sorted(completed["K"].unique())
        seeds = sorted(completed["seed"].unique())
        rows = predictions[(predictions["dataset"] == dataset) & (predictions["model"] == model)
                           & (predictions["loss"] == loss) & (predictions["evaluator"] == tables.TRAINED_EVALUATOR)]
        rows = rows.merge(completed, on=["method", "K", "seed"])
        if len(Ks) < 3 or rows.empty:
            results.append(ModelVerdict(dataset, model, loss=loss,
                                        note=join("needs completed runs at >= 3 periods K", note)))
            continue
        conditions = [(method, K) for method in tables.GAUSS_NEWTON_METHODS for K in Ks]
        index = {condition: i for i, condition in enumerate(conditions)}
        correct = correct_grid(rows, pd.Series([index[(m, K)] for m, K in zip(rows["method"], rows["K"])]),
                               len(conditions), seeds)
        accuracy, accuracy_resampled, seed_weights = paired_accuracies(settings.bootstrap, correct, "C5", dataset,
                                                                       model, loss)
        few_seeds = settings.few_seeds_note([f"{'GN' if method == 'gauss_newton' else 'IL'} K={record.format_K(K)}"
                                             for method, K in conditions], present_runs(correct).sum(axis=1))
        change = _c5_runs(trained, Ks, seeds, "relative_change")
        network_change = _c5_runs(network, Ks, seeds, "relative_change")
        damping = np.array([1 / (float(runs["learning_rate"].iloc[0]) * K) for K in Ks])
        rounds = {K: int(runs.loc[runs["K"] == K, "rounds"].iloc[0]) for K in Ks}
        il, gn = slice(0, len(Ks)), slice(len(Ks), 2 * len(Ks))
        large = [i for i, K in enumerate(Ks) if rounds[K] <= options["max_rounds"]]
        bootstrap = settings.bootstrap

        gaps, gaps_point = accuracy_resampled[il] - accuracy_resampled[gn], accuracy[il] - accuracy[gn]
        agreement = Test(
            f"largest |IL − GN| test accuracy over K with <= {options['max_rounds']} rounds",
            *((np.abs(gaps_point[large]).max(), *bootstrap.interval(np.abs(gaps[large]).max(0))) if large
              else (math.nan, math.nan, math.nan)),
            "<=", options["tolerance_pt"], unit=" pt",
            detail="IL − GN: " + differences_detail(
                large, {i: f"K={record.format_K(Ks[i])} ({rounds[Ks[i]]} round{'s' * (rounds[Ks[i]] != 1)}, "
                           f"λ={damping[i]:.3g})" for i in large}, gaps_point[large], gaps[large], bootstrap, None)
            if large else f"no K has at most {options['max_rounds']} rounds")

        def signed(values: np.ndarray) -> str:
            return formatted(spearman(damping, seed_means(values)[:, None])[0], "+.2f")

        network_accuracy = _c5_runs(network, Ks, seeds, "test_accuracy")
        ordering = Test("|Spearman ρ| of λ and GN's relative change of the network's kernel (at θ)",
                        *judged(bootstrap, lambda v: np.abs(spearman(damping, v[gn])), seed_means(network_change),
                                seed_mean_draws(network_change, seed_weights)),
                        ">=", options["min_rank_correlation"], lacking=settings.too_few_seeds(network_change[gn]),
                        detail=f"signed ρ: GN {signed(network_change[gn])}, IL {signed(network_change[il])}; the "
                               f"linear model's kernel at θ_lin (reported, not judged: θ₀'s at one round): "
                               f"GN {signed(change[gn])}, IL {signed(change[il])}")
        direction = Test("Spearman ρ of λ and GN's test accuracy (signed)",
                         *judged(bootstrap, lambda v: spearman(damping, v[gn]), accuracy, accuracy_resampled), ">", 0.0,
                         detail=f"GN at the most damped λ={damping[0]:.3g} {formatted(accuracy[gn][0], '.1f')}%, "
                                f"least damped λ={damping[-1]:.3g} {formatted(accuracy[gn][-1], '.1f')}%; ρ of IL "
                                f"{signed(accuracy[il, None])}; network at θ: GN {signed(network_accuracy[gn])}, "
                                f"IL {signed(network_accuracy[il])}")
        results.append(ModelVerdict(dataset, model, tests=(agreement, ordering, direction), note=join(note, few_seeds),
                                    loss=loss))
    return results


def check_c6(measured: Mapping[str, pd.DataFrame], settings: Settings,
             twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C6: per model, the trained K = ∞ model's test outputs equal the closed form at every compared step
    (largest deviation over test outputs, the worst seed); at t → ∞ it equals kernel regression where the
    run got there (the closed form at its last step is within the tolerance of kernel regression),
    otherwise the note says how far it stopped: the finite steps test the dynamics whose limit it is."""
    tolerance = settings["C6"]["max_difference"]
    summary = summaries.kernel_regression_summary(measured["kernel_regression"])
    results = []
    for (dataset, model), runs in summary.groupby(["dataset", "model"], sort=True) if len(summary) else []:
        seeds = sorted(runs["seed"].unique())
        weights = settings.bootstrap.weights(settings.bootstrap.generator("C6", dataset, model), len(seeds))

        def largest(values: np.ndarray) -> tuple[float, float, float]:
            """The largest of the measured seeds' values (NaN: not measured), with its interval over resamples of
            the seeds (a resample of unmeasured seeds only has none)."""
            measured = np.isfinite(values)
            draws = np.where((weights > 0) & measured, values[None, :], -np.inf).max(1)
            return (float(values[measured].max()) if measured.any() else math.nan, *settings.bootstrap.interval(draws))

        tests, note = [], ""
        for step, at in runs.groupby("step", sort=True):
            values = at.set_index("seed")["difference"].reindex(seeds).to_numpy()
            lacking = settings.too_few_seeds(values[None, :])
            if np.isinf(step):
                gap = float(at["convergence_gap"].max())
                if gap > tolerance:
                    note = (f"t → ∞ not reached by step {int(at['steps'].max()):,}: the closed form there is still "
                            f"{gap:.2g} from kernel regression (condition number "
                            f"{formatted(at['condition_number'].max(), '.2g')}); the finite steps test the dynamics "
                            "whose limit it is")
                    continue
                tests.append(Test("t → ∞: largest |trained (last step) − kernel regression|", *largest(values), "<=",
                                  tolerance, detail=f"closed form at the last step is {formatted(gap, '.2g')} from "
                                                    "kernel regression", lacking=lacking))
                continue
            tests.append(Test(f"t = {int(step):,}: largest |trained − closed form|", *largest(values), "<=", tolerance,
                              detail=f"train loss {formatted(at['trained_train_loss'].max(), '.2g')} (closed form "
                                     f"{formatted(at['closed_form_train_loss'].max(), '.2g')})", lacking=lacking))
        results.append(ModelVerdict(dataset, model, tests=tuple(tests), note=note))
    return results
