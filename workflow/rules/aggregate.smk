"""Stage 3: the runs' metrics in tidy tables of one schema (itlin.tables.METRICS_COLUMNS), and their
final per-example test predictions (itlin.tables.PREDICTIONS_COLUMNS) for the claims' bootstrap.

metrics.parquet holds every run (claims, linearise_after_t); metrics_sweep.parquet only the
K sweep, so that the sweep figures never wait for (or rerun after) the switch runs."""


rule aggregate:
    input:
        metrics=run_files(SWEEP_RUNS + SWITCH_RUNS, "metrics.parquet"),
        code=library_source("tables"),
    output:
        table="results/tables/metrics.parquet",
    log:
        "results/logs/aggregate/metrics.log",
    benchmark:
        "results/benchmarks/aggregate/metrics.tsv"
    localrule: True
    script:
        "../scripts/aggregate.py"


rule aggregate_sweep:
    input:
        metrics=run_files(SWEEP_RUNS, "metrics.parquet"),
        code=library_source("tables"),
    output:
        table="results/tables/metrics_sweep.parquet",
    log:
        "results/logs/aggregate/metrics_sweep.log",
    benchmark:
        "results/benchmarks/aggregate/metrics_sweep.tsv"
    localrule: True
    script:
        "../scripts/aggregate.py"


rule aggregate_predictions:
    input:
        predictions=run_files(SWEEP_RUNS + SWITCH_RUNS, "predictions.parquet"),
        code=library_source("tables"),
    output:
        table="results/tables/predictions.parquet",
    log:
        "results/logs/aggregate/predictions.log",
    benchmark:
        "results/benchmarks/aggregate/predictions.tsv"
    localrule: True
    script:
        "../scripts/aggregate_predictions.py"
