"""What a verdict is made of, and the bootstrap that gives its intervals.

A judgement is one or more ``Test``s: a measured quantity, its interval and a rule ``value op
threshold``; a ``ModelVerdict`` combines the tests of one model, a ``ClaimResult`` one claim's
verdicts. ``Bootstrap`` draws the resamples; the helpers below turn a claim's table rows into
per-condition arrays and resample them (seeds, and test examples for accuracies, paired across
conditions). The rules themselves are in the claim modules (accuracy, kernels, solvers).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from itlin import tables

VERDICTS = ("supported", "not supported", "inconclusive", "not measured")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda value, threshold: value >= threshold,
    ">": lambda value, threshold: value > threshold,
    "<=": lambda value, threshold: value <= threshold,
    "<": lambda value, threshold: value < threshold,
}
GROUP_KEYS = ["dataset", "model", "variant"]
"""A 'model' of a verdict: one row of the claims table per value of these (for C5, whose runs have no
variant, per dataset, model and loss)."""


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
        """(resamples, size) multiplicities of a resample with replacement of ``size`` items (none: no columns)."""
        if size == 0:
            return np.zeros((self.resamples, 0))
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
    """The config's ``claims:`` section: the bootstrap, the fewest seeds an interval over seeds may rest
    on, and each claim's thresholds (config/README.md)."""

    bootstrap: Bootstrap
    min_seeds: int
    early_phase_fraction: float
    thresholds: Mapping[str, Mapping[str, float]]

    @classmethod
    def from_config(cls, section: Mapping) -> "Settings":
        """Build from the validated ``claims:`` mapping of a workflow config."""
        section = dict(section)
        return cls(bootstrap=Bootstrap(**section.pop("bootstrap")), min_seeds=int(section.pop("min_seeds")),
                   early_phase_fraction=float(section.pop("early_phase_fraction")),
                   thresholds={claim: dict(values) for claim, values in section.items()})

    def __getitem__(self, claim: str) -> Mapping[str, float]:
        return self.thresholds[claim]

    def too_few_seeds(self, values: np.ndarray) -> str:
        """Why a test whose interval resamples only the seeds of ``values`` (conditions × seeds, NaN where not
        measured) cannot be judged: 'needs at least 3 seeds, 1 measured' when a condition has fewer than
        ``min_seeds`` measured seeds (its interval would have no width that means anything); '' otherwise."""
        measured = int(np.isfinite(values).sum(axis=1).min()) if values.size else 0
        return f"needs at least {self.min_seeds} seeds, {measured} measured" if measured < self.min_seeds else ""

    def few_seeds_note(self, names: Sequence[str], counts: Sequence[int]) -> str:
        """The note of an accuracy test, whose interval resamples test examples as well as seeds, naming the
        conditions (``names``) with fewer than ``min_seeds`` seeds (``counts``): its interval rests on the test
        examples, only on them where a condition has one seed; '' where every condition has enough."""
        counts = [int(count) for count in counts]
        few = [(name, count) for name, count in zip(names, counts) if count < self.min_seeds]
        if not few:
            return ""

        def seeds(count: int) -> str:
            return f"{count} seed{'s' * (count != 1)}"

        listed = (f"{seeds(counts[0])} per condition" if len(few) == len(counts) and len(set(counts)) == 1
                  else ", ".join(f"{name}: {seeds(count)}" for name, count in few))
        resampled = ("test examples only, not seeds" if max(count for _, count in few) <= 1 else
                     "test examples and too few seeds to show the seed-to-seed spread")
        return f"fewer than {self.min_seeds} seeds ({listed}): the interval resamples {resampled}"


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
    lacking: str = ""
    """What the test lacks to be judged although its runs are there (e.g. 'needs at least 3 seeds, 1
    measured'): then it is not measured whatever its interval."""

    @property
    def verdict(self) -> str:
        if self.lacking or not all(np.isfinite([self.value, self.low, self.high])):
            return "not measured"
        holds = OPERATORS[self.op]
        at_low, at_high = holds(self.low, self.threshold), holds(self.high, self.threshold)
        if at_low and at_high:
            return "supported"
        return "inconclusive" if at_low or at_high else "not supported"

    @property
    def rule(self) -> str:
        return f"{self.op} {number(self.threshold)}{self.unit}"


@dataclass(frozen=True)
class ModelVerdict:
    """A claim's judgement of one model: its tests and a note (missing or excluded runs). The model is
    named by its dataset, label and data ``variant`` (none for C5 and C6, whose runs have no variant) and,
    for C5, which trains each model on several losses, its ``loss``."""

    dataset: str
    model: str
    variant: str = ""
    tests: tuple[Test, ...] = ()
    note: str = ""
    loss: str = ""

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
        """A short label per model: its name, plus dataset, variant and loss where several are judged."""
        frame = pd.DataFrame([(m.dataset, m.model, m.variant, m.loss) for m in self.models],
                             columns=[*GROUP_KEYS, "loss"])
        if frame.empty:
            return []
        labels = tables.group_labels(frame)
        if frame["loss"].nunique() > 1:
            labels = labels + " / " + frame["loss"]
        return list(labels)

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
    present = present_runs(correct)
    counts = np.nan_to_num(correct).reshape(C * S, N) @ example_weights.T  # one matrix product: (C·S, R)
    per_seed = (counts / example_weights.sum(1)).reshape(C, S, -1).transpose(0, 2, 1)
    weights = seed_weights[None] * present[:, None, :]
    with np.errstate(invalid="ignore"):
        return 100 * (per_seed * weights).sum(-1) / weights.sum(-1)


def present_runs(correct: np.ndarray) -> np.ndarray:
    """(C, S): whether the run of each condition and seed of ``correct`` (C, S, N) has a prediction for every
    test example (a run with some missing is left out, not counted wrong on them)."""
    return np.isfinite(correct).all(axis=2)


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


def seed_means(values: np.ndarray) -> np.ndarray:
    """(C,) mean over the measured seeds of each condition of ``values`` (C, S); NaN where none is measured."""
    return seed_mean_draws(values, np.ones((1, values.shape[1])))[:, 0]


def judged(bootstrap: Bootstrap, statistic: Callable[[np.ndarray], np.ndarray], point: np.ndarray,
           draws: np.ndarray) -> tuple[float, float, float]:
    """(value, low, high) of ``statistic`` (conditions × draws → draws) at the data and over the resamples;
    a statistic that divides by zero or has NaN inputs gives a NaN (or infinite) value, not a warning."""
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(statistic(point[:, None])[0])
        return (value, *bootstrap.interval(statistic(draws)))


def groups(frame: pd.DataFrame) -> list[tuple[tuple[str, str, str], pd.DataFrame]]:
    """(group, rows) per model group (values of ``GROUP_KEYS``), sorted; none for an empty table."""
    return list(frame.groupby(GROUP_KEYS, sort=True)) if len(frame) else []


def correct_grid(predictions: pd.DataFrame, conditions: pd.Series, count: int, seeds: Sequence[int]) -> np.ndarray:
    """(C, S, N) correctness (1/0, NaN for a missing run) of the trained evaluator's test predictions,
    ``conditions`` giving each prediction row's condition index (of ``count``), the test examples those of
    any run."""
    rows = predictions.assign(condition=conditions.to_numpy())
    examples = np.sort(rows["example"].unique())
    grid = np.full((count, len(seeds), len(examples)), np.nan)
    seed_index = {seed: i for i, seed in enumerate(seeds)}
    for (condition, seed), run in rows.groupby(["condition", "seed"]):
        order = np.searchsorted(examples, run["example"].to_numpy())
        grid[condition, seed_index[seed], order] = (run["prediction"] == run["label"]).to_numpy(np.float64)
    return grid


def seed_matrix(rows: pd.DataFrame, seeds: Sequence[int], column: str = "value") -> np.ndarray:
    """(1, S) values of one condition per seed (NaN for a seed without a row)."""
    values = rows.set_index("seed")[column]
    return np.array([[values.get(seed, np.nan) for seed in seeds]], np.float64)


def differences_detail(labels: Sequence, names: Mapping, differences_point: np.ndarray, differences: np.ndarray,
                       bootstrap: Bootstrap, reference) -> str:
    """'Δ vs K = 1 (pt): K=1500 (1 update) −0.4 [−1.2, +0.4]; …' for every condition but the reference."""
    parts = []
    for i, label in enumerate(labels):
        if label == reference:
            continue
        low, high = bootstrap.interval(differences[i])
        parts.append(f"{names[label]} {formatted(differences_point[i], '+.1f')} [{formatted(low, '+.1f')}, "
                     f"{formatted(high, '+.1f')}]")
    return "; ".join(parts)


# ---------------------------------------------------------------- texts


def number(value: float) -> str:
    """A threshold as the rules write it: 1, 0.5, 1e-05."""
    return f"{value:g}"


def short(value: float) -> str:
    """A measured value in a table cell: integers whole, else three significant digits; ∞, or — for NaN."""
    if not np.isfinite(value):
        return "∞" if value > 0 else "—"
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.3g}"


def formatted(value: float, spec: str) -> str:
    """A measured value in a note, as ``format(value, spec)``; — for NaN (a run or kernel not measured)."""
    return format(value, spec) if np.isfinite(value) else "—"


def join(*parts: str) -> str:
    """The non-empty ``parts`` joined by '; ' (notes and details)."""
    return "; ".join(part for part in parts if part)
