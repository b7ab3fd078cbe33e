"""Local GPU mapping (workflow/scripts/gpu_slot.py), checked on the CPU through the environment a
job's command receives: concurrent jobs get distinct devices and a job waits while all are taken,
a CPU job sees no GPU, a SLURM job keeps SLURM's devices, jobs that share a device do not
preallocate its memory; and the train rule runs its command through it (tests/test_slurm.py
checks the same in real SLURM jobs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GPU_SLOT = ROOT / "workflow" / "scripts" / "gpu_slot.py"
# The job: write the GPU variables it received to a file, then hold its device for a while.
SHOW_ENVIRONMENT = ("import json, os, sys, time; "
                    "variables = {name: os.environ.get(name) for name in ('CUDA_VISIBLE_DEVICES', "
                    "'XLA_PYTHON_CLIENT_PREALLOCATE')}; "
                    "variables['cores'] = sorted(os.sched_getaffinity(0)); "
                    "open(sys.argv[1] + '.tmp', 'w').write(json.dumps(variables)); "
                    "os.replace(sys.argv[1] + '.tmp', sys.argv[1]); time.sleep(float(sys.argv[2]))")
JOB_VARIABLES = ("CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_PREALLOCATE", "SLURM_JOB_ID", "ITLIN_JOBS_PER_GPU")


def launch(tmp_path: Path, name: str, gpus: int, hold: float = 0.0, threads: int | None = None,
           **variables: str) -> subprocess.Popen:
    """Start a job of ``gpus`` GPUs (and ``threads`` threads) through gpu_slot.py with the given launching
    environment."""
    env = {key: value for key, value in os.environ.items() if key not in JOB_VARIABLES}
    env.update(variables)
    return subprocess.Popen(
        [sys.executable, str(GPU_SLOT), "--gpus", str(gpus), "--locks", str(tmp_path / "locks"),
         "--core-locks", str(tmp_path / "core_locks"), *(["--threads", str(threads)] if threads else []), "--",
         sys.executable, "-c", SHOW_ENVIRONMENT, str(tmp_path / f"{name}.json"), str(hold)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def received(tmp_path: Path, name: str, seconds: float = 20.0) -> dict[str, str | None]:
    """The GPU variables job ``name`` received, once it has started (None: not started in time)."""
    path, deadline = tmp_path / f"{name}.json", time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file():
            return {key: value for key, value in json.loads(path.read_text()).items() if key != "cores"}
        time.sleep(0.05)
    return None


def cores(tmp_path: Path, name: str) -> list[int]:
    """The cores job ``name`` may run on, once it has started."""
    assert received(tmp_path, name) is not None, name
    return json.loads((tmp_path / f"{name}.json").read_text())["cores"]


def test_concurrent_jobs_get_distinct_devices_and_wait_while_all_are_taken(tmp_path: Path):
    jobs = [launch(tmp_path, "first", 1, hold=60, CUDA_VISIBLE_DEVICES="0,1")]
    try:
        assert received(tmp_path, "first") == {"CUDA_VISIBLE_DEVICES": "0", "XLA_PYTHON_CLIENT_PREALLOCATE": None}
        jobs.append(launch(tmp_path, "second", 1, hold=60, CUDA_VISIBLE_DEVICES="0,1"))
        assert received(tmp_path, "second")["CUDA_VISIBLE_DEVICES"] == "1"
        jobs.append(launch(tmp_path, "third", 1, CUDA_VISIBLE_DEVICES="0,1"))
        assert received(tmp_path, "third", seconds=2) is None  # both devices are taken: it waits
        jobs[0].send_signal(signal.SIGKILL)  # a job killed outright still frees its device
        assert received(tmp_path, "third")["CUDA_VISIBLE_DEVICES"] == "0"
        assert jobs[2].wait(timeout=20) == 0
        assert "all 2 GPU slots are taken" in jobs[2].stderr.read()
    finally:
        for job in jobs:
            job.kill()
            job.wait()


def test_jobs_sharing_a_device_do_not_preallocate_its_memory(tmp_path: Path):
    jobs = [launch(tmp_path, name, 1, hold=30, CUDA_VISIBLE_DEVICES="3", ITLIN_JOBS_PER_GPU="2")
            for name in ("first", "second")]
    try:
        for name in ("first", "second"):
            assert received(tmp_path, name) == {"CUDA_VISIBLE_DEVICES": "3", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    finally:
        for job in jobs:
            job.kill()
            job.wait()


def test_cpu_job_sees_no_gpu(tmp_path: Path):
    job = launch(tmp_path, "cpu", 0, CUDA_VISIBLE_DEVICES="0,1")
    assert job.wait(timeout=20) == 0
    assert received(tmp_path, "cpu")["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_concurrent_cpu_jobs_run_on_cores_of_their_own_and_share_when_none_is_free(tmp_path: Path):
    """Two CPU jobs of one thread each get a core of their own; a third, with no core free, shares the first
    (a job always sees as many cores as it asked for: XLA:CPU's numbers depend on it); a CPU job in a SLURM
    job keeps what SLURM gave it."""
    everything = sorted(os.sched_getaffinity(0))
    jobs = [launch(tmp_path, name, 0, hold=60, threads=1) for name in ("first", "second")]
    try:
        first, second = (cores(tmp_path, name) for name in ("first", "second"))
        assert len(first) == len(second) == 1 and first != second and {*first, *second} <= set(everything)
        crowded = launch(tmp_path, "crowded", 0, threads=len(everything))
        assert crowded.wait(timeout=20) == 0 and cores(tmp_path, "crowded") == everything
        assert "shares cores" in crowded.stderr.read()
    finally:
        for job in jobs:
            job.kill()
            job.wait()
    slurm = launch(tmp_path, "slurm", 0, threads=1, SLURM_JOB_ID="42")
    assert slurm.wait(timeout=20) == 0 and cores(tmp_path, "slurm") == everything


def test_slurm_job_keeps_the_devices_slurm_allocated(tmp_path: Path):
    job = launch(tmp_path, "slurm", 1, CUDA_VISIBLE_DEVICES="5", SLURM_JOB_ID="42")
    assert job.wait(timeout=20) == 0
    assert received(tmp_path, "slurm") == {"CUDA_VISIBLE_DEVICES": "5", "XLA_PYTHON_CLIENT_PREALLOCATE": None}
    assert "(SLURM's allocation)" in job.stderr.read()
    assert not (tmp_path / "locks").exists()


def test_gpu_job_where_no_gpu_is_visible_fails_naming_the_count(tmp_path: Path):
    job = launch(tmp_path, "none", 1, CUDA_VISIBLE_DEVICES="")
    assert job.wait(timeout=20) != 0
    assert "asks for 1 GPU(s) but 0 are visible" in job.stderr.read()
    assert received(tmp_path, "none", seconds=0.1) is None


def test_train_rule_runs_its_command_through_gpu_slot_with_its_gpu_count(tmp_path: Path):
    """The train rule's shell command, in a dry run of a config asking for one GPU per run."""
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("workflow", "config", "profiles", "src"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    config["resources"]["gpu"] = 1
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--printshellcmds", "--configfile",
                             "gpu.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    commands = re.findall(r"\bpython \S*gpu_slot\.py --gpus (\d+) --threads \d+ --compilation-cache \S+ -- "
                          r"python -m itlin train ", output)
    jobs = re.findall(r"^rule train(?:_width)?:$", output, flags=re.MULTILINE)  # the width sweep's jobs too
    assert len(commands) == len(jobs) > 0 and set(commands) == {"1"}, output


CACHE_VARIABLES = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")


def _job_cache_settings(tmp_path: Path, **environment: str) -> dict[str, str | None]:
    """The cache variables a job sees, started through gpu_slot.py with ``--compilation-cache results/jax_cache``
    from an environment of ``environment`` and none of the cache variables."""
    shown = (f"import json, os, sys; json.dump({{name: os.environ.get(name) for name in {CACHE_VARIABLES!r}}}, "
             "open(sys.argv[1], 'w'))")
    env = {name: value for name, value in os.environ.items() if name not in CACHE_VARIABLES} | environment
    subprocess.run([sys.executable, str(GPU_SLOT), "--gpus", "0", "--compilation-cache", "results/jax_cache", "--",
                    sys.executable, "-c", shown, str(tmp_path / "job.json")], check=True, timeout=60, env=env)
    return json.loads((tmp_path / "job.json").read_text())


def test_every_program_of_a_job_goes_to_the_compilation_cache(tmp_path: Path):
    """``--compilation-cache``: the job reads and writes JAX's cache there, with no compile-time threshold
    (JAX's default of 1 s would leave out every program of a small model); a cache and threshold the
    environment already names are kept."""
    assert _job_cache_settings(tmp_path) == {
        "JAX_COMPILATION_CACHE_DIR": "results/jax_cache", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    assert _job_cache_settings(tmp_path, JAX_COMPILATION_CACHE_DIR="/shared/cache") == {
        "JAX_COMPILATION_CACHE_DIR": "/shared/cache", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    assert _job_cache_settings(tmp_path, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="2") == {
        "JAX_COMPILATION_CACHE_DIR": "results/jax_cache", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2"}
