"""Stage 3c (C5): iterative linearisation by plain gradient descent against damped Gauss-Newton at
λ = 1/(ηK) and the same time ηT, one job per (model, loss, seed) running every K of the grid for both
methods (tabulated by aggregate.smk, with their test predictions for the claims' bootstrap)."""


rule gauss_newton:
    input:
        data="resources/data/{dataset}.npz",
        code=code("gauss_newton", "tables", "cli"),
    output:
        result=f"results/gauss_newton/{GAUSS_NEWTON_RUN}.parquet",
        predictions=f"results/gauss_newton/{GAUSS_NEWTON_RUN}_predictions.parquet",
    log:
        f"results/logs/gauss_newton/{GAUSS_NEWTON_RUN}.log",
    benchmark:
        f"results/benchmarks/gauss_newton/{GAUSS_NEWTON_RUN}.tsv"
    threads: config["resources"]["threads"]
    # A retry (after a time-out or an out-of-memory kill) asks for more time and memory.
    resources:
        mem_mb=grows_with_attempt(train_mem_mb),
        runtime=grows_with_attempt(config["gauss_newton"]["runtime_minutes"]),
        gpu=config["resources"]["gpu"],
    params:
        model=lambda wildcards: model_spec(config, wildcards.model),
        train_size=config["gauss_newton"]["train_size"],
        steps=config["gauss_newton"]["steps"],
        learning_rate=config["gauss_newton"]["learning_rate"],
        periods=config["gauss_newton"]["K"],
        batch_size=config["gauss_newton"]["batch_size"],
        cg_tolerance=config["gauss_newton"]["cg_tolerance"],
        cg_max_iterations=config["gauss_newton"]["cg_max_iterations"],
        newton_tolerance=config["gauss_newton"]["newton_tolerance"],
        newton_max_steps=config["gauss_newton"]["newton_max_steps"],
        probe_size=config["ntk"]["probe_size"],
        probe_seed=config["ntk"]["probe_seed"],
        # K and λ are traced: every period of a job runs the same two compiled programs.
        compilation_cache="results/jax_cache",
    script:
        "../scripts/gauss_newton.py"
