"""Snakemake adapter: write one run's config (built in params from the workflow config) as YAML."""

import sys

import yaml

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # tracebacks land in the log too

with open(snakemake.output[0], "w") as out:
    yaml.safe_dump(snakemake.params.run, out, sort_keys=False)
print(f"wrote {snakemake.output[0]}")
