"""Cost of one linearised step against one standard step, same model and batch, in one process.

Prints, per model, the median wall time of each step (over repeated blocks of scanned steps),
their ratio, and the ratio of XLA's FLOP counts of the two compiled steps. The FLOP limit is
about 5/3: a jvp (primal + tangent) plus the transpose of the tangent map, against a forward
plus a backward pass. Run: ``python bench/step_cost.py [--models mlp cnn resnet18] [--batch 128]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from itlin import models
from itlin.linearise import linearise
from itlin.train import block_runner

SHAPES = {"mlp": (8, 8, 1), "cnn": (32, 32, 3), "resnet18": (32, 32, 3)}


def make_steps(model: models.Model, optimizer, block: int):
    """A standard and a linearised step (cross-entropy, Adam) on one batch, each also as a block of
    ``block`` steps driven as training drives it (``itlin.train.block_runner``)."""
    f_lin = linearise(model.apply)

    def loss(logits, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def standard(carry, batch):
        params, opt_state = carry
        grads = jax.grad(lambda p: loss(model.apply(p, batch[0]), batch[1]))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state)

    def linearised(carry, batch):
        params, params_lin, opt_state = carry
        grads = jax.grad(lambda p: loss(f_lin(p, params_lin, batch[0]), batch[1]))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), params_lin, opt_state)

    return block_runner(standard, block), block_runner(linearised, block), standard, linearised


def flops(fn, *args) -> float:
    """XLA's FLOP estimate for one call of ``fn``, from the compiled executable's cost analysis."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"])


def median_times(runs: list, carries: list, batch, repeats: int) -> list[float]:
    """Median wall time of one call of each ``run`` (each donates and returns its carry).

    The runs alternate within every repeat, so a shared, noisy machine loads them alike.
    """
    carries = [jax.block_until_ready(run(carry, batch)) for run, carry in zip(runs, carries)]  # compile, warm up
    times = [[] for _ in runs]
    for _ in range(repeats):
        for index, run in enumerate(runs):
            start = time.perf_counter()
            carries[index] = jax.block_until_ready(run(carries[index], batch))
            times[index].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def measure(name: str, batch_size: int, block: int, repeats: int, kwargs: dict) -> dict:
    shape = SHAPES[name]
    model = models.create(name, input_shape=shape, num_classes=10, seed=0, **kwargs)
    optimizer = optax.adam(1e-3)
    key_x, key_y = jax.random.split(jax.random.key(0))
    batch = (jax.random.normal(key_x, (batch_size, *shape)), jax.random.randint(key_y, (batch_size,), 0, 10))
    params = model.params
    params_lin = jax.tree.map(lambda p: p + 0.01, params)  # a genuine linearisation point ≠ θ
    standard_block, linear_block, standard, linearised = make_steps(model, optimizer, block)
    f_standard = flops(standard, (params, optimizer.init(params)), batch)
    f_linear = flops(linearised, (params, params_lin, optimizer.init(params)), batch)
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731  (each block donates its carry)
    t_standard, t_linear = (t / block for t in median_times(
        [standard_block, linear_block],
        [(copy(params), optimizer.init(params)), (copy(params), params_lin, optimizer.init(params))], batch, repeats))
    return dict(model=name, batch=batch_size, params=model.num_params, standard_ms=1e3 * t_standard,
                linear_ms=1e3 * t_linear, time_ratio=t_linear / t_standard, flop_ratio=f_linear / f_standard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SHAPES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--block", type=int, default=5, help="steps per timed scan")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resnet-width", type=int, default=64)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}")
    print(f"{'model':<10}{'params':>10}{'batch':>7}{'standard ms':>13}{'linear ms':>11}{'time ratio':>12}{'FLOP ratio':>12}")
    rows = []
    for name in args.models:
        kwargs = {"width": args.resnet_width} if name == "resnet18" else {}
        row = measure(name, args.batch, args.block, args.repeats, kwargs)
        rows.append(row)
        print(f"{name:<10}{row['params']:>10}{row['batch']:>7}{row['standard_ms']:>13.2f}{row['linear_ms']:>11.2f}"
              f"{row['time_ratio']:>12.3f}{row['flop_ratio']:>12.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": f"{device.platform} ({device.device_kind})", "jax": jax.__version__, "rows": rows},
                      handle, indent=2)


if __name__ == "__main__":
    main()
