"""Snakemake adapter: check the paper's claims against the tables (itlin.claims)."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import claims, tables  # noqa: E402

readers = {"ntk": tables.read_ntk, "gauss_newton": tables.read_gauss_newton,
           "kernel_regression": tables.read_kernel_regression}
measurements = {name: read(Path(snakemake.input[name])) for name, read in readers.items() if snakemake.input.get(name)}
verdicts = claims.evaluate(tables.read(Path(snakemake.input.table)), measurements)
Path(snakemake.output[0]).write_text(claims.to_markdown(verdicts))
print(verdicts.to_string())
