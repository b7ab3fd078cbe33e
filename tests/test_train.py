"""The method of docs/science.md, asserted: K = 1 is standard training, f_lin is the first-order Taylor
model of f, K = ∞ never moves θ_lin, feature-update counts, switch runs, resume, divergence."""

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from conftest import train_run
import yaml
from jax.flatten_util import ravel_pytree

from itlin import checkpoints, cli, data, models, record, tables, train, train_job, validation
from itlin.linearise import expected_feature_updates, linearise, relinearise_now, relinearises_throughout

MODELS = {"mlp": {"depth": 2, "width": 16}, "cnn": {"depth": 2, "width": 8}, "resnet18": {"width": 4}}


def trainer_for(config: dict, block_mode: str | None = None) -> tuple[train.Trainer, train.TrainData]:
    run_config = record.RunConfig.from_dict(config)
    dataset = data.load(run_config.data)
    model = models.from_spec(run_config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                             seed=run_config.seed)
    train_data = train.TrainData(jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train))
    return train.Trainer(run_config, model, block_mode), train_data


def test_gradient_clip_norm_bounds_each_step(run_config):
    """With plain SGD of rate η, a step clipped to global norm c moves θ by at most ηc; unclipped, further."""
    sgd = {"name": "sgd", "learning_rate": 0.1, "momentum": 0.0, "schedule": "constant"}
    moved = {}
    for clip in (None, 1e-3):
        trainer, train_data = trainer_for(run_config(optimizer=sgd, scan_steps=1, gradient_clip_norm=clip))
        state = trainer.init_state()
        first = jax.tree.map(jnp.copy, state.params)
        state = trainer.train_steps(state, train_data, 1)
        moved[clip] = float(optax.tree.norm(jax.tree.map(jnp.subtract, state.params, first)))
    assert moved[1e-3] <= 0.1 * 1e-3 * (1 + 1e-5) < moved[None]


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name, relinearise_every_step", [
    *[(name, every_step) for name in ("cnn", "mlp") for every_step in (False, True)], ("resnet18", True)],
    ids=lambda value: {False: "linearised step", True: "relinearising step"}.get(value, value))
def test_K1_is_standard_training(run_config, tiny_data_16, name, relinearise_every_step):
    """K = 1 equals plain gradient training of f, step by step: through the linearised step (the
    program of every schedule) and through the re-linearising step (the one K = 1 runs use). resnet18
    runs the latter only: the linearised step equals it where f_lin's gradient at θ_lin is f's, which
    test_models checks on every model (the schedule's logic is the mlp's and the cnn's here)."""
    config = run_config(model={"name": name, **MODELS[name]}, K=1)
    if name == "resnet18":
        config["data"] = str(tiny_data_16)
    trainer, train_data = trainer_for(config)
    schedule = trainer.schedule()
    apply, optimizer, steps = trainer.model.apply, trainer.optimizer, 8

    @jax.jit
    def standard_step(params, opt_state, step):
        x, y = train.sample_batch(train_data, step, schedule.seed, trainer.config.batch_size, False)
        grads = jax.grad(lambda p: train.LOSSES["cross_entropy"](apply(p, x), y).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params, opt_state = trainer.model.params, optimizer.init(trainer.model.params)
    step_program = trainer.relinearising_step if relinearise_every_step else trainer.train_step
    state, one_step = trainer.init_state(), train.block_runner(step_program, 1)
    for step in range(steps):
        params, opt_state = standard_step(params, opt_state, step)
        state = one_step(state, train_data, schedule)
        assert_trees_close(state.params, params)
    assert int(state.feature_updates) == steps - 1


@pytest.mark.parametrize("K, switch_step, augment", [(1, None, False), (3, None, True), (1, 13, False)],
                         ids=["K=1", "K=3 (inside blocks), augmented", "switch at 13 (inside a block)"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_scanned_blocks_end_where_dispatched_blocks_end(run_config, name, K, switch_step, augment):
    """The block program accelerators run (one ``jax.lax.scan`` per block) ends every schedule in
    the state the CPU's program (the step dispatched one at a time) ends it in, to float rounding:
    K = 1 (the re-linearising program), a K that re-linearises inside blocks of 5 steps (the
    linearised one), and a switch run whose switch step falls inside a block (both, in turn)."""
    config = run_config(model={"name": name, **MODELS[name]}, K=K, switch_step=switch_step, augment=augment)
    ended = {}
    for mode in train.BLOCK_MODES:
        trainer, train_data = trainer_for(config, block_mode=mode)
        state, schedule = trainer.init_state(), trainer.schedule()
        if mode == "scan":  # one program holding the loop, not the step dispatched from Python
            assert "stablehlo.while" in trainer.block_for(0).lower(state, train_data, schedule).as_text()
        ended[mode] = trainer.train_steps(state, train_data, trainer.config.steps)
    assert int(ended["scan"].step) == int(ended["dispatch"].step) == 40
    assert int(ended["scan"].feature_updates) == int(ended["dispatch"].feature_updates)
    assert_trees_close(ended["scan"], ended["dispatch"], rtol=1e-5, atol=1e-6)


def test_train_steps_with_a_period_run_the_linearised_block_with_K_traced(run_config):
    """``train_steps`` with a period K runs the linearised program under the run's schedule with that
    period, whatever the run's own K (here 1, whose own blocks are re-linearising ones); without one,
    the blocks ``block_for`` picks. A count that is not a whole number of blocks is refused."""
    trainer, train_data = trainer_for(run_config(K=1))
    for K, program, schedule in ((4, trainer.linearised_block, trainer.schedule(4)),
                                 (None, trainer.relinearising_block, trainer.schedule())):
        expected = trainer.init_state()
        for _ in range(3):
            expected = program(expected, train_data, schedule)
        found = trainer.train_steps(trainer.init_state(), train_data, 3 * trainer.config.scan_steps, K=K)
        for a, b in zip(jax.tree.leaves(found), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(a, b)
    assert int(found.feature_updates) == 14
    with pytest.raises(ValueError, match="whole number of blocks"):
        trainer.train_steps(trainer.init_state(), train_data, trainer.config.scan_steps + 1)


def test_an_unknown_block_mode_is_named(run_config):
    with pytest.raises(ValueError, match="block mode"):
        trainer_for(run_config(), block_mode="unrolled")


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_f_lin_equals_f_at_the_linearisation_point(name):
    """In float64, so that the identity is checked to rounding and not to float32's summation order
    (which differs between the jvp and the plain forward pass of a deep network). resnet18's is checked
    in float32 by test_models (outputs bit for bit, gradients to float32 rounding)."""
    model = models.create(name, input_shape=(8, 8, 1), num_classes=3, seed=0, **MODELS[name])
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (6, 8, 8, 1), jnp.float64)
        y = jnp.arange(6) % 3
        f_lin = jax.jit(linearise(model.apply))
        # any point, not only initialisation
        theta_lin = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64) + 0.05, model.params)
        np.testing.assert_allclose(f_lin(theta_lin, theta_lin, x), jax.jit(model.apply)(theta_lin, x), rtol=1e-12,
                                   atol=1e-12)

        def loss(f):
            return jax.jit(jax.value_and_grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(f(p), y).mean()))

        value_lin, grad_lin = loss(lambda p: f_lin(p, theta_lin, x))(theta_lin)
        value, grad = loss(lambda p: model.apply(p, x))(theta_lin)
    np.testing.assert_allclose(value_lin, value, rtol=1e-12)
    assert_trees_close(grad_lin, grad, rtol=1e-10, atol=1e-12)


def test_f_lin_is_the_first_order_taylor_model():
    """f_lin(θ) = f(θ_lin) + J(θ_lin)(θ − θ_lin), with J the brute-force Jacobian of the flat parameters."""
    model = models.create("mlp", input_shape=(4, 4, 1), num_classes=3, seed=0, depth=1, width=8)
    x = jax.random.normal(jax.random.key(0), (5, 4, 4, 1))
    theta_lin = model.params
    theta = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), theta_lin)
    flat_lin, unravel = ravel_pytree(theta_lin)
    jacobian = jax.jacrev(lambda flat: model.apply(unravel(flat), x))(flat_lin)  # (5, 3, P)
    expected = model.apply(theta_lin, x) + jacobian @ (ravel_pytree(theta)[0] - flat_lin)
    f_lin = linearise(model.apply)
    np.testing.assert_allclose(f_lin(theta, theta_lin, x), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(model.apply(theta, x), expected, atol=1e-3)  # f itself is not linear


def test_K_infinity_never_moves_the_linearisation_point(run_config):
    trainer, train_data = trainer_for(run_config(K="inf"))
    state, schedule = trainer.init_state(), trainer.schedule()
    state = train.block_runner(trainer.train_step, 20)(state, train_data, schedule)
    assert all(jax.tree.leaves(jax.tree.map(jnp.array_equal, state.params_lin, trainer.model.params)))
    assert not all(jax.tree.leaves(jax.tree.map(jnp.array_equal, state.params, trainer.model.params)))
    assert int(state.feature_updates) == 0


@pytest.mark.parametrize("K, switch_step", [(1, None), (1, 0), (1, 13), (1, 40), (2, None), (math.inf, None)])
def test_blocks_that_relinearise_throughout_are_those_of_the_traced_schedule(K, switch_step):
    """The host's choice of a block's program agrees with the traced schedule at every step
    (blocks of 4 steps: a period K > 1 never re-linearises at each of them)."""
    period, switch = train.schedule_arrays(K, switch_step, 40)
    for start in range(0, 40, 4):
        traced = all(bool(relinearise_now(jnp.int32(t), period, switch)) for t in range(start, start + 4))
        assert relinearises_throughout(K, switch_step, start, 4) == traced


@pytest.mark.parametrize("K", [1, 3, 7, 10, 40, 1000, "inf"])
def test_feature_updates_count(run_config, tmp_path, K):
    """A run of T steps re-linearises ⌈T/K⌉ − 1 times after initialisation."""
    config = run_config(K=K, steps=40)
    train_run(config, tmp_path / "out")
    metrics = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    final = metrics[metrics.step == 40].feature_updates.unique()
    expected = 0 if K == "inf" else math.ceil(40 / K) - 1
    assert list(final) == [expected] == [expected_feature_updates(float(K), None, 40)]


def test_switch_run_is_standard_until_t_then_linear(run_config, tmp_path):
    """Linearising after t: θ_t equals standard training's θ_t, and θ_lin stays θ_t to the end."""
    switch, steps = 10, 40
    standard = run_config(K=1, steps=steps, num_snapshots=6, scan_steps=5)
    switched = dict(standard, switch_step=switch)
    for name, config in (("standard", standard), ("switched", switched)):
        train_run(config, tmp_path / name)
    like = models.create("mlp", input_shape=(8, 8, 1), num_classes=4, seed=0, depth=1, width=32).params
    theta_std, _ = record.load_snapshot(tmp_path / "standard" / "snapshots" / f"step_{switch:07d}.npz", like)
    theta_sw, _ = record.load_snapshot(tmp_path / "switched" / "snapshots" / f"step_{switch:07d}.npz", like)
    assert_trees_close(theta_sw, theta_std, rtol=0, atol=0)  # identical computation up to t
    theta_end, theta_lin_end = record.load_snapshot(tmp_path / "switched" / "snapshots" / f"step_{steps:07d}.npz", like)
    assert_trees_close(theta_lin_end, theta_std, rtol=0, atol=0)  # frozen at θ_t
    assert not np.allclose(ravel_pytree(theta_end)[0], ravel_pytree(theta_std)[0])
    metrics = pd.read_parquet(tmp_path / "switched" / "metrics.parquet")
    assert metrics.feature_updates.max() == switch
    assert metrics.switch_step.dropna().unique().tolist() == [switch]


def test_metrics_schema_and_run_json(run_config, tmp_path):
    train_run(run_config(K=10), tmp_path / "out")
    metrics = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert list(metrics.columns) == ["dataset", "model", "K", "switch_step", "seed", "variant", "step",
                                     "feature_updates", "split", "evaluator", "loss", "accuracy", "status",
                                     "wall_time_s"]
    assert sorted(metrics.step.unique()) == [0, 20, 40]
    assert len(metrics) == 3 * 2 * 2
    at_start = metrics[metrics.step == 0]
    linear = at_start[at_start.evaluator == "linear"].set_index("split")
    network = at_start[at_start.evaluator == "network"].set_index("split")
    np.testing.assert_allclose(linear.loss, network.loss, rtol=1e-6)  # f_lin = f at θ_lin
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["status"] == "ok" and summary["feature_updates"] == 3
    assert summary["versions"]["jax"] == jax.__version__ and summary["device"]["platform"] == "cpu"
    steps = sorted(int(p.stem.split("_")[1]) for p in (tmp_path / "out" / "snapshots").glob("step_*.npz"))
    assert steps[0] == 0 and steps[-1] == 40 and steps == record.snapshot_steps(40, 5, 4, 5)
    predictions = tables.read("predictions", tmp_path / "out" / "predictions.parquet")
    final = metrics[(metrics.step == 40) & (metrics.split == "test")].set_index("evaluator")["accuracy"]
    for evaluator, rows in predictions.groupby("evaluator"):  # the final test accuracy, example by example
        assert len(rows) == 128 and rows["example"].tolist() == list(range(128)) and set(rows["step"]) == {40}
        assert (rows["prediction"] == rows["label"]).mean() == pytest.approx(final[evaluator])


def test_same_seed_same_numbers_other_seed_other_numbers(run_config, tmp_path):
    frames = []
    for index, seed in enumerate((0, 0, 1)):
        train_run(run_config(K=10, seed=seed), tmp_path / str(index))
        frames.append(pd.read_parquet(tmp_path / str(index) / "metrics.parquet").drop(columns="wall_time_s"))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert not np.allclose(frames[0].loss, frames[2].loss)


def _command(config_path, out, scratch, *options):
    return [sys.executable, "-m", "itlin", "train", "--config", str(config_path), "--out", str(out), "--scratch",
            str(scratch), *options]


@pytest.mark.slow
@pytest.mark.parametrize("stop, block_mode", [(signal.SIGKILL, None), (signal.SIGTERM, None), (signal.SIGTERM, "dispatch")],
                         ids=["SIGKILL", "SIGTERM", "SIGTERM-dispatch"])
def test_stopped_run_resumes_from_its_checkpoint(run_config, tmp_path, stop, block_mode):
    """Stop a run after its first checkpoint (SIGKILL: a crash; SIGTERM: SLURM's pre-emption, which
    checkpoints and exits 143); the same command resumes and ends where an uninterrupted run ends:
    exactly, or to float rounding where the stopped run's blocks are dispatched step by step and the
    uninterrupted one's scanned (the MLP's default program, on the CPU as on accelerators)."""
    config = run_config(K=10, steps=3000, eval_every=500, checkpoint_every=500, scan_steps=50, velocity_interval=50)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    checkpoint_dir = tmp_path / "scratch" / "checkpoints"
    options = ["--block-mode", block_mode] if block_mode else []
    process = subprocess.Popen(_command(config_path, tmp_path / "out", tmp_path / "scratch", *options),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.isdigit() for p in checkpoint_dir.glob("*")) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(stop)
    _, stderr = process.communicate()
    assert not (tmp_path / "out" / "metrics.parquet").exists()
    if stop == signal.SIGTERM:
        assert process.returncode == 143 and "checkpoint written at step" in stderr
    # a snapshot the stopped attempt wrote past its checkpoint (step 2990 is on no run's grid) is not the resumed run's
    record.snapshot_path(tmp_path / "scratch" / "snapshots" / "seed0", 2990).touch()

    resumed = subprocess.run(_command(config_path, tmp_path / "out", tmp_path / "scratch", *options),
                             capture_output=True, text=True, env=os.environ | {"JAX_PLATFORMS": "cpu"}, check=True)
    assert "resuming from checkpoint at step" in resumed.stderr
    train_run(config, tmp_path / "uninterrupted")
    columns = lambda frame: frame.drop(columns="wall_time_s")  # noqa: E731
    exact = block_mode is None
    pd.testing.assert_frame_equal(columns(pd.read_parquet(tmp_path / "out" / "metrics.parquet")),
                                  columns(pd.read_parquet(tmp_path / "uninterrupted" / "metrics.parquet")),
                                  check_exact=exact, rtol=1e-5, atol=1e-6)
    final = "snapshots/step_0003000.npz"
    like = models.create("mlp", input_shape=(8, 8, 1), num_classes=4, seed=0, depth=1, width=32).params
    assert_trees_close(record.load_snapshot(tmp_path / "out" / final, like),
                       record.load_snapshot(tmp_path / "uninterrupted" / final, like),
                       rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["block_mode"] == (block_mode or "scan")
    assert not (tmp_path / "scratch").exists()  # scratch is removed once the outputs are written
    # the snapshot pairs (t, t + δ) of the velocity are all there and equal an uninterrupted run's
    saved = sorted(path.name for path in (tmp_path / "out" / "snapshots").glob("step_*.npz"))
    expected = record.snapshot_steps(3000, 50, config["num_snapshots"], config["velocity_interval"])
    assert saved == [f"step_{step:07d}.npz" for step in expected]
    for name in saved:
        with np.load(tmp_path / "out" / "snapshots" / name) as resumed_arrays, \
                np.load(tmp_path / "uninterrupted" / "snapshots" / name) as clean_arrays:
            for key in clean_arrays.files:
                np.testing.assert_allclose(resumed_arrays[key], clean_arrays[key], rtol=0 if exact else 1e-5,
                                           atol=0 if exact else 1e-6)


def test_checkpoint_of_another_config_is_not_resumed(run_config, tmp_path, caplog):
    first = run_config(K=10, steps=40)
    trainer_state_dir = tmp_path / "scratch"
    saved = checkpoints.Checkpoints(trainer_state_dir / "checkpoints", [record.RunConfig.from_dict(first)])
    trainer, _ = trainer_for(first)
    saved.save(20, trainer.init_state(), [[]], 1.0)
    saved.close()
    stale = record.snapshot_path(trainer_state_dir / "snapshots" / "seed0", 35)  # a step the new run does not save
    stale.parent.mkdir(parents=True)
    stale.touch()
    changed = record.RunConfig.from_dict(run_config(K=20, steps=40))
    train_run(changed, tmp_path / "out", trainer_state_dir)
    assert "written under another run config" in caplog.text
    metrics = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert sorted(metrics.step.unique()) == [0, 20, 40]
    snapshots = sorted(path.name for path in (tmp_path / "out" / "snapshots").glob("step_*.npz"))
    assert snapshots == [f"step_{step:07d}.npz" for step in record.snapshot_steps(
        40, changed.scan_steps, changed.num_snapshots, changed.velocity_interval)]


def _stop_after_checkpoint(monkeypatch, step: int) -> None:
    """Make runs stop as on SIGTERM (pre-emption) right after writing their checkpoint at ``step``."""
    save = checkpoints.Checkpoints.save

    def save_then_stop(self, at, *args):
        save(self, at, *args)
        if at == step:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(checkpoints.Checkpoints, "save", save_then_stop)


def _flip_a_bit(step_folder):
    """Flip one bit in the middle of the largest array file: Orbax restores it without complaint."""
    largest = max((path for path in (step_folder / "state").rglob("*") if path.is_file() and path.parent.name == "d"),
                  key=lambda path: path.stat().st_size)
    content = bytearray(largest.read_bytes())
    content[len(content) // 2] ^= 1
    largest.write_bytes(bytes(content))


DAMAGE = {
    "flipped bit": lambda checkpoints: _flip_a_bit(checkpoints / "30"),
    "garbled manifest": lambda checkpoints: (checkpoints / "30" / "state" / "manifest.ocdbt").write_bytes(b"\0" * 8),
    "emptied folder": lambda checkpoints: [shutil.rmtree(checkpoints / "30"), (checkpoints / "30").mkdir()],
    "every checkpoint": lambda checkpoints: [(checkpoints / step / "log" / "metadata").write_text("{")
                                             for step in ("20", "30")],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_is_set_aside_and_the_run_resumes_from_a_good_one(run_config, tmp_path, monkeypatch,
                                                                             caplog, damage):
    """A checkpoint that cannot be read or whose contents fail the checksum written with it is moved
    aside with a warning naming it; the run resumes from the previous checkpoint (or from the start)
    and ends exactly where a run never interrupted ends."""
    config = record.RunConfig.from_dict(run_config(K=10, steps=40, checkpoint_every=10))
    scratch = tmp_path / "scratch"
    with monkeypatch.context() as patch:
        _stop_after_checkpoint(patch, 30)
        with pytest.raises(checkpoints.Preempted):
            train_run(config, tmp_path / "out", scratch)
    assert sorted(path.name for path in (scratch / "checkpoints").iterdir() if path.name.isdigit()) == ["20", "30"]
    DAMAGE[damage](scratch / "checkpoints")
    caplog.set_level(logging.INFO, logger="itlin")
    assert train_run(config, tmp_path / "out", scratch) == "ok"
    resumed_from = "the start" if damage == "every checkpoint" else "checkpoint at step 20"
    assert "checkpoint at step 30 is damaged" in caplog.text and f"resuming from {resumed_from}" in caplog.text
    set_aside = sorted(path.name.split("-")[0] for path in (scratch / "damaged").iterdir())
    assert set_aside == (["20", "30"] if damage == "every checkpoint" else ["30"])
    train_run(config, tmp_path / "uninterrupted")
    columns = lambda frame: frame.drop(columns="wall_time_s")  # noqa: E731
    pd.testing.assert_frame_equal(columns(pd.read_parquet(tmp_path / "out" / "metrics.parquet")),
                                  columns(pd.read_parquet(tmp_path / "uninterrupted" / "metrics.parquet")))
    for snapshot in (tmp_path / "uninterrupted" / "snapshots").iterdir():
        with np.load(snapshot) as expected, np.load(tmp_path / "out" / "snapshots" / snapshot.name) as resumed:
            assert sorted(expected) == sorted(resumed)
            for name in expected:
                np.testing.assert_array_equal(resumed[name], expected[name])


def test_divergence_is_recorded_and_exits_zero(run_config, tmp_path):
    config = run_config(K=1, loss="mse", optimizer={"name": "sgd", "learning_rate": 1e4, "momentum": 0.0,
                                                     "schedule": "constant"})
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    completed = subprocess.run(_command(config_path, tmp_path / "out", tmp_path / "scratch"),
                               capture_output=True, text=True, env=os.environ | {"JAX_PLATFORMS": "cpu"})
    assert completed.returncode == 0, completed.stderr
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["status"] == "diverged" and 0 <= summary["diverged_step"] < 20
    metrics = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert set(metrics.status) == {"diverged"}
    last = metrics[metrics.step == metrics.step.max()]
    assert last.step.iloc[0] == summary["diverged_step"] and last.loss.isna().all()
    assert tables.read("predictions", tmp_path / "out" / "predictions.parquet").empty  # no final predictions


def test_divergence_on_an_evaluation_step_leaves_one_row_per_measurement(run_config, tmp_path):
    """Evaluating every step, the step whose loss is the first non-finite one has already been
    evaluated when the divergence is seen: its rows are replaced by the diverged rows, not doubled."""
    config = run_config(K=1, loss="mse", scan_steps=1, eval_every=1, checkpoint_every=1,
                        optimizer={"name": "sgd", "learning_rate": 100.0, "momentum": 0.0, "schedule": "constant"})
    assert train_run(config, tmp_path / "out") == "diverged"
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    metrics = tables.aggregate("metrics", [tmp_path / "out" / "metrics.parquet"])  # raises on a repeated measurement
    assert metrics.step.max() == summary["diverged_step"] > 0
    assert sorted(metrics.step.unique()) == list(range(summary["diverged_step"] + 1))
    last = metrics[metrics.step == summary["diverged_step"]]
    assert len(last) == 4 and last.loss.isna().all() and last.accuracy.isna().all()


@pytest.mark.parametrize("override, key", [
    ({"K": 0}, "K"), ({"K": -3}, "K"), ({"K": 2.5}, "K"), ({"switch_step": 41}, "switch_step"),
    ({"switch_step": 10, "K": 10}, "K"), ({"model": {"name": "vgg"}}, "model.name"),
    ({"lerning_rate": 1}, "lerning_rate"), ({"eval_every": 7}, "eval_every"), ({"loss": "hinge"}, "loss"),
])
def test_invalid_run_config_names_the_key(run_config, override, key):
    with pytest.raises(ValueError, match=key):
        record.RunConfig.from_dict(run_config(**override))


def test_snapshots_come_in_pairs_t_and_t_plus_the_velocity_interval():
    main = record.snapshot_steps(1000, 10, 5, 1001)  # an interval longer than the run adds no partner
    assert main == [0, 10, 30, 100, 320, 1000]  # log-spaced on the scan grid, dense early
    assert record.snapshot_steps(1000, 10, 5, 20) == sorted(set(main) | {t + 20 for t in main if t + 20 <= 1000})


SGD = {"name": "sgd", "momentum": 0.0, "schedule": "constant"}


@pytest.mark.parametrize("override, message", [
    ({"scan_steps": 0}, "run config key 'scan_steps': 0 is less than the minimum of 1"),
    ({"steps": "abc"}, "run config key 'steps': 'abc' is not of type 'integer'"),
    ({"optimizer": SGD | {"learning_rate": -0.1}},
     "run config key 'optimizer.learning_rate': -0.1 matches none of the allowed forms: -0.1 is less than or equal "
     "to the minimum of 0; 'auto' was expected"),
    ({"batch_size": 32.0}, "run config key 'batch_size': 32.0 is not of type 'integer'"),
    ({"optimizer": SGD | {"learning_rate": 0.1, "momentum": 1.0}}, "'optimizer.momentum': 1.0 is greater than or equal"),
    ({"seed": 1.0}, "seed: must be an integer >= 0, got 1.0"),
    ({"switch_step": 2.5}, "switch_step: must be null or an integer"),
    ({"augment": "no"}, "augment: must be true or false"),
])
def test_run_config_types_and_ranges_are_those_of_the_workflow_config(run_config, override, message):
    """The training keys of a run config are checked against the schema of the workflow config's
    training section (the same file), the run's own keys alike; each error names the key."""
    with pytest.raises(ValueError, match=re.escape(message)):
        record.RunConfig.from_dict(run_config(**override))


def test_training_schema_describes_the_run_config_and_the_library():
    schema = validation.load_yaml(record.TRAINING_SCHEMA)
    fields = [field for field in dataclasses.fields(record.RunConfig) if field.name not in record.IDENTITY_KEYS]
    assert set(schema["properties"]) == {field.name for field in fields}
    assert set(schema["required"]) == {field.name for field in fields if field.default is dataclasses.MISSING}
    assert set(schema["properties"]["loss"]["enum"]) == set(train.LOSSES)


def test_cli_rejects_a_bad_run_config_in_one_line(run_config, tmp_path, capsys):
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(run_config(scan_steps=0, steps="abc")))
    assert cli.main(["train", "--config", str(config_path), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert "run config key 'scan_steps': 0 is less than the minimum of 1" in error
    assert "run config key 'steps': 'abc' is not of type 'integer'" in error
    assert not (tmp_path / "out").exists()
    config_path.write_text("steps: [100\nseed: 0\n")
    for path, message in ((config_path, f"{config_path}, line 2, column 5: not valid YAML"),
                          (tmp_path / "missing.yaml", f"{tmp_path / 'missing.yaml'}: not found")):
        assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "out")]) == 1
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("key", ["batch_size", "eval_train_size"])
def test_subsets_larger_than_the_training_split_are_named(run_config, tmp_path, key):
    config = record.RunConfig.from_dict(run_config(**{key: 1000}))  # the tiny data has 256 training examples
    with pytest.raises(ValueError, match=f"{key}: 1000 is more than the 256 training examples"):
        train_run(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_eval_subset_larger_than_the_train_size_is_named(run_config):
    with pytest.raises(ValueError, match="eval_train_size: 100 is more than the train_size of 64"):
        record.RunConfig.from_dict(run_config(train_size=64, batch_size=64, eval_train_size=100))


def test_train_size_with_a_full_batch_is_gradient_descent_on_the_subset(run_config, tmp_path):
    """``train_size`` n and ``batch_size`` n: each step is one full-batch gradient step on the fixed subset
    ``data.training_subset`` (whatever order the batch comes in), and the train metrics are measured on it."""
    sgd = {"name": "sgd", "learning_rate": 0.05, "momentum": 0.0, "schedule": "constant"}
    config = record.RunConfig.from_dict(run_config(train_size=64, batch_size=64, eval_train_size=64, steps=20,
                                                   scan_steps=10, eval_every=10, velocity_interval=10,
                                                   checkpoint_every=10, optimizer=sgd, loss="mse"))
    train_run(config, tmp_path / "out")
    dataset = data.load(config.data)
    subset = data.training_subset(dataset.y_train, 64, class_balanced=False)
    x, y = jnp.asarray(dataset.x_train[subset]), jnp.asarray(dataset.y_train[subset])
    model = models.from_spec(config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                             seed=config.seed)

    def loss(params):
        return jnp.mean(train.LOSSES["mse"](model.apply(params, x), y))

    params = model.params
    for _ in range(20):
        params = jax.tree.map(lambda p, g: p - 0.05 * g, params, jax.grad(loss)(params))
    metrics = pd.read_parquet(tmp_path / "out" / record.METRICS_FILE)
    final = metrics[(metrics["step"] == 20) & (metrics["split"] == "train") & (metrics["evaluator"] == "network")]
    np.testing.assert_allclose(final["loss"].iloc[0], float(loss(params)), rtol=1e-4)


def test_snapshot_steps_are_log_spaced_on_the_scan_grid():
    steps = record.snapshot_steps(3000, 10, 12, 3001)
    assert steps[0] == 0 and steps[-1] == 3000 and steps[1] == 10
    assert all(s % 10 == 0 for s in steps)
    gaps = np.diff(steps[1:])
    assert gaps[0] < gaps[-1]  # dense early


LANE_SCHEDULES = {"K=1": (dict(K=1), 0), "K=300": (dict(K=300), 290), "K=inf": (dict(K="inf"), 0),
                  "switch": (dict(K=1, switch_step=150), 140)}
"""Each lane test's schedule and the step it starts from: 20 steps that include its event (K = 300's
re-linearisation at step 300, the switch at 150). Over hundreds of steps, float rounding alone moves a
small ResNet's ReLU and GroupNorm kinks (scanned and dispatched blocks part by 1e-3 within 200 steps)."""


@pytest.mark.parametrize("schedule", sorted(LANE_SCHEDULES))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_lane_equals_a_one_lane_run_of_its_seed(run_config, tiny_data_16, name, schedule):
    """Lanes of seeds (1, 0) take seed 0 in the second lane exactly where a trainer of seed 0 alone takes it,
    by the same programs (the re-linearising one for K = 1 blocks): equal to float64 rounding, so that a
    difference is a bug, not float32 rounding moved across a ReLU or GroupNorm kink."""
    settings, start = LANE_SCHEDULES[schedule]
    sgd = {"name": "sgd", "learning_rate": 0.05, "momentum": 0.0, "schedule": "constant"}
    config = run_config(model={"name": name, **MODELS[name]}, steps=320, scan_steps=5, eval_every=320,
                        checkpoint_every=320, batch_size=8, optimizer=sgd, **settings)
    if name == "resnet18":
        config["data"] = str(tiny_data_16)
    with jax.enable_x64(True):
        alone, train_data = trainer_for(dict(config, seed=0))
        train_data = train.TrainData(train_data.x.astype(jnp.float64), train_data.y)
        initial = [jax.tree.map(lambda leaf: leaf.astype(jnp.float64), models.from_spec(
            config["model"], input_shape=train_data.x.shape[1:], num_classes=4, seed=seed).params) for seed in (1, 0)]
        lanes = train.Trainer(alone.config, alone.model, seeds=[1, 0])
        lane_state = lanes.init_state(jax.tree.map(lambda *leaves: jnp.stack(leaves), *initial))
        lane_state = lane_state._replace(step=jnp.full(2, start, jnp.int32))
        alone_state = alone.init_state(initial[1])._replace(step=jnp.asarray(start, jnp.int32))
        assert lanes.block_for(start) is lanes.relinearising_block if settings["K"] == 1 else lanes.linearised_block
        lane_state = lanes.train_steps(lane_state, train_data, 20, start=start)
        alone_state = alone.train_steps(alone_state, train_data, 20, start=start)
        second = jax.tree.map(lambda leaf: leaf[1], lane_state)
        expected_updates = {"K=1": 19, "K=300": 1, "K=inf": 0, "switch": 11}[schedule]  # re-linearisations after step 0
        assert int(second.feature_updates) == int(alone_state.feature_updates) == expected_updates
        assert_trees_close(second, alone_state, rtol=1e-10, atol=1e-12)
        first = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], lane_state.params))[0]
        assert not np.allclose(first, ravel_pytree(alone_state.params)[0])  # the other lane is seed 1's


def test_a_job_writes_each_lane_as_a_one_lane_job_of_its_seed_writes_it(run_config, tmp_path):
    """A job of seeds (1, 0) writes seed 0's run folder as a job of seed 0 alone does: metrics, predictions
    and every snapshot equal to float rounding, and a ``run.json`` naming the job's lanes."""
    configs = [record.RunConfig.from_dict(run_config(K=10, seed=seed)) for seed in (1, 0)]
    assert train_job.run(configs, [tmp_path / "seed1", tmp_path / "lane"]) == ["ok", "ok"]
    train_run(configs[1], tmp_path / "alone")
    columns = lambda frame: frame.drop(columns="wall_time_s")  # noqa: E731
    for table in ("metrics.parquet", "predictions.parquet"):
        lane, alone = (columns(pd.read_parquet(tmp_path / run / table)) if table == "metrics.parquet"
                       else pd.read_parquet(tmp_path / run / table) for run in ("lane", "alone"))
        pd.testing.assert_frame_equal(lane, alone, check_exact=False, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "lane" / "run.json").read_text())["lanes"] == [1, 0]
    snapshots = sorted(path.name for path in (tmp_path / "alone" / "snapshots").iterdir())
    assert snapshots == sorted(path.name for path in (tmp_path / "lane" / "snapshots").iterdir())
    for snapshot in snapshots:
        with np.load(tmp_path / "lane" / "snapshots" / snapshot) as found, \
                np.load(tmp_path / "alone" / "snapshots" / snapshot) as expected:
            for key in expected.files:
                np.testing.assert_allclose(found[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("model", [{"name": "mlp", "depth": 1, "width": 32},
                                   {"name": "cnn", "depth": 2, "width": 4, "parameterisation": "ntk"}])
def test_a_job_of_lanes_at_several_K_writes_each_as_a_one_lane_job_of_its_K_writes_it(run_config, tmp_path, model):
    """The width sweep's jobs: lanes of one seed at K = 1, 10 and ∞ (one program, K traced; the K = 1 lane by the
    linearised step, equal to the standard one at θ = θ_lin) write each run folder as a job of that K alone
    does, to float rounding, with the feature updates of its own K; an MLP, and a CNN in the NTK
    parameterisation (a CNN's width is its channels)."""
    configs = [record.RunConfig.from_dict(run_config(K=K, seed=0, model=model)) for K in (1, 10, "inf")]
    assert train_job.run(configs, [tmp_path / f"lane{index}" for index in range(3)]) == ["ok"] * 3
    for index, config in enumerate(configs):
        train_run(config, tmp_path / f"alone{index}")
        lane, alone = (pd.read_parquet(tmp_path / f"{run}{index}" / "metrics.parquet").drop(columns="wall_time_s")
                       for run in ("lane", "alone"))
        pd.testing.assert_frame_equal(lane, alone, check_exact=False, rtol=1e-4, atol=1e-5)
        assert set(lane["K"]) == {config.K}
        snapshots = sorted(path.name for path in (tmp_path / f"alone{index}" / "snapshots").iterdir())
        assert snapshots == sorted(path.name for path in (tmp_path / f"lane{index}" / "snapshots").iterdir())
    updates = [json.loads((tmp_path / f"lane{index}" / "run.json").read_text())["feature_updates"] for index in range(3)]
    assert updates == [configs[0].steps - 1, math.ceil(configs[1].steps / 10) - 1, 0]


def test_an_auto_learning_rate_is_the_inverse_of_the_largest_lanes_curvature_at_initialisation(run_config, tiny_data,
                                                                                                    tmp_path):
    """``learning_rate: auto``: a job of seeds 0 and 1 steps at 1/λ_max of JᵀJ/n at θ₀ on its training subset,
    the larger λ_max of the two seeds (from the brute-force Jacobian here), records both in ``run.json``, and
    trains as a job given that rate does."""
    gradient_descent = dict(loss="mse", train_size=64, batch_size=64, eval_train_size=64, steps=20, eval_every=10,
                            optimizer={"name": "sgd", "learning_rate": "auto", "momentum": 0.0, "schedule": "constant"})
    configs = [record.RunConfig.from_dict(run_config(seed=seed, **gradient_descent)) for seed in (0, 1)]
    assert train_job.run(configs, [tmp_path / "seed0", tmp_path / "seed1"]) == ["ok", "ok"]
    dataset = data.load(tiny_data)
    x = jnp.asarray(dataset.x_train[data.training_subset(dataset.y_train, 64, class_balanced=False)])
    expected = []
    for seed in (0, 1):
        network = models.from_spec(configs[0].model, input_shape=dataset.input_shape,
                                   num_classes=dataset.num_classes, seed=seed)
        flat, unravel = ravel_pytree(network.params)
        jacobian = np.asarray(jax.jacrev(lambda theta: network.apply(unravel(theta), x))(flat)).reshape(-1, flat.size)
        expected.append(np.linalg.eigvalsh(jacobian.astype(np.float64).T @ jacobian / len(x))[-1])
    summary = json.loads((tmp_path / "seed1" / "run.json").read_text())
    np.testing.assert_allclose(summary["auto_learning_rate"]["largest_eigenvalues"], expected, rtol=1e-4)
    rate = summary["auto_learning_rate"]["learning_rate"]
    assert rate == pytest.approx(1 / max(expected), rel=1e-4) and summary["config"]["optimizer"]["learning_rate"] == rate
    given = run_config(seed=1, **dict(gradient_descent, optimizer={**gradient_descent["optimizer"], "learning_rate": rate}))
    train_run(given, tmp_path / "given")
    lane, alone = (pd.read_parquet(tmp_path / run / "metrics.parquet").drop(columns="wall_time_s")
                   for run in ("seed1", "given"))
    pd.testing.assert_frame_equal(lane, alone, check_exact=False, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("overrides, problem", [
    (dict(optimizer={"name": "adam", "learning_rate": "auto", "momentum": 0.0, "schedule": "constant"}),
     "plain gradient descent"),
    (dict(loss="cross_entropy"), "for the mse loss"),
    (dict(batch_size=32), "full batches"),
])
def test_an_auto_learning_rate_outside_full_batch_gradient_descent_on_mse_is_named(run_config, overrides, problem):
    config = run_config(loss="mse", train_size=64, batch_size=64, eval_train_size=64,
                        optimizer={"name": "sgd", "learning_rate": "auto", "momentum": 0.0, "schedule": "constant"})
    with pytest.raises(ValueError, match=f"optimizer.learning_rate: .*{problem}"):
        record.RunConfig.from_dict({**config, **overrides})


def test_the_configs_of_a_job_differ_only_in_their_seed_and_K(run_config, tmp_path):
    configs = [record.RunConfig.from_dict(run_config(batch_size=batch, seed=seed)) for batch, seed in ((8, 0), (4, 1))]
    with pytest.raises(ValueError, match="differ in their seed and K only; these differ: batch_size"):
        train_job.run(configs, [tmp_path / "a", tmp_path / "b"])
    twice = [record.RunConfig.from_dict(run_config(seed=3))] * 2
    with pytest.raises(ValueError, match="seed: each lane of a job needs its own seed"):
        train_job.run(twice, [tmp_path / "a", tmp_path / "b"])


def test_a_diverged_lane_is_frozen_while_the_others_finish(run_config, tmp_path):
    """At a learning rate where seed 2 diverges and seed 1 does not (on their own, seed 2 diverges from rate
    0.35 and seed 1 stays finite to 0.6), the job records seed 2 as diverged at its step, with finite snapshots
    before it, and trains seed 1 to the end as a one-lane run of seed 1."""
    config = run_config(K=1, loss="mse", steps=40, scan_steps=1, eval_every=10, checkpoint_every=10,
                        optimizer={"name": "sgd", "learning_rate": 0.45, "momentum": 0.0, "schedule": "constant"})
    configs = [record.RunConfig.from_dict(dict(config, seed=seed)) for seed in (1, 2)]
    statuses = train_job.run(configs, [tmp_path / "seed1", tmp_path / "seed2"])
    assert statuses == ["ok", "diverged"]
    summary = json.loads((tmp_path / "seed2" / "run.json").read_text())
    metrics = pd.read_parquet(tmp_path / "seed2" / "metrics.parquet")
    assert metrics.step.max() == summary["diverged_step"] and metrics[metrics.step == metrics.step.max()].loss.isna().all()
    for path in (tmp_path / "seed2" / "snapshots").iterdir():
        assert int(path.stem.split("_")[1]) <= summary["diverged_step"]
        with np.load(path) as arrays:
            assert all(np.isfinite(arrays[key]).all() for key in arrays.files)
    train_run(configs[0], tmp_path / "alone")
    columns = lambda frame: frame.drop(columns="wall_time_s")  # noqa: E731
    pd.testing.assert_frame_equal(columns(pd.read_parquet(tmp_path / "seed1" / "metrics.parquet")),
                                  columns(pd.read_parquet(tmp_path / "alone" / "metrics.parquet")),
                                  check_exact=False, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 256, 1347, 4097])
def test_each_epoch_takes_every_example_once_in_an_order_of_its_own(n):
    """``epoch_position``: a permutation of range(n) for every (seed, epoch), whatever n (cycle walking keeps
    it inside), and another one for another epoch or seed."""
    orders = {(seed, epoch): np.asarray(train.epoch_position(jnp.int32(seed), jnp.int32(epoch), jnp.arange(n), n))
              for seed in (0, 5) for epoch in (0, 1)}
    for order in orders.values():
        assert sorted(order.tolist()) == list(range(n))
    if n >= 100:
        assert len({order.tobytes() for order in orders.values()}) == len(orders)


def test_batches_cover_the_training_set_each_epoch_and_drop_the_partial_batch(tiny_data):
    """``sample_batch``: the whole batches of an epoch are distinct examples; the next epoch starts a new order."""
    dataset = data.load(tiny_data)
    labelled = train.TrainData.of(np.arange(len(dataset.y_train), dtype=np.float32)[:, None], dataset.y_train)
    per_epoch = train.batches_per_epoch(len(dataset.y_train), 48)  # 256 examples: 5 batches, 16 left out
    batches = [np.asarray(train.sample_batch(labelled, jnp.int32(step), jnp.int32(3), 48, False)[0]).ravel()
               for step in range(2 * per_epoch)]
    first, second = np.concatenate(batches[:per_epoch]), np.concatenate(batches[per_epoch:])
    assert len(set(first.tolist())) == len(first) == per_epoch * 48
    assert len(set(second.tolist())) == len(second) and not np.array_equal(first, second)
