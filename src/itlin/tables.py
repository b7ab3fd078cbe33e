"""The pipeline's tidy tables: one ``TableSpec`` per table (``SPECS``), and their validation, Parquet
files and aggregation, by table name.

``metrics`` (every run's ``metrics.parquet``: one row per run, evaluation step, split and evaluator),
``predictions``, ``ntk``, ``gauss_newton`` (C5), ``gauss_newton_predictions`` and ``kernel_regression``
(C6). A run of the sweep is identified by ``RUN_KEYS``, a C5 run by ``GAUSS_NEWTON_RUN_KEYS``; then a few
queries the figures and claims share. This module imports no JAX, so the light plotting and claims jobs
can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
"""Columns that together identify one training run in a table (a run config's own keys are
``record.IDENTITY_KEYS``)."""

SPLITS: tuple[str, ...] = ("train", "test")
STATUSES: tuple[str, ...] = ("ok", "diverged")
"""A run's status in every table: ``diverged`` once its training loss was not finite."""

TRAINED_EVALUATOR = "linear"
"""Evaluator used for every run in figures and claims (except C5 (b), which reads the network's kernel at
θ): f_lin is the model being trained for any K (for K = 1 it is re-linearised every step, so it equals the
network up to one optimiser step)."""

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
    "top_k": "Int64",
    "value": "float64",
}
"""Column name -> pandas dtype of an NTK table (``itlin.measure_ntk.measure_runs``), in file order.

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
layer; ``target_energy``, on the row of rank ``top_k`` = k, the share C(k) of the centred one-hot targets'
energy in the span of the trace kernel's top-k eigenvectors (``ntk.target_energy``; S4). The two class
columns are set for the specialisation rows only, ``top_k`` for the target-energy rows only. A degenerate
(all-zero) kernel gives NaN values."""

NTK_POINTS: tuple[str, ...] = ("network", "linearisation")
NTK_METRICS: tuple[str, ...] = ("distance_from_init", "relative_change", "norm_ratio", "centred_distance", "velocity",
                                "alignment", "alignment_uncentred", "specialisation", "specialisation_backbone",
                                "target_energy")
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


class SchemaError(ValueError):
    """A table does not follow its ``TableSpec``; the message names the file (or source) and column."""


@dataclass(frozen=True)
class TableSpec:
    """What a valid table holds: its columns, the columns that identify one of its rows, and its values' domains.

    Every table with a ``K`` column also has K an integer >= 1 or inf (``_check_K``).
    """

    kind: str
    """The table's files as error messages name them ('NTK')."""
    columns: Mapping[str, str]
    """Column name -> pandas dtype, in file order; extra columns are kept after them."""
    row_keys: list[str]
    """Columns that together identify one row: no two rows of an aggregated table agree on all of them, and
    it is sorted by them."""
    allowed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Column -> its allowed values."""
    non_negative: tuple[str, ...] = ()
    """Columns without negative values (missing values pass)."""
    check: Callable[[pd.DataFrame, str], None] | None = None
    """Any further check of the table (in its dtypes) and the source named in its errors."""


def _check_accuracy(df: pd.DataFrame, source: str) -> None:
    """Accuracies are fractions."""
    accuracy = df["accuracy"].dropna()
    if ((accuracy < 0) | (accuracy > 1)).any():
        raise SchemaError(f"{source}: column 'accuracy' must be a fraction in [0, 1]")


def _check_ntk(df: pd.DataFrame, source: str) -> None:
    """Counts above their least value; a diverged run measured only before it diverged; class columns
    set exactly on the specialisation rows, the rank exactly on the target-energy rows."""
    for column, lowest in (("step", 0), ("probe_size", 1), ("depth", 1), ("output_class", 0), ("target_class", 0),
                           ("top_k", 1), ("diverged_step", 0)):
        if (df[column].dropna() < lowest).any():
            raise SchemaError(f"{source}: column {column!r} has values below {lowest}")
    if (df["diverged_step"].isna() == (df["status"] == "diverged")).any():
        raise SchemaError(f"{source}: column 'diverged_step' must be set exactly on diverged runs")
    if (df["step"] >= df["diverged_step"]).fillna(False).any():
        raise SchemaError(f"{source}: a diverged run has kernels measured at or after its 'diverged_step'")
    is_specialisation = df["metric"].isin(SPECIALISATION_METRICS)
    for column in ("output_class", "target_class"):
        if (df[column].isna() == is_specialisation).any():
            raise SchemaError(f"{source}: column {column!r} must be set on specialisation rows and only there")
    if (df["top_k"].isna() == (df["metric"] == "target_energy")).any():
        raise SchemaError(f"{source}: column 'top_k' must be set on target-energy rows and only there")


def _check_finite_K(df: pd.DataFrame, source: str) -> None:
    """A C5 run's period K is finite."""
    if np.isinf(df["K"]).any():
        raise SchemaError(f"{source}: column 'K' must be finite in the C5 table (its damping is 1/(ηK))")


def _check_gauss_newton(df: pd.DataFrame, source: str) -> None:
    """A C5 run's K is finite, its damping positive and its rounds between 1 and its steps."""
    _check_finite_K(df, source)
    if (df["damping"] <= 0).any() or df["damping"].isna().any():
        raise SchemaError(f"{source}: column 'damping' must be a number > 0")
    if (df["rounds"] < 1).any() or (df["steps"] < df["rounds"]).any():
        raise SchemaError(f"{source}: column 'rounds' must lie between 1 and 'steps'")


def _check_kernel_regression(df: pd.DataFrame, source: str) -> None:
    """Steps are integers >= 0 or inf (kernel regression), where alone the trained output is NaN."""
    steps = df["step"]
    if steps.isna().any() or (steps < 0).any() or (np.isfinite(steps) & (steps != np.round(steps))).any():
        raise SchemaError(f"{source}: column 'step' must be an integer >= 0 or inf (kernel regression)")
    if (np.isinf(steps) != df["trained"].isna()).any():
        raise SchemaError(f"{source}: column 'trained' must be NaN exactly at step inf (kernel regression)")


SPECS: dict[str, TableSpec] = {
    "metrics": TableSpec(
        "metrics", METRICS_COLUMNS, RUN_KEYS + ["step", "split", "evaluator"],
        allowed={"split": SPLITS, "evaluator": record.EVALUATORS, "status": STATUSES},
        non_negative=("step", "feature_updates", "switch_step"), check=_check_accuracy),
    "predictions": TableSpec(
        "predictions", PREDICTIONS_COLUMNS, RUN_KEYS + ["evaluator", "example"],
        allowed={"evaluator": record.EVALUATORS}, non_negative=("step", "example", "label", "prediction")),
    "ntk": TableSpec(
        "NTK", NTK_COLUMNS, RUN_KEYS + ["step", "point", "metric", "output_class", "target_class", "top_k"],
        allowed={"point": NTK_POINTS, "metric": NTK_METRICS, "status": STATUSES, "activation": ACTIVATIONS},
        check=_check_ntk),
    "gauss_newton": TableSpec(
        "C5", GAUSS_NEWTON_COLUMNS, GAUSS_NEWTON_RUN_KEYS + ["evaluator"],
        allowed={"method": GAUSS_NEWTON_METHODS, "loss": GAUSS_NEWTON_LOSSES, "status": STATUSES,
                 "evaluator": record.EVALUATORS},
        check=_check_gauss_newton),
    "gauss_newton_predictions": TableSpec(
        "C5 predictions", GAUSS_NEWTON_PREDICTIONS_COLUMNS, GAUSS_NEWTON_RUN_KEYS + ["evaluator", "example"],
        allowed={"method": GAUSS_NEWTON_METHODS, "loss": GAUSS_NEWTON_LOSSES, "evaluator": record.EVALUATORS},
        non_negative=("example", "label", "prediction"), check=_check_finite_K),
    "kernel_regression": TableSpec(
        "kernel-regression", KERNEL_REGRESSION_COLUMNS, ["dataset", "model", "seed", "step", "example", "output_class"],
        check=_check_kernel_regression),
}
"""Spec name -> its spec: every kind of table the pipeline writes."""

TABLES: dict[str, str] = {name: name for name in SPECS} | {
    "metrics_sweep": "metrics", "metrics_companion": "metrics", "ntk_companion": "ntk", "metrics_width": "metrics",
    "ntk_width": "ntk"}
"""Table (its file ``results/tables/<table>.parquet``) -> its spec: the K sweep's metrics alone, and the companion's
runs' metrics and kernels (its own regime, S1-S5), are tables of their own."""


def validate(name: str, df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check ``df`` against the spec of table ``name`` and return a copy with the spec's dtypes.

    ``source`` (usually the file path) is named in every error (``SchemaError``). Extra columns are kept,
    after the spec's columns.
    """
    spec = SPECS[name]
    result = _with_schema_dtypes(df, spec.columns, source)
    for column, allowed in spec.allowed.items():
        _check_allowed(result, column, allowed, source)
    if "K" in spec.columns:
        _check_K(result, source)
    _check_non_negative(result, spec.non_negative, source)
    if spec.check is not None:
        spec.check(result, source)
    return result.reset_index(drop=True)


def _check_allowed(df: pd.DataFrame, column: str, allowed: Sequence[str], source: str) -> None:
    """Reject values of ``column`` outside ``allowed``, naming them."""
    bad = sorted(set(df[column].unique()) - set(allowed))
    if bad:
        raise SchemaError(f"{source}: column {column!r} has value(s) {bad}, allowed {list(allowed)}")


def _check_non_negative(df: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    """Reject negative values in ``columns`` (missing values pass)."""
    for column in columns:
        if (df[column].dropna() < 0).any():
            raise SchemaError(f"{source}: column {column!r} has negative values")


def _check_K(df: pd.DataFrame, source: str) -> None:
    """K must be an integer >= 1 or inf."""
    finite_K = df["K"][np.isfinite(df["K"])]
    if df["K"].isna().any() or (df["K"] < 1).any() or (finite_K != np.round(finite_K)).any():
        raise SchemaError(f"{source}: column 'K' must be an integer >= 1 or inf (never re-linearise)")


def _with_schema_dtypes(df: pd.DataFrame, schema: dict[str, str], source: str) -> pd.DataFrame:
    """``df`` with the columns of ``schema`` first, in its dtypes, then any extra columns."""
    missing = [column for column in schema if column not in df.columns]
    if missing:
        raise SchemaError(f"{source}: missing column(s) {missing}")
    columns = {name: _coerce_column(df[name], name, dtype, source) for name, dtype in schema.items()}
    result = pd.DataFrame(columns, index=df.index)
    for column in [column for column in df.columns if column not in schema]:
        result[column] = df[column]
    return result


def _coerce_column(values: pd.Series, name: str, dtype: str, source: str) -> pd.Series:
    """Convert one column to its schema dtype, raising ``SchemaError`` on a bad value."""
    where = f"{source}: column {name!r}"
    if dtype == "str":
        # A string dtype (as parquet reads text) holds only text and missing values: no per-value check.
        string_dtype = isinstance(values.dtype, pd.StringDtype)
        not_text = values.isna() if string_dtype else values.map(lambda value: not isinstance(value, str))
        if not_text.any():
            raise SchemaError(f"{where} must hold text, found {values[not_text].iloc[0]!r}")
        return values.astype("str")
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        not_number = values.map(lambda value: not (pd.isna(value) or _is_number(value)))
        if not_number.any():
            raise SchemaError(f"{where} must be numeric ({dtype}), found {values[not_number].iloc[0]!r}")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    if dtype == "float64":
        return numbers
    if dtype == "int64" and numbers.isna().any():
        raise SchemaError(f"{where} ({dtype}) has missing values")
    finite = numbers.dropna()
    if not (np.isfinite(finite) & (finite == np.round(finite))).all():
        raise SchemaError(f"{where} ({dtype}) has non-integer values")
    return numbers.astype(dtype)


def _is_number(value: object) -> bool:
    """True for a real number that is not a boolean (bools are not valid counts or rates)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def aggregate(name: str, paths: Sequence[Path]) -> pd.DataFrame:
    """Read and validate per-run (or per-job) files of table ``name`` and concatenate them into one table,
    sorted by its spec's ``row_keys``.

    Raises ``SchemaError`` naming the file and column of the first schema violation, or the two files
    when the same row (``row_keys``) appears twice.
    """
    spec = SPECS[name]
    if not paths:
        raise ValueError(f"aggregate: no {spec.kind} files given")
    frames = []
    for path in paths:
        frame = validate(name, pd.read_parquet(path), str(path))
        frame["_source"] = str(path)
        frames.append(frame)
    combined = pd.concat(frames, ignore_index=True)
    keys = spec.row_keys
    duplicates = combined[combined.duplicated(keys, keep=False)]
    if not duplicates.empty:
        by_measurement = duplicates.groupby(keys, dropna=False, sort=False)["_source"]
        key, sources = next(iter(by_measurement))
        raise SchemaError(f"measurement {dict(zip(keys, key))} appears more than once, in {sorted(set(sources))}")
    combined = combined.drop(columns="_source")
    return combined.sort_values(keys, ignore_index=True, na_position="first")


def read(name: str, path: Path) -> pd.DataFrame:
    """Read one table ``name`` (per-run or aggregated) and validate it."""
    return validate(name, pd.read_parquet(path), source=str(path))


def write(name: str, df: pd.DataFrame, path: Path) -> None:
    """Validate ``df`` as table ``name`` and write it as Parquet to ``path``, creating parent folders."""
    table = validate(name, df, source=str(path))
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
    """Rows of the ReLU networks of an NTK table: the deep linear twins are S2's and S5's control."""
    return rows[rows["activation"] != "linear"]


def linear(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of the deep linear twins of an NTK table (identity activations)."""
    return rows[rows["activation"] == "linear"]


def group_labels(runs: pd.DataFrame) -> pd.Series:
    """A short label per row naming its model, plus dataset and variant where the table has several (tables
    without a variant column, such as C5's and C6's, are labelled by dataset only)."""
    parts = [column for column in ("dataset", "variant") if column in runs and runs[column].nunique() > 1]
    label = runs["model"].astype("str")
    for column in parts:
        label = label + " / " + runs[column].astype("str")
    return label
