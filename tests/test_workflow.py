"""Workflow tests: the workflow's logic (itlin.workflow: config checks, the run grid, run configs, code
inputs, the profile check) in process; lint, the DAG of every config, and the tiny config end to end with
its incremental reruns. Each Snakemake test runs on a copy of the workflow in a temporary folder, so the
repository never gets a .snakemake/ or results/ of its own."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pandas as pd
import psutil  # a dependency of Snakemake's
import pytest
import yaml
from conftest import copy_workflow

from itlin import data, record, validation, workflow

ROOT = Path(__file__).resolve().parents[1]
CLAIM_IDS = ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "S1", "S2", "S3", "S4", "S5"]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
TEST_CONFIG = ("--configfile", "config/test.yaml")
FIGURES = ["training_curves", "accuracy_vs_feature_updates", "network_vs_linearised", "linearise_after_t",
           "ntk_distance", "kernel_alignment", "kernel_specialisation", "loss_phases", "eigenfunction_alignment",
           "width_scaling", "gauss_newton_damping", "kernel_regression"]


def report_results(report: Path) -> dict[str, dict]:
    """The results a Snakemake HTML report embeds, by path: name, mime type, caption, data URI."""
    match = re.search(r"^\s*var results = (\{.*\});$", report.read_text(), flags=re.MULTILINE)
    assert match, f"{report}: no embedded results"
    return json.loads(match.group(1))


def report_landing_text(report: Path) -> str:
    """The text of a Snakemake HTML report's landing page (workflow/report/workflow.rst, rendered)."""
    match = re.search(r"^\s*var workflow_desc = (\".*\");$", report.read_text(), flags=re.MULTILINE)
    assert match, f"{report}: no landing text"
    return " ".join(json.loads(match.group(1)).split())


def load_config(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def snakemake_environment() -> dict[str, str]:
    """The environment of a Snakemake of this interpreter: on the CPU, its jobs calling the same interpreter's itlin."""
    return dict(os.environ, JAX_PLATFORMS="cpu", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def snakemake(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run Snakemake (of this interpreter) in ``workdir``; jobs call the same interpreter's itlin."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=workdir, env=snakemake_environment(), capture_output=True,
        text=True, timeout=timeout,
    )


def planned_jobs(workdir: Path, *args: str) -> tuple[dict[str, int], str]:
    """Rule -> number of jobs of a dry run (empty when there is nothing to do), and its output."""
    result = snakemake(workdir, "--dry-run", *args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    if "Nothing to be done" in output:
        return {}, output
    table = output[output.index("Job stats:"):]
    table = table[: table.index("\ntotal")]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)}, output


def expected_jobs(config: dict) -> dict[str, int]:
    """The job counts of the whole pipeline: those of the config's run grid (a training job per run of its first
    seed: the seeds are a job's lanes; a width sweep job's lanes are its K too; an NTK job per model and variant,
    measuring every K of the sweep, K = 1 of the companion and of a width sweep model)."""
    grid = workflow.run_grid(config)
    runs, seeds = len(grid.sweep + grid.switch + grid.companion), len(config["seeds"])
    width_jobs = len(grid.width) // (seeds * len(config["width"]["K"]))
    jobs = {"prepare_data": 1, "run_config": runs + len(grid.width), "train": runs // seeds, "aggregate": 1,
            "aggregate_sweep": 1, "aggregate_predictions": 1,
            "measure_ntk": len(config["models"]) * len(config["variants"]),  # every K of a model and variant
            "aggregate_ntk": 1, "claims": 1, "all": 1}
    k1_jobs = len(grid.companion) // seeds + width_jobs  # K = 1 alone: the companion's runs and the width sweep's
    if k1_jobs:
        jobs.update(measure_ntk_k1=k1_jobs)
    if grid.companion:
        jobs.update(aggregate_companion=1, aggregate_ntk_companion=1)
    if grid.width:
        jobs.update(train_width=width_jobs, aggregate_width=1, aggregate_ntk_width=1)
    jobs.update({figure: 1 for figure in config["figures"]})
    if grid.gauss_newton:
        jobs.update(gauss_newton=len(grid.gauss_newton), aggregate_gauss_newton=1, aggregate_gauss_newton_predictions=1)
    if grid.kernel_regression:
        jobs.update(kernel_regression_run=len(grid.kernel_regression), aggregate_kernel_regression=1)
    return jobs


ONE_ENVIRONMENT_LINT = "Specify a conda environment or container for each rule."
"""The one lint the workflow keeps: every job runs in the environment the README's commands create
(jobs call its `python -m itlin`), so no rule names a conda environment of its own."""


def test_lint_is_clean(workdir: Path):
    result = snakemake(workdir, "--lint")
    output = result.stdout + result.stderr
    before, *lints = output.split("Lints for ")
    assert "Error" not in before and result.returncode == (1 if lints else 0), output
    for found in lints:
        assert re.findall(r"^    \* (.+):$", found, flags=re.MULTILINE) == [ONE_ENVIRONMENT_LINT], found


def test_snakemake_files_are_formatted():
    """`snakefmt --check` (settings in pyproject.toml) on the Snakefile and every rule file."""
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "--diff", "Snakefile", "workflow/rules"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config_name, runs, training_jobs, width_jobs", [
    ("config.yaml", 198, 36, 10), ("paper.yaml", 162, 54, 0), ("test.yaml", 23, 5, 6), ("digits.yaml", 198, 36, 10)])
def test_dry_run_builds_every_job_of_the_config(workdir: Path, config_name: str, runs: int, training_jobs: int,
                                                width_jobs: int):
    config = load_config(config_name)
    args = [] if config_name == "config.yaml" else ["--configfile", f"config/{config_name}"]
    jobs, output = planned_jobs(workdir, *args)
    assert jobs == expected_jobs(config)
    assert (jobs["run_config"], jobs["train"], jobs.get("train_width", 0)) == (runs, training_jobs, width_jobs)
    if config_name == "paper.yaml":  # replaces the default config instead of being merged into it
        assert "results/runs/cifar10/resnet18/K50000/seed2/augment/metrics.parquet" in output
        assert "results/runs/cifar10/cnn/switch30000/seed0/base/metrics.parquet" in output  # 0.3 of 100k steps
        assert "/mlp/" not in output and "mnist1d" not in output


@pytest.mark.parametrize("config_name, dataset, K", [
    ("config.yaml", "mnist1d", [1, 130, 400, 1000, 2000, float("inf")]),  # 3999, 30, 9, 3, 1, 0 feature updates
    ("digits.yaml", "digits", [1, 100, 300, 750, 1500, float("inf")])])   # 2999, 29, 9, 3, 1, 0
def test_default_config_is_the_mnist1d_design_and_digits_the_same_design(config_name: str, dataset: str, K: list):
    """The embedded default runs MNIST-1D; digits.yaml the same design on the digits (the ceiling case)."""
    config = load_config(config_name)
    assert config["dataset"]["name"] == dataset
    assert set(config["models"]) == {"mlp", "cnn", "cnn_deep"}
    assert config["models"]["cnn_deep"]["kwargs"]["depth"] > config["models"]["cnn"]["kwargs"]["depth"]
    assert config["K"] == K
    assert len(config["seeds"]) >= 3
    assert config["switch"] == {"fractions": [0.01, 0.03, 0.1, 0.3], "models": list(config["models"])}
    assert [entry["kwargs"]["depth"] for entry in config["companion"]["models"].values()] == [1, 2, 3]
    assert config["companion"]["training"]["batch_size"] == config["companion"]["training"]["train_size"]
    assert config["resources"]["gpu"] == 0
    assert config["figures"] == FIGURES


@pytest.mark.parametrize("config_name", ["config.yaml", "digits.yaml", "test.yaml"])
def test_every_config_judges_claims_as_the_paper_config_does(config_name: str):
    assert load_config(config_name)["claims"] == load_config("paper.yaml")["claims"]


def test_paper_config_is_the_cifar10_design():
    config = load_config("paper.yaml")
    assert config["dataset"]["name"] == "cifar10"
    assert {model["name"] for model in config["models"].values()} == {"cnn", "resnet18"}
    assert config["K"] == [1, 100, 1000, 3300, 10000, 25000, 50000, float("inf")]  # ..., 30, 9, 3, 1, 0 updates
    assert config["switch"]["fractions"] == [0.01, 0.03, 0.1, 0.3]
    assert config["training"]["steps"] == 100_000
    assert config["training"]["optimizer"] == {"name": "adam", "learning_rate": 1e-3, "momentum": 0.0,
                                               "schedule": "constant"}
    assert len(config["seeds"]) == 3
    assert sorted(variant["augment"] for variant in config["variants"].values()) == [False, True]
    assert config["resources"]["gpu"] == 1


def test_schema_names_the_library_registries():
    """The schema's fixed lists are those of the library (models, datasets, cnn's pooling and heads) or a subset
    of them (figures)."""
    from itlin import figures, models

    schema = yaml.safe_load(SCHEMA.read_text())
    model_schema = schema["properties"]["models"]["additionalProperties"]["properties"]["name"]
    assert sorted(model_schema["enum"]) == sorted(models.MODELS)
    assert sorted(schema["properties"]["dataset"]["properties"]["name"]["enum"]) == sorted(data.DATASETS)
    cnn = schema["$defs"]["cnn_kwargs"]["properties"]
    assert (tuple(cnn["pool"]["enum"]), tuple(cnn["head"]["enum"])) == (models.POOLS, models.HEADS)
    assert set(schema["properties"]["figures"]["items"]["enum"]) == set(figures.FIGURES)


def test_one_figure_builds_only_what_it_needs(workdir: Path):
    config = load_config("config.yaml")
    sweep_runs = len(workflow.run_grid(config).sweep)
    jobs, _ = planned_jobs(workdir, "figures/accuracy_vs_feature_updates.pdf")
    assert jobs == {"prepare_data": 1, "run_config": sweep_runs, "train": sweep_runs // len(config["seeds"]),
                    "aggregate_sweep": 1, "accuracy_vs_feature_updates": 1}
    assert planned_jobs(workdir, "accuracy_vs_feature_updates")[0] == jobs


def test_the_run_grid_names_every_run_of_the_tiny_config():
    grid = workflow.run_grid(load_config("test.yaml"))
    assert grid == workflow.RunGrid(
        sweep=["digits/mlp/K1/seed0/base", "digits/mlp/Kinf/seed0/base"],
        switch=["digits/mlp/switch50/seed0/base"],  # t = 0.5 of 100 steps
        companion=["digits/mlp1/K1/seed0/companion", "digits/mlp1_linear/K1/seed0/companion"],
        width=[f"digits/mlp1_w{width}/{schedule}/seed0/width_{regime}" for width in (8, 16, 32)
               for regime in ("ntk", "standard") for schedule in ("K1", "K10", "Kinf")],
        gauss_newton=["digits/mlp/mse/seed0", "digits/mlp/cross_entropy/seed0"],
        kernel_regression=["digits/mlp/seed0"],
        schedules=["K1", "Kinf", "switch50", "K10"],
    )
    for path in grid.sweep + grid.switch + grid.companion + grid.gauss_newton + grid.kernel_regression:
        assert workflow.run_path(**workflow.run_wildcards(path)) == path
    assert workflow.run_wildcards("digits/mlp/switch50/seed0/base") == {
        "dataset": "digits", "model": "mlp", "schedule": "switch50", "seed": "0", "variant": "base"}
    with pytest.raises(ValueError, match="not a run path"):
        workflow.run_wildcards("digits/mlp")


def test_run_configs_take_every_setting_from_the_config():
    """Each run's config is a valid run config: its own keys from its name, every other key from the
    config's training section (its default where the section leaves it out), written in the order of
    record.RunConfig, as `itlin train` reads it."""
    config = load_config("test.yaml")
    grid = workflow.run_grid(config)
    defaults = {field.name: field.default for field in dataclasses.fields(record.RunConfig)}
    for path in grid.sweep + grid.switch + grid.companion:
        settings = workflow.run_config(config, workflow.run_wildcards(path))
        assert list(settings) == list(defaults)
        record.RunConfig.from_dict(settings)
        training = config["training"] if path in grid.sweep + grid.switch else {**config["training"],
                                                                                **config["companion"]["training"]}
        for name in set(defaults) - set(record.IDENTITY_KEYS) - {"optimizer"}:
            assert settings[name] == training.get(name, defaults[name]), name
    switch = workflow.run_config(config, workflow.run_wildcards(grid.switch[0]))
    assert (switch["K"], switch["switch_step"], switch["seed"]) == (1, 50, 0)
    network, twin = (workflow.run_config(config, workflow.run_wildcards(path)) for path in grid.companion)
    assert twin["model"] == {"label": "mlp1_linear", "name": "mlp", "activation": "linear", "depth": 1, "width": 16}
    assert (network["optimizer"]["learning_rate"], twin["optimizer"]["learning_rate"]) == (0.02, "auto")
    assert network["optimizer"]["name"] == "sgd" and network["loss"] == "mse" and network["variant"] == "companion"
    assert network["batch_size"] == network["train_size"] == 64 and network["K"] == 1
    written = workflow.run_config_yaml(config, workflow.run_wildcards(grid.sweep[1]))
    assert yaml.safe_load(written) == workflow.run_config(config, workflow.run_wildcards(grid.sweep[1]))
    assert "\nK: .inf\nswitch_step: null\n" in written
    assert "\noptimizer:\n  learning_rate: 0.001\n  momentum: 0.0\n  name: adam\n" in written  # sorted


def test_width_sweep_runs_train_every_K_of_a_width_and_regime_as_one_job():
    """A width sweep job's lanes are its runs at every K and seed; each run config has the regime's
    parameterisation and training settings, the model at its width."""
    config = load_config("test.yaml")
    job = {"dataset": "digits", "model": "mlp1_w16", "variant": "width_ntk"}
    runs = workflow.job_runs(config, job)
    assert runs == [f"digits/mlp1_w16/{schedule}/seed0/width_ntk" for schedule in ("K1", "K10", "Kinf")]
    assert {workflow.training_job(run) for run in runs} == {"digits/mlp1_w16/width_ntk"}
    theory, paper = (workflow.run_config(config, workflow.run_wildcards(f"digits/mlp1_w16/K10/seed0/width_{regime}"))
                     for regime in ("ntk", "standard"))
    assert theory["model"] == {"label": "mlp1_w16", "name": "mlp", "depth": 1, "parameterisation": "ntk", "width": 16}
    assert paper["model"]["parameterisation"] == "standard" and paper["model"]["width"] == 16
    assert (theory["optimizer"]["name"], theory["loss"], theory["batch_size"], theory["K"]) == ("sgd", "mse", 64, 10)
    assert (paper["optimizer"], paper["loss"]) == (config["training"]["optimizer"], config["training"]["loss"])
    assert theory["steps"] == paper["steps"] == 20 and not theory["augment"]
    record.RunConfig.from_dict(theory), record.RunConfig.from_dict(paper)
    assert record.parse_width_label("mlp1_w16") == ("mlp1", 16)


@pytest.mark.parametrize("change, key", [
    (lambda c: c["claims"]["C7"].update(theory_regime="theory"), "claims.C7.theory_regime"),
    (lambda c: c["variants"].update(width_x={"augment": False}), "variants.width_x"),
    (lambda c: c["width"]["models"].update(mlp={"name": "mlp", "kwargs": {"depth": 1}, "mem_mb": 1,
                                                "minutes_per_1000_steps": 1}) or c["width"]["widths"].append(1)
     or c["models"].update(mlp_w1=c["models"]["mlp"]), "width.models.mlp"),
    (lambda c: c["width"]["regimes"]["ntk"]["training"].update(batch_size=65), "width.regimes.ntk.training"),
    (lambda c: c["width"]["regimes"]["ntk"]["training"].update(steps=25), "width.regimes.ntk.training"),
    (lambda c: c["width"].update(K=[10, ".inf"]), "width.K"),  # C7's kernel change needs K = 1
    (lambda c: c["width"].update(widths=[]), "figures"),  # width_scaling listed, no width sweep runs
])
def test_a_width_section_the_runs_cannot_take_is_rejected_naming_the_key(change, key):
    config = load_config("test.yaml")
    change(config)
    with pytest.raises(workflow.WorkflowConfigError, match=re.escape(f"config key '{key}")):
        workflow.check_config(config)


def test_source_files_follow_every_import(tmp_path: Path, monkeypatch):
    """A module's code is its file (every file of a package) and all it imports, transitively, however imported."""
    package = tmp_path / "itlin"
    (package / "judge").mkdir(parents=True)
    (package / "top.py").write_text("from itlin.judge import verdict\n")
    (package / "judge" / "__init__.py").write_text("from .verdict import rule\n")
    (package / "judge" / "verdict.py").write_text("def rule():\n    from itlin import leaf, numpy_free\n")
    (package / "leaf.py").write_text("import math\nimport itlin.twig\n")
    (package / "twig.py").write_text("from . import leaf\n")
    (package / "alone.py").write_text("")
    monkeypatch.setattr(workflow, "PACKAGE", package)
    assert workflow.source_files("top") == [
        "src/itlin/judge/__init__.py", "src/itlin/judge/verdict.py", "src/itlin/leaf.py", "src/itlin/top.py",
        "src/itlin/twig.py"]
    assert workflow.source_files("alone") == ["src/itlin/alone.py"]
    with pytest.raises(ValueError, match="no module 'missing'"):
        workflow.source_files("missing")


def test_rules_list_the_code_they_run():
    """What the rules' code inputs give in this repository: the figures and the claims on the summaries
    they share, training on the trainer; the tables on neither."""
    for listed in (workflow.source_files(name) for name in ("plots", "cli", "tables", "ntk", "claims")):
        assert all((ROOT / path).is_file() for path in listed)
    assert "src/itlin/summaries.py" in set(workflow.source_files("claims")) & set(workflow.source_files("plots"))
    assert "src/itlin/train.py" in workflow.source_files("cli")
    assert not {"src/itlin/train.py", "src/itlin/plots/style.py"} & set(workflow.source_files("tables"))


def test_unedited_cluster_profile_is_named_line_by_line(tmp_path: Path):
    partitions = tmp_path / "partitions.yaml"
    partitions.write_text("partitions:\n  your_cpu_partition:\n    max_gpu: 0  # see your_docs\n")
    with pytest.raises(workflow.WorkflowConfigError) as refused:
        workflow.check_cluster_profile({"slurm_account": "your_account", "mem_mb": 2000},
                                       {"train": {"cpus_per_gpu": 4}}, partitions, gpus=1)
    message = str(refused.value)
    assert "the profile's config.yaml, default-resources: slurm_account: your_account" in message
    assert f"{partitions}, line 2: your_cpu_partition:" in message and "line 3" not in message  # not a comment
    assert f"config key 'resources.gpu' = 1 asks for GPUs, but no partition in {partitions}" in message
    partitions.write_text("partitions:\n  cpu: {max_gpu: 0}\n  gpu: {max_gpu: 4}\n")
    workflow.check_cluster_profile({"slurm_account": "lab"}, {}, partitions, gpus=1)
    workflow.check_cluster_profile({}, {}, None, gpus=1)  # no partitions file: the plugin's defaults


def _mutate(config: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        config = config[key]
    config[leaf] = value


@pytest.mark.parametrize(
    "path, value, named",
    [
        ("models.mlp.name", "transformer", "config key 'models.mlp.name': 'transformer' is not one of"),
        ("K", [0, float("inf")], "config key 'K[0]': 0 matches none of the allowed forms"),
        ("K", [1, "inf", float("inf")], "config key 'K' lists a period twice"),
        ("training.eval_evry", 50, "config key 'training': Additional properties are not allowed ('eval_evry' was"),
        ("seeds", [1.0], "config key 'seeds[0]': 1.0 is not of type 'integer'"),
        ("training.scan_steps", 0, "config key 'training.scan_steps': 0 is less than the minimum of 1"),
        ("switch.fractions", [0.999], "switch.fractions[0]"),
        ("switch.fractions", [0.5, 0.501], "gives the same switch step twice"),
        ("claims.C1.tolerance_pt", -1.0, "config key 'claims.C1.tolerance_pt': -1.0 is less than the minimum of 0"),
        ("claims.bootstrap.confidence", 1.5, "config key 'claims.bootstrap.confidence'"),
        ("claims.C9", {"min_gap_pt": 1.0}, "'C9' was unexpected"),
        ("ntk.velocity_interval", 15, "ntk.velocity_interval"),
        ("companion.training.scan_steps", 25, "'ntk.velocity_interval' = 10 must be a multiple of "
                                              "'companion.training.scan_steps' = 25"),
        ("companion.models.mlp1.name", "resnet18", "companion.models.mlp1.name"),
        ("companion.models.mlp", {"name": "mlp", "kwargs": {"depth": 1, "width": 4}, "learning_rate": 0.1,
                                  "twin_learning_rate": 0.1, "mem_mb": 100, "minutes_per_1000_steps": 1},
         "config key 'companion.models.mlp': the label 'mlp' is taken"),
        ("companion.training.loss", "hinge", "config key 'companion.training'"),
        ("companion.training.eval_every", 55, "'companion.training.eval_every' = 55 must be a multiple of 'training.scan_steps' = 10"),
        ("companion.training.batch_size", 65, "'companion.training.batch_size' = 65 exceeds 'companion.training.train_size' = 64"),
        ("variants.companion", {"augment": False}, "config key 'variants.companion'"),
        ("companion.training.batch_size", 32, "config key 'companion.models.mlp1.twin_learning_rate' = auto: auto "
                                              "needs full batches: batch_size (32) equal to train_size (64)"),
        ("training.optimizer.learning_rate", "auto", "config key 'training.optimizer.learning_rate' = auto: auto needs "
                                                     "plain gradient descent"),
        ("switch.models", ["cnn"], "switch.models[0]"),
        ("training.eval_every", 55, "training.eval_every"),
        ("gauss_newton.models", ["cnn"], "gauss_newton.models[0]"),
        ("ntk.probe_size", 2000, "config key 'ntk.probe_size' = 2000 is more than the 1347 training examples of digits"),
        ("training.batch_size", 1348, "config key 'training.batch_size' = 1348 is more than the 1347 training"),
        ("kernel_regression.train_size", 1340, "config key 'kernel_regression.train_size' = 1340 needs 134 "
                                               "examples of each of the 10 classes"),
        ("dataset.options.test_fraction", 0.999, "config key 'dataset.options.test_fraction': digits: option "
                                                 "test_fraction = 0.999 gives 1 training and 1796 test examples"),
        ("gauss_newton.train_size", 5000, "config key 'gauss_newton.train_size' = 5000 is more than the 1347 "
                                          "training examples of digits"),
        ("gauss_newton.K", [2, 3], "'gauss_newton.K[1]' = 3 must divide 'gauss_newton.steps' = 20"),
        ("gauss_newton.batch_size", 128, "'gauss_newton.batch_size' = 128 exceeds 'gauss_newton.train_size'"),
        ("kernel_regression.compare_steps", [10, 200], "'kernel_regression.compare_steps[1]' = 200 must lie below"),
        ("training.train_size", 1348, "config key 'training.train_size' = 1348 is more than the 1347 training"),
        ("training.train_size", 100, "'training.eval_train_size' = 200 exceeds 'training.train_size' = 100"),
    ],
)
def test_invalid_config_is_named(path: str, value, named: str):
    """Every value that can be checked before a job runs is, in a few lines naming the key."""
    config = load_config("test.yaml")
    _mutate(config, path, value)
    with pytest.raises(ValueError) as rejected:
        workflow.validate(config, SCHEMA)
    assert named in str(rejected.value)
    assert len(str(rejected.value).splitlines()) < 5


DATASETS = {
    "digits": {"name": "digits", "split_seed": 0, "options": {"test_fraction": 0.25}},
    "synthetic": {"name": "synthetic", "split_seed": 0, "options": {"n_train": 512, "n_test": 256, "image_size": 8,
                                                                    "channels": 1, "num_classes": 4, "noise": 1.0}},
    "cifar10": {"name": "cifar10", "split_seed": 0, "options": {}},
    "mnist1d": {"name": "mnist1d", "split_seed": 42, "options": {
        "num_samples": 5000, "train_split": 0.8, "template_len": 12, "padding": [36, 60], "scale_coeff": 0.4,
        "max_translation": 48, "corr_noise_scale": 0.25, "iid_noise_scale": 0.02, "shear_scale": 0.75,
        "final_seq_length": 40, "extra_test_samples": 4000, "extra_test_seed": 1}},
}
"""A valid dataset section of each dataset: the tiny config on each, for the keys of one dataset's options."""
COUNT_KEYS = workflow.count_keys(SCHEMA)


def _count_key_id(count: validation.SchemaKey) -> str:
    """'ntk.probe_size', or 'dataset.options.n_train (synthetic)' for a key of one branch of the schema."""
    branches = re.findall(r"'const': '(\w+)'", str([schema for _, schema in count.when]))
    return f"{count.key} ({', '.join(branches)})" if branches else count.key


def _config_for(count: validation.SchemaKey) -> dict:
    """The tiny config, on the first dataset whose config takes ``count``'s branch of the schema (one
    dataset's options)."""
    for dataset in DATASETS.values():
        config = load_config("test.yaml") | {"dataset": json.loads(json.dumps(dataset))}
        if all(jsonschema.Draft202012Validator(schema).is_valid(found) for key, schema in count.when
               for _, found in workflow.config_values(config, key)):
            return config
    raise AssertionError(f"no dataset of DATASETS has {_count_key_id(count)}")


def _config_with(count: validation.SchemaKey, value) -> dict:
    """``_config_for(count)`` with every value of the key set to ``value``."""
    config = _config_for(count)
    parent, _, name = count.key.rpartition(".")
    for _, section in workflow.config_values(config, parent) if parent else [("", config)]:
        section[name] = value
    return config


def test_every_key_that_counts_examples_says_how_the_data_bound_it():
    """An integer key named or described as a count of examples (``*_size``, ``n_*``, ``*batch*``, "examples")
    has ``x-examples`` in the schema, so that ``check_sizes`` checks it and the tests below cover it."""
    unmarked = []
    for key in validation.schema_keys(SCHEMA):
        name, description = key.key.rpartition(".")[2], key.schema.get("description", "")
        types = {key.schema.get("type"), *(branch.get("type") for branch in key.schema.get("anyOf", []))}
        if "integer" in types and (re.search(r"_size$|^n_|batch", name) or "example" in description):
            unmarked += [] if "x-examples" in key.schema else [key.key]
    assert not unmarked, f"keys counting examples without x-examples ({', '.join(workflow.EXAMPLE_COUNTS)}): {unmarked}"
    assert {count.schema["x-examples"] for count in COUNT_KEYS} == set(workflow.EXAMPLE_COUNTS)


@pytest.mark.parametrize("count", COUNT_KEYS, ids=_count_key_id)
def test_every_count_of_examples_is_checked_against_the_data(count: validation.SchemaKey):
    """Each key of ``x-examples`` is checked before any job, naming it: a split without every class, a
    subset larger than the training split, a class-balanced one that needs more of a class than it may have;
    a key the data set no bound on takes any value."""
    kind = count.schema["x-examples"]
    dataset = _config_for(count)["dataset"]
    sizes = data.split_sizes(dataset["name"], dataset["options"])
    if kind == "none":
        workflow.validate(_config_with(count, 10**9), SCHEMA)
        return
    if kind == "split":  # one example, or a thousandth of the data: too few for every class
        rejected = {1 if count.schema.get("type") == "integer" else 0.001: f"config key '{count.key}': "}
    else:
        rejected = {sizes.train + 1: f"config key '{count.key}' = {sizes.train + 1} is more than the {sizes.train} "
                                     f"training examples of "}
    if kind == "train-balanced":
        many = sizes.num_classes * sizes.smallest_train_class + 1
        rejected[many] = (f"config key '{count.key}' = {many} needs {sizes.smallest_train_class + 1} examples of each "
                          f"of the {sizes.num_classes} classes")
    for value, named in rejected.items():
        with pytest.raises(workflow.WorkflowConfigError) as refused:
            workflow.validate(_config_with(count, value), SCHEMA)
        assert re.match(re.escape(named).replace(r"\*", r"\w+"), str(refused.value)), str(refused.value)  # * names any


@pytest.mark.parametrize("config_name", ["config.yaml", "digits.yaml", "paper.yaml", "test.yaml"])
def test_shipped_configs_are_valid(config_name: str):
    workflow.validate(load_config(config_name), SCHEMA)


def test_sizes_of_a_stage_that_runs_no_job_are_not_checked():
    """C5's and C6's sizes only bound their jobs: a config without them may keep any."""
    config = load_config("test.yaml")
    for stage in ("gauss_newton", "kernel_regression"):
        config[stage] |= {"models": [], "train_size": 5000}
        config["figures"].remove({"gauss_newton": "gauss_newton_damping"}.get(stage, stage))
    workflow.validate(config, SCHEMA)


def test_misspelt_key_is_named():
    config = load_config("test.yaml")
    config["figurs"] = config.pop("figures")
    with pytest.raises(ValueError) as rejected:
        workflow.validate(config, SCHEMA)
    assert set(str(rejected.value).splitlines()) == {
        "config key (top level): 'figures' is a required property",
        "config key (top level): Additional properties are not allowed ('figurs' was unexpected)"}


def test_invalid_config_is_rejected_before_any_job(workdir: Path):
    """The checks above run when Snakemake reads the workflow: a few lines naming the key, and no job."""
    config = load_config("test.yaml")
    config["ntk"]["probe_size"] = 2000
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "1", "--configfile", "bad.yaml")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key 'ntk.probe_size' = 2000 is more than the 1347 training examples of digits" in output
    assert len(output.splitlines()) < 10, output
    assert not (workdir / "resources").exists() and not (workdir / "results").exists()


def test_yaml_syntax_error_in_the_default_config_is_named(workdir: Path):
    default = workdir / "config" / "config.yaml"  # the embedded default, read by the Snakefile
    broken = re.sub(r"^seeds: \[(.*)\]$", r"seeds: [\1", default.read_text(), count=1, flags=re.MULTILINE)
    assert broken != default.read_text()
    default.write_text(broken)
    result = snakemake(workdir, "--cores", "1")
    assert result.returncode != 0
    assert re.search(r"config/config\.yaml, line \d+, column \d+: not valid YAML", result.stdout + result.stderr)


# The tiny config end to end, run once for the scenarios below; those that change code or outputs do
# so in a copy of the finished pipeline (its outputs, their times and Snakemake's records).


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """A copy of the workflow where the tiny config has run end to end."""
    folder = copy_workflow(tmp_path_factory.mktemp("pipeline"))
    result = snakemake(folder, *TEST_CONFIG, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


@pytest.fixture
def finished(pipeline: Path, tmp_path: Path) -> Path:
    """A copy of the finished pipeline, for a scenario that changes it."""
    return Path(shutil.copytree(pipeline, tmp_path / "pipeline", symlinks=True))


@pytest.mark.slow
def test_pipeline_draws_every_figure_and_judges_every_claim(pipeline: Path):
    for figure in FIGURES:
        assert (pipeline / "figures" / f"{figure}.pdf").read_bytes().startswith(b"%PDF")
        assert (pipeline / "figures" / f"{figure}.png").read_bytes().startswith(b"\x89PNG")
    claims = (pipeline / "results" / "claims.md").read_text()
    for claim in CLAIM_IDS:
        assert re.search(rf"^\| {claim} \|", claims, flags=re.MULTILINE), claim
    document = json.loads((pipeline / "results" / "claims.json").read_text())
    jsonschema.validate(document, json.loads((ROOT / "workflow" / "schemas" / "claims.schema.json").read_text()))
    assert [claim["id"] for claim in document["claims"]] == CLAIM_IDS
    assert "<table class='claims'>" in (pipeline / "results" / "claims.html").read_text()


@pytest.mark.slow
def test_pipeline_tables_hold_every_run(pipeline: Path):
    from itlin import tables

    folder = pipeline / "results" / "tables"
    predictions = tables.read("predictions", folder / "predictions.parquet")
    assert len(predictions) == 3 * 2 * 450  # 3 runs, 2 evaluators, every digits test example
    metrics = tables.read("metrics", folder / "metrics.parquet")
    sweep = tables.read("metrics", folder / "metrics_sweep.parquet")
    assert list(metrics.columns) == list(tables.METRICS_COLUMNS)
    runs = metrics[["model", "K", "switch_step"]].drop_duplicates()
    assert len(runs) == 3 and set(runs["K"]) == {1.0, float("inf")}
    assert metrics["switch_step"].dropna().unique().tolist() == [50]
    assert sweep["switch_step"].isna().all() and len(sweep) < len(metrics)
    ntk = tables.read("ntk", folder / "ntk.parquet")
    assert list(ntk.columns) == list(tables.NTK_COLUMNS)
    assert set(ntk["metric"]) == set(tables.NTK_METRICS)
    assert set(ntk["variant"]) == {"base"}  # the main paper's runs only
    companion = tables.read("ntk", folder / "ntk_companion.parquet")
    assert set(companion["variant"]) == {"companion"} and set(companion["K"]) == {1.0}
    assert set(companion["point"]) == {"linearisation"}  # K = 1: θ_lin only
    twin = companion[companion["model"] == "mlp1_linear"]  # the deep linear twin of mlp1
    assert set(twin["activation"]) == {"linear"} and not twin.empty
    trained = tables.read("metrics", folder / "metrics_companion.parquet")
    assert set(trained["model"]) == {"mlp1", "mlp1_linear"} and set(trained["variant"]) == {"companion"}
    summary = json.loads((pipeline / "results" / "runs" / "digits" / "mlp1_linear" / "K1" / "seed0" / "companion"
                          / "run.json").read_text())
    rate = summary["auto_learning_rate"]["learning_rate"]  # the twin's step, auto in config/test.yaml
    assert summary["config"]["optimizer"]["learning_rate"] == rate > 0
    frozen = ntk[(ntk.K == float("inf")) & (ntk.point == "linearisation") & (ntk.metric == "distance_from_init")]
    assert len(frozen) > 1 and (frozen.value == 0).all()  # K = ∞ never moves its kernel
    damped = tables.read("gauss_newton", folder / "gauss_newton.parquet")
    assert set(damped["method"]) == {"gauss_newton", "iterative_linearisation"} and set(damped["loss"]) == {
        "mse", "cross_entropy"}
    assert sorted(damped["rounds"].unique()) == [1, 10]  # T/K for K = 20, 2 of T = 20
    damped_predictions = tables.read("gauss_newton_predictions", folder / "gauss_newton_predictions.parquet")
    assert len(damped_predictions) == len(damped) * 450  # every run and evaluator, every digits test example
    regression = tables.read("kernel_regression", folder / "kernel_regression.parquet")
    assert len(regression) == 4 * 450 * 10  # steps 10, 100, 200 and t → ∞; every test example and class


@pytest.mark.slow
def test_pipeline_run_folder_holds_its_config_snapshots_and_ntk_log(pipeline: Path):
    run_name = "digits/mlp/Kinf/seed0/base"
    run_folder = pipeline / "results" / "runs" / run_name
    assert yaml.safe_load((run_folder / "config.yaml").read_text())["K"] == float("inf")
    assert (run_folder / "run.json").is_file() and any((run_folder / "snapshots").iterdir())
    snapshots = len(list((run_folder / "snapshots").glob("step_*.npz")))
    job = workflow.NTK_JOB.format(**workflow.run_wildcards(run_name))  # the model's runs at every K
    ntk_log = (pipeline / "results" / "logs" / "measure_ntk" / f"{job}.log").read_text()
    assert f"{run_folder.relative_to(pipeline)}: {snapshots} snapshots" in ntk_log
    assert len(re.findall(rf"INFO itlin.measure_ntk: snapshot \d+/{snapshots} \(step \d+\): \d+\.\d s", ntk_log)) >= snapshots


@pytest.mark.slow
def test_finished_pipeline_has_nothing_to_do(pipeline: Path):
    assert planned_jobs(pipeline, *TEST_CONFIG)[0] == {}


@pytest.mark.slow
def test_a_claims_threshold_rejudges_the_claims_only(pipeline: Path):
    """A claim's threshold is a param of the claims rule alone."""
    config = load_config("test.yaml")
    config["claims"]["C2"]["min_gap_pt"] = 2.0
    (pipeline / "stricter.yaml").write_text(yaml.safe_dump(config))
    assert planned_jobs(pipeline, "--configfile", "stricter.yaml")[0] == {"claims": 1, "all": 1}


@pytest.mark.slow
def test_adding_a_K_adds_only_its_runs(pipeline: Path):
    """One more K: its run, its NTK, and the tables, figures and claims that read them (not C5's, C6's or the
    companion's)."""
    config = load_config("test.yaml")
    config["K"] = [1, 10, float("inf")]
    (pipeline / "more_K.yaml").write_text(yaml.safe_dump(config))
    jobs, _ = planned_jobs(pipeline, "--configfile", "more_K.yaml")
    unchanged = {"gauss_newton_damping", "kernel_regression",  # drawn from the C5 and C6 tables
                 "kernel_alignment", "kernel_specialisation", "loss_phases", "eigenfunction_alignment",  # companion's
                 "width_scaling"}  # the width sweep's
    assert jobs == {"run_config": 1, "train": 1, "aggregate": 1, "aggregate_sweep": 1, "aggregate_predictions": 1,
                    "measure_ntk": 1, "aggregate_ntk": 1, "claims": 1, "all": 1,
                    **{figure: 1 for figure in FIGURES if figure not in unchanged}}


def _change_code(workdir: Path, module: str) -> None:
    """Change the files of one itlin module or package in ``workdir`` (not those it imports): a comment
    each, since Snakemake ignores a mere touch."""
    changed = [path for path in workflow.source_files(module) if re.fullmatch(rf"src/itlin/{module}(\.py|/.*)", path)]
    assert changed
    for path in changed:
        with (workdir / path).open("a") as source:
            source.write("\n# changed\n")


@pytest.mark.slow
@pytest.mark.parametrize("module, target, expected", [
    ("plots", "all", {**{figure: 1 for figure in FIGURES}, "all": 1}),  # restyled: redrawn, nothing retrained
    # the summaries the claims judge are those the figures draw (C6: kernel_regression_summary)
    ("summaries", "figures/kernel_regression.png", {"kernel_regression": 1}),
])
def test_changing_code_redraws_what_runs_it(finished: Path, module: str, target: str, expected: dict):
    """Rules list the code they run (itlin.workflow.source_files): changing a module reruns the rules that run it."""
    _change_code(finished, module)
    assert planned_jobs(finished, target, *TEST_CONFIG)[0] == expected


@pytest.mark.slow
def test_changing_the_trainer_retrains(finished: Path):
    _change_code(finished, "train")
    jobs, _ = planned_jobs(finished, *TEST_CONFIG)
    grid = workflow.run_grid(load_config("test.yaml"))
    assert jobs["train"] == len(grid.sweep + grid.switch + grid.companion)
    assert "run_config" not in jobs  # the runs' configs are the same


@pytest.mark.slow
def test_report_shows_every_figure_and_the_claims(pipeline: Path):
    """Every figure as a PNG, captioned with its claim, and the claims table as HTML."""
    report = snakemake(pipeline, *TEST_CONFIG, "--report", "report.html")
    assert report.returncode == 0, report.stdout + report.stderr
    results = report_results(pipeline / "report.html")
    assert {path: result["mime_type"] for path, result in results.items()} == {
        **{f"figures/{figure}.png": "image/png" for figure in FIGURES}, "results/claims.html": "text/html"}
    assert "Claim C4" in results["figures/linearise_after_t.png"]["caption"]
    landing = report_landing_text(pipeline / "report.html")
    c5 = load_config("test.yaml")["gauss_newton"]
    assert f"at K ∈ {{{', '.join(map(str, c5['K']))}}} against damped Gauss-Newton at λ = 1/(ηK)" in landing
    claims_page = base64.b64decode(results["results/claims.html"]["data_uri"].split(";base64,", 1)[1]).decode()
    table = claims_page[claims_page.index("<table"):claims_page.index("</table>")]
    for claim in CLAIM_IDS:
        assert f"<td>{claim}</td>" in table, claim


@pytest.mark.slow
def test_a_failing_job_leaves_its_traceback_in_its_log(finished: Path):
    (finished / "results" / "tables" / "metrics_sweep.parquet").write_bytes(b"not a parquet file")
    failed = snakemake(finished, "figures/training_curves.pdf", *TEST_CONFIG)  # --configfile takes 1+ files
    assert failed.returncode != 0
    assert "Traceback" in (finished / "results" / "logs" / "figures" / "training_curves.log").read_text()


def _decided(folder: Path) -> dict[str, object]:
    """What a run of the pipeline decides, by path: each run's metrics (but their wall times) and predictions,
    and the claims."""
    found: dict[str, object] = {
        str(path.relative_to(folder)): pd.read_parquet(path).drop(columns=["wall_time_s"], errors="ignore")
        for path in sorted((folder / "results" / "runs").glob("**/*.parquet"))}
    found["results/claims.json"] = json.loads((folder / "results" / "claims.json").read_text())
    return found


def _process_group(group: int) -> list[psutil.Process]:
    """The processes of a process group (`pgrep -g`) still running: a zombie that nobody reaps (an orphan in a
    container without an init) has ended."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


@pytest.mark.slow
def test_a_killed_snakemake_resumes_as_documented(pipeline: Path, finished: Path):
    """docs/failure-modes.md, "If Snakemake itself is killed": after `kill -9` of Snakemake mid-run its jobs go on
    and its lock stays; ending its process group, `snakemake --unlock` and the same command again end with the
    results of an uninterrupted run. The runs checkpoint every 10 steps, not 50, so that the kill lands inside a
    run (the tiny config's runs end a fraction of a second after their first checkpoint); that changes no result."""
    config = load_config("test.yaml")
    config["training"]["checkpoint_every"] = 10
    (finished / "often.yaml").write_text(yaml.safe_dump(config))
    command = ["results/claims.md", "--configfile", "often.yaml"]  # every run again (its config changed), no figure
    # Started as from a terminal: Snakemake leads a process group of its own, which its jobs join.
    killed = subprocess.Popen([sys.executable, "-m", "snakemake", *command], cwd=finished, env=snakemake_environment(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not any(path.name.isdigit() for path in (finished / "results" / "scratch").glob("**/checkpoints/*")):
        assert killed.poll() is None and time.monotonic() < deadline, "Snakemake wrote no checkpoint"
        time.sleep(0.02)
    killed.kill()
    killed.wait()
    assert any("itlin train" in " ".join(job.cmdline()) for job in _process_group(killed.pid))  # orphaned, training

    os.killpg(killed.pid, signal.SIGTERM)  # `kill -TERM -- -<pid>`: each training writes a checkpoint and ends
    deadline = time.monotonic() + 60
    while _process_group(killed.pid):
        assert time.monotonic() < deadline, "the orphaned jobs did not end"
        time.sleep(0.1)
    locked = snakemake(finished, *command)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    unlocked = snakemake(finished, "--unlock", "--configfile", "often.yaml")
    assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr
    resumed = snakemake(finished, *command, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    logs = [path.read_text() for path in (finished / "results" / "logs" / "train").glob("**/*.log")]
    assert any("resuming from checkpoint at step" in log for log in logs)
    expected, found = _decided(pipeline), _decided(finished)
    assert list(found) == list(expected)
    for path, value in expected.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(found[path], value, check_exact=True, obj=path)
        else:
            assert found[path] == value, path
