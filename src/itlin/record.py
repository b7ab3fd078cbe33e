"""The run record: what one training run is (its config, ``RunConfig``), how its period K is
parsed, named and printed, and what its folder holds (metrics, predictions, ``run.json`` and the
snapshots of θ and θ_lin). Every stage after training reads runs through this module, never
through the trainer."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from itlin import validation

# JAX (and the models, which import it) is imported inside the few functions that handle parameters, so
# that the tables, figures and claims, which read only the run record's names and K, never load it.

TRAINING_SCHEMA = Path(__file__).with_name("training.schema.yaml")
"""JSON Schema of the training keys of a run config: that of the workflow config's ``training`` section."""
IDENTITY_KEYS = ("data", "dataset", "model", "K", "switch_step", "seed", "variant", "augment", "velocity_interval")
"""The keys of a run config that are not training settings: which data, model, schedule, seed and variant."""
EVALUATORS = ("linear", "network")
"""The models a run evaluates at the same θ: the trained linear model f_lin and the network f."""

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.parquet"
PREDICTIONS_FILE = "predictions.parquet"
SUMMARY_FILE = "run.json"
SNAPSHOTS_FOLDER = "snapshots"
"""A run folder: its config, its metrics and final test predictions, a summary, and the snapshots."""
SNAPSHOT_NAME = re.compile(r"step_(\d+)\.npz")
_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
AUTO_RATE = "auto"
"""``optimizer.learning_rate: auto``: the training job sets the step to 1/λ_max of JᵀJ/n at θ₀ on the run's
training subset, the largest λ_max over the job's lanes (``itlin.ntk.largest_eigenvalues``): half the stability
limit of full-batch gradient descent on the MSE for every lane, the companion's rule at any scale."""


def auto_rate_problem(optimizer: dict, loss: str, batch_size: int, train_size: int | None,
                      augment: bool = False) -> str | None:
    """Why ``learning_rate: auto`` does not apply to these training settings, or None: its rule is a step of
    full-batch gradient descent (SGD without momentum at a constant rate, the batch the whole fixed subset,
    without augmentation) on the MSE, whose curvature JᵀJ/n it measures."""
    if optimizer["name"] != "sgd" or optimizer.get("momentum") or optimizer.get("schedule", "constant") != "constant":
        return "auto needs plain gradient descent: optimizer sgd, momentum 0, schedule constant"
    if loss != "mse":
        return f"auto is a step for the mse loss, whose curvature it measures, not {loss}"
    if train_size is None or batch_size != train_size or augment:
        return (f"auto needs full batches: batch_size ({batch_size}) equal to train_size ({train_size}), "
                "without augmentation")
    return None


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of one run; see ``config/README.md`` for the meaning of each key. A setting with
    a default (last, after those without) may be left out of a config: the run gets the default."""

    data: str
    dataset: str
    model: dict
    K: float
    switch_step: int | None
    seed: int
    variant: str
    steps: int
    batch_size: int
    optimizer: dict
    loss: str
    augment: bool
    reset_optimizer: bool
    proximal_damping: float
    eval_every: int
    eval_train_size: int
    scan_steps: int
    num_snapshots: int
    velocity_interval: int
    checkpoint_every: int
    gradient_clip_norm: float | None = None
    train_size: int | None = None

    @classmethod
    def from_dict(cls, raw: dict) -> "RunConfig":
        """Validate a run config mapping, naming the offending key in every error.

        The training keys are checked against ``TRAINING_SCHEMA`` (types, ranges), as the workflow
        checks its config; the run's own keys (``IDENTITY_KEYS``) and the relations between keys here.
        """
        if not isinstance(raw, dict):
            raise ValueError(f"a run config is a mapping of keys to values, got {type(raw).__name__}")
        fields = dataclasses.fields(cls)
        unknown = sorted(set(raw) - {f.name for f in fields})
        missing = [f.name for f in fields if f.name not in raw and f.default is dataclasses.MISSING]
        if unknown:
            raise ValueError(f"unknown run config key(s): {', '.join(unknown)}")
        if missing:
            raise ValueError(f"missing run config key(s): {', '.join(missing)}")
        validation.validate({key: value for key, value in raw.items() if key not in IDENTITY_KEYS}, TRAINING_SCHEMA,
                            what="run config key")
        values = dict(raw)
        values["K"] = parse_K(raw["K"])
        config = cls(**values)
        config._check()
        return config

    def _check(self) -> None:
        def require(condition: bool, key: str, message: str) -> None:
            if not condition:
                raise ValueError(f"{key}: {message}")

        def integer(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        from itlin import models

        require(isinstance(self.model, dict) and self.model.get("name") in models.MODELS, "model.name",
                f"must be one of {sorted(models.MODELS)}, got {self.model.get('name') if isinstance(self.model, dict) else self.model!r}")
        for key in ("data", "dataset", "variant"):
            require(isinstance(getattr(self, key), str), key, f"must be text, got {getattr(self, key)!r}")
        require(integer(self.seed) and self.seed >= 0, "seed", f"must be an integer >= 0, got {self.seed!r}")
        require(isinstance(self.augment, bool), "augment", f"must be true or false, got {self.augment!r}")
        require(self.switch_step is None or integer(self.switch_step), "switch_step",
                f"must be null or an integer, got {self.switch_step!r}")
        require(integer(self.velocity_interval) and self.velocity_interval > 0, "velocity_interval",
                f"must be an integer > 0 (one at least steps={self.steps} saves no pairs), got {self.velocity_interval!r}")
        for key in ("eval_every", "checkpoint_every", "steps", "velocity_interval"):
            require(getattr(self, key) % self.scan_steps == 0, key,
                    f"must be a multiple of scan_steps ({self.scan_steps})")
        for key in ("batch_size", "eval_train_size"):
            require(self.train_size is None or getattr(self, key) <= self.train_size, key,
                    f"{getattr(self, key)} is more than the train_size of {self.train_size}")
        if self.optimizer["learning_rate"] == AUTO_RATE:
            problem = auto_rate_problem(self.optimizer, self.loss, self.batch_size, self.train_size, self.augment)
            require(problem is None, "optimizer.learning_rate", problem or "")
        if self.switch_step is not None:
            require(self.K == 1, "K", "a switch-step run trains normally before the switch, so K must be 1")
            require(0 <= self.switch_step <= self.steps, "switch_step",
                    f"must lie in [0, steps={self.steps}], got {self.switch_step}")

    @property
    def model_label(self) -> str:
        """The model's name in results (``model.label`` if set, e.g. ``cnn_deep``)."""
        return self.model.get("label", self.model["name"])

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["K"] = K_for_config(self.K)
        return values


def parse_K(value: Any) -> float:
    """K is an integer >= 1 or infinity (``inf``, ``.inf`` in YAML): never re-linearise."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity", ".inf"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"K: must be an integer >= 1 or inf, got {value!r}")
    if math.isinf(value) and value > 0:
        return math.inf
    if value != int(value) or value < 1:
        raise ValueError(f"K: must be an integer >= 1 or inf, got {value!r}")
    return float(int(value))


def K_for_config(K: float) -> int | str:
    """K as written in a run config: an integer, or ``inf``."""
    return "inf" if math.isinf(K) else int(K)


def format_K(K: float) -> str:
    """The period K as printed in figures and claims: '1', '10', '10²', '2·10⁴', '∞'."""
    if math.isinf(K):
        return "∞"
    K = int(K)
    exponent = int(math.log10(K))
    mantissa, remainder = divmod(K, 10**exponent)
    if exponent < 2 or remainder:
        return f"{K:,}"
    power = "10" + str(exponent).translate(_SUPERSCRIPTS)
    return power if mantissa == 1 else f"{mantissa}·{power}"


def schedule_name(K: float | str, switch_step: int | None = None) -> str:
    """The path component of a schedule: ``K1``, ``K10``, ``Kinf``; ``switch<t>`` for a switch run."""
    if switch_step is not None:
        return f"switch{int(switch_step)}"
    return f"K{K_for_config(parse_K(K))}"


WIDTH_LABEL = re.compile(r"(?P<model>.+)_w(?P<width>\d+)")
"""A width sweep model's label: ``<model>_w<width>`` (C7)."""


def width_label(model: str, width: int) -> str:
    """The label of the width sweep's model ``model`` at ``width``."""
    return f"{model}_w{width}"


def width_variant(regime: str) -> str:
    """The variant of the width sweep's runs in ``regime`` (a label under the config's ``width.regimes``)."""
    return f"width_{regime}"


def parse_width_label(label: str) -> tuple[str, int]:
    """(model, width) of a width sweep label (the inverse of ``width_label``)."""
    match = WIDTH_LABEL.fullmatch(label)
    if not match:
        raise ValueError(f"{label!r} is not a width sweep label (<model>_w<width>)")
    return match["model"], int(match["width"])


def parse_schedule(name: str) -> tuple[float, int | None]:
    """(K, switch step) of a schedule path component; a switch run trains with K = 1 until its step."""
    if name.startswith("switch"):
        return 1.0, int(name.removeprefix("switch"))
    period = name.removeprefix("K")
    return parse_K(int(period) if period.isdigit() else period), None


def load_config(path: Path) -> RunConfig:
    """Read and validate a run config YAML file (a syntax error names its line)."""
    return RunConfig.from_dict(validation.load_yaml(path))


def snapshot_steps(steps: int, scan_steps: int, count: int, interval: int) -> list[int]:
    """Log-spaced steps t (dense early, where the NTK moves fastest) on the scan grid, plus 0 and the
    end, each with its partner t + ``interval`` (where that is within the run): the pairs from which
    the NTK stage measures the kernel velocity at a fixed interval."""
    grid = np.geomspace(scan_steps, steps, num=max(count, 1))
    rounded = {int(round(s / scan_steps)) * scan_steps for s in grid}
    main = {0, steps} | {s for s in rounded if 0 < s <= steps}
    return sorted(main | {t + interval for t in main if t + interval <= steps})


def snapshot_path(folder: Path, step: int) -> Path:
    """The snapshot file of ``step`` in a snapshots folder."""
    return Path(folder) / f"step_{step:07d}.npz"


def snapshots(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every snapshot in ``folder``, by step."""
    found = sorted((int(match.group(1)), path) for path in Path(folder).glob("step_*.npz")
                   if (match := SNAPSHOT_NAME.fullmatch(path.name)))
    if not found:
        raise FileNotFoundError(f"{folder}: no snapshots (step_*.npz) to measure")
    return found


def _flatten_with_names(tree) -> dict[str, np.ndarray]:
    import jax

    from itlin import models

    return dict(zip(models.parameter_paths(tree), (np.asarray(leaf) for leaf in jax.tree.leaves(tree))))


def save_snapshot(path: Path, params, params_lin) -> None:
    """Write θ and θ_lin to one ``.npz`` (keys ``theta/<param path>``, ``theta_lin/<param path>``)."""
    arrays = {f"theta/{k}": v for k, v in _flatten_with_names(params).items()}
    arrays |= {f"theta_lin/{k}": v for k, v in _flatten_with_names(params_lin).items()}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_snapshot(path: Path, like) -> tuple[Any, Any]:
    """Read (θ, θ_lin) from a snapshot, shaped like the parameter pytree ``like``."""
    import jax
    import jax.numpy as jnp

    from itlin import models

    with np.load(path) as stored:
        treedef = jax.tree_util.tree_structure(like)
        names = models.parameter_paths(like)
        trees = [jax.tree_util.tree_unflatten(treedef, [jnp.asarray(stored[f"{prefix}/{name}"]) for name in names])
                 for prefix in ("theta", "theta_lin")]
    return trees[0], trees[1]


def fingerprint(tree, *extra: bytes) -> str:
    """SHA-256 of every array of a pytree (dtype, shape and bytes, in tree order), then of ``extra``:
    equal for bit-identical trees. It keys the NTK's kernels of a snapshot and checks checkpoints."""
    import jax

    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        array = np.ascontiguousarray(leaf)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.data)
    for part in extra:
        digest.update(part)
    return digest.hexdigest()


def environment() -> dict:
    """Library versions and the device, recorded with every output."""
    import jax

    packages = ["jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "itlin"]
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = jax.devices()[0]
    return {"versions": versions, "device": {"platform": device.platform, "kind": device.device_kind,
                                             "count": jax.device_count(), "host": platform.node()}}


def switch_steps(fractions: list[float], steps: int) -> list[int]:
    """The switch step t = round(f·T) of each fraction f of a run of T steps (the C4 runs)."""
    return [int(round(fraction * steps)) for fraction in fractions]
