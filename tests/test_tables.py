"""Tests of the table specs, their validation and aggregation (itlin.tables), and of the example tables."""

import math

import numpy as np
import pandas as pd
import examples
import pytest

from itlin import record, tables

SPEC_COLUMNS = [
    "dataset", "model", "K", "switch_step", "seed", "variant", "step", "feature_updates", "split", "evaluator",
    "loss", "accuracy", "status", "wall_time_s",
]


@pytest.fixture(scope="module")
def metrics():
    return examples.example_metrics(models=("cnn", "mlp"), Ks=(1, 100, math.inf), seeds=(0, 1), switch_steps=(10,),
                                    steps=200, eval_every=50, diverged=[("cnn", 100.0, 1)])


def write_runs(metrics, folder):
    """Write each run of ``metrics`` to its own metrics.parquet, as the train stage does."""
    paths = []
    for number, (_, run) in enumerate(metrics.groupby(tables.RUN_KEYS, dropna=False)):
        path = folder / f"run{number}" / "metrics.parquet"
        path.parent.mkdir()
        run.to_parquet(path, index=False)
        paths.append(path)
    return paths


def test_every_spec_names_its_own_columns():
    assert list(tables.SPECS) == ["metrics", "predictions", "ntk", "gauss_newton", "gauss_newton_predictions",
                                  "kernel_regression"]
    for name, spec in tables.SPECS.items():
        named = [*spec.row_keys, *spec.allowed, *spec.non_negative]
        assert set(named) <= set(spec.columns), name


def test_columns_follow_the_spec_in_order():
    assert list(tables.METRICS_COLUMNS) == SPEC_COLUMNS
    assert tables.METRICS_COLUMNS["switch_step"] == "Int64"
    assert tables.METRICS_COLUMNS["K"] == "float64"


def test_aggregate_round_trips_per_run_files(metrics, tmp_path):
    paths = write_runs(metrics, tmp_path)
    combined = tables.aggregate("metrics", paths)
    assert len(combined) == len(metrics)
    for name, dtype in tables.METRICS_COLUMNS.items():
        if dtype == "str":
            assert pd.api.types.is_string_dtype(combined[name]), name
        else:
            assert str(combined[name].dtype) == dtype, name
    assert np.isinf(combined["K"]).any()
    assert combined["switch_step"].isna().any() and (combined["switch_step"] == 10).any()
    pd.testing.assert_frame_equal(combined, tables.aggregate("metrics", paths[::-1]))  # order of files does not matter
    order = tables.RUN_KEYS + ["step", "split", "evaluator"]
    pd.testing.assert_frame_equal(combined, metrics.sort_values(order, ignore_index=True, na_position="first"))


def test_write_then_read(metrics, tmp_path):
    path = tmp_path / "tables" / "metrics.parquet"
    tables.write("metrics", metrics, path)
    pd.testing.assert_frame_equal(tables.read("metrics", path), metrics)


def test_missing_column_names_file_and_column(metrics, tmp_path):
    path = tmp_path / "metrics.parquet"
    metrics.drop(columns="feature_updates").to_parquet(path)
    with pytest.raises(tables.SchemaError, match=r"metrics\.parquet.*feature_updates"):
        tables.aggregate("metrics", [path])


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("split", "validation", "validation"),
        ("evaluator", "kernel", "kernel"),
        ("status", "crashed", "crashed"),
        ("K", 0.5, ">= 1"),
        ("K", 2.5, "integer >= 1"),
        ("K", "ten", "numeric"),
        ("seed", np.nan, "missing"),
        ("step", 1.5, "non-integer"),
        ("switch_step", 2.5, "non-integer"),
        ("accuracy", 1.7, r"\[0, 1\]"),
        ("model", None, "text"),
    ],
)
def test_wrong_value_names_file_and_column(metrics, column, value, message):
    broken = metrics.astype({column: "object"})
    broken.loc[3, column] = value
    with pytest.raises(tables.SchemaError, match=rf"bad_run/metrics\.parquet: column '{column}'.*{message}"):
        tables.validate("metrics", broken, source="results/runs/bad_run/metrics.parquet")


def test_wrong_value_in_a_file_is_reported_by_aggregate(metrics, tmp_path):
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    metrics[metrics["model"] == "cnn"].to_parquet(good)
    metrics[metrics["model"] == "mlp"].assign(split="validation").to_parquet(bad)
    with pytest.raises(tables.SchemaError, match=r"bad\.parquet: column 'split'"):
        tables.aggregate("metrics", [good, bad])


def test_untyped_all_missing_switch_step_is_accepted(metrics, tmp_path):
    period = metrics[metrics["switch_step"].isna()].astype({"switch_step": "object"})
    period["switch_step"] = None
    path = tmp_path / "metrics.parquet"
    period.to_parquet(path)
    assert tables.aggregate("metrics", [path])["switch_step"].dtype == "Int64"


def test_duplicate_measurements_name_both_files(metrics, tmp_path):
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    metrics.to_parquet(first)
    metrics.head(4).to_parquet(second)
    with pytest.raises(tables.SchemaError, match=r"more than once.*a\.parquet.*b\.parquet"):
        tables.aggregate("metrics", [first, second])


def test_aggregate_needs_files():
    with pytest.raises(ValueError, match="no metrics files"):
        tables.aggregate("metrics", [])


def test_final_metrics_one_row_per_run_and_diverged_has_no_final_accuracy(metrics):
    finals = tables.final_metrics(metrics)
    assert len(finals) == len(metrics.drop_duplicates(tables.RUN_KEYS))
    diverged = finals[finals["status"] == "diverged"]
    assert len(diverged) == 1
    assert diverged["accuracy"].isna().all() and diverged["last_accuracy"].notna().all()
    assert int(diverged["step"].iloc[0]) == 100  # the diverged step, half-way through 200 steps
    completed = finals[finals["status"] == "ok"]
    assert (completed["step"] == 200).all() and completed["accuracy"].notna().all()


def test_example_metrics_hits_requested_final_accuracy():
    metrics = examples.example_metrics(models=("cnn",), Ks=(1,), seeds=(0,), switch_steps=(), noise=0.0,
                                       final_accuracy=lambda model, K, t: 0.77)
    assert tables.final_metrics(metrics)["accuracy"].iloc[0] == pytest.approx(0.77)


@pytest.mark.parametrize(("K", "text"), [(1, "1"), (10, "10"), (100, "10²"), (20000, "2·10⁴"), (150, "150"),
                                          (math.inf, "∞")])
def test_format_K(K, text):
    assert record.format_K(K) == text


def test_group_labels_name_variant_only_when_several(metrics):
    assert set(tables.group_labels(metrics)) == {"cnn", "mlp"}
    mixed = pd.concat([metrics, metrics.assign(variant="augment")])
    assert set(tables.group_labels(mixed)) == {"cnn / base", "cnn / augment", "mlp / base", "mlp / augment"}


# ---------------------------------------------------------------- NTK tables


@pytest.fixture(scope="module")
def ntk_table():
    return examples.example_ntk(Ks=(1, math.inf), seeds=(0, 1), num_snapshots=5)


def test_ntk_columns_and_dtypes(ntk_table):
    assert list(ntk_table.columns) == list(tables.NTK_COLUMNS)
    assert {tables.NTK_COLUMNS[c] for c in ("depth", "switch_step", "output_class", "target_class")} == {"Int64"}
    assert set(ntk_table["metric"]) == set(tables.NTK_METRICS) and set(ntk_table["point"]) == set(tables.NTK_POINTS)


def test_aggregate_ntk_round_trips_and_names_duplicates(ntk_table, tmp_path):
    paths = []
    for number, (_, run) in enumerate(ntk_table.groupby(tables.RUN_KEYS, dropna=False)):
        paths.append(tmp_path / f"run{number}.parquet")
        tables.write("ntk", run, paths[-1])
    combined = tables.aggregate("ntk", paths)
    assert len(combined) == len(ntk_table) and list(combined.columns) == list(tables.NTK_COLUMNS)
    pd.testing.assert_frame_equal(tables.read("ntk", paths[0]), tables.validate("ntk", pd.read_parquet(paths[0]), "x"))
    with pytest.raises(tables.SchemaError, match=r"more than once.*run0\.parquet"):
        tables.aggregate("ntk", paths + paths[:1])
    with pytest.raises(ValueError, match="no NTK files"):
        tables.aggregate("ntk", [])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"point": "theta"}, "column 'point' has value"),
        ({"metric": "rank"}, "column 'metric' has value"),
        ({"K": 0.0}, "column 'K'"),
        ({"probe_size": 0}, "column 'probe_size' has values below 1"),
    ],
)
def test_wrong_ntk_value_names_source_and_column(ntk_table, change, message):
    broken = ntk_table.assign(**change)
    with pytest.raises(tables.SchemaError, match=rf"results/ntk/bad\.parquet: {message}"):
        tables.validate("ntk", broken, source="results/ntk/bad.parquet")


@pytest.mark.parametrize("table", ["metrics", "ntk"])
def test_diverged_runs_are_listed_with_the_step_they_diverged_at(table):
    keys = dict(Ks=(1, math.inf), seeds=(0, 1), diverged=[("cnn", 1.0, 1)])
    if table == "metrics":
        runs = examples.example_metrics(models=("cnn",), switch_steps=(), steps=200, eval_every=50, **keys)
    else:
        runs = examples.example_ntk(depths={"cnn": 2}, steps=1000, num_snapshots=6, **keys)
    diverged = tables.diverged_runs(runs)
    assert list(diverged.columns) == tables.RUN_KEYS + ["diverged_step"]
    assert diverged[["model", "K", "seed"]].values.tolist() == [["cnn", 1.0, 1]]
    step = int(diverged["diverged_step"].iloc[0])
    rows = runs[(runs["K"] == 1) & (runs["seed"] == 1)]
    if table == "metrics":  # the run's last rows are its diverged rows, at that step
        assert step == 100 == rows["step"].max() and rows.loc[rows["step"] == step, "accuracy"].isna().all()
    else:  # no kernel measured at or after it
        assert 0 < rows["step"].max() < step < 1000
        assert (rows["status"] == "diverged").all() and (runs.loc[runs["seed"] == 0, "status"] == "ok").all()
    assert tables.describe_runs(diverged) == f"cnn K=1 seed 1 (step {step})"
    assert tables.diverged_runs(runs[runs["seed"] == 0]).empty


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: rows.assign(status="diverged"), "'diverged_step' must be set exactly on diverged runs"),
        (lambda rows: rows.assign(diverged_step=10_000), "'diverged_step' must be set exactly on diverged runs"),
        (lambda rows: rows.assign(status="diverged", diverged_step=500), "measured at or after"),
    ],
)
def test_ntk_divergence_columns_are_checked(ntk_table, change, message):
    with pytest.raises(tables.SchemaError, match=message):
        tables.validate("ntk", change(ntk_table), source="ntk")


def test_class_columns_are_set_exactly_on_specialisation_rows(ntk_table):
    broken = ntk_table.copy()
    broken.loc[broken["metric"] == "alignment", "output_class"] = 0
    with pytest.raises(tables.SchemaError, match="'output_class' must be set on specialisation rows"):
        tables.validate("ntk", broken, source="ntk")
    with pytest.raises(tables.SchemaError, match=r"missing column\(s\) \['value'\]"):
        tables.validate("ntk", ntk_table.drop(columns="value"), source="ntk")


def test_example_ntk_keeps_the_linearised_kernel_fixed(ntk_table):
    fixed = ntk_table[np.isinf(ntk_table["K"]) & (ntk_table["point"] == "linearisation")]
    changes = ["distance_from_init", "relative_change", "centred_distance", "velocity"]
    assert (fixed.loc[fixed["metric"].isin(changes), "value"] == 0).all()
    moving = ntk_table[(ntk_table["K"] == 1) & (ntk_table["metric"] == "centred_distance")]
    assert moving["value"].max() > 0.2


# ---------------------------------------------------------------- C5 and kernel-regression tables


def test_c5_and_kernel_regression_tables_round_trip(tmp_path):
    summary, regression = examples.example_gauss_newton(), examples.example_kernel_regression()
    predictions = examples.example_gauss_newton_predictions(summary, n_test=20)
    assert list(summary.columns) == list(tables.GAUSS_NEWTON_COLUMNS)
    assert list(predictions.columns) == list(tables.GAUSS_NEWTON_PREDICTIONS_COLUMNS)
    assert list(regression.columns) == list(tables.KERNEL_REGRESSION_COLUMNS)
    for name, table in (("gauss_newton", summary), ("gauss_newton_predictions", predictions),
                        ("kernel_regression", regression)):
        tables.write(name, table, tmp_path / f"{name}.parquet")
        pd.testing.assert_frame_equal(tables.read(name, tmp_path / f"{name}.parquet"), table)


def test_aggregate_gauss_newton_names_duplicates(tmp_path):
    summary = examples.example_gauss_newton()
    for name in ("a", "b"):
        summary.to_parquet(tmp_path / f"{name}.parquet")
    with pytest.raises(tables.SchemaError, match="appears more than once"):
        tables.aggregate("gauss_newton", [tmp_path / "a.parquet", tmp_path / "b.parquet"])


@pytest.mark.parametrize("column, value, message", [("method", "newton", "column 'method'"),
                                                    ("loss", "hinge", "column 'loss'"),
                                                    ("K", float("inf"), "column 'K' must be finite"),
                                                    ("damping", -1.0, "column 'damping'"),
                                                    ("rounds", 10_000, "column 'rounds'")])
def test_wrong_c5_value_names_the_column(column, value, message):
    summary = examples.example_gauss_newton()
    summary.loc[0, column] = value
    with pytest.raises(tables.SchemaError, match=message):
        tables.validate("gauss_newton", summary, "some.parquet")


def test_kernel_regression_trained_outputs_exist_exactly_at_finite_steps():
    regression = examples.example_kernel_regression()
    regression.loc[regression.index[0], "trained"] = float("nan")
    with pytest.raises(tables.SchemaError, match="some.parquet: column 'trained'"):
        tables.validate("kernel_regression", regression, "some.parquet")


def test_predictions_round_trip_and_name_duplicates(metrics, tmp_path):
    predictions = examples.example_predictions(metrics, n_test=50)
    assert list(predictions.columns) == list(tables.PREDICTIONS_COLUMNS)
    completed = tables.final_metrics(metrics)
    assert len(predictions) == 2 * 50 * (completed["status"] == "ok").sum()  # diverged runs have none
    first = tmp_path / "a.parquet"
    tables.write("predictions", predictions, first)
    assert len(tables.aggregate("predictions", [first])) == len(predictions)
    with pytest.raises(tables.SchemaError, match="appears more than once"):
        tables.aggregate("predictions", [first, first])
    with pytest.raises(tables.SchemaError, match="'evaluator'"):
        tables.validate("predictions", predictions.assign(evaluator="both"), "x")


def test_example_predictions_hit_each_run_final_accuracy(metrics):
    predictions = examples.example_predictions(metrics, n_test=200)
    rows = predictions[predictions["evaluator"] == "linear"]
    accuracy = (rows["prediction"] == rows["label"]).groupby([rows[key] for key in tables.RUN_KEYS], dropna=False).mean()
    finals = tables.final_metrics(metrics).set_index(tables.RUN_KEYS)["accuracy"].dropna()
    assert len(accuracy) == len(finals)
    np.testing.assert_allclose(accuracy.reindex(finals.index), finals, atol=0.005)
