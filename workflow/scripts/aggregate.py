"""Snakemake adapter: concatenate the per-run files of one table (``params.table``, a name of
itlin.tables.SPECS) into one validated table."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import tables  # noqa: E402

name = snakemake.params.table
runs = [Path(path) for path in snakemake.input.runs]
table = tables.aggregate(name, runs)
tables.write(name, table, Path(snakemake.output.table))
print(f"{name}: {len(runs)} files, {len(table)} rows -> {snakemake.output.table}")
