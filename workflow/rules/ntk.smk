"""Stage 3b: the empirical NTK of every sweep run and every deep linear twin at each of its snapshots
(θ and θ_lin) on the dataset's fixed class-balanced probe set (tabulated by aggregate.smk)."""


rule measure_ntk:
    input:
        run=f"results/runs/{RUN}/run.json",
        snapshots=f"results/runs/{RUN}/snapshots",
        data="resources/data/{dataset}.npz",
        code=code("measure_ntk", "tables", "cli"),
    output:
        f"results/ntk/{RUN}.parquet",
    log:
        f"results/logs/measure_ntk/{RUN}.log",
    benchmark:
        f"results/benchmarks/measure_ntk/{RUN}.tsv"
    threads: config["resources"]["threads"]
    # A retry (after a time-out or an out-of-memory kill) asks for more time and memory.
    resources:
        mem_mb=grows_with_attempt(train_mem_mb),
        runtime=grows_with_attempt(config["ntk"]["runtime_minutes"]),
        gpu=config["resources"]["gpu"],
    params:
        run_dir=subpath(input.run, parent=True),
        probe_size=config["ntk"]["probe_size"],
        probe_seed=config["ntk"]["probe_seed"],
        chunk_size=config["ntk"]["chunk_size"],
        strategy=config["ntk"]["strategy"],
        # Every run of a model compiles the same kernel programs: compile once, reuse.
        compilation_cache="results/jax_cache",
    script:
        "../scripts/measure_ntk.py"
