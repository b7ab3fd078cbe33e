"""``config/paper.yaml`` end to end on the CPU, at the paper's shapes: the real CIFAR-10 loader on an
archive in the official binary layout (generated pixels), resnet18 at its paper width, 32×32×3
images, augmentation, every stage from ``prepare_data`` to ``results/claims.md``. Only what must
shrink to run in minutes on 2 cores is overridden (``paper_shaped_overrides``), and the variant grid
shrinks to its augmented variant, as the K grid to one K (``paper_shaped_config``)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import QUICK_COMPILE

from itlin import data

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RECORDS = {**{name: 10_000 for name in data.CIFAR10_TRAIN_FILES}, data.CIFAR10_TEST_FILE: 10_000}
"""Records per member of the official archive: five training batches and the test batch."""


@pytest.fixture(scope="session")
def official_layout_archive(tmp_path_factory) -> Path:
    """``cifar-10-binary.tar.gz`` with the members, record counts and record format of the official
    archive (``cifar-10-batches-bin/``: ``data_batch_1..5.bin`` and ``test_batch.bin`` of 10,000
    records of a label byte and 3072 CHW pixel bytes, ``batches.meta.txt``, ``readme.html``); pixels
    are a fixed pattern per class plus noise. Built once per session (gzip level 1: seconds)."""
    path = tmp_path_factory.mktemp("itlin_cache") / data.CIFAR10_ARCHIVE
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 192, size=(10, 3 * 32 * 32), dtype=np.uint8)

    def add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
        info = tarfile.TarInfo(f"{data.CIFAR10_FOLDER}/{name}")
        info.size, info.mtime = len(payload), 1_244_000_000
        tar.addfile(info, io.BytesIO(payload))

    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        folder = tarfile.TarInfo(data.CIFAR10_FOLDER)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, count in RECORDS.items():
            labels = rng.integers(0, 10, size=count, dtype=np.uint8)
            pixels = patterns[labels] + rng.integers(0, 64, size=(count, 3 * 32 * 32), dtype=np.uint8)
            add(tar, name, np.concatenate([labels[:, None], pixels], axis=1).tobytes())
        add(tar, data.CIFAR10_META_FILE, ("\n".join(CLASS_NAMES) + "\n\n").encode())
        add(tar, "readme.html", b"<meta HTTP-EQUIV=\"REFRESH\" content=\"0; "
                                b"url=http://www.cs.toronto.edu/~kriz/cifar.html\">\n")
    return path


def paper_shaped_overrides(paper: dict, archive: Path) -> dict:
    """What ``config/paper.yaml`` must shrink to run on 2 CPU cores in minutes; merged after it
    (``paper_shaped_config``), so every key not named here, and every model at its paper size, is the
    paper's. Derived from the paper's config where it can be:
    when the paper's config changes (its K grid, its stages), this is the one place to adjust."""
    steps = 2  # the fewest a switch run allows (its step lies strictly inside the run)
    return {
        # The generated archive instead of the official one; a class-balanced fraction of each split,
        # since every evaluation covers the whole test split.
        "dataset": {"options": {"expected_size": archive.stat().st_size,
                                "expected_md5": hashlib.md5(archive.read_bytes()).hexdigest(),
                                "n_train": 100, "n_test": 10}},
        # K = ∞ alone: each K adds a run per model and variant whose NTKs (a resnet18 kernel on 10 probes
        # is 100 per-example gradients, about 30 CPU-seconds) cost more than the rest of the run. K = ∞
        # runs the linearised block program; the switch runs, whose one block ends at the switch, the
        # re-linearising one (K = 1's).
        "K": [paper["K"][-1]],
        "seeds": paper["seeds"][:1],
        # Step 1 of 2, on the CNN: a switch run's one new program is the re-linearising block (a standard
        # step), which resnet18's K = ∞ run outweighs at paper shapes (its linearised block).
        "switch": {"fractions": [0.5], "models": ["cnn"]},
        "training": {"steps": steps, "batch_size": 2, "eval_every": steps, "eval_train_size": 10,
                     "scan_steps": steps, "num_snapshots": 0, "checkpoint_every": steps},
        # One example per class; the probe set in one chunk (the CPU's automatic chunk would be one
        # example of resnet18, recomputing Jacobians many times over); a velocity pair (0, T) only.
        "ntk": {"probe_size": 10, "chunk_size": 10, "velocity_interval": steps},
        # The C5 sweep at the paper's training loss (the other is the same program with another loss, and
        # test_gauss_newton runs both), mini-batches (as the paper's) on a small class-balanced subset, one
        # and two rounds, the solvers' caps at two.
        "gauss_newton": {"losses": ["cross_entropy"], "train_size": 20, "steps": steps, "K": [1, steps],
                         "batch_size": 8, "cg_max_iterations": 2, "newton_max_steps": 2},
        "kernel_regression": {"train_size": 10, "steps": 10, "compare_steps": [5]},
        # The companion's full-batch gradient descent on 10 images, its step set by the job (auto), a snapshot at
        # the start and the end (and the velocity pair between them).
        "companion": {"training": {"steps": steps, "train_size": 10, "batch_size": 10, "eval_train_size": 10,
                                   "scan_steps": steps, "eval_every": steps, "num_snapshots": 2,
                                   "checkpoint_every": steps}},
        # A CPU machine: no GPU to claim; two jobs at once on 2 cores (but see --set-threads below).
        "resources": {"gpu": 0, "threads": 1},
    }


def paper_shaped_config(paper: dict, archive: Path) -> dict:
    """``config/paper.yaml`` with ``paper_shaped_overrides`` merged in as Snakemake merges config files,
    and its variants cut to the augmented one (a merge can add keys but not remove them): one variant
    exercises the augmentation code, both would double the resnet18 jobs; its companion to one CNN and its
    twin, the program of every depth."""
    def merged(base: dict, changes: dict) -> dict:
        return {key: merged(base[key], changes[key]) if isinstance(changes.get(key), dict) and key in base
                else changes.get(key, base.get(key)) for key in base | changes}

    config = merged(paper, paper_shaped_overrides(paper, archive))
    config["variants"] = {label: variant for label, variant in paper["variants"].items() if variant["augment"]}
    config["companion"]["models"] = dict(list(paper["companion"]["models"].items())[:1])  # the shallowest CNN
    return config


def snakemake(workdir: Path, *args: str, environment: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Snakemake of this interpreter in ``workdir``, on the CPU; jobs call the same interpreter's itlin, with
    XLA's full optimisation (the suite's ``QUICK_COMPILE`` off: these jobs compute for longer)."""
    env = os.environ | environment | {
        "JAX_PLATFORMS": "cpu", "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace(QUICK_COMPILE, "").strip(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_paper_config_runs_every_stage_at_paper_shapes(workdir: Path, official_layout_archive: Path):
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    shrunk = paper_shaped_config(paper, official_layout_archive)
    (workdir / "paper_shaped.yaml").write_text(yaml.safe_dump(shrunk))
    started = time.perf_counter()
    # An NTK job takes both cores, so one runs at a time: on the CPU a resnet18 NTK job holds its
    # Jacobians (10 probes × 10 classes × 11M parameters) in host memory, 15 GB at its peak.
    result = snakemake(workdir, "--cores", "2", "--set-threads", "measure_ntk=2",
                       "--configfile", "paper_shaped.yaml",
                       environment={"ITLIN_CACHE": str(official_layout_archive.parent)}, timeout=1200)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    print(f"config/paper.yaml, paper-shaped, end to end: {seconds:.0f} s")

    meta = json.loads((workdir / "resources" / "data" / "cifar10.json").read_text())
    assert meta["checksum"] == f"md5:{hashlib.md5(official_layout_archive.read_bytes()).hexdigest()}"
    assert meta["shapes"]["x_train"] == [100, 32, 32, 3] and meta["class_names"] == CLASS_NAMES
    for label, model in paper["models"].items():  # every model at its paper size
        run = json.loads(next((workdir / "results" / "runs" / "cifar10" / label).glob("*/seed*/*/run.json")).read_text())
        assert {key: run["config"]["model"][key] for key in model["kwargs"]} == model["kwargs"]
    runs = list((workdir / "results" / "runs").glob("cifar10/*/*/seed*/[!c]*/run.json"))
    assert len(runs) == (len(paper["models"]) + len(shrunk["switch"]["models"])) * len(shrunk["variants"])
    assert all(json.loads(path.read_text())["config"]["augment"] for path in runs)
    companion = [json.loads(path.read_text()) for path in (workdir / "results" / "runs").glob(
        "cifar10/*/K1/seed*/companion/run.json")]
    assert sorted(run["config"]["model"]["label"] for run in companion) == ["cnn2", "cnn2_linear"]
    for run in companion:  # the step each job set (auto): 1/λ_max of JᵀJ/n at θ₀
        assert run["config"]["optimizer"]["learning_rate"] == 1 / max(run["auto_learning_rate"]["largest_eigenvalues"])
    assert {json.loads(path.read_text())["status"] for path in runs} | {run["status"] for run in companion} == {"ok"}
    for figure in paper["figures"]:
        assert (workdir / "figures" / f"{figure}.pdf").read_bytes().startswith(b"%PDF")
    claims = (workdir / "results" / "claims.md").read_text()
    for claim in ["C1", "C2", "C3", "C4", "C5", "C6", "S1", "S2", "S3", "S4", "S5"]:
        assert re.search(rf"^\| {claim} \|", claims, flags=re.MULTILINE), claim


def test_cifar10_options_take_another_archive_and_class_balanced_subsets(official_layout_archive: Path, tmp_path):
    """The options a test gives ``itlin prepare`` for cifar10: the archive's size and MD5, and
    class-balanced subsets of the official splits; an impossible subset is named."""
    check = {"expected_size": official_layout_archive.stat().st_size,
             "expected_md5": hashlib.md5(official_layout_archive.read_bytes()).hexdigest()}
    meta = data.prepare("cifar10", tmp_path / "cifar10.npz", cache_dir=official_layout_archive.parent, **check,
                        n_train=30, n_test=20)
    prepared = data.load(tmp_path / "cifar10.npz")
    assert prepared.x_train.shape == (30, 32, 32, 3) and prepared.x_test.shape == (20, 32, 32, 3)
    assert np.bincount(prepared.y_train).tolist() == [3] * 10 and np.bincount(prepared.y_test).tolist() == [2] * 10
    assert meta["options"] == {"n_train": 30, "n_test": 20} and meta["checksum"] == f"md5:{check['expected_md5']}"
    with pytest.raises(data.DataError, match="n_test = 10001"):
        data.prepare("cifar10", tmp_path / "too_many.npz", cache_dir=official_layout_archive.parent, **check,
                     n_test=10_001)
