"""The pipeline as a user runs it, in a temporary copy of the working tree (never in the repository):
the DAG build time of a config (``snakemake -n``, with its job counts) and the wall time of the
default pipeline end to end (``snakemake --cores all``, on the CPU as the default config intends)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPOSITORY

OUTPUTS = ("results", "resources", "figures", "logs", "benchmarks", ".snakemake", ".venv", ".git", "__pycache__",
           ".pytest_cache")
"""What a copy leaves out when the tree is not a git checkout (git lists the tree itself otherwise)."""


def copy_tree(destination: Path) -> None:
    """Copy the working tree (tracked and untracked files that git does not ignore) to ``destination``."""
    if (REPOSITORY / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                                cwd=REPOSITORY, capture_output=True, check=True).stdout.decode()
        for name in filter(None, listed.split("\0")):
            source = REPOSITORY / name
            if source.is_file():
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination / name)
    else:
        shutil.copytree(REPOSITORY, destination, ignore=shutil.ignore_patterns(*OUTPUTS), dirs_exist_ok=True)


def snakemake(arguments: list[str], workdir: Path, **environment: str) -> tuple[float, str]:
    """Run Snakemake of this Python in ``workdir``; (wall seconds, its output). Jobs call ``python``,
    so this interpreter's folder goes first on PATH."""
    env = os.environ | environment
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "snakemake", *arguments], cwd=workdir, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(arguments)} failed in {workdir}:\n{done.stderr[-4000:]}")
    return seconds, done.stdout + done.stderr


def job_counts(output: str) -> dict[str, int]:
    """The per-rule job counts of Snakemake's ``Job stats`` table (the ``total`` row included)."""
    table = output.split("Job stats:", 1)[1]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.MULTILINE)}


def dag(config: str = "config/paper.yaml") -> dict:
    """Seconds to build the DAG of ``config`` and list its jobs (``snakemake -n``), and the job counts."""
    with tempfile.TemporaryDirectory(prefix="itlin_dag_") as folder:
        copy_tree(Path(folder))
        seconds, output = snakemake(["-n", "--configfile", config], Path(folder))
    return dict(config=config, command=f"snakemake -n --configfile {config}", seconds=seconds,
                jobs=job_counts(output))


def default_pipeline(cores: str = "all") -> dict:
    """Wall seconds of ``snakemake --cores all`` (the default config, JAX on the CPU) in a fresh copy."""
    with tempfile.TemporaryDirectory(prefix="itlin_pipeline_") as folder:
        copy_tree(Path(folder))
        seconds, output = snakemake(["--cores", cores], Path(folder), JAX_PLATFORMS="cpu")
    return dict(command=f"snakemake --cores {cores}", seconds=seconds, cores=os.cpu_count(), jobs=job_counts(output))
