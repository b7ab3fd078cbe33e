"""Tests of the claim verdicts (itlin.claims) on synthetic metrics whose answer is known."""

import math

import pytest

from itlin import claims, tables

NOT_MEASURED_YET = ["C3", "C5", "C6", "S1", "S2"]  # without their tables


def make_metrics(final_accuracy, *, Ks=(1, 10, 100, math.inf), switch_steps=(0, 10, 100), diverged=()):
    """Two models, three seeds, no noise: final test accuracies exactly as ``final_accuracy`` says."""
    return tables.example_metrics(models=("cnn", "mlp"), Ks=Ks, seeds=(0, 1, 2), switch_steps=switch_steps,
                                  steps=1000, eval_every=250, noise=0.0, diverged=diverged,
                                  final_accuracy=final_accuracy)


def accuracies(by_K=None, by_t=None, default=0.90):
    """A ``final_accuracy`` function from a dict K -> accuracy and a dict switch step -> accuracy."""
    def final_accuracy(model, K, switch_step):
        if switch_step is not None:
            return (by_t or {}).get(switch_step, default)
        return (by_K or {}).get(K, default)

    return final_accuracy


def verdicts(metrics):
    return claims.evaluate(metrics).set_index("claim")


def test_one_row_per_claim_in_order_with_the_columns():
    table = claims.evaluate(make_metrics(accuracies()))
    assert list(table.columns) == ["claim", "statement", "measured", "rule", "verdict"]
    assert list(table["claim"]) == ["C1", "C2", "C3", "C4", "C5", "C6", "S1", "S2"]
    assert set(table["verdict"]) <= set(claims.VERDICTS)
    assert table["statement"].str.len().min() > 20 and table["rule"].str.len().min() > 20


def test_later_stage_claims_are_not_measured_and_say_why():
    table = verdicts(make_metrics(accuracies()))
    for claim in NOT_MEASURED_YET:
        assert table.loc[claim, "verdict"] == "not measured"
        assert "not produced yet" in table.loc[claim, "measured"]
    assert "'ntk' table" in table.loc["C3", "measured"]


def test_c2_supported_when_linearised_is_clearly_worse():
    table = verdicts(make_metrics(accuracies({1: 0.95, math.inf: 0.85})))
    assert table.loc["C2", "verdict"] == "supported"
    assert "gap +10.0 pt" in table.loc["C2", "measured"]


@pytest.mark.parametrize("linearised", [0.95, 0.945])
def test_c2_not_supported_when_linearised_is_as_good(linearised):
    table = verdicts(make_metrics(accuracies({1: 0.95, math.inf: linearised})))
    assert table.loc["C2", "verdict"] == "not supported"


def test_c2_not_measured_without_linearised_runs():
    table = verdicts(make_metrics(accuracies(), Ks=(1, 10)))
    assert table.loc["C2", "verdict"] == "not measured"


@pytest.mark.parametrize(("infrequent", "verdict"), [(0.94, "supported"), (0.935, "supported"), (0.925, "not supported")])
def test_c1_follows_the_tolerance_below_K1(infrequent, verdict):
    table = verdicts(make_metrics(accuracies({1: 0.95, 10: 0.95, 100: infrequent, math.inf: 0.80})))
    assert claims.C1_TOLERANCE_PT == 2.0
    assert table.loc["C1", "verdict"] == verdict
    assert "best infrequent K=10² (9 updates)" in table.loc["C1", "measured"]


def test_c1_ignores_frequent_updates_when_infrequent_ones_exist():
    table = verdicts(make_metrics(accuracies({1: 0.95, 10: 0.95, 100: 0.90, math.inf: 0.95})))
    assert table.loc["C1", "verdict"] == "not supported"  # K = 10 and K = ∞ being good does not count


def test_c1_uses_the_fewest_updates_when_no_K_is_infrequent():
    table = verdicts(make_metrics(accuracies({1: 0.95, 10: 0.94, 20: 0.90}), Ks=(1, 10, 20)))
    assert "K=20 (49 updates)" in table.loc["C1", "measured"]
    assert table.loc["C1", "verdict"] == "not supported"


def test_c1_must_hold_for_every_model():
    def final_accuracy(model, K, switch_step):
        return 0.80 if (model == "mlp" and K == 100) else 0.95

    assert verdicts(make_metrics(final_accuracy)).loc["C1", "verdict"] == "not supported"


def test_diverged_runs_are_excluded_and_reported():
    metrics = make_metrics(accuracies({1: 0.95, 100: 0.945, math.inf: 0.85}), diverged=[("cnn", 100.0, 0)])
    table = verdicts(metrics)
    assert table.loc["C1", "verdict"] == "supported"
    assert "cnn: K=1 95.0%, best infrequent K=10² (9 updates) 94.5%" in table.loc["C1", "measured"]
    assert "[1 diverged run(s) excluded]" in table.loc["C1", "measured"]


def test_c4_supported_when_accuracy_grows_with_switch_step():
    by_t = {0: 0.86, 10: 0.89, 100: 0.94}
    table = verdicts(make_metrics(accuracies({1: 0.95, math.inf: 0.85}, by_t)))
    assert table.loc["C4", "verdict"] == "supported"
    assert "within 1 pt of K=1 from t=100" in table.loc["C4", "measured"]


def test_c4_not_supported_when_accuracy_falls_with_switch_step():
    by_t = {0: 0.93, 10: 0.90, 100: 0.88}
    table = verdicts(make_metrics(accuracies({1: 0.95, math.inf: 0.93}, by_t)))
    assert table.loc["C4", "verdict"] == "not supported"
    assert "largest drop 3.0 pt" in table.loc["C4", "measured"]


def test_c4_not_measured_without_switch_runs():
    table = verdicts(make_metrics(accuracies(), switch_steps=()))
    assert table.loc["C4", "verdict"] == "not measured"
    assert "no switch runs" in table.loc["C4", "measured"]


def test_to_markdown_renders_every_row_and_escapes_pipes():
    table = claims.evaluate(make_metrics(accuracies()))
    table.loc[0, "measured"] = "a | b\nc"
    lines = claims.to_markdown(table).splitlines()
    assert lines[0] == "| claim | statement | measured | rule | verdict |"
    assert lines[1] == "|---|---|---|---|---|"
    assert len(lines) == 2 + len(table)
    assert "a \\| b<br>c" in lines[2]
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines[2:])


# ---------------------------------------------------------------- C3, S1, S2 (NTK table)


def ntk_verdicts(**example):
    ntk = tables.example_ntk(**{"Ks": (1, 100, math.inf), "seeds": (0, 1), **example})
    return claims.evaluate(make_metrics(accuracies()), {"ntk": ntk}).set_index("claim")


def test_ntk_claims_supported_when_the_kernel_moves_early_aligns_and_specialises():
    table = ntk_verdicts()
    for claim in ("C3", "S1", "S2"):
        assert table.loc[claim, "verdict"] == "supported", table.loc[claim, "measured"]
    assert "K=∞ 0.000" in table.loc["C3", "measured"]
    assert "deeper faster: True, larger: True" in table.loc["S1", "measured"]


def test_c3_and_s1_not_supported_when_the_change_is_late():
    table = ntk_verdicts(time_constant=0.5)  # a quarter of the final change by 10% of training
    assert table.loc["C3", "verdict"] == "not supported"
    assert table.loc["S1", "verdict"] == "not supported"


@pytest.mark.parametrize("distance", [claims.C3_MIN_DISTANCE * 0.5, claims.C3_MIN_DISTANCE * 2])
def test_c3_follows_the_minimum_distance(distance):
    table = ntk_verdicts(final_distance=lambda model, K: 0.0 if math.isinf(K) else distance)
    assert table.loc["C3", "verdict"] == ("supported" if distance >= claims.C3_MIN_DISTANCE else "not supported")


def test_s1_not_supported_when_the_deeper_model_aligns_less():
    table = ntk_verdicts(alignment_gain=lambda model, K: 0.0 if math.isinf(K) else (0.2 if model == "cnn_deep" else 0.4))
    assert table.loc["S1", "verdict"] == "not supported"
    assert "larger: False" in table.loc["S1", "measured"]


def test_s1_judges_the_rise_alone_with_one_depth_per_architecture():
    table = ntk_verdicts(depths={"cnn": 2, "mlp_wide": 2})
    assert table.loc["S1", "verdict"] == "supported"
    assert "not compared (one depth per architecture)" in table.loc["S1", "measured"]


def test_s2_needs_more_specialisation_than_the_linearised_model():
    table = ntk_verdicts(specialisation_gain=lambda model, K: claims.S2_MIN_CONTRAST_GAIN / 2)
    assert table.loc["S2", "verdict"] == "not supported"
    without_linearised = ntk_verdicts(Ks=(1, 100))
    assert without_linearised.loc["S2", "verdict"] == "not measured"


def test_ntk_claims_not_measured_on_an_empty_ntk_table():
    ntk = tables.example_ntk().iloc[:0]
    table = claims.evaluate(make_metrics(accuracies()), {"ntk": ntk}).set_index("claim")
    assert (table.loc[["C3", "S1", "S2"], "verdict"] == "not measured").all()


# ---------------------------------------------------------------- C5 and C6


def test_c5_supported_when_damping_orders_kernel_change_and_moves_accuracy():
    table = claims.evaluate(make_metrics(accuracies()), {"gauss_newton": tables.example_gauss_newton()}).set_index("claim")
    assert table.loc["C5", "verdict"] == "supported"
    assert "ρ(λ, NTK distance) = +1.00" in table.loc["C5", "measured"]
    assert "K=10³ +0.0 pt" in table.loc["C5", "measured"]  # the K-runs sit on the curve in the example


@pytest.mark.parametrize("accuracy, distance", [
    (lambda model, damping: 0.9, None),                                      # accuracy flat in λ
    (None, lambda model, damping: 0.01 * (round(2 * math.log10(damping)) % 2) if damping else 0.0),  # alternates
])
def test_c5_not_supported_when_damping_controls_nothing(accuracy, distance):
    damping = tables.example_gauss_newton(accuracy=accuracy, distance=distance, dampings=(1e-3, 3e-3, 1e-2, 3e-2, 0.1))
    assert claims.check_c5(damping)[1] == "not supported"


def test_c5_not_measured_with_too_few_dampings_and_reports_diverged():
    damping = tables.example_gauss_newton(dampings=(0.1, 1.0), diverged=[("mlp", 1.0, 0)])
    measured, verdict = claims.check_c5(damping)
    assert verdict == "not measured" and "1 diverged run(s) excluded" in measured


@pytest.mark.parametrize("difference, verdict", [(1e-4, "supported"), (0.05, "not supported")])
def test_c6_follows_the_largest_difference(difference, verdict):
    predictions = tables.example_kernel_regression(difference=difference)
    measured, found = claims.check_c6(predictions)
    assert found == verdict
    assert f"max |f_lin − kernel regression| = {claims.kernel_regression_summary(predictions)['max_difference'].iloc[0]:.2g}" in measured


def test_kernel_regression_summary_counts_argmax_accuracy():
    predictions = tables.example_kernel_regression(difference=0.0)
    summary = claims.kernel_regression_summary(predictions).iloc[0]
    assert summary["linear_accuracy"] == summary["kernel_accuracy"] > 0.9
