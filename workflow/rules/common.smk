"""Config validation, run naming, wildcard constraints, target lists and the per-run params
shared by every rule file.

A run is named by its path, which carries every experiment axis:
``{dataset}/{model}/{schedule}/seed{seed}/{variant}``, where ``schedule`` is ``K<k>`` for a
re-linearisation period (``Kinf``: linearised training, never re-linearise) or ``switch<t>``
for a C4 run (standard training until step t, then linearised at theta_t to the end).
"""

import json
import math
import re
import shlex
from pathlib import Path

import yaml

from itlin import data as datasets
from itlin import linearise, validation


class WorkflowConfigError(ValueError):
    """A config value the JSON Schema accepts but the workflow cannot run."""


SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"


def k_value(k):
    """The period K as the run config wants it: an int >= 1, or float inf (never re-linearise)."""
    if isinstance(k, str) or math.isinf(k):
        return math.inf
    return int(k)


def check_config(cfg):
    """Reject, naming the key, values the JSON Schema cannot rule out, before any job runs."""
    training = cfg["training"]
    steps, scan = training["steps"], training["scan_steps"]
    for key in ("steps", "eval_every", "checkpoint_every"):
        if training[key] % scan:
            raise WorkflowConfigError(
                f"config key 'training.{key}' = {training[key]} must be a multiple of "
                f"'training.scan_steps' = {scan}"
            )
    periods = [k_value(k) for k in cfg["K"]]
    if len(set(periods)) != len(periods):
        raise WorkflowConfigError(f"config key 'K' lists a period twice: {cfg['K']}")
    switch_steps = linearise.switch_steps(cfg["switch"]["fractions"], steps)
    for index, (fraction, t) in enumerate(zip(cfg["switch"]["fractions"], switch_steps)):
        if not 0 < t < steps:
            raise WorkflowConfigError(
                f"config key 'switch.fractions[{index}]' = {fraction} gives switch step {t}, which must lie "
                f"strictly between 0 and 'training.steps' = {steps}"
            )
    if len(set(switch_steps)) != len(switch_steps):
        raise WorkflowConfigError(
            f"config key 'switch.fractions' gives the same switch step twice: {switch_steps} "
            f"(of 'training.steps' = {steps})"
        )
    for index, label in enumerate(cfg["switch"]["models"]):
        if label not in cfg["models"]:
            raise WorkflowConfigError(
                f"config key 'switch.models[{index}]' = {label!r} is not a label under 'models' "
                f"({', '.join(cfg['models'])})"
            )
    if "linearise_after_t" in cfg["figures"] and not (cfg["switch"]["fractions"] and cfg["switch"]["models"]):
        raise WorkflowConfigError(
            "config key 'figures' lists linearise_after_t, which needs 'switch.fractions' and 'switch.models'"
        )
    interval = cfg["ntk"]["velocity_interval"]
    if interval % scan or not 0 < interval <= steps:
        raise WorkflowConfigError(
            f"config key 'ntk.velocity_interval' = {interval} must be a multiple of 'training.scan_steps' = {scan} "
            f"and at most 'training.steps' = {steps} (snapshots are taken between blocks of steps)"
        )
    for index, label in enumerate(cfg["deep_linear"]["models"]):
        if label not in cfg["models"] or cfg["models"][label]["name"] not in ("mlp", "cnn"):
            raise WorkflowConfigError(
                f"config key 'deep_linear.models[{index}]' = {label!r} must be the label of an mlp or cnn under "
                f"'models' ({', '.join(cfg['models'])})"
            )
        if twin_label(label) in cfg["models"]:
            raise WorkflowConfigError(
                f"config key 'deep_linear.models[{index}]': its twin's label {twin_label(label)!r} is already a "
                "label under 'models'"
            )
    for stage in ("gauss_newton", "kernel_regression"):
        for index, label in enumerate(cfg[stage]["models"]):
            if label not in cfg["models"]:
                raise WorkflowConfigError(
                    f"config key '{stage}.models[{index}]' = {label!r} is not a label under 'models' "
                    f"({', '.join(cfg['models'])})"
                )
    damped = cfg["gauss_newton"]
    for index, period in enumerate(damped["K"]):
        if damped["steps"] % period:
            raise WorkflowConfigError(
                f"config key 'gauss_newton.K[{index}]' = {period} must divide 'gauss_newton.steps' = "
                f"{damped['steps']}: iterative linearisation then makes exactly T/K rounds, as many as the "
                "damped method, and both run for the same time ηT"
            )
    if None not in (damped["batch_size"], damped["train_size"]) and damped["batch_size"] > damped["train_size"]:
        raise WorkflowConfigError(
            f"config key 'gauss_newton.batch_size' = {damped['batch_size']} exceeds 'gauss_newton.train_size' = "
            f"{damped['train_size']}"
        )
    for index, step in enumerate(cfg["kernel_regression"]["compare_steps"]):
        if step >= cfg["kernel_regression"]["steps"]:
            raise WorkflowConfigError(
                f"config key 'kernel_regression.compare_steps[{index}]' = {step} must lie below "
                f"'kernel_regression.steps' = {cfg['kernel_regression']['steps']} (the last step is always compared)"
            )
    for figure, stage in (("gauss_newton_damping", "gauss_newton"), ("kernel_regression", "kernel_regression")):
        if figure in cfg["figures"] and not cfg[stage]["models"]:
            raise WorkflowConfigError(f"config key 'figures' lists {figure}, which needs '{stage}.models'")
    check_sizes(cfg)


def twin_label(label):
    """Label of the deep linear twin of model ``label`` (S2): the same network with identity activations."""
    return f"{label}_linear"


def check_sizes(cfg):
    """Reject subsets of the training split larger than it, known from the dataset's options
    (``itlin.data.split_sizes``) before the data are prepared; class-balanced subsets (the NTK probe
    set, kernel regression's training set) also need enough examples of each class."""
    name = cfg["dataset"]["name"]
    try:
        sizes = datasets.split_sizes(name, cfg["dataset"]["options"])
    except datasets.DataError as error:
        raise WorkflowConfigError(f"config key 'dataset.options': {error}") from None
    subsets = {"training.batch_size": False, "training.eval_train_size": False, "ntk.probe_size": True}
    if cfg["kernel_regression"]["models"]:
        subsets["kernel_regression.train_size"] = True
    for key, balanced in subsets.items():
        section, option = key.split(".")
        size = cfg[section][option]
        if size > sizes.train:
            raise WorkflowConfigError(
                f"config key '{key}' = {size} is more than the {sizes.train} training examples of {name}"
            )
        per_class = math.ceil(size / sizes.num_classes)
        if balanced and per_class > sizes.smallest_train_class:
            raise WorkflowConfigError(
                f"config key '{key}' = {size} needs {per_class} examples of each of the {sizes.num_classes} "
                f"classes, but a class of the {name} training split may have only {sizes.smallest_train_class}"
            )


# The JSON Schema (types, ranges, known keys; integers written as integers), then what it cannot
# express; each error names the key. YAML syntax errors in a --configfile are reported by Snakemake
# before this file runs (`--verbose` shows their line).
validation.validate(config, SCHEMA)
check_config(config)


PROFILE_PLACEHOLDER = re.compile(r"\byour_\w+")
"""The placeholders of profiles/slurm (your_account, your_cpu_partition, ...) that a user replaces."""


def check_cluster_profile():
    """Refuse, before any job is submitted, a SLURM profile that still holds a placeholder (naming
    the line to edit), or a GPU config for a cluster whose partitions file lists no GPUs; run by
    `onstart`, when the executor's settings are known."""
    problems = []
    resources = workflow.resource_settings
    settings = {"default-resources": resources.default_resources or {}}
    settings |= {f"set-resources: {name}": values for name, values in resources.overwrite_resources.items()}
    for where, values in settings.items():
        for name, value in values.items():
            raw = getattr(value, "raw", value)
            if isinstance(raw, str) and PROFILE_PLACEHOLDER.search(raw):
                problems.append(f"the profile's config.yaml, {where}: {name}: {raw}")
    partition_file = getattr(workflow.executor_settings, "partition_config", None)
    if partition_file:
        lines = Path(partition_file).read_text().splitlines()
        problems += [
            f"{partition_file}, line {number}: {line.strip()}"
            for number, line in enumerate(lines, start=1)
            if PROFILE_PLACEHOLDER.search(line.partition("#")[0])
        ]
        gpus = config["resources"]["gpu"]
        partitions = (yaml.safe_load("\n".join(lines)) or {}).get("partitions") or {}
        if gpus and not any((limits or {}).get("max_gpu", 0) >= gpus for limits in partitions.values()):
            problems.append(
                f"config key 'resources.gpu' = {gpus} asks for GPUs, but no partition in {partition_file} "
                f"has 'max_gpu' >= {gpus}: add a partition with GPUs, or set resources.gpu to 0"
            )
    if problems:
        raise WorkflowConfigError(
            "the SLURM profile is not set up for this cluster; edit (README.md, 'On a SLURM cluster'):\n  "
            + "\n  ".join(problems)
        )


def schedule_name(k):
    """Path component of a re-linearisation period: K1, K10, Kinf."""
    period = k_value(k)
    return "Kinf" if math.isinf(period) else f"K{period}"


def parse_schedule(schedule):
    """(K, switch_step) of a schedule path component; a switch run trains with K = 1 until t."""
    if schedule.startswith("switch"):
        return 1, int(schedule.removeprefix("switch"))
    period = schedule.removeprefix("K")
    return (math.inf, None) if period == "inf" else (int(period), None)


def alternatives(values):
    """A regex matching exactly one of the given strings."""
    return "|".join(re.escape(str(value)) for value in values)


DATASET = config["dataset"]["name"]
RUN = "{dataset}/{model}/{schedule}/seed{seed}/{variant}"
SWEEP_SCHEDULES = [schedule_name(k) for k in config["K"]]
SWITCH_SCHEDULES = [
    f"switch{t}" for t in linearise.switch_steps(config["switch"]["fractions"], config["training"]["steps"])
]


# deep linear twin label -> the model it copies (S2's control, trained at K = 1 only)
TWINS = {twin_label(label): label for label in config["deep_linear"]["models"]}
TWIN_SCHEDULE = schedule_name(1)  # the twins train at K = 1, whether or not the K grid has it


GAUSS_NEWTON_RUN = "{dataset}/{model}/{loss}/seed{seed}"
KERNEL_REGRESSION_RUN = "{dataset}/{model}/seed{seed}"


wildcard_constraints:
    dataset=alternatives([DATASET]),
    loss=alternatives(config["gauss_newton"]["losses"]),
    model=alternatives(list(config["models"]) + list(TWINS)),
    schedule=alternatives(SWEEP_SCHEDULES + SWITCH_SCHEDULES + [TWIN_SCHEDULE]),
    seed=alternatives(config["seeds"]),
    variant=alternatives(config["variants"]),


def run_paths(models, schedules):
    """Run paths (below results/runs/) of every model x schedule x seed x variant."""
    return [
        RUN.format(dataset=DATASET, model=model, schedule=schedule, seed=seed, variant=variant)
        for model in models
        for schedule in schedules
        for seed in config["seeds"]
        for variant in config["variants"]
    ]


SWEEP_RUNS = run_paths(config["models"], SWEEP_SCHEDULES)
SWITCH_RUNS = run_paths(config["switch"]["models"], SWITCH_SCHEDULES)
TWIN_RUNS = run_paths(TWINS, [TWIN_SCHEDULE])
GAUSS_NEWTON_RUNS = [
    GAUSS_NEWTON_RUN.format(dataset=DATASET, model=model, loss=loss, seed=seed)
    for model in config["gauss_newton"]["models"]
    for loss in config["gauss_newton"]["losses"]
    for seed in config["seeds"]
]
KERNEL_REGRESSION_RUNS = [
    KERNEL_REGRESSION_RUN.format(dataset=DATASET, model=model, seed=seed)
    for model in config["kernel_regression"]["models"]
    for seed in config["seeds"]
]


def run_files(runs, name):
    """The output ``name`` (metrics.parquet, predictions.parquet) of each run."""
    return [f"results/runs/{run}/{name}" for run in runs]


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
    """The tables of the optional stages the claims read, by name (empty when the stage has no models)."""
    stages = {
        "gauss_newton": "gauss_newton",
        "gauss_newton_predictions": "gauss_newton",
        "kernel_regression": "kernel_regression",
    }
    return {
        table: f"results/tables/{table}.parquet" if config[stage]["models"] else [] for table, stage in stages.items()
    }


def model_entry(label):
    """The config entry of a model label; a deep linear twin's is its model's with ``activation: linear``."""
    if label in TWINS:
        entry = config["models"][TWINS[label]]
        return {**entry, "kwargs": {**entry["kwargs"], "activation": "linear"}}
    return config["models"][label]


def model_spec(label):
    """The model mapping of a run config (``label``, ``name`` and the kwargs, sorted) for a model label."""
    model = model_entry(label)
    return {"label": label, "name": model["name"], **dict(sorted(model["kwargs"].items()))}


def library_source(module):
    """Source file of an itlin module: an input of the rules that only format results, so that
    restyling a figure or changing a claim's rule reruns that rule and no training."""
    return str(Path(workflow.basedir) / "src" / "itlin" / f"{module}.py")


def dataset_options(wildcards):
    """The config's dataset options as `--option key=value` arguments of `itlin prepare`; each value
    in JSON (which `itlin prepare` reads as YAML), so a string stays a string (an MD5 of digits)."""
    return " ".join(
        f"--option {shlex.quote(f'{key}={json.dumps(value)}')}" for key, value in config["dataset"]["options"].items()
    )


def run_settings(wildcards):
    """The complete run config of one run (the `itlin train --config` format), every key explicit.

    Nested mappings are sorted, so reordering keys in a config file reruns nothing."""
    training = config["training"]
    K, switch_step = parse_schedule(wildcards.schedule)
    return {
        "data": f"resources/data/{wildcards.dataset}.npz",
        "dataset": wildcards.dataset,
        "model": model_spec(wildcards.model),
        "K": K,
        "switch_step": switch_step,
        "seed": int(wildcards.seed),
        "variant": wildcards.variant,
        "steps": training["steps"],
        "batch_size": training["batch_size"],
        "optimizer": dict(sorted(training["optimizer"].items())),
        "loss": training["loss"],
        "augment": config["variants"][wildcards.variant]["augment"],
        "reset_optimizer": training["reset_optimizer"],
        "proximal_damping": training["proximal_damping"],
        "eval_every": training["eval_every"],
        "eval_train_size": training["eval_train_size"],
        "scan_steps": training["scan_steps"],
        "num_snapshots": training["num_snapshots"],
        "velocity_interval": config["ntk"]["velocity_interval"],
        "checkpoint_every": training["checkpoint_every"],
    }


def grows_with_attempt(amount):
    """A job resource that a retried job (after a time-out or an out-of-memory kill) gets
    ``attempt`` times of; ``amount`` is a number or a function of the wildcards."""
    return lambda wildcards, attempt: attempt * (amount(wildcards) if callable(amount) else amount)


def train_mem_mb(wildcards):
    """Memory of one training job, per model label."""
    return model_entry(wildcards.model)["mem_mb"]


def train_runtime_minutes(wildcards):
    """Wall-time limit of one training job: a fixed overhead plus the model's cost per step."""
    per_thousand = model_entry(wildcards.model)["minutes_per_1000_steps"]
    steps = config["training"]["steps"]
    return math.ceil(config["resources"]["runtime_overhead_minutes"] + per_thousand * steps / 1000)
