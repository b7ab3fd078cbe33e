"""SLURM: a job of each GPU rule of the tiny config submitted through profiles/slurm, edited as README.md tells a
user, to a real one-node cluster without GPUs started on this machine (tests/slurm/setup.sh), and a train job
cancelled mid-run that Snakemake resubmits and that resumes from its checkpoint to the metrics of
an uninterrupted run. Without a cluster: the profile's placeholders are refused before any job,
and under the profile every GPU job of the paper config asks for one GPU and goes to the GPU
partition, every job of a CPU config to the CPU partition, by the plugin's own partition choice.

Every claim about a cluster run is checked against SLURM itself (squeue, scontrol, the job logs).
The cluster tests skip, with the reason, where the machine cannot run a cluster (not root, no
apt-get or no network for it, daemons that cannot start); the daemons they start are stopped by
PID at the end, pass or fail (tests/slurm/teardown.sh)."""

from __future__ import annotations

import os
import logging
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from itlin import workflow

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "slurm"
PARTITION = "debug"  # the one partition of the test cluster (tests/slurm/setup.sh)
SETUP_SECONDS = 600  # apt-get update and install on a fresh machine, then the daemons
SNAKEMAKE_SECONDS = 600  # a stuck Snakemake ignores SIGTERM: `timeout -k` kills it after this


@dataclass
class Cluster:
    """A running test cluster: its state folder and the environment its clients need."""

    state: Path
    env: dict[str, str]  # PATH to this interpreter's environment, SLURM_CONF, JAX_PLATFORMS

    def run(self, *command: str) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{' '.join(command)}: {result.stderr}"
        return result.stdout

    def jobs(self, name: str) -> list[dict[str, str]]:
        """Every job of one Snakemake run (its SLURM run ID is the job name), finished ones included."""
        lines = self.run("squeue", "--states=all", "--noheader", f"--name={name}", "--format=%i|%T|%k").split()
        return [dict(zip(("id", "state", "comment"), line.split("|"))) for line in lines]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a mapping."""
        return dict(re.findall(r"(\w+)=(\S*)", self.run("scontrol", "show", "job", job_id)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """A one-node SLURM cluster on this machine for this module; its daemons are stopped afterwards."""
    state = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, JAX_PLATFORMS="cpu", SLURM_CONF=str(state / "slurm.conf"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"], "/usr/sbin", "/sbin"]),
               SLURMCTLD_PORT=str(_free_port()), SLURMD_PORT=str(_free_port()))
    try:
        try:
            setup = subprocess.run(["bash", str(SCRIPTS / "setup.sh"), str(state)], env=env, capture_output=True,
                                   text=True, timeout=SETUP_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.skip(f"SLURM cluster not ready after {SETUP_SECONDS} s (tests/slurm/setup.sh)")
        if setup.returncode == 77:
            pytest.skip(setup.stderr.strip())
        assert setup.returncode == 0, setup.stdout + setup.stderr
        yield Cluster(state, env)
    finally:
        subprocess.run(["bash", str(SCRIPTS / "teardown.sh"), str(state)], env=env, timeout=120)


def edited_profile(folder: Path, cpu_partition: str, gpu_partition: str | None) -> Path:
    """profiles/slurm copied to ``folder`` and edited as README.md tells a user: the partition names
    in partitions.yaml (the GPU partition's line deleted on a cluster without GPUs) and the account
    line deleted (a cluster without accounts); nothing else."""
    shutil.copytree(ROOT / "profiles" / "slurm", folder)
    partitions = folder / "partitions.yaml"
    lines = partitions.read_text().replace("your_cpu_partition", cpu_partition).splitlines(keepends=True)
    if gpu_partition is None:
        lines = [line for line in lines if "your_gpu_partition" not in line]
    partitions.write_text("".join(lines).replace("your_gpu_partition", str(gpu_partition)))
    config = folder / "config.yaml"
    config.write_text("".join(line for line in config.read_text().splitlines(keepends=True)
                              if not line.lstrip().startswith("slurm_account:")))
    return folder


def cluster_profile(workdir: Path) -> Path:
    """profiles/slurm edited for this cluster (its one partition, no GPUs, no account), with status
    checks through squeue every few seconds (there is no accounting database, so no sacct)."""
    folder = edited_profile(workdir / "slurm_test_profile", PARTITION, gpu_partition=None)
    profile = yaml.safe_load((folder / "config.yaml").read_text())
    profile.update({
        "slurm-status-command": "squeue",  # setup.sh's MinJobAge is 300 s, over 3 x 2 s
        "slurm-init-seconds-before-status-checks": 2,
        "seconds-between-status-checks": 2,
        "slurm-keep-successful-logs": True,
        "latency-wait": 5,
    })
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """Snakemake of this interpreter with the test profile, under `timeout -k` (SIGKILL 10 s after SIGTERM)."""
    return ["timeout", "-k", "10", str(SNAKEMAKE_SECONDS), sys.executable, "-m", "snakemake",
            "--profile", str(cluster_profile(workdir)), *args]


def slurm_run_id(output: str) -> str | None:
    """The SLURM run ID Snakemake logs at start (every job of the run is named by it); None before that."""
    match = re.search(r"SLURM run ID: (\S+)", output)
    return match.group(1) if match else None


def derived_config(workdir: Path, name: str, **training) -> Path:
    """config/test.yaml with some training keys changed, written into the workdir."""
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    config["training"].update(training)
    path = workdir / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_each_gpu_rule_of_the_tiny_config_runs_on_slurm_through_the_profile(cluster: Cluster, workdir: Path):
    """What only a cluster shows (test_workflow runs the tiny config end to end on this machine): each rule that
    profiles/slurm submits (training, the NTK, C5 and C6) runs as a SLURM job. One job of each, with what it
    needs, since every further job adds seconds of SLURM scheduling."""
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    grid = workflow.run_grid(config)
    targets = [f"results/ntk/{grid.sweep[-1]}.parquet", f"results/gauss_newton/{grid.gauss_newton[0]}.parquet",
               f"results/kernel_regression/{grid.kernel_regression[0]}.parquet"]
    result = subprocess.run(snakemake_command(workdir, *targets, "--configfile", "config/test.yaml"), cwd=workdir,
                            env=cluster.env, capture_output=True, text=True, timeout=SNAKEMAKE_SECONDS + 30)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for target in targets:
        assert len(pd.read_parquet(workdir / target)) > 0, target

    # Every training run was a SLURM job that completed, on this cluster's partition,
    # in the workdir; its SLURM log is Snakemake's record of that job.
    runs = sorted(path.parent for path in (workdir / "results" / "runs").rglob("metrics.parquet"))
    run_id = slurm_run_id(output)
    assert run_id, output
    jobs = cluster.jobs(run_id)
    train_jobs = [job for job in jobs if job["comment"].startswith("rule_train_")]
    # the NTK job of a model measures its runs at every K: each K's training job ran
    assert len(runs) == len(config["seeds"]) * len(config["K"]) and len(train_jobs) == len(config["K"]), (runs, jobs)
    for job in train_jobs:
        details = cluster.job(job["id"])
        assert (job["state"], details["ExitCode"]) == ("COMPLETED", "0:0"), details
        assert details["Partition"] == PARTITION and Path(details["WorkDir"]) == workdir, details
        logs = list((workdir / ".snakemake" / "slurm_logs" / "rule_train").rglob(f"{job['id']}.log"))
        assert len(logs) == 1 and "Finished job" in logs[0].read_text(), logs
    # ... and its command saw no GPU, as the config asks (resources.gpu: 0).
    for run in runs:
        job = workflow.training_job(str(run.relative_to(workdir / "results" / "runs")))
        log = workdir / "results" / "logs" / "train" / f"{job}.log"
        assert "gpu_slot: 0 GPU(s) asked; CUDA_VISIBLE_DEVICES=''" in log.read_text()
    # The GPU rules that profiles/slurm names, and only they, became SLURM jobs: a GPU rule missing
    # from the profile would land on the CPU partition; the localrules (here the data and the run
    # configs; in a full run also tables, figures and claims) ran here.
    submitted_rules = {re.sub(r"^rule_(\w+?)(_wildcards_.*)?$", r"\1", job["comment"]) for job in jobs}
    gpu_rules = set(yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())["set-resources"])
    assert submitted_rules == gpu_rules - {"train_width", "measure_ntk_k1"}, submitted_rules  # not targeted here


@pytest.mark.slow
def test_cancelled_train_job_is_resubmitted_and_resumes_from_its_checkpoint(cluster: Cluster, workdir: Path):
    """scancel sends SIGTERM (the run checkpoints at its next block and exits 143), then SIGKILL
    after KillWait; Snakemake sees the job CANCELLED and resubmits it (profile `retries`)."""
    config_file = derived_config(workdir, "long_run.yaml", steps=4_000, eval_every=1_000, checkpoint_every=200)
    config = yaml.safe_load(config_file.read_text())
    run = "{}/{}/K1/seed{}/{}".format(config["dataset"]["name"], next(iter(config["models"])), config["seeds"][0],
                                      next(iter(config["variants"])))
    run_dir = workdir / "results" / "runs" / run
    checkpoints = workdir / "results" / "scratch" / workflow.training_job(run) / "checkpoints"

    def train_jobs() -> list[dict[str, str]]:
        run_id = slurm_run_id((workdir / "snakemake.log").read_text())
        return [job for job in cluster.jobs(run_id) if job["comment"].startswith("rule_train_")] if run_id else []

    with open(workdir / "snakemake.log", "w") as log, open(workdir / "reference.log", "w") as reference_log:
        snakemake = subprocess.Popen(
            snakemake_command(workdir, f"results/runs/{run}/metrics.parquet", "--configfile", config_file.name),
            cwd=workdir, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
        reference = None
        try:
            _wait_for(lambda: [job["state"] for job in train_jobs()] == ["RUNNING"], 120, "running SLURM train job")
            # The uninterrupted run to compare with: the same run config (its data are ready, since
            # the train job runs), trained here meanwhile.
            reference = subprocess.Popen(
                [sys.executable, "-m", "itlin", "train", "--config", str(run_dir / "config.yaml"),
                 "--out", "reference", "--scratch", "reference_scratch"],
                cwd=workdir, env=cluster.env, stdout=subprocess.DEVNULL, stderr=reference_log)
            _wait_for(lambda: checkpoints.is_dir() and any(path.name.isdigit() for path in checkpoints.iterdir()),
                      120, "checkpoint of the SLURM train job")
            cancelled = train_jobs()
            assert [job["state"] for job in cancelled] == ["RUNNING"], cancelled
            cluster.run("scancel", cancelled[0]["id"])
            assert snakemake.wait(timeout=SNAKEMAKE_SECONDS + 30) == 0, (workdir / "snakemake.log").read_text()
            assert reference.wait(timeout=120) == 0, (workdir / "reference.log").read_text()
        finally:
            for process in (snakemake, reference):
                if process is not None and process.poll() is None:
                    process.kill()

    jobs = sorted(train_jobs(), key=lambda job: int(job["id"]))
    assert [job["state"] for job in jobs] == ["CANCELLED", "COMPLETED"], jobs
    assert jobs[0]["id"] == cancelled[0]["id"], jobs
    resumed = re.search(r"resuming from checkpoint at step (\d+)", (workdir / "results" / "logs" / "train" /
                                                                     f"{workflow.training_job(run)}.log").read_text())
    assert resumed and 0 < int(resumed.group(1)) < config["training"]["steps"]
    without_clock = lambda frame: frame.drop(columns="wall_time_s")  # noqa: E731
    pd.testing.assert_frame_equal(without_clock(pd.read_parquet(run_dir / "metrics.parquet")),
                                  without_clock(pd.read_parquet(workdir / "reference" / "metrics.parquet")))


def _wait_for(condition, seconds: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.2)


# ---------------------------------------------------------------- the profile, without a cluster


def snakemake_here(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake of this interpreter in ``workdir``, no cluster needed (dry runs, refusals)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)


def planned_resources(workdir: Path, *args: str) -> list[tuple[str, int, dict[str, object]]]:
    """(rule, threads, resources) of every job of a dry run."""
    result = snakemake_here(workdir, "--dry-run", *args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    jobs = []
    for block in re.split(r"^(?:local)?rule ", output, flags=re.MULTILINE)[1:]:
        rule = block[: block.index(":")]
        threads = re.search(r"^\s+threads: (\d+)$", block, flags=re.MULTILINE)
        resources = re.search(r"^\s+resources: (.*)$", block, flags=re.MULTILINE)
        pairs = (item.split("=", 1) for item in resources.group(1).split(", ")) if resources else ()
        jobs.append((rule, int(threads.group(1)) if threads else 1,
                     {key: int(value) if value.isdigit() else value for key, value in pairs}))
    return jobs


def chosen_partition(partitions_file: Path, rule: str, threads: int, resources: dict) -> tuple[str | None, str]:
    """The partition snakemake-executor-plugin-slurm submits a job with these resources to, given the
    profile's partitions file, and the GPU options it adds to sbatch."""
    from snakemake.iocontainers import Namedlist
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Job:  # the attributes of a job the plugin reads when it picks a partition
        name, threads = rule, None

    job = Job()
    job.threads, job.resources = threads, Namedlist(fromdict=resources)
    partitions = read_partition_file(partitions_file)
    return get_best_partition(partitions, job, logging.getLogger("slurm-plugin")), set_gres_string(job)


def test_unedited_profile_is_refused_before_any_job(workdir: Path):
    result = snakemake_here(workdir, "--profile", "profiles/slurm", "--configfile", "config/test.yaml")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    lines = (workdir / "profiles" / "slurm" / "partitions.yaml").read_text().splitlines()
    for placeholder in ("your_cpu_partition", "your_gpu_partition"):
        number = next(index for index, line in enumerate(lines, start=1) if line.lstrip().startswith(placeholder))
        assert f"profiles/slurm/partitions.yaml, line {number}: {placeholder}" in output, output
    assert "default-resources: slurm_account: your_account" in output, output
    assert "Traceback" not in output, output
    assert not (workdir / "results").exists() and not (workdir / "resources").exists()
    assert not (workdir / ".snakemake" / "slurm_logs").exists()


def test_gpu_config_without_a_gpu_partition_is_refused(workdir: Path):
    profile = edited_profile(workdir / "cpu_only", "cpu", gpu_partition=None)
    result = snakemake_here(workdir, "--profile", str(profile), "--configfile", "config/paper.yaml")
    assert result.returncode != 0
    assert "config key 'resources.gpu' = 1 asks for GPUs, but no partition" in result.stdout + result.stderr
    assert not (workdir / "results").exists() and not (workdir / "resources").exists()


@pytest.mark.parametrize("config_name, gpus, partition", [("paper.yaml", 1, "gpu"), ("test.yaml", 0, "cpu")])
def test_jobs_ask_for_the_configs_gpus_and_go_to_a_partition_that_has_them(workdir: Path, config_name: str,
                                                                          gpus: int, partition: str):
    """A dry run under profiles/slurm (edited for a cluster with both kinds of partition): every GPU
    rule's job asks for the config's GPUs (one each for the paper, none for a CPU config), and the
    plugin sends it to the GPU partition, with `--gpus=1`, or to the CPU partition, without."""
    profile = edited_profile(workdir / "edited", "cpu", "gpu")
    gpu_rules = set(yaml.safe_load((profile / "config.yaml").read_text())["set-resources"])
    jobs = planned_resources(workdir, "--profile", str(profile), "--configfile", f"config/{config_name}")
    submitted = [(rule, threads, resources) for rule, threads, resources in jobs if rule in gpu_rules]
    # paper.yaml has no width sweep: no jobs of the width sweep's training
    expected = gpu_rules - ({"train_width"} if config_name == "paper.yaml" else set())
    assert {rule for rule, _, _ in submitted} == expected
    for rule, threads, resources in submitted:
        assert resources["gpu"] == gpus and "slurm_partition" not in resources, (rule, resources)
    for rule in expected:  # the plugin's choice depends on the resources, not the wildcards: one job of each rule
        threads, resources = next((threads, resources) for name, threads, resources in submitted if name == rule)
        assert chosen_partition(profile / "partitions.yaml", rule, threads, resources) == (
            partition, f" --gpus={gpus}" if gpus else "")
