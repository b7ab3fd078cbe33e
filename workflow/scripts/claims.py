"""Snakemake adapter: check the paper's claims against the tables (itlin.claims); the verdicts as a
Markdown table and as an HTML page for the report."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import claims, tables  # noqa: E402

readers = {"ntk": tables.read_ntk, "gauss_newton": tables.read_gauss_newton,
           "kernel_regression": tables.read_kernel_regression}
measurements = {name: read(Path(snakemake.input[name])) for name, read in readers.items() if snakemake.input.get(name)}
verdicts = claims.evaluate(tables.read(Path(snakemake.input.table)), measurements)
Path(snakemake.output.markdown).write_text(claims.to_markdown(verdicts))
Path(snakemake.output.html).write_text(
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Claims</title><style>table {border-collapse: '
    "collapse} th, td {border: 1px solid #ccc; padding: 4px; text-align: left; vertical-align: top}</style>"
    "</head><body>\n"
    + verdicts.to_html(index=False, border=0) + "\n</body></html>\n",
    encoding="utf-8",
)
print(verdicts.to_string())
