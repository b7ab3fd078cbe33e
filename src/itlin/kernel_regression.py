"""NTK kernel regression: where linearised training (K = ∞) ends under MSE and full-batch GD (C6).

Gradient descent on ½‖f_lin(X; θ) − Y‖² with the features J(X; θ₀) frozen at initialisation moves
θ only within the row space of J, and converges to the interpolant of minimum norm, whose outputs
anywhere are the kernel-regression predictor with the empirical NTK at θ₀:

    f(x) = f₀(x) + Θ(x, X) (Θ(X, X) + εI)⁻¹ (Y − f₀(X)),

exactly so with the ``full`` kernel (one row per example and output class) and ε → 0. The
``trace`` kernel Σ_c Θ_cc treats the outputs as independent, an approximation. The linear system
is solved by Cholesky factorisation in float64, with the smallest jitter ε (relative to the mean
diagonal, raised tenfold until the factorisation succeeds) reported.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.linalg
from tqdm.auto import tqdm

from itlin import data as datasets
from itlin import models, ntk, tables
from itlin import train as training

log = logging.getLogger(__name__)

KERNELS = ("full", "trace")
MAX_JITTER_INCREASES = 8
AUTO_STEP_FRACTION = 0.9
"""``learning_rate: auto`` is this fraction of the stability limit 2n/λ_max of full-batch gradient
descent: near the limit, for the fewest steps to convergence, while the top direction still contracts."""


def flatten_full(kernel: np.ndarray) -> np.ndarray:
    """A full kernel Θ[i, j, c, c'] as the (n1·C, n2·C) matrix of rows (i, c) and columns (j, c')."""
    n1, n2, C, _ = kernel.shape
    return kernel.transpose(0, 2, 1, 3).reshape(n1 * C, n2 * C)


def fit(kernel_train: np.ndarray, residual: np.ndarray, *, kind: str, jitter: float) -> tuple[np.ndarray, float]:
    """Coefficients α = (Θ(X, X) + εI)⁻¹ (Y − f₀(X)) of ``residual`` (n, C), and the ε used.

    ``kernel_train`` is the full kernel (n, n, C, C); ``kind`` picks the full or the trace system;
    ``jitter`` is the first ε relative to the mean diagonal, raised tenfold while Cholesky fails.
    """
    if kind not in KERNELS:
        raise ValueError(f"kernel: must be one of {KERNELS}, got {kind!r}")
    n, C = residual.shape
    matrix = flatten_full(kernel_train) if kind == "full" else np.einsum("ijcc->ij", kernel_train)
    matrix = np.asarray(matrix, np.float64)
    target = residual.reshape(n * C) if kind == "full" else residual
    scale = float(np.mean(np.diag(matrix)))
    for attempt in range(MAX_JITTER_INCREASES + 1):
        epsilon = jitter * scale * 10**attempt
        try:
            factor = scipy.linalg.cho_factor(matrix + epsilon * np.eye(len(matrix)), lower=True)
        except np.linalg.LinAlgError:
            log.warning("Cholesky failed with jitter %.3g: raising it tenfold", epsilon)
            continue
        return scipy.linalg.cho_solve(factor, np.asarray(target, np.float64)).reshape(n, C), epsilon
    raise np.linalg.LinAlgError(f"kernel matrix not positive definite even with jitter {epsilon:.3g}")


def predict(kernel_test_train: np.ndarray, initial_outputs: np.ndarray, coefficients: np.ndarray, *,
            kind: str) -> np.ndarray:
    """f₀(x) + Θ(x, X) α for test points x: ``kernel_test_train`` full (m, n, C, C), returns (m, C)."""
    m, n, C, _ = kernel_test_train.shape
    if kind == "full":
        update = flatten_full(kernel_test_train) @ coefficients.reshape(n * C)
    else:
        update = np.einsum("ijcc->ij", kernel_test_train) @ coefficients
    return np.asarray(initial_outputs, np.float64) + update.reshape(m, C)


def largest_eigenvalue(kernel_train: np.ndarray) -> float:
    """λ_max of the full kernel matrix: gradient descent on the mean MSE is stable for η < 2n/λ_max."""
    return float(scipy.linalg.eigvalsh(flatten_full(kernel_train).astype(np.float64),
                                       subset_by_index=[len(kernel_train) * kernel_train.shape[2] - 1] * 2)[0])


def run(*, data_path: Path, model: dict, seed: int, train_size: int, kind: str, steps: int,
        learning_rate: float | str, jitter: float, scan_steps: int = 100) -> pd.DataFrame:
    """Train K = ∞ by full-batch gradient descent on MSE and compare it with kernel regression.

    The training set is a fixed class-balanced subset of ``train_size`` examples; the linear model is
    trained by ``train.Trainer`` itself (SGD without momentum, batch = the subset), ``steps`` steps of
    size ``learning_rate`` (``auto``: ``AUTO_STEP_FRACTION`` of the stability limit 2n/λ_max).
    Returns both predictors on every test example, in ``tables.KERNEL_REGRESSION_COLUMNS``.
    """
    started = time.perf_counter()
    dataset = datasets.load(Path(data_path))
    subset = datasets.probe_indices(dataset.y_train, train_size, seed=training.TRAIN_SUBSET_SEED)
    x_train, y_train = jnp.asarray(dataset.x_train[subset]), np.asarray(dataset.y_train[subset])
    x_test, y_test = jnp.asarray(dataset.x_test), np.asarray(dataset.y_test)
    network = models.from_spec(model, input_shape=dataset.input_shape, num_classes=dataset.num_classes, seed=seed)

    kernel_train = ntk.empirical_ntk(network.apply, network.params, x_train, kind="full")
    kernel_test = ntk.empirical_ntk(network.apply, network.params, x_test, x_train, kind="full")
    if learning_rate == "auto":
        learning_rate = AUTO_STEP_FRACTION * 2 * train_size / largest_eigenvalue(kernel_train)
    config = training.RunConfig.from_dict(dict(
        data=str(data_path), dataset=dataset.meta["dataset"], model=model, K="inf", switch_step=None, seed=seed,
        variant="kernel_regression", steps=steps, batch_size=train_size,
        optimizer={"name": "sgd", "learning_rate": float(learning_rate), "momentum": 0.0, "schedule": "constant"},
        loss="mse", augment=False, reset_optimizer=False, proximal_damping=0.0, eval_every=steps,
        eval_train_size=train_size, scan_steps=math.gcd(steps, scan_steps), num_snapshots=0,
        velocity_interval=math.gcd(steps, scan_steps), checkpoint_every=steps))
    trainer = training.Trainer(config, network)
    state, schedule = trainer.init_state(), trainer.schedule()
    train_data = training.TrainData(x_train, jnp.asarray(y_train, jnp.int32))
    with tqdm(total=steps, desc="K = ∞ gradient descent (MSE)", unit="step", disable=None) as bar:
        for _ in range(steps // config.scan_steps):
            state = trainer.run_block(state, train_data, schedule)
            bar.update(config.scan_steps)

    f_lin = jax.jit(trainer.f_lin)
    outputs_train = np.asarray(f_lin(state.params, state.params_lin, x_train), np.float64)
    linear = np.asarray(f_lin(state.params, state.params_lin, x_test), np.float64)
    onehot = np.eye(dataset.num_classes)[y_train]
    train_loss = float(0.5 * np.sum((outputs_train - onehot) ** 2, axis=1).mean())
    initial_train = np.asarray(network.apply(network.params, x_train), np.float64)
    coefficients, epsilon = fit(kernel_train, onehot - initial_train, kind=kind, jitter=jitter)
    closed_form = predict(kernel_test, np.asarray(network.apply(network.params, x_test)), coefficients, kind=kind)
    log.info("K = ∞ GD, %d steps of %.4g on %d examples: train loss %.3g; largest |f_lin − kernel regression| on "
             "test %.3g; jitter %.3g; %.1f s", steps, learning_rate, train_size, train_loss,
             np.abs(linear - closed_form).max(), epsilon, time.perf_counter() - started)

    m, C = linear.shape
    table = pd.DataFrame(dict(
        dataset=dataset.meta["dataset"], model=model.get("label", model["name"]), seed=seed, kind=kind,
        train_size=train_size, gd_steps=steps, learning_rate=float(learning_rate), jitter=epsilon,
        train_loss=train_loss, example=np.repeat(np.arange(m), C), label=np.repeat(y_test, C),
        output_class=np.tile(np.arange(C), m), linear=linear.reshape(-1), kernel_regression=closed_form.reshape(-1)))
    return tables.validate_kernel_regression(table.rename(columns={"kind": "kernel"}), "kernel-regression run")
