"""Snakemake adapter: one stage's per-run files in one validated table (itlin.tables), the table named
by params.table."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import tables  # noqa: E402

# Interim, until itlin.tables has one spec per table (tables.aggregate(name, paths), tables.write(name, ...)).
AGGREGATE = {
    "metrics": (tables.aggregate, tables.write),
    "predictions": (tables.aggregate_predictions, tables.write_predictions),
    "ntk": (tables.aggregate_ntk, tables.write_ntk),
    "gauss_newton": (tables.aggregate_gauss_newton, tables.write_gauss_newton),
    "gauss_newton_predictions": (tables.aggregate_gauss_newton_predictions, tables.write_gauss_newton_predictions),
    "kernel_regression": (tables.aggregate_kernel_regression, tables.write_kernel_regression),
}
aggregate, write = AGGREGATE[snakemake.params.table]
runs = [Path(path) for path in snakemake.input.runs]
table = aggregate(runs)
write(table, Path(snakemake.output.table))
print(f"{len(runs)} runs, {len(table)} rows -> {snakemake.output.table}")
