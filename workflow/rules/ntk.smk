"""Stage 3b: the empirical NTK of every sweep run and every run of the companion at each of its snapshots
(θ_lin, and θ at the last; θ_lin alone for K = 1) on the dataset's fixed class-balanced probe set (tabulated by
aggregate.smk); one job per training job, measuring its seeds' runs with kernel programs compiled once."""


rule measure_ntk:
    input:
        runs=lambda wildcards: job_files(wildcards, "run.json"),
        snapshots=lambda wildcards: job_files(wildcards, "snapshots"),
        data="resources/data/{dataset}.npz",
        code=code("measure_ntk", "tables", "cli"),
    output:
        expand(f"results/ntk/{RUN}.parquet", seed=config["seeds"], allow_missing=True),
    log:
        f"results/logs/measure_ntk/{TRAINING_JOB}.log",
    benchmark:
        f"results/benchmarks/measure_ntk/{TRAINING_JOB}.tsv"
    threads: config["resources"]["threads"]
    # A retry (after a time-out or an out-of-memory kill) asks for more time and memory.
    resources:
        mem_mb=grows_with_attempt(train_mem_mb),
        runtime=grows_with_attempt(len(config["seeds"]) * config["ntk"]["runtime_minutes"]),
        gpu=config["resources"]["gpu"],
    params:
        probe_size=config["ntk"]["probe_size"],
        probe_seed=config["ntk"]["probe_seed"],
        chunk_size=config["ntk"]["chunk_size"],
        strategy=config["ntk"]["strategy"],
        # Every run of a model compiles the same kernel programs: compile once, reuse.
        compilation_cache="results/jax_cache",
    script:
        "../scripts/measure_ntk.py"
