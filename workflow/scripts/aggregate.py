"""Snakemake adapter: concatenate the runs' metrics into one validated table (itlin.tables)."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import tables  # noqa: E402

runs = [Path(path) for path in snakemake.input.metrics]
metrics = tables.aggregate(runs)
tables.write(metrics, Path(snakemake.output.table))
print(f"{len(runs)} runs, {len(metrics)} rows -> {snakemake.output.table}")
