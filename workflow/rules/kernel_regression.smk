"""Stage 3d (C6): K = ∞ trained by full-batch gradient descent on MSE (float64) against the closed form of
its outputs at every compared step and against kernel regression (t → ∞) on every test example, one job per
(model, seed) (tabulated by aggregate.smk)."""


rule kernel_regression_run:
    input:
        data="resources/data/{dataset}.npz",
        code=code("kernel_regression", "tables", "cli"),
    output:
        f"results/kernel_regression/{KERNEL_REGRESSION_RUN}.parquet",
    log:
        f"results/logs/kernel_regression/{KERNEL_REGRESSION_RUN}.log",
    benchmark:
        f"results/benchmarks/kernel_regression/{KERNEL_REGRESSION_RUN}.tsv"
    threads: config["resources"]["threads"]
    # A retry (after a time-out or an out-of-memory kill) asks for more time and memory.
    resources:
        mem_mb=grows_with_attempt(train_mem_mb),
        runtime=grows_with_attempt(config["kernel_regression"]["runtime_minutes"]),
        gpu=config["resources"]["gpu"],
    params:
        model=lambda wildcards: model_spec(config, wildcards.model),
        train_size=config["kernel_regression"]["train_size"],
        steps=config["kernel_regression"]["steps"],
        learning_rate=config["kernel_regression"]["learning_rate"],
        compare_steps=config["kernel_regression"]["compare_steps"],
        compilation_cache="results/jax_cache",
    script:
        "../scripts/kernel_regression.py"
