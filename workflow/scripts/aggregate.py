"""Snakemake adapter: concatenate the per-run files of one table (``params.table``, a name of
itlin.tables.TABLES, which gives its spec) into one validated table."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import tables  # noqa: E402

name = snakemake.params.table
spec = tables.TABLES[name]
runs = [Path(path) for path in snakemake.input.runs]
table = tables.aggregate(spec, runs)
tables.write(spec, table, Path(snakemake.output.table))
print(f"{name}: {len(runs)} files, {len(table)} rows -> {snakemake.output.table}")
