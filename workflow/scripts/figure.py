"""Snakemake adapter: draw one figure from its table (itlin.plots.ALL_FIGURES; plots.TABLES names its table)."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import plots, tables  # noqa: E402

name = snakemake.params.figure
table = tables.read(plots.TABLES[name], Path(snakemake.input.table))
plots.ALL_FIGURES[name](table, Path(snakemake.output.pdf), Path(snakemake.output.png), **snakemake.params.options)
print(f"{name}: {len(table)} rows -> {snakemake.output.pdf}, {snakemake.output.png}")
