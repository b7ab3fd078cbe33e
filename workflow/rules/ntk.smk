"""Stage 3b: the empirical NTK of every sweep run, every run of the companion and every K = 1 run of the width
sweep at each of its snapshots (θ_lin, and θ at the last; θ_lin alone for K = 1) on the dataset's fixed
class-balanced probe set (tabulated by aggregate.smk); one job per model and variant, measuring all its runs
(the sweep's: every K) with kernel programs compiled once."""


rule measure_ntk:
    input:
        runs=lambda wildcards: ntk_job_files(wildcards, "run.json"),
        snapshots=lambda wildcards: ntk_job_files(wildcards, "snapshots"),
        data="resources/data/{dataset}.npz",
        code=code("measure_ntk", "tables", "cli"),
    output:
        ntk_files(next(iter(config["variants"]))),
    log:
        f"results/logs/measure_ntk/{NTK_JOB}.log",
    benchmark:
        f"results/benchmarks/measure_ntk/{NTK_JOB}.tsv"
    wildcard_constraints:
        variant=alternatives(config["variants"]),
    threads: config["resources"]["threads"]
    # A retry (after a time-out or an out-of-memory kill) asks for more time and memory.
    resources:
        mem_mb=grows_with_attempt(train_mem_mb),
        runtime=grows_with_attempt(
            lambda wildcards: len(ntk_job_runs(config, wildcards)) * config["ntk"]["runtime_minutes"]
        ),
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


# The companion's and the width sweep's runs: their K = 1 runs alone.
use rule measure_ntk as measure_ntk_k1 with:
    output:
        ntk_files(COMPANION),
    wildcard_constraints:
        variant=alternatives([COMPANION, *width_variants(config)]),
