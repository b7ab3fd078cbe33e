"""Snakemake adapter: one damped Gauss-Newton run (itlin.gauss_newton.run) and its per-step history."""

import os
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too
os.environ["JAX_COMPILATION_CACHE_DIR"] = snakemake.params.compilation_cache  # read when JAX starts

from gpu_slot import claim_gpus  # noqa: E402

claim_gpus(snakemake.resources.gpu)  # this job's own GPU(s), or none: before JAX starts

from itlin import gauss_newton, tables  # noqa: E402
from itlin.train import configure_logging  # noqa: E402

configure_logging()
damping = snakemake.params.damping
result, history = gauss_newton.run(
    data_path=Path(snakemake.input.data), model=snakemake.params.model, seed=int(snakemake.wildcards.seed),
    damping=damping, outer_steps=gauss_newton.outer_steps(damping, snakemake.params.time),
    loss=snakemake.params.loss, batch_size=snakemake.params.batch_size, step_size=snakemake.params.step_size,
    tolerance=snakemake.params.cg_tolerance, max_iterations=snakemake.params.cg_max_iterations,
    probe_size=snakemake.params.probe_size, probe_seed=snakemake.params.probe_seed,
)
tables.write_gauss_newton(result, Path(snakemake.output.result))
history.to_parquet(snakemake.output.history, index=False)
print(result.to_string())
