"""Stage 3: each stage's per-run files concatenated into one validated table (itlin.tables, one spec per
table), by one script.

metrics.parquet holds every run of the main paper's regime (claims, linearise_after_t); metrics_sweep.parquet
only the K sweep, so that the sweep figures never wait for (or rerun after) the switch runs; the companion's
runs (its own regime) have their metrics_companion and ntk_companion, the width sweep's (C7) metrics_width and
ntk_width (its K = 1 runs). The runs' final
per-example test predictions, and C5's, are what the claims' bootstrap resamples."""

# rule -> (the table it writes, below results/tables/, whose spec itlin.tables.TABLES names; the files it concatenates)
TABLES = {
    "aggregate": ("metrics", run_files(SWEEP_RUNS + SWITCH_RUNS, "metrics.parquet")),
    "aggregate_sweep": ("metrics_sweep", run_files(SWEEP_RUNS, "metrics.parquet")),
    "aggregate_predictions": ("predictions", run_files(SWEEP_RUNS + SWITCH_RUNS, "predictions.parquet")),
    "aggregate_ntk": ("ntk", stage_files("ntk", SWEEP_RUNS)),
    "aggregate_companion": ("metrics_companion", run_files(COMPANION_RUNS, "metrics.parquet")),
    "aggregate_ntk_companion": ("ntk_companion", stage_files("ntk", COMPANION_RUNS)),
    "aggregate_width": ("metrics_width", run_files(WIDTH_RUNS, "metrics.parquet")),
    "aggregate_ntk_width": ("ntk_width", stage_files("ntk", WIDTH_KERNEL_RUNS)),
    "aggregate_gauss_newton": ("gauss_newton", stage_files("gauss_newton", GAUSS_NEWTON_RUNS)),
    "aggregate_gauss_newton_predictions": (
        "gauss_newton_predictions",
        stage_files("gauss_newton", GAUSS_NEWTON_RUNS, "_predictions"),
    ),
    "aggregate_kernel_regression": (
        "kernel_regression",
        stage_files("kernel_regression", KERNEL_REGRESSION_RUNS),
    ),
}

for rule_name, (table, runs) in TABLES.items():

    rule:
        name:
            rule_name
        input:
            runs=runs,
            code=code("tables"),
        output:
            table=f"results/tables/{table}.parquet",
        log:
            f"results/logs/aggregate/{table}.log",
        benchmark:
            f"results/benchmarks/aggregate/{table}.tsv"
        localrule: True
        params:
            table=table,
        script:
            "../scripts/aggregate.py"
