"""A training job: every seed of one (dataset, model, schedule, variant), trained as lanes of one compiled
program (``train.Trainer`` with ``seeds``), from the seeds' run configs to one run folder per seed. (The width
sweep's jobs train every period K of a model as lanes too: each lane is one (seed, K).)

The folders are what a run of each seed on its own writes (metrics, final test predictions, ``run.json``,
the snapshots), so the stages after training see no difference. The host intervenes only between blocks
of ``scan_steps`` steps: to evaluate, to save snapshots of θ and θ_lin, and to write Orbax checkpoints of
the whole job into a scratch folder, from which a killed job resumes. A lane whose loss stops being finite
is recorded as diverged at that step and frozen there while the others finish.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from itlin import data, models, ntk, record, tables
from itlin.checkpoints import Checkpoints, Preempted, TerminationRequest
from itlin.record import EVALUATORS, RunConfig
from itlin.train import TrainData, Trainer

log = logging.getLogger(__name__)


@dataclass
class Lane:
    """One lane of a job (a seed, at its period K): its config, its run folder, and its evaluation rows so far."""

    config: RunConfig
    out_dir: Path
    rows: list[dict] = field(default_factory=list)
    diverged_step: int | None = None
    predicted: np.ndarray | None = None  # the final test predictions of both evaluators, (2, n)
    several_periods: bool = False  # the job's lanes differ in K: lanes are named by seed and K

    @property
    def status(self) -> str:
        return "ok" if self.diverged_step is None else "diverged"

    @property
    def name(self) -> str:
        """The lane in logs and scratch folders: ``seed0``, or ``seed0_K100`` in a job of several periods."""
        return f"seed{self.config.seed}" + (f"_K{record.K_for_config(self.config.K)}" if self.several_periods else "")


LANE_KEYS = ("seed", "K")
"""What the run configs of one job's lanes may differ in: the seed, and the period K (traced)."""


def lane_config(configs: Sequence[RunConfig]) -> RunConfig:
    """The settings the lanes share (the first config): every config must differ from it in ``LANE_KEYS``
    alone, and no (seed, K) may come twice."""
    if not configs:
        raise ValueError("a training job needs at least one run config")
    first = configs[0].to_dict()
    for config in configs[1:]:
        other = config.to_dict()
        differing = sorted(key for key in first if key not in LANE_KEYS and first[key] != other[key])
        if differing:
            raise ValueError(f"the run configs of one job may differ in their seed and K only; these differ: "
                             f"{', '.join(differing)}")
    lanes = [(config.seed, config.K) for config in configs]
    if len(set(lanes)) < len(lanes):
        raise ValueError(f"seed: each lane of a job needs its own seed (or K), got {[seed for seed, _ in lanes]}")
    return configs[0]


def run(configs: Sequence[RunConfig], out_dirs: Sequence[Path], scratch_dir: Path | None = None, *,
        block_mode: str | None = None) -> list[str]:
    """Train the runs ``configs`` (one per seed, otherwise equal) as lanes into ``out_dirs``; checkpoints go
    to ``scratch_dir`` (default: ``scratch`` in the first run folder). Returns each run's ``ok`` or ``diverged``.

    ``block_mode`` (``scan`` or ``dispatch``; None: the backend's default) picks how blocks of steps run
    (``train.block_runner``); it changes no result beyond float rounding, so it is not part of the run
    config, and a job may resume in the other mode."""
    started = time.perf_counter()
    if len(configs) != len(out_dirs):
        raise ValueError(f"{len(configs)} run configs but {len(out_dirs)} output folders")
    config = lane_config(configs)
    several_periods = len({lane_config.K for lane_config in configs}) > 1
    lanes = [Lane(seed_config, Path(out_dir), several_periods=several_periods)
             for seed_config, out_dir in zip(configs, out_dirs)]
    scratch_dir = Path(scratch_dir or lanes[0].out_dir / "scratch")
    dataset = data.load(Path(config.data))
    for key in ("batch_size", "eval_train_size", "train_size"):
        if (getattr(config, key) or 0) > len(dataset.y_train):
            raise ValueError(f"{key}: {getattr(config, key)} is more than the {len(dataset.y_train)} training examples "
                             f"of {config.data}")
    seeds = [lane.config.seed for lane in lanes]
    initial = [models.from_spec(config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                                seed=seed) for seed in seeds]
    # One rule draws both subsets (a prefix of one fixed permutation), so the train metrics' examples are
    # examples the run trains on.
    trained = data.training_subset(dataset.y_train, config.train_size, class_balanced=False)
    train_data = TrainData.of(dataset.x_train[trained], dataset.y_train[trained])
    job = {}
    if config.optimizer["learning_rate"] == record.AUTO_RATE:
        job["auto_learning_rate"] = auto_rate(initial, train_data.x)
        for lane in lanes:
            lane.config = dataclasses.replace(lane.config, optimizer={
                **lane.config.optimizer, "learning_rate": job["auto_learning_rate"]["learning_rate"]})
        config = lanes[0].config
    trainer = Trainer(config, initial[0], block_mode, seeds=seeds, periods=[lane.config.K for lane in lanes])
    subset = data.training_subset(dataset.y_train, config.eval_train_size, class_balanced=False)
    eval_x = jnp.asarray(np.concatenate([dataset.x_train[subset], dataset.x_test]))
    eval_y = jnp.asarray(np.concatenate([dataset.y_train[subset], dataset.y_test]), jnp.int32)
    splits = {"train": slice(0, len(subset)), "test": slice(len(subset), None)}

    checkpoints = Checkpoints(scratch_dir / "checkpoints", configs)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(model.params for model in initial))
    state, saved_rows, elapsed = checkpoints.restore(trainer.init_state(stacked))
    for lane, rows in zip(lanes, saved_rows or [[] for _ in lanes]):
        lane.rows = rows
    snapshots_dir = scratch_dir / "snapshots"
    snapshot_at = set(record.snapshot_steps(config.steps, config.scan_steps, config.num_snapshots,
                                            config.velocity_interval))
    step = int(state.step[0])
    _drop_snapshots_after(snapshots_dir, step)
    clock = time.perf_counter() - elapsed

    termination = TerminationRequest()
    bar = tqdm(total=config.steps, initial=step, unit="step", disable=None, dynamic_ncols=True,
               desc=f"{config.model_label} {' '.join(sorted({f'K={record.K_for_config(lane.config.K)}' for lane in lanes}))} "
                    f"seeds {','.join(map(str, sorted(set(seeds))))}")
    resumed_step = step if step > 0 else None  # its evaluation and snapshot precede its checkpoint
    while True:
        if step != resumed_step and (step % config.eval_every == 0 or step == config.steps
                                     or step in snapshot_at):
            diverged_at = np.asarray(state.diverged_at)
            for lane, diverged in zip(lanes, diverged_at):
                if diverged >= 0 and lane.diverged_step is None:
                    lane.diverged_step = int(diverged)
                    log.warning("%s diverged: non-finite loss at step %d", lane.name, diverged)
            live = [index for index, lane in enumerate(lanes) if lane.diverged_step is None]
            if not live:
                break
            if step % config.eval_every == 0 or step == config.steps:
                per_example = np.asarray(trainer.evaluate(state.params, state.params_lin, eval_x, eval_y))
                feature_updates = np.asarray(state.feature_updates)
                for index in live:
                    lanes[index].rows += _metric_rows(step, int(feature_updates[index]), per_example[index], splits,
                                                      time.perf_counter() - clock)
                    if step == config.steps:
                        lanes[index].predicted = per_example[index, :, 2, splits["test"]]
                _report_progress(bar, step, config.steps, [lanes[index] for index in live])
            if step in snapshot_at:
                for index in live:
                    folder = snapshots_dir / lanes[index].name
                    folder.mkdir(parents=True, exist_ok=True)
                    record.save_snapshot(record.snapshot_path(folder, step), *jax.tree.map(
                        lambda leaf: leaf[index], (state.params, state.params_lin)))
        if step == config.steps:
            break
        if step > 0 and step > checkpoints.latest and (step % config.checkpoint_every == 0 or termination.requested):
            checkpoints.save(step, state, [lane.rows for lane in lanes], time.perf_counter() - clock)
        if termination.requested:
            checkpoints.close()
            bar.close()
            termination.restore()
            raise Preempted(f"SIGTERM: checkpoint written at step {checkpoints.latest}; "
                            "run the same command again to resume")
        state = trainer.train_steps(state, train_data, config.scan_steps, start=step, progress=bar)
        step += config.scan_steps
    bar.close()
    checkpoints.close()
    termination.restore()

    wall_time = time.perf_counter() - clock
    feature_updates = np.asarray(state.feature_updates)
    for index, lane in enumerate(lanes):
        _write_run(lane, int(feature_updates[index]), snapshots_dir / lane.name, dataset.y_test,
                   dict(block_mode=trainer.block_mode, lanes=seeds, wall_time_s=wall_time,
                        session_time_s=time.perf_counter() - started, **job, **record.environment()))
    if checkpoints.damaged.exists():  # the rest of the scratch folder goes; damaged checkpoints are kept to inspect
        shutil.rmtree(checkpoints.directory)
        shutil.rmtree(snapshots_dir, ignore_errors=True)
        log.warning("damaged checkpoints kept in %s (the job did not use them): delete the folder when done",
                    checkpoints.damaged)
    else:
        shutil.rmtree(scratch_dir)
    log.info("job finished after %.1f s: %s", wall_time,
             ", ".join(f"{lane.name} {lane.status}" for lane in lanes))
    return [lane.status for lane in lanes]


def _drop_snapshots_after(snapshots_dir: Path, step: int) -> None:
    """Remove the snapshots past ``step``, where the job starts or resumes: an earlier attempt's (killed after its
    last checkpoint, or under another config, or with damaged checkpoints), which this one writes again where its
    lanes get there. A run's snapshots are then those of its own training alone."""
    for path in snapshots_dir.glob("*/step_*.npz"):
        match = record.SNAPSHOT_NAME.fullmatch(path.name)
        if match and int(match.group(1)) > step:
            path.unlink()


def auto_rate(initial: Sequence[models.Model], x: jax.Array) -> dict:
    """``learning_rate: auto`` of a job (``record.AUTO_RATE``): 1/λ_max of JᵀJ/n at θ₀ on the training subset
    ``x``, the largest λ_max over the lanes' initial networks, so every lane steps at half its stability limit
    or less; with each lane's λ_max, for ``run.json``."""
    eigenvalues = ntk.largest_eigenvalues(initial[0].apply, [network.params for network in initial], x)
    rate = 1.0 / max(eigenvalues)
    log.info("learning_rate auto: 1/λ_max of JᵀJ/n at θ₀ = %.4g (λ_max per lane %s)", rate,
             ", ".join(f"{value:.4g}" for value in eigenvalues))
    return dict(learning_rate=rate, largest_eigenvalues=eigenvalues)


def _write_run(lane: Lane, feature_updates: int, snapshots: Path, labels: np.ndarray, job: dict) -> None:
    """One lane's run folder: metrics (a diverged run's rows end with NaN rows at its divergence step),
    final test predictions (none if diverged), ``run.json`` and its snapshots."""
    config, rows = lane.config, lane.rows
    if lane.diverged_step is not None:
        # The diverged step may itself have been evaluated (it was the last evaluation step): its rows, of
        # parameters whose loss is not finite, are replaced by the diverged rows.
        rows = [row for row in rows if row["step"] < lane.diverged_step]
        rows += _diverged_rows(lane.diverged_step, feature_updates, job["wall_time_s"])
    lane.out_dir.mkdir(parents=True, exist_ok=True)
    metrics_frame(config, rows, lane.status).to_parquet(lane.out_dir / record.METRICS_FILE, index=False)
    predicted = np.empty((len(EVALUATORS), 0)) if lane.predicted is None else lane.predicted
    labels = labels if lane.predicted is not None else np.empty(0, np.int64)
    predictions_frame(config, config.steps, predicted, labels).to_parquet(
        lane.out_dir / record.PREDICTIONS_FILE, index=False)
    final = {f"{row['split']}_{row['evaluator']}_accuracy": row["accuracy"] for row in rows[-4:]}
    summary = dict(config=config.to_dict(), status=lane.status, diverged_step=lane.diverged_step,
                   steps_done=config.steps if lane.diverged_step is None else lane.diverged_step,
                   feature_updates=feature_updates, final=final, **job)
    (lane.out_dir / record.SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    final_snapshots = lane.out_dir / record.SNAPSHOTS_FOLDER
    if final_snapshots.exists():
        shutil.rmtree(final_snapshots)
    if snapshots.exists():
        shutil.copytree(snapshots, final_snapshots)
    else:
        final_snapshots.mkdir()


def _metric_rows(step: int, feature_updates: int, per_example: np.ndarray, splits: dict[str, slice],
                 wall_time: float) -> list[dict]:
    rows = []
    for split, where in splits.items():
        for e, evaluator in enumerate(EVALUATORS):
            loss, correct = per_example[e, 0, where], per_example[e, 1, where]
            rows.append(dict(step=step, feature_updates=feature_updates, split=split, evaluator=evaluator,
                             loss=float(loss.mean()), accuracy=float(correct.mean()), wall_time_s=wall_time))
    return rows


def _diverged_rows(step: int, feature_updates: int, wall_time: float) -> list[dict]:
    return [dict(step=step, feature_updates=feature_updates, split=split, evaluator=evaluator,
                 loss=math.nan, accuracy=math.nan, wall_time_s=wall_time)
            for split in ("train", "test") for evaluator in EVALUATORS]


def metrics_frame(config: RunConfig, rows: list[dict], status: str) -> pd.DataFrame:
    """The run's rows in the shared long-format schema (``itlin.tables.METRICS_COLUMNS``), validated."""
    keys = dict(dataset=config.dataset, model=config.model_label, K=config.K, switch_step=config.switch_step,
                seed=config.seed, variant=config.variant, status=status)
    return tables.validate("metrics", pd.DataFrame(rows).assign(**keys),
                           f"run {config.model_label} K={record.K_for_config(config.K)}")


def predictions_frame(config: RunConfig, step: int, predicted: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """The test split's per-example predictions of both evaluators at ``step`` (``predicted``: (2, n)
    classes), in ``tables.PREDICTIONS_COLUMNS``; for the claims' bootstrap over test examples."""
    n = len(labels)
    frame = pd.DataFrame(dict(
        dataset=config.dataset, model=config.model_label, K=config.K, switch_step=config.switch_step,
        seed=config.seed, variant=config.variant, step=step, evaluator=np.repeat(EVALUATORS, n),
        example=np.tile(np.arange(n), len(EVALUATORS)), label=np.tile(labels, len(EVALUATORS)),
        prediction=predicted.reshape(-1).astype(np.int64)), columns=list(tables.PREDICTIONS_COLUMNS))
    frame["switch_step"] = pd.array(frame["switch_step"], dtype="Int64")
    return tables.validate("predictions", frame,
                           f"predictions of run {config.model_label} K={record.K_for_config(config.K)}")


def _report_progress(bar, step: int, steps: int, lanes: list[Lane]) -> None:
    """One evaluation's numbers as a log line (or on the progress bar of a terminal): per live lane, the loss
    on the train subset and the test accuracy of f_lin, as in the metrics table (at step 0, of θ₀), and the
    feature updates so far of the lanes' periods."""
    latest = [{row["split"]: row for row in lane.rows[-4:] if row["evaluator"] == "linear"} for lane in lanes]
    losses = " ".join(f"{rows['train']['loss']:.4f}" for rows in latest)
    accuracies = " ".join(f"{rows['test']['accuracy']:.3f}" for rows in latest)
    feature_updates = " ".join(sorted({str(lane.rows[-1]["feature_updates"]) for lane in lanes}, key=int))  # per K
    if bar.disable:
        log.info("step %d/%d | train loss (f_lin) %s | test acc (f_lin) %s | feature updates %s",
                 step, steps, losses, accuracies, feature_updates)
    else:
        bar.set_postfix(loss=losses, test_acc=accuracies, feature_updates=feature_updates)
