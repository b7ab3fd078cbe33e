"""Snakemake adapter: K = ∞ by full-batch GD on MSE against its closed form (itlin.kernel_regression.run)."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from gpu_slot import claim_gpus, use_compilation_cache  # noqa: E402

# Before JAX starts: this job's own GPU(s), or none, and the compilation cache its stage shares.
claim_gpus(snakemake.resources.gpu, threads=snakemake.threads)
use_compilation_cache(snakemake.params.compilation_cache)

from itlin import kernel_regression, tables  # noqa: E402
from itlin.cli import configure_logging  # noqa: E402

configure_logging()
predictions = kernel_regression.run(
    data_path=Path(snakemake.input.data), model=snakemake.params.model, seed=int(snakemake.wildcards.seed),
    train_size=snakemake.params.train_size, steps=snakemake.params.steps,
    learning_rate=snakemake.params.learning_rate, compare_steps=snakemake.params.compare_steps,
)
tables.write("kernel_regression", predictions, Path(snakemake.output[0]))
print(f"{len(predictions)} rows -> {snakemake.output[0]}")
