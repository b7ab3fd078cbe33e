"""NTK measurements of one training run: the empirical NTK (``itlin.ntk``) on the dataset's probe set at
every parameter snapshot the run saved, and the measures docs/science.md defines on it (the kernel's
change from initialisation, its velocity, its alignment with the labels and its class specialisation),
in the tidy ``tables.NTK_COLUMNS`` schema. The run is read through its record (``itlin.record``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np
import pandas as pd

from itlin import data, models, ntk, record, tables

log = logging.getLogger(__name__)


class KernelSummary(NamedTuple):
    """What the measurements need of one parameter snapshot's kernels on the probe set."""

    trace: np.ndarray  # (n, n), every parameter
    alignment: float  # centred (Cortes et al. 2012)
    alignment_uncentred: float  # uncentred (Cristianini et al. 2002)
    specialisation: np.ndarray  # (C, C), per-head kernels of every parameter
    specialisation_backbone: np.ndarray  # (C, C), per-head kernels of the parameters below the readout
    target_energy: np.ndarray  # (2C,), C(k) of the trace kernel for k = 1 … 2C (S4)


KERNEL_GROUPS: dict[str, ntk.ParameterFilter | None] = {"all": None, "backbone": models.below_readout}
"""The parameter groups whose per-head kernels are measured: every parameter, and the backbone (every
parameter below the readout layer, which adds the same φ(x)·φ(x') to every head's kernel)."""


def summarise_kernels(per_class: dict[str, np.ndarray], labels: np.ndarray, num_classes: int) -> KernelSummary:
    """The ``KernelSummary`` of the per-class kernels of ``KERNEL_GROUPS`` on a probe set with ``labels``."""
    trace = per_class["all"].sum(0)
    return KernelSummary(trace, ntk.target_alignment(trace, labels, num_classes),
                         ntk.uncentred_target_alignment(trace, labels, num_classes),
                         ntk.specialisation(per_class["all"], labels),
                         ntk.specialisation(per_class["backbone"], labels),
                         ntk.target_energy(trace, labels, num_classes, min(ENERGY_RANKS * num_classes, len(labels))))


ENERGY_RANKS = 2
"""S4's ranks k run from 1 to this many times the number of classes: past the C − 1 directions the centred
targets span, to show how much of them the kernel's top eigenvectors still miss."""


def measure_runs(run_dirs: list[Path], data_path: Path, probe_size: int, *, probe_seed: int = 0,
                 chunk_size: int | None = None, strategy: str = "auto") -> list[pd.DataFrame]:
    """NTK measurements at every snapshot of each training run, in the ``tables.NTK_COLUMNS`` schema.

    The runs (a training job's seeds) share one model architecture: the kernel programs are built for it
    once and serve every run. At each snapshot step at θ_lin (point ``linearisation``, the trained kernel) and at
    the last snapshot at θ too (point ``network``; not for K = 1, whose θ_lin is θ one step earlier) the
    per-class kernels
    on the dataset's class-balanced probe set
    (``data.probe_indices``), of every parameter and of the backbone, give: against the kernel at θ₀ (the
    step-0 snapshot), the Fort ``distance_from_init``, ``relative_change``, ``norm_ratio`` and
    ``centred_distance`` of the trace kernel; its centred ``alignment`` and ``alignment_uncentred`` with the
    labels; the C×C ``specialisation`` and ``specialisation_backbone`` matrices (one row per entry); the
    ``target_energy`` C(k) of the centred targets in the top-k eigenvectors, k = 1 … 2C (a row per k); and,
    where the snapshot at t + δ exists (δ: the run's ``velocity_interval``), the ``velocity``
    d(Θ_t, Θ_{t+δ})/δ at step t. The model is rebuilt from ``run.json``; kernels of identical parameters
    (θ_lin between re-linearisations, every θ_lin of K = ∞) are computed once, so their distances are
    exactly zero. A diverged run (``run.json``: ``status``, ``diverged_step``) is measured only at its
    snapshots before its first non-finite loss, and every row records the run's status and divergence
    step. A degenerate kernel (zero norm) gives NaN measures, with a warning.
    """
    summaries = []
    for run_dir in map(Path, run_dirs):
        summary_path = run_dir / record.SUMMARY_FILE
        if not summary_path.exists():
            raise FileNotFoundError(f"{summary_path}: not found; is {run_dir} a finished training run?")
        summaries.append((run_dir, json.loads(summary_path.read_text())))
    configs = [record.RunConfig.from_dict(summary["config"]) for _, summary in summaries]
    if any(config.model != configs[0].model for config in configs):
        raise ValueError(f"the runs measured together must share their model: {run_dirs}")
    dataset = data.load(Path(data_path))
    # kernels in float32 whatever the run's compute_dtype, so that every run's NTK is measured alike
    model = models.from_spec(configs[0].model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                             seed=configs[0].seed, compute_dtype="float32")
    probe = data.probe_indices(dataset.y_train, probe_size, seed=probe_seed)
    x, labels = jnp.asarray(dataset.x_train[probe]), dataset.y_train[probe]

    def kernels(params) -> KernelSummary:
        per_class = ntk.empirical_ntks(model.apply, params, x, groups=KERNEL_GROUPS, kind="per_class",
                                       chunk_size=chunk_size, strategy=strategy)
        return summarise_kernels(per_class, labels, dataset.num_classes)

    return [_measure_run(run_dir, config, summary["diverged_step"], model.params, kernels, probe_size)
            for (run_dir, summary), config in zip(summaries, configs)]


def _measure_run(run_dir: Path, config: record.RunConfig, diverged_step: int | None, like,
                 kernels: Callable[[Any], KernelSummary], probe_size: int) -> pd.DataFrame:
    """The measurements of ``measure_runs`` for one run, its snapshots' kernels given by ``kernels``."""
    snapshots = record.snapshots(run_dir / record.SNAPSHOTS_FOLDER)
    if diverged_step is not None:
        later = [step for step, _ in snapshots if step >= diverged_step]
        snapshots = [(step, path) for step, path in snapshots if step < diverged_step]
        log.warning("%s diverged at step %d: its snapshots at steps %s are not measured", run_dir, diverged_step,
                    later or "(none)")

    cache: dict[str, KernelSummary] = {}

    def summarise(params) -> KernelSummary:
        key = record.fingerprint(params)
        if key not in cache:
            cache[key] = kernels(params)
        return cache[key]

    rows, initial, measured = [], None, {}
    interval = config.velocity_interval
    # The trained kernel, at θ_lin, at every snapshot (what every claim and figure reads); the network's, at θ,
    # at the last one: where it has moved furthest from θ_lin. Standard training (K = 1, not a switch run)
    # re-linearises at every step, so its θ_lin is θ one step earlier: its θ_lin alone.
    network_at = None if config.K == 1 and config.switch_step is None else snapshots[-1][0]
    log.info("%s: %d snapshots, %d probe examples", run_dir, len(snapshots), probe_size)
    for index, (step, path) in enumerate(snapshots, start=1):
        started = time.perf_counter()
        theta, theta_lin = record.load_snapshot(path, like=like)
        points = [("network", theta)] if step == network_at else []
        for point, params in [*points, ("linearisation", theta_lin)]:
            kernel, first_row = summarise(params), len(rows)
            if initial is None:
                if step != 0:
                    raise ValueError(f"{run_dir / 'snapshots'}: the first snapshot is step {step}, "
                                     "but distances from initialisation need step_0000000.npz")
                initial = kernel
            rows += [_row(step, point, metric, measure(initial.trace, kernel.trace))
                     for metric, measure in CHANGE_MEASURES.items()]
            rows += [_row(step, point, "alignment", kernel.alignment),
                     _row(step, point, "alignment_uncentred", kernel.alignment_uncentred)]
            for metric in tables.SPECIALISATION_METRICS:
                rows += [_row(step, point, metric, float(value), c, t)
                         for (c, t), value in np.ndenumerate(getattr(kernel, metric))]
            rows += [_row(step, point, "target_energy", float(value), top_k=k)
                     for k, value in enumerate(kernel.target_energy, start=1)]
            if (step - interval, point) in measured:
                before = measured[step - interval, point]
                velocity = ntk.kernel_velocity(before.trace, kernel.trace, interval)
                rows.append(_row(step - interval, point, "velocity", velocity))
            undefined = sorted({row["metric"] for row in rows[first_row:] if math.isnan(row["value"])})
            if undefined:
                log.warning("%s step %d (%s): degenerate kernel (zero norm, e.g. every ReLU dead): %s recorded "
                            "as NaN", run_dir, step, point, ", ".join(undefined))
            measured[step, point] = kernel
        log.info("snapshot %d/%d (step %d): %.1f s, %d distinct kernels so far", index, len(snapshots), step,
                 time.perf_counter() - started, len(cache))
    return _ntk_frame(rows, config, probe_size, diverged_step)


CHANGE_MEASURES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "distance_from_init": ntk.kernel_distance,
    "relative_change": ntk.relative_change,
    "norm_ratio": ntk.norm_ratio,
    "centred_distance": ntk.centred_distance,
}
"""NTK-table metric -> its measure of the trace kernel at a snapshot against the kernel at θ₀."""


def _row(step: int, point: str, metric: str, value: float, output_class: int | None = None,
         target_class: int | None = None, top_k: int | None = None) -> dict:
    return dict(step=step, point=point, metric=metric, output_class=output_class, target_class=target_class,
                top_k=top_k, value=value)


def _ntk_frame(rows: list[dict], config: record.RunConfig, probe_size: int,
               diverged_step: int | None) -> pd.DataFrame:
    """The rows of one run with its keys and status, in the ``tables.NTK_COLUMNS`` schema."""
    frame = pd.DataFrame(rows, columns=["step", "point", "metric", "output_class", "target_class", "top_k", "value"])
    keys = dict(dataset=config.dataset, model=config.model_label, architecture=config.model["name"],
                depth=config.model.get("depth"), activation=config.model.get("activation", "relu"), K=config.K,
                switch_step=config.switch_step, seed=config.seed, variant=config.variant, probe_size=probe_size,
                status="ok" if diverged_step is None else "diverged", diverged_step=diverged_step)
    frame = frame.assign(**{key: [value] * len(frame) for key, value in keys.items()})
    return tables.validate("ntk", frame, f"NTK measurements of run {config.model_label} K={config.K}")
