"""The workflow's logic, importable and testable without Snakemake: the checks of a workflow config,
the run grid (which runs a config makes and how each is named), the run config of each run, the
source files each rule runs, and the check of a SLURM profile. ``workflow/rules/common.smk`` wires
these into the rules.

A run is named by its path, which carries every experiment axis:
``{dataset}/{model}/{schedule}/seed{seed}/{variant}``, where ``schedule`` is ``K<k>`` for a
re-linearisation period (``Kinf``: linearised training, never re-linearise) or ``switch<t>`` for a
C4 run (standard training until step t, then linearised at θ_t to the end); the schedule is named
and parsed by ``itlin.record``. A training job (and an NTK job) is ``{dataset}/{model}/{schedule}/{variant}``:
every seed of the run, as lanes of one program. A C5 job is ``{dataset}/{model}/{loss}/seed{seed}``, a C6 job
``{dataset}/{model}/seed{seed}``. The companion's runs (S1–S5, its own regime: ``companion``) are training runs
of the variant ``companion``, at K = 1. The width sweep's runs (C7) are training runs of model ``<model>_w<width>``
and variant ``width_<regime>``; one job (``WIDTH_JOB``) trains every K and seed of a (model, width, regime) as lanes.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import math
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import yaml

from itlin import data, record, validation

RUN = "{dataset}/{model}/{schedule}/seed{seed}/{variant}"
GAUSS_NEWTON_RUN = "{dataset}/{model}/{loss}/seed{seed}"
KERNEL_REGRESSION_RUN = "{dataset}/{model}/seed{seed}"
"""Run paths: of a training run (below results/runs/), a C5 job and a C6 job."""
TRAINING_JOB = "{dataset}/{model}/{schedule}/{variant}"
"""The name of a training job (and of the NTK job measuring its runs): the runs of every seed."""
WIDTH_JOB = "{dataset}/{model}/{variant}"
"""The name of a training job of the width sweep: the runs of every K and seed of one model, width and regime."""
NTK_JOB = "{dataset}/{model}/{variant}"
"""The name of an NTK job: every measured run of one model and variant (the K sweep's: every K and seed; the
companion's and a width sweep model's: K = 1, every seed), its kernel programs compiled once."""
PACKAGE = Path(__file__).parent
PACKAGE_PATH = Path("src") / "itlin"
"""The itlin sources, here and relative to the repository root."""
COMPANION = "companion"
"""The variant of the companion's runs: its regime (full-batch gradient descent on squared loss, ``companion.training``)
in place of the main paper's ``training``, at K = 1, each model with its constant step."""
COMPANION_FIGURES = ("kernel_alignment", "kernel_specialisation", "loss_phases", "eigenfunction_alignment")
"""The figures of the companion's claims (S1-S4), drawn from its runs: a config that lists one needs them."""
PROFILE_PLACEHOLDER = re.compile(r"\byour_\w+")
"""The placeholders of profiles/slurm (your_account, your_cpu_partition, ...) that a user replaces."""


class WorkflowConfigError(ValueError):
    """A config value the JSON Schema accepts but the workflow cannot run."""


def validate(cfg: dict, schema_path: Path) -> None:
    """Reject an invalid workflow config, naming the key: the JSON Schema at ``schema_path`` (types,
    ranges, known keys; integers written as integers), then what it cannot express: each count of examples
    against the data (``check_sizes``), then the keys against each other (``check_config``)."""
    validation.validate(cfg, schema_path)
    check_sizes(cfg, schema_path)
    check_config(cfg)


def check_config(cfg: dict) -> None:
    """Reject, naming the key, values the JSON Schema cannot rule out, before any job runs."""
    training = cfg["training"]
    steps = training["steps"]
    check_training(cfg, training)
    check_auto_rate(training, training["optimizer"]["learning_rate"], "training.optimizer.learning_rate",
                    augment=any(variant["augment"] for variant in cfg["variants"].values()))
    distinct_periods(cfg["K"], "K")
    switch_steps = record.switch_steps(cfg["switch"]["fractions"], steps)
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
    check_companion(cfg)
    check_width(cfg)
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
    for figure, stage in (("gauss_newton_damping", "gauss_newton"), ("kernel_regression", "kernel_regression"),
                          *((name, "companion") for name in COMPANION_FIGURES)):
        if figure in cfg["figures"] and not cfg[stage]["models"]:
            raise WorkflowConfigError(f"config key 'figures' lists {figure}, which needs '{stage}.models'")
    if "width_scaling" in cfg["figures"] and not width_labels(cfg):
        raise WorkflowConfigError("config key 'figures' lists width_scaling, which needs 'width.models' and 'width.widths'")


def distinct_periods(values: list, key: str) -> list[float]:
    """The periods K of the config key ``key`` (``values``), parsed; rejected, naming the key, if one comes twice."""
    periods = [record.parse_K(value) for value in values]
    if len(set(periods)) != len(periods):
        raise WorkflowConfigError(f"config key '{key}' lists a period twice: {values}")
    return periods


EXAMPLE_COUNTS = ("split", "train", "train-balanced", "none")
"""How the data bound a key that counts examples, its ``x-examples`` in the config schema: ``split`` sizes a
split of the dataset (``itlin.data.split_sizes`` checks it), ``train`` is a subset of the training split,
``train-balanced`` a class-balanced one; ``none``, no bound (a chunk of the probe set, an image's side)."""


def count_keys(schema_path: Path) -> list[validation.SchemaKey]:
    """The keys of the workflow config schema at ``schema_path`` that count examples (``x-examples``)."""
    keys = [key for key in validation.schema_keys(schema_path) if "x-examples" in key.schema]
    for key in keys:
        if key.schema["x-examples"] not in EXAMPLE_COUNTS:
            raise ValueError(f"{schema_path}: {key.key} has x-examples {key.schema['x-examples']!r}, not one of "
                             f"{EXAMPLE_COUNTS}")
    return keys


def config_values(cfg: dict, key: str) -> list[tuple[str, object]]:
    """(the key, its value) of each value of a dotted schema key in ``cfg`` (``*``: under every name)."""
    found = [("", cfg)]
    for part in key.split("."):
        found = [(f"{path}.{name}" if path else name, value[name]) for path, value in found if isinstance(value, dict)
                 for name in (value if part == "*" else [part] if part in value else [])]
    return found


def check_companion(cfg: dict) -> None:
    """Reject, naming the key, a companion section whose labels clash with other models' or whose training
    settings (``training`` with ``companion.training`` over it) its run configs would refuse."""
    if COMPANION in cfg["variants"]:
        raise WorkflowConfigError(f"config key 'variants.{COMPANION}': the name is the companion's runs' variant")
    for label, entry in cfg["companion"]["models"].items():
        if entry["name"] not in ("mlp", "cnn"):
            raise WorkflowConfigError(f"config key 'companion.models.{label}.name' = {entry['name']!r} must be mlp or "
                                      "cnn (each gets a deep linear twin)")
        for name in (label, twin_label(label)):
            if name in cfg["models"] or (name != label and name in cfg["companion"]["models"]):
                raise WorkflowConfigError(f"config key 'companion.models.{label}': the label {name!r} is taken "
                                          "(under 'models', or by a deep linear twin)")
    if not cfg["companion"]["models"]:
        return
    check_training(cfg, companion_training(cfg, next(iter(cfg["companion"]["models"]))), "companion.training",
                   cfg["companion"]["training"])
    training = companion_training(cfg)
    for label, entry in cfg["companion"]["models"].items():
        for key in ("learning_rate", "twin_learning_rate"):
            check_auto_rate(training, entry[key], f"companion.models.{label}.{key}")


def check_auto_rate(training: dict, rate, key: str, augment: bool = False) -> None:
    """Reject, naming the config key ``key``, a step ``rate`` of ``auto`` under training settings its rule does
    not apply to (``record.auto_rate_problem``; ``augment``: some of the runs augment their batches)."""
    if rate != record.AUTO_RATE:
        return
    problem = record.auto_rate_problem(training["optimizer"], training["loss"], training["batch_size"],
                                       training.get("train_size"), augment)
    if problem:
        raise WorkflowConfigError(f"config key '{key}' = auto: {problem}")


def check_training(cfg: dict, training: dict, section: str | None = None, overrides: dict | None = None) -> None:
    """Reject, naming the config key that sets it, a value of training settings (``training``: the config's own,
    or a regime's: ``training`` with ``overrides``, the keys under ``section``, over it) that its run configs would
    refuse: the run config schema (a regime's), the subsets inside ``train_size``, and the steps counted in blocks
    of ``scan_steps``, the NTK's velocity interval among them (and, for the config's own, within its runs)."""
    def key(name: str) -> str:
        return f"{section}.{name}" if section and name in (overrides or {}) else f"training.{name}"

    if section:
        try:
            validation.validate(training, record.TRAINING_SCHEMA, what="run config key")
        except ValueError as error:
            raise WorkflowConfigError(f"config key '{section}': {error}") from None
    for name in ("batch_size", "eval_train_size"):
        if training.get("train_size") is not None and training[name] > training["train_size"]:
            raise WorkflowConfigError(f"config key '{key(name)}' = {training[name]} exceeds '{key('train_size')}' = "
                                      f"{training['train_size']}, the examples each run trains on")
    scan, steps = training["scan_steps"], training["steps"]
    for name in ("steps", "eval_every", "checkpoint_every"):
        if training[name] % scan:
            raise WorkflowConfigError(f"config key '{key(name)}' = {training[name]} must be a multiple of "
                                      f"'{key('scan_steps')}' = {scan}")
    interval = cfg["ntk"]["velocity_interval"]
    if interval % scan:
        raise WorkflowConfigError(f"config key 'ntk.velocity_interval' = {interval} must be a multiple of "
                                  f"'{key('scan_steps')}' = {scan} (snapshots are taken between blocks of steps)")
    if section is None and not 0 < interval <= steps:
        raise WorkflowConfigError(f"config key 'ntk.velocity_interval' = {interval} must be at most 'training.steps' = "
                                  f"{steps}: the kernel velocity needs snapshot pairs (t, t + δ) within the runs")


def companion_training(cfg: dict, label: str | None = None) -> dict:
    """The training settings of the companion's runs of model ``label``: ``training`` with ``companion.training``
    over it, and the model's own constant step (its ``learning_rate``; a twin's, its ``twin_learning_rate``)."""
    training = {**cfg["training"], **cfg["companion"]["training"]}
    if label is not None:
        rate = companion_learning_rate(cfg, label)
        training["optimizer"] = {**training["optimizer"], "learning_rate": rate}
    return training


def companion_learning_rate(cfg: dict, label: str) -> float | str:
    """The constant step of a companion model, or of a companion model's deep linear twin (a number, or
    ``auto``: set by the training job, ``record.AUTO_RATE``)."""
    models = cfg["companion"]["models"]
    if label in models:
        return models[label]["learning_rate"]
    return models[twins(cfg)[label]]["twin_learning_rate"]


def width_labels(cfg: dict) -> dict[str, tuple[str, int]]:
    """Each width sweep label -> (its model under ``width.models``, its width)."""
    return {record.width_label(model, width): (model, width) for model in cfg["width"]["models"]
            for width in cfg["width"]["widths"]}


def width_variants(cfg: dict) -> dict[str, str]:
    """Each width sweep variant -> its regime (under ``width.regimes``)."""
    return {record.width_variant(regime): regime for regime in cfg["width"]["regimes"]}


def width_schedules(cfg: dict) -> list[str]:
    """The schedules of a width sweep job's runs (one per K of ``width.K``), in its lanes' order."""
    return [record.schedule_name(K) for K in cfg["width"]["K"]]


def width_training(cfg: dict, variant: str) -> dict:
    """The training settings of the width sweep's runs of ``variant``: ``training`` with its regime's over it."""
    return {**cfg["training"], **cfg["width"]["regimes"][width_variants(cfg)[variant]]["training"]}


def regime_training(cfg: dict, model: str, variant: str) -> dict:
    """The training settings of a run of ``model`` and ``variant``: the companion's, a width regime's, or ``training``."""
    if variant == COMPANION:
        return companion_training(cfg, model)
    if variant in width_variants(cfg):
        return width_training(cfg, variant)
    return cfg["training"]


def check_width(cfg: dict) -> None:
    """Reject, naming the key, a width section whose labels or variants clash with others, or whose regimes'
    training settings (``training`` with the regime's over it) its run configs would refuse."""
    section = cfg["width"]
    taken = {*cfg["models"], *cfg["companion"]["models"], *twins(cfg)}
    for label, (model, width) in width_labels(cfg).items():
        if label in taken:
            raise WorkflowConfigError(f"config key 'width.models.{model}': its label at width {width}, {label!r}, is "
                                      "taken (under 'models' or 'companion.models')")
    prefix = record.width_variant("")
    for variant in cfg["variants"]:
        if variant.startswith(prefix):
            raise WorkflowConfigError(f"config key 'variants.{variant}': names starting {prefix!r} are the width "
                                      "sweep's variants")
    periods = distinct_periods(section["K"], "width.K")
    if not (section["models"] and section["widths"]):
        return
    for needed, why in ((1.0, "the kernel's change (C7)"), (float("inf"), "the K = 1 minus K = ∞ gap")):
        if needed not in periods:
            raise WorkflowConfigError(f"config key 'width.K' = {section['K']} must list {record.format_K(needed)}: "
                                      f"{why} needs it")
    if cfg["claims"]["C7"]["theory_regime"] not in section["regimes"]:
        raise WorkflowConfigError(f"config key 'claims.C7.theory_regime' = {cfg['claims']['C7']['theory_regime']!r} "
                                  f"is not a regime under 'width.regimes' ({', '.join(section['regimes'])})")
    for variant, regime in width_variants(cfg).items():
        check_training(cfg, width_training(cfg, variant), f"width.regimes.{regime}.training",
                       cfg["width"]["regimes"][regime]["training"])


def check_sizes(cfg: dict, schema_path: Path) -> None:
    """Reject, before the data are prepared, every key that counts examples (``count_keys``) beyond what the
    dataset's options give (``itlin.data.split_sizes``): a split without every class, a subset larger than the
    training split, a class-balanced subset needing more examples of a class than it may have. A stage that
    runs no job (``models`` empty: C5, C6) is not checked: its sizes are never used."""
    name = cfg["dataset"]["name"]
    try:
        sizes = data.split_sizes(name, cfg["dataset"]["options"])
    except data.DataError as error:
        key = f"dataset.options.{error.option}" if error.option else "dataset.options"
        raise WorkflowConfigError(f"config key '{key}': {error}") from None
    for count in count_keys(schema_path):
        if count.schema["x-examples"] not in ("train", "train-balanced"):
            continue  # split: split_sizes checked it above; none: nothing to check
        for key, size in config_values(cfg, count.key):
            section = cfg[key.split(".")[0]]
            if size is None or (isinstance(section, dict) and section.get("models") == []):
                continue  # the whole training split; a stage that runs no job
            if size > sizes.train:
                raise WorkflowConfigError(
                    f"config key '{key}' = {size} is more than the {sizes.train} training examples of {name}"
                )
            per_class = math.ceil(size / sizes.num_classes)
            if count.schema["x-examples"] == "train-balanced" and per_class > sizes.smallest_train_class:
                raise WorkflowConfigError(
                    f"config key '{key}' = {size} needs {per_class} examples of each of the {sizes.num_classes} "
                    f"classes, but a class of the {name} training split may have only {sizes.smallest_train_class}"
                )


def check_cluster_profile(default_resources: Mapping, overwrite_resources: Mapping[str, Mapping],
                          partition_file: str | Path | None, gpus: int) -> None:
    """Refuse, before any job is submitted, a SLURM profile that still holds a placeholder (naming the
    line to edit), or a GPU config (``gpus`` > 0) for a cluster whose partitions file lists no GPUs.
    Takes the executor's settings: the profile's default resources, its resources per rule, and the
    plugin's partitions file (None without one)."""
    problems = []
    settings = {"default-resources": default_resources}
    settings |= {f"set-resources: {name}": values for name, values in overwrite_resources.items()}
    for where, values in settings.items():
        for name, value in values.items():
            raw = getattr(value, "raw", value)  # Snakemake's resource objects keep the profile's text in `raw`
            if isinstance(raw, str) and PROFILE_PLACEHOLDER.search(raw):
                problems.append(f"the profile's config.yaml, {where}: {name}: {raw}")
    if partition_file:
        lines = Path(partition_file).read_text().splitlines()
        problems += [
            f"{partition_file}, line {number}: {line.strip()}"
            for number, line in enumerate(lines, start=1)
            if PROFILE_PLACEHOLDER.search(line.partition("#")[0])
        ]
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


def twin_label(label: str) -> str:
    """Label of the deep linear twin of model ``label`` (S2): the same network with identity activations."""
    return f"{label}_linear"


def twins(cfg: dict) -> dict[str, str]:
    """Deep linear twin label -> the companion model it copies (S2's and S5's control, trained as it is)."""
    return {twin_label(label): label for label in cfg["companion"]["models"]}


def model_entry(cfg: dict, label: str) -> dict:
    """The config entry of a model label (under ``models`` or ``companion.models``); a deep linear twin's is its
    model's with ``activation: linear``."""
    copied = twins(cfg).get(label)
    if copied:
        entry = cfg["companion"]["models"][copied]
        return {**entry, "kwargs": {**entry["kwargs"], "activation": "linear"}}
    if label in width_labels(cfg):
        model, width = width_labels(cfg)[label]
        entry = cfg["width"]["models"][model]
        return {**entry, "kwargs": {**entry["kwargs"], "width": width}}
    return cfg["models"][label] if label in cfg["models"] else cfg["companion"]["models"][label]


def model_spec(cfg: dict, label: str, variant: str | None = None) -> dict:
    """The model mapping of a run config (``label``, ``name`` and the kwargs, sorted) for a model label; a width
    sweep variant adds its regime's parameterisation."""
    model = model_entry(cfg, label)
    kwargs = dict(model["kwargs"])
    if variant in width_variants(cfg):
        kwargs["parameterisation"] = cfg["width"]["regimes"][width_variants(cfg)[variant]]["parameterisation"]
    return {"label": label, "name": model["name"], **dict(sorted(kwargs.items()))}


class RunGrid(NamedTuple):
    """Every run of a config, by stage, as run paths, in the order the tables list them; and the schedule
    path components the training runs use."""

    sweep: list[str]  # every model x K x seed x variant
    switch: list[str]  # C4: the switch models x switch steps x seed x variant
    companion: list[str]  # S1-S5: the companion's models and their deep linear twins, at K = 1, x seed
    width: list[str]  # C7: the width sweep's models x widths x regimes x K x seed
    gauss_newton: list[str]  # C5: model x loss x seed
    kernel_regression: list[str]  # C6: model x seed
    schedules: list[str]  # K1, Kinf, switch300, ...: every schedule of the training runs


def run_grid(cfg: dict) -> RunGrid:
    """The runs of a workflow config: what the rules build, the job counts of ``snakemake -n``."""
    dataset, seeds = cfg["dataset"]["name"], cfg["seeds"]

    def runs(models, schedules) -> list[str]:
        return [run_path(dataset=dataset, model=model, schedule=schedule, seed=seed, variant=variant)
                for model in models for schedule in schedules for seed in seeds for variant in cfg["variants"]]

    sweep_schedules = [record.schedule_name(K) for K in cfg["K"]]
    switch_schedules = [record.schedule_name(1, switch_step=t)
                        for t in record.switch_steps(cfg["switch"]["fractions"], cfg["training"]["steps"])]
    companion_schedule = record.schedule_name(1)  # the companion trains at K = 1, whether or not the K grid has it
    companion = [run_path(dataset=dataset, model=model, schedule=companion_schedule, seed=seed, variant=COMPANION)
                 for model in [*cfg["companion"]["models"], *twins(cfg)] for seed in seeds]
    width = [run for model in width_labels(cfg) for variant in width_variants(cfg)
             for run in job_runs(cfg, dict(dataset=dataset, model=model, variant=variant))]
    return RunGrid(
        sweep=runs(cfg["models"], sweep_schedules),
        switch=runs(cfg["switch"]["models"], switch_schedules),
        companion=companion,
        width=width,
        gauss_newton=[run_path(dataset=dataset, model=model, loss=loss, seed=seed)
                      for model in cfg["gauss_newton"]["models"] for loss in cfg["gauss_newton"]["losses"]
                      for seed in seeds],
        kernel_regression=[run_path(dataset=dataset, model=model, seed=seed)
                           for model in cfg["kernel_regression"]["models"] for seed in seeds],
        schedules=list(dict.fromkeys(sweep_schedules + switch_schedules + ([companion_schedule] if companion else [])
                                     + (width_schedules(cfg) if width else []))),
    )


def job_runs(cfg: dict, wildcards: Mapping[str, str]) -> list[str]:
    """The run paths of the training job named by ``wildcards`` (``TRAINING_JOB``'s): one per seed, in the
    config's order (the job's lanes); of a width sweep job (``WIDTH_JOB``'s), one per K of ``width.K`` and seed."""
    wildcards = dict(wildcards)
    if "schedule" in wildcards:
        return [run_path(**wildcards, seed=seed) for seed in cfg["seeds"]]
    return [run_path(**wildcards, schedule=schedule, seed=seed)
            for schedule in width_schedules(cfg) for seed in cfg["seeds"]]


def ntk_schedules(cfg: dict, variant: str) -> list[str]:
    """The schedules the NTK stage measures of a variant's runs: every K of the sweep (no switch runs); K = 1 of
    the companion's and the width sweep's."""
    return [record.schedule_name(K) for K in cfg["K"]] if variant in cfg["variants"] else [record.schedule_name(1)]


def ntk_job_runs(cfg: dict, wildcards: Mapping[str, str]) -> list[str]:
    """The run paths the NTK job named by ``wildcards`` (``NTK_JOB``'s) measures, schedule by schedule, each seed."""
    wildcards = dict(wildcards)
    return [run_path(**wildcards, schedule=schedule, seed=seed)
            for schedule in ntk_schedules(cfg, wildcards["variant"]) for seed in cfg["seeds"]]


def training_job(run: str) -> str:
    """The name of the training job (``TRAINING_JOB``; a width sweep run's, ``WIDTH_JOB``) that trains the run at
    path ``run``: its logs, benchmark and scratch folder are named by it."""
    wildcards = run_wildcards(run)
    pattern = WIDTH_JOB if wildcards["variant"].startswith(record.width_variant("")) else TRAINING_JOB
    return pattern.format(**{key: wildcards[key] for key in _fields(pattern)})


def _fields(pattern: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", pattern)


def run_path(**wildcards) -> str:
    """The path of a run from its wildcards: a training run's (dataset, model, schedule, seed, variant),
    a C5 job's (dataset, model, loss, seed) or a C6 job's (dataset, model, seed)."""
    for pattern in (RUN, GAUSS_NEWTON_RUN, KERNEL_REGRESSION_RUN):
        if set(_fields(pattern)) == set(wildcards):
            return pattern.format(**wildcards)
    raise ValueError(f"no run is named by the wildcards {sorted(wildcards)}")


def run_wildcards(path: str) -> dict[str, str]:
    """The wildcards of a run path (the inverse of ``run_path``), as Snakemake gives them: text."""
    for pattern in (RUN, GAUSS_NEWTON_RUN, KERNEL_REGRESSION_RUN):
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern))
        if match := re.fullmatch(regex, path):
            return match.groupdict()
    raise ValueError(f"{path!r} is not a run path ({RUN}, {GAUSS_NEWTON_RUN} or {KERNEL_REGRESSION_RUN})")


def alternatives(values) -> str:
    """A regex matching exactly one of the given strings (none: a regex that matches nothing)."""
    return "|".join(re.escape(str(value)) for value in values) or "(?!)"


def wildcard_patterns(cfg: dict) -> dict[str, str]:
    """The value of each wildcard a config's runs can take, as a regex: a path of any other run matches no rule."""
    return {
        "dataset": alternatives([cfg["dataset"]["name"]]),
        "loss": alternatives(cfg["gauss_newton"]["losses"]),
        "model": alternatives([*cfg["models"], *cfg["companion"]["models"], *twins(cfg), *width_labels(cfg)]),
        "schedule": alternatives(run_grid(cfg).schedules),
        "seed": alternatives(cfg["seeds"]),
        "variant": alternatives([*cfg["variants"], *([COMPANION] if cfg["companion"]["models"] else []),
                                 *(width_variants(cfg) if width_labels(cfg) else [])]),
    }


def run_config(cfg: dict, wildcards: Mapping[str, str]) -> dict:
    """The complete run config of one training run (the `itlin train --config` format), every key of
    ``itlin.record.RunConfig`` explicit: the run's own keys (``record.IDENTITY_KEYS``) from its wildcards,
    the variant and the NTK section, every other key from the config's ``training`` section (its default
    where the section leaves it out; for the companion's and the width sweep's runs, ``regime_training``), so a new run setting
    needs no edit here.

    Nested mappings are sorted, so reordering keys in a config file reruns nothing."""
    K, switch_step = record.parse_schedule(wildcards["schedule"])
    identity = {
        "data": f"resources/data/{wildcards['dataset']}.npz",  # the prepare_data rule's output
        "dataset": wildcards["dataset"],
        "model": model_spec(cfg, wildcards["model"], wildcards["variant"]),
        "K": K if math.isinf(K) else int(K),  # as run configs have always been written: an integer or .inf
        "switch_step": switch_step,
        "seed": int(wildcards["seed"]),
        "variant": wildcards["variant"],
        "augment": wildcards["variant"] in cfg["variants"] and cfg["variants"][wildcards["variant"]]["augment"],
        "velocity_interval": cfg["ntk"]["velocity_interval"],
    }
    settings = regime_training(cfg, wildcards["model"], wildcards["variant"])
    training = {key: dict(sorted(value.items())) if isinstance(value, dict) else value
                for key, value in settings.items()}
    return {field.name: identity[field.name] if field.name in identity else training.get(field.name, field.default)
            for field in dataclasses.fields(record.RunConfig)}


def run_config_yaml(cfg: dict, wildcards: Mapping[str, str]) -> str:
    """``run_config`` as its file ``results/runs/{run}/config.yaml`` holds it (keys in ``RunConfig``'s order)."""
    return yaml.safe_dump(run_config(cfg, wildcards), sort_keys=False)


def dataset_options(cfg: dict) -> str:
    """The config's dataset options as `--option key=value` arguments of `itlin prepare`; each value
    in JSON (which `itlin prepare` reads as YAML), so a string stays a string (an MD5 of digits)."""
    return " ".join(
        f"--option {shlex.quote(f'{key}={json.dumps(value)}')}" for key, value in cfg["dataset"]["options"].items()
    )


def _module_files(name: str) -> list[Path]:
    """The files of the top-level itlin module ``name``: its .py file, or every file of its package."""
    single = PACKAGE / f"{name}.py"
    if single.is_file():
        return [single]
    return sorted((PACKAGE / name).rglob("*.py")) if (PACKAGE / name).is_dir() else []


@functools.cache
def _imported_modules(path: Path) -> frozenset[str]:
    """The top-level itlin modules the source file ``path`` imports, anywhere in it (in a function too);
    each file is parsed once, however many rules list its code."""
    package = list(path.parent.relative_to(PACKAGE).parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ["itlin", *package[: len(package) - node.level + 1]] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            names = [module + [alias.name] for alias in node.names]
        else:
            continue
        found |= {parts[1] for parts in names if parts[0] == "itlin" and len(parts) > 1}
    return frozenset(found)


def source_files(*modules: str) -> list[str]:
    """The source files, relative to the repository root (``src/itlin/plots.py``; every file of a package),
    of the named itlin modules and of every itlin module they import, transitively: the code a rule runs,
    so that changing it reruns the rule."""
    files, pending, seen = set(), list(modules), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        found = _module_files(name)
        if not found and name in modules:
            raise ValueError(f"itlin has no module {name!r} (no {PACKAGE_PATH / name}.py or package)")
        for path in found:
            files.add(str(PACKAGE_PATH / path.relative_to(PACKAGE)))
            pending += _imported_modules(path)
    return sorted(files)
