"""Damped generalised Gauss-Newton: the method iterative linearisation with large K approximates (C5).

Each outer step linearises the network at θ and solves, matrix-free, by conjugate gradients

    (G + λI) δ = −g,   G = (1/n) Σ_i J_iᵀ H_i J_i,   g = ∇_θ (1/n) Σ_i ℓ(f(x_i; θ), y_i),

with J_i = ∂f(x_i)/∂θ and H_i the Hessian of the loss with respect to the outputs (the identity
for ½‖f − y‖², diag(p) − ppᵀ for softmax cross-entropy); then θ ← θ + α δ. G·v costs one jvp
(J v) and one transposed jvp (Jᵀ u) of a single linearisation, so J is never materialised.

The link to iterative linearisation: a round of K steps of size η on the linearised loss from
θ_s stops early, which regularises like (λ/2)‖θ − θ_s‖² with λ = 1/(ηK) (``effective_damping``);
the proximal rounds of ``train`` (``proximal_damping``) add that term explicitly, and run to
convergence each round is exactly the step above. A K-run of T steps makes T/K rounds: at equal
"time" τ = ηT, the Gauss-Newton run of damping λ takes ⌈τλ⌉ outer steps (``outer_steps``).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree
from tqdm.auto import tqdm

from itlin import data as datasets
from itlin import models, ntk, tables
from itlin import train as training

log = logging.getLogger(__name__)


def _mse_output_hessian(logits: jax.Array, tangent: jax.Array) -> jax.Array:
    """H·v for ½‖f − y‖²: the identity."""
    return tangent


def _cross_entropy_output_hessian(logits: jax.Array, tangent: jax.Array) -> jax.Array:
    """H·v for softmax cross-entropy, per example: (diag(p) − ppᵀ) v with p = softmax(f)."""
    p = jax.nn.softmax(logits, axis=-1)
    return p * tangent - p * jnp.sum(p * tangent, axis=-1, keepdims=True)


OUTPUT_HESSIANS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "mse": _mse_output_hessian,
    "cross_entropy": _cross_entropy_output_hessian,
}
"""Loss name (as in ``train.LOSSES``) -> H·v, the loss's Hessian in the outputs times a tangent."""


class Solve(NamedTuple):
    """A conjugate-gradient solution and how it was reached."""

    x: jax.Array
    iterations: jax.Array
    relative_residual: jax.Array  # ‖b − A x‖ / ‖b‖ (the recursive residual CG tracks)


def conjugate_gradient(matvec: Callable[[jax.Array], jax.Array], b: jax.Array, *, tolerance: float,
                       max_iterations: int) -> Solve:
    """Solve A x = b for symmetric positive definite A, from x = 0, until ‖r‖ ≤ tolerance·‖b‖.

    Written out (rather than ``jax.scipy.sparse.linalg.cg``) because every Gauss-Newton step reports
    the iterations it took and the residual it reached.
    """
    b_norm = jnp.linalg.norm(b)
    threshold = (tolerance * b_norm) ** 2

    def unfinished(state):
        _, r, _, rr, k = state
        return (rr > threshold) & (k < max_iterations)

    def iterate(state):
        x, r, p, rr, k = state
        Ap = matvec(p)
        alpha = rr / jnp.vdot(p, Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_next = jnp.vdot(r, r)
        return x, r, r + (rr_next / rr) * p, rr_next, k + 1

    x, _, _, rr, k = jax.lax.while_loop(unfinished, iterate, (jnp.zeros_like(b), b, b, jnp.vdot(b, b), 0))
    return Solve(x, k, jnp.sqrt(rr) / jnp.maximum(b_norm, jnp.finfo(b.dtype).tiny))


class StepReport(NamedTuple):
    """What one Gauss-Newton step reports: the batch loss before it, the gradient norm and its CG solve."""

    loss: jax.Array
    gradient_norm: jax.Array
    cg_iterations: jax.Array
    cg_residual: jax.Array


def make_step(apply: Callable, loss: str, *, tolerance: float, max_iterations: int) -> Callable:
    """``step(params, x, y, damping, step_size) -> (params, StepReport)``, jitted; λ and α are traced,
    so one compilation serves the whole damping grid."""
    loss_fn, output_hessian = training.LOSSES[loss], OUTPUT_HESSIANS[loss]

    @jax.jit
    def step(params, x, y, damping, step_size):
        flat, unravel = ravel_pytree(params)
        logits, jvp = jax.linearize(lambda theta: apply(unravel(theta), x), flat)
        vjp = jax.linear_transpose(jvp, flat)
        batch_loss, output_gradient = jax.value_and_grad(lambda z: loss_fn(z, y).mean())(logits)
        (gradient,) = vjp(output_gradient)
        n = x.shape[0]

        def damped_ggn(v):
            (ggn_v,) = vjp(output_hessian(logits, jvp(v)) / n)
            return ggn_v + damping * v

        solve = conjugate_gradient(damped_ggn, -gradient, tolerance=tolerance, max_iterations=max_iterations)
        report = StepReport(batch_loss, jnp.linalg.norm(gradient), solve.iterations, solve.relative_residual)
        return unravel(flat + step_size * solve.x), report

    return step


def effective_damping(learning_rate: float, K: float) -> float:
    """λ = 1/(ηK) of a K-run with step size η: the damping its early-stopped rounds act like (0 for K = ∞)."""
    return 0.0 if math.isinf(K) else 1.0 / (learning_rate * K)


def outer_steps(damping: float, time: float) -> int:
    """⌈τλ⌉ outer steps at damping λ: the T/K rounds of a K-run with ηK = 1/λ and ηT = τ (its time)."""
    return max(1, math.ceil(round(damping * time, 9)))


def run(*, data_path: Path, model: dict, seed: int, damping: float, outer_steps: int, loss: str,
        batch_size: int | None, step_size: float, tolerance: float, max_iterations: int, probe_size: int,
        probe_seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One Gauss-Newton run from the seed's initialisation: (result row, per-step history).

    The result holds the final train and test accuracy of the network, the NTK distance from
    initialisation on the probe set of the NTK stage (trace kernel) and the CG statistics; a run
    whose loss or parameters turn non-finite is marked ``diverged``, with no final values.
    ``batch_size`` None is full batch; otherwise step t uses ``train.sample_batch`` (a pure
    function of seed and t).
    """
    started = time.perf_counter()
    dataset = datasets.load(Path(data_path))
    network = models.from_spec(model, input_shape=dataset.input_shape, num_classes=dataset.num_classes, seed=seed)
    step = make_step(network.apply, loss, tolerance=tolerance, max_iterations=max_iterations)
    train_data = training.TrainData(jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train, jnp.int32))
    full_batch = batch_size is None or batch_size >= len(dataset.y_train)
    damping_, step_size_, seed_ = jnp.float32(damping), jnp.float32(step_size), jnp.int32(seed)

    batch = jax.jit(lambda t: training.sample_batch(train_data, t, seed_, batch_size, augment=False))
    params, reports, status = network.params, [], "ok"
    for t in tqdm(range(outer_steps), desc=f"Gauss-Newton λ={damping:g}", unit="step", disable=None):
        x, y = train_data if full_batch else batch(jnp.int32(t))
        params, report = step(params, x, y, damping_, step_size_)
        reports.append(report)
    history = pd.DataFrame({name: np.asarray(jnp.stack(values)) for name, values in zip(StepReport._fields, zip(*reports))})
    history.insert(0, "step", np.arange(outer_steps))
    history = history.assign(damping=damping, step_size=step_size, cg_tolerance=tolerance,
                             cg_max_iterations=max_iterations)
    finite = np.isfinite(history["loss"]) & all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(params))
    if not finite.all():
        status = "diverged"
        log.warning("Gauss-Newton λ=%g diverged: non-finite loss at outer step %d", damping,
                    int(np.argmin(np.asarray(finite))))

    train_accuracy = test_accuracy = ntk_distance = math.nan
    if status == "ok":
        predict = jax.jit(lambda p, xb: network.apply(p, xb).argmax(-1))  # compiled once for both splits
        train_accuracy = _accuracy(predict, params, dataset.x_train, dataset.y_train)
        test_accuracy = _accuracy(predict, params, dataset.x_test, dataset.y_test)
        probe = jnp.asarray(dataset.x_train[datasets.probe_indices(dataset.y_train, probe_size, seed=probe_seed)])
        ntk_distance = ntk.kernel_distance(ntk.empirical_ntk(network.apply, network.params, probe),
                                           ntk.empirical_ntk(network.apply, params, probe))
    result = pd.DataFrame([dict(
        method="gauss_newton", dataset=dataset.meta["dataset"], model=model.get("label", model["name"]), seed=seed,
        K=math.nan, damping=damping, outer_steps=outer_steps, train_accuracy=train_accuracy,
        test_accuracy=test_accuracy, ntk_distance=ntk_distance,
        cg_iterations_mean=float(history["cg_iterations"].mean()),
        cg_residual_max=float(history["cg_residual"].max()), status=status)])
    log.info("Gauss-Newton λ=%g, %d outer steps: test accuracy %.4f, NTK distance %.4f, CG iterations %.1f "
             "on average, %.1f s", damping, outer_steps, test_accuracy, ntk_distance,
             result["cg_iterations_mean"].iloc[0], time.perf_counter() - started)
    return tables.validate_gauss_newton(result, f"Gauss-Newton run λ={damping:g}"), history


def _accuracy(predict: Callable, params, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of ``predict(params, x) -> classes``, in chunks of ``train.EVAL_CHUNK`` examples."""
    chunks = range(0, len(y), training.EVAL_CHUNK)
    correct = sum(int((np.asarray(predict(params, jnp.asarray(x[i:i + training.EVAL_CHUNK]))) ==
                       y[i:i + training.EVAL_CHUNK]).sum()) for i in chunks)
    return correct / len(y)


def iterative_linearisation_rows(metrics: pd.DataFrame, ntk_table: pd.DataFrame, learning_rate: float,
                                 variants: list[str]) -> pd.DataFrame:
    """The sweep's K-runs of ``variants`` as rows of the damping table, placed at λ = 1/(ηK).

    Their accuracies are f_lin's at the last evaluation; their NTK distance is that of θ_lin (the
    features the linear model used) at the last snapshot.
    """
    keys = [key for key in tables.RUN_KEYS if key != "switch_step"]
    runs = metrics[metrics["switch_step"].isna() & metrics["variant"].isin(variants)]
    test = tables.final_metrics(runs, split="test")[keys + ["status", "accuracy"]]
    train = tables.final_metrics(runs, split="train")[keys + ["accuracy"]]
    distances = ntk_table[(ntk_table["metric"] == "distance_from_init") & (ntk_table["point"] == "linearisation")
                          & ntk_table["switch_step"].isna()]
    distances = distances.sort_values("step").groupby(keys)["value"].last().rename("ntk_distance").reset_index()
    rows = (test.rename(columns={"accuracy": "test_accuracy"})
            .merge(train.rename(columns={"accuracy": "train_accuracy"}), on=keys)
            .merge(distances, on=keys, how="left"))
    rows.loc[rows["status"] != "ok", "ntk_distance"] = math.nan
    rows = rows.assign(method="iterative_linearisation", damping=[effective_damping(learning_rate, K) for K in rows["K"]],
                       outer_steps=pd.NA, cg_iterations_mean=math.nan, cg_residual_max=math.nan)
    return tables.validate_gauss_newton(rows[list(tables.GAUSS_NEWTON_COLUMNS)], "iterative-linearisation runs")
