"""Snakemake adapter: draw one figure of itlin.figures.FIGURES from its table with its itlin.plots function."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import figures, plots, tables  # noqa: E402

figure = figures.FIGURES[snakemake.params.figure]
table = tables.read(figure.table, Path(snakemake.input.table))
extra = {name: tables.read(tables.TABLES[name], Path(path)) for name, path in zip(figure.extra, snakemake.input.extra)}
getattr(plots, figure.draw)(table, Path(snakemake.output.pdf), Path(snakemake.output.png), **extra,
                            **snakemake.params.options)
print(f"{figure.name}: {len(table)} rows -> {snakemake.output.pdf}, {snakemake.output.png}")
