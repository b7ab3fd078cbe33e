"""Snakemake adapter: draw one figure (itlin.plots.FIGURES[name]) from a table."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import plots, tables  # noqa: E402

metrics = tables.read(Path(snakemake.input.table))
draw = plots.FIGURES[snakemake.params.figure]
draw(metrics, Path(snakemake.output.pdf), Path(snakemake.output.png))
print(f"{snakemake.params.figure}: {len(metrics)} rows -> {snakemake.output.pdf}, {snakemake.output.png}")
