"""Snakemake adapter: concatenate the kernel-regression runs into one validated table (C6)."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import tables  # noqa: E402

runs = [Path(path) for path in snakemake.input.runs]
table = tables.aggregate_kernel_regression(runs)
tables.write_kernel_regression(table, Path(snakemake.output.table))
print(f"{len(runs)} runs, {len(table)} rows -> {snakemake.output.table}")
