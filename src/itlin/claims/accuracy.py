"""The accuracy claims, judged on the metrics and predictions tables: C1 (a handful of feature updates is
on par with standard training), C2 (linearised training generalises clearly worse) and C4 (some early
feature learning suffices). Final test accuracies of the trained model, resampled over seeds and test
examples, paired with K = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from itlin import record, tables
from itlin.claims.verdicts import (GROUP_KEYS, Bootstrap, ModelVerdict, Settings, Test, correct_grid, differences_detail,
                                   formatted, groups, join, judged, number, paired_accuracies, present_runs)


def _runs_note(runs: pd.DataFrame, what: str) -> str:
    """'2 diverged run(s) excluded: K=10 seed 0 (step 500), …' (``what`` after the count); '' for no runs."""
    if runs.empty:
        return ""
    listed = ", ".join(f"{_condition(row.K, row.switch_step)} seed {row.seed} (step {row.step})"
                       for row in runs.itertuples())
    return f"{len(runs)} {what}: {listed}"


def _condition(K: float, switch_step) -> str:
    return f"switch t={int(switch_step)}" if pd.notna(switch_step) else _period_name(K)


def _period_name(K: float) -> str:
    return f"K={record.format_K(K)}"


def _accuracy_conditions(measured: Mapping[str, pd.DataFrame], settings: Settings, claim: str,
                         condition_of: Callable[[pd.DataFrame], pd.Series], name_of: Callable[[float], str]):
    """Per model: (group, finals, conditions, point accuracies, resampled accuracies, note) of its runs.

    ``condition_of(rows)`` maps run rows (RUN_KEYS columns) to a condition label, NaN for runs that do
    not take part; ``name_of(label)`` names a condition. Runs count that trained to the model's last step
    and have test predictions; the note names the others and the conditions with fewer than
    ``settings.min_seeds`` seeds. Accuracies are of ``tables.TRAINED_EVALUATOR`` on the test split, in %.
    """
    metrics, predictions = measured["metrics"], measured["predictions"]
    predictions = predictions[predictions["evaluator"] == tables.TRAINED_EVALUATOR]
    predicted = predictions[tables.RUN_KEYS].drop_duplicates().assign(predicted=True)
    finals = tables.final_metrics(metrics)
    for group, runs in groups(finals):
        last_step = runs["step"].max()
        runs = runs.assign(condition=condition_of(runs))
        runs = runs[runs["condition"].notna()].merge(predicted, on=tables.RUN_KEYS, how="left")
        ok, finished, has_predictions = runs["status"] == "ok", runs["step"] == last_step, runs["predicted"].notna()
        note = join(_runs_note(runs[~ok], "diverged run(s) excluded"),
                    _runs_note(runs[ok & ~finished], f"run(s) not evaluated at the last step {last_step} left out"),
                    _runs_note(runs[ok & finished & ~has_predictions], "run(s) without test predictions left out"))
        rows = predictions.merge(runs.loc[ok & finished, tables.RUN_KEYS + ["condition"]], on=tables.RUN_KEYS)
        if rows.empty:
            yield group, runs, [], None, None, note
            continue
        labels = sorted(rows["condition"].unique())
        seeds = sorted(rows["seed"].unique())
        index = {label: i for i, label in enumerate(labels)}
        correct = correct_grid(rows, rows["condition"].map(index), len(labels), seeds)
        point, draws, _ = paired_accuracies(settings.bootstrap, correct, claim, *group)
        few_seeds = settings.few_seeds_note([name_of(label) for label in labels], present_runs(correct).sum(axis=1))
        yield group, runs, labels, point, draws, join(note, few_seeds)


def _smallest_on_par(measure: str, at: np.ndarray, labels: list, names: Mapping, point: np.ndarray, draws: np.ndarray,
                     tolerance: float, most: float, bootstrap: Bootstrap) -> Test:
    """The test ``smallest at <= most``: the least ``at`` (feature updates of C1, switch fraction of C4)
    among the conditions whose accuracy is within ``tolerance`` points of K = 1's (the condition labelled
    1.0, paired), at the data and in every resample; the detail lists every condition's difference."""
    standard = labels.index(1.0)

    def smallest(accuracy: np.ndarray) -> np.ndarray:
        within = accuracy - accuracy[standard] >= -tolerance  # NaN (a missing resample) is not within
        return np.where(within, at[:, None], np.inf).min(0)

    value, low, high = judged(bootstrap, smallest, point, draws)
    detail = "Δ test accuracy vs K = 1 (pt): " + differences_detail(
        labels, names, point - point[standard], draws - draws[standard], bootstrap, 1.0)
    return Test(measure, value, low, high, "<=", most, detail=f"K = 1 {formatted(point[standard], '.1f')}%; {detail}")


def check_c1(measured: Mapping[str, pd.DataFrame], settings: Settings,
             twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C1: per model, the fewest feature updates whose test accuracy is within tolerance of K = 1."""
    tolerance, most = settings["C1"]["tolerance_pt"], settings["C1"]["max_feature_updates"]
    results = []
    period = lambda runs: runs["K"].where(runs["switch_step"].isna())  # noqa: E731
    for group, runs, Ks, point, draws, note in _accuracy_conditions(measured, settings, "C1", period, _period_name):
        if 1.0 not in Ks or len(Ks) < 2:
            results.append(ModelVerdict(*group, note=join("needs completed K = 1 runs and another K", note)))
            continue
        updates = np.array([runs.loc[runs["K"] == K, "feature_updates"].max() for K in Ks], np.float64)
        names = {K: f"K={record.format_K(K)} ({int(u)} update{'' if u == 1 else 's'})" for K, u in zip(Ks, updates)}
        test = _smallest_on_par(f"fewest feature updates within {number(tolerance)} pt of K = 1", updates, Ks, names,
                                point, draws, tolerance, most, settings.bootstrap)
        results.append(ModelVerdict(*group, (test,), note))
    return results


def check_c2(measured: Mapping[str, pd.DataFrame], settings: Settings,
             twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C2: per model, K = 1 minus K = ∞ test accuracy (paired) exceeds the minimum gap."""
    gap = settings["C2"]["min_gap_pt"]
    results = []
    ends = lambda runs: runs["K"].where(runs["switch_step"].isna() & ((runs["K"] == 1) | np.isinf(runs["K"])))  # noqa: E731
    for group, runs, Ks, point, draws, note in _accuracy_conditions(measured, settings, "C2", ends, _period_name):
        if Ks != [1.0, math.inf]:
            results.append(ModelVerdict(*group, note=join("needs completed K = 1 and K = ∞ runs", note)))
            continue
        difference = lambda accuracy: accuracy[0] - accuracy[1]  # noqa: E731
        value, low, high = judged(settings.bootstrap, difference, point, draws)
        test = Test("K = 1 minus K = ∞ test accuracy", value, low, high, ">", gap, unit=" pt",
                    detail=f"K = 1 {formatted(point[0], '.1f')}%, K = ∞ {formatted(point[1], '.1f')}%")
        results.append(ModelVerdict(*group, (test,), note))
    return results


def check_c4(measured: Mapping[str, pd.DataFrame], settings: Settings,
             twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C4: per model, the earliest switch step t/T whose test accuracy is within tolerance of K = 1
    (K = ∞ counts as t = 0 and K = 1 as t = T)."""
    tolerance, latest = settings["C4"]["tolerance_pt"], settings["C4"]["max_switch_fraction"]
    length = measured["metrics"].groupby(GROUP_KEYS)["step"].max()

    def fraction(runs: pd.DataFrame) -> pd.Series:
        T = float(length[tuple(runs[GROUP_KEYS].iloc[0])])
        t = runs["switch_step"].astype("float64") / T
        t = t.where(runs["switch_step"].notna(), np.where(runs["K"] == 1, 1.0, np.where(np.isinf(runs["K"]), 0.0, np.nan)))
        return t

    def name(f: float) -> str:
        return "K=∞ (t=0)" if f == 0 else f"t/T={number(f)}"

    results = []
    for group, runs, fractions, point, draws, note in _accuracy_conditions(measured, settings, "C4", fraction, name):
        if 1.0 not in fractions or not runs["switch_step"].notna().any():
            results.append(ModelVerdict(*group, note=join("needs switch runs and completed K = 1 runs", note)))
            continue
        names = {f: name(f) for f in fractions}
        test = _smallest_on_par(f"earliest switch t/T within {number(tolerance)} pt of K = 1", np.array(fractions),
                                fractions, names, point, draws, tolerance, latest, settings.bootstrap)
        results.append(ModelVerdict(*group, (test,), note))
    return results
