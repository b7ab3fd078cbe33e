"""NTK throughput: time and peak memory of the trace NTK of resnet18 on CIFAR-shaped probe sets.

For each probe-set size n, in one process: the wall time of ``itlin.ntk.empirical_ntk``
(``kind="trace"``; compilation excluded: each chunk shape is compiled on one chunk first and
that time is reported separately), examples²/s (n² kernel entries per second), the peak memory
and the flops that ``itlin.ntk.estimate_costs`` predicts. Every strategy runs at the smallest n
and the kernels are compared; the larger n run the strategy ``empirical_ntk`` picks
(``strategy="auto"``). Peak memory is the device's ``peak_bytes_in_use`` where it reports one (a
process-wide high-water mark); else XLA's plan for one block (``ntk.compiled_block_bytes``).
"""

from __future__ import annotations

import resource
import time

import jax
import numpy as np

from bench.common import NUM_CLASSES, ModelSpec
from itlin import ntk

TABLE = [("strategy", "strategy", ""), ("n", "n", "d"), ("chunk", "chunk", "d"), ("compile_s", "compile s", ".1f"),
         ("seconds", "seconds", ".2f"), ("examples2_per_s", "examples²/s", ",.0f"),
         ("estimated_gflop", "est. GFLOP", ",.1f"), ("gflop_per_s", "GFLOP/s", ",.1f"),
         ("peak_bytes", "peak bytes", ",d")]


def peak_memory(apply, params, chunk, strategy: str) -> tuple[int, str]:
    """(bytes, source): the device's peak bytes in use, else XLA's plan of one block."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use (process high-water mark)"
    return ntk.compiled_block_bytes(apply, params, chunk, strategy), "XLA memory_analysis of one block"


def measure(spec: ModelSpec, *, sizes: list[int], strategies: list[str], chunk_size: int | None = None) -> dict:
    """Rows (strategy, n, seconds, examples²/s, ...) for the trace NTK of ``spec`` at each size in
    ``sizes``, and the largest relative difference between the strategies' kernels."""
    model = spec.create()
    x = jax.random.normal(jax.random.key(0), (max(sizes), *spec.input_shape))
    profile = ntk.profile_model(model.apply, model.params, x[:1])
    smallest = min(sizes)
    automatic = ntk.choose_strategy(profile, n1=max(sizes), n2=max(sizes), kind="trace", symmetric=True,
                                    chunk_size=chunk_size)
    rows, kernels, compiled_chunks = [], {}, set()
    for n in sorted(sizes):
        for strategy in strategies if n == smallest else [automatic]:
            chunk = min(chunk_size or ntk.auto_chunk_size(profile, strategy, n=max(sizes)), n)
            compile_s = None
            if (strategy, chunk) not in compiled_chunks:  # one chunk compiles every piece a chunk of this size needs
                started = time.perf_counter()
                ntk.empirical_ntk(model.apply, model.params, x[:chunk], kind="trace", chunk_size=chunk,
                                  strategy=strategy)
                compile_s = time.perf_counter() - started
                compiled_chunks.add((strategy, chunk))
            started = time.perf_counter()
            kernels[strategy, n] = ntk.empirical_ntk(model.apply, model.params, x[:n], kind="trace",
                                                     chunk_size=chunk, strategy=strategy)
            seconds = time.perf_counter() - started
            peak, source = peak_memory(model.apply, model.params, x[:chunk], strategy)
            flops = ntk.estimate_costs(profile, n1=n, n2=n, kind="trace", symmetric=True,
                                       chunk_size=chunk)[strategy].flops
            rows.append(dict(strategy=strategy, n=n, chunk=chunk, compile_s=compile_s, seconds=seconds,
                             examples2_per_s=n * n / seconds, estimated_gflop=flops / 1e9,
                             gflop_per_s=flops / 1e9 / seconds, peak_bytes=peak, peak_source=source,
                             max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
    found = [kernels[strategy, smallest] for strategy in strategies]
    agreement = None
    if len(found) == 2:
        agreement = float(np.abs(found[0] - found[1]).max() / np.abs(found[0]).max())
    return dict(model=spec.label, kwargs=spec.kwargs, input_shape=list(spec.input_shape), outputs=NUM_CLASSES,
                params=profile.num_params, forward_mflop_per_example=profile.forward_flops / 1e6,
                automatic_strategy=automatic, strategies_agree_to=agreement, rows=rows)
