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

from snakemake.utils import validate


class WorkflowConfigError(ValueError):
    """A config value the JSON Schema accepts but the workflow cannot run."""


def k_value(k):
    """The period K as the run config wants it: an int >= 1, or float inf (never re-linearise)."""
    if isinstance(k, str) or math.isinf(k):
        return math.inf
    return int(k)


def damping_name(value):
    """Path component of a damping λ: its shortest decimal form (0.1, 3, 1e-05)."""
    return f"{value:g}"


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
    for index, t in enumerate(cfg["switch"]["steps"]):
        if not 0 < t < steps:
            raise WorkflowConfigError(
                f"config key 'switch.steps[{index}]' = {t} must lie strictly between 0 and "
                f"'training.steps' = {steps}"
            )
    for index, label in enumerate(cfg["switch"]["models"]):
        if label not in cfg["models"]:
            raise WorkflowConfigError(
                f"config key 'switch.models[{index}]' = {label!r} is not a label under 'models' "
                f"({', '.join(cfg['models'])})"
            )
    if "linearise_after_t" in cfg["figures"] and not (cfg["switch"]["steps"] and cfg["switch"]["models"]):
        raise WorkflowConfigError(
            "config key 'figures' lists linearise_after_t, which needs 'switch.steps' and 'switch.models'"
        )
    for stage in ("gauss_newton", "kernel_regression"):
        for index, label in enumerate(cfg[stage]["models"]):
            if label not in cfg["models"]:
                raise WorkflowConfigError(
                    f"config key '{stage}.models[{index}]' = {label!r} is not a label under 'models' "
                    f"({', '.join(cfg['models'])})"
                )
    names = [damping_name(value) for value in cfg["gauss_newton"]["damping"]]
    if len(set(names)) != len(names):
        raise WorkflowConfigError(f"config key 'gauss_newton.damping' lists a value twice: {names}")
    for index, value in enumerate(cfg["gauss_newton"]["damping"]):
        if value * cfg["gauss_newton"]["time"] > steps:
            raise WorkflowConfigError(
                f"config key 'gauss_newton.damping[{index}]' = {value} needs {value} x 'gauss_newton.time' outer "
                f"steps, more than the K = 1 run's 'training.steps' = {steps}: lower it or the time"
            )
    for figure, stage in (("gauss_newton_damping", "gauss_newton"), ("kernel_regression", "kernel_regression")):
        if figure in cfg["figures"] and not cfg[stage]["models"]:
            raise WorkflowConfigError(f"config key 'figures' lists {figure}, which needs '{stage}.models'")


validate(config, schema="../schemas/config.schema.yaml", set_default=False)
check_config(config)


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
SWITCH_SCHEDULES = [f"switch{t}" for t in config["switch"]["steps"]]


DAMPINGS = {damping_name(value): value for value in config["gauss_newton"]["damping"]}
GAUSS_NEWTON_RUN = "{dataset}/{model}/lambda{damping}/seed{seed}"
KERNEL_REGRESSION_RUN = "{dataset}/{model}/seed{seed}"


wildcard_constraints:
    dataset=alternatives([DATASET]),
    damping=alternatives(DAMPINGS),
    model=alternatives(config["models"]),
    schedule=alternatives(SWEEP_SCHEDULES + SWITCH_SCHEDULES),
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
GAUSS_NEWTON_RUNS = [
    GAUSS_NEWTON_RUN.format(dataset=DATASET, model=model, damping=damping, seed=seed)
    for model in config["gauss_newton"]["models"]
    for damping in DAMPINGS
    for seed in config["seeds"]
]
KERNEL_REGRESSION_RUNS = [
    KERNEL_REGRESSION_RUN.format(dataset=DATASET, model=model, seed=seed)
    for model in config["kernel_regression"]["models"]
    for seed in config["seeds"]
]


def metrics_files(runs):
    """The metrics table of each run."""
    return [f"results/runs/{run}/metrics.parquet" for run in runs]


def all_targets():
    """What the default target builds: the tables, every configured figure, the claims."""
    targets = ["results/tables/metrics.parquet", "results/tables/ntk.parquet", "results/claims.md"]
    targets += [table for table in measurement_tables().values() if table]
    for name in config["figures"]:
        targets += [f"figures/{name}.pdf", f"figures/{name}.png"]
    return targets


def measurement_tables():
    """The tables of the optional stages the claims read, by name (empty when the stage has no models)."""
    return {
        stage: f"results/tables/{stage}.parquet" if config[stage]["models"] else []
        for stage in ("gauss_newton", "kernel_regression")
    }


def model_spec(label):
    """The model mapping of a run config (``label``, ``name`` and the kwargs, sorted) for a model label."""
    model = config["models"][label]
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
        "checkpoint_every": training["checkpoint_every"],
    }


def grows_with_attempt(amount):
    """A job resource that a retried job (after a time-out or an out-of-memory kill) gets
    ``attempt`` times of; ``amount`` is a number or a function of the wildcards."""
    return lambda wildcards, attempt: attempt * (amount(wildcards) if callable(amount) else amount)


def train_mem_mb(wildcards):
    """Memory of one training job, per model label."""
    return config["models"][wildcards.model]["mem_mb"]


def train_runtime_minutes(wildcards):
    """Wall-time limit of one training job: a fixed overhead plus the model's cost per step."""
    per_thousand = config["models"][wildcards.model]["minutes_per_1000_steps"]
    steps = config["training"]["steps"]
    return math.ceil(config["resources"]["runtime_overhead_minutes"] + per_thousand * steps / 1000)
