"""The claims in the order of docs/science.md: each one's statement, the rule it is judged by (its text
built from the config's thresholds), what it rests on, the tables it needs and its check; and
``evaluate``, which judges every claim on the tables at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from itlin.claims import accuracy, kernels, phases, solvers, width
from itlin.claims.verdicts import ClaimResult, ModelVerdict, Settings, number


COMPANION_REGIME = ("the companion's regime: full-batch gradient descent on squared loss with a constant step, "
                    "K = 1, networks at several depths and their deep linear twins")
"""What the companion's claims (S1-S5) rest on, in every one's basis: its own regime, not the main paper's."""


@dataclass(frozen=True)
class Claim:
    """One claim: statement, the rule (a text built from the settings) and its check."""

    id: str
    statement: str
    rule: Callable[[Settings], str]
    basis: str
    needs: tuple[str, ...]
    check: Callable[[Mapping[str, pd.DataFrame], Settings, Mapping[str, str]], list[ModelVerdict]]


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "Iterative linearisation performs on par with standard training (K = 1), even with very "
                "infrequent feature updates.",
          lambda s: (f"per model: the fewest feature updates ⌈T/K⌉ − 1 among periods K whose final test accuracy is "
                     f"within {number(s['C1']['tolerance_pt'])} pt of K = 1 (paired) is at most "
                     f"{number(s['C1']['max_feature_updates'])}"),
          "final test accuracy of f_lin per K, paired with K = 1", ("metrics", "predictions"), accuracy.check_c1),
    Claim("C2", "Feature learning is essential: linearised training (K = ∞) generalises clearly worse than the "
                "network (K = 1).",
          lambda s: f"per model: K = 1 minus K = ∞ final test accuracy (paired) is more than {number(s['C2']['min_gap_pt'])} pt",
          "final test accuracy of K = 1 and K = ∞", ("metrics", "predictions"), accuracy.check_c2),
    Claim("C3", "The empirical NTK changes substantially during training, most in the first phase of training.",
          lambda s: (f"per model: the K = 1 trained kernel (trace NTK on the probe set) ends with relative change "
                     f"‖Θ − Θ₀‖/‖Θ₀‖ >= {number(s['C3']['min_relative_change'])} and centred distance from Θ₀ >= "
                     f"{number(s['C3']['min_centred_distance'])}, and >= {s['C3']['min_early_share']:.0%} of each is "
                     f"reached in the first {s.early_phase_fraction:.0%} of training"),
          "relative change and centred distance of the trace NTK from initialisation (the scale-blind Fort distance "
          "is reported, not judged)", ("ntk",), kernels.check_c3),
    Claim("C4", "Some early feature learning suffices: training normally for t steps, then linearising at θ_t, "
                "approaches standard training.",
          lambda s: (f"per model: the earliest switch step t/T (K = ∞ as t = 0, K = 1 as t = T) whose final test "
                     f"accuracy is within {number(s['C4']['tolerance_pt'])} pt of K = 1 (paired) is at most "
                     f"{number(s['C4']['max_switch_fraction'])}"),
          "final test accuracy of the switch runs, paired with K = 1", ("metrics", "predictions"), accuracy.check_c4),
    Claim("C5", "With large K, iterative linearisation is a damped Gauss-Newton method; the damping controls "
                "feature learning and generalisation.",
          lambda s: (f"per model and loss, iterative linearisation (IL: gradient descent with step η, period K, T steps) "
                     f"against damped Gauss-Newton (GN: T/K proximal rounds of damping λ = 1/(ηK), the same time ηT) "
                     f"from one initialisation: (a) for every K with at most {s['C5']['max_rounds']} rounds, IL's test "
                     f"accuracy is within {number(s['C5']['tolerance_pt'])} pt of GN's; (b) |Spearman ρ| of λ and GN's "
                     f"relative change of the network's kernel at θ is >= {number(s['C5']['min_rank_correlation'])}; "
                     "(c) the direction: "
                     "Spearman ρ of λ and GN's test accuracy is > 0, 'more damping generalises better', a reading "
                     "that rests on a secondary summary of the paper's 2022 version"),
          "test accuracy of the trained linear model f_lin (a, c) and the relative change of the network's kernel at "
          "the final θ on the NTK probe set (b; the linear model's at θ_lin, θ₀'s at one round, reported beside it), "
          "both methods evaluated at the same points", ("gauss_newton", "gauss_newton_predictions"),
          solvers.check_c5),
    Claim("C6", "Under MSE loss and full-batch gradient descent to convergence, K = ∞ equals NTK kernel regression "
                "with the empirical NTK at initialisation.",
          lambda s: (f"per model: at every compared step t the trained linear model's test outputs differ from the "
                     f"closed form f₀ + Θ(x, X) Θ⁻¹ (I − (I − ηΘ/n)^t)(Y − f₀) by at most "
                     f"{number(s['C6']['max_difference'])} (worst seed), and so do its outputs at the last step from "
                     "kernel regression (t → ∞) where the closed form has converged there"),
          "test outputs of the K = ∞ model trained in float64 and of the closed form with the full empirical NTK at θ₀",
          ("kernel_regression",), solvers.check_c6),
    Claim("C7", "(the project's own, beyond the papers) NTK theory's prediction: the kernel's relative change after "
                "training vanishes like width^(−1/2) in the theory's regime; whether it falls with width at all in the "
                "paper's.",
          lambda s: (f"per architecture and regime of the width sweep: the exponent of a power law in width fitted to "
                     f"the K = 1 relative change ‖Θ_T − Θ₀‖/‖Θ₀‖ of the trace NTK (log-log least squares over the seeds' "
                     f"means) lies within {number(s['C7']['exponent_tolerance'])} of {number(s['C7']['exponent'])} in "
                     f"the theory's regime ({s['C7']['theory_regime']}), and below −{number(s['C7']['min_fall'])} in "
                     "another; the K = 1 minus K = ∞ accuracy gap and the fewest feature updates on par (C1's "
                     "tolerance) are reported per width"),
          "relative change of the trace NTK on the probe set after training at every width, K = 1; final test "
          "accuracy of f_lin per K (the width sweep's runs, each regime its own)", ("metrics_width", "ntk_width"),
          width.check_c7),
    Claim("S1", "(companion) Kernel-target alignment rises fast in an early feature-learning phase, then plateaus; "
                "faster and larger in deeper networks.",
          lambda s: (f"per model: the K = 1 centred kernel-target alignment rises by >= {number(s['S1']['min_rise'])}, "
                     f">= {s['S1']['min_early_share']:.0%} of the rise in the first {s.early_phase_fraction:.0%} of "
                     "training; per architecture with several depths: the deeper model's early rise per step and its "
                     "rise over training exceed the shallower's"),
          f"centred kernel-target alignment of the trace NTK (the uncentred one, dominated by the constant mode of "
          f"ReLU kernels, is reported, not judged); {COMPANION_REGIME}", ("ntk_companion",), kernels.check_s1),
    Claim("S2", "(companion) Networks with several outputs develop class-specific kernels (kernel "
                "specialisation); deep linear networks do not.",
          lambda s: (f"per model with a deep linear twin, at K = 1 at the end of training: more than "
                     f"{s['S2']['min_dominant_share']:.0%} of the output heads have a kernel (of the parameters below the "
                     "readout) that aligns more with their own class than with any other (the diagonal dominates its "
                     "row of the class-specialisation matrix), and that share exceeds the twin's"),
          "class specialisation of the per-head backbone NTK, against the same network with identity activations (the "
          f"specialisation contrast, mean diagonal minus mean off-diagonal, is reported, not judged); {COMPANION_REGIME}",
          ("ntk_companion",), kernels.check_s2),
    Claim("S3", "(companion) Two phases: in the feature-learning phase the training loss falls faster than a power law "
                "in time; then, in the kernel-gradient-descent phase, as a power law, with little further alignment.",
          lambda s: (f"per network: the log-log slope of the training loss over its late phase (steps "
                     f"{number(s['S3']['late_from'])}·T to T) is < 0 (the power law's exponent), and the slope over its "
                     f"early phase ({number(s['S3']['early_from'])}·T to {number(s['S3']['late_from'])}·T) is steeper "
                     "(more negative) than that exponent; the step at which the alignment levels off is reported"),
          f"training loss of f_lin on the training subset, log-log slopes per seed; {COMPANION_REGIME}",
          ("metrics_companion", "ntk_companion"), phases.check_s3),
    Claim("S4", "(companion) In the feature-learning phase the top eigenfunctions of the NTK quickly align with the "
                "target function.",
          lambda s: (f"per network: the share C(C − 1) of the centred targets' energy in the top C − 1 eigenvectors of "
                     f"the K = 1 trace NTK (C classes) rises by >= {number(s['S4']['min_rise'])} over training, >= "
                     f"{s['S4']['min_early_share']:.0%} of the rise in the first {s.early_phase_fraction:.0%}"),
          f"eigenvectors of the trace NTK on the probe set (C(k) for k = 1 … 2C is reported); {COMPANION_REGIME}",
          ("ntk_companion",), kernels.check_s4),
    Claim("S5", "(companion, its mechanism) Alignment with the target also happens in deep linear networks; "
                "class-specific alignment does not.",
          lambda s: (f"per deep linear twin: its K = 1 centred alignment rises by >= {number(s['S1']['min_rise'])} "
                     f"(S1's threshold), and the share of its heads whose backbone kernel aligns most with their own "
                     f"class stays below {s['S2']['min_dominant_share']:.0%} (S2's)"),
          f"centred alignment and class specialisation of the deep linear twins' NTK; {COMPANION_REGIME}",
          ("ntk_companion",), kernels.check_s5),
)
"""Every claim, in the order of docs/science.md."""


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
