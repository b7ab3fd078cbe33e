"""Snakemake adapter: concatenate the runs' NTK measurements into one validated table."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import tables  # noqa: E402

runs = [Path(path) for path in snakemake.input.ntk]
measured = tables.aggregate_ntk(runs)
tables.write_ntk(measured, Path(snakemake.output.table))
print(f"{len(runs)} runs, {len(measured)} rows -> {snakemake.output.table}")
