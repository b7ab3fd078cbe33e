"""Snakemake adapter: the damping table (C5): Gauss-Newton runs plus the K sweep at 1/(ηK)."""

import sys
from pathlib import Path

import pandas as pd

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import gauss_newton, tables  # noqa: E402

solver = tables.aggregate_gauss_newton([Path(path) for path in snakemake.input.runs])
metrics = tables.read(Path(snakemake.input.metrics))
ntk = tables.read_ntk(Path(snakemake.input.ntk))
models = snakemake.params.models
sweep = gauss_newton.iterative_linearisation_rows(metrics[metrics["model"].isin(models)], ntk[ntk["model"].isin(models)],
                                                  snakemake.params.learning_rate, snakemake.params.variants)
table = pd.concat([solver, sweep], ignore_index=True)
tables.write_gauss_newton(table, Path(snakemake.output.table))
print(f"{len(solver)} Gauss-Newton runs, {len(sweep)} K-runs -> {snakemake.output.table}")
