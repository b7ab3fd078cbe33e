"""Snakemake adapter: the C5 jobs' tables in one validated table, and their test predictions in another."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import tables  # noqa: E402

table = tables.aggregate_gauss_newton([Path(path) for path in snakemake.input.runs])
tables.write_gauss_newton(table, Path(snakemake.output.table))
predictions = tables.aggregate_gauss_newton_predictions([Path(path) for path in snakemake.input.predictions])
tables.write_gauss_newton_predictions(predictions, Path(snakemake.output.predictions))
print(f"{len(snakemake.input.runs)} jobs: {len(table)} rows -> {snakemake.output.table}, "
      f"{len(predictions)} predictions -> {snakemake.output.predictions}")
