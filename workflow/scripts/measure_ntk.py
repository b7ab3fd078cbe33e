"""Snakemake adapter: NTK measurements at every snapshot of a training job's runs (itlin.measure_ntk.measure_runs)."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from gpu_slot import claim_gpus, use_compilation_cache  # noqa: E402

# Before JAX starts: this job's own GPU(s), or none, and the compilation cache its stage shares.
claim_gpus(snakemake.resources.gpu, threads=snakemake.threads)
use_compilation_cache(snakemake.params.compilation_cache)

from itlin import measure_ntk, tables  # noqa: E402
from itlin.cli import configure_logging  # noqa: E402

configure_logging()  # a line per snapshot, with its time: an NTK job can run for hours
measured = measure_ntk.measure_runs(
    [Path(run).parent for run in snakemake.input.runs], Path(snakemake.input.data), snakemake.params.probe_size,
    probe_seed=snakemake.params.probe_seed, chunk_size=snakemake.params.chunk_size,
    strategy=snakemake.params.strategy,
)
for table, out in zip(measured, snakemake.output):
    tables.write("ntk", table, Path(out))
    print(f"{len(table)} rows -> {out}")
