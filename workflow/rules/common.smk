"""Shared by the rules: the config, validated; the runs it makes (itlin.workflow, where the logic lives and
is tested); the wildcard constraints; the targets; each rule's code inputs and resources."""

import math
import os
from pathlib import Path

from itlin.workflow import (
    COMPANION,
    GAUSS_NEWTON_RUN,
    KERNEL_REGRESSION_RUN,
    NTK_JOB,
    RUN,
    TRAINING_JOB,
    WIDTH_JOB,
    alternatives,
    check_cluster_profile,
    dataset_options,
    job_runs,
    model_entry,
    model_spec,
    ntk_job_runs,
    ntk_schedules,
    regime_training,
    run_config_yaml,
    run_grid,
    run_wildcards,
    source_files,
    twins,
    validate,
    wildcard_patterns,
    width_variants,
)

# The JSON Schema (types, ranges, known keys; integers written as integers), then what it cannot
# express; each error names the key. YAML syntax errors in a --configfile are reported by Snakemake
# before this file runs (`--verbose` shows their line).
validate(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")


wildcard_constraints:
    **wildcard_patterns(config),


DATASET = config["dataset"]["name"]
TWINS = twins(config)  # deep linear twin label -> the companion model it copies (S2's and S5's control)
GRID = run_grid(config)
SWEEP_RUNS, SWITCH_RUNS, COMPANION_RUNS, WIDTH_RUNS = GRID.sweep, GRID.switch, GRID.companion, GRID.width
WIDTH_KERNEL_RUNS = [run for run in WIDTH_RUNS if run_wildcards(run)["schedule"] == "K1"]  # C7's kernel change
GAUSS_NEWTON_RUNS, KERNEL_REGRESSION_RUNS = GRID.gauss_newton, GRID.kernel_regression


def run_files(runs, name):
    """The output ``name`` (metrics.parquet, predictions.parquet) of each run."""
    return [f"results/runs/{run}/{name}" for run in runs]


def seed_files(name):
    """The file ``name`` of every seed's run of a training job, as outputs (the job's other wildcards open)."""
    return expand(f"results/runs/{RUN}/{name}", seed=config["seeds"], allow_missing=True)


def width_files(name):
    """The file ``name`` of every run (each K and seed) of a width sweep job, as outputs: ``job_runs`` of the job's
    wildcard pattern, so in the order of its lanes (its inputs)."""
    return run_files(job_runs(config, {key: f"{{{key}}}" for key in ("dataset", "model", "variant")}), name)


def train_arguments(wildcards, input, output):
    """`--config` and `--out` once per lane, in the order of the job's runs (``job_runs``)."""
    return " ".join(
        f"--config {config_file} --out {Path(metrics).parent}"
        for config_file, metrics in zip(input.configs, output.metrics)
    )


def job_files(wildcards, name):
    """The file ``name`` of every run of the training job named by ``wildcards``, as inputs."""
    return run_files(job_runs(config, wildcards), name)


def ntk_job_files(wildcards, name):
    """The file ``name`` of every run the NTK job named by ``wildcards`` measures, as inputs."""
    return run_files(ntk_job_runs(config, wildcards), name)


def ntk_files(variant):
    """The NTK tables an NTK job of ``variant``'s kind writes (the schedules it measures, each seed), as outputs, in
    the order of its runs (``ntk_job_runs``)."""
    return [
        f"results/ntk/{{dataset}}/{{model}}/{schedule}/seed{seed}/{{variant}}.parquet"
        for schedule in ntk_schedules(config, variant)
        for seed in config["seeds"]
    ]


def stage_files(stage, runs, suffix=""):
    """The output of each run of a stage with a folder of its own: results/<stage>/<run><suffix>.parquet."""
    return [f"results/{stage}/{run}{suffix}.parquet" for run in runs]


def all_targets():
    """What the default target builds: the tables, every configured figure, the claims."""
    targets = [
        "results/tables/metrics.parquet",
        "results/tables/ntk.parquet",
        "results/claims.md",
        "results/claims.html",
    ]
    targets += [table for table in measurement_tables().values() if table]
    for name in config["figures"]:
        targets += [f"figures/{name}.png", f"figures/{name}.pdf"]
    return targets


def measurement_tables():
    """The tables of the optional stages the claims read, by name (empty when the stage makes no runs)."""
    runs = {
        "gauss_newton": GAUSS_NEWTON_RUNS,
        "gauss_newton_predictions": GAUSS_NEWTON_RUNS,
        "kernel_regression": KERNEL_REGRESSION_RUNS,
        "metrics_companion": COMPANION_RUNS,
        "ntk_companion": COMPANION_RUNS,
        "metrics_width": WIDTH_RUNS,
        "ntk_width": WIDTH_KERNEL_RUNS,
    }
    return {table: f"results/tables/{table}.parquet" if measured else [] for table, measured in runs.items()}


def code(*modules):
    """The source files of the named itlin modules and of all they import: an input of every rule that
    runs them, so that changing a module reruns exactly the rules whose code it is (a figure's, not training).
    Relative to the working directory, so that a moved or copied project keeps its results."""
    return [os.path.relpath(Path(workflow.basedir) / path) for path in source_files(*modules)]


def run_config_text(wildcards):
    """The run config of one training run, as its file holds it (params of the run_config rule)."""
    return run_config_yaml(config, dict(wildcards.items()))


def grows_with_attempt(amount):
    """A job resource that a retried job (after a time-out or an out-of-memory kill) gets
    ``attempt`` times of; ``amount`` is a number or a function of the wildcards."""
    return lambda wildcards, attempt: attempt * (amount(wildcards) if callable(amount) else amount)


def train_mem_mb(wildcards):
    """Memory of one training job, per model label."""
    return model_entry(config, wildcards.model)["mem_mb"]


def train_runtime_minutes(wildcards):
    """Wall-time limit of one training job: a fixed overhead plus the model's cost per step, per lane (the
    seeds, and a width sweep job's periods: on a CPU, lanes take turns)."""
    per_thousand = model_entry(config, wildcards.model)["minutes_per_1000_steps"]
    training = regime_training(config, wildcards.model, wildcards.variant)
    lanes = len(config["seeds"]) * (len(config["width"]["K"]) if wildcards.variant in width_variants(config) else 1)
    steps = training["steps"] * lanes
    return math.ceil(config["resources"]["runtime_overhead_minutes"] + per_thousand * steps / 1000)
