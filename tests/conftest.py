"""Shared fixtures: the CPU backend, a tiny prepared dataset and run configs."""

import os
import shutil
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

QUICK_COMPILE = "--xla_backend_optimization_level=0"
"""XLA flag of every program the suite compiles, in process and in the jobs it starts: the tests compile
hundreds of programs that each run for milliseconds, where LLVM's optimisation costs more than it saves
(on the 2-core CPU machine: test_models 106 → 66 s, the bench's GPU smoke and memory tests 120 → 84 s).
The paper-shaped pipeline, whose jobs compute for longer, runs without it."""
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {QUICK_COMPILE}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from itlin import data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Share compiled programs between the many short runs of the suite (each builds its own jit), and with
    the processes the tests start (runs, pipelines, SLURM jobs: gpu_slot.py keeps a cache the environment
    names), in one folder for every xdist worker of the session. The tiny config's pipeline takes a third
    less CPU time with a warm cache."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jax_cache"
    folder.mkdir(exist_ok=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic image-classification set (8x8x1, 4 classes), prepared once per session."""
    path = tmp_path_factory.mktemp("data") / "synthetic.npz"
    data.prepare("synthetic", path, seed=0, n_train=256, n_test=128, image_size=8, channels=1, num_classes=4)
    return path


@pytest.fixture(scope="session")
def tiny_data_16(tmp_path_factory):
    """The tiny set at 16x16, so that resnet18's last stage still sees a 2x2 feature map."""
    path = tmp_path_factory.mktemp("data16") / "synthetic16.npz"
    data.prepare("synthetic", path, seed=0, n_train=128, n_test=64, image_size=16, channels=1, num_classes=4)
    return path


@pytest.fixture(scope="session")
def mnist1d_data(tmp_path_factory):
    """MNIST-1D as the default options make it (the published 4000 + 1000 examples, 4000 more test examples),
    generated once per session (seconds)."""
    path = tmp_path_factory.mktemp("mnist1d") / "mnist1d.npz"
    data.prepare("mnist1d", path, seed=MNIST1D_PUBLISHED_SEED)
    return path


MNIST1D_PUBLISHED_SEED = 42
"""``get_dataset_args()['seed']``: the seed of the published MNIST-1D split."""


@pytest.fixture
def run_config(tiny_data):
    """A factory of valid run configs on the tiny data; keyword arguments override keys."""

    def make(**overrides):
        config = dict(
            data=str(tiny_data), dataset="synthetic", model={"name": "mlp", "depth": 1, "width": 32},
            K=1, switch_step=None, seed=0, variant="base", steps=40, batch_size=32,
            optimizer={"name": "adam", "learning_rate": 1e-3, "momentum": 0.0, "schedule": "constant"},
            loss="cross_entropy", augment=False, reset_optimizer=False, proximal_damping=0.0, eval_every=20,
            eval_train_size=64, scan_steps=5, num_snapshots=4, velocity_interval=5, checkpoint_every=10,
        )
        config.update(overrides)
        return config

    return make


def train_run(config, out: Path, scratch: Path | None = None, **options) -> str:
    """Train one run (a job of one lane) from a run config (mapping or ``RunConfig``) into ``out``; its status."""
    from itlin import record, train_job

    config = config if isinstance(config, record.RunConfig) else record.RunConfig.from_dict(config)
    return train_job.run([config], [out], scratch, **options)[0]


def copy_workflow(destination: Path) -> Path:
    """Copy the workflow (Snakefile, rules, configs, profiles, environment, library sources) into ``destination``."""
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(ROOT / name, destination / name)
    for name in ("workflow", "config", "profiles", "src"):
        shutil.copytree(ROOT / name, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the workflow in a temporary folder."""
    return copy_workflow(tmp_path)


LONGEST_FIRST = ("test_paper_scale.py", "test_train.py", "test_workflow.py", "test_slurm.py", "test_models.py",
                 "test_bench.py", "test_claims.py", "test_ntk.py")
"""The test files that take longest, longest first by a full run's seconds on the 2-core machine (each runs on one
worker: pyproject's --dist loadfile, in this order: --no-loadscope-reorder, where xdist would otherwise order files
by their number of tests and start a long file of two tests last)."""


def pytest_collection_modifyitems(items):
    """Start the longest files first, so that the workers do not end on one of them alone."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the others keep their order
