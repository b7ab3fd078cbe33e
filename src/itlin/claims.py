"""The paper's claims (PAPER.md: C1..C6, S1, S2) checked against the measured tables.

Each claim has a decision rule with an explicit threshold (module constants below). All
accuracies are final test accuracies of the trained (linear) evaluator, averaged over seeds;
diverged runs are excluded from the means and reported. A claim is judged per model (model,
dataset and variant group) and is 'supported' only if it holds for every model measured.
No JAX is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from itlin import tables

C1_TOLERANCE_PT = 2.0
"""C1: the best infrequent-update run may be at most this many percentage points below K = 1."""
INFREQUENT_K = 100
"""C1: periods K >= this count as infrequent feature updates (else the fewest updates > 0 are used)."""
C2_MIN_GAP_PT = 1.0
"""C2: K = ∞ must be more than this many percentage points below K = 1."""
C4_TOLERANCE_PT = 1.0
"""C4: largest drop (points) between consecutive switch steps still counted as non-decreasing; also
the distance to K = 1 at which a switch step counts as having recovered standard training."""

VERDICTS = ("supported", "not supported", "not measured")
COLUMNS = ["claim", "statement", "measured", "rule", "verdict"]


@dataclass(frozen=True)
class Claim:
    """One claim of PAPER.md: its statement, decision rule, and the check measuring it.

    ``check(metrics)`` returns (measured, verdict); ``None`` while the stage producing the
    claim's measurements (``needs``, a table name passed to ``evaluate``) does not exist.
    """

    id: str
    statement: str
    rule: str
    needs: str
    check: Callable[[pd.DataFrame], tuple[str, str]] | None


def evaluate(metrics: pd.DataFrame, measurements: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per claim (columns ``COLUMNS``) with what was measured and the verdict.

    ``measurements`` holds the tables of later stages by name (e.g. ``{"ntk": ...}``); a claim
    whose check or table is missing is 'not measured', with the reason in ``measured``.
    """
    metrics = tables.validate(metrics, "metrics")
    measurements = measurements or {}
    rows = []
    for claim in CLAIMS:
        if claim.check is None:
            given = "given, but its check is not implemented yet" if claim.needs in measurements else "not produced yet"
            measured, verdict = f"needs the '{claim.needs}' table ({given})", "not measured"
        else:
            measured, verdict = claim.check(metrics)
        rows.append({"claim": claim.id, "statement": claim.statement, "measured": measured, "rule": claim.rule,
                     "verdict": verdict})
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(claims: pd.DataFrame) -> str:
    """Render the claims table as a GitHub Markdown table (pipes escaped, newlines as <br>)."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(claims.columns) + " |", "|" + "---|" * len(claims.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in claims.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def check_c1(metrics: pd.DataFrame) -> tuple[str, str]:
    """C1: per model, the best infrequent-update period K is within the tolerance of K = 1."""
    def judge(runs: pd.DataFrame) -> tuple[str, bool | None]:
        means = _means_by(runs, "K")
        if 1.0 not in means.index:
            return "no K = 1 runs", None
        periodic = np.isfinite(means.index) & (means.index > 1) & (means["updates"] >= 1)
        candidates = means[periodic].dropna(subset=["accuracy"])
        if candidates.empty:
            return "no runs with finite K > 1 and >= 1 feature update", None
        infrequent = candidates[candidates.index >= INFREQUENT_K]
        if infrequent.empty:
            infrequent = candidates[candidates["updates"] == candidates["updates"].min()]
        best_K = infrequent["accuracy"].idxmax()
        best, standard = infrequent.loc[best_K], means.loc[1.0, "accuracy"]
        difference = best["accuracy"] - standard
        measured = (f"K=1 {standard:.1f}%, best infrequent K={tables.format_K(best_K)} "
                    f"({int(best['updates'])} updates) {best['accuracy']:.1f}%, Δ {difference:+.1f} pt")
        return measured, bool(difference >= -C1_TOLERANCE_PT)

    return _judge_per_model(_period_runs(metrics), judge)


def check_c2(metrics: pd.DataFrame) -> tuple[str, str]:
    """C2: per model, K = ∞ final test accuracy is more than the minimum gap below K = 1."""
    def judge(runs: pd.DataFrame) -> tuple[str, bool | None]:
        means = _means_by(runs, "K")["accuracy"].dropna()
        if 1.0 not in means.index or math.inf not in means.index:
            return "needs completed K = 1 and K = ∞ runs", None
        gap = means[1.0] - means[math.inf]
        return f"K=1 {means[1.0]:.1f}%, K=∞ {means[math.inf]:.1f}%, gap {gap:+.1f} pt", bool(gap > C2_MIN_GAP_PT)

    return _judge_per_model(_period_runs(metrics), judge)


def check_c4(metrics: pd.DataFrame) -> tuple[str, str]:
    """C4: per model, final accuracy is non-decreasing in the switch step t (within the tolerance)."""
    def judge(runs: pd.DataFrame) -> tuple[str, bool | None]:
        switched = runs[runs["switch_step"].notna()]
        if switched.empty:
            return "no switch runs", None
        period = runs[runs["switch_step"].isna()]
        training_length = int(switched["step"].max())
        curve = pd.concat([
            switched.assign(t=switched["switch_step"].astype("int64")),
            period[np.isinf(period["K"])].assign(t=0),
            period[period["K"] == 1].assign(t=training_length),
        ])
        means = _means_by(curve, "t")["accuracy"].dropna()
        if len(means) < 2:
            return "fewer than two switch steps with completed runs", None
        drops = -means.diff().dropna()
        non_decreasing = bool(drops.max() <= C4_TOLERANCE_PT and means.iloc[-1] >= means.iloc[0])
        points = ", ".join(f"t={t}: {accuracy:.1f}" for t, accuracy in means.items())
        measured = (f"{points} (%; t=0 is K=∞, t={training_length} is K=1); "
                    f"largest drop {max(drops.max(), 0):.1f} pt")
        standard = _means_by(period, "K")["accuracy"].get(1.0, np.nan)
        if np.isfinite(standard):
            recovered = means.index[means >= standard - C4_TOLERANCE_PT]
            measured += f"; within {C4_TOLERANCE_PT:g} pt of K=1 from t={recovered.min()}"
        return measured, non_decreasing

    return _judge_per_model(metrics, judge)


def _judge_per_model(metrics: pd.DataFrame,
                     judge: Callable[[pd.DataFrame], tuple[str, bool | None]]) -> tuple[str, str]:
    """Apply ``judge`` to each model's final runs; combine texts and verdicts (all must hold)."""
    finals = tables.final_metrics(metrics)
    finals["accuracy"] *= 100
    finals["group"] = tables.group_labels(finals)
    texts, outcomes = [], []
    for group, runs in finals.groupby("group", sort=True):
        text, outcome = judge(runs)
        diverged = runs[runs["status"] == "diverged"]
        if not diverged.empty:
            text += f" [{len(diverged)} diverged run(s) excluded]"
        texts.append(f"{group}: {text}")
        if outcome is not None:
            outcomes.append(outcome)
    if not outcomes:
        return "; ".join(texts) or "no runs", "not measured"
    return "; ".join(texts), "supported" if all(outcomes) else "not supported"


def _period_runs(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs with a fixed re-linearisation period K (not switch runs)."""
    return metrics[metrics["switch_step"].isna()]


def _means_by(runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """Mean final accuracy (%, completed runs only) and largest feature-update count per ``key``."""
    completed = runs[runs["status"] == "ok"]
    return completed.groupby(key, sort=True).agg(accuracy=("accuracy", "mean"), updates=("feature_updates", "max"))


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "Iterative linearisation performs on par with standard training (K = 1), even with very "
                "infrequent feature updates.",
          f"per model: best final test accuracy among periods K >= {INFREQUENT_K} with >= 1 feature update (else the "
          f"fewest updates > 0) is at most {C1_TOLERANCE_PT:g} pt below K = 1; supported if so for every model",
          "metrics", check_c1),
    Claim("C2", "Feature learning is essential: linearised training (K = ∞) generalises clearly worse than the "
                "network (K = 1).",
          f"per model: final test accuracy of K = ∞ more than {C2_MIN_GAP_PT:g} pt below K = 1; supported if so for "
          "every model", "metrics", check_c2),
    Claim("C3", "The empirical NTK changes substantially during training, most in the first phase of training.",
          "to be defined with the NTK stage (kernel distance from initialisation and kernel velocity vs step)",
          "ntk", None),
    Claim("C4", "Some early feature learning suffices: training normally for t steps, then linearising at θ_t, "
                "approaches standard training as t grows.",
          f"per model: mean final test accuracy vs t (K = ∞ as t = 0, K = 1 as t = T) never drops by more than "
          f"{C4_TOLERANCE_PT:g} pt between consecutive t and ends no lower than it starts; supported if so for "
          f"every model (the smallest t within {C4_TOLERANCE_PT:g} pt of K = 1 is reported)",
          "metrics", check_c4),
    Claim("C5", "With large K, iterative linearisation is a damped Gauss-Newton method; the damping controls "
                "feature learning and generalisation.",
          "to be defined with the Gauss-Newton stage (accuracy and NTK change vs damping λ)", "gauss_newton", None),
    Claim("C6", "Under MSE loss and full-batch gradient descent to convergence, K = ∞ equals NTK kernel regression "
                "with the empirical NTK at initialisation.",
          "to be defined with the kernel-regression stage (trained linear model vs closed form)",
          "kernel_regression", None),
    Claim("S1", "(companion) Kernel-target alignment rises fast in an early feature-learning phase, then plateaus; "
                "faster and larger in deeper networks.",
          "to be defined with the NTK stage (centred kernel-target alignment vs step, per K and depth)", "ntk", None),
    Claim("S2", "(companion) Networks with several outputs develop class-specific kernels (kernel "
                "specialisation); linear networks do not.",
          "to be defined with the NTK stage (per-class alignment matrix at the end of training)", "ntk", None),
)
"""Every claim of PAPER.md, in order."""
