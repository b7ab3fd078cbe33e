"""C6, asserted: K = ∞ trained by full-batch gradient descent on MSE follows the closed form
f₀ + Θ(x, X) Θ⁻¹ (I − (I − ηΘ/n)^t)(Y − f₀) at every step, and its limit is NTK kernel regression."""

import math

import jax
import numpy as np
import pytest

from itlin import data, kernel_regression, models, ntk

TRAIN_SIZE = 16


def hand_made(rank: int, n: int = 5, C: int = 2):
    """A full kernel (n, n, C, C) of the given rank from random features, and a residual (n, C)."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n * C, rank))
    full = (features @ features.T).reshape(n, C, n, C).transpose(0, 2, 1, 3)
    return full, rng.normal(size=(n, C))


def test_coefficients_are_the_matrix_formula_at_every_step_and_kernel_regression_in_the_limit():
    full, residual = hand_made(rank=10)
    dynamics = kernel_regression.KernelDynamics.of(full, residual)
    matrix, n = kernel_regression.flatten_full(full), 5
    rate = 0.9 * dynamics.stable_rate()
    for step in (1, 7, 300):
        decay = np.linalg.matrix_power(np.eye(10) - rate * matrix / n, step)
        expected = np.linalg.solve(matrix, (np.eye(10) - decay) @ residual.reshape(-1))
        np.testing.assert_allclose(dynamics.coefficients(rate, step).reshape(-1), expected, rtol=1e-9, atol=1e-12)
        left = decay @ residual.reshape(-1)
        assert dynamics.train_loss(rate, step) == pytest.approx(0.5 * left @ left / n, rel=1e-9)
    limit = np.linalg.solve(matrix, residual.reshape(-1))
    np.testing.assert_allclose(dynamics.coefficients(rate, math.inf).reshape(-1), limit, rtol=1e-9)
    assert dynamics.train_loss(rate, math.inf) == pytest.approx(0, abs=1e-20)
    assert dynamics.condition_number == pytest.approx(np.linalg.cond(matrix), rel=1e-6)


def test_a_singular_kernel_stays_finite_at_every_step():
    """Directions the features cannot move are left alone: no inverse of a zero eigenvalue is taken."""
    full, residual = hand_made(rank=3)
    dynamics = kernel_regression.KernelDynamics.of(full, residual)
    assert math.isinf(dynamics.condition_number)
    matrix = kernel_regression.flatten_full(full)
    rate = 0.5 * dynamics.stable_rate()
    for step in (10, 10**6, math.inf):
        coefficients = dynamics.coefficients(rate, step).reshape(-1)
        assert np.isfinite(coefficients).all()
        update = matrix @ coefficients  # what the training outputs move by
        assert np.isfinite(update).all() and np.abs(update).max() < 10 * np.abs(residual).max()


@pytest.fixture(scope="module")
def compared(tiny_data):
    return kernel_regression.run(data_path=tiny_data, model={"name": "mlp", "label": "mlp", "depth": 1, "width": 32},
                                 seed=0, train_size=TRAIN_SIZE, steps=3000, learning_rate="auto",
                                 compare_steps=[1, 10, 100])


def test_gradient_descent_equals_the_closed_form_at_every_step(compared):
    steps = sorted(compared["step"].unique())
    assert steps == [1, 10, 100, 3000, math.inf]
    for step in steps[:-1]:
        at = compared[compared["step"] == step]
        assert np.abs(at["trained"] - at["closed_form"]).max() <= 1e-10, step  # float64 on both sides
        assert at["trained_train_loss"].iloc[0] == pytest.approx(at["closed_form_train_loss"].iloc[0], rel=1e-8)
    first = compared[compared["step"] == 1]
    assert np.abs(first["trained"] - compared[compared["step"] == 3000]["trained"].to_numpy()).max() > 1e-2  # it moved


def test_the_limit_is_kernel_regression_with_the_explicit_kernels(tiny_data, compared):
    """t → ∞ against f₀ + Θ(x, X) Θ(X, X)⁻¹ (Y − f₀(X)) written out with both full kernels, and the trained
    model at its last step against it once converged."""
    with jax.enable_x64(True):
        dataset = data.load(tiny_data)
        subset = data.training_subset(dataset.y_train, TRAIN_SIZE, class_balanced=True)
        network = models.create("mlp", input_shape=dataset.input_shape, num_classes=4, seed=0, depth=1, width=32)
        params = jax.tree.map(lambda p: p.astype(np.float64), network.params)
        x_train, x_test = dataset.x_train[subset].astype(np.float64), dataset.x_test.astype(np.float64)
        train_kernel = kernel_regression.flatten_full(ntk.empirical_ntk(network.apply, params, x_train, kind="full"))
        test_kernel = kernel_regression.flatten_full(ntk.empirical_ntk(network.apply, params, x_test, x_train, kind="full"))
        residual = np.eye(4)[dataset.y_train[subset]] - np.asarray(network.apply(params, x_train))
        expected = np.asarray(network.apply(params, x_test)) + (
            test_kernel @ np.linalg.solve(train_kernel, residual.reshape(-1))).reshape(-1, 4)
    limit = compared[np.isinf(compared["step"])].sort_values(["example", "output_class"])
    np.testing.assert_allclose(limit["closed_form"].to_numpy(), expected.reshape(-1), rtol=0,
                               atol=1e-6 * np.abs(expected).max())
    assert limit["trained"].isna().all() and limit["closed_form_train_loss"].iloc[0] < 1e-20
    last = compared[compared["step"] == 3000].sort_values(["example", "output_class"])
    assert last["trained_train_loss"].iloc[0] < 1e-8  # converged: the subset is interpolated
    assert np.abs(last["trained"].to_numpy() - expected.reshape(-1)).max() <= 1e-3
