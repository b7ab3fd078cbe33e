"""Snakemake adapter: judge the paper's claims on the tables (itlin.claims): claims.md, .json, .html."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import claims, tables  # noqa: E402

readers = {"metrics": tables.read, "predictions": tables.read_predictions, "ntk": tables.read_ntk,
           "gauss_newton": tables.read_gauss_newton, "gauss_newton_predictions": tables.read_gauss_newton_predictions,
           "kernel_regression": tables.read_kernel_regression}
measured = {name: read(Path(snakemake.input[name])) for name, read in readers.items() if snakemake.input.get(name)}
settings = claims.Settings.from_config(snakemake.params.settings)
results = claims.evaluate(measured, settings, twins=snakemake.params.twins)
claims.write(results, settings, Path(snakemake.output.markdown), Path(snakemake.output.json),
             Path(snakemake.output.html))
for result in results:
    print(f"{result.id}: {result.summary}")
