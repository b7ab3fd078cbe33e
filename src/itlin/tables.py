"""Tidy metrics tables: the schema every run's ``metrics.parquet`` follows, and its aggregation.

One row per (run, evaluation step, split, evaluator). A run is identified by ``RUN_KEYS``.
This module imports no JAX, so the light plotting and claims jobs can use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from itlin import record

RUN_COLUMNS: dict[str, str] = {
    "dataset": "str",
    "model": "str",
    "K": "float64",
    "switch_step": "Int64",
    "seed": "int64",
    "variant": "str",
}
"""Column name -> dtype of the columns that name a training run (``RUN_KEYS``), as every run's tables
begin with them."""

METRICS_COLUMNS: dict[str, str] = {
    **RUN_COLUMNS,
    "step": "int64",
    "feature_updates": "int64",
    "split": "str",
    "evaluator": "str",
    "loss": "float64",
    "accuracy": "float64",
    "status": "str",
    "wall_time_s": "float64",
}
"""Column name -> pandas dtype of a metrics table, in file order."""

RUN_KEYS: list[str] = ["dataset", "model", "variant", "K", "switch_step", "seed"]
"""Columns that together identify one training run."""

ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    "split": ("train", "test"),
    "evaluator": ("linear", "network"),
    "status": ("ok", "diverged"),
}

TRAINED_EVALUATOR = "linear"
"""Evaluator used for every run in figures and claims: f_lin is the model being trained for any K
(for K = 1 it is re-linearised every step, so it equals the network up to one optimiser step)."""

NTK_COLUMNS: dict[str, str] = {
    "dataset": "str",
    "model": "str",
    "architecture": "str",
    "depth": "Int64",
    "activation": "str",
    "K": "float64",
    "switch_step": "Int64",
    "seed": "int64",
    "variant": "str",
    "probe_size": "int64",
    "status": "str",
    "diverged_step": "Int64",
    "step": "int64",
    "point": "str",
    "metric": "str",
    "output_class": "Int64",
    "target_class": "Int64",
    "value": "float64",
}
"""Column name -> pandas dtype of an NTK table (``itlin.ntk.measure_run``), in file order.

One row per (run, snapshot step, point, metric[, class pair]). ``model`` is the model's label as in
the metrics table, ``architecture`` its registry name (``cnn``), ``depth`` its ``depth`` setting
(<NA> for a model without one, e.g. resnet18) and ``activation`` its hidden nonlinearity (``relu``,
or ``linear`` for a deep linear network); ``probe_size`` is the number of probe examples.
``status`` is the run's (``ok`` or ``diverged``, as in the metrics table) and ``diverged_step`` the
first step whose training loss was not finite (<NA> for a run that did not diverge): a diverged run
has no kernel measured at or after it, so its last rows are not those of the end of training
(``diverged_runs`` lists such runs). ``point`` is the parameter vector whose kernel was measured:
``network`` (θ) or ``linearisation`` (θ_lin, the kernel of the trained linear model). ``metric`` is
one of ``NTK_METRICS``, all of the trace kernel Θ = Σ_c J_c J_cᵀ unless said otherwise: against Θ₀
at θ₀, ``distance_from_init`` (Fort et al.'s kernel distance 1 − cos, blind to scale),
``relative_change`` ‖Θ − Θ₀‖/‖Θ₀‖ (Lee et al. 2019), ``norm_ratio`` ‖Θ‖/‖Θ₀‖ and
``centred_distance`` (the kernel distance of HΘH, blind to the constant mode); ``velocity``
d(Θ_t, Θ_{t+δ})/δ at the fixed interval δ of the run's ``velocity_interval``, on the row of step t;
``alignment`` and ``alignment_uncentred`` (centred and uncentred kernel-target alignment);
``specialisation`` and ``specialisation_backbone``, entry [output_class, target_class] of the
class-specialisation matrix (the centred alignment of output c's kernel with class c''s one-hot
target column) of the per-head kernels of every parameter, and of the parameters below the readout
layer. The two class columns are set for the specialisation rows only. A degenerate (all-zero)
kernel gives NaN values."""

NTK_POINTS: tuple[str, ...] = ("network", "linearisation")
NTK_METRICS: tuple[str, ...] = ("distance_from_init", "relative_change", "norm_ratio", "centred_distance", "velocity",
                                "alignment", "alignment_uncentred", "specialisation", "specialisation_backbone")
SPECIALISATION_METRICS: tuple[str, ...] = ("specialisation", "specialisation_backbone")
ACTIVATIONS: tuple[str, ...] = ("relu", "linear")
TRAINED_POINT = "linearisation"
"""Kernel drawn and judged for every run: that of the trained linear model f_lin, at θ_lin (for
K = 1 it is the network's kernel one optimiser step earlier; for K = ∞ the kernel at θ₀)."""

GAUSS_NEWTON_RUN_COLUMNS: dict[str, str] = {
    "method": "str",
    "dataset": "str",
    "model": "str",
    "loss": "str",
    "seed": "int64",
    "K": "float64",
}
"""Column name -> dtype of the columns that name a C5 run (``GAUSS_NEWTON_RUN_KEYS``)."""

GAUSS_NEWTON_COLUMNS: dict[str, str] = {
    **GAUSS_NEWTON_RUN_COLUMNS,
    "damping": "float64",
    "rounds": "int64",
    "learning_rate": "float64",
    "steps": "int64",
    "evaluator": "str",
    "train_loss": "float64",
    "test_loss": "float64",
    "test_accuracy": "float64",
    "relative_change": "float64",
    "centred_distance": "float64",
    "distance_from_init": "float64",
    "newton_steps_mean": "float64",
    "cg_iterations_mean": "float64",
    "cg_residual_max": "float64",
    "gradient_ratio_max": "float64",
    "status": "str",
}
"""Column name -> dtype of the C5 table (``itlin.gauss_newton.run``): one row per (run, evaluator).

A run is one ``method`` on one ``loss`` from one seed's initialisation, at period ``K``: plain gradient
descent of step ``learning_rate`` η for ``steps`` T steps with period K (``iterative_linearisation``), or
``rounds`` = T/K proximal rounds of damping λ = 1/(ηK) (``gauss_newton``: damped Gauss-Newton; on
cross-entropy each round solved to convergence). ``evaluator`` ``linear`` is the linear model f_lin at the
final θ around the last θ_lin, with the kernel at θ_lin; ``network`` is f at the final θ, with the kernel
at θ. Losses are means over the training set and the test split; ``relative_change``,
``centred_distance`` and ``distance_from_init`` compare the trace NTK of the NTK stage's probe set with
that at θ₀ (``itlin.ntk``). The solver columns (NaN for iterative linearisation) are the mean Newton
steps per round, the mean CG iterations per Newton step, the largest CG residual and the largest
‖∇Φ‖ ratio at a round's end. A diverged run has NaN results."""

GAUSS_NEWTON_RUN_KEYS: list[str] = list(GAUSS_NEWTON_RUN_COLUMNS)
"""Columns that together identify one C5 run."""

GAUSS_NEWTON_METHODS: tuple[str, ...] = ("iterative_linearisation", "gauss_newton")
GAUSS_NEWTON_LOSSES: tuple[str, ...] = ("mse", "cross_entropy")

GAUSS_NEWTON_PREDICTIONS_COLUMNS: dict[str, str] = {
    **GAUSS_NEWTON_RUN_COLUMNS,
    "evaluator": "str",
    "example": "int64",
    "label": "int64",
    "prediction": "int64",
}
"""Column name -> dtype of the C5 predictions table: one row per (C5 run, evaluator, test example), for
the claims' bootstrap over test examples (as ``PREDICTIONS_COLUMNS`` for the sweep). A diverged run has none."""

KERNEL_REGRESSION_COLUMNS: dict[str, str] = {
    "dataset": "str",
    "model": "str",
    "seed": "int64",
    "train_size": "int64",
    "learning_rate": "float64",
    "condition_number": "float64",
    "step": "float64",
    "trained_train_loss": "float64",
    "closed_form_train_loss": "float64",
    "example": "int64",
    "label": "int64",
    "output_class": "int64",
    "trained": "float64",
    "closed_form": "float64",
}
"""Column name -> dtype of the C6 table (``itlin.kernel_regression.run``): one row per (run, step, test
example, output class). ``trained`` is the output of the linear model around θ₀ (K = ∞) after ``step``
steps of full-batch gradient descent on MSE (size ``learning_rate``, ``train_size`` examples);
``closed_form`` that of f₀ + Θ(x, X) Θ⁻¹ (I − (I − ηΘ/n)^t)(Y − f₀(X)) at the same t, with the full
empirical NTK at θ₀ (``condition_number``: its largest over its smallest eigenvalue). At ``step`` = inf
the closed form is kernel regression, the limit t → ∞, and ``trained`` is NaN. The two train-loss
columns are both models' ½‖f − y‖² on the training examples at that step. All in float64."""

PREDICTIONS_COLUMNS: dict[str, str] = {
    **RUN_COLUMNS,
    "step": "int64",
    "evaluator": "str",
    "example": "int64",
    "label": "int64",
    "prediction": "int64",
}
"""Column name -> dtype of a predictions table: one row per (run, evaluator, test example) at the run's
final evaluation (``step``). ``example`` indexes the dataset's test split, ``label`` is its class and
``prediction`` the evaluator's argmax class. The claims bootstrap resamples these examples
(``itlin.claims``), paired across runs, which all share the test split. A diverged run has none."""

_MEASUREMENT_KEYS = RUN_KEYS + ["step", "split", "evaluator"]
_PREDICTION_KEYS = RUN_KEYS + ["evaluator", "example"]
_NTK_MEASUREMENT_KEYS = RUN_KEYS + ["step", "point", "metric", "output_class", "target_class"]


class MetricsSchemaError(ValueError):
    """A metrics table does not follow ``METRICS_COLUMNS``; the message names the file and column."""


def validate(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check ``df`` against the metrics schema and return a copy with the schema's dtypes.

    ``source`` (usually the file path) is named in every error. Extra columns are kept, after the
    schema columns.
    """
    result = _with_schema_dtypes(df, METRICS_COLUMNS, source)
    _check_values(result, source)
    return result.reset_index(drop=True)


def validate_predictions(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check ``df`` against ``PREDICTIONS_COLUMNS`` and return a copy with the schema's dtypes."""
    result = _with_schema_dtypes(df, PREDICTIONS_COLUMNS, source)
    _check_allowed(result, "evaluator", ALLOWED_VALUES["evaluator"], source)
    _check_K(result, source)
    _check_non_negative(result, ("step", "example", "label", "prediction"), source)
    return result.reset_index(drop=True)


def validate_ntk(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check ``df`` against ``NTK_COLUMNS`` and return a copy with the schema's dtypes.

    Like ``validate``: ``source`` is named in every error and extra columns are kept at the end.
    """
    result = _with_schema_dtypes(df, NTK_COLUMNS, source)
    for column, allowed in (("point", NTK_POINTS), ("metric", NTK_METRICS), ("status", ALLOWED_VALUES["status"])):
        _check_allowed(result, column, allowed, source)
    _check_K(result, source)
    for column, lowest in (("step", 0), ("probe_size", 1), ("depth", 1), ("output_class", 0), ("target_class", 0),
                           ("diverged_step", 0)):
        if (result[column].dropna() < lowest).any():
            raise MetricsSchemaError(f"{source}: column {column!r} has values below {lowest}")
    _check_allowed(result, "activation", ACTIVATIONS, source)
    if (result["diverged_step"].isna() == (result["status"] == "diverged")).any():
        raise MetricsSchemaError(f"{source}: column 'diverged_step' must be set exactly on diverged runs")
    if (result["step"] >= result["diverged_step"]).fillna(False).any():
        raise MetricsSchemaError(f"{source}: a diverged run has kernels measured at or after its 'diverged_step'")
    is_specialisation = result["metric"].isin(SPECIALISATION_METRICS)
    for column in ("output_class", "target_class"):
        if (result[column].isna() == is_specialisation).any():
            raise MetricsSchemaError(f"{source}: column {column!r} must be set on specialisation rows and only there")
    return result.reset_index(drop=True)


def validate_gauss_newton(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check ``df`` against ``GAUSS_NEWTON_COLUMNS`` and return a copy with the schema's dtypes."""
    result = _with_schema_dtypes(df, GAUSS_NEWTON_COLUMNS, source)
    _check_gauss_newton_keys(result, source)
    for column, allowed in (("status", ALLOWED_VALUES["status"]), ("evaluator", ALLOWED_VALUES["evaluator"])):
        _check_allowed(result, column, allowed, source)
    if (result["damping"] <= 0).any() or result["damping"].isna().any():
        raise MetricsSchemaError(f"{source}: column 'damping' must be a number > 0")
    if (result["rounds"] < 1).any() or (result["steps"] < result["rounds"]).any():
        raise MetricsSchemaError(f"{source}: column 'rounds' must lie between 1 and 'steps'")
    return result.reset_index(drop=True)


def validate_gauss_newton_predictions(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check ``df`` against ``GAUSS_NEWTON_PREDICTIONS_COLUMNS`` and return a copy with the schema's dtypes."""
    result = _with_schema_dtypes(df, GAUSS_NEWTON_PREDICTIONS_COLUMNS, source)
    _check_gauss_newton_keys(result, source)
    _check_allowed(result, "evaluator", ALLOWED_VALUES["evaluator"], source)
    _check_non_negative(result, ("example", "label", "prediction"), source)
    return result.reset_index(drop=True)


def _check_gauss_newton_keys(df: pd.DataFrame, source: str) -> None:
    """A C5 run's method and loss are known, and its period K is a finite integer >= 1."""
    _check_allowed(df, "method", GAUSS_NEWTON_METHODS, source)
    _check_allowed(df, "loss", GAUSS_NEWTON_LOSSES, source)
    _check_K(df, source)
    if np.isinf(df["K"]).any():
        raise MetricsSchemaError(f"{source}: column 'K' must be finite in the C5 table (its damping is 1/(ηK))")


def _check_allowed(df: pd.DataFrame, column: str, allowed: Sequence[str], source: str) -> None:
    """Reject values of ``column`` outside ``allowed``, naming them."""
    bad = sorted(set(df[column]) - set(allowed))
    if bad:
        raise MetricsSchemaError(f"{source}: column {column!r} has value(s) {bad}, allowed {list(allowed)}")


def _check_non_negative(df: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    """Reject negative values in ``columns`` (missing values pass)."""
    for column in columns:
        if (df[column].dropna() < 0).any():
            raise MetricsSchemaError(f"{source}: column {column!r} has negative values")


def validate_kernel_regression(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check ``df`` against ``KERNEL_REGRESSION_COLUMNS`` and return a copy with the schema's dtypes."""
    result = _with_schema_dtypes(df, KERNEL_REGRESSION_COLUMNS, source)
    steps = result["step"]
    if steps.isna().any() or (steps < 0).any() or (np.isfinite(steps) & (steps != np.round(steps))).any():
        raise MetricsSchemaError(f"{source}: column 'step' must be an integer >= 0 or inf (kernel regression)")
    if (np.isinf(steps) != result["trained"].isna()).any():
        raise MetricsSchemaError(f"{source}: column 'trained' must be NaN exactly at step inf (kernel regression)")
    return result.reset_index(drop=True)


def _with_schema_dtypes(df: pd.DataFrame, schema: dict[str, str], source: str) -> pd.DataFrame:
    """``df`` with the columns of ``schema`` first, in its dtypes, then any extra columns."""
    missing = [column for column in schema if column not in df.columns]
    if missing:
        raise MetricsSchemaError(f"{source}: missing column(s) {missing}")
    columns = {name: _coerce_column(df[name], name, dtype, source) for name, dtype in schema.items()}
    result = pd.DataFrame(columns, index=df.index)
    for column in [column for column in df.columns if column not in schema]:
        result[column] = df[column]
    return result


def _coerce_column(values: pd.Series, name: str, dtype: str, source: str) -> pd.Series:
    """Convert one column to its schema dtype, raising ``MetricsSchemaError`` on a bad value."""
    where = f"{source}: column {name!r}"
    if dtype == "str":
        not_text = values.map(lambda value: not isinstance(value, str))
        if not_text.any():
            raise MetricsSchemaError(f"{where} must hold text, found {values[not_text].iloc[0]!r}")
        return values.astype("str")
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        not_number = values.map(lambda value: not (pd.isna(value) or _is_number(value)))
        if not_number.any():
            raise MetricsSchemaError(f"{where} must be numeric ({dtype}), found {values[not_number].iloc[0]!r}")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    if dtype == "float64":
        return numbers
    if dtype == "int64" and numbers.isna().any():
        raise MetricsSchemaError(f"{where} ({dtype}) has missing values")
    finite = numbers.dropna()
    if not (np.isfinite(finite) & (finite == np.round(finite))).all():
        raise MetricsSchemaError(f"{where} ({dtype}) has non-integer values")
    return numbers.astype(dtype)


def _is_number(value: object) -> bool:
    """True for a real number that is not a boolean (bools are not valid counts or rates)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_values(df: pd.DataFrame, source: str) -> None:
    """Reject values outside the schema's domains (categories, K >= 1, non-negative counts)."""
    for column, allowed in ALLOWED_VALUES.items():
        _check_allowed(df, column, allowed, source)
    _check_K(df, source)
    _check_non_negative(df, ("step", "feature_updates", "switch_step"), source)
    accuracy = df["accuracy"].dropna()
    if ((accuracy < 0) | (accuracy > 1)).any():
        raise MetricsSchemaError(f"{source}: column 'accuracy' must be a fraction in [0, 1]")


def _check_K(df: pd.DataFrame, source: str) -> None:
    """K must be an integer >= 1 or inf."""
    finite_K = df["K"][np.isfinite(df["K"])]
    if df["K"].isna().any() or (df["K"] < 1).any() or (finite_K != np.round(finite_K)).any():
        raise MetricsSchemaError(f"{source}: column 'K' must be an integer >= 1 or inf (never re-linearise)")


def aggregate(paths: Sequence[Path]) -> pd.DataFrame:
    """Read and validate per-run ``metrics.parquet`` files and concatenate them into one table.

    Raises ``MetricsSchemaError`` naming the file and column of the first schema violation, or
    the two files when the same measurement appears twice.
    """
    return _concatenate(paths, validate, _MEASUREMENT_KEYS, "metrics")


def aggregate_predictions(paths: Sequence[Path]) -> pd.DataFrame:
    """Read, validate (``validate_predictions``) and concatenate per-run predictions, like ``aggregate``."""
    return _concatenate(paths, validate_predictions, _PREDICTION_KEYS, "predictions")


def aggregate_ntk(paths: Sequence[Path]) -> pd.DataFrame:
    """Read, validate (``validate_ntk``) and concatenate per-run NTK tables, like ``aggregate``."""
    return _concatenate(paths, validate_ntk, _NTK_MEASUREMENT_KEYS, "NTK")


def aggregate_gauss_newton(paths: Sequence[Path]) -> pd.DataFrame:
    """Read, validate (``validate_gauss_newton``) and concatenate per-job C5 tables, like ``aggregate``."""
    return _concatenate(paths, validate_gauss_newton, GAUSS_NEWTON_RUN_KEYS + ["evaluator"], "C5")


def aggregate_gauss_newton_predictions(paths: Sequence[Path]) -> pd.DataFrame:
    """Read, validate (``validate_gauss_newton_predictions``) and concatenate per-job C5 predictions."""
    return _concatenate(paths, validate_gauss_newton_predictions, GAUSS_NEWTON_RUN_KEYS + ["evaluator", "example"],
                        "C5 predictions")


def aggregate_kernel_regression(paths: Sequence[Path]) -> pd.DataFrame:
    """Read, validate (``validate_kernel_regression``) and concatenate per-run kernel-regression tables."""
    return _concatenate(paths, validate_kernel_regression, ["dataset", "model", "seed", "step", "example",
                                                            "output_class"], "kernel-regression")


def _concatenate(paths: Sequence[Path], check: Callable[[pd.DataFrame, str], pd.DataFrame], keys: list[str],
                 kind: str) -> pd.DataFrame:
    """The validated tables of ``paths`` in one, sorted by ``keys``; a measurement (``keys``) found
    twice raises ``MetricsSchemaError`` naming both files."""
    if not paths:
        raise ValueError(f"aggregate: no {kind} files given")
    tables = []
    for path in paths:
        table = check(pd.read_parquet(path), str(path))
        table["_source"] = str(path)
        tables.append(table)
    combined = pd.concat(tables, ignore_index=True)
    duplicates = combined[combined.duplicated(keys, keep=False)]
    if not duplicates.empty:
        by_measurement = duplicates.groupby(keys, dropna=False, sort=False)["_source"]
        key, sources = next(iter(by_measurement))
        raise MetricsSchemaError(f"measurement {dict(zip(keys, key))} appears more than once, in {sorted(set(sources))}")
    combined = combined.drop(columns="_source")
    return combined.sort_values(keys, ignore_index=True, na_position="first")


def read(path: Path) -> pd.DataFrame:
    """Read one metrics table (per-run or aggregated) and validate it."""
    return validate(pd.read_parquet(path), source=str(path))


def write(df: pd.DataFrame, path: Path) -> None:
    """Validate ``df`` and write it as Parquet to ``path``, creating parent folders."""
    _write_parquet(validate(df, source=str(path)), path)


def read_predictions(path: Path) -> pd.DataFrame:
    """Read one predictions table (per-run or aggregated) and validate it."""
    return validate_predictions(pd.read_parquet(path), source=str(path))


def write_predictions(df: pd.DataFrame, path: Path) -> None:
    """Validate ``df`` as a predictions table and write it as Parquet to ``path``."""
    _write_parquet(validate_predictions(df, source=str(path)), path)


def read_ntk(path: Path) -> pd.DataFrame:
    """Read one NTK table (per-run or aggregated) and validate it."""
    return validate_ntk(pd.read_parquet(path), source=str(path))


def write_ntk(df: pd.DataFrame, path: Path) -> None:
    """Validate ``df`` as an NTK table and write it as Parquet to ``path``, creating parent folders."""
    _write_parquet(validate_ntk(df, source=str(path)), path)


def read_gauss_newton(path: Path) -> pd.DataFrame:
    """Read one C5 table and validate it."""
    return validate_gauss_newton(pd.read_parquet(path), source=str(path))


def write_gauss_newton(df: pd.DataFrame, path: Path) -> None:
    """Validate ``df`` as a C5 table and write it as Parquet to ``path``."""
    _write_parquet(validate_gauss_newton(df, source=str(path)), path)


def read_gauss_newton_predictions(path: Path) -> pd.DataFrame:
    """Read one C5 predictions table and validate it."""
    return validate_gauss_newton_predictions(pd.read_parquet(path), source=str(path))


def write_gauss_newton_predictions(df: pd.DataFrame, path: Path) -> None:
    """Validate ``df`` as a C5 predictions table and write it as Parquet to ``path``."""
    _write_parquet(validate_gauss_newton_predictions(df, source=str(path)), path)


def read_kernel_regression(path: Path) -> pd.DataFrame:
    """Read one kernel-regression table and validate it."""
    return validate_kernel_regression(pd.read_parquet(path), source=str(path))


def write_kernel_regression(df: pd.DataFrame, path: Path) -> None:
    """Validate ``df`` as a kernel-regression table and write it as Parquet to ``path``."""
    _write_parquet(validate_kernel_regression(df, source=str(path)), path)


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)


def diverged_runs(table: pd.DataFrame) -> pd.DataFrame:
    """One row per diverged run of a metrics or NTK table: ``RUN_KEYS`` and ``diverged_step``, the first
    step whose training loss was not finite.

    A diverged run's metrics end with NaN rows at that step; its NTK rows stop at the last snapshot
    before it. Either way its last values are not those of the end of training: a verdict or figure
    about the end of training leaves these runs out and says so (``describe_runs`` names them).
    """
    diverged = table[table["status"] == "diverged"]
    step = diverged["diverged_step"] if "diverged_step" in diverged else diverged["step"]  # metrics: the NaN rows' step
    runs = diverged.assign(diverged_step=step).groupby(RUN_KEYS, dropna=False, sort=True)["diverged_step"].max()
    return runs.astype("int64").reset_index()[RUN_KEYS + ["diverged_step"]]


def describe_runs(runs: pd.DataFrame) -> str:
    """The runs of ``diverged_runs`` named for a note: 'cnn K=1 seed 1 (step 100), ...'."""
    labels = group_labels(runs) if not runs.empty else pd.Series(dtype="str")
    return ", ".join(f"{label} K={record.format_K(K)} seed {seed} (step {step})"
                     for label, K, seed, step in zip(labels, runs["K"], runs["seed"], runs["diverged_step"]))


def final_metrics(metrics: pd.DataFrame, split: str = "test", evaluator: str = TRAINED_EVALUATOR) -> pd.DataFrame:
    """One row per run: its last evaluation of ``split`` by ``evaluator``.

    Columns: ``RUN_KEYS``, ``step`` (last step, the diverged step for a diverged run),
    ``feature_updates``, ``status``, ``accuracy`` (final accuracy; NaN for a diverged run, which
    has none) and ``last_accuracy`` (the last finite accuracy, where a diverged run is drawn).
    """
    rows = metrics[(metrics["split"] == split) & (metrics["evaluator"] == evaluator)]
    rows = rows.sort_values("step")
    runs = rows.groupby(RUN_KEYS, dropna=False, sort=True)
    final = runs.tail(1).set_index(RUN_KEYS)
    last_accuracy = runs["accuracy"].last()  # skips NaN: the last finite accuracy
    final = final[["step", "feature_updates", "status", "accuracy"]].copy()
    final["last_accuracy"] = last_accuracy.reindex(final.index)
    final.loc[final["status"] == "diverged", "accuracy"] = np.nan
    return final.reset_index().sort_values(RUN_KEYS, ignore_index=True, na_position="first")


def nonlinear(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of the ReLU networks of an NTK table: the deep linear twins are S2's control only."""
    return rows[rows["activation"] != "linear"]


def group_labels(runs: pd.DataFrame) -> pd.Series:
    """A short label per row naming its model, plus dataset and variant where the table has several (tables
    without a variant column, such as C5's and C6's, are labelled by dataset only)."""
    parts = [column for column in ("dataset", "variant") if column in runs and runs[column].nunique() > 1]
    label = runs["model"].astype("str")
    for column in parts:
        label = label + " / " + runs[column].astype("str")
    return label


def example_metrics(
    *,
    models: Sequence[str] = ("cnn", "mlp"),
    Ks: Sequence[float] = (1, 10, 100, math.inf),
    seeds: Sequence[int] = (0, 1, 2),
    switch_steps: Sequence[int] = (0, 10, 100),
    steps: int = 1000,
    eval_every: int = 100,
    diverged: Iterable[tuple[str, float, int]] = (),
    final_accuracy: Callable[[str, float, int | None], float] | None = None,
    noise: float = 0.003,
    dataset: str = "synthetic",
    variant: str = "base",
) -> pd.DataFrame:
    """A small synthetic metrics table in the schema, for tests and for previewing figures.

    Period runs for every (model, K, seed), switch runs (K = 1, switch at t) for every t in
    ``switch_steps``; period runs listed in ``diverged`` as (model, K, seed) diverge half-way.
    ``final_accuracy(model, K, switch_step)`` sets where each learning curve ends, up to Gaussian
    ``noise`` (standard deviation, per run).
    """
    final_accuracy = final_accuracy or _default_final_accuracy(steps)
    diverged = set(diverged)
    rng = np.random.default_rng(0)
    runs = [(model, float(K), None, seed) for model in models for K in Ks for seed in seeds]
    runs += [(model, 1.0, t, seed) for model in models for t in switch_steps for seed in seeds]
    eval_steps = np.arange(0, steps + 1, eval_every)
    rows = []
    for model, K, switch_step, seed in runs:
        target = final_accuracy(model, K, switch_step) + rng.normal(0, noise)
        diverges = switch_step is None and (model, K, seed) in diverged
        diverged_at = eval_steps[len(eval_steps) // 2] if diverges else None
        for step in eval_steps:
            if diverged_at is not None and step > diverged_at:
                break
            progress = (1 - np.exp(-5 * step / steps)) / (1 - np.exp(-5))
            test_accuracy = 0.1 + (target - 0.1) * progress
            for split, accuracy in (("test", test_accuracy), ("train", min(1.0, test_accuracy + 0.03))):
                for evaluator, shift in (("linear", 0.0), ("network", -0.01 * (K > 1))):
                    value = float(np.clip(accuracy + shift, 0, 1))
                    blown_up = diverged_at is not None and step == diverged_at
                    rows.append(
                        {
                            "dataset": dataset,
                            "model": model,
                            "K": K,
                            "switch_step": switch_step,
                            "seed": seed,
                            "variant": variant,
                            "step": int(step),
                            "feature_updates": _feature_updates(int(step), K, switch_step),
                            "split": split,
                            "evaluator": evaluator,
                            "loss": np.nan if blown_up else -np.log(max(value, 1e-3)),
                            "accuracy": np.nan if blown_up else value,
                            "status": "ok" if diverged_at is None else "diverged",
                            "wall_time_s": 0.01 * step,
                        }
                    )
    table = pd.DataFrame(rows)
    table["switch_step"] = pd.array(table["switch_step"], dtype="Int64")
    return validate(table, source="example_metrics")


def example_predictions(metrics: pd.DataFrame, *, n_test: int = 400, num_classes: int = 10,
                        agreement: float = 0.9) -> pd.DataFrame:
    """Per-example test predictions (``PREDICTIONS_COLUMNS``) consistent with a metrics table, for tests.

    Every completed run gets exactly round(accuracy · ``n_test``) correct examples, its final test
    accuracy (evaluator by evaluator). Examples have a fixed difficulty shared by all runs, blended
    with a per-run draw (``agreement``: weight of the shared part), so that runs agree on most
    examples, as networks trained on one test set do: paired comparisons are then tighter than
    unpaired ones.
    """
    rng = np.random.default_rng(0)
    difficulty = rng.random(n_test)
    labels = np.arange(n_test) % num_classes
    rows = []
    for evaluator in ALLOWED_VALUES["evaluator"]:
        finals = final_metrics(metrics, evaluator=evaluator)
        for run in finals[finals["status"] == "ok"].itertuples(index=False):
            rows.append(pd.DataFrame(dict(
                dataset=run.dataset, model=run.model, K=run.K, switch_step=run.switch_step, seed=run.seed,
                variant=run.variant, step=run.step, evaluator=evaluator, example=np.arange(n_test), label=labels,
                prediction=_example_prediction(rng, difficulty, labels, run.accuracy, agreement, num_classes))))
    return validate_predictions(pd.concat(rows, ignore_index=True), source="example_predictions")


def _example_prediction(rng: np.random.Generator, difficulty: np.ndarray, labels: np.ndarray, accuracy: float,
                        agreement: float, num_classes: int) -> np.ndarray:
    """Predicted classes with exactly round(accuracy · n) right: the easiest examples by ``difficulty``
    blended with a fresh draw (``agreement``: the weight of the shared difficulty)."""
    n = len(labels)
    order = np.argsort(agreement * difficulty + (1 - agreement) * rng.random(n))
    correct = np.zeros(n, bool)
    correct[order[: int(round(accuracy * n))]] = True
    return np.where(correct, labels, (labels + 1) % num_classes)


def _default_final_accuracy(steps: int) -> Callable[[str, float, int | None], float]:
    """Plausible final accuracies: K = 1 best, slowly worse with K, K = inf clearly worse."""

    def accuracy(model: str, K: float, switch_step: int | None) -> float:
        base = 0.95 if model == "cnn" else 0.92
        if switch_step is not None:
            return base - 0.08 * (1 - np.log1p(switch_step) / np.log1p(steps))
        if math.isinf(K):
            return base - 0.08
        return base - 0.005 * np.log10(K)

    return accuracy


def _feature_updates(step: int, K: float, switch_step: int | None) -> int:
    """Re-linearisations after initialisation done by ``step`` (``ceil(step / K) - 1``)."""
    if step == 0 or math.isinf(K):
        return 0
    updates = math.ceil(step / K) - 1
    if switch_step is not None and step > switch_step:
        return switch_step
    return updates


def example_ntk(
    *,
    depths: Mapping[str, int] | None = None,
    twins: Mapping[str, str] | None = None,
    Ks: Sequence[float] = (1, 100, math.inf),
    seeds: Sequence[int] = (0, 1),
    steps: int = 1000,
    num_snapshots: int = 8,
    velocity_interval: int = 10,
    num_classes: int = 3,
    time_constant: float = 0.03,
    final_change: Callable[[str, float], float] | None = None,
    final_distance: Callable[[str, float], float] | None = None,
    alignment_gain: Callable[[str, float], float] | None = None,
    specialisation_gain: Callable[[str, float], float] | None = None,
    noise: float = 0.0,
    diverged: Iterable[tuple[str, float, int]] = (),
    dataset: str = "synthetic",
    variant: str = "base",
) -> pd.DataFrame:
    """A small synthetic NTK table in the ``NTK_COLUMNS`` schema, for tests and for previewing figures.

    Models are the keys of ``depths`` (default cnn: 2, cnn_deep: 4; architecture: the label up to its
    first '_'); ``twins`` maps deep linear twins (activation ``linear``, K = 1 runs only) to the model
    they copy. Every kernel quantity of a run moves as gain·(1 − exp(−t / (time_constant·T))): fast,
    then a plateau. Gains per (model, K): ``final_change`` (relative change; the norm ratio is one more),
    ``final_distance`` (centred distance; the Fort distance is a tenth of it), ``alignment_gain`` (above
    0.2; the uncentred alignment sits 0.5 higher and moves a tenth as much) and ``specialisation_gain``
    (added to the diagonal of a matrix of 0.1, for the full and the backbone kernel alike; 0 for a deep
    linear twin). By default they grow with depth and are 0 for K = ∞, whose linearisation point never
    moves; the network point of every run follows K = 1 (θ always moves). Snapshots come in pairs t,
    t + ``velocity_interval``; the velocity is that of the Fort distance. ``noise``: standard deviation of
    a per-run Gaussian shift of every value (relative, for the changes). Runs listed in ``diverged`` as
    (model, K, seed) diverge at their middle snapshot step, and are measured before it only.
    """
    depths = dict(depths or {"cnn": 2, "cnn_deep": 4})
    twins = dict(twins or {})
    final_change = final_change or (lambda model, K: 0.0 if math.isinf(K) else 2.0 + depths[model])
    final_distance = final_distance or (lambda model, K: 0.0 if math.isinf(K) else 0.2 + 0.05 * depths[model])
    alignment_gain = alignment_gain or (lambda model, K: 0.0 if math.isinf(K) else 0.2 + 0.05 * depths[model])
    specialisation_gain = specialisation_gain or (lambda model, K: 0.0 if math.isinf(K) else 0.3)
    rng = np.random.default_rng(0)
    main = np.round(np.geomspace(steps / 100, steps, num_snapshots - 1))
    snapshot_steps = np.unique(np.concatenate([[0], main, [t + velocity_interval for t in np.concatenate([[0], main])
                                                           if t + velocity_interval <= steps]]))
    tau = time_constant * steps
    runs = [(model, model, depth, "relu", float(K)) for model, depth in depths.items() for K in Ks]
    runs += [(twin, model, depths[model], "linear", 1.0) for twin, model in twins.items()]
    diverged = set(diverged)
    rows = []
    for label, model, depth, activation, K in runs:
        for seed in seeds:
            shift = rng.normal(0, noise)
            diverged_step = int(snapshot_steps[len(snapshot_steps) // 2]) if (label, K, seed) in diverged else None
            for point, gain_K in (("network", 1.0), ("linearisation", K)):
                specialising = 0.0 if activation == "linear" else specialisation_gain(model, gain_K)
                for step in snapshot_steps:
                    if diverged_step is not None and step >= diverged_step:
                        break
                    progress = 1 - np.exp(-step / tau)
                    distance = float(np.clip(final_distance(model, gain_K) * progress * (1 + shift), 0, 2))
                    change = final_change(model, gain_K) * progress * (1 + shift)
                    alignment = 0.2 + alignment_gain(model, gain_K) * progress + shift
                    measured = [("centred_distance", distance, None, None), ("distance_from_init", distance / 10, None, None),
                                ("relative_change", change, None, None), ("norm_ratio", 1 + change, None, None),
                                ("alignment", alignment, None, None),
                                ("alignment_uncentred", 0.7 + 0.1 * (alignment - 0.2), None, None)]
                    if step + velocity_interval in snapshot_steps and not (
                            diverged_step is not None and step + velocity_interval >= diverged_step):
                        later = 1 - np.exp(-(step + velocity_interval) / tau)
                        speed = final_distance(model, gain_K) / 10 * (later - progress) / velocity_interval
                        measured.append(("velocity", float(abs(speed * (1 + shift))), None, None))
                    diagonal = specialising * progress
                    measured += [(metric, 0.1 + diagonal * (c == t) + shift, c, t)
                                 for metric in SPECIALISATION_METRICS
                                 for c in range(num_classes) for t in range(num_classes)]
                    rows += [dict(dataset=dataset, model=label, architecture=model.split("_")[0], depth=depth,
                                  activation=activation, K=K, switch_step=None, seed=seed, variant=variant,
                                  probe_size=10 * num_classes, status="ok" if diverged_step is None else "diverged",
                                  diverged_step=diverged_step, step=int(step), point=point, metric=metric,
                                  output_class=c, target_class=t, value=float(value))
                             for metric, value, c, t in measured]
    return validate_ntk(pd.DataFrame(rows), source="example_ntk")


def example_gauss_newton(
    *,
    models: Sequence[str] = ("mlp",),
    losses: Sequence[str] = ("mse", "cross_entropy"),
    Ks: Sequence[int] = (3, 10, 30, 100, 300),
    seeds: Sequence[int] = (0, 1, 2),
    learning_rate: float = 0.03,
    steps: int = 300,
    accuracy: Callable[[str, str, str, float], float] | None = None,
    change: Callable[[str, str, str, float], float] | None = None,
    diverged: Iterable[tuple[str, str, str, int, int]] = (),
) -> pd.DataFrame:
    """A small synthetic C5 table (``GAUSS_NEWTON_COLUMNS``), for tests and previews.

    Every (model, loss, method, K, seed) run has the test accuracy ``accuracy(model, loss, method, λ)`` and
    the relative kernel change ``change(model, loss, method, λ)`` at λ = 1/(ηK) for its linear model (by
    default both rise with log λ, Gauss-Newton 0.3 pt less accurate); the network evaluator is 1 pt less accurate
    and changed 0.05 more. Runs listed in ``diverged`` as (model, loss, method, K, seed) have NaN results.
    """
    accuracy = accuracy or (lambda model, loss, method, damping: 0.93 + 0.005 * math.log10(damping)
                            - 0.003 * (method == "gauss_newton"))
    change = change or (lambda model, loss, method, damping: 0.2 + 0.05 * math.log10(damping))
    diverged = set(diverged)
    rows = []
    for model in models:
        for loss in losses:
            for method in GAUSS_NEWTON_METHODS:
                for K in Ks:
                    damping = 1 / (learning_rate * K)
                    for seed in seeds:
                        failed = (model, loss, method, K, seed) in diverged
                        for evaluator, shift in (("linear", 0.0), ("network", 1.0)):
                            value = (lambda x: math.nan if failed else x)  # noqa: E731
                            rows.append(dict(
                                method=method, dataset="synthetic", model=model, loss=loss, seed=seed, K=float(K),
                                damping=damping, rounds=steps // K, learning_rate=learning_rate, steps=steps,
                                evaluator=evaluator, train_loss=value(0.1), test_loss=value(0.2),
                                test_accuracy=value(accuracy(model, loss, method, damping) - 0.01 * shift),
                                relative_change=value(change(model, loss, method, damping) + 0.05 * shift),
                                centred_distance=value(0.01), distance_from_init=value(0.002),
                                newton_steps_mean=1.0 if method == "gauss_newton" else math.nan,
                                cg_iterations_mean=10.0 if method == "gauss_newton" else math.nan,
                                cg_residual_max=1e-4 if method == "gauss_newton" else math.nan,
                                gradient_ratio_max=1e-4 if method == "gauss_newton" else math.nan,
                                status="diverged" if failed else "ok"))
    return validate_gauss_newton(pd.DataFrame(rows), "example C5 table")


def example_gauss_newton_predictions(table: pd.DataFrame, *, n_test: int = 400, num_classes: int = 10,
                                     agreement: float = 0.9) -> pd.DataFrame:
    """Per-example test predictions (``GAUSS_NEWTON_PREDICTIONS_COLUMNS``) consistent with a C5 table: every
    completed run and evaluator gets exactly round(test accuracy · ``n_test``) right (as ``example_predictions``)."""
    rng = np.random.default_rng(0)
    difficulty, labels = rng.random(n_test), np.arange(n_test) % num_classes
    rows = [pd.DataFrame(dict(
        method=run.method, dataset=run.dataset, model=run.model, loss=run.loss, seed=run.seed, K=run.K,
        evaluator=run.evaluator, example=np.arange(n_test), label=labels,
        prediction=_example_prediction(rng, difficulty, labels, run.test_accuracy, agreement, num_classes)))
        for run in table[table["status"] == "ok"].itertuples(index=False)]
    return validate_gauss_newton_predictions(pd.concat(rows, ignore_index=True), "example C5 predictions")


def example_kernel_regression(*, models: Sequence[str] = ("mlp",), seeds: Sequence[int] = (0, 1),
                              steps: Sequence[int] = (10, 100, 1000), n_test: int = 30, num_classes: int = 3,
                              difference: float = 1e-4, convergence_gap: float = 1e-5) -> pd.DataFrame:
    """A small synthetic C6 table (``KERNEL_REGRESSION_COLUMNS``): at each step the trained outputs are the
    closed form's plus a deterministic perturbation of at most ``difference``; the closed form approaches
    its limit as 1/t, and lies within ``convergence_gap`` of it at the last step."""
    rng = np.random.default_rng(0)
    rows = []
    for model in models:
        for seed in seeds:
            labels = np.arange(n_test) % num_classes
            limit = np.eye(num_classes)[labels] * 0.8 + rng.normal(0, 0.1, (n_test, num_classes))
            wiggle = np.sin(np.arange(limit.size)).reshape(limit.shape)
            for step in [*steps, math.inf]:
                left = {math.inf: 0.0, steps[-1]: convergence_gap}.get(step, steps[0] / step)
                closed_form = limit + left * wiggle
                trained = np.full_like(limit, np.nan) if math.isinf(step) else closed_form + difference * np.cos(wiggle)
                rows.append(pd.DataFrame(dict(
                    dataset="synthetic", model=model, seed=seed, train_size=20, learning_rate=0.1,
                    condition_number=100.0, step=float(step), trained_train_loss=math.nan if math.isinf(step) else left,
                    closed_form_train_loss=left, example=np.repeat(np.arange(n_test), num_classes),
                    label=np.repeat(labels, num_classes), output_class=np.tile(np.arange(num_classes), n_test),
                    trained=trained.reshape(-1), closed_form=closed_form.reshape(-1))))
    return validate_kernel_regression(pd.concat(rows, ignore_index=True), "example kernel-regression table")
