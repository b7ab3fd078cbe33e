"""Time and peak memory of the trace NTK of resnet18 on CIFAR-shaped probe sets, per strategy.

For each strategy and probe-set size n, in one process: the wall time of ``itlin.ntk.empirical_ntk``
(``kind="trace"``, compilation excluded: each chunk shape is compiled on one chunk first and that
time is printed separately), examples²/s (n² kernel entries per second), the peak memory and the
flops the cost model of ``itlin.ntk.estimate_costs`` predicts. Peak memory is the device's
``peak_bytes_in_use`` where it reports one (a process-wide high-water mark, so a later, smaller
run shows the earlier peak); else XLA's plan for one block (``ntk.compiled_block_bytes``); the
process's maximum resident set size is printed too. The kernels of the strategies are compared.

    python bench/ntk.py                                   # n = 100, 500, 1000; width 64 (an accelerator)
    python bench/ntk.py --n 20 50 --width 16              # a laptop CPU in a few minutes
    python bench/ntk.py --strategies jacobian --chunk-size 32 --json ntk.json

Recorded (jax 0.10.2, CPU backend: 2 cores shared with other jobs, load 4-6; ``--n 20 50 --width 16``:
701,466 parameters, 10 outputs, 32x32x3, 62.5 MFLOP forward per example; automatic chunks under
the 1 GiB host budget; peak = XLA's plan of one block; the whole run took 9 min):

    strategy     n chunk compile_s  seconds  examples²/s  est_GFLOP  GFLOP/s    peak_bytes       max_rss
    jacobian    20    18      29.3    23.30           17       52.8      2.3  1,517,975,048  2,212,888,576
    jacobian    50    18         -    50.91           49      173.7      3.4  1,517,975,048  2,783,473,664
    ntk_vector  20    15      54.6    83.39            5      274.9      3.3  1,584,668,384  3,384,233,984
    ntk_vector  50    15         -   225.03           11     1624.5      7.2  1,584,668,384  3,384,233,984
    strategies agree to 2.8e-07 (n = 20) and 5.6e-07 (n = 50), max difference / max entry

The contraction is 4.4x faster at n = 50, as the cost model predicts for a convolutional network
(9.4x fewer flops). Not yet run on an accelerator. The cost model's prediction for the default
(width 64, n = 1000, chunk 22 under a quarter of 80 GB): 577 TFLOP for ``jacobian``, of which
466 recompute the streamed Jacobians, against 9,720 TFLOP for ``ntk_vector``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import numpy as np

from itlin import models, ntk


def peak_memory(apply, params, chunk, strategy: str) -> tuple[int, str]:
    """(bytes, source): the device's peak bytes in use, else XLA's plan of one block."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use (process high-water mark)"
    return ntk.compiled_block_bytes(apply, params, chunk, strategy), "XLA memory_analysis of one block"


def max_rss_bytes() -> int:
    """Maximum resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100, 500, 1000], help="probe-set sizes")
    parser.add_argument("--width", type=int, default=64, help="resnet18 width (64: the standard 11.2M parameters)")
    parser.add_argument("--image-size", type=int, default=32, help="square input size (CIFAR: 32)")
    parser.add_argument("--classes", type=int, default=10, help="number of outputs C")
    parser.add_argument("--strategies", nargs="+", default=list(ntk.STRATEGIES), choices=ntk.STRATEGIES)
    parser.add_argument("--chunk-size", type=int, help="examples per chunk (default: ntk.auto_chunk_size)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    shape = (args.image_size, args.image_size, 3)
    model = models.create("resnet18", input_shape=shape, num_classes=args.classes, seed=0, width=args.width)
    x = jax.random.normal(jax.random.key(0), (max(args.n), *shape))
    profile = ntk.profile_model(model.apply, model.params, x[:1])
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}; jax {jax.__version__}; resnet18 width {args.width}, "
          f"{profile.num_params:,} parameters, {args.classes} outputs, input {shape}, "
          f"forward {profile.forward_flops / 1e6:.1f} MFLOP per example")
    print(f"{'strategy':>10} {'n':>5} {'chunk':>5} {'compile_s':>9} {'seconds':>8} {'examples²/s':>12} "
          f"{'est_GFLOP':>10} {'GFLOP/s':>8} {'peak_bytes':>14} {'max_rss':>14}  peak source")
    results, kernels, compiled_chunks = [], {}, set()
    for strategy in args.strategies:
        default_chunk = args.chunk_size or ntk.auto_chunk_size(profile, strategy, n=max(args.n))
        for n in args.n:
            chunk = min(default_chunk, n)
            compile_s = 0.0
            if (strategy, chunk) not in compiled_chunks:  # one chunk compiles every piece a chunk of this size needs
                started = time.perf_counter()
                ntk.empirical_ntk(model.apply, model.params, x[:chunk], kind="trace", chunk_size=chunk, strategy=strategy)
                compile_s = time.perf_counter() - started
                compiled_chunks.add((strategy, chunk))
            started = time.perf_counter()
            kernel = ntk.empirical_ntk(model.apply, model.params, x[:n], kind="trace", chunk_size=chunk,
                                       strategy=strategy)
            seconds = time.perf_counter() - started
            kernels[strategy, n] = kernel
            peak, source = peak_memory(model.apply, model.params, x[:chunk], strategy)
            flops = ntk.estimate_costs(profile, n1=n, n2=n, kind="trace", symmetric=True, chunk_size=chunk)[strategy].flops
            result = dict(strategy=strategy, n=n, chunk=chunk, compile_s=compile_s, seconds=seconds,
                          examples2_per_s=n * n / seconds, estimated_flops=flops, peak_bytes=peak, peak_source=source,
                          max_rss_bytes=max_rss_bytes(), device=f"{device.platform} {device.device_kind}",
                          width=args.width, num_params=profile.num_params)
            results.append(result)
            print(f"{strategy:>10} {n:>5} {chunk:>5} {compile_s:>9.1f} {seconds:>8.2f} {n * n / seconds:>12,.0f} "
                  f"{flops / 1e9:>10.1f} {flops / 1e9 / seconds:>8.1f} {peak:>14,} {result['max_rss_bytes']:>14,}  {source}")
    for n in args.n:
        found = [kernels[strategy, n] for strategy in args.strategies if (strategy, n) in kernels]
        if len(found) == 2:
            difference = np.abs(found[0] - found[1]).max() / np.abs(found[0]).max()
            print(f"n = {n}: strategies agree to {difference:.1e} (max difference / max entry)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return results


if __name__ == "__main__":
    main()
