"""Snakemake adapter: one C5 job (itlin.gauss_newton.run): every period K of one loss and seed, both methods."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from gpu_slot import claim_gpus, use_compilation_cache  # noqa: E402

# Before JAX starts: this job's own GPU(s), or none, and the compilation cache its stage shares.
claim_gpus(snakemake.resources.gpu, threads=snakemake.threads)
use_compilation_cache(snakemake.params.compilation_cache)

from itlin import gauss_newton, tables  # noqa: E402
from itlin.cli import configure_logging  # noqa: E402

configure_logging()
params = snakemake.params
summary, predictions = gauss_newton.run(
    data_path=Path(snakemake.input.data), model=params.model, seed=int(snakemake.wildcards.seed),
    loss=snakemake.wildcards.loss, learning_rate=params.learning_rate, steps=params.steps, periods=params.periods,
    train_size=params.train_size, batch_size=params.batch_size, cg_tolerance=params.cg_tolerance,
    cg_max_iterations=params.cg_max_iterations, newton_tolerance=params.newton_tolerance,
    newton_max_steps=params.newton_max_steps, probe_size=params.probe_size, probe_seed=params.probe_seed,
)
tables.write("gauss_newton", summary, Path(snakemake.output.result))
tables.write("gauss_newton_predictions", predictions, Path(snakemake.output.predictions))
print(summary.to_string())
