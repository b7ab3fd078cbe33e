"""Stage 3c (C5): damped Gauss-Newton runs over the config's λ grid, one job per (model, λ, seed),
then one damping table that places the K sweep beside them at its effective damping 1/(ηK)."""


rule gauss_newton:
    input:
        data="resources/data/{dataset}.npz",
        code=library_source("gauss_newton"),
    output:
        result=f"results/gauss_newton/{GAUSS_NEWTON_RUN}.parquet",
        history=f"results/gauss_newton/{GAUSS_NEWTON_RUN}_history.parquet",
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
        model=lambda wildcards: model_spec(wildcards.model),
        damping=lambda wildcards: DAMPINGS[wildcards.damping],
        time=config["gauss_newton"]["time"],
        loss=config["training"]["loss"],
        batch_size=config["gauss_newton"]["batch_size"],
        step_size=config["gauss_newton"]["step_size"],
        cg_tolerance=config["gauss_newton"]["cg_tolerance"],
        cg_max_iterations=config["gauss_newton"]["cg_max_iterations"],
        probe_size=config["ntk"]["probe_size"],
        probe_seed=config["ntk"]["probe_seed"],
        # λ is traced: every run of a model compiles the same step, once.
        compilation_cache="results/jax_cache",
    script:
        "../scripts/gauss_newton.py"


rule aggregate_gauss_newton:
    input:
        runs=[f"results/gauss_newton/{run}.parquet" for run in GAUSS_NEWTON_RUNS],
        metrics="results/tables/metrics_sweep.parquet",
        ntk="results/tables/ntk.parquet",
        code=library_source("gauss_newton"),
    output:
        table="results/tables/gauss_newton.parquet",
    log:
        "results/logs/aggregate/gauss_newton.log",
    benchmark:
        "results/benchmarks/aggregate/gauss_newton.tsv"
    localrule: True
    params:
        learning_rate=config["training"]["optimizer"]["learning_rate"],
        models=config["gauss_newton"]["models"],
        # the Gauss-Newton runs see no augmentation: compare them with the K-runs that saw none either
        variants=[label for label, variant in config["variants"].items() if not variant["augment"]],
    script:
        "../scripts/aggregate_gauss_newton.py"
