"""Tests of the claim verdicts (itlin.claims): per-model verdicts with bootstrap intervals, on
synthetic tables whose answer is known."""

import functools
import json
import math
import re
import warnings
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import examples
import pytest
import yaml

from itlin import claims, summaries, tables
from itlin.claims import render, verdicts

ROOT = Path(__file__).resolve().parents[1]
SECTION = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["claims"]


def settings(**changes):
    """The default config's claims settings, with ``changes`` (claim -> {key: value}) applied."""
    section = {key: dict(value) if isinstance(value, dict) else value for key, value in SECTION.items()}
    for claim, values in changes.items():
        section[claim].update(values)
    return claims.Settings.from_config(section)


def measured(final_accuracy, *, models=("cnn", "mlp"), Ks=(1, 10, 100, math.inf), switch_steps=(10, 100),
             seeds=(0, 1, 2), n_test=400, agreement=0.9, diverged=()):
    """Metrics (1000 steps) and per-example predictions with final test accuracies as ``final_accuracy``
    says, exactly (no noise): 999, 99, 9 and 0 feature updates for K = 1, 10, 100, ∞."""
    metrics = examples.example_metrics(models=models, Ks=Ks, seeds=seeds, switch_steps=switch_steps, steps=1000,
                                       eval_every=250, noise=0.0, diverged=diverged, final_accuracy=final_accuracy)
    return {"metrics": metrics, "predictions": examples.example_predictions(metrics, n_test=n_test, agreement=agreement)}


def accuracies(by_K=None, by_t=None, default=0.90, per_model=None):
    """A ``final_accuracy`` function from dicts K -> accuracy and switch step -> accuracy (per model if
    ``per_model`` maps a model to its own pair of dicts)."""
    def final_accuracy(model, K, switch_step):
        K_table, t_table = (per_model or {}).get(model, (by_K, by_t))
        if switch_step is not None:
            return (t_table or {}).get(switch_step, default)
        return (K_table or {}).get(K, default)

    return final_accuracy


def result(tables_, claim, settings_=None):
    """The ClaimResult of ``claim``."""
    return next(r for r in claims.evaluate(tables_, settings_ or settings()) if r.id == claim)


def by_model(claim_result):
    return {model.model: model for model in claim_result.models}


# ---------------------------------------------------------------- the rule and the bootstrap


@pytest.mark.parametrize("low, high, op, verdict", [
    (1.5, 2.5, ">=", "supported"), (0.2, 0.8, ">=", "not supported"), (0.5, 1.5, ">=", "inconclusive"),
    (1.0, 1.2, ">=", "supported"), (1.0, 1.2, ">", "inconclusive"), (3, 9, "<=", "supported"),
    (9, 29, "<=", "inconclusive"), (29, 29, "<=", "not supported"), (math.nan, math.nan, "<=", "not measured"),
])
def test_a_test_is_inconclusive_exactly_when_its_interval_straddles_the_threshold(low, high, op, verdict):
    threshold = 10 if op == "<=" else 1.0
    middle = (low + high) / 2
    assert verdicts.Test("x", middle, low, high, op, threshold).verdict == verdict


def test_model_verdict_combines_its_tests():
    def test(low, high):
        return verdicts.Test("x", (low + high) / 2, low, high, ">=", 1.0)

    combine = lambda *tests: verdicts.ModelVerdict("d", "m", "v", tests).verdict  # noqa: E731
    assert combine(test(2, 3), test(2, 3)) == "supported"
    assert combine(test(2, 3), test(0.5, 2)) == "inconclusive"
    assert combine(test(0, 0.5), test(0.5, 2)) == "not supported"
    assert combine() == "not measured"


def test_bootstrap_is_deterministic_and_independent_of_other_models():
    data = measured(accuracies({1: 0.95, 10: 0.945, 100: 0.94, math.inf: 0.85}))
    first = render.to_json(claims.evaluate(data, settings()), settings())
    again = render.to_json(claims.evaluate(measured(accuracies({1: 0.95, 10: 0.945, 100: 0.94, math.inf: 0.85})),
                                           settings()), settings())
    assert first == again
    alone = measured(accuracies({1: 0.95, 10: 0.945, 100: 0.94, math.inf: 0.85}), models=("cnn",))
    cnn_alone = by_model(result(alone, "C2"))["cnn"].tests[0]
    cnn_beside_mlp = by_model(result(data, "C2"))["cnn"].tests[0]
    assert (cnn_alone.low, cnn_alone.high) == (cnn_beside_mlp.low, cnn_beside_mlp.high)
    other_seed = by_model(result(data, "C2", settings(bootstrap={"seed": 1})))["cnn"].tests[0]
    assert (other_seed.low, other_seed.high) != (cnn_alone.low, cnn_alone.high)


def test_accuracy_draws_pair_conditions_and_weight_seeds_and_examples():
    correct = np.array([[[1, 1, 0, 0], [1, 1, 1, 1]], [[1, 0, 0, 0], [np.nan] * 4]], float)  # (C=2, S=2, N=4)
    point = verdicts.accuracy_draws(correct, np.ones((1, 2)), np.ones((1, 4)))[:, 0]
    assert point.tolist() == [75.0, 25.0]  # condition 1 has one seed (the other run is missing)
    draws = verdicts.accuracy_draws(correct, np.array([[2.0, 0.0]]), np.array([[0.0, 0.0, 4.0, 0.0]]))[:, 0]
    assert draws.tolist() == [0.0, 0.0]  # seed 0 twice, example 2 four times, for both conditions
    assert np.isnan(verdicts.accuracy_draws(correct, np.array([[0.0, 2.0]]), np.ones((1, 4)))[1, 0])


def test_paired_interval_is_tighter_than_the_spread_of_either_accuracy():
    data = measured(accuracies({1: 0.95, 10: 0.95, 100: 0.95, math.inf: 0.90}), agreement=0.95)
    gap = by_model(result(data, "C2"))["cnn"].tests[0]
    assert gap.value == pytest.approx(5.0)
    assert gap.low > 3.0 and gap.high < 7.0  # 400 examples: an unpaired interval would be about ±3 pt


# ---------------------------------------------------------------- per-model verdicts and summary


def test_a_claim_that_holds_for_one_model_and_fails_for_another_gets_per_model_verdicts():
    data = measured(accuracies(per_model={"cnn": ({1: 0.95, math.inf: 0.80}, None),
                                          "mlp": ({1: 0.95, math.inf: 0.97}, None)}))
    c2 = result(data, "C2")
    assert {model: verdict.verdict for model, verdict in by_model(c2).items()} == {
        "cnn": "supported", "mlp": "not supported"}
    assert c2.summary == "supported on 1 of 2 models: cnn; not supported on 1 of 2 models: mlp"


def test_c2_straddling_its_threshold_is_inconclusive():
    data = measured(accuracies({1: 0.95, math.inf: 0.94}), agreement=0.5)  # gap 1 pt = the threshold
    gap = by_model(result(data, "C2"))["cnn"].tests[0]
    assert gap.low < 1.0 < gap.high and gap.verdict == "inconclusive"


def test_c2_not_measured_without_linearised_runs_and_says_why():
    model = by_model(result(measured(accuracies(), Ks=(1, 10)), "C2"))["cnn"]
    assert model.verdict == "not measured" and "K = ∞" in model.note


def test_c1_reports_the_fewest_updates_within_tolerance_on_a_hand_made_table():
    # 999, 99, 9, 0 updates for K = 1, 10, 100, ∞; K = 100 is 0.25 pt below K = 1: within 1 pt
    data = measured(accuracies({1: 0.95, 10: 0.95, 100: 0.9475, math.inf: 0.80}), agreement=1.0)
    test = by_model(result(data, "C1"))["cnn"].tests[0]
    assert test.value == 9 and (test.low, test.high) == (9, 9)
    assert test.verdict == "supported"  # 9 <= 10
    assert "K=10² (9 updates) -0.2" in test.detail


def test_c1_fewest_updates_above_the_maximum_is_not_supported():
    data = measured(accuracies({1: 0.95, 10: 0.95, 100: 0.90, math.inf: 0.80}), agreement=1.0)
    test = by_model(result(data, "C1"))["cnn"].tests[0]
    assert test.value == 99 and test.verdict == "not supported"


def test_c1_counts_linearised_training_when_it_is_on_par():
    data = measured(accuracies({1: 0.95, 10: 0.95, 100: 0.95, math.inf: 0.95}), agreement=1.0)
    assert by_model(result(data, "C1"))["cnn"].tests[0].value == 0


def test_c1_interval_spans_counts_when_a_period_is_at_the_tolerance():
    data = measured(accuracies({1: 0.95, 10: 0.95, 100: 0.94, math.inf: 0.80}), agreement=0.5)
    test = by_model(result(data, "C1"))["cnn"].tests[0]
    assert test.low == 9 and test.high >= 99 and test.verdict == "inconclusive"


def test_diverged_runs_are_excluded_and_named():
    data = measured(accuracies({1: 0.95, 10: 0.95, 100: 0.95, math.inf: 0.85}), diverged=[("cnn", 100.0, 0)])
    model = by_model(result(data, "C1"))["cnn"]
    assert model.tests[0].value == 9  # the two completed K = 100 runs still count
    assert "1 diverged run(s) excluded: K=10² seed 0" in model.note


def test_c4_reports_the_earliest_switch_fraction_within_tolerance():
    data = measured(accuracies({1: 0.95, math.inf: 0.85}, {10: 0.90, 100: 0.948}), agreement=1.0)
    test = by_model(result(data, "C4"))["cnn"].tests[0]
    assert test.value == pytest.approx(0.1) and test.verdict == "supported"  # t = 100 of 1000 steps


def test_c4_not_supported_when_only_late_switches_recover():
    data = measured(accuracies({1: 0.95, math.inf: 0.85}, {10: 0.88, 100: 0.90}), agreement=1.0)
    test = by_model(result(data, "C4"))["cnn"].tests[0]
    assert test.value == 1.0 and test.verdict == "not supported"


def test_c4_not_measured_without_switch_runs():
    model = by_model(result(measured(accuracies(), switch_steps=()), "C4"))["cnn"]
    assert model.verdict == "not measured" and "switch runs" in model.note


def test_claims_missing_their_tables_are_not_measured():
    results = {r.id: r for r in claims.evaluate(measured(accuracies()), settings())}
    for claim in ("C3", "C5", "C6", "S1", "S2"):
        assert results[claim].models == ()
        assert results[claim].summary.startswith("not measured")


# ---------------------------------------------------------------- C5 and C6


def c5_tables(accuracy=None, change=None, network_change=None, diverged=(), n_test=2000, agreement=1.0):
    """A C5 table (mlp, both losses, K = 3 … 300 of T = 300: 100, 30, 10, 3, 1 rounds) and its predictions."""
    table = examples.example_gauss_newton(accuracy=accuracy, change=change, network_change=network_change,
                                          diverged=diverged)
    return {"gauss_newton": table,
            "gauss_newton_predictions": examples.example_gauss_newton_predictions(table, n_test=n_test,
                                                                                 agreement=agreement)}


def c5_tests(data, loss="mse"):
    model = next(m for m in result(data, "C5").models if m.loss == loss)
    return model, {name: test for name, test in zip(("agreement", "ordering", "direction"), model.tests)}


def test_c5_supported_when_the_methods_agree_damping_orders_the_kernel_and_helps_generalisation():
    model, tests = c5_tests(c5_tables())  # GN 0.3 pt below IL everywhere; both rise with log λ
    assert tests["agreement"].value == pytest.approx(0.3, abs=0.06) and tests["agreement"].verdict == "supported"
    assert "K=30 (10 rounds" in tests["agreement"].detail and "K=10 (30 rounds" not in tests["agreement"].detail
    assert tests["ordering"].value == pytest.approx(1.0) and tests["ordering"].verdict == "supported"
    assert tests["direction"].value == pytest.approx(1.0) and tests["direction"].verdict == "supported"
    assert model.verdict == "supported" and {m.loss for m in result(c5_tables(), "C5").models} == {"mse", "cross_entropy"}


def test_c5_agreement_looks_only_at_large_K():
    def accuracy(model, loss, method, damping):  # 5 pt apart at the two smallest K (100 and 30 rounds) only
        return 0.93 - 0.05 * (method == "gauss_newton" and damping > 2)

    assert c5_tests(c5_tables(accuracy=accuracy))[1]["agreement"].verdict == "supported"

    def far_apart(model, loss, method, damping):  # 3 pt apart at one round
        return 0.93 - 0.03 * (method == "gauss_newton" and damping < 0.2)

    agreement = c5_tests(c5_tables(accuracy=far_apart))[1]["agreement"]
    assert agreement.value == pytest.approx(3.0, abs=0.06) and agreement.verdict == "not supported"


def zigzag_change(model, loss, method, damping):
    """A kernel change up and down along the λ grid of ``c5_tables``: no ordering by λ."""
    return {0: 0.2, 1: 0.3, 2: 0.1, 3: 0.3, 4: 0.2}[round(math.log10(damping * 9) / math.log10(10 / 3))]


def test_c5_ordering_is_a_rank_correlation_of_either_sign_and_the_direction_is_signed():
    tests = c5_tests(c5_tables(network_change=zigzag_change))[1]
    assert tests["ordering"].value < 0.5 and tests["ordering"].verdict == "not supported"
    falling = c5_tests(c5_tables(network_change=lambda model, loss, method, damping: -math.log10(damping)))[1]["ordering"]
    assert falling.value == pytest.approx(1.0) and "signed ρ: GN -1.00" in falling.detail
    worse = c5_tests(c5_tables(accuracy=lambda model, loss, method, damping: 0.93 - 0.01 * math.log10(damping)))[1]
    assert worse["direction"].value == pytest.approx(-1.0) and worse["direction"].verdict == "not supported"


def test_c5_ordering_is_judged_on_the_networks_kernel_and_reports_the_linear_models():
    """(b) reads the network's kernel at θ: a linear model's kernel change that the damping orders (as at
    θ_lin, θ₀'s at one round, it may by construction) does not make it supported, nor does an unordered
    one keep an ordered network's from it; the θ_lin reading is in the detail."""
    rising = examples.rising_kernel_change
    unordered_network = c5_tests(c5_tables(change=rising, network_change=zigzag_change))[1]["ordering"]
    assert unordered_network.verdict == "not supported" and "network's kernel (at θ)" in unordered_network.measure
    assert ("the linear model's kernel at θ_lin (reported, not judged: θ₀'s at one round): GN +1.00"
            in unordered_network.detail)
    ordered_network = c5_tests(c5_tables(change=zigzag_change, network_change=rising))[1]["ordering"]
    assert ordered_network.value == pytest.approx(1.0) and ordered_network.verdict == "supported"


def test_c5_excludes_and_names_diverged_runs():
    model, tests = c5_tests(c5_tables(diverged=[("mlp", "mse", "gauss_newton", 300, 1)]))
    assert "1 diverged run(s) excluded: gauss_newton K=3·10² seed 1" in model.note
    assert np.isfinite(tests["agreement"].value)  # the other seeds of K = 300 still count


def kernel_regression(**example):
    """A C6 table (``examples.example_kernel_regression``) of three seeds, the fewest its intervals may rest on."""
    return examples.example_kernel_regression(seeds=(0, 1, 2), **example)


def test_c6_supported_at_every_step_and_in_the_limit():
    model = by_model(result({"kernel_regression": kernel_regression(difference=1e-4)}, "C6"))["mlp"]
    assert [test.measure.split(":")[0] for test in model.tests] == ["t = 10", "t = 100", "t = 1,000", "t → ∞"]
    assert all(test.verdict == "supported" and test.value <= 1e-4 + 1e-12 for test in model.tests[:3])
    assert model.verdict == "supported" and model.note == ""


def test_c6_a_deviation_at_one_step_is_not_supported_and_in_one_seed_inconclusive():
    table = kernel_regression(difference=1e-4)
    at_100 = (table["step"] == 100) & (table["example"] == 3)
    for seeds, verdict in (([0, 1, 2], "not supported"), ([1], "inconclusive")):
        changed = table.copy()
        changed.loc[at_100 & changed["seed"].isin(seeds), "trained"] += 0.05
        model = by_model(result({"kernel_regression": changed}, "C6"))["mlp"]
        verdicts = {test.measure.split(":")[0]: test.verdict for test in model.tests}
        assert verdicts["t = 100"] == verdict and verdicts["t = 10"] == "supported"
        assert model.tests[1].value == pytest.approx(0.05, abs=1e-3) and model.verdict == verdict


def test_c6_an_unconverged_run_is_judged_on_its_steps_and_says_how_far_it_stopped():
    model = by_model(result({"kernel_regression": kernel_regression(convergence_gap=0.2)}, "C6"))["mlp"]
    assert [test.measure.split(":")[0] for test in model.tests] == ["t = 10", "t = 100", "t = 1,000"]
    assert model.verdict == "supported" and "t → ∞ not reached by step 1,000" in model.note and "0.2" in model.note


# ---------------------------------------------------------------- renderings


def test_markdown_has_a_summary_table_the_method_once_and_per_model_rows():
    data = measured(accuracies({1: 0.95, math.inf: 0.85}))
    text = render.to_markdown(claims.evaluate(data, settings()), settings())
    assert text.count("percentile bootstrap") == 1
    summary = text.split("## How to read this")[0]
    assert "| C2 | Feature learning is essential" in summary and "supported on 2 of 2 models: cnn, mlp" in summary
    c2 = text.split("## C2:")[1].split("## C3:")[0]
    assert "| cnn | K = 1 minus K = ∞ test accuracy | +10.0 pt [" in c2 and "| > 1 pt | supported |" in c2


def test_json_follows_its_schema_and_matches_the_markdown():
    schema = json.loads((ROOT / "workflow" / "schemas" / "claims.schema.json").read_text())
    data = measured(accuracies({1: 0.95, math.inf: 0.85}), diverged=[("mlp", 10.0, 1)])
    results = claims.evaluate(data, settings())
    document = render.to_json(results, settings())
    jsonschema.validate(document, schema)
    assert [claim["id"] for claim in document["claims"]] == ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "S1", "S2",
                                                              "S3", "S4", "S5"]
    c2 = document["claims"][1]
    assert c2["summary"] == results[1].summary
    assert c2["models"][0]["tests"][0]["interval"][0] < 10 < c2["models"][0]["tests"][0]["interval"][1]
    broken = json.loads(json.dumps(document))
    broken["claims"][1]["models"][0]["verdict"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_c5_verdicts_name_their_loss_in_the_json():
    """C5 judges each model per loss: its verdicts carry the loss (not a variant, which C5's runs lack)."""
    schema = json.loads((ROOT / "workflow" / "schemas" / "claims.schema.json").read_text())
    document = render.to_json(claims.evaluate(c5_tables(), settings()), settings())
    jsonschema.validate(document, schema)
    c5 = next(claim for claim in document["claims"] if claim["id"] == "C5")
    assert [(model["loss"], model["label"]) for model in c5["models"]] == [
        ("cross_entropy", "mlp / cross_entropy"), ("mse", "mlp / mse")]
    assert not any("variant" in model for model in c5["models"])


def test_html_is_a_table_with_verdict_colours_and_escaped_text():
    page = render.to_html(claims.evaluate(measured(accuracies({1: 0.95, math.inf: 0.85})), settings()), settings())
    assert page.startswith("<!DOCTYPE html>") and "<table class='claims'>" in page
    assert "<td class='supported'>supported</td>" in page
    assert "K = 1 minus K = ∞" in page and "<script" not in page


# ---------------------------------------------------------------- C3, S1, S2 (the NTK table)


def ntk_results(twins=None, **example):
    """Claim results on ``examples.example_ntk`` (three seeds, small noise) with the default twin of cnn_deep."""
    twins = {"cnn_deep_linear": "cnn_deep"} if twins is None else twins
    ntk = examples.example_ntk(**{"Ks": (1, 100, math.inf), "seeds": (0, 1, 2), "noise": 0.005, "twins": twins,
                                **example})
    # one table as the main paper's runs (C3) and as the companion's (S1, S2, S4, S5)
    return {r.id: r for r in claims.evaluate({"ntk": ntk, "ntk_companion": ntk}, settings(), twins=twins)}


def test_ntk_claims_supported_when_the_kernel_moves_early_aligns_and_specialises():
    results = ntk_results()
    for claim in ("C3", "S1"):
        assert all(model.verdict == "supported" for model in results[claim].models), results[claim].summary
    s2 = by_model(results["S2"])
    assert s2["cnn_deep"].verdict == "supported"
    assert s2["cnn"].verdict == "not measured" and "deep linear twin" in s2["cnn"].note
    assert "cnn_deep_linear" not in by_model(results["C3"])  # the twin is S2's control only


def test_c3_rests_on_relative_change_and_centred_distance_not_the_fort_distance():
    c3 = by_model(ntk_results()["C3"])["cnn"]
    assert [test.measure.split(" at the end")[0] for test in c3.tests[::2]] == [
        "K = 1 relative change ‖Θ − Θ₀‖/‖Θ₀‖", "K = 1 centred distance from Θ₀"]
    assert "Fort distance at the end: K=1" in c3.note and "K=∞ 0" in c3.note


@pytest.mark.parametrize("change, verdict", [(0.5, "not supported"), (3.0, "supported")])
def test_c3_follows_the_minimum_relative_change(change, verdict):
    results = ntk_results(final_change=lambda model, K: 0.0 if math.isinf(K) else change)
    assert by_model(results["C3"])["cnn"].tests[0].verdict == verdict  # threshold 1.0


def test_c3_and_s1_not_supported_when_the_change_is_late():
    results = ntk_results(time_constant=0.5)  # a fifth of the final change by 10% of training
    assert by_model(results["C3"])["cnn"].verdict == "not supported"
    assert by_model(results["S1"])["cnn"].verdict == "not supported"


def test_s1_compares_depths_by_rise_per_step_and_rise():
    results = ntk_results()
    depth = by_model(results["S1"])["cnn_deep vs cnn (depth 4 vs 2)"]
    assert [test.verdict for test in depth.tests] == ["supported", "supported"]
    assert "per 1000 steps" in depth.tests[0].measure
    shallower_larger = ntk_results(alignment_gain=lambda model, K: 0.0 if math.isinf(K) else
                                   (0.2 if model == "cnn_deep" else 0.4))
    assert by_model(shallower_larger["S1"])["cnn_deep vs cnn (depth 4 vs 2)"].verdict == "not supported"


def test_s1_reports_the_uncentred_alignment_beside_the_centred_verdict():
    rise = by_model(ntk_results()["S1"])["cnn"].tests[0]
    assert "centred alignment rise" in rise.measure and "uncentred alignment rise" in rise.detail


def test_s2_not_supported_when_no_head_aligns_most_with_its_own_class():
    results = ntk_results(specialisation_gain=lambda model, K: -0.01)  # every diagonal entry below its row
    share, over_twin = by_model(results["S2"])["cnn_deep"].tests
    assert share.value == 0 and share.verdict == "not supported"
    assert over_twin.value == 0 and over_twin.verdict == "not supported"


def test_s2_reads_the_share_of_heads_own_class_strongest_and_reports_the_contrast():
    results = ntk_results()
    share, over_twin = by_model(results["S2"])["cnn_deep"].tests
    assert share.value == 1 and over_twin.value == 1  # every head of the network, none of the twin (all alike)
    assert share.threshold == 0.5 and "specialisation contrast" in share.detail


def test_diagonal_dominance_counts_heads_whose_own_class_is_strictly_strongest():
    entries = pd.DataFrame([dict(run=run, output_class=c, target_class=t, value=value)
                            for run, matrix in (("a", [[0.3, 0.1, 0.1], [0.2, 0.2, 0.1], [0.0, 0.5, 0.4]]),
                                                ("b", [[np.nan, 0.1, 0.1], [0.0, 0.3, 0.1], [0.1, 0.1, 0.2]]))
                            for (c, t), value in np.ndenumerate(np.array(matrix))])
    shares = summaries.diagonal_dominance(entries, ["run"])
    assert shares["a"] == pytest.approx(1 / 3)  # head 0 only: a tie (head 1) is not dominance
    assert shares["b"] == pytest.approx(1.0)  # head 0 (NaN) left out; heads 1 and 2 dominate


def test_ntk_claims_not_measured_on_an_empty_ntk_table():
    ntk = examples.example_ntk().iloc[:0]
    results = claims.evaluate({"ntk": ntk, "ntk_companion": ntk}, settings())
    assert all(r.models == () for r in results if r.id in ("C3", "S1", "S2", "S4", "S5"))


def test_kernel_claims_leave_out_diverged_runs_and_name_them():
    twins = {"cnn_deep_linear": "cnn_deep"}
    ntk = examples.example_ntk(Ks=(1, 100, math.inf), seeds=(0, 1, 2, 3), noise=0.005, twins=twins,
                               diverged=[("cnn_deep", 1.0, 0)])
    results = {r.id: r for r in claims.evaluate({"ntk": ntk, "ntk_companion": ntk}, settings(), twins=twins)}
    for claim in ("C3", "S1", "S2", "S4"):
        model = by_model(results[claim])["cnn_deep"]
        assert "1 diverged run(s) excluded: cnn_deep K=1 seed 0" in model.note, claim
        assert model.verdict == "supported", claim  # judged on the three runs that trained to the end


# ---------------------------------------------------------------- S3, S4, S5 (the companion's runs)


def companion_results(loss=examples.two_phase_loss, **example):
    """Claim results on the companion's example tables: networks cnn and cnn_deep (depths 2, 4), cnn_deep's twin."""
    ntk = examples.example_ntk(**{"Ks": (1,), "seeds": (0, 1, 2), "noise": 0.005, "twins": TWINS, **example})
    metrics = examples.example_companion_metrics(models=("cnn", "cnn_deep", "cnn_deep_linear"), loss=loss)
    return {r.id: r for r in claims.evaluate({"ntk_companion": ntk, "metrics_companion": metrics}, settings(),
                                             twins=TWINS)}


def test_s3_supported_when_the_loss_falls_fast_then_as_a_power_law():
    s3 = by_model(companion_results()["S3"])
    assert set(s3) == {"cnn", "cnn_deep"}  # the deep linear twin is a control, not judged
    late, early = s3["cnn"].tests
    assert late.value == pytest.approx(-0.5, abs=0.05) and late.verdict == "supported"  # step^(-1/2)
    assert early.verdict == "supported" and "alignment reaches 90% of its rise by step" in early.detail


@pytest.mark.parametrize("loss, verdicts", [
    (lambda step: (1 + step) ** -0.5, ["supported", "not supported"]),  # one power law throughout: no early phase
    (lambda step: 0.5 * (1 + step) ** -0.2 * np.exp(-step / 2000), ["supported", "not supported"]),  # faster late
    (lambda step: 0.3 + 1e-5 * step, ["not supported", "supported"]),  # rising late: no power-law fall
])
def test_s3_not_supported_without_a_faster_early_phase_or_a_late_power_law(loss, verdicts):
    assert [test.verdict for test in by_model(companion_results(loss)["S3"])["cnn"].tests] == verdicts


def test_s3_names_diverged_runs_and_leaves_a_model_without_finished_runs_not_measured():
    metrics = examples.example_companion_metrics(models=("cnn", "cnn_deep", "cnn_deep_linear"))
    metrics.loc[(metrics["model"] == "cnn") & (metrics["seed"] == 0), "status"] = "diverged"
    ntk = examples.example_ntk(Ks=(1,), seeds=(0, 1, 2), twins=TWINS)

    def s3(table):
        results = claims.evaluate({"ntk_companion": ntk, "metrics_companion": table}, settings(), twins=TWINS)
        return by_model(next(result for result in results if result.id == "S3"))

    assert "1 diverged run(s) excluded: cnn K=1 seed 0" in s3(metrics)["cnn"].note
    deep = s3(metrics.assign(status=np.where(metrics["model"] == "cnn_deep", "diverged", metrics["status"])))["cnn_deep"]
    assert deep.verdict == "not measured" and "needs runs that trained to the end" in deep.note


def test_s3_loglog_slope_of_a_power_law_is_its_exponent():
    steps = np.arange(10, 1000, 10)
    assert summaries.loglog_slope(steps, 3 * steps**-0.7) == pytest.approx(-0.7)
    assert math.isnan(summaries.loglog_slope(steps[:2], steps[:2] ** -1.0))


def test_s4_supported_when_the_targets_energy_rises_early_and_not_when_late():
    assert by_model(companion_results()["S4"])["cnn_deep"].verdict == "supported"
    s4 = by_model(companion_results(time_constant=0.5)["S4"])["cnn_deep"]  # the example's energy follows the alignment
    assert s4.verdict == "not supported" and "C(2)" in s4.tests[0].measure  # 3 classes: rank 2


def test_s5_judges_the_twin_aligning_without_specialising():
    results = companion_results(alignment_gain=lambda model, K: 0.2)  # every model aligns, the twin too
    s5 = by_model(results["S5"])
    assert set(s5) == {"cnn_deep_linear"}
    rise, share = s5["cnn_deep_linear"].tests
    assert rise.verdict == "supported" and share.value == 0 and share.verdict == "supported"
    not_aligning = by_model(companion_results(alignment_gain=lambda model, K: 0.0)["S5"])["cnn_deep_linear"]
    assert not_aligning.tests[0].verdict == "not supported"


# ---------------------------------------------------------------- partial tables: whatever finished


CLAIM_IDS = [claim.id for claim in claims.CLAIMS]
TWINS = {"cnn_deep_linear": "cnn_deep"}
RUN_KEYS = {"metrics": tables.RUN_KEYS, "predictions": tables.RUN_KEYS, "ntk": tables.RUN_KEYS,
            "gauss_newton": tables.GAUSS_NEWTON_RUN_KEYS, "gauss_newton_predictions": tables.GAUSS_NEWTON_RUN_KEYS,
            "kernel_regression": ["dataset", "model", "seed"]}
"""Per table, the columns that name one run."""
MEASUREMENTS = {"metrics": ["accuracy", "loss"], "ntk": ["value"], "gauss_newton": ["test_accuracy", "relative_change"],
                "kernel_regression": ["trained", "closed_form"]}
"""Per table, the measured columns a partial or degenerate result can leave NaN."""
SUBSETS = {"metrics": ["split", "evaluator"], "ntk": ["metric", "point"], "gauss_newton": ["evaluator"],
           "kernel_regression": ["output_class"]}
"""Per table, columns whose values name subsets of rows (metrics, points) a partial table can lack."""


@functools.cache
def complete_tables() -> dict:
    """Small example tables of every kind, four seeds each: what a finished pipeline would give."""
    seeds = (0, 1, 2, 3)
    metrics = examples.example_metrics(models=("cnn",), Ks=(1, 100, math.inf), seeds=seeds, switch_steps=(100,),
                                       steps=1000, eval_every=500)
    gauss_newton = examples.example_gauss_newton(losses=("mse",), Ks=(3, 10, 30), seeds=seeds, accuracy=lambda model,
                                                 loss, method, damping: 0.8 + 0.05 * math.log10(damping))
    return {"metrics": metrics, "predictions": examples.example_predictions(metrics, n_test=60),
            "ntk": examples.example_ntk(Ks=(1, math.inf), seeds=seeds, num_snapshots=4, num_classes=2, noise=0.005,
                                        twins=TWINS),
            "gauss_newton": gauss_newton,
            "gauss_newton_predictions": examples.example_gauss_newton_predictions(gauss_newton, n_test=60),
            "kernel_regression": examples.example_kernel_regression(seeds=seeds, steps=(10, 1000), n_test=10),
            "metrics_companion": examples.example_companion_metrics(models=("cnn_deep", "cnn_deep_linear"), seeds=seeds),
            "ntk_companion": examples.example_ntk(Ks=(1,), seeds=seeds, num_snapshots=4, num_classes=3, noise=0.005,
                                                  twins=TWINS)}


def partial_tables(rng: np.random.Generator) -> dict:
    """The complete tables with random parts missing or NaN, as a pipeline that did not finish (or whose
    runs blew up) leaves them: some tables missing or empty, seeds lost across the tables, runs, steps,
    metrics or points left out of one, measurements NaN; each kind of damage in some trials only."""
    lost_seeds = set(rng.choice(4, size=rng.integers(0, 4), replace=False).tolist())
    measured = {}
    for name, table in complete_tables().items():
        spec = tables.TABLES[name]
        if rng.random() < 0.1:
            continue  # the table was never written
        table = table[~table["seed"].isin(lost_seeds)]
        if rng.random() < 0.5:
            runs = table[RUN_KEYS[spec]].drop_duplicates()
            dropped = runs.sample(frac=rng.random() * 0.4, random_state=rng)
            table = table.merge(dropped, how="left", indicator=True)
            table = table[table["_merge"] == "left_only"].drop(columns="_merge")
        if "step" in table and len(table) and rng.random() < 0.3:
            steps = table["step"].unique()
            table = table[~table["step"].isin(rng.choice(steps, size=rng.integers(1, len(steps) + 1)))]
        for column in SUBSETS.get(spec, []):
            if len(table) and rng.random() < 0.2:
                table = table[table[column] != rng.choice(table[column].unique())]
        table = table.copy()
        for column in MEASUREMENTS.get(spec, []):
            if rng.random() < 0.3:
                table.loc[rng.random(len(table)) < rng.random() * 0.2, column] = np.nan
        if spec in ("ntk", "kernel_regression") and len(table) and rng.random() < 0.3:  # a degenerate final step
            final = table["step"] == table.loc[np.isfinite(table["step"]), "step"].max()
            table.loc[final, MEASUREMENTS[spec][0]] = np.nan
        measured[name] = table.iloc[:0] if rng.random() < 0.05 else table.reset_index(drop=True)
    return measured


def assert_judged_and_written(measured, settings_, folder: Path, twins=TWINS) -> list:
    """Every claim judged (each verdict one of the four), rendered to claims.md, .json (valid) and .html."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an empty mean or a 0/0 is a case not handled
        results = claims.evaluate(measured, settings_, twins=twins)
        claims.write(results, settings_, folder / "claims.md", folder / "claims.json", folder / "claims.html")
    assert [r.id for r in results] == CLAIM_IDS
    for r in results:
        for model in r.models:
            assert model.verdict in verdicts.VERDICTS and all(test.verdict in verdicts.VERDICTS for test in model.tests)
            if model.verdict == "not measured":
                assert model.note or any(test.lacking or not np.isfinite(test.value) for test in model.tests), r.id
    document = json.loads((folder / "claims.json").read_text())
    jsonschema.validate(document, json.loads((ROOT / "workflow" / "schemas" / "claims.schema.json").read_text()))
    markdown = (folder / "claims.md").read_text()
    assert all(re.search(rf"^\| {claim} \|", markdown, flags=re.MULTILINE) for claim in CLAIM_IDS)
    assert not re.search(r"\bnan\b", markdown)  # a value not measured shows as —
    assert "<table class='claims'>" in (folder / "claims.html").read_text()
    return results


def test_claims_are_judged_and_written_from_whatever_finished(tmp_path):
    """Random partial tables (tables, runs, steps, metrics missing; values NaN): every claim is judged or
    says it is not measured, and claims.md, .json and .html are always written."""
    fast = settings(bootstrap={"resamples": 100})
    for trial in range(30):
        measured = partial_tables(np.random.default_rng(trial))
        try:
            assert_judged_and_written(measured, fast, tmp_path)
        except Exception as error:
            raise AssertionError(f"trial {trial}: {error!r}") from error


def test_a_degenerate_kernel_at_the_final_step_leaves_the_kernel_claims_not_measured_and_the_others_judged(tmp_path):
    """A learning rate that kills the network (test.yaml at learning rate 100): the NTK stage records the
    K = 1 kernels of the final step as NaN. The kernel claims say why they are not measured; the rest are
    judged as usual."""
    ntk = examples.example_ntk(Ks=(1, math.inf), seeds=(0, 1, 2), noise=0.005, twins=TWINS)
    ntk.loc[(ntk["K"] == 1) & (ntk["step"] == ntk["step"].max()), "value"] = np.nan
    data = {**measured(accuracies({1: 0.95, math.inf: 0.85})), "ntk": ntk, "ntk_companion": ntk}
    results = {r.id: r for r in assert_judged_and_written(data, settings(), tmp_path)}
    for claim in ("C3", "S1", "S2"):
        model = by_model(results[claim])["cnn_deep"]
        assert model.verdict == "not measured", claim
        assert "degenerate (zero-norm) kernels" in model.note and "K=1 seed 0" in model.note, claim
        assert model.tests[0].lacking == "needs at least 3 seeds, 0 measured", claim
    assert "| not measured (needs at least 3 seeds, 0 measured) (model: not measured) |" in (
        tmp_path / "claims.md").read_text()
    assert by_model(results["C2"])["cnn"].verdict == "supported"


def test_a_model_with_one_seed_left_is_not_judged_on_intervals_over_seeds(tmp_path):
    """cnn has one seed left of three: its tests over seeds only (C3, S1, S1's depth comparison) are not
    measured and show their value without an interval; cnn_deep, with three, is judged as usual."""
    ntk = examples.example_ntk(Ks=(1, math.inf), seeds=(0, 1, 2), noise=0.005, twins=TWINS)
    ntk = ntk[(ntk["model"] != "cnn") | (ntk["seed"] == 0)]
    results = {r.id: r for r in assert_judged_and_written({"ntk": ntk, "ntk_companion": ntk}, settings(), tmp_path)}
    c3 = by_model(results["C3"])
    assert c3["cnn_deep"].verdict == "supported"
    assert c3["cnn"].verdict == "not measured"
    assert all(test.lacking == "needs at least 3 seeds, 1 measured" for test in c3["cnn"].tests)
    assert "[" not in render._value(c3["cnn"].tests[0]) and np.isfinite(c3["cnn"].tests[0].value)
    assert by_model(results["S1"])["cnn_deep vs cnn (depth 4 vs 2)"].verdict == "not measured"
    document = json.loads((tmp_path / "claims.json").read_text())
    c3_json = next(claim for claim in document["claims"] if claim["id"] == "C3")
    assert c3_json["models"][0]["tests"][0]["lacking"] == "needs at least 3 seeds, 1 measured"
    assert "lacking" not in c3_json["models"][1]["tests"][0]  # only where a test lacks something


def test_one_seed_judges_accuracies_over_test_examples_and_says_so_but_no_interval_over_seeds_alone():
    """config/test.yaml's one seed: accuracy claims are judged, their intervals resampling the test examples
    only (the note says so); C5's kernel ordering and C6, whose intervals resample seeds alone, are not measured."""
    one_seed = measured(accuracies({1: 0.95, math.inf: 0.85}), seeds=(0,))
    c2 = by_model(result(one_seed, "C2"))["cnn"]
    assert c2.verdict == "supported" and c2.tests[0].low < c2.tests[0].high
    assert ("fewer than 3 seeds (1 seed per condition): the interval resamples test examples only, not seeds"
            in c2.note)
    three_seeds = by_model(result(measured(accuracies({1: 0.95, math.inf: 0.85})), "C2"))["cnn"]
    assert "seed" not in three_seeds.note
    table = examples.example_gauss_newton(seeds=(0,))
    c5_data = {"gauss_newton": table, "gauss_newton_predictions": examples.example_gauss_newton_predictions(table)}
    model, tests = c5_tests(c5_data)
    assert tests["ordering"].verdict == "not measured" and tests["ordering"].lacking.startswith("needs at least 3")
    assert tests["agreement"].verdict != "not measured" and "test examples only" in model.note
    c6 = by_model(result({"kernel_regression": examples.example_kernel_regression(seeds=(0,))}, "C6"))["mlp"]
    assert c6.verdict == "not measured"
    assert {test.lacking for test in c6.tests} == {"needs at least 3 seeds, 1 measured"}


# ---------------------------------------------------------------- C7, the width sweep


def width_results(**example):
    metrics, ntk = examples.example_width_tables(**example)
    results = claims.evaluate({"metrics_width": metrics, "ntk_width": ntk}, settings())
    return {(model.model, model.variant): model for model in next(r for r in results if r.id == "C7").models}


def test_c7_recovers_the_exponent_and_judges_each_regime_by_its_rule():
    """The theory's regime (ntk) is judged on an exponent near −1/2, the paper's (standard) on whether the change
    falls at all; the accuracy gap and the fewest updates on par are reported per width."""
    c7 = width_results(exponents={"ntk": -0.5, "standard": -0.4})
    theory, paper = c7["mlp1", "width_ntk"], c7["mlp1", "width_standard"]
    assert theory.tests[0].value == pytest.approx(-0.5, abs=0.03) and theory.verdict == "supported"
    assert [test.rule for test in theory.tests] == ["> -0.75", "< -0.25"]
    assert paper.tests[0].rule == "< -0.1" and paper.verdict == "supported"
    assert "64: +5.0" in theory.note and "fewest feature updates on par 64: 99, 128: 99" in theory.note


@pytest.mark.parametrize("exponents, verdicts", [
    ({"ntk": -1.0, "standard": 0.0}, ("not supported", "not supported")),   # faster than the theory; flat
    ({"ntk": 0.0, "standard": 0.3}, ("not supported", "not supported")),    # no fall; a rise
    ({"ntk": -0.3, "standard": -0.5}, ("supported", "supported")),          # within the tolerance
])
def test_c7_verdicts_follow_the_fitted_exponent(exponents, verdicts):
    c7 = width_results(exponents=exponents, noise=0.005)
    assert (c7["mlp1", "width_ntk"].verdict, c7["mlp1", "width_standard"].verdict) == verdicts


def test_c7_needs_three_widths_three_seeds_and_finished_K1_runs():
    assert "needs K = 1 runs at 3 or more widths, has 2" in width_results(widths=(64, 128))["mlp1", "width_ntk"].note
    metrics, ntk = examples.example_width_tables()
    diverged = ntk.assign(status=np.where(ntk["variant"] == "width_ntk", "diverged", ntk["status"]))
    results = claims.evaluate({"metrics_width": metrics, "ntk_width": diverged}, settings())
    c7 = {(model.model, model.variant): model for model in next(r for r in results if r.id == "C7").models}
    assert c7["mlp1", "width_ntk"].verdict == "not measured"  # listed, with the reason, not left out
    assert "needs K = 1 runs that trained to the end" in c7["mlp1", "width_ntk"].note
    few_seeds = width_results(seeds=(0, 1))["mlp1", "width_ntk"]
    assert few_seeds.verdict == "not measured" and "needs at least 3 seeds" in few_seeds.tests[0].lacking


def test_c7_exponent_is_the_log_log_slope_of_a_power_law():
    widths = np.array([64, 128, 256, 512])
    values = np.stack([3 * widths**-0.5, 2 * widths**-1.0], axis=1)
    np.testing.assert_allclose(summaries.width_exponent(widths, values), [-0.5, -1.0])
    assert math.isnan(summaries.width_exponent(widths, np.array([[1.0], [0.0], [1.0], [1.0]]))[0])
