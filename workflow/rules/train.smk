"""Stage 2: one training job per (model, schedule, variant), training every seed as a lane of one program
into a run folder per seed (the width sweep's: one per (model, width, regime), every K and seed as lanes);
each run's config is a file of its own, written from params, so changing one config value reruns exactly the
jobs it affects."""


rule run_config:
    output:
        f"results/runs/{RUN}/config.yaml",
    log:
        f"results/logs/run_config/{RUN}.log",
    localrule: True
    params:
        text=run_config_text,
    # The YAML is built with the workflow (params), so the job is a shell that writes it: no Python start-up
    # for each of the runs (a script job takes about a second).
    shell:
        "printf '%s' {params.text:q} > {output:q} 2> {log:q}"


rule train:
    input:
        configs=lambda wildcards: job_files(wildcards, "config.yaml"),
        data="resources/data/{dataset}.npz",
        code=code("cli"),
    output:
        metrics=seed_files("metrics.parquet"),
        predictions=seed_files("predictions.parquet"),
        runs=seed_files("run.json"),
        snapshots=[directory(folder) for folder in seed_files("snapshots")],
    log:
        f"results/logs/train/{TRAINING_JOB}.log",
    benchmark:
        f"results/benchmarks/train/{TRAINING_JOB}.tsv"
    wildcard_constraints:
        variant=alternatives([*config["variants"], COMPANION]),
    # Longest first (by the planned wall time, per model): the long jobs start while both cores are
    # busy, and the run ends on short jobs instead of one long job alone on one core.
    priority: train_runtime_minutes
    threads: config["resources"]["threads"]
    # A retry (after a time-out or an out-of-memory kill) asks for more time and memory; it
    # resumes from the job's last checkpoint.
    resources:
        mem_mb=grows_with_attempt(train_mem_mb),
        runtime=grows_with_attempt(train_runtime_minutes),
        gpu=config["resources"]["gpu"],
    params:
        # --config and --out once per seed, in the order of the config's seeds (the lanes)
        runs=train_arguments,
        # Checkpoints live outside the declared outputs, which Snakemake deletes when a job
        # fails: a killed or pre-empted job resumes from its last checkpoint.
        scratch=f"results/scratch/{TRAINING_JOB}",
        # Every job of a model compiles the same programs (K is traced): compile once, reuse.
        compilation_cache="results/jax_cache",
        # Shows the job only its own GPU(s): SLURM's allocation on a cluster, a free device
        # (locked for the job's lifetime) on a local machine, none when gpu is 0.
        gpu_slot=os.path.relpath(Path(workflow.basedir) / "workflow" / "scripts" / "gpu_slot.py"),
    shell:
        "python {params.gpu_slot:q} --gpus {resources.gpu} --threads {threads}"
        " --compilation-cache {params.compilation_cache} --"
        " python -m itlin train {params.runs} --scratch {params.scratch} > {log} 2>&1"


# The width sweep (C7): the same job, its lanes every K and seed of one model, width and regime.
use rule train as train_width with:
    output:
        metrics=width_files("metrics.parquet"),
        predictions=width_files("predictions.parquet"),
        runs=width_files("run.json"),
        snapshots=[directory(folder) for folder in width_files("snapshots")],
    log:
        f"results/logs/train/{WIDTH_JOB}.log",
    benchmark:
        f"results/benchmarks/train/{WIDTH_JOB}.tsv"
    wildcard_constraints:
        variant=alternatives(width_variants(config)),
    params:
        runs=train_arguments,
        scratch=f"results/scratch/{WIDTH_JOB}",
        compilation_cache="results/jax_cache",
        gpu_slot=os.path.relpath(Path(workflow.basedir) / "workflow" / "scripts" / "gpu_slot.py"),
