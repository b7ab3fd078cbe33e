"""Small synthetic tables in the schemas of ``itlin.tables``, for tests and for previewing figures.

Each function returns a validated table (``tables.validate``) shaped like the pipeline's: learning curves
that end where asked, kernels that move and plateau, C5 and C6 results with set accuracies and gaps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from itlin import record, tables


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
    return tables.validate("metrics", table, source="example_metrics")


def example_predictions(metrics: pd.DataFrame, *, n_test: int = 400, num_classes: int = 10,
                        agreement: float = 0.9) -> pd.DataFrame:
    """Per-example test predictions (``tables.PREDICTIONS_COLUMNS``) consistent with a metrics table, for tests.

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
    for evaluator in record.EVALUATORS:
        finals = tables.final_metrics(metrics, evaluator=evaluator)
        for run in finals[finals["status"] == "ok"].itertuples(index=False):
            rows.append(pd.DataFrame(dict(
                dataset=run.dataset, model=run.model, K=run.K, switch_step=run.switch_step, seed=run.seed,
                variant=run.variant, step=run.step, evaluator=evaluator, example=np.arange(n_test), label=labels,
                prediction=_example_prediction(rng, difficulty, labels, run.accuracy, agreement, num_classes))))
    return tables.validate("predictions", pd.concat(rows, ignore_index=True), source="example_predictions")


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
    """A small synthetic NTK table in the ``tables.NTK_COLUMNS`` schema, for tests and for previewing figures.

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
                                 for metric in tables.SPECIALISATION_METRICS
                                 for c in range(num_classes) for t in range(num_classes)]
                    measured += [("target_energy", min(1.0, k / num_classes * (0.5 + alignment)), None, None, k)
                                 for k in range(1, 2 * num_classes + 1)]
                    rows += [dict(dataset=dataset, model=label, architecture=model.split("_")[0], depth=depth,
                                  activation=activation, K=K, switch_step=None, seed=seed, variant=variant,
                                  probe_size=10 * num_classes, status="ok" if diverged_step is None else "diverged",
                                  diverged_step=diverged_step, step=int(step), point=point, metric=metric,
                                  output_class=c, target_class=t, top_k=top_k[0] if top_k else None,
                                  value=float(value))
                             for metric, value, c, t, *top_k in measured]
    return tables.validate("ntk", pd.DataFrame(rows), source="example_ntk")


def example_width_tables(*, exponents: Mapping[str, float] | None = None, widths: Sequence[int] = (64, 128, 256, 512),
                         seeds: Sequence[int] = (0, 1, 2), noise: float = 0.02,
                         gap: Callable[[str, int], float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The width sweep's tables (``metrics_width``, ``ntk_width``) of model mlp1 in each regime of ``exponents``
    (regime -> the exponent in width of the K = 1 kernel's relative change, 0.5·(width/64)^exponent at the end),
    K = 1, 10 and ∞; ``gap(regime, width)``: K = 1 minus K = ∞ final test accuracy (a fraction; K = 10 at K = 1's)."""
    exponents = dict(exponents or {"ntk": -0.5, "standard": -0.1})
    gap = gap or (lambda regime, width: 0.05)
    metrics, ntk = [], []
    for regime, exponent in exponents.items():
        labels = {record.width_label("mlp1", width): width for width in widths}
        ntk.append(example_ntk(depths={label: 1 for label in labels}, Ks=(1,), seeds=seeds, noise=noise,
                               variant=f"width_{regime}",
                               final_change=lambda model, K, exponent=exponent: 0.5 * (labels[model] / 64) ** exponent))
        metrics.append(example_metrics(
            models=list(labels), Ks=(1, 10, math.inf), seeds=seeds, switch_steps=(), variant=f"width_{regime}",
            final_accuracy=lambda model, K, switch, regime=regime: 0.8 - gap(regime, labels[model]) * math.isinf(K),
            noise=0.0))
    return (tables.validate("metrics", pd.concat(metrics, ignore_index=True), source="example_width_tables"),
            tables.validate("ntk", pd.concat(ntk, ignore_index=True), source="example_width_tables"))


def two_phase_loss(step: np.ndarray) -> np.ndarray:
    """A training loss that falls faster than a power law early (exponentially, to step ~100) and then as
    the power law step^(−1/2): the companion's two phases, the default of ``example_companion_metrics``."""
    return 2.0 * np.exp(-step / 30) + 0.5 * (1 + step) ** -0.5


def example_companion_metrics(*, models: Sequence[str] = ("mlp1", "mlp2", "mlp1_linear", "mlp2_linear"),
                              seeds: Sequence[int] = (0, 1, 2), steps: int = 4000, eval_every: int = 40,
                              loss: Callable[[np.ndarray], np.ndarray] = two_phase_loss, noise: float = 0.01,
                              dataset: str = "synthetic") -> pd.DataFrame:
    """A metrics table of the companion's runs (variant ``companion``, K = 1): the training loss ``loss(step)``
    of every model and seed, times a per-run factor 1 ± ``noise``; accuracies are placeholders."""
    rng = np.random.default_rng(0)
    eval_steps = np.arange(0, steps + 1, eval_every)
    rows = []
    for model in models:
        for seed in seeds:
            values = loss(eval_steps) * (1 + rng.normal(0, noise))
            rows += [dict(dataset=dataset, model=model, K=1.0, switch_step=None, seed=seed, variant="companion",
                          step=int(step), feature_updates=int(step), split=split, evaluator=evaluator,
                          loss=float(value), accuracy=0.5, status="ok", wall_time_s=0.01 * step)
                     for step, value in zip(eval_steps, values) for split in ("train", "test")
                     for evaluator in ("linear", "network")]
    return tables.validate("metrics", pd.DataFrame(rows), source="example_companion_metrics")


def rising_kernel_change(model: str, loss: str, method: str, damping: float) -> float:
    """A C5 kernel change that rises with log λ: the default of ``example_gauss_newton``."""
    return 0.2 + 0.05 * math.log10(damping)


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
    network_change: Callable[[str, str, str, float], float] | None = None,
    diverged: Iterable[tuple[str, str, str, int, int]] = (),
) -> pd.DataFrame:
    """A small synthetic C5 table (``tables.GAUSS_NEWTON_COLUMNS``), for tests and previews.

    Every (model, loss, method, K, seed) run has the test accuracy ``accuracy(model, loss, method, λ)`` and
    the relative kernel change ``change(model, loss, method, λ)`` at λ = 1/(ηK) for its linear model (by
    default both rise with log λ, Gauss-Newton 0.3 pt less accurate); the network evaluator is 1 pt less accurate
    and its kernel (at θ) changed ``network_change(model, loss, method, λ)`` (by default 0.05 more than the linear
    model's). Runs listed in ``diverged`` as (model, loss, method, K, seed) have NaN results.
    """
    accuracy = accuracy or (lambda model, loss, method, damping: 0.93 + 0.005 * math.log10(damping)
                            - 0.003 * (method == "gauss_newton"))
    change = change or rising_kernel_change
    network_change = network_change or (lambda model, loss, method, damping:
                                        change(model, loss, method, damping) + 0.05)
    diverged = set(diverged)
    rows = []
    for model in models:
        for loss in losses:
            for method in tables.GAUSS_NEWTON_METHODS:
                for K in Ks:
                    damping = 1 / (learning_rate * K)
                    for seed in seeds:
                        failed = (model, loss, method, K, seed) in diverged
                        for evaluator, shift, kernel_change in (("linear", 0.0, change),
                                                                ("network", 1.0, network_change)):
                            value = (lambda x: math.nan if failed else x)  # noqa: E731
                            rows.append(dict(
                                method=method, dataset="synthetic", model=model, loss=loss, seed=seed, K=float(K),
                                damping=damping, rounds=steps // K, learning_rate=learning_rate, steps=steps,
                                evaluator=evaluator, train_loss=value(0.1), test_loss=value(0.2),
                                test_accuracy=value(accuracy(model, loss, method, damping) - 0.01 * shift),
                                relative_change=value(kernel_change(model, loss, method, damping)),
                                centred_distance=value(0.01), distance_from_init=value(0.002),
                                newton_steps_mean=1.0 if method == "gauss_newton" else math.nan,
                                cg_iterations_mean=10.0 if method == "gauss_newton" else math.nan,
                                cg_residual_max=1e-4 if method == "gauss_newton" else math.nan,
                                gradient_ratio_max=1e-4 if method == "gauss_newton" else math.nan,
                                status="diverged" if failed else "ok"))
    return tables.validate("gauss_newton", pd.DataFrame(rows), "example C5 table")


def example_gauss_newton_predictions(table: pd.DataFrame, *, n_test: int = 400, num_classes: int = 10,
                                     agreement: float = 0.9) -> pd.DataFrame:
    """Per-example test predictions (``tables.GAUSS_NEWTON_PREDICTIONS_COLUMNS``) consistent with a C5 table: every
    completed run and evaluator gets exactly round(test accuracy · ``n_test``) right (as ``example_predictions``)."""
    rng = np.random.default_rng(0)
    difficulty, labels = rng.random(n_test), np.arange(n_test) % num_classes
    rows = [pd.DataFrame(dict(
        method=run.method, dataset=run.dataset, model=run.model, loss=run.loss, seed=run.seed, K=run.K,
        evaluator=run.evaluator, example=np.arange(n_test), label=labels,
        prediction=_example_prediction(rng, difficulty, labels, run.test_accuracy, agreement, num_classes)))
        for run in table[table["status"] == "ok"].itertuples(index=False)]
    return tables.validate("gauss_newton_predictions", pd.concat(rows, ignore_index=True), "example C5 predictions")


def example_kernel_regression(*, models: Sequence[str] = ("mlp",), seeds: Sequence[int] = (0, 1),
                              steps: Sequence[int] = (10, 100, 1000), n_test: int = 30, num_classes: int = 3,
                              difference: float = 1e-4, convergence_gap: float = 1e-5) -> pd.DataFrame:
    """A small synthetic C6 table (``tables.KERNEL_REGRESSION_COLUMNS``): at each step the trained outputs are the
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
    return tables.validate("kernel_regression", pd.concat(rows, ignore_index=True), "example kernel-regression table")
