"""Stage 2: one training run per (model, schedule, seed, variant); the run config is a file of
its own, written from params, so changing one config value reruns exactly the runs it affects."""


rule run_config:
    output:
        f"results/runs/{RUN}/config.yaml",
    log:
        f"results/logs/run_config/{RUN}.log",
    localrule: True
    params:
        run=run_settings,
    script:
        "../scripts/write_run_config.py"


rule train:
    input:
        config=f"results/runs/{RUN}/config.yaml",
        data="resources/data/{dataset}.npz",
        code=code("cli"),
    output:
        metrics=f"results/runs/{RUN}/metrics.parquet",
        predictions=f"results/runs/{RUN}/predictions.parquet",
        run=f"results/runs/{RUN}/run.json",
        snapshots=directory(f"results/runs/{RUN}/snapshots"),
    log:
        f"results/logs/train/{RUN}.log",
    benchmark:
        f"results/benchmarks/train/{RUN}.tsv"
    threads: config["resources"]["threads"]
    # A retry (after a time-out or an out-of-memory kill) asks for more time and memory; it
    # resumes from the run's last checkpoint.
    resources:
        mem_mb=grows_with_attempt(train_mem_mb),
        runtime=grows_with_attempt(train_runtime_minutes),
        gpu=config["resources"]["gpu"],
    params:
        out=subpath(output.metrics, parent=True),
        # Checkpoints live outside the declared outputs, which Snakemake deletes when a job
        # fails: a killed or pre-empted run resumes from its last checkpoint.
        scratch=f"results/scratch/{RUN}",
        # Every run of a model compiles the same programs (K is traced): compile once, reuse.
        compilation_cache="results/jax_cache",
        # Shows the job only its own GPU(s): SLURM's allocation on a cluster, a free device
        # (locked for the job's lifetime) on a local machine, none when gpu is 0.
        gpu_slot=os.path.relpath(Path(workflow.basedir) / "workflow" / "scripts" / "gpu_slot.py"),
    shell:
        "JAX_COMPILATION_CACHE_DIR={params.compilation_cache}"
        " python {params.gpu_slot:q} --gpus {resources.gpu} --"
        " python -m itlin train --config {input.config} --out {params.out}"
        " --scratch {params.scratch} > {log} 2>&1"
