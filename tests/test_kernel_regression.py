"""C6, asserted: K = ∞ trained by full-batch gradient descent on MSE to convergence predicts what NTK
kernel regression with the empirical kernel at initialisation predicts."""

import numpy as np
import pytest

from itlin import kernel_regression


@pytest.fixture(scope="module")
def compared(tiny_data):
    return kernel_regression.run(data_path=tiny_data, model={"name": "mlp", "label": "mlp", "depth": 1, "width": 64},
                                 seed=0, train_size=16, kind="full", steps=3000, learning_rate="auto", jitter=1e-9)


def test_linearised_gradient_descent_converges_to_kernel_regression(compared):
    assert compared["train_loss"].iloc[0] < 1e-6  # converged: the training subset is interpolated
    difference = np.abs(compared["linear"] - compared["kernel_regression"]).max()
    assert difference <= 1e-3, difference
    assert compared["jitter"].iloc[0] < 1e-6


def test_trace_kernel_is_a_different_predictor(tiny_data, compared):
    """The trace kernel treats the outputs as independent: not the limit of gradient descent."""
    trace = kernel_regression.run(data_path=tiny_data, model={"name": "mlp", "depth": 1, "width": 64}, seed=0,
                                  train_size=16, kind="trace", steps=10, learning_rate="auto", jitter=1e-9)
    assert np.abs(trace["kernel_regression"] - compared["kernel_regression"]).max() > 1e-2


def test_fit_solves_the_regularised_system_and_reports_the_jitter():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5 * 2, 3))  # rank 3 < 10: singular without jitter
    full = (features @ features.T).reshape(5, 2, 5, 2).transpose(0, 2, 1, 3)
    residual = rng.normal(size=(5, 2))
    coefficients, epsilon = kernel_regression.fit(full, residual, kind="full", jitter=1e-3)
    matrix = kernel_regression.flatten_full(full)
    np.testing.assert_allclose((matrix + epsilon * np.eye(10)) @ coefficients.reshape(-1), residual.reshape(-1),
                               atol=1e-8)
    assert epsilon == pytest.approx(1e-3 * np.mean(np.diag(matrix)))
    with pytest.raises(ValueError, match="kernel"):
        kernel_regression.fit(full, residual, kind="diagonal", jitter=1e-3)
