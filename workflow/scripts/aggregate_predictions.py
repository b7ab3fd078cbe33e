"""Snakemake adapter: concatenate the runs' final test predictions into one validated table."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import tables  # noqa: E402

runs = [Path(path) for path in snakemake.input.predictions]
predictions = tables.aggregate_predictions(runs)
tables.write_predictions(predictions, Path(snakemake.output.table))
print(f"{len(runs)} runs, {len(predictions)} rows -> {snakemake.output.table}")
