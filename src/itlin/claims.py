"""The paper's claims (C1..C6, S1, S2 of docs/science.md) checked against the measured tables.

Each claim has a decision rule with an explicit threshold (module constants below). All
accuracies are final test accuracies of the trained (linear) evaluator, averaged over seeds;
diverged runs are excluded from the means and reported. The kernel claims (C3, S1, S2) read the
NTK table (``tables.NTK_COLUMNS``), the kernel of the trained linear model averaged over seeds.
A claim is judged per model (model, dataset and variant group) and is 'supported' only if it
holds for every model measured. No JAX is imported here.
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

EARLY_PHASE_FRACTION = 0.1
"""C3, S1: the early phase of training is its first this fraction of steps."""
MIN_EARLY_SHARE = 0.5
"""C3, S1: at least this share of the final change must have happened by the end of the early phase."""
C3_MIN_DISTANCE = 0.1
"""C3: the K = 1 kernel must end at least this kernel distance from its initial value (0: unchanged
up to scale, 1: orthogonal; Fort et al. 2020 report ~0.3-0.6 for CIFAR-10 ResNets)."""
S1_MIN_GAIN = 0.05
"""S1: K = 1 centred kernel-target alignment must rise by at least this much over training."""
S2_MIN_CONTRAST_GAIN = 0.05
"""S2: the specialisation contrast (diagonal minus off-diagonal mean of the class-specialisation
matrix) of K = 1 at the end must exceed that of K = ∞ by more than this."""
C5_MIN_RANK_CORRELATION = 0.8
"""C5: |Spearman ρ| between the damping λ and the NTK distance from initialisation of the
Gauss-Newton runs must reach this: the damping controls feature learning (monotonically)."""
C5_MIN_ACCURACY_RANGE_PT = 2.0
"""C5: the Gauss-Newton runs' final test accuracy must vary by at least this many points over the λ
grid: the damping controls generalisation."""
C6_MAX_DIFFERENCE = 1e-2
"""C6: largest absolute difference, over test examples, output classes and seeds, allowed between the
trained linear model and kernel regression (outputs are one-hot regressions, of order 1)."""

VERDICTS = ("supported", "not supported", "not measured")
COLUMNS = ["claim", "statement", "measured", "rule", "verdict"]


@dataclass(frozen=True)
class Claim:
    """One claim of docs/science.md: its statement, decision rule, and the check measuring it.

    ``check(table)`` takes the table named by ``needs`` (``metrics``, or a table passed to
    ``evaluate`` such as ``ntk``) and returns (measured, verdict).
    """

    id: str
    statement: str
    rule: str
    needs: str
    check: Callable[[pd.DataFrame], tuple[str, str]]


def evaluate(metrics: pd.DataFrame, measurements: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per claim (columns ``COLUMNS``) with what was measured and the verdict.

    ``measurements`` holds the tables of later stages by name (``ntk``, ``gauss_newton``,
    ``kernel_regression``); a claim whose table is missing is 'not measured', saying so in ``measured``.
    """
    available = {**(measurements or {}), "metrics": tables.validate(metrics, "metrics")}
    rows = []
    for claim in CLAIMS:
        if claim.needs not in available:
            measured, verdict = f"needs the '{claim.needs}' table (not produced yet)", "not measured"
        else:
            measured, verdict = claim.check(available[claim.needs])
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


def check_c3(ntk: pd.DataFrame) -> tuple[str, str]:
    """C3: per model, the K = 1 kernel ends far from its initial value and moved mostly early."""
    def judge(curves: pd.DataFrame) -> tuple[str, bool | None]:
        if not (curves["K"] == 1).any():
            return "no K = 1 runs", None
        change = _early_and_final(curves[curves["K"] == 1])
        if change is None:
            return f"no K = 1 snapshot in the first {EARLY_PHASE_FRACTION:.0%} of training", None
        early_step, early, final_step, final = change
        share = early / final if final > 0 else math.nan
        measured = (f"K=1 kernel distance from init {final:.3f} at step {final_step}, {early:.3f} ({share:.0%}) "
                    f"by step {early_step}")
        linearised = curves[np.isinf(curves["K"])]
        if not linearised.empty:
            measured += f"; K=∞ {linearised.sort_values('step')['value'].iloc[-1]:.3f}"
        return measured, bool(final >= C3_MIN_DISTANCE and share >= MIN_EARLY_SHARE)

    return _judge_groups(_trained_kernel_curves(ntk, "distance_from_init"), judge)


def check_s1(ntk: pd.DataFrame) -> tuple[str, str]:
    """S1: per model, K = 1 alignment rises by the minimum gain, mostly early; deeper models of one
    architecture rise more in the early phase and more overall."""
    curves = _trained_kernel_curves(ntk, "alignment")
    if curves.empty:
        return "no runs", "not measured"
    rises = {}

    def judge(rows: pd.DataFrame) -> tuple[str, bool | None]:
        if not (rows["K"] == 1).any():
            return "no K = 1 runs", None
        standard = rows[rows["K"] == 1]
        change = _early_and_final(standard.assign(value=standard["value"] - _initial(standard)))
        if change is None:
            return f"no K = 1 snapshot in the first {EARLY_PHASE_FRACTION:.0%} of training", None
        early_step, early, final_step, final = change
        rises[rows["group"].iloc[0]] = (early, final)
        share = early / final if final > 0 else math.nan
        measured = f"K=1 alignment {_initial(standard):.3f} -> {standard.sort_values('step')['value'].iloc[-1]:.3f}"
        measured += f" (rise {final:+.3f}, {share:.0%} of it by step {early_step})"
        return measured, bool(final >= S1_MIN_GAIN and share >= MIN_EARLY_SHARE)

    text, verdict = _judge_groups(curves, judge)
    depth_texts, depth_outcomes = _compare_depths(curves, rises)
    text += "; depth: " + ("; ".join(depth_texts) or "not compared (one depth per architecture)")
    if verdict == "not measured" or not depth_outcomes:
        return text, verdict
    return text, "supported" if verdict == "supported" and all(depth_outcomes) else "not supported"


def _compare_depths(curves: pd.DataFrame, rises: dict[str, tuple[float, float]]) -> tuple[list[str], list[bool]]:
    """Per architecture (and dataset, variant) with several depths: do deeper models rise more,
    in the early phase and overall? ``rises``: group -> (early rise, final rise)."""
    models = curves[curves["group"].isin(rises)].drop_duplicates("group")
    texts, outcomes = [], []
    for (_, _, architecture), same in models.dropna(subset=["depth"]).groupby(["dataset", "variant", "architecture"]):
        same = same.sort_values("depth")
        if same["depth"].nunique() < 2:
            continue
        rise = [rises[group] for group in same["group"]]
        deeper_faster = all(b[0] >= a[0] for a, b in zip(rise, rise[1:]))
        deeper_larger = all(b[1] >= a[1] for a, b in zip(rise, rise[1:]))
        listing = ", ".join(f"depth {depth}: early {early:+.3f}, final {final:+.3f}"
                            for depth, (early, final) in zip(same["depth"], rise))
        texts.append(f"{architecture} {listing} (deeper faster: {deeper_faster}, larger: {deeper_larger})")
        outcomes.append(deeper_faster and deeper_larger)
    return texts, outcomes


def check_s2(ntk: pd.DataFrame) -> tuple[str, str]:
    """S2: per model, the final specialisation contrast of K = 1 exceeds that of K = ∞ by the minimum."""
    contrasts = specialisation_contrast(ntk)
    final = contrasts.sort_values("step").groupby(tables.RUN_KEYS, dropna=False).tail(1)

    def judge(runs: pd.DataFrame) -> tuple[str, bool | None]:
        means = runs.groupby("K")["contrast"].mean()
        if 1.0 not in means.index or math.inf not in means.index:
            return "needs K = 1 and K = ∞ runs", None
        gain = means[1.0] - means[math.inf]
        measured = f"final contrast K=1 {means[1.0]:+.3f}, K=∞ {means[math.inf]:+.3f}, difference {gain:+.3f}"
        return measured, bool(gain > S2_MIN_CONTRAST_GAIN)

    return _judge_groups(final, judge)


def specialisation_contrast(ntk: pd.DataFrame) -> pd.DataFrame:
    """Per period run and snapshot step, the trained kernel's specialisation contrast: mean diagonal
    minus mean off-diagonal entry of its class-specialisation matrix (0 for a kernel that treats
    every class alike). Columns ``RUN_KEYS``, step, contrast."""
    entries = _period_runs(tables.validate_ntk(ntk, "ntk"))
    entries = entries[(entries["metric"] == "specialisation") & (entries["point"] == tables.TRAINED_POINT)]
    diagonal = entries["output_class"] == entries["target_class"]
    keys = tables.RUN_KEYS + ["step"]
    on = entries[diagonal].groupby(keys, dropna=False)["value"].mean()
    off = entries[~diagonal].groupby(keys, dropna=False)["value"].mean()
    return (on - off).rename("contrast").reset_index()


def _trained_kernel_curves(ntk: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean over seeds of ``metric`` of the trained kernel (``tables.TRAINED_POINT``) per model,
    K and step, for period runs; with the model's group label, architecture and depth."""
    rows = _period_runs(tables.validate_ntk(ntk, "ntk"))
    rows = rows[(rows["metric"] == metric) & (rows["point"] == tables.TRAINED_POINT)]
    keys = ["dataset", "variant", "model", "architecture", "depth", "K", "step"]
    curves = rows.groupby(keys, dropna=False, sort=True)["value"].mean().reset_index()
    return curves.assign(group=tables.group_labels(curves))


def _initial(curve: pd.DataFrame) -> float:
    """Value of a curve (rows with step, value) at its first step."""
    return float(curve.sort_values("step")["value"].iloc[0])


def _early_and_final(curve: pd.DataFrame) -> tuple[int, float, int, float] | None:
    """(early step, value, final step, value) of a curve, the early step being the last snapshot
    in the first ``EARLY_PHASE_FRACTION`` of training; None without one after step 0."""
    curve = curve.sort_values("step")
    final_step = int(curve["step"].iloc[-1])
    early = curve[(curve["step"] > 0) & (curve["step"] <= EARLY_PHASE_FRACTION * final_step)]
    if early.empty:
        return None
    return int(early["step"].iloc[-1]), float(early["value"].iloc[-1]), final_step, float(curve["value"].iloc[-1])


def check_c5(damping: pd.DataFrame) -> tuple[str, str]:
    """C5: per model, the damping λ orders the Gauss-Newton runs' kernel change and moves their accuracy;
    the K-runs' gap to the Gauss-Newton curve at their effective damping is reported."""
    texts, outcomes = [], []
    for model, rows in damping[damping["status"] == "ok"].groupby("model", sort=True):
        solver = rows[rows["method"] == "gauss_newton"].groupby("damping", sort=True)[["test_accuracy", "ntk_distance"]].mean()
        if len(solver) < 3:
            texts.append(f"{model}: needs Gauss-Newton runs at >= 3 damping values, has {len(solver)}")
            continue
        correlation = solver.reset_index()[["damping", "ntk_distance"]].corr(method="spearman").iloc[0, 1]
        accuracy = 100 * solver["test_accuracy"]
        spread = accuracy.max() - accuracy.min()
        outcomes.append(bool(abs(correlation) >= C5_MIN_RANK_CORRELATION and spread >= C5_MIN_ACCURACY_RANGE_PT))
        text = (f"{model}: Spearman ρ(λ, NTK distance) = {correlation:+.2f}; test accuracy "
                f"{accuracy.min():.1f}–{accuracy.max():.1f}% over λ = {solver.index.min():g}–{solver.index.max():g} "
                f"(best at λ = {accuracy.idxmax():g})")
        texts.append(text + _gaps_to_solver(rows, solver))
    diverged = damping[damping["status"] != "ok"]
    note = f" [{len(diverged)} diverged run(s) excluded]" if not diverged.empty else ""
    if not outcomes:
        return ("; ".join(texts) or "no runs") + note, "not measured"
    return "; ".join(texts) + note, "supported" if all(outcomes) else "not supported"


def _gaps_to_solver(rows: pd.DataFrame, solver: pd.DataFrame) -> str:
    """', K-runs minus Gauss-Newton at 1/(ηK): K=10 +1.2 pt, ...' for K-runs inside the λ grid."""
    runs = rows[(rows["method"] == "iterative_linearisation") & (rows["damping"] > 0)]
    means = runs.groupby("K", sort=True).agg(damping=("damping", "first"), accuracy=("test_accuracy", "mean"))
    inside = means[(means["damping"] >= solver.index.min()) & (means["damping"] <= solver.index.max())]
    if inside.empty:
        return "; no K-run's effective damping 1/(ηK) lies inside the λ grid"
    curve = np.interp(np.log(inside["damping"]), np.log(solver.index.to_numpy()), solver["test_accuracy"].to_numpy())
    gaps = ", ".join(f"K={tables.format_K(K)} {100 * gap:+.1f} pt" for K, gap in zip(inside.index, inside["accuracy"] - curve))
    return f"; K-runs minus Gauss-Newton at 1/(ηK): {gaps}"


def kernel_regression_summary(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per model: the largest |f_lin − kernel regression| (all test outputs and seeds), the mean test
    accuracy of each predictor over seeds, and the largest GD steps, final train loss and jitter."""
    rows = []
    for model, runs in predictions.groupby("model", sort=True):
        accuracies = {"linear": [], "kernel_regression": []}
        for _, run in runs.groupby("seed"):
            for column in accuracies:
                outputs = run.pivot(index="example", columns="output_class", values=column)
                labels = run.groupby("example")["label"].first().reindex(outputs.index)
                accuracies[column].append(float((outputs.to_numpy().argmax(1) == labels.to_numpy()).mean()))
        rows.append(dict(model=model, max_difference=float((runs["linear"] - runs["kernel_regression"]).abs().max()),
                         linear_accuracy=float(np.mean(accuracies["linear"])),
                         kernel_accuracy=float(np.mean(accuracies["kernel_regression"])),
                         gd_steps=int(runs["gd_steps"].max()), train_loss=float(runs["train_loss"].max()),
                         jitter=float(runs["jitter"].max())))
    return pd.DataFrame(rows)


def check_c6(predictions: pd.DataFrame) -> tuple[str, str]:
    """C6: per model, the trained K = ∞ linear model's test outputs equal kernel regression's."""
    summary = kernel_regression_summary(predictions)
    if summary.empty:
        return "no kernel-regression runs", "not measured"
    texts = [f"{row.model}: max |f_lin − kernel regression| = {row.max_difference:.2g} after {row.gd_steps:,} GD steps "
             f"(train loss {row.train_loss:.1g}, jitter {row.jitter:.1g}); test accuracy f_lin "
             f"{100 * row.linear_accuracy:.1f}% vs kernel {100 * row.kernel_accuracy:.1f}%"
             for row in summary.itertuples()]
    supported = bool((summary["max_difference"] <= C6_MAX_DIFFERENCE).all())
    return "; ".join(texts), "supported" if supported else "not supported"


def _judge_per_model(metrics: pd.DataFrame,
                     judge: Callable[[pd.DataFrame], tuple[str, bool | None]]) -> tuple[str, str]:
    """Apply ``judge`` to each model's final runs; combine texts and verdicts (all must hold)."""
    finals = tables.final_metrics(metrics)
    finals["accuracy"] *= 100

    def judge_noting_diverged(runs: pd.DataFrame) -> tuple[str, bool | None]:
        text, outcome = judge(runs)
        diverged = runs[runs["status"] == "diverged"]
        if not diverged.empty:
            text += f" [{len(diverged)} diverged run(s) excluded]"
        return text, outcome

    return _judge_groups(finals, judge_noting_diverged)


def _judge_groups(rows: pd.DataFrame, judge: Callable[[pd.DataFrame], tuple[str, bool | None]]) -> tuple[str, str]:
    """Apply ``judge`` to the rows of each model group; combine texts and verdicts (all must hold)."""
    rows = rows.assign(group=tables.group_labels(rows))
    texts, outcomes = [], []
    for group, runs in rows.groupby("group", sort=True):
        text, outcome = judge(runs)
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
          f"per model: the trained kernel of K = 1 (probe set, mean over seeds) ends at kernel distance >= "
          f"{C3_MIN_DISTANCE:g} from initialisation, and >= {MIN_EARLY_SHARE:.0%} of that distance is reached in the "
          f"first {EARLY_PHASE_FRACTION:.0%} of training steps; supported if so for every model (K = ∞ reported)",
          "ntk", check_c3),
    Claim("C4", "Some early feature learning suffices: training normally for t steps, then linearising at θ_t, "
                "approaches standard training as t grows.",
          f"per model: mean final test accuracy vs t (K = ∞ as t = 0, K = 1 as t = T) never drops by more than "
          f"{C4_TOLERANCE_PT:g} pt between consecutive t and ends no lower than it starts; supported if so for "
          f"every model (the smallest t within {C4_TOLERANCE_PT:g} pt of K = 1 is reported)",
          "metrics", check_c4),
    Claim("C5", "With large K, iterative linearisation is a damped Gauss-Newton method; the damping controls "
                "feature learning and generalisation.",
          f"per model, damped Gauss-Newton runs (mean over seeds) over the λ grid: |Spearman ρ| between λ and the NTK "
          f"distance from initialisation >= {C5_MIN_RANK_CORRELATION:g} and final test accuracy spanning >= "
          f"{C5_MIN_ACCURACY_RANGE_PT:g} pt; supported if so for every model (the K-runs' accuracy minus the "
          "Gauss-Newton curve at their effective damping 1/(ηK) is reported, not judged: the sweep's Adam steps are "
          "not η·gradient)", "gauss_newton", check_c5),
    Claim("C6", "Under MSE loss and full-batch gradient descent to convergence, K = ∞ equals NTK kernel regression "
                "with the empirical NTK at initialisation.",
          f"per model: the outputs of the linear model trained by K = ∞ full-batch gradient descent on MSE differ from "
          f"the kernel-regression closed form (empirical NTK at θ₀) by at most {C6_MAX_DIFFERENCE:g} on every test "
          "example, output class and seed; supported if so for every model", "kernel_regression", check_c6),
    Claim("S1", "(companion) Kernel-target alignment rises fast in an early feature-learning phase, then plateaus; "
                "faster and larger in deeper networks.",
          f"per model: K = 1 centred kernel-target alignment rises by >= {S1_MIN_GAIN:g} over training, >= "
          f"{MIN_EARLY_SHARE:.0%} of the rise in the first {EARLY_PHASE_FRACTION:.0%} of steps; per architecture "
          "with several depths: a deeper model rises at least as much by then and at the end; supported if all hold",
          "ntk", check_s1),
    Claim("S2", "(companion) Networks with several outputs develop class-specific kernels (kernel "
                "specialisation); linear networks do not.",
          f"per model: the specialisation contrast (mean diagonal minus mean off-diagonal of the class-"
          f"specialisation matrix, c-th output kernel vs c'-th target) at the end of training is more than "
          f"{S2_MIN_CONTRAST_GAIN:g} higher for K = 1 than for K = ∞ (linearised); supported if so for every model",
          "ntk", check_s2),
)
"""Every claim of docs/science.md, in order."""
