"""C5, asserted: K gradient-descent steps on the linearised MSE apply the spectral filter 1 − (1 − ησ)^K
(the premise of λ = 1/(ηK)); the damped Gauss-Newton step equals its explicit-matrix formula, tends to a
gradient step of size 1/λ as λ grows, and is what a proximal round converges to; the cross-entropy
round, solved by line-searched Newton steps, reaches the proximal minimiser and never raises the loss;
one C5 job runs both methods at every K and evaluates them at the same points."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree

from itlin import data, gauss_newton, models, record, tables, train

N_EXAMPLES = 24


@pytest.fixture(scope="module")
def problem(tiny_data):
    """A small MLP and a batch of the tiny data, with the flat Jacobian J (n·C, P) of its outputs."""
    dataset = data.load(tiny_data)
    model = models.create("mlp", input_shape=dataset.input_shape, num_classes=dataset.num_classes, seed=0,
                          depth=1, width=8)
    x, y = jnp.asarray(dataset.x_train[:N_EXAMPLES]), jnp.asarray(dataset.y_train[:N_EXAMPLES], jnp.int32)
    flat, unravel = ravel_pytree(model.params)
    jacobian = jax.jacobian(lambda theta: model.apply(unravel(theta), x).reshape(-1))(flat)
    return model, x, y, np.asarray(jacobian, np.float64), flat, unravel


def explicit_step(problem, loss: str, damping: float) -> np.ndarray:
    """δ = −(JᵀHJ/n + λI)⁻¹ Jᵀ∇_f ℓ / n with every matrix written out (H block-diagonal per example)."""
    model, x, y, jacobian, flat, unravel = problem
    logits = model.apply(model.params, x)
    n, C = logits.shape
    per_example = lambda z, label: train.LOSSES[loss](z[None], label[None])[0]  # noqa: E731
    output_gradient = np.asarray(jax.vmap(jax.grad(per_example))(logits, y), np.float64).reshape(-1)
    hessians = np.asarray(jax.vmap(jax.hessian(per_example))(logits, y), np.float64)
    H = np.zeros((n * C, n * C))
    for i in range(n):
        H[i * C:(i + 1) * C, i * C:(i + 1) * C] = hessians[i]
    G = jacobian.T @ H @ jacobian / n
    return -np.linalg.solve(G + damping * np.eye(len(G)), jacobian.T @ output_gradient / n)


def solver_step(problem, loss: str, damping: float, max_iterations: int = 2000,
                step_size: float = 1.0) -> tuple[np.ndarray, object]:
    """The step δ taken by ``gauss_newton.make_step`` (read off θ + αδ, divided by α) and its report."""
    model, x, y, _, flat, _ = problem
    step = gauss_newton.make_step(model.apply, loss, tolerance=1e-7, max_iterations=max_iterations)
    params, report = step(model.params, x, y, jnp.float32(damping), jnp.float32(step_size))
    return np.asarray(ravel_pytree(params)[0] - flat, np.float64) / step_size, report


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_one_step_equals_the_explicit_damped_gauss_newton_step(problem, loss):
    """On MSE (H = I) this is (JᵀJ + nλI)⁻¹Jᵀr for residuals r; on cross-entropy H = diag(p) − ppᵀ."""
    damping = 0.05 if loss == "mse" else 0.005
    delta, report = solver_step(problem, loss, damping)
    expected = explicit_step(problem, loss, damping)
    np.testing.assert_allclose(delta, expected, rtol=0, atol=2e-4 * np.abs(expected).max())
    assert 0 < int(report.cg_iterations) < 2000 and float(report.cg_residual) <= 1e-6


def test_mse_step_is_the_textbook_formula(problem):
    """The same step written as on paper, −(JᵀJ + nλI)⁻¹Jᵀ(f − Y), for the one-hot MSE of ``train``."""
    model, x, y, jacobian, _, _ = problem
    residual = np.asarray(model.apply(model.params, x) - jax.nn.one_hot(y, 4), np.float64).reshape(-1)
    damping, n = 0.05, N_EXAMPLES
    expected = -np.linalg.solve(jacobian.T @ jacobian + n * damping * np.eye(jacobian.shape[1]), jacobian.T @ residual)
    np.testing.assert_allclose(solver_step(problem, "mse", damping)[0], expected, atol=2e-4 * np.abs(expected).max())


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_large_damping_gives_a_gradient_step_of_size_one_over_lambda(problem, loss):
    model, x, y, *_ = problem
    damping = 1e5
    gradient = ravel_pytree(jax.grad(lambda p: train.LOSSES[loss](model.apply(p, x), y).mean())(model.params))[0]
    delta, _ = solver_step(problem, loss, damping, step_size=damping)  # α = λ: θ moves by about −g, well above rounding
    np.testing.assert_allclose(delta, -np.asarray(gradient) / damping, rtol=0, atol=1e-3 * np.abs(gradient).max() / damping)


def test_cg_stops_at_its_iteration_cap_and_reports_the_residual(problem):
    delta, report = solver_step(problem, "cross_entropy", 1e-4, max_iterations=3)
    assert int(report.cg_iterations) == 3 and 1e-7 < float(report.cg_residual) < 1


def test_proximal_round_converges_to_the_damped_gauss_newton_step(problem, run_config):
    """One round of iterative linearisation whose loss has the proximal term (λ/2)‖θ − θ_lin‖²,
    run to convergence by full-batch gradient descent, lands on θ_s + δ of the damped step."""
    model, x, y, jacobian, flat, _ = problem
    curvature = np.linalg.eigvalsh(jacobian.T @ jacobian / N_EXAMPLES)[-1]
    damping = 0.2 * curvature
    rate = 1.0 / (curvature + damping)
    steps = 400  # contraction at least 1 - damping * rate = 5/6 per step: far below float32 rounding
    config = record.RunConfig.from_dict(run_config(
        K=steps, steps=steps, batch_size=N_EXAMPLES, loss="mse", proximal_damping=float(damping), scan_steps=steps,
        eval_every=steps, checkpoint_every=steps, velocity_interval=steps,
        optimizer={"name": "sgd", "learning_rate": float(rate), "momentum": 0.0, "schedule": "constant"}))
    trainer = train.Trainer(config, model)
    state = trainer.train_steps(trainer.init_state(), train.TrainData(x, y), steps)
    assert int(state.feature_updates) == 0
    moved = np.asarray(ravel_pytree(state.params)[0] - flat, np.float64)
    expected = explicit_step(problem, "mse", damping)
    np.testing.assert_allclose(moved, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_proximal_damping_is_traced_and_changes_the_rounds(run_config, tiny_data):
    """λ, a traced value of the schedule, changes the trajectory: θ stays nearer θ_lin. λ = 0 (the
    paper's method) is covered by the K = 1 identity tests, whose configs have proximal_damping 0."""
    dataset = data.load(tiny_data)
    batches = train.TrainData(jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train))
    model = models.create("mlp", input_shape=dataset.input_shape, num_classes=dataset.num_classes, seed=0,
                          depth=1, width=32)
    trainer = train.Trainer(record.RunConfig.from_dict(run_config(K=10)), model)
    ends = [trainer.linearised_block(trainer.init_state(), batches,
                                     trainer.schedule()._replace(proximal_damping=jnp.float32(d)))
            for d in (0.0, 1.0)]
    distance = [float(optax.tree.norm(jax.tree.map(jnp.subtract, end.params, end.params_lin))) for end in ends]
    assert distance[1] < distance[0]  # the proximal term pulls θ towards θ_lin


def test_K_gradient_steps_on_the_linearised_mse_apply_the_spectral_filter(problem, run_config):
    """K steps of size η from θ_s on the quadratic (1/2n)‖J(θ − θ_s) + r‖² move θ by
    −V diag((1 − (1 − ησ)^K)/σ) Vᵀ g (A = JᵀJ/n = V diag(σ) Vᵀ, g = Jᵀr/n): the early-stopping filter that
    the ridge filter 1/(σ + λ) of λ = 1/(ηK) approximates. Run by the sweep's own trainer (one round)."""
    model, x, y, jacobian, flat, _ = problem
    curvature, basis = np.linalg.eigh(jacobian.T @ jacobian / N_EXAMPLES)
    rate, K = 0.5 / curvature[-1], 30
    config = record.RunConfig.from_dict(run_config(
        K=K, steps=K, batch_size=N_EXAMPLES, loss="mse", scan_steps=K, eval_every=K, checkpoint_every=K, velocity_interval=K,
        optimizer={"name": "sgd", "learning_rate": float(rate), "momentum": 0.0, "schedule": "constant"}))
    trainer = train.Trainer(config, model)
    state = trainer.train_steps(trainer.init_state(), train.TrainData(x, y), K)
    residual = np.asarray(model.apply(model.params, x) - jax.nn.one_hot(y, 4), np.float64).reshape(-1)
    gradient = jacobian.T @ residual / N_EXAMPLES
    positive = curvature > 1e-9 * curvature[-1]
    gain = np.where(positive, (1 - (1 - rate * curvature) ** K) / np.where(positive, curvature, 1), rate * K)
    expected = -basis @ (gain * (basis.T @ gradient))
    moved = np.asarray(ravel_pytree(state.params)[0] - flat, np.float64)
    np.testing.assert_allclose(moved, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    ridge = -basis @ ((basis.T @ gradient) / (curvature + 1 / (rate * K)))  # the damped step at λ = 1/(ηK)
    assert 0.5 < np.linalg.norm(ridge) / np.linalg.norm(expected) < 1.0  # close, and shorter: 1/(σ + λ) < the filter


def make_round(problem, loss, **options):
    model, *_ = problem
    settings = dict(cg_tolerance=1e-6, cg_max_iterations=2000, newton_tolerance=1e-5, newton_max_steps=50) | options
    return gauss_newton.make_round(model.apply, loss, **settings)


def test_mse_round_is_one_damped_gauss_newton_step(problem):
    model, x, y, *_ = problem
    params, report = make_round(problem, "mse")(model.params, x, y, jnp.float32(0.05))
    stepped, _ = gauss_newton.make_step(model.apply, "mse", tolerance=1e-6, max_iterations=2000)(
        model.params, x, y, jnp.float32(0.05), jnp.float32(1.0))
    assert int(report.newton_steps) == 1 and not bool(report.stalled)
    np.testing.assert_allclose(ravel_pytree(params)[0], ravel_pytree(stepped)[0], rtol=0, atol=1e-6)


def test_cross_entropy_round_reaches_the_proximal_minimiser_and_never_raises_the_loss(problem):
    """From a point one round into training (confident, partly wrong outputs), at a small λ, the quadratic
    model's single step (``make_step``) overshoots: the linearised loss ends far above where it started.
    The round's line-searched Newton steps end at the minimiser of the linearised loss + (λ/2)‖θ − θ_s‖²,
    as found by an independent float64 solver (scipy's L-BFGS on the explicit Jacobian), below the start."""
    model, x, y, *_ = problem
    damping = 1e-3
    solve = make_round(problem, "cross_entropy", newton_tolerance=1e-4)
    start_params, _ = solve(model.params, x, y, jnp.float32(damping))  # θ_s: one round into training
    start, unravel = ravel_pytree(start_params)
    start = np.asarray(start, np.float64)
    jacobian = np.asarray(jax.jacobian(lambda theta: model.apply(unravel(theta), x).reshape(-1))(jnp.asarray(start)),
                          np.float64)
    outputs = np.asarray(model.apply(start_params, x), np.float64).reshape(-1)
    labels = np.asarray(y)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean cross-entropy of the model linearised at θ_s + (λ/2)‖θ − θ_s‖², its gradient), float64."""
        logits = (outputs + jacobian @ (theta - start)).reshape(N_EXAMPLES, 4)
        shifted = logits - logits.max(1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        value = -log_p[np.arange(N_EXAMPLES), labels].mean() + damping / 2 * np.sum((theta - start) ** 2)
        output_gradient = (np.exp(log_p) - np.eye(4)[labels]) / N_EXAMPLES
        return value, jacobian.T @ output_gradient.reshape(-1) + damping * (theta - start)

    overshoot, report = gauss_newton.make_step(model.apply, "cross_entropy", tolerance=1e-6, max_iterations=2000)(
        start_params, x, y, jnp.float32(damping), jnp.float32(1.0))
    stepped = np.asarray(ravel_pytree(overshoot)[0], np.float64)
    assert objective(stepped)[0] - damping / 2 * np.sum((stepped - start) ** 2) > 2 * float(report.loss)

    params, report = solve(start_params, x, y, jnp.float32(damping))
    theta = np.asarray(ravel_pytree(params)[0], np.float64)
    assert float(report.objective) == pytest.approx(objective(theta)[0], rel=1e-4)
    assert float(report.linearised_loss) <= float(report.objective) < float(report.loss)  # never above the start
    assert 1 < int(report.newton_steps) < 50 and not bool(report.stalled)
    best = scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": 20000,
                                                                                            "gtol": 1e-12})
    assert objective(theta)[0] <= best.fun + 1e-5
    np.testing.assert_allclose(theta, best.x, rtol=0, atol=1e-2 * np.abs(best.x - start).max())


def test_effective_damping_and_rounds():
    assert gauss_newton.effective_damping(1e-3, 100) == pytest.approx(10.0)
    assert gauss_newton.effective_damping(1e-3, math.inf) == 0.0
    assert gauss_newton.rounds(30, 300) == 10 and gauss_newton.rounds(300, 300) == 1
    with pytest.raises(ValueError, match="K: a period must divide the steps T = 300"):
        gauss_newton.rounds(40, 300)


def test_run_compares_both_methods_at_every_K_at_the_same_points(tiny_data):
    summary, predictions = gauss_newton.run(
        data_path=tiny_data, model={"name": "mlp", "label": "mlp", "depth": 1, "width": 16}, seed=0,
        loss="cross_entropy", learning_rate=0.05, steps=20, periods=[2, 20], train_size=64, batch_size=None,
        cg_tolerance=1e-4, cg_max_iterations=50, newton_tolerance=1e-3, newton_max_steps=10, probe_size=16, probe_seed=0)
    assert len(summary) == 2 * 2 * 2 and (summary["status"] == "ok").all()  # methods x K x evaluators
    by_run = summary.set_index(["method", "K", "evaluator"])
    assert by_run.loc[("gauss_newton", 2.0, "linear"), "rounds"] == 10
    assert by_run.loc[("gauss_newton", 2.0, "linear"), "damping"] == pytest.approx(1 / (0.05 * 2))
    for method in tables.GAUSS_NEWTON_METHODS:
        assert by_run.loc[(method, 20.0, "linear"), "relative_change"] == 0  # one round: θ_lin = θ₀
        assert by_run.loc[(method, 20.0, "network"), "relative_change"] > 0
        assert by_run.loc[(method, 2.0, "linear"), "train_loss"] < np.log(4)  # both trained
    assert by_run.loc[("iterative_linearisation", 2.0, "linear"), "cg_iterations_mean"] != by_run.loc[
        ("iterative_linearisation", 2.0, "linear"), "cg_iterations_mean"]  # NaN: no solver
    correct = (predictions["prediction"] == predictions["label"]).groupby(
        [predictions["method"], predictions["K"], predictions["evaluator"]]).mean()
    np.testing.assert_allclose(correct.to_numpy(), by_run.loc[correct.index, "test_accuracy"].to_numpy())
    assert predictions["example"].nunique() == 128  # every test example of the tiny data
