"""Snakemake adapter: judge the paper's claims on the tables (itlin.claims): claims.md, .json, .html."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

from itlin import claims, tables  # noqa: E402

measured = {table: tables.read(spec, Path(snakemake.input[table])) for table, spec in tables.TABLES.items()
            if snakemake.input.get(table)}
settings = claims.Settings.from_config(snakemake.params.settings)
results = claims.evaluate(measured, settings, twins=snakemake.params.twins)
claims.write(results, settings, Path(snakemake.output.markdown), Path(snakemake.output.json),
             Path(snakemake.output.html))
for result in results:
    print(f"{result.id}: {result.summary}")
