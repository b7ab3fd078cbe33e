"""C5, asserted: the damped Gauss-Newton step equals its explicit-matrix formula, tends to a gradient
step of size 1/λ as λ grows, and is what a proximal round of iterative linearisation converges to."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from itlin import data, gauss_newton, models, tables, train

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
    config = train.RunConfig.from_dict(run_config(
        K=steps, steps=steps, batch_size=N_EXAMPLES, loss="mse", proximal_damping=float(damping), scan_steps=steps,
        eval_every=steps, checkpoint_every=steps,
        optimizer={"name": "sgd", "learning_rate": float(rate), "momentum": 0.0, "schedule": "constant"}))
    trainer = train.Trainer(config, model)
    state = trainer.run_block(trainer.init_state(), train.TrainData(x, y), trainer.schedule())
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
    trainer = train.Trainer(train.RunConfig.from_dict(run_config(K=10)), model)
    ends = [trainer.run_block(trainer.init_state(), batches, trainer.schedule()._replace(proximal_damping=jnp.float32(d)))
            for d in (0.0, 1.0)]
    distance = [float(optax.tree.norm(jax.tree.map(jnp.subtract, end.params, end.params_lin))) for end in ends]
    assert distance[1] < distance[0]  # the proximal term pulls θ towards θ_lin


def test_effective_damping_and_outer_steps():
    assert gauss_newton.effective_damping(1e-3, 100) == pytest.approx(10.0)
    assert gauss_newton.effective_damping(1e-3, math.inf) == 0.0
    assert gauss_newton.outer_steps(0.3, 30) == 9  # 0.3 · 30 = 9.000000000000002 in floats
    assert gauss_newton.outer_steps(1e-6, 30) == 1


def test_run_records_accuracy_kernel_change_and_cg_history(tiny_data):
    result, history = gauss_newton.run(
        data_path=tiny_data, model={"name": "mlp", "label": "mlp", "depth": 1, "width": 16}, seed=0, damping=0.1,
        outer_steps=3, loss="cross_entropy", batch_size=64, step_size=1.0, tolerance=1e-3, max_iterations=10,
        probe_size=16, probe_seed=0)
    row = result.iloc[0]
    assert row["status"] == "ok" and row["outer_steps"] == 3 and row["method"] == "gauss_newton"
    assert 0 <= row["test_accuracy"] <= 1 and 0 < row["ntk_distance"] < 1
    assert list(history["step"]) == [0, 1, 2] and (history["cg_iterations"] <= 10).all()
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]


def test_iterative_linearisation_rows_sit_at_one_over_eta_K():
    metrics = tables.example_metrics(models=("cnn",), Ks=(1, 10, math.inf), seeds=(0,))
    ntk_table = tables.example_ntk(depths={"cnn": 2}, Ks=(1, 10, math.inf), seeds=(0,))
    rows = gauss_newton.iterative_linearisation_rows(metrics, ntk_table, 1e-3, ["base"])
    assert set(rows["method"]) == {"iterative_linearisation"}
    by_K = rows.groupby("K")["damping"].first()
    assert by_K[1.0] == pytest.approx(1000) and by_K[10.0] == pytest.approx(100) and by_K[math.inf] == 0
    assert rows["ntk_distance"].notna().all()
    final = tables.final_metrics(metrics[metrics["switch_step"].isna()])
    merged = rows.merge(final, on=["model", "K", "seed"])
    np.testing.assert_allclose(merged["test_accuracy"], merged["accuracy"])
