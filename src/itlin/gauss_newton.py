"""C5: iterative linearisation by gradient descent against damped Gauss-Newton at the same time ηT.

Iterative linearisation with plain gradient descent (step η, period K, T steps) makes T/K rounds;
a round takes K steps on the loss of f_lin, the model linearised at the point θ_s where the round
began. On a quadratic loss, stopping after K steps of size η acts like the ridge penalty
(λ/2)‖θ − θ_s‖² with λ = 1/(ηK): along an eigendirection of the curvature (eigenvalue σ) the K steps
apply the filter 1 − (1 − ησ)^K ≈ 1 − e^{−ηKσ} to the exact solution, the penalty σ/(σ + λ); both are
≈ ηKσ for σ ≪ λ and ≈ 1 for σ ≫ λ. So the damped method of the same time ηT makes T/K outer steps of
damping λ = 1/(ηK) (``effective_damping``, ``rounds``), each the minimiser of a *proximal round*

    θ_{s+1} = argmin_θ  (1/n) Σ_i ℓ(f_lin(x_i; θ), y_i) + (λ/2)‖θ − θ_s‖²,   f_lin linearised at θ_s.

On MSE the objective is quadratic and its minimiser is the damped Gauss-Newton step
θ_s − (G + λI)⁻¹ g, G = JᵀJ/n (``make_step``). On cross-entropy it is not quadratic, and one step of
its quadratic model overshoots at small λ (the softmax curvature vanishes along confident
directions). A round is therefore solved to convergence (``make_round``) by Newton's method with a
backtracking (Armijo) line search: the linear model's Hessian is exactly JᵀH(z)J/n + λI (H: the
loss's Hessian in the outputs z), so each Newton step is a damped Gauss-Newton solve by conjugate
gradients, and the line search never lets the round's objective, hence its linearised loss, rise
above the loss it started from. On MSE a round stops after one Newton step, ``make_step``'s.

``run`` trains both methods for every K of a grid from one initialisation, in one process: iterative
linearisation with ``train.Trainer`` (the sweep's own code, K traced) and the damped rounds (λ traced),
and evaluates both at the same points: the network f at its final θ, and the linear model f_lin at the
final θ around its last θ_lin (``tables.GAUSS_NEWTON_COLUMNS``).
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

from itlin import data, models, ntk, record, tables, train

log = logging.getLogger(__name__)

ARMIJO = 1e-4
"""Sufficient decrease of the line search: accept a step length α once the objective falls by at
least this fraction of what its slope promises, α·∇Φ·p (the usual value, Nocedal & Wright §3.1)."""
MAX_HALVINGS = 30
"""Step halvings before a line search gives up: the round then stops where it is (a stalled round)."""


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


class _Linearisation(NamedTuple):
    """The network linearised at θ_s on one batch: flat θ_s, the outputs there and J·v, Jᵀ·u."""

    flat: jax.Array
    unravel: Callable
    outputs: jax.Array
    jvp: Callable[[jax.Array], jax.Array]
    vjp: Callable[[jax.Array], jax.Array]


def _linearise(apply: Callable, params, x: jax.Array) -> _Linearisation:
    flat, unravel = ravel_pytree(params)
    outputs, jvp = jax.linearize(lambda theta: apply(unravel(theta), x), flat)
    transpose = jax.linear_transpose(jvp, flat)
    return _Linearisation(flat, unravel, outputs, jvp, lambda u: transpose(u)[0])


def _damped_solve(model: _Linearisation, output_hessian: Callable, outputs: jax.Array, gradient: jax.Array,
                  damping: jax.Array, *, tolerance: float, max_iterations: int) -> Solve:
    """p = −(JᵀH(z)J/n + λI)⁻¹ ∇ by conjugate gradients, H at the linear model's outputs z: the damped
    Gauss-Newton direction (the Newton direction of a proximal round)."""
    n = outputs.shape[0]

    def damped_ggn(v):
        return model.vjp(output_hessian(outputs, model.jvp(v)) / n) + damping * v

    return conjugate_gradient(damped_ggn, -gradient, tolerance=tolerance, max_iterations=max_iterations)


class StepReport(NamedTuple):
    """What one Gauss-Newton step reports: the batch loss before it, the gradient norm and its CG solve."""

    loss: jax.Array
    gradient_norm: jax.Array
    cg_iterations: jax.Array
    cg_residual: jax.Array


def make_step(apply: Callable, loss: str, *, tolerance: float, max_iterations: int) -> Callable:
    """``step(params, x, y, damping, step_size) -> (params, StepReport)``, jitted: one damped Gauss-Newton
    step θ + α·δ, δ = −(G + λI)⁻¹ g with G = JᵀHJ/n and g the gradient of the batch's mean loss; λ and α
    are traced, so one compilation serves a whole damping grid. On MSE, δ minimises the proximal round
    exactly (``make_round`` then stops after this one step)."""
    loss_fn, output_hessian = train.LOSSES[loss], OUTPUT_HESSIANS[loss]

    @jax.jit
    def step(params, x, y, damping, step_size):
        model = _linearise(apply, params, x)
        batch_loss, output_gradient = jax.value_and_grad(lambda z: loss_fn(z, y).mean())(model.outputs)
        gradient = model.vjp(output_gradient)
        solve = _damped_solve(model, output_hessian, model.outputs, gradient, damping, tolerance=tolerance,
                              max_iterations=max_iterations)
        report = StepReport(batch_loss, jnp.linalg.norm(gradient), solve.iterations, solve.relative_residual)
        return model.unravel(model.flat + step_size * solve.x), report

    return step


class RoundReport(NamedTuple):
    """What one proximal round reports.

    ``loss``: the batch's mean loss at θ_s, where the round starts. ``linearised_loss``: that of the linear
    model at the round's end; ``objective``: it plus (λ/2)‖θ − θ_s‖², never above ``loss``.
    ``newton_steps``, ``cg_iterations`` (summed over them), ``cg_residual`` (the largest relative residual
    of their solves), ``gradient_ratio`` (‖∇Φ‖ at the end over ‖∇Φ‖ at θ_s: how far from the exact
    minimiser the round stopped) and ``stalled`` (a line search found no decrease).
    """

    loss: jax.Array
    linearised_loss: jax.Array
    objective: jax.Array
    newton_steps: jax.Array
    cg_iterations: jax.Array
    cg_residual: jax.Array
    gradient_ratio: jax.Array
    stalled: jax.Array


def make_round(apply: Callable, loss: str, *, cg_tolerance: float, cg_max_iterations: int, newton_tolerance: float,
               newton_max_steps: int) -> Callable:
    """``round(params, x, y, damping) -> (params, RoundReport)``, jitted (λ traced): one proximal round
    from θ_s = ``params``, the minimiser of Φ(θ) = mean loss of f_lin(x; θ) + (λ/2)‖θ − θ_s‖².

    Newton's method with a backtracking line search, from θ_s, until ‖∇Φ‖ ≤ ``newton_tolerance``·‖∇Φ(θ_s)‖
    or ``newton_max_steps`` steps; each Newton direction solves the damped Gauss-Newton system at the
    linear model's current outputs by conjugate gradients (to ``cg_tolerance``). Φ is λ-strongly convex
    and the line search only accepts decreases, so the round converges and Φ never rises.
    """
    loss_fn, output_hessian = train.LOSSES[loss], OUTPUT_HESSIANS[loss]

    @jax.jit
    def round_(params, x, y, damping):
        model = _linearise(apply, params, x)
        mean_loss = lambda z: loss_fn(z, y).mean()  # noqa: E731

        def objective(delta, z):
            return mean_loss(z) + 0.5 * damping * jnp.vdot(delta, delta)

        def gradient(delta, z):
            return model.vjp(jax.grad(mean_loss)(z)) + damping * delta

        start = gradient(jnp.zeros_like(model.flat), model.outputs)
        target = newton_tolerance * jnp.linalg.norm(start)

        def unfinished(state):
            _, _, grad, k, _, _, stalled = state
            return (jnp.linalg.norm(grad) > target) & (k < newton_max_steps) & ~stalled

        def newton_step(state):
            delta, z, grad, k, cg_iterations, cg_residual, _ = state
            solve = _damped_solve(model, output_hessian, z, grad, damping, tolerance=cg_tolerance,
                                  max_iterations=cg_max_iterations)
            p, Jp = solve.x, model.jvp(solve.x)
            before, slope = objective(delta, z), jnp.vdot(grad, p)
            too_long = lambda a: objective(delta + a * p, z + a * Jp) > before + ARMIJO * a * slope  # noqa: E731
            alpha, _ = jax.lax.while_loop(lambda s: too_long(s[0]) & (s[1] < MAX_HALVINGS),
                                          lambda s: (s[0] / 2, s[1] + 1), (jnp.ones((), delta.dtype), 0))
            stalled = too_long(alpha)
            alpha = jnp.where(stalled, 0.0, alpha)
            delta, z = delta + alpha * p, z + alpha * Jp
            return (delta, z, gradient(delta, z), k + 1, cg_iterations + solve.iterations,
                    jnp.maximum(cg_residual, solve.relative_residual), stalled)

        initial = (jnp.zeros_like(model.flat), model.outputs, start, 0, 0, jnp.zeros((), model.flat.dtype),
                   jnp.asarray(False))
        delta, z, grad, k, cg_iterations, cg_residual, stalled = jax.lax.while_loop(unfinished, newton_step, initial)
        report = RoundReport(mean_loss(model.outputs), mean_loss(z), objective(delta, z), k, cg_iterations,
                             cg_residual, jnp.linalg.norm(grad) / jnp.maximum(jnp.linalg.norm(start), 1e-30),
                             stalled)
        return model.unravel(model.flat + delta), report

    return round_


def effective_damping(learning_rate: float, K: float) -> float:
    """λ = 1/(ηK) of iterative linearisation with step η and period K: the damping its rounds act like."""
    return 0.0 if math.isinf(K) else 1.0 / (learning_rate * K)


def rounds(K: int, steps: int) -> int:
    """T/K: the rounds of a run of ``steps`` steps with period K, which must divide it (so that both
    methods run for exactly the same time ηT)."""
    if K < 1 or steps % K:
        raise ValueError(f"K: a period must divide the steps T = {steps} of the C5 runs, got {K}")
    return steps // K


SCAN_STEPS = 100
"""Steps per compiled block of the iterative-linearisation runs (a divisor of T: gcd(T, this))."""


class _Outcome(NamedTuple):
    """Where one run of either method ended: θ, its last θ_lin, ``ok`` or ``diverged``, solver statistics."""

    params: object
    params_lin: object
    status: str
    solver: dict


def run(*, data_path: Path, model: dict, seed: int, loss: str, learning_rate: float, steps: int, periods: list[int],
        train_size: int | None, batch_size: int | None, cg_tolerance: float, cg_max_iterations: int, newton_tolerance: float,
        newton_max_steps: int, probe_size: int, probe_seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Iterative linearisation and damped rounds at λ = 1/(ηK) for every period K, from the seed's initialisation.

    Both train on a fixed class-balanced subset of ``train_size`` training examples (None: the whole
    training split). Iterative linearisation: ``steps`` (T) steps of plain gradient descent
    (``train.Trainer``, SGD of step η without momentum) on ``loss`` with period K; ``batch_size`` None
    is full batch, otherwise each step takes the sweep's batch of that step (``Trainer.batch``).
    The damped method: T/K proximal rounds (``make_round``) of damping 1/(ηK), round r on the batch of
    step r. Both are evaluated at the network f(θ) and at the linear model f_lin(θ; θ_lin), and the
    trace NTK of the probe set (the NTK stage's) at θ and θ_lin is compared with that at θ₀. Returns
    (summary in ``tables.GAUSS_NEWTON_COLUMNS``, test predictions in ``tables.GAUSS_NEWTON_PREDICTIONS_COLUMNS``).
    """
    started = time.perf_counter()
    dataset = data.load(Path(data_path))
    network = models.from_spec(model, input_shape=dataset.input_shape, num_classes=dataset.num_classes, seed=seed)
    subset = data.training_subset(dataset.y_train, train_size, class_balanced=True)
    x_train, y_train = dataset.x_train[subset], dataset.y_train[subset]
    n_train = len(y_train)
    batch = n_train if batch_size is None else batch_size
    if batch > n_train:
        raise ValueError(f"batch_size: {batch} is more than the {n_train} training examples of the C5 runs")
    for K in periods:
        rounds(K, steps)  # every period divides T, before anything runs
    trainer = train.Trainer(train.gradient_descent_config(
        data=str(data_path), dataset=dataset.meta["dataset"], model=model, K=periods[0], seed=seed,
        variant=f"C5 {loss}", steps=steps, batch_size=batch, learning_rate=learning_rate, loss=loss,
        eval_train_size=n_train, scan_steps=math.gcd(steps, SCAN_STEPS)), network)
    round_ = make_round(network.apply, loss, cg_tolerance=cg_tolerance, cg_max_iterations=cg_max_iterations,
                        newton_tolerance=newton_tolerance, newton_max_steps=newton_max_steps)
    train_data = train.TrainData.of(x_train, y_train)
    batches = (lambda r: train_data) if batch == n_train else (lambda r: trainer.batch(train_data, r))
    eval_x = jnp.asarray(np.concatenate([x_train, dataset.x_test]))
    eval_y = jnp.asarray(np.concatenate([y_train, dataset.y_test]), jnp.int32)
    probe = jnp.asarray(dataset.x_train[data.probe_indices(dataset.y_train, probe_size, seed=probe_seed)])
    kernel0 = ntk.empirical_ntk(network.apply, network.params, probe)
    keys = dict(dataset=dataset.meta["dataset"], model=model.get("label", model["name"]), loss=loss, seed=seed,
                learning_rate=learning_rate, steps=steps)

    summaries, predictions = [], []
    for K in tqdm(periods, desc=f"C5 {loss}: K", disable=None):
        damping = effective_damping(learning_rate, K)
        outcomes = {"iterative_linearisation": _iterate(trainer, train_data, K),
                    "gauss_newton": _damp(round_, network.params, batches, damping, rounds(K, steps))}
        accuracy = {}
        for method, outcome in outcomes.items():
            run_keys = dict(keys, method=method, K=float(K), damping=damping, rounds=rounds(K, steps))
            summary, predicted = _evaluate(trainer, network.apply, outcome, eval_x, eval_y, n_train, probe, kernel0)
            summaries.append(summary.assign(**run_keys, **outcome.solver, status=outcome.status))
            predictions.append(predicted.assign(**{key: run_keys[key] for key in tables.GAUSS_NEWTON_RUN_KEYS}))
            accuracy[method] = summary.set_index("evaluator").loc[tables.TRAINED_EVALUATOR, "test_accuracy"]
        log.info("K=%d (λ=%.4g, %d rounds): test accuracy of f_lin, iterative linearisation %.4f, damped rounds %.4f",
                 K, damping, rounds(K, steps), accuracy["iterative_linearisation"], accuracy["gauss_newton"])
    log.info("C5 %s, %d periods: %.1f s", loss, len(periods), time.perf_counter() - started)
    summary = pd.concat(summaries, ignore_index=True)[list(tables.GAUSS_NEWTON_COLUMNS)]
    predicted = pd.concat(predictions, ignore_index=True)[list(tables.GAUSS_NEWTON_PREDICTIONS_COLUMNS)]
    return (tables.validate("gauss_newton", summary, f"C5 runs, {loss}"),
            tables.validate("gauss_newton_predictions", predicted, f"C5 predictions, {loss}"))


def _iterate(trainer: train.Trainer, train_data: train.TrainData, K: int) -> _Outcome:
    """Iterative linearisation with period K by the trainer's gradient descent (one program for every K)."""
    state = trainer.train_steps(trainer.init_state(), train_data, trainer.config.steps, K=K)
    finite = int(state.diverged_at) < 0 and _finite(state.params)
    return _Outcome(state.params, state.params_lin, "ok" if finite else "diverged",
                    dict(newton_steps_mean=math.nan, cg_iterations_mean=math.nan, cg_residual_max=math.nan,
                         gradient_ratio_max=math.nan))


def _damp(round_: Callable, params, batches: Callable, damping: float, count: int) -> _Outcome:
    """``count`` proximal rounds of damping λ from ``params``, round r on ``batches(r)``."""
    reports, params_lin, damping_ = [], params, jnp.asarray(damping, jax.tree.leaves(params)[0].dtype)
    for r in range(count):
        x, y = batches(r)
        params_lin = params
        params, report = round_(params, x, y, damping_)
        reports.append(report)
    reports = RoundReport(*(np.asarray(jnp.stack(values)) for values in zip(*reports)))
    finite = _finite(params) and bool(np.isfinite(reports.objective).all())
    if reports.stalled.any():
        log.warning("λ=%g: %d of %d rounds stopped where the line search found no decrease", damping,
                    int(reports.stalled.sum()), count)
    return _Outcome(params, params_lin, "ok" if finite else "diverged",
                    dict(newton_steps_mean=float(reports.newton_steps.mean()),
                         cg_iterations_mean=float(reports.cg_iterations.sum() / max(reports.newton_steps.sum(), 1)),
                         cg_residual_max=float(reports.cg_residual.max()),
                         gradient_ratio_max=float(reports.gradient_ratio.max())))


def _finite(params) -> bool:
    return all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(params))


def _evaluate(trainer: train.Trainer, apply: Callable, outcome: _Outcome, eval_x: jax.Array, eval_y: jax.Array,
              n_train: int, probe: jax.Array, kernel0: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per evaluator (``linear``: f_lin(θ; θ_lin) and the kernel at θ_lin; ``network``: f(θ) and the kernel at
    θ): train and test loss, test accuracy and the kernel's change from θ₀; and the test predictions."""
    rows, predicted = [], []
    if outcome.status != "ok":
        nan = dict(train_loss=math.nan, test_loss=math.nan, test_accuracy=math.nan, relative_change=math.nan,
                   centred_distance=math.nan, distance_from_init=math.nan)
        return pd.DataFrame([dict(evaluator=e, **nan) for e in record.EVALUATORS]), pd.DataFrame(
            columns=["evaluator", "example", "label", "prediction"])
    per_example = np.asarray(trainer.evaluate(outcome.params, outcome.params_lin, eval_x, eval_y))
    labels = np.asarray(eval_y[n_train:])
    for e, (evaluator, at) in enumerate(zip(record.EVALUATORS, (outcome.params_lin, outcome.params))):
        kernel = ntk.empirical_ntk(apply, at, probe)
        losses, correct, classes = per_example[e]
        rows.append(dict(evaluator=evaluator, train_loss=float(losses[:n_train].mean()),
                         test_loss=float(losses[n_train:].mean()), test_accuracy=float(correct[n_train:].mean()),
                         relative_change=ntk.relative_change(kernel0, kernel),
                         centred_distance=ntk.centred_distance(kernel0, kernel),
                         distance_from_init=ntk.kernel_distance(kernel0, kernel)))
        predicted.append(pd.DataFrame(dict(evaluator=evaluator, example=np.arange(len(labels)), label=labels,
                                           prediction=classes[n_train:].astype(np.int64))))
    return pd.DataFrame(rows), pd.concat(predicted, ignore_index=True)
