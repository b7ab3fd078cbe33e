"""Workflow tests: lint, the DAG of every config, config validation before any job, incremental
reruns, and the tiny config end to end. Each test runs Snakemake on a copy of the workflow in a
temporary folder, so the repository never gets a .snakemake/ or results/ of its own."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLAIM_IDS = ["C1", "C2", "C3", "C4", "C5", "C6", "S1", "S2"]
FIGURES = ["training_curves", "accuracy_vs_feature_updates", "network_vs_linearised", "linearise_after_t",
           "ntk_distance", "kernel_alignment", "kernel_specialisation", "gauss_newton_damping", "kernel_regression"]


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


def snakemake(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run Snakemake (of this interpreter) in ``workdir``; jobs call the same interpreter's itlin."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=timeout,
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
    """The job counts of the whole pipeline, computed from a config."""
    per_schedule = len(config["seeds"]) * len(config["variants"])
    runs = len(config["models"]) * len(config["K"]) * per_schedule
    runs += len(config["switch"]["models"]) * len(config["switch"]["fractions"]) * per_schedule
    twin_runs = len(config["deep_linear"]["models"]) * per_schedule  # K = 1 only
    runs += twin_runs
    sweep_runs = len(config["models"]) * len(config["K"]) * per_schedule + twin_runs  # measured by the NTK stage
    jobs = {"prepare_data": 1, "run_config": runs, "train": runs, "aggregate": 1, "aggregate_sweep": 1,
            "aggregate_predictions": 1, "measure_ntk": sweep_runs, "aggregate_ntk": 1, "claims": 1, "all": 1}
    jobs.update({figure: 1 for figure in config["figures"]})
    solver_runs = {
        "gauss_newton": len(config["gauss_newton"]["models"]) * len(config["gauss_newton"]["losses"]),
        "kernel_regression": len(config["kernel_regression"]["models"]),
    }
    for stage, count in solver_runs.items():
        if count:
            jobs.update({"gauss_newton" if stage == "gauss_newton" else "kernel_regression_run":
                         count * len(config["seeds"]), f"aggregate_{stage}": 1})
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


@pytest.mark.parametrize("config_name, runs", [("config.yaml", 96), ("paper.yaml", 150), ("test.yaml", 4)])
def test_dry_run_builds_every_job_of_the_config(workdir: Path, config_name: str, runs: int):
    config = load_config(config_name)
    args = [] if config_name == "config.yaml" else ["--configfile", f"config/{config_name}"]
    jobs, output = planned_jobs(workdir, *args)
    assert jobs == expected_jobs(config)
    assert jobs["train"] == runs
    if config_name == "paper.yaml":  # replaces the default config instead of being merged into it
        assert "results/runs/cifar10/resnet18/K50000/seed2/augment/metrics.parquet" in output
        assert "results/runs/cifar10/cnn/switch30000/seed0/base/metrics.parquet" in output  # 0.3 of 100k steps
        assert "/mlp/" not in output and "digits" not in output


def test_default_config_is_the_embedded_digits_design():
    config = load_config("config.yaml")
    assert config["dataset"]["name"] == "digits"
    assert set(config["models"]) == {"mlp", "cnn", "cnn_deep"}
    assert config["models"]["cnn_deep"]["kwargs"]["depth"] > config["models"]["cnn"]["kwargs"]["depth"]
    assert config["K"] == [1, 100, 300, 750, 1500, float("inf")]  # 2999, 29, 9, 3, 1, 0 feature updates
    assert len(config["seeds"]) >= 3
    assert config["switch"] == {"fractions": [0.01, 0.03, 0.1, 0.3], "models": list(config["models"])}
    assert config["resources"]["gpu"] == 0
    assert config["figures"] == FIGURES


def test_default_and_paper_configs_judge_claims_alike():
    assert load_config("config.yaml")["claims"] == load_config("paper.yaml")["claims"]


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
    """The schema's fixed lists are those of the library (models) or a subset of them (figures)."""
    from itlin import models, plots

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    model_schema = schema["properties"]["models"]["additionalProperties"]["properties"]["name"]
    assert sorted(model_schema["enum"]) == sorted(models.MODELS)
    assert set(schema["properties"]["figures"]["items"]["enum"]) == set(plots.ALL_FIGURES) == set(plots.READERS)


def test_one_figure_builds_only_what_it_needs(workdir: Path):
    config = load_config("config.yaml")
    sweep_runs = len(config["models"]) * len(config["K"]) * len(config["seeds"]) * len(config["variants"])
    jobs, _ = planned_jobs(workdir, "figures/accuracy_vs_feature_updates.pdf")
    assert jobs == {"prepare_data": 1, "run_config": sweep_runs, "train": sweep_runs, "aggregate_sweep": 1,
                    "accuracy_vs_feature_updates": 1}
    assert planned_jobs(workdir, "accuracy_vs_feature_updates")[0] == jobs


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
        ("training.eval_evry", 50, "config key 'training': Additional properties are not allowed ('eval_evry' was"),
        ("seeds", [1.0], "config key 'seeds[0]': 1.0 is not of type 'integer'"),
        ("training.scan_steps", 0, "config key 'training.scan_steps': 0 is less than the minimum of 1"),
        ("switch.fractions", [0.999], "switch.fractions[0]"),
        ("switch.fractions", [0.5, 0.501], "gives the same switch step twice"),
        ("claims.C1.tolerance_pt", -1.0, "config key 'claims.C1.tolerance_pt': -1.0 is less than the minimum of 0"),
        ("claims.bootstrap.confidence", 1.5, "config key 'claims.bootstrap.confidence'"),
        ("claims.C9", {"min_gap_pt": 1.0}, "'C9' was unexpected"),
        ("ntk.velocity_interval", 15, "ntk.velocity_interval"),
        ("deep_linear.models", ["resnet"], "deep_linear.models[0]"),
        ("switch.models", ["cnn"], "switch.models[0]"),
        ("training.eval_every", 55, "training.eval_every"),
        ("gauss_newton.models", ["cnn"], "gauss_newton.models[0]"),
        ("ntk.probe_size", 2000, "config key 'ntk.probe_size' = 2000 is more than the 1347 training examples of digits"),
        ("training.batch_size", 1348, "config key 'training.batch_size' = 1348 is more than the 1347 training"),
        ("kernel_regression.train_size", 1340, "config key 'kernel_regression.train_size' = 1340 needs 134 "
                                               "examples of each of the 10 classes"),
        ("dataset.options.test_fraction", 0.999, "config key 'dataset.options': digits: option test_fraction = "
                                                 "0.999 gives 1 training and 1796 test examples"),
        ("gauss_newton.K", [2, 3], "'gauss_newton.K[1]' = 3 must divide 'gauss_newton.steps' = 20"),
        ("gauss_newton.batch_size", 128, "'gauss_newton.batch_size' = 128 exceeds 'gauss_newton.train_size'"),
        ("kernel_regression.compare_steps", [10, 200], "'kernel_regression.compare_steps[1]' = 200 must lie below"),
    ],
)
def test_invalid_config_is_rejected_before_any_job(workdir: Path, path: str, value, named: str):
    """Every value that can be checked before a job runs is, in a few lines naming the key."""
    config = load_config("test.yaml")
    _mutate(config, path, value)
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "1", "--configfile", "bad.yaml")
    assert result.returncode != 0
    assert named in result.stdout + result.stderr
    assert len((result.stdout + result.stderr).splitlines()) < 10
    assert not (workdir / "resources").exists() and not (workdir / "results").exists()


def test_misspelt_key_and_yaml_syntax_error_are_named_in_a_few_lines(workdir: Path):
    config = load_config("test.yaml")
    config["figurs"] = config.pop("figures")
    (workdir / "misspelt.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "1", "--configfile", "misspelt.yaml")
    output = (result.stdout + result.stderr).splitlines()
    assert result.returncode != 0 and len(output) < 10
    assert "config key (top level): Additional properties are not allowed ('figurs' was unexpected)" in output
    assert "config key (top level): 'figures' is a required property" in output
    default = workdir / "config" / "config.yaml"  # the embedded default, read by the Snakefile
    broken = re.sub(r"^seeds: \[(.*)\]$", r"seeds: [\1", default.read_text(), count=1, flags=re.MULTILINE)
    assert broken != default.read_text()
    default.write_text(broken)
    result = snakemake(workdir, "--cores", "1")
    assert result.returncode != 0
    assert re.search(r"config/config\.yaml, line \d+, column \d+: not valid YAML", result.stdout + result.stderr)


@pytest.mark.slow
def test_tiny_config_runs_end_to_end_and_reruns_only_what_changed(workdir: Path):
    from itlin import tables

    result = snakemake(workdir, "--configfile", "config/test.yaml", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    for figure in FIGURES:
        assert (workdir / "figures" / f"{figure}.pdf").read_bytes().startswith(b"%PDF")
        assert (workdir / "figures" / f"{figure}.png").read_bytes().startswith(b"\x89PNG")
    claims = (workdir / "results" / "claims.md").read_text()
    for claim in CLAIM_IDS:
        assert re.search(rf"^\| {claim} \|", claims, flags=re.MULTILINE), claim
    document = json.loads((workdir / "results" / "claims.json").read_text())
    jsonschema.validate(document, json.loads((ROOT / "workflow" / "schemas" / "claims.schema.json").read_text()))
    assert [claim["id"] for claim in document["claims"]] == CLAIM_IDS
    assert "<table class='claims'>" in (workdir / "results" / "claims.html").read_text()
    predictions = tables.read_predictions(workdir / "results" / "tables" / "predictions.parquet")
    assert len(predictions) == 3 * 2 * 450  # 3 runs, 2 evaluators, every digits test example
    metrics = tables.read(workdir / "results" / "tables" / "metrics.parquet")
    sweep = tables.read(workdir / "results" / "tables" / "metrics_sweep.parquet")
    assert list(metrics.columns) == list(tables.METRICS_COLUMNS)
    ntk = tables.read_ntk(workdir / "results" / "tables" / "ntk.parquet")
    assert list(ntk.columns) == list(tables.NTK_COLUMNS)
    damped = tables.read_gauss_newton(workdir / "results" / "tables" / "gauss_newton.parquet")
    assert set(damped["method"]) == {"gauss_newton", "iterative_linearisation"} and set(damped["loss"]) == {
        "mse", "cross_entropy"}
    assert sorted(damped["rounds"].unique()) == [1, 10]  # T/K for K = 20, 2 of T = 20
    damped_predictions = tables.read_gauss_newton_predictions(
        workdir / "results" / "tables" / "gauss_newton_predictions.parquet")
    assert len(damped_predictions) == len(damped) * 450  # every run and evaluator, every digits test example
    regression = tables.read_kernel_regression(workdir / "results" / "tables" / "kernel_regression.parquet")
    assert len(regression) == 4 * 450 * 10  # steps 10, 100, 200 and t → ∞; every test example and class
    assert set(ntk["metric"]) == set(tables.NTK_METRICS)
    twin = ntk[ntk["model"] == "mlp_linear"]  # the deep linear twin of mlp, K = 1 only
    assert set(twin["activation"]) == {"linear"} and set(twin["K"]) == {1.0}
    frozen = ntk[(ntk.K == float("inf")) & (ntk.point == "linearisation") & (ntk.metric == "distance_from_init")]
    assert len(frozen) > 1 and (frozen.value == 0).all()  # K = ∞ never moves its kernel
    runs = metrics[["model", "K", "switch_step"]].drop_duplicates()
    assert len(runs) == 3 and set(runs["K"]) == {1.0, float("inf")}
    assert metrics["switch_step"].dropna().unique().tolist() == [50]
    assert sweep["switch_step"].isna().all() and len(sweep) < len(metrics)
    run_folder = workdir / "results" / "runs" / "digits" / "mlp" / "Kinf" / "seed0" / "base"
    assert yaml.safe_load((run_folder / "config.yaml").read_text())["K"] == float("inf")
    assert (run_folder / "run.json").is_file() and any((run_folder / "snapshots").iterdir())
    snapshots = len(list((run_folder / "snapshots").glob("step_*.npz")))
    run_name = run_folder.relative_to(workdir / "results" / "runs")
    ntk_log = (workdir / "results" / "logs" / "measure_ntk" / f"{run_name}.log").read_text()
    assert len(re.findall(rf"INFO itlin.measure_ntk: snapshot \d+/{snapshots} \(step \d+\): \d+\.\d s", ntk_log)) == snapshots

    test_config = ["--configfile", "config/test.yaml"]
    assert planned_jobs(workdir, *test_config)[0] == {}

    # A claim's threshold is a param of the claims rule alone: changing it rejudges, nothing more.
    config = load_config("test.yaml")
    config["claims"]["C2"]["min_gap_pt"] = 2.0
    (workdir / "stricter.yaml").write_text(yaml.safe_dump(config))
    assert planned_jobs(workdir, "--configfile", "stricter.yaml")[0] == {"claims": 1, "all": 1}

    # Restyling a figure redraws the figures and retrains nothing (Snakemake ignores a mere touch).
    plotting_code = workdir / "src" / "itlin" / "plots.py"
    plotting_code.write_text(plotting_code.read_text() + "\n# restyled\n")
    assert planned_jobs(workdir, *test_config)[0] == {**{figure: 1 for figure in FIGURES}, "all": 1}

    # Adding one K adds only that K's runs (and redoes the cheap tables, figures and claims).
    config = load_config("test.yaml")
    config["K"] = [1, 10, float("inf")]
    (workdir / "more_K.yaml").write_text(yaml.safe_dump(config))
    jobs, _ = planned_jobs(workdir, "--configfile", "more_K.yaml")
    assert jobs == {"run_config": 1, "train": 1, "aggregate": 1, "aggregate_sweep": 1, "aggregate_predictions": 1,
                    "measure_ntk": 1,
                    "aggregate_ntk": 1, "claims": 1, "all": 1,
                    **{figure: 1 for figure in FIGURES}}  # (all figures: still restyled, not redrawn yet)

    # The report shows every figure as a PNG, captioned with its claim, and the claims table as HTML.
    report = snakemake(workdir, *test_config, "--report", "report.html")
    assert report.returncode == 0, report.stdout + report.stderr
    results = report_results(workdir / "report.html")
    assert {path: result["mime_type"] for path, result in results.items()} == {
        **{f"figures/{figure}.png": "image/png" for figure in FIGURES}, "results/claims.html": "text/html"}
    assert "Claim C4" in results["figures/linearise_after_t.png"]["caption"]
    landing = report_landing_text(workdir / "report.html")
    c5 = load_config("test.yaml")["gauss_newton"]
    assert f"at K ∈ {{{', '.join(map(str, c5['K']))}}} against damped Gauss-Newton at λ = 1/(ηK)" in landing
    claims_page = base64.b64decode(results["results/claims.html"]["data_uri"].split(";base64,", 1)[1]).decode()
    table = claims_page[claims_page.index("<table"):claims_page.index("</table>")]
    for claim in CLAIM_IDS:
        assert f"<td>{claim}</td>" in table, claim

    # A failing job leaves its traceback in its log (and fails the pipeline).
    (workdir / "results" / "tables" / "metrics_sweep.parquet").write_bytes(b"not a parquet file")
    failed = snakemake(workdir, "figures/training_curves.pdf", *test_config)  # --configfile takes 1+ files
    assert failed.returncode != 0
    assert "Traceback" in (workdir / "results" / "logs" / "figures" / "training_curves.log").read_text()
