"""Snakemake adapter: draw one figure from its table (itlin.plots.FIGURES or NTK_FIGURES)."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import plots, tables  # noqa: E402

name = snakemake.params.figure
if name in plots.NTK_FIGURES:
    table, draw = tables.read_ntk(Path(snakemake.input.table)), plots.NTK_FIGURES[name]
else:
    table, draw = tables.read(Path(snakemake.input.table)), plots.FIGURES[name]
draw(table, Path(snakemake.output.pdf), Path(snakemake.output.png))
print(f"{name}: {len(table)} rows -> {snakemake.output.pdf}, {snakemake.output.png}")
