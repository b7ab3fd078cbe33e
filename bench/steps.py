"""Step cost, per model and batch size, all timed alternately in one process:

- ``standard``: the pipeline's K = 1 block (``Trainer.block_for`` of a K = 1 run: every step
  re-linearises and takes f's own gradient, a standard training step; sampling, optimiser and
  bookkeeping exactly as the pipeline runs them);
- ``linearised``: the pipeline's block of every other schedule, here K = ∞ (f_lin's gradient);
- ``plain``: a plain Flax NNX + optax step written the usual way (``nnx.Optimizer``, ``@nnx.jit``,
  ``nnx.value_and_grad`` on the module), same network, optimiser and batch.

The time ratio linearised / standard is set beside the ratio of XLA's FLOP counts of the two
steps (about 5/3: a jvp plus its transpose against a forward plus a backward pass); images/s of
the pipeline's K = 1 beside those of the plain step.

The absolute ceiling: each step's achieved FLOP rate (XLA's count over the measured time) as a
fraction of the machine's float32 matmul rate measured in the same run, for a large product (the
``peak``) and for the products of the step's own layers (``attainable``: what a model this small can
reach; ``bench.common.attainable_rate``), beside two costs of a step that no layer's product
explains: sampling its batch (``train.sample_batch``) and
dispatching the jitted step with the run's state (the CPU's block mode: one call per step).
"""

from __future__ import annotations

import math
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bench.common import (ModelSpec, alternating_times, attainable_rate, layer_products, run_config, step_flops,
                          synthetic_data)
from itlin import train

LINEAR_TABLE = [("model", "model", ""), ("batch", "batch", "d"), ("params", "params", ",d"),
                ("standard_ms", "standard ms", ".2f"), ("linearised_ms", "linearised ms", ".2f"),
                ("time_ratio", "time ratio", ".3f"), ("flop_ratio", "FLOP ratio", ".3f"),
                ("time_over_flop_ratio", "time/FLOP ratio", ".3f")]
CEILING_TABLE = [("model", "model", ""), ("batch", "batch", "d"), ("largest_product", "largest product", ""),
                 ("attainable_gflops", "attainable GFLOP/s", ".1f"), ("standard_gflops", "standard GFLOP/s", ".1f"),
                 ("linearised_gflops", "linearised GFLOP/s", ".1f"),
                 ("standard_of_attainable", "standard of attainable", ".2f"),
                 ("linearised_of_attainable", "linearised of attainable", ".2f"),
                 ("standard_of_peak", "standard of peak", ".3f"), ("linearised_of_peak", "linearised of peak", ".3f"),
                 ("sampling_ms", "sampling ms", ".3f"), ("dispatch_ms", "dispatch ms", ".3f")]
PLAIN_TABLE = [("model", "model", ""), ("batch", "batch", "d"), ("plain_images_per_s", "plain Flax img/s", ",.0f"),
               ("standard_images_per_s", "ours K=1 img/s", ",.0f"), ("standard_over_plain", "ours/plain", ".3f")]


def plain_flax_step():
    """A training step written the usual Flax NNX way: the module and optimiser are mutated in place."""

    @nnx.jit
    def step(model: nnx.Module, optimizer: nnx.Optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return step


class CarriedBlock:
    """Calls ``block(state, *args)`` and keeps the returned state for the next call (each call
    donates the state it is given, as in ``train.run``)."""

    def __init__(self, block, state, *args):
        self.block, self.state, self.args = block, state, args

    def __call__(self):
        self.state = self.block(self.state, *self.args)
        return self.state


def per_step_ms(run, steps: int, repeats: int) -> float:
    """Milliseconds per step of ``run()``, which runs ``steps`` steps: the median of ``repeats`` calls after a warm-up."""
    jax.block_until_ready(run())
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times) / steps


def overheads(pipeline: train.Trainer, data: train.TrainData, *, steps: int = 100, repeats: int = 3) -> dict:
    """Milliseconds per step of the batch sampling alone (``steps`` batches in one program, as the step
    samples them) and of dispatching a jitted no-op step (the step counter advanced) with the run's
    state, ``steps`` times, each call donating the state as the pipeline's do."""
    settings = pipeline.config

    @jax.jit
    def sample(data):
        def body(step, total):
            x, _ = train.sample_batch(data, step, jnp.int32(settings.seed), settings.batch_size, settings.augment)
            return total + jnp.sum(x)

        return jax.lax.fori_loop(0, steps, body, jnp.float32(0))

    advance = jax.jit(lambda state: state._replace(step=state.step + 1), donate_argnums=(0,))
    state = [pipeline.init_state()]

    def dispatch():
        for _ in range(steps):
            state[0] = advance(state[0])
        return state[0]

    return dict(sampling_ms=per_step_ms(lambda: sample(data), steps, repeats),
                dispatch_ms=per_step_ms(dispatch, steps, repeats))


def measure(spec: ModelSpec, *, batch_size: int, block: int, repeats: int, data_size: int, config: dict,
            peak_flops_per_s: float, rates: dict) -> dict:
    """Milliseconds per step of each variant (median over ``repeats`` blocks of ``block`` steps),
    images/s, the XLA FLOP counts of the standard and linearised steps, their ratios, and their FLOP
    rates as fractions of the attainable and the peak matmul rate (``rates``: matmul rates by shape,
    shared across models)."""
    model = spec.create()
    settings = run_config(spec, batch_size=batch_size, scan_steps=block, config=config, K=1)
    data = synthetic_data(spec.input_shape, max(data_size, batch_size))
    pipeline = train.Trainer(settings, model)
    k1, never = pipeline.schedule(), pipeline.schedule(math.inf)
    state = pipeline.init_state()
    flops = step_flops(pipeline, state, data)

    module = spec.module()
    optimizer = nnx.Optimizer(module, train.make_optimizer(settings), wrt=nnx.Param)
    plain_step, x, y = plain_flax_step(), data.x[:batch_size], data.y[:batch_size]

    def plain():
        for _ in range(block):
            loss = plain_step(module, optimizer, x, y)
        return loss

    timings = alternating_times({
        "plain": plain,
        "standard": CarriedBlock(pipeline.block_for(0), pipeline.init_state(), data, k1),
        "linearised": CarriedBlock(pipeline.linearised_block, pipeline.init_state(), data, never),
    }, repeats)
    ms = {name: 1e3 * timing["median_s"] / block for name, timing in timings.items()}
    per_second = {name: batch_size / (value / 1e3) for name, value in ms.items()}
    time_ratio, flop_ratio = ms["linearised"] / ms["standard"], flops["linearised"] / flops["standard"]
    products = layer_products(model, spec.input_shape, batch_size)
    attainable = attainable_rate(products, rates)
    achieved = {name: flops[name] / (ms[name] / 1e3) for name in ("standard", "linearised")}
    spent = overheads(pipeline, data)
    return dict(
        model=spec.label, architecture=spec.name, kwargs=spec.kwargs, input_shape=list(spec.input_shape),
        batch=batch_size, params=model.num_params, block=block, repeats=repeats,
        **{f"{name}_ms": value for name, value in ms.items()},
        **{f"{name}_images_per_s": value for name, value in per_second.items()},
        standard_flops=flops["standard"], linearised_flops=flops["linearised"],
        time_ratio=time_ratio, flop_ratio=flop_ratio, time_over_flop_ratio=time_ratio / flop_ratio,
        standard_over_plain=per_second["standard"] / per_second["plain"],
        products=[list(product) for product in products],
        largest_product="x".join(map(str, max(products, key=math.prod))),
        peak_gflops=peak_flops_per_s / 1e9, attainable_gflops=attainable / 1e9,
        **{f"{name}_gflops": rate / 1e9 for name, rate in achieved.items()},
        **{f"{name}_of_attainable": rate / attainable for name, rate in achieved.items()},
        **{f"{name}_of_peak": rate / peak_flops_per_s for name, rate in achieved.items()}, **spent,
        first_call_s={name: timing["first_call_s"] for name, timing in timings.items()},
        first_call_compilations={name: timing["first_call_compilations"] for name, timing in timings.items()},
        times_s={name: timing["times_s"] for name, timing in timings.items()},
    )
