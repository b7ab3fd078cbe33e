"""The paper's claims (C1–C6, S1, S2 of docs/science.md) judged per model, with bootstrap intervals.

Every claim is judged separately for each model (dataset, model label, variant). A judgement is
one or more *tests*: a measured quantity, its 95% bootstrap interval and a rule ``value op
threshold``. A test is ``supported`` when its whole interval satisfies the rule, ``not supported``
when none of it does, and ``inconclusive`` when the interval straddles the threshold; ``not
measured`` when the runs it needs are missing. A model's verdict combines its tests (any ``not
supported`` decides; then any ``not measured``; then any ``inconclusive``). Thresholds come from
the config's ``claims:`` section (``Settings``), never from this module.

Intervals (``Bootstrap``): percentile bootstrap over seeds and, for accuracies, over test examples
too, both resampled with replacement; runs that share seeds and the test split are resampled
together (paired), so a difference between two periods K keeps the correlation of their errors.
Each model's resamples are drawn from a generator seeded by the configured seed and the claim and
model names, so the table is deterministic and adding a model changes no other row. No JAX here.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from itlin import record, tables

VERDICTS = ("supported", "not supported", "inconclusive", "not measured")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda value, threshold: value >= threshold,
    ">": lambda value, threshold: value > threshold,
    "<=": lambda value, threshold: value <= threshold,
    "<": lambda value, threshold: value < threshold,
}
GROUP_KEYS = ["dataset", "model", "variant"]
"""A 'model' of a verdict: one row of the claims table per value of these."""


# ---------------------------------------------------------------- settings and the bootstrap


@dataclass(frozen=True)
class Bootstrap:
    """Percentile bootstrap: ``resamples`` draws, a ``confidence`` interval, a fixed ``seed``."""

    resamples: int
    confidence: float
    seed: int

    def generator(self, *names: str) -> np.random.Generator:
        """A generator for one (claim, model): seeded by ``seed`` and a checksum of the names."""
        return np.random.default_rng([self.seed, zlib.crc32("/".join(names).encode())])

    def weights(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """(resamples, size) multiplicities of a resample with replacement of ``size`` items."""
        return rng.multinomial(size, np.full(size, 1 / size), size=self.resamples).astype(np.float64)

    def interval(self, draws: np.ndarray) -> tuple[float, float]:
        """The central ``confidence`` interval of the finite draws (NaN, NaN if there are none)."""
        draws = np.asarray(draws, np.float64)
        draws = draws[np.isfinite(draws)]
        if draws.size == 0:
            return math.nan, math.nan
        tail = (1 - self.confidence) / 2
        low, high = np.quantile(draws, [tail, 1 - tail], method="inverted_cdf")
        return float(low), float(high)

    def describe(self) -> str:
        """The method, stated once at the top of claims.md."""
        return (f"{self.confidence:.0%} intervals are percentile bootstrap intervals from {self.resamples:,} "
                f"resamples (generator seed {self.seed}): seeds are resampled with replacement and, for "
                "accuracies, so are the test examples; runs that share seeds and the test split are resampled "
                "together (paired), so differences between them keep the correlation of their errors. A test is "
                "supported when its whole interval satisfies the rule, not supported when none of it does, "
                "inconclusive when the interval straddles the threshold.")


@dataclass(frozen=True)
class Settings:
    """The config's ``claims:`` section: the bootstrap and each claim's thresholds (config/README.md)."""

    bootstrap: Bootstrap
    early_phase_fraction: float
    thresholds: Mapping[str, Mapping[str, float]]

    @classmethod
    def from_config(cls, section: Mapping) -> "Settings":
        """Build from the validated ``claims:`` mapping of a workflow config."""
        section = dict(section)
        return cls(bootstrap=Bootstrap(**section.pop("bootstrap")),
                   early_phase_fraction=float(section.pop("early_phase_fraction")),
                   thresholds={claim: dict(values) for claim, values in section.items()})

    def __getitem__(self, claim: str) -> Mapping[str, float]:
        return self.thresholds[claim]


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Test:
    """One measured quantity of one model judged against its rule ``value op threshold``."""

    measure: str
    value: float
    low: float
    high: float
    op: str
    threshold: float
    unit: str = ""
    detail: str = ""

    @property
    def verdict(self) -> str:
        if not all(np.isfinite([self.value, self.low, self.high])):
            return "not measured"
        holds = OPERATORS[self.op]
        at_low, at_high = holds(self.low, self.threshold), holds(self.high, self.threshold)
        if at_low and at_high:
            return "supported"
        return "inconclusive" if at_low or at_high else "not supported"

    @property
    def rule(self) -> str:
        return f"{self.op} {_number(self.threshold)}{self.unit}"


@dataclass(frozen=True)
class ModelVerdict:
    """A claim's judgement of one model: its tests and a note (missing or excluded runs)."""

    dataset: str
    model: str
    variant: str
    tests: tuple[Test, ...] = ()
    note: str = ""

    @property
    def verdict(self) -> str:
        verdicts = [test.verdict for test in self.tests]
        if not verdicts:
            return "not measured"
        for verdict in ("not supported", "not measured", "inconclusive"):
            if verdict in verdicts:
                return verdict
        return "supported"


@dataclass(frozen=True)
class ClaimResult:
    """One claim: its statement, rule, the measure its verdict rests on, and one verdict per model."""

    id: str
    statement: str
    rule: str
    basis: str
    models: tuple[ModelVerdict, ...] = field(default_factory=tuple)

    def labels(self) -> list[str]:
        """A short label per model: its name, plus dataset and variant where several are judged."""
        frame = pd.DataFrame([dataclasses.asdict(m) for m in self.models], columns=GROUP_KEYS + ["tests", "note"])
        return list(tables.group_labels(frame)) if len(frame) else []

    @property
    def summary(self) -> str:
        """'supported on 2 of 3 models: cnn, cnn_deep; not supported on mlp' (and so on)."""
        if not self.models:
            return "not measured: no model has the runs this claim needs"
        by_verdict: dict[str, list[str]] = {}
        for label, model in zip(self.labels(), self.models):
            by_verdict.setdefault(model.verdict, []).append(label)
        total = len(self.models)
        parts = []
        for verdict in VERDICTS:
            names = by_verdict.get(verdict)
            if names:
                count = f"{len(names)} of {total} models" if total > 1 else "the one model"
                parts.append(f"{verdict} on {count}: {', '.join(names)}")
        return "; ".join(parts)


# ---------------------------------------------------------------- resampling helpers


def accuracy_draws(correct: np.ndarray, seed_weights: np.ndarray, example_weights: np.ndarray) -> np.ndarray:
    """Accuracy (%) of each condition under each resample: (C, R) from ``correct`` (C, S, N), 1/0 per
    condition, seed and test example (NaN rows for a missing run), ``seed_weights`` (R, S) and
    ``example_weights`` (R, N). The same weights serve every condition: the resample is paired."""
    C, S, N = correct.shape
    present = np.isfinite(correct[:, :, 0])
    counts = np.nan_to_num(correct).reshape(C * S, N) @ example_weights.T  # one matrix product: (C·S, R)
    per_seed = (counts / example_weights.sum(1)).reshape(C, S, -1).transpose(0, 2, 1)
    weights = seed_weights[None] * present[:, None, :]
    with np.errstate(invalid="ignore"):
        return 100 * (per_seed * weights).sum(-1) / weights.sum(-1)


def seed_mean_draws(values: np.ndarray, seed_weights: np.ndarray) -> np.ndarray:
    """Mean over seeds of each condition under each resample of seeds: (C, R) from ``values`` (C, S)
    (NaN for a missing run) and ``seed_weights`` (R, S)."""
    present = np.isfinite(values)
    weights = seed_weights[None] * present[:, None, :]
    with np.errstate(invalid="ignore"):
        return (np.nan_to_num(values)[:, None, :] * weights).sum(-1) / weights.sum(-1)


def paired_accuracies(bootstrap: Bootstrap, correct: np.ndarray, *names: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point, draws, seed weights) of the accuracy (%) of each condition of ``correct`` (C, S, N): at the
    data (C,) and under resamples of seeds and test examples shared by every condition (C, R), from the
    generator of ``names`` (the claim and the model); the seed weights (R, S) pair other per-seed values."""
    rng = bootstrap.generator(*names)
    seed_weights = bootstrap.weights(rng, correct.shape[1])
    example_weights = bootstrap.weights(rng, correct.shape[2])
    point = accuracy_draws(correct, np.ones((1, correct.shape[1])), np.ones((1, correct.shape[2])))[:, 0]
    return point, accuracy_draws(correct, seed_weights, example_weights), seed_weights


def judged(bootstrap: Bootstrap, statistic: Callable[[np.ndarray], np.ndarray], point: np.ndarray,
           draws: np.ndarray) -> tuple[float, float, float]:
    """(value, low, high) of ``statistic`` (conditions × draws → draws) at the data and over the resamples."""
    value = float(statistic(point[:, None])[0])
    return (value, *bootstrap.interval(statistic(draws)))


# ---------------------------------------------------------------- the claims


@dataclass(frozen=True)
class Claim:
    """One claim: statement, the rule (a text built from the settings) and its check."""

    id: str
    statement: str
    rule: Callable[[Settings], str]
    basis: str
    needs: tuple[str, ...]
    check: Callable[[Mapping[str, pd.DataFrame], Settings, Mapping[str, str]], list[ModelVerdict]]


def evaluate(measured: Mapping[str, pd.DataFrame], settings: Settings,
             twins: Mapping[str, str] | None = None) -> list[ClaimResult]:
    """Every claim judged on the tables in ``measured`` (by name: ``metrics``, ``predictions``, ``ntk``,
    ``gauss_newton``, ``gauss_newton_predictions``, ``kernel_regression``); a claim whose tables are missing
    has no models judged. ``twins`` maps each deep linear twin's label to its model's (S2's control)."""
    results = []
    for claim in CLAIMS:
        models = (claim.check(measured, settings, twins or {}) if all(name in measured for name in claim.needs)
                  else [])
        results.append(ClaimResult(claim.id, claim.statement, claim.rule(settings), claim.basis, tuple(models)))
    return results


def _groups(frame: pd.DataFrame) -> list[tuple[tuple[str, str, str], pd.DataFrame]]:
    return list(frame.groupby(GROUP_KEYS, sort=True)) if len(frame) else []


def _period_runs(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs with a fixed re-linearisation period K (not switch runs)."""
    return table[table["switch_step"].isna()]


def _excluded_note(finals: pd.DataFrame) -> str:
    diverged = finals[finals["status"] != "ok"]
    if diverged.empty:
        return ""
    runs = ", ".join(f"{_condition(row.K, row.switch_step)} seed {row.seed} (step {row.step})"
                     for row in diverged.itertuples())
    return f"{len(diverged)} diverged run(s) excluded: {runs}"


def _condition(K: float, switch_step) -> str:
    return f"switch t={int(switch_step)}" if pd.notna(switch_step) else f"K={record.format_K(K)}"


def _correct_grid(predictions: pd.DataFrame, conditions: pd.Series, seeds: Sequence[int]) -> np.ndarray:
    """(C, S, N) correctness (1/0, NaN for a missing run) of the trained evaluator's test predictions,
    ``conditions`` giving each prediction row's condition index."""
    rows = predictions.assign(condition=conditions.to_numpy())
    examples = np.sort(rows["example"].unique())
    grid = np.full((int(rows["condition"].max()) + 1, len(seeds), len(examples)), np.nan)
    seed_index = {seed: i for i, seed in enumerate(seeds)}
    for (condition, seed), run in rows.groupby(["condition", "seed"]):
        order = np.searchsorted(examples, run["example"].to_numpy())
        grid[condition, seed_index[seed], order] = (run["prediction"] == run["label"]).to_numpy(np.float64)
    return grid


def _accuracy_conditions(measured: Mapping[str, pd.DataFrame], settings: Settings, claim: str,
                         condition_of: Callable[[pd.DataFrame], pd.Series]):
    """Per model: (group, finals, conditions, point accuracies, resampled accuracies) of its runs.

    ``condition_of(rows)`` maps run rows (RUN_KEYS columns) to a condition label, NaN for runs that do
    not take part; accuracies are of ``tables.TRAINED_EVALUATOR`` on the test split, in %.
    """
    metrics, predictions = measured["metrics"], measured["predictions"]
    predictions = predictions[predictions["evaluator"] == tables.TRAINED_EVALUATOR]
    finals = tables.final_metrics(metrics)
    for group, runs in _groups(finals):
        runs = runs.assign(condition=condition_of(runs))
        runs = runs[runs["condition"].notna()]
        completed = runs[runs["status"] == "ok"]
        labels = sorted(completed["condition"].unique())
        seeds = sorted(runs["seed"].unique())
        index = {label: i for i, label in enumerate(labels)}
        rows = predictions.merge(completed[tables.RUN_KEYS + ["condition"]], on=tables.RUN_KEYS)
        if rows.empty:
            yield group, runs, [], None, None
            continue
        correct = _correct_grid(rows, rows["condition"].map(index), seeds)
        point, draws, _ = paired_accuracies(settings.bootstrap, correct, claim, *group)
        yield group, runs, labels, point, draws


def _differences_detail(labels: Sequence, names: Mapping, differences_point: np.ndarray, differences: np.ndarray,
                        bootstrap: Bootstrap, reference) -> str:
    """'Δ vs K = 1 (pt): K=1500 (1 update) −0.4 [−1.2, +0.4]; …' for every condition but the reference."""
    parts = []
    for i, label in enumerate(labels):
        if label == reference:
            continue
        low, high = bootstrap.interval(differences[i])
        parts.append(f"{names[label]} {differences_point[i]:+.1f} [{low:+.1f}, {high:+.1f}]")
    return "; ".join(parts)


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
    detail = "Δ test accuracy vs K = 1 (pt): " + _differences_detail(
        labels, names, point - point[standard], draws - draws[standard], bootstrap, 1.0)
    return Test(measure, value, low, high, "<=", most, detail=f"K = 1 {point[standard]:.1f}%; {detail}")


def check_c1(measured: Mapping[str, pd.DataFrame], settings: Settings,
             twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C1: per model, the fewest feature updates whose test accuracy is within tolerance of K = 1."""
    tolerance, most = settings["C1"]["tolerance_pt"], settings["C1"]["max_feature_updates"]
    results = []
    period = lambda runs: runs["K"].where(runs["switch_step"].isna())  # noqa: E731
    for group, runs, Ks, point, draws in _accuracy_conditions(measured, settings, "C1", period):
        note = _excluded_note(runs)
        if 1.0 not in Ks or len(Ks) < 2:
            results.append(ModelVerdict(*group, note=_join("needs completed K = 1 runs and another K", note)))
            continue
        updates = np.array([runs.loc[runs["K"] == K, "feature_updates"].max() for K in Ks], np.float64)
        names = {K: f"K={record.format_K(K)} ({int(u)} update{'' if u == 1 else 's'})" for K, u in zip(Ks, updates)}
        test = _smallest_on_par(f"fewest feature updates within {_number(tolerance)} pt of K = 1", updates, Ks, names,
                                point, draws, tolerance, most, settings.bootstrap)
        results.append(ModelVerdict(*group, (test,), note))
    return results


def check_c2(measured: Mapping[str, pd.DataFrame], settings: Settings,
             twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C2: per model, K = 1 minus K = ∞ test accuracy (paired) exceeds the minimum gap."""
    gap = settings["C2"]["min_gap_pt"]
    results = []
    ends = lambda runs: runs["K"].where(runs["switch_step"].isna() & ((runs["K"] == 1) | np.isinf(runs["K"])))  # noqa: E731
    for group, runs, Ks, point, draws in _accuracy_conditions(measured, settings, "C2", ends):
        note = _excluded_note(runs)
        if Ks != [1.0, math.inf]:
            results.append(ModelVerdict(*group, note=_join("needs completed K = 1 and K = ∞ runs", note)))
            continue
        difference = lambda accuracy: accuracy[0] - accuracy[1]  # noqa: E731
        value, low, high = judged(settings.bootstrap, difference, point, draws)
        test = Test("K = 1 minus K = ∞ test accuracy", value, low, high, ">", gap, unit=" pt",
                    detail=f"K = 1 {point[0]:.1f}%, K = ∞ {point[1]:.1f}%")
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

    results = []
    for group, runs, fractions, point, draws in _accuracy_conditions(measured, settings, "C4", fraction):
        note = _excluded_note(runs)
        if 1.0 not in fractions or not runs["switch_step"].notna().any():
            results.append(ModelVerdict(*group, note=_join("needs switch runs and completed K = 1 runs", note)))
            continue
        names = {f: "K=∞ (t=0)" if f == 0 else f"t/T={_number(f)}" for f in fractions}
        test = _smallest_on_par(f"earliest switch t/T within {_number(tolerance)} pt of K = 1", np.array(fractions),
                                fractions, names, point, draws, tolerance, latest, settings.bootstrap)
        results.append(ModelVerdict(*group, (test,), note))
    return results


# ---------------------------------------------------------------- C3, S1, S2 (the NTK table)


def _kernel_rows(ntk: pd.DataFrame, metric: str, point: str = tables.TRAINED_POINT) -> pd.DataFrame:
    """Rows of ``metric`` at ``point`` (the trained kernel, θ_lin, by default) of the period runs."""
    rows = _period_runs(ntk)
    return rows[(rows["metric"] == metric) & (rows["point"] == point)]


def _completed_runs(ntk: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple, str]]:
    """The NTK rows of runs that trained to the end, and a note per model group naming its diverged runs
    (their last kernels are not those of the end of training) and runs with degenerate (NaN) kernels."""
    notes: dict[tuple, list[str]] = {}
    diverged = tables.diverged_runs(ntk)
    for group, runs in _groups(diverged):
        notes.setdefault(group, []).append(f"{len(runs)} diverged run(s) excluded: {tables.describe_runs(runs)}")
    completed = ntk[ntk["status"] == "ok"]
    degenerate = completed[completed["value"].isna()].drop_duplicates(tables.RUN_KEYS)
    for group, runs in _groups(degenerate):
        names = ", ".join(f"K={record.format_K(K)} seed {seed}" for K, seed in zip(runs["K"], runs["seed"]))
        notes.setdefault(group, []).append(f"degenerate (zero-norm) kernels, NaN and left out of means: {names}")
    return completed, {group: "; ".join(parts) for group, parts in notes.items()}


def _of_group(rows: pd.DataFrame, group: Sequence[str]) -> pd.DataFrame:
    """The rows of one model group (values of ``GROUP_KEYS``)."""
    return rows[(rows[GROUP_KEYS] == pd.Series(group, index=GROUP_KEYS)).all(axis=1)]


def _seed_matrix(rows: pd.DataFrame, seeds: Sequence[int], column: str = "value") -> np.ndarray:
    """(1, S) values of one condition per seed (NaN for a seed without a row)."""
    values = rows.set_index("seed")[column]
    return np.array([[values.get(seed, np.nan) for seed in seeds]], np.float64)


def _change_per_seed(rows: pd.DataFrame, early_fraction: float, relative_to_start: bool) -> pd.DataFrame | None:
    """Per seed of one run group (a metric's rows against step): the value at the last snapshot in the
    first ``early_fraction`` of training (``early``) and at the last one (``final``), minus the value at
    step 0 if ``relative_to_start``; with those steps. None without step 0 or an early snapshot."""
    if rows.empty:
        return None
    final_step = int(rows["step"].max())
    early_steps = rows.loc[(rows["step"] > 0) & (rows["step"] <= early_fraction * final_step), "step"]
    if early_steps.empty or not (rows["step"] == 0).any():
        return None
    early_step = int(early_steps.max())
    by_step = rows.pivot_table(index="seed", columns="step", values="value")
    start = by_step[0] if relative_to_start else 0.0
    return pd.DataFrame({"early": by_step[early_step] - start, "final": by_step[final_step] - start,
                         "early_step": early_step, "final_step": final_step})


def _seed_draws(settings: Settings, claim: str, group: Sequence[str], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, draws) of the means over seeds of the rows of ``values`` (conditions × seeds)."""
    rng = settings.bootstrap.generator(claim, *group)
    draws = seed_mean_draws(values, settings.bootstrap.weights(rng, values.shape[1]))
    return np.nanmean(values, axis=1), draws


NEEDS_SNAPSHOTS = "needs K = 1 snapshots at step 0, in the early phase and at the end"


def check_c3(measured: Mapping[str, pd.DataFrame], settings: Settings, twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C3: per model, the K = 1 trained kernel ends far from its initial one, by its relative change and
    its centred distance, and most of either change happens in the early phase."""
    thresholds = settings["C3"]
    ntk, notes = _completed_runs(measured["ntk"])
    measures = {"relative_change": "relative change ‖Θ − Θ₀‖/‖Θ₀‖", "centred_distance": "centred distance from Θ₀"}
    results = []
    for group, runs in _groups(tables.nonlinear(_kernel_rows(ntk, "relative_change"))):
        changes = {}
        for metric in measures:
            rows = _of_group(_kernel_rows(ntk, metric), group)
            rows = rows[rows["K"] == 1]
            changes[metric] = _change_per_seed(rows, settings.early_phase_fraction, False) if len(rows) else None
        if any(change is None for change in changes.values()):
            results.append(ModelVerdict(*group, note=_join(NEEDS_SNAPSHOTS, notes.get(group, ""))))
            continue
        seeds = sorted(changes["relative_change"].index)
        values = np.vstack([changes[metric].reindex(seeds)[column].to_numpy()
                            for metric in measures for column in ("final", "early")])
        point, draws = _seed_draws(settings, "C3", group, values)
        early_step = int(changes["relative_change"]["early_step"].iloc[0])
        tests = []
        for index, (metric, name) in enumerate(measures.items()):
            final, early = 2 * index, 2 * index + 1
            tests.append(Test(f"K = 1 {name} at the end",
                              *judged(settings.bootstrap, lambda v, f=final: v[f], point, draws), ">=",
                              thresholds[f"min_{metric}"]))
            tests.append(Test(f"share of the {name.split(' ‖')[0]} reached by step {early_step}",
                              *judged(settings.bootstrap, lambda v, f=final, e=early: v[e] / v[f], point, draws),
                              ">=", thresholds["min_early_share"]))
        results.append(ModelVerdict(*group, tuple(tests), note=_join(_c3_detail(ntk, group), notes.get(group, ""))))
    return results


def _c3_detail(ntk: pd.DataFrame, group: Sequence[str]) -> str:
    """The scale-blind Fort distance and the norm ratio at the end (K = 1, K = ∞), reported beside C3's verdict."""
    parts = []
    for metric, name in (("distance_from_init", "Fort distance"), ("norm_ratio", "norm ratio ‖Θ‖/‖Θ₀‖")):
        rows = _of_group(_kernel_rows(ntk, metric), group)
        final = rows[rows["step"] == rows["step"].max()].groupby("K")["value"].mean()
        parts.append(f"{name} at the end: " + ", ".join(f"K={record.format_K(K)} {_short(v)}" for K, v in final.items()
                                                        if K == 1 or math.isinf(K)))
    return "; ".join(parts)


def check_s1(measured: Mapping[str, pd.DataFrame], settings: Settings, twins: Mapping[str, str]) -> list[ModelVerdict]:
    """S1: per model, the K = 1 centred kernel-target alignment rises, mostly in the early phase; per
    architecture with several depths, deeper models rise faster (per step, over the early phase) and more."""
    thresholds = settings["S1"]
    ntk, notes = _completed_runs(measured["ntk"])
    rises, results = {}, []
    for group, runs in _groups(tables.nonlinear(_kernel_rows(ntk, "alignment"))):
        change = _change_per_seed(runs[runs["K"] == 1], settings.early_phase_fraction, True)
        if change is None:
            results.append(ModelVerdict(*group, note=_join(NEEDS_SNAPSHOTS, notes.get(group, ""))))
            continue
        rises[group] = (change, runs[["architecture", "depth"]].iloc[0])
        values = np.vstack([change["final"].to_numpy(), change["early"].to_numpy()])
        point, draws = _seed_draws(settings, "S1", group, values)
        uncentred = _of_group(_kernel_rows(ntk, "alignment_uncentred"), group)
        uncentred = uncentred[uncentred["K"] == 1]
        uncentred_change = _change_per_seed(uncentred, settings.early_phase_fraction, True)
        detail = (f"uncentred alignment rise {uncentred_change['final'].mean():+.3f}, "
                  f"{uncentred_change['early'].mean():+.3f} by step {int(change['early_step'].iloc[0])}"
                  if uncentred_change is not None else "")
        tests = (Test("K = 1 centred alignment rise over training", *judged(settings.bootstrap, lambda v: v[0], point, draws),
                      ">=", thresholds["min_rise"], detail=detail),
                 Test(f"share of the rise reached by step {int(change['early_step'].iloc[0])}",
                      *judged(settings.bootstrap, lambda v: v[1] / v[0], point, draws), ">=", thresholds["min_early_share"]))
        results.append(ModelVerdict(*group, tests, notes.get(group, "")))
    return results + _compare_depths(rises, settings)


def _compare_depths(rises: dict, settings: Settings) -> list[ModelVerdict]:
    """Per (dataset, variant, architecture) with models of several depths, each deeper model against the
    next shallower one: the early rise per 1000 steps and the final rise of the centred alignment, deeper
    minus shallower (> 0: 'faster and larger in deeper networks')."""
    by_architecture: dict = {}
    for (dataset, model, variant), (change, info) in rises.items():
        if pd.notna(info["depth"]):
            by_architecture.setdefault((dataset, variant, info["architecture"]), []).append((int(info["depth"]), model, change))
    results = []
    for (dataset, variant, architecture), models_ in sorted(by_architecture.items()):
        models_.sort(key=lambda item: item[0])
        for (depth_a, model_a, a), (depth_b, model_b, b) in zip(models_, models_[1:]):
            seeds = sorted(set(a.index) | set(b.index))
            rate = lambda change: 1000 * change["early"] / change["early_step"]  # noqa: E731
            values = np.vstack([rate(b).reindex(seeds), rate(a).reindex(seeds), b["final"].reindex(seeds),
                                a["final"].reindex(seeds)])
            label = f"{model_b} vs {model_a} (depth {depth_b} vs {depth_a})"
            point, draws = _seed_draws(settings, "S1", (dataset, label, variant), values)
            tests = (Test("deeper minus shallower: early rise per 1000 steps",
                          *judged(settings.bootstrap, lambda v: v[0] - v[1], point, draws), ">", 0.0,
                          detail=f"{model_b} {point[0]:+.3f}, {model_a} {point[1]:+.3f}"),
                     Test("deeper minus shallower: rise over training",
                          *judged(settings.bootstrap, lambda v: v[2] - v[3], point, draws), ">", 0.0,
                          detail=f"{model_b} {point[2]:+.3f}, {model_a} {point[3]:+.3f}"))
            results.append(ModelVerdict(dataset, label, variant, tests))
    return results


def specialisation_contrast(ntk: pd.DataFrame, metric: str = "specialisation") -> pd.DataFrame:
    """Per period run and snapshot step, the trained kernel's specialisation contrast for ``metric``
    (``specialisation`` or ``specialisation_backbone``): mean diagonal minus mean off-diagonal entry of
    its class-specialisation matrix (0 for kernels that treat every class alike). Columns
    ``RUN_KEYS``, activation, step, contrast."""
    entries = _kernel_rows(ntk, metric)
    diagonal = entries["output_class"] == entries["target_class"]
    keys = tables.RUN_KEYS + ["activation", "step"]
    on = entries[diagonal].groupby(keys, dropna=False)["value"].mean()
    off = entries[~diagonal].groupby(keys, dropna=False)["value"].mean()
    return (on - off).rename("contrast").reset_index()


def _final_contrasts(ntk: pd.DataFrame, metric: str) -> pd.DataFrame:
    contrasts = specialisation_contrast(ntk, metric)
    return contrasts.sort_values("step").groupby(tables.RUN_KEYS, dropna=False).tail(1)


def check_s2(measured: Mapping[str, pd.DataFrame], settings: Settings, twins: Mapping[str, str]) -> list[ModelVerdict]:
    """S2: per model with a deep linear twin, the final specialisation contrast of the backbone kernel
    at K = 1 exceeds the twin's (same seeds)."""
    gain = settings["S2"]["min_contrast_gain"]
    ntk, notes = _completed_runs(measured["ntk"])
    backbone = _final_contrasts(ntk, "specialisation_backbone")
    full = _final_contrasts(ntk, "specialisation")
    twin_of = {model: twin for twin, model in twins.items()}
    results = []
    for group, runs in _groups(tables.nonlinear(backbone)):
        dataset, model, variant = group
        twin = backbone[(backbone["model"] == twin_of.get(model)) & (backbone["dataset"] == dataset)
                        & (backbone["variant"] == variant) & (backbone["K"] == 1)]
        standard = runs[runs["K"] == 1]
        note = _join(notes.get(group, ""), notes.get((dataset, twin_of.get(model), variant), ""))
        if model not in twin_of or twin.empty or standard.empty:
            results.append(ModelVerdict(*group, note=_join("needs completed K = 1 runs of the model and of its deep "
                                                           "linear twin (config deep_linear.models)", note)))
            continue
        seeds = sorted(set(standard["seed"]) | set(twin["seed"]))
        values = np.vstack([_seed_matrix(standard, seeds, "contrast"), _seed_matrix(twin, seeds, "contrast")])
        point, draws = _seed_draws(settings, "S2", group, values)

        def mean_contrast(table: pd.DataFrame, label: str, K: float) -> str:
            rows = table[(table["model"] == label) & (table["dataset"] == dataset) & (table["variant"] == variant)
                         & (table["K"] == K)]
            return f"{rows['contrast'].mean():+.3f}" if len(rows) else "—"

        detail = (f"backbone contrast {model} {point[0]:+.3f}, {twin_of[model]} {point[1]:+.3f}; full kernel "
                  f"{model} {mean_contrast(full, model, 1.0)}, {twin_of[model]} {mean_contrast(full, twin_of[model], 1.0)}; "
                  f"{model} K = ∞ (frozen) backbone {mean_contrast(backbone, model, math.inf)}")
        test = Test(f"final backbone specialisation contrast, {model} minus its deep linear twin",
                    *judged(settings.bootstrap, lambda v: v[0] - v[1], point, draws), ">", gain, detail=detail)
        results.append(ModelVerdict(*group, (test,), note))
    return results


# ---------------------------------------------------------------- C5, C6 (solver tables)


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
    return np.vstack([_seed_matrix(completed[(completed["method"] == method) & (completed["K"] == K)], seeds, column)
                      for method in tables.GAUSS_NEWTON_METHODS for K in Ks])


def check_c5(measured: Mapping[str, pd.DataFrame], settings: Settings,
             twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C5: per model and loss, from iterative linearisation (IL) and damped Gauss-Newton (GN) at λ = 1/(ηK):
    (a) for large K (at most ``max_rounds`` rounds) IL's test accuracy is within ``tolerance_pt`` of GN's;
    (b) GN's damping orders the kernel change (|Spearman ρ| of λ and the relative kernel change);
    (c) the direction of the damping's effect on generalisation (signed ρ of λ and GN's test accuracy)
    against "more damping generalises better". All on the trained model (``tables.TRAINED_EVALUATOR``:
    f_lin and its kernel at θ_lin); the network at θ is reported beside it. Intervals resample seeds and
    test examples together, paired across methods and periods."""
    options = settings["C5"]
    table, predictions = measured["gauss_newton"], measured["gauss_newton_predictions"]
    results = []
    for (dataset, model, loss), runs in table.groupby(["dataset", "model", "loss"], sort=True) if len(table) else []:
        failed = runs[(runs["status"] != "ok") & (runs["evaluator"] == tables.TRAINED_EVALUATOR)]
        note = ("" if failed.empty else f"{len(failed)} diverged run(s) excluded: " + ", ".join(
            f"{row.method} K={record.format_K(row.K)} seed {row.seed}" for row in failed.itertuples()))
        Ks = sorted(runs["K"].unique())
        seeds = sorted(runs["seed"].unique())
        trained, network = (runs[runs["evaluator"] == evaluator] for evaluator in (tables.TRAINED_EVALUATOR, "network"))
        rows = predictions[(predictions["dataset"] == dataset) & (predictions["model"] == model)
                           & (predictions["loss"] == loss) & (predictions["evaluator"] == tables.TRAINED_EVALUATOR)]
        if len(Ks) < 3 or rows.empty:
            results.append(ModelVerdict(dataset, model, loss, note=_join("needs completed runs at >= 3 periods K", note)))
            continue
        index = {(method, K): i for i, (method, K) in
                 enumerate((method, K) for method in tables.GAUSS_NEWTON_METHODS for K in Ks)}
        correct = _correct_grid(rows, pd.Series([index[(m, K)] for m, K in zip(rows["method"], rows["K"])]), seeds)
        accuracy, accuracy_resampled, seed_weights = paired_accuracies(settings.bootstrap, correct, "C5", dataset,
                                                                       model, loss)
        change = _c5_runs(trained, Ks, seeds, "relative_change")
        change_point, change_resampled = np.nanmean(change, 1), seed_mean_draws(change, seed_weights)
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
            detail="IL − GN: " + _differences_detail(
                large, {i: f"K={record.format_K(Ks[i])} ({rounds[Ks[i]]} round{'s' * (rounds[Ks[i]] != 1)}, "
                           f"λ={damping[i]:.3g})" for i in large}, gaps_point[large], gaps[large], bootstrap, None)
            if large else f"no K has at most {options['max_rounds']} rounds")

        def signed(values: np.ndarray) -> str:
            return f"{spearman(damping, np.nanmean(values, 1)[:, None])[0]:+.2f}"

        network_change = _c5_runs(network, Ks, seeds, "relative_change")
        network_accuracy = _c5_runs(network, Ks, seeds, "test_accuracy")
        ordering = Test("|Spearman ρ| of λ and GN's relative kernel change (at θ_lin)",
                        *judged(bootstrap, lambda v: np.abs(spearman(damping, v[gn])), change_point, change_resampled),
                        ">=", options["min_rank_correlation"],
                        detail=f"signed ρ: GN {signed(change[gn])}, IL {signed(change[il])}; network's kernel at θ: "
                               f"GN {signed(network_change[gn])}, IL {signed(network_change[il])}")
        direction = Test("Spearman ρ of λ and GN's test accuracy (signed)",
                         *judged(bootstrap, lambda v: spearman(damping, v[gn]), accuracy, accuracy_resampled), ">", 0.0,
                         detail=f"GN at the most damped λ={damping[0]:.3g} {accuracy[gn][0]:.1f}%, least damped "
                                f"λ={damping[-1]:.3g} {accuracy[gn][-1]:.1f}%; ρ of IL {signed(accuracy[il, None])}; "
                                f"network at θ: GN {signed(network_accuracy[gn])}, IL {signed(network_accuracy[il])}")
        results.append(ModelVerdict(dataset, model, loss, (agreement, ordering, direction), note))
    return results


def kernel_regression_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, model, seed) and step: the largest |trained − closed form| over the test outputs,
    the test accuracy and train loss of each, the condition number and the last step ``steps``. At step inf
    (kernel regression) ``difference`` compares the trained model at its last step, and ``convergence_gap``
    is the largest |closed form at the last step − kernel regression|: how far from t → ∞ the run stopped."""
    rows = []
    for (dataset, model, seed), run in table.groupby(["dataset", "model", "seed"], sort=True):
        last = run.loc[np.isfinite(run["step"]), "step"].max()
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


def check_c6(measured: Mapping[str, pd.DataFrame], settings: Settings,
             twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C6: per model, the trained K = ∞ model's test outputs equal the closed form at every compared step
    (largest deviation over test outputs, the worst seed); at t → ∞ it equals kernel regression where the
    run got there (the closed form at its last step is within the tolerance of kernel regression),
    otherwise the note says how far it stopped: the finite steps test the dynamics whose limit it is."""
    tolerance = settings["C6"]["max_difference"]
    summary = kernel_regression_summary(measured["kernel_regression"])
    results = []
    for (dataset, model), runs in summary.groupby(["dataset", "model"], sort=True) if len(summary) else []:
        seeds = sorted(runs["seed"].unique())
        weights = settings.bootstrap.weights(settings.bootstrap.generator("C6", dataset, model), len(seeds))

        def largest(values: np.ndarray) -> tuple[float, float, float]:
            """The largest of the seeds' values, with its interval over resamples of the seeds."""
            draws = np.where(weights > 0, values[None, :], -np.inf).max(1)
            return (float(values.max()), *settings.bootstrap.interval(draws))

        tests, note = [], ""
        for step, at in runs.groupby("step", sort=True):
            values = at.set_index("seed")["difference"].reindex(seeds).to_numpy()
            if np.isinf(step):
                gap = float(at["convergence_gap"].max())
                if gap > tolerance:
                    note = (f"t → ∞ not reached by step {int(at['steps'].max()):,}: the closed form there is still "
                            f"{gap:.2g} from kernel regression (condition number {at['condition_number'].max():.2g}); "
                            "the finite steps test the dynamics whose limit it is")
                    continue
                tests.append(Test("t → ∞: largest |trained (last step) − kernel regression|", *largest(values), "<=",
                                  tolerance, detail=f"closed form at the last step is {gap:.2g} from kernel regression"))
                continue
            tests.append(Test(f"t = {int(step):,}: largest |trained − closed form|", *largest(values), "<=", tolerance,
                              detail=f"train loss {at['trained_train_loss'].max():.2g} (closed form "
                                     f"{at['closed_form_train_loss'].max():.2g})"))
        results.append(ModelVerdict(dataset, model, "", tuple(tests), note))
    return results


# ---------------------------------------------------------------- the claims, in order


def _number(value: float) -> str:
    return f"{value:g}"


def _join(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "Iterative linearisation performs on par with standard training (K = 1), even with very "
                "infrequent feature updates.",
          lambda s: (f"per model: the fewest feature updates ⌈T/K⌉ − 1 among periods K whose final test accuracy is "
                     f"within {_number(s['C1']['tolerance_pt'])} pt of K = 1 (paired) is at most "
                     f"{_number(s['C1']['max_feature_updates'])}"),
          "final test accuracy of f_lin per K, paired with K = 1", ("metrics", "predictions"), check_c1),
    Claim("C2", "Feature learning is essential: linearised training (K = ∞) generalises clearly worse than the "
                "network (K = 1).",
          lambda s: f"per model: K = 1 minus K = ∞ final test accuracy (paired) is more than {_number(s['C2']['min_gap_pt'])} pt",
          "final test accuracy of K = 1 and K = ∞", ("metrics", "predictions"), check_c2),
    Claim("C3", "The empirical NTK changes substantially during training, most in the first phase of training.",
          lambda s: (f"per model: the K = 1 trained kernel (trace NTK on the probe set) ends with relative change "
                     f"‖Θ − Θ₀‖/‖Θ₀‖ >= {_number(s['C3']['min_relative_change'])} and centred distance from Θ₀ >= "
                     f"{_number(s['C3']['min_centred_distance'])}, and >= {s['C3']['min_early_share']:.0%} of each is "
                     f"reached in the first {s.early_phase_fraction:.0%} of training"),
          "relative change and centred distance of the trace NTK from initialisation (the scale-blind Fort distance "
          "is reported, not judged)", ("ntk",), check_c3),
    Claim("C4", "Some early feature learning suffices: training normally for t steps, then linearising at θ_t, "
                "approaches standard training.",
          lambda s: (f"per model: the earliest switch step t/T (K = ∞ as t = 0, K = 1 as t = T) whose final test "
                     f"accuracy is within {_number(s['C4']['tolerance_pt'])} pt of K = 1 (paired) is at most "
                     f"{_number(s['C4']['max_switch_fraction'])}"),
          "final test accuracy of the switch runs, paired with K = 1", ("metrics", "predictions"), check_c4),
    Claim("C5", "With large K, iterative linearisation is a damped Gauss-Newton method; the damping controls "
                "feature learning and generalisation.",
          lambda s: (f"per model and loss, iterative linearisation (IL: gradient descent with step η, period K, T steps) "
                     f"against damped Gauss-Newton (GN: T/K proximal rounds of damping λ = 1/(ηK), the same time ηT) "
                     f"from one initialisation: (a) for every K with at most {s['C5']['max_rounds']} rounds, IL's test "
                     f"accuracy is within {_number(s['C5']['tolerance_pt'])} pt of GN's; (b) |Spearman ρ| of λ and GN's "
                     f"relative kernel change is >= {_number(s['C5']['min_rank_correlation'])}; (c) the direction: "
                     "Spearman ρ of λ and GN's test accuracy is > 0, 'more damping generalises better', a reading "
                     "that rests on a secondary summary of the paper's 2022 version"),
          "test accuracy of the trained linear model f_lin and the relative change of its kernel (at θ_lin) on the "
          "NTK probe set, both methods evaluated at the same points", ("gauss_newton", "gauss_newton_predictions"),
          check_c5),
    Claim("C6", "Under MSE loss and full-batch gradient descent to convergence, K = ∞ equals NTK kernel regression "
                "with the empirical NTK at initialisation.",
          lambda s: (f"per model: at every compared step t the trained linear model's test outputs differ from the "
                     f"closed form f₀ + Θ(x, X) Θ⁻¹ (I − (I − ηΘ/n)^t)(Y − f₀) by at most "
                     f"{_number(s['C6']['max_difference'])} (worst seed), and so do its outputs at the last step from "
                     "kernel regression (t → ∞) where the closed form has converged there"),
          "test outputs of the K = ∞ model trained in float64 and of the closed form with the full empirical NTK at θ₀",
          ("kernel_regression",), check_c6),
    Claim("S1", "(companion) Kernel-target alignment rises fast in an early feature-learning phase, then plateaus; "
                "faster and larger in deeper networks.",
          lambda s: (f"per model: the K = 1 centred kernel-target alignment rises by >= {_number(s['S1']['min_rise'])}, "
                     f">= {s['S1']['min_early_share']:.0%} of the rise in the first {s.early_phase_fraction:.0%} of "
                     "training; per architecture with several depths: the deeper model's early rise per step and its "
                     "rise over training exceed the shallower's"),
          "centred kernel-target alignment of the trace NTK (the uncentred one, dominated by the constant mode of "
          "ReLU kernels, is reported, not judged)", ("ntk",), check_s1),
    Claim("S2", "(companion) Networks with several outputs develop class-specific kernels (kernel "
                "specialisation); deep linear networks do not.",
          lambda s: (f"per model with a deep linear twin: the final specialisation contrast (mean diagonal minus mean "
                     f"off-diagonal of the class-specialisation matrix) of the per-head kernels of the parameters below "
                     f"the readout, at K = 1, exceeds the twin's by more than {_number(s['S2']['min_contrast_gain'])}"),
          "class specialisation of the per-head backbone NTK, against the same network with identity activations",
          ("ntk",), check_s2),
)
"""Every claim, in the order of docs/science.md."""


# ---------------------------------------------------------------- rendering


def to_json(results: Sequence[ClaimResult], settings: Settings) -> dict:
    """The results as a JSON-ready mapping (schema: workflow/schemas/claims.schema.json)."""
    def finite(value: float) -> float | None:
        return float(value) if np.isfinite(value) else None

    return {
        "method": settings.bootstrap.describe(),
        "bootstrap": dataclasses.asdict(settings.bootstrap),
        "claims": [{
            "id": result.id, "statement": result.statement, "rule": result.rule, "basis": result.basis,
            "summary": result.summary,
            "models": [{
                "dataset": model.dataset, "model": model.model, "variant": model.variant, "label": label,
                "verdict": model.verdict, "note": model.note,
                "tests": [{"measure": test.measure, "value": finite(test.value),
                           "interval": [finite(test.low), finite(test.high)], "op": test.op,
                           "threshold": test.threshold, "unit": test.unit, "verdict": test.verdict,
                           "detail": test.detail} for test in model.tests],
            } for label, model in zip(result.labels(), result.models)],
        } for result in results],
    }


def _value(test: Test) -> str:
    if not np.isfinite(test.value):
        return "—"
    if test.unit.strip() == "pt":
        return f"{test.value:+.1f}{test.unit} [{test.low:+.1f}, {test.high:+.1f}]"
    return f"{_short(test.value)} [{_short(test.low)}, {_short(test.high)}]"


def _short(value: float) -> str:
    if not np.isfinite(value):
        return "∞" if value > 0 else "—"
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.3g}"


def _summary_rows(results: Sequence[ClaimResult]) -> list[list[str]]:
    return [[result.id, result.statement, result.summary] for result in results]


def _detail_rows(result: ClaimResult) -> list[list[str]]:
    rows = []
    for label, model in zip(result.labels(), result.models):
        if not model.tests:
            rows.append([label, "—", "—", "—", "not measured", model.note])
        for number, test in enumerate(model.tests):
            notes = _join(test.detail, model.note if number == 0 else "")
            rows.append([label if number == 0 else "", test.measure, _value(test), test.rule,
                         f"{test.verdict}" + (f" (model: {model.verdict})" if len(model.tests) > 1 and number == 0 else ""),
                         notes])
    return rows


DETAIL_COLUMNS = ["model", "measure", "value [95% interval]", "rule", "verdict", "notes"]


def to_markdown(results: Sequence[ClaimResult], settings: Settings) -> str:
    """claims.md: a summary table on top, the method once, then each claim's per-model table."""
    def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
        def cell(text: str) -> str:
            return str(text).replace("|", "\\|").replace("\n", "<br>")

        return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                + ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows])

    lines = ["# The paper's claims, judged per model", "", *table(["claim", "statement", "verdict per model"],
                                                                   _summary_rows(results)),
             "", "## How to read this", "", settings.bootstrap.describe(), ""]
    for result in results:
        lines += [f"## {result.id}: {result.statement}", "", f"**Rule.** {result.rule}. **Rests on:** {result.basis}.",
                  "", f"**Verdict:** {result.summary}.", ""]
        if result.models:
            lines += table(DETAIL_COLUMNS, _detail_rows(result)) + [""]
    return "\n".join(lines)


def to_html(results: Sequence[ClaimResult], settings: Settings) -> str:
    """claims.html: the same content as claims.md as one HTML page (shown inline by the report)."""
    def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td{_css(c)}>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                       for row in rows)
        return f"<table class='claims'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Claims</title><style>",
             "body{font-family:sans-serif;max-width:75em;margin:1em auto;font-size:14px}"
             "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 6px;"
             "vertical-align:top;text-align:left}th{background:#f3f3f3}.supported{background:#e3f4e3}"
             ".not-supported{background:#f8e1e1}.inconclusive{background:#fdf3d8}.not-measured{color:#777}",
             "</style></head><body><h1>The paper's claims, judged per model</h1>",
             table(["claim", "statement", "verdict per model"], _summary_rows(results)),
             f"<h2>How to read this</h2><p>{html.escape(settings.bootstrap.describe())}</p>"]
    for result in results:
        parts.append(f"<h2>{html.escape(result.id)}: {html.escape(result.statement)}</h2>"
                     f"<p><b>Rule.</b> {html.escape(result.rule)}. <b>Rests on:</b> {html.escape(result.basis)}.</p>"
                     f"<p><b>Verdict:</b> {html.escape(result.summary)}.</p>")
        if result.models:
            parts.append(table(DETAIL_COLUMNS, _detail_rows(result)))
    return "\n".join(parts + ["</body></html>"]) + "\n"


def _css(text: object) -> str:
    """The class attribute of a verdict's table cell (for its colour); none for other cells."""
    verdict = str(text).split(" (")[0]
    return f" class='{verdict.replace(' ', '-')}'" if verdict in VERDICTS else ""


def write(results: Sequence[ClaimResult], settings: Settings, markdown: Path, json_path: Path, html_path: Path) -> None:
    """Write claims.md, claims.json and claims.html."""
    markdown.write_text(to_markdown(results, settings))
    json_path.write_text(json.dumps(to_json(results, settings), indent=2, ensure_ascii=False) + "\n")
    html_path.write_text(to_html(results, settings))
