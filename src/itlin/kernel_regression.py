"""C6: linearised training (K = ∞) by full-batch gradient descent on MSE against its closed form, at every step.

Gradient descent with step η on L(θ) = (1/2n) Σ_i ‖f_lin(x_i; θ) − y_i‖², the model linearised at θ₀,
is linear dynamics in the outputs. With Θ = Θ(X, X) the full empirical NTK at θ₀ (a row and a column
per training example and output class: n·C of each) and r = Y − f₀(X), the outputs after t steps are

    f_t(x) = f₀(x) + Θ(x, X) Θ⁻¹ (I − (I − ηΘ/n)^t) r          (Lee et al. 2019),

and t → ∞ gives kernel regression, f₀(x) + Θ(x, X) Θ⁻¹ r. ``KernelDynamics`` evaluates both from the
eigendecomposition Θ = V diag(s) Vᵀ in float64: the filter (1 − (1 − ηs/n)^t)/s is at most ηt/n, so no
ill-conditioned inverse enters at a finite t; the limit inverts the eigenvalues above the rounding
floor. ``run`` trains the linear model with ``train.Trainer`` (SGD without momentum, the whole subset as
the batch), also in float64, and records its outputs at the requested steps beside the closed form
there: a run that has not converged is still compared with what gradient descent must give at its
step, so slow convergence cannot pass for a failure of the claim.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from itlin import data, models, ntk, tables, train

log = logging.getLogger(__name__)

AUTO_STEP_FRACTION = 0.9
"""``learning_rate: auto`` is this fraction of the stability limit 2n/λ_max of full-batch gradient
descent: near the limit, for the fastest convergence, while the top direction still contracts."""

KERNEL_CHUNK = 16
"""Examples per Jacobian chunk of the float64 full kernel: XLA plans about 0.7 GB per example of a chunk
of CIFAR images for the paper's CNN (``python -m bench memory``), far above ``itlin.ntk``'s estimate,
so the automatic chunk (all 128 training examples) would not fit a GPU."""


def flatten_full(kernel: np.ndarray) -> np.ndarray:
    """A full kernel Θ[i, j, c, c'] as the (n1·C, n2·C) matrix of rows (i, c) and columns (j, c')."""
    n1, n2, C, _ = kernel.shape
    return kernel.transpose(0, 2, 1, 3).reshape(n1 * C, n2 * C)


class KernelDynamics(NamedTuple):
    """Gradient descent on the MSE of the linear model, solved: the spectrum of Θ(X, X) and the residual
    in its eigenbasis. Build with ``KernelDynamics.of``."""

    eigenvalues: np.ndarray  # s, ascending (n·C,)
    eigenvectors: np.ndarray  # V (n·C, n·C), rows and columns in (example, class) order
    residual: np.ndarray  # Vᵀ r, r = Y − f₀(X)
    n: int
    classes: int

    @classmethod
    def of(cls, kernel_train: np.ndarray, residual: np.ndarray) -> "KernelDynamics":
        """From the full kernel Θ(X, X) (n, n, C, C) and r = Y − f₀(X) (n, C)."""
        matrix = np.asarray(flatten_full(kernel_train), np.float64)
        eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
        n, C = residual.shape
        return cls(eigenvalues, eigenvectors, eigenvectors.T @ np.asarray(residual, np.float64).reshape(-1), n, C)

    @property
    def floor(self) -> float:
        """Eigenvalues at or below this are zero up to rounding (numpy's matrix-rank tolerance)."""
        return float(self.eigenvalues[-1] * len(self.eigenvalues) * np.finfo(np.float64).eps)

    @property
    def condition_number(self) -> float:
        """λ_max/λ_min of Θ(X, X) (inf if it is singular to rounding): gradient descent at step η needs
        about ln(1/tolerance)·n/(ηλ_min) steps to converge in its slowest direction."""
        smallest = self.eigenvalues[0]
        return float(self.eigenvalues[-1] / smallest) if smallest > self.floor else math.inf

    def stable_rate(self) -> float:
        """2n/λ_max: gradient descent on this MSE diverges for a larger step."""
        return 2 * self.n / float(self.eigenvalues[-1])

    def coefficients(self, learning_rate: float, step: float) -> np.ndarray:
        """α_t = Θ⁻¹ (I − (I − ηΘ/n)^t) r (n, C), so that f_t(x) = f₀(x) + Θ(x, X) α_t; ``step`` inf gives
        kernel regression's Θ⁻¹ r (over the eigenvalues above ``floor``)."""
        s = self.eigenvalues
        positive = s > self.floor
        if math.isinf(step):
            gain = np.where(positive, 1 / np.where(positive, s, 1), 0.0)
        else:
            rate = learning_rate * s / self.n
            small = np.abs(rate) < 0.5  # 1 − (1 − rate)^t without cancellation where the rate is small
            done = np.where(small, -np.expm1(step * np.log1p(-np.where(small, rate, 0.0))), 1 - np.power(1 - rate, step))
            gain = np.where(positive, done / np.where(positive, s, 1), learning_rate * step / self.n)
        return (self.eigenvectors @ (gain * self.residual)).reshape(self.n, self.classes)

    def train_loss(self, learning_rate: float, step: float) -> float:
        """½‖f_t(X) − Y‖² averaged over the training examples: the residual left is (I − ηΘ/n)^t r."""
        if math.isinf(step):
            decay = (self.eigenvalues <= self.floor).astype(np.float64)
        else:
            decay = np.power(1 - learning_rate * self.eigenvalues / self.n, step)
        return float(0.5 * np.sum((decay * self.residual) ** 2) / self.n)


def kernel_product(apply, params, x_train: jax.Array, x: jax.Array, coefficients: jax.Array) -> jax.Array:
    """Θ(x, X) α = J(x) (J(X)ᵀ α) at ``params``: one vjp on the training points and one jvp on ``x``, so
    the test-by-train kernel is never formed."""
    _, pull = jax.vjp(lambda p: apply(p, x_train), params)
    return jax.jvp(lambda p: apply(p, x), (params,), pull(coefficients))[1]


def run(*, data_path: Path, model: dict, seed: int, train_size: int, steps: int, learning_rate: float | str,
        compare_steps: list[int], scan_steps: int = 100) -> pd.DataFrame:
    """Train K = ∞ by full-batch gradient descent on MSE and compare it with the closed form at every step of
    ``compare_steps`` and the last, and at t → ∞ (kernel regression); all in float64.

    The training set is a fixed class-balanced subset of ``train_size`` examples; the linear model is
    trained by ``train.Trainer`` itself (SGD without momentum, batch = the subset), ``steps`` steps of
    size ``learning_rate`` (``auto``: ``AUTO_STEP_FRACTION`` of the stability limit 2n/λ_max). Returns
    both models' outputs on every test example in ``tables.KERNEL_REGRESSION_COLUMNS``.
    """
    started = time.perf_counter()
    with jax.enable_x64(True):
        dataset = data.load(Path(data_path))
        subset = data.training_subset(dataset.y_train, train_size, class_balanced=True)
        x_train, y_train = jnp.asarray(dataset.x_train[subset], jnp.float64), np.asarray(dataset.y_train[subset])
        x_test = jnp.asarray(dataset.x_test, jnp.float64)
        network = models.from_spec(model, input_shape=dataset.input_shape, num_classes=dataset.num_classes, seed=seed)
        network = dataclasses.replace(network, params=jax.tree.map(lambda p: p.astype(jnp.float64), network.params))
        onehot = np.eye(dataset.num_classes)[y_train]
        kernel = ntk.empirical_ntk(network.apply, network.params, x_train, kind="full", chunk_size=KERNEL_CHUNK)
        dynamics = KernelDynamics.of(kernel, onehot - np.asarray(network.apply(network.params, x_train)))
        if learning_rate == "auto":
            learning_rate = AUTO_STEP_FRACTION * dynamics.stable_rate()
        compared = sorted(set(compare_steps) | {steps})
        config = train.gradient_descent_config(
            data=str(data_path), dataset=dataset.meta["dataset"], model=model, K="inf", seed=seed,
            variant="kernel_regression", steps=steps, batch_size=train_size, learning_rate=learning_rate, loss="mse",
            eval_train_size=train_size, scan_steps=math.gcd(scan_steps, *compared))
        trainer = train.Trainer(config, network)
        state, train_data, done, trained = trainer.init_state(), train.TrainData.of(x_train, y_train), 0, {}
        with tqdm(total=steps, desc="K = ∞ gradient descent (MSE, float64)", unit="step", disable=None) as bar:
            for step in [t for t in compared if t <= steps]:
                state = trainer.train_steps(state, train_data, step - done, start=done, progress=bar)
                done, outputs = step, trainer.linear_outputs(state, x_train)
                trained[step] = (float(0.5 * np.sum((outputs - onehot) ** 2) / train_size),
                                 trainer.linear_outputs(state, x_test))

        product = jax.jit(functools.partial(kernel_product, network.apply))
        initial_test = train.in_chunks(lambda x: network.apply(network.params, x), x_test)  # f₀, for every t

        def closed_form(step: float) -> np.ndarray:
            """f_t on the test split: f₀(x) + Θ(x, X) α_t."""
            alpha = jnp.asarray(dynamics.coefficients(learning_rate, step))
            return initial_test + train.in_chunks(lambda x: product(network.params, x_train, x, alpha), x_test)

        frames = []
        for step in compared + [math.inf]:
            expected = closed_form(step)
            train_loss, outputs = trained.get(step, (math.nan, np.full_like(expected, np.nan)))
            frames.append(_frame(step, outputs, expected, train_loss, dynamics.train_loss(learning_rate, step),
                                 np.asarray(dataset.y_test)))
            if math.isfinite(step):
                log.info("step %d: largest |trained − closed form| on test %.3g; train loss %.3g (closed form %.3g)",
                         step, np.abs(outputs - expected).max(), train_loss, dynamics.train_loss(learning_rate, step))
    log.info("K = ∞ GD, %d steps of %.4g on %d examples, condition number %.3g: largest |trained − kernel regression| "
             "%.3g; %.1f s", steps, learning_rate, train_size, dynamics.condition_number,
             np.abs(trained[steps][1] - expected).max(), time.perf_counter() - started)
    table = pd.concat(frames, ignore_index=True).assign(
        dataset=dataset.meta["dataset"], model=model.get("label", model["name"]), seed=seed, train_size=train_size,
        learning_rate=float(learning_rate), condition_number=dynamics.condition_number)
    return tables.validate("kernel_regression", table[list(tables.KERNEL_REGRESSION_COLUMNS)], "kernel-regression run")


def _frame(step: float, trained: np.ndarray, closed_form: np.ndarray, trained_loss: float, closed_form_loss: float,
           labels: np.ndarray) -> pd.DataFrame:
    """The rows of one step: every test example and output class."""
    m, C = closed_form.shape
    return pd.DataFrame(dict(step=float(step), trained_train_loss=trained_loss, closed_form_train_loss=closed_form_loss,
                             example=np.repeat(np.arange(m), C), label=np.repeat(labels, C),
                             output_class=np.tile(np.arange(C), m), trained=trained.reshape(-1),
                             closed_form=closed_form.reshape(-1)))
