"""Tests of the empirical NTK (itlin.ntk): exact against full Jacobians, independent of chunking and
strategy, and the kernel measurements of a training run.

Kernels are compared in float64 (``jax.enable_x64``), so that a difference is a bug and not float32
rounding; one test checks the float32 path against float64. Models are small and shared per module.
"""

import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from itlin import models, ntk, tables, train

NUM_CLASSES = 3
MODELS = {  # name -> (kwargs, input shape): resnet18 needs 16x16 inputs for a 2x2 last stage
    "mlp": ({"depth": 2, "width": 16}, (8, 8, 1)),
    "cnn": ({"depth": 2, "width": 8}, (8, 8, 1)),
    "resnet18": ({"width": 4}, (16, 16, 1)),
}
N1, N2, CHUNK = 4, 2, 3  # chunks of 3 pad both sets and give x1 two chunks (mirrored off-diagonal blocks)


def relative_error(result, reference):
    return float(np.abs(result - reference).max() / np.abs(reference).max())


class Case:
    """A model in float64 with two input sets and the brute-force kernels from its full Jacobian."""

    def __init__(self, name):
        kwargs, shape = MODELS[name]
        model = models.create(name, input_shape=shape, num_classes=NUM_CLASSES, seed=0, **kwargs)  # float32
        self.apply = model.apply
        with jax.enable_x64(True):
            self.params = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), model.params)
            inputs = jax.random.normal(jax.random.key(1), (N1 + N2, *shape), jnp.float64)
            flat, unravel = ravel_pytree(self.params)
            jacobian = np.asarray(jax.jit(jax.jacrev(lambda theta: model.apply(unravel(theta), inputs)))(flat))
        self.x1, self.x2 = inputs[:N1], inputs[N1:]  # jacobian: (n, C, P)
        j1, j2 = jacobian[:N1], jacobian[N1:]
        self.reference = {
            (symmetric, kind): np.einsum(equation, j1, j1 if symmetric else j2)
            for symmetric in (True, False)
            for kind, equation in (("trace", "icp,jcp->ij"), ("per_class", "icp,jcp->cij"), ("full", "icp,jdp->ijcd"))
        }

    def kernel(self, kind, *, symmetric=True, **options):
        return ntk.empirical_ntk(self.apply, self.params, self.x1, None if symmetric else self.x2, kind=kind,
                                 **options)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def cases():
    """Each model's Case, built on first use (resnet18's Jacobian compiles slowly on CPU)."""
    built = {}

    def get(name):
        if name not in built:
            built[name] = Case(name)
        return built[name]

    return get


@pytest.mark.parametrize("strategy", ntk.STRATEGIES)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_kind_equals_the_product_of_full_jacobians(cases, x64, name, strategy):
    case = cases(name)
    for symmetric in (True, False):
        for kind in ntk.KINDS:
            result = case.kernel(kind, symmetric=symmetric, chunk_size=CHUNK, strategy=strategy)
            reference = case.reference[symmetric, kind]
            assert result.shape == reference.shape
            assert relative_error(result, reference) < 1e-5, (kind, symmetric)


def test_float32_kernel_matches_float64_to_1e5(cases):
    case = cases("cnn")
    params32 = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), case.params)
    for strategy in ntk.STRATEGIES:
        result = ntk.empirical_ntk(case.apply, params32, case.x1.astype(jnp.float32), kind="full", chunk_size=CHUNK,
                                   strategy=strategy)
        assert result.dtype == np.float32
        assert relative_error(result, case.reference[True, "full"]) < 1e-5


def test_kernel_is_symmetric_positive_semidefinite(cases, x64):
    case = cases("cnn")
    trace = case.kernel("trace", chunk_size=CHUNK, strategy="jacobian")
    full = case.kernel("full", chunk_size=CHUNK, strategy="ntk_vector")
    as_matrix = full.transpose(0, 2, 1, 3).reshape(N1 * NUM_CLASSES, N1 * NUM_CLASSES)  # rows (i, c), columns (j, c')
    for kernel in (trace, as_matrix):
        np.testing.assert_array_equal(kernel, kernel.T)
        assert np.linalg.eigvalsh(kernel).min() > -1e-10 * np.abs(kernel).max()
    for per_class in case.kernel("per_class", chunk_size=CHUNK, strategy="jacobian"):
        np.testing.assert_array_equal(per_class, per_class.T)
        assert np.linalg.eigvalsh(per_class).min() > -1e-10 * np.abs(per_class).max()


def test_trace_is_the_sum_of_the_diagonal_output_blocks(cases, x64):
    case = cases("mlp")
    for symmetric in (True, False):
        trace = case.kernel("trace", symmetric=symmetric, chunk_size=CHUNK, strategy="jacobian")
        full = case.kernel("full", symmetric=symmetric, chunk_size=CHUNK, strategy="jacobian")
        per_class = case.kernel("per_class", symmetric=symmetric, chunk_size=CHUNK, strategy="jacobian")
        np.testing.assert_allclose(trace, np.einsum("ijcc->ij", full), rtol=1e-12)
        np.testing.assert_allclose(per_class, np.einsum("ijcc->cij", full), rtol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_identical_for_every_chunk_size_and_strategy(cases, x64, name):
    case = cases(name)
    for symmetric in (True, False):
        for kind in ntk.KINDS:
            results = [case.kernel(kind, symmetric=symmetric, chunk_size=chunk, strategy=strategy)
                       for chunk in (1, CHUNK, N1 + 3) for strategy in ntk.STRATEGIES]
            for result in results[1:]:
                np.testing.assert_allclose(result, results[0], rtol=1e-12, atol=1e-12 * np.abs(results[0]).max())


def test_automatic_strategy_and_chunk_size_give_the_same_kernel(cases, x64):
    case = cases("cnn")
    automatic = case.kernel("per_class")
    np.testing.assert_allclose(automatic, case.reference[True, "per_class"], rtol=1e-10)


def test_strategy_rule_follows_the_flop_estimates():
    dense = ntk.ModelProfile(num_params=10_000, num_outputs=10, forward_flops=20_000, activation_bytes=0)
    convolutional = dense._replace(forward_flops=100 * dense.num_params)
    shape = dict(n1=500, n2=500, symmetric=True, chunk_size=50)
    assert ntk.choose_strategy(convolutional, kind="trace", **shape) == "jacobian"
    assert ntk.choose_strategy(convolutional, kind="full", **shape) == "jacobian"
    assert ntk.choose_strategy(dense, kind="trace", **shape) == "jacobian"  # F = 2P > P
    assert ntk.choose_strategy(dense, kind="full", **shape) == "ntk_vector"  # F = 2P < C·P
    assert ntk.choose_strategy(dense, kind="trace", **{**shape, "chunk_size": 1}) == "ntk_vector"  # all recomputed


@pytest.mark.parametrize("strategy", ntk.STRATEGIES)
def test_automatic_chunk_size_is_the_largest_that_fits_the_budget(strategy):
    profile = ntk.ModelProfile(num_params=1_000_000, num_outputs=10, forward_flops=1e8, activation_bytes=2e6)
    budget = 2e9

    def memory(chunk):
        return ntk.estimate_costs(profile, n1=1000, n2=1000, kind="trace", symmetric=True,
                                  chunk_size=chunk)[strategy].bytes

    chunk = ntk.auto_chunk_size(profile, strategy, n=1000, budget_bytes=budget)
    assert 1 <= chunk < 1000
    assert memory(chunk) <= budget < memory(chunk + 1)
    assert ntk.auto_chunk_size(profile, strategy, n=3, budget_bytes=budget) == 3
    assert ntk.auto_chunk_size(profile, strategy, n=1000, budget_bytes=1.0) == 1


def test_planned_block_memory_holds_the_live_jacobian_chunks(cases, x64):
    case = cases("mlp")
    num_params = sum(leaf.size for leaf in jax.tree.leaves(case.params))
    chunk_bytes = CHUNK * NUM_CLASSES * num_params * 8  # float64
    jacobian = ntk.compiled_block_bytes(case.apply, case.params, case.x1[:CHUNK], "jacobian")
    ntk_vector = ntk.compiled_block_bytes(case.apply, case.params, case.x1[:CHUNK], "ntk_vector")
    assert 2 * chunk_bytes <= jacobian < 4 * chunk_bytes
    assert chunk_bytes <= ntk_vector < 3 * chunk_bytes


def test_bad_arguments_are_named(cases):
    case = cases("mlp")
    with pytest.raises(ValueError, match="kind"):
        ntk.empirical_ntk(case.apply, case.params, case.x1, kind="diagonal")
    with pytest.raises(ValueError, match="strategy"):
        ntk.empirical_ntk(case.apply, case.params, case.x1, strategy="fastest")
    with pytest.raises(ValueError, match="chunk_size"):
        ntk.empirical_ntk(case.apply, case.params, case.x1, chunk_size=0)


# ---------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def kernel():
    features = np.random.default_rng(0).normal(size=(12, 30))
    return features @ features.T


def test_distance_is_zero_for_positive_multiples_and_one_for_orthogonal_kernels(kernel):
    assert ntk.kernel_distance(kernel, kernel) == 0.0
    assert ntk.kernel_distance(kernel, 3.5 * kernel) == pytest.approx(0.0, abs=1e-14)
    assert ntk.kernel_distance(np.diag([1.0, 0.0]), np.diag([0.0, 1.0])) == pytest.approx(1.0)
    assert 0 < ntk.kernel_distance(kernel, kernel + np.eye(12) * kernel.max()) < 1


def test_velocity_is_distance_per_step(kernel):
    other = kernel + np.eye(12) * kernel.max()
    assert ntk.kernel_velocity(kernel, other, 20) == pytest.approx(ntk.kernel_distance(kernel, other) / 20)
    with pytest.raises(ValueError, match="positive"):
        ntk.kernel_velocity(kernel, other, 0)


def test_alignment_of_the_target_kernel_is_one_and_ignores_constant_shifts(kernel):
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    targets = ntk.one_hot(labels, 3)
    assert ntk.target_alignment(targets @ targets.T, labels, 3) == 1.0
    assert ntk.target_alignment(4 * targets @ targets.T + 7.0, labels, 3) == pytest.approx(1.0, abs=1e-14)
    assert -1 <= ntk.target_alignment(kernel, labels, 3) < 0.9


def test_specialisation_of_class_target_kernels_is_diagonal():
    labels = np.array([0, 1, 2, 2, 1, 0, 0, 1])
    targets = ntk.one_hot(labels, 3)
    per_class = np.stack([np.outer(targets[:, c], targets[:, c]) for c in range(3)])
    matrix = ntk.specialisation(per_class, labels)
    assert matrix.shape == (3, 3)
    np.testing.assert_array_equal(np.diag(matrix), 1.0)
    off_diagonal = matrix[~np.eye(3, dtype=bool)]  # squared correlations of two centred one-hot columns
    assert ((off_diagonal > 0) & (off_diagonal < 0.5)).all()


def test_kernel_metrics_of_a_zero_norm_kernel_are_nan(kernel):
    """A kernel of zero norm (after centring: a constant kernel) has no direction: its distances and
    alignments are undefined, NaN, never a division by zero."""
    zero, constant = np.zeros_like(kernel), np.full_like(kernel, 3.0)
    assert math.isnan(ntk.kernel_distance(zero, kernel)) and math.isnan(ntk.kernel_distance(zero, zero))
    labels = np.arange(12) % 3
    assert math.isnan(ntk.target_alignment(constant, labels, 3))
    assert np.isnan(ntk.specialisation(np.stack([constant] * 3), labels)).all()


# ---------------------------------------------------------------- measuring a training run


@pytest.fixture(scope="module")
def linearised_run(tiny_data, tmp_path_factory):
    """A tiny K = ∞ run (θ_lin stays θ₀ throughout) with five snapshots."""
    out = tmp_path_factory.mktemp("run_Kinf")
    config = dict(
        data=str(tiny_data), dataset="synthetic", model={"name": "mlp", "label": "mlp_small", "depth": 1, "width": 16},
        K="inf", switch_step=None, seed=0, variant="base", steps=40, batch_size=32,
        optimizer={"name": "adam", "learning_rate": 1e-2, "momentum": 0.0, "schedule": "constant"},
        loss="cross_entropy", augment=False, reset_optimizer=False, proximal_damping=0.0, eval_every=20, eval_train_size=64, scan_steps=5,
        num_snapshots=4, checkpoint_every=20,
    )
    assert train.run(train.RunConfig.from_dict(config), out) == "ok"
    return out


@pytest.fixture(scope="module")
def measured(linearised_run, tiny_data):
    """The NTK table of the K = ∞ run, and how many kernels were computed for it."""
    calls = []
    original = ntk.empirical_ntk

    def counting(*args, **kwargs):
        calls.append(kwargs["kind"])
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ntk, "empirical_ntk", counting)
        table = ntk.measure_run(linearised_run, tiny_data, probe_size=16)
    return table, calls


def test_linearisation_point_of_a_linearised_run_never_moves(measured, linearised_run):
    table, _ = measured
    steps = sorted(int(path.stem.removeprefix("step_")) for path in (linearised_run / "snapshots").glob("*.npz"))
    linear = table[table["point"] == "linearisation"]
    distance = linear[linear["metric"] == "distance_from_init"]
    assert sorted(distance["step"]) == steps and len(steps) >= 4
    assert (distance["value"] == 0.0).all()
    assert (linear.loc[linear["metric"] == "velocity", "value"] == 0.0).all()
    network = table[(table["point"] == "network") & (table["metric"] == "distance_from_init")].set_index("step")
    assert network.loc[0, "value"] == 0.0 and network.loc[steps[-1], "value"] > 1e-4


def test_identical_parameters_share_one_kernel(measured, linearised_run):
    _, calls = measured
    snapshots = len(list((linearised_run / "snapshots").glob("*.npz")))
    assert calls == ["per_class"] * snapshots  # θ₀ once (step 0 and every θ_lin), then θ at each later step


def test_table_follows_the_ntk_schema_with_the_run_keys(measured, linearised_run):
    table, _ = measured
    assert list(table.columns) == list(tables.NTK_COLUMNS)
    tables.validate_ntk(table, "measured")
    run = {"dataset": "synthetic", "model": "mlp_small", "architecture": "mlp", "depth": 1, "K": math.inf,
           "seed": 0, "variant": "base", "probe_size": 16}
    for column, value in run.items():
        assert (table[column] == value).all(), column
    assert table["switch_step"].isna().all()
    per_point_and_step = table.groupby(["step", "point"])["metric"].value_counts().unstack(fill_value=0)
    assert (per_point_and_step["specialisation"] == 4 * 4).all()  # the tiny data has 4 classes
    assert (per_point_and_step["alignment"] == 1).all()
    assert per_point_and_step.loc[0, "velocity"].eq(0).all() and per_point_and_step.drop(index=0)["velocity"].eq(1).all()
    assert table.loc[table["metric"] == "alignment", "value"].between(-1, 1).all()


def test_kernels_are_measured_in_float32_whatever_the_runs_compute_dtype(measured, linearised_run, tiny_data,
                                                                         tmp_path):
    """A run trained with bfloat16 matmuls is measured with float32 ones: its snapshots give the
    same table as the float32 model's."""
    run = tmp_path / "run"
    shutil.copytree(linearised_run, run)
    summary = json.loads((run / "run.json").read_text())
    summary["config"]["model"]["compute_dtype"] = "bfloat16"
    (run / "run.json").write_text(json.dumps(summary))
    np.testing.assert_array_equal(ntk.measure_run(run, tiny_data, probe_size=16)["value"], measured[0]["value"])


def test_missing_run_snapshots_or_initial_snapshot_are_named(linearised_run, tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        ntk.measure_run(tmp_path, tiny_data, probe_size=8)
    (tmp_path / "run.json").write_text((linearised_run / "run.json").read_text())
    with pytest.raises(FileNotFoundError, match="no snapshots"):
        ntk.measure_run(tmp_path, tiny_data, probe_size=8)
    (tmp_path / "snapshots").mkdir()
    last = max((linearised_run / "snapshots").glob("step_*.npz"))
    (tmp_path / "snapshots" / last.name).write_bytes(last.read_bytes())
    with pytest.raises(ValueError, match="step_0000000.npz"):
        ntk.measure_run(tmp_path, tiny_data, probe_size=8)


def test_degenerate_kernel_is_recorded_as_nan_with_a_warning(linearised_run, tiny_data, tmp_path, caplog):
    """Dead ReLUs (here every parameter zero) leave the head bias's constant kernel, whose centred form
    is zero: the alignment and specialisation of that snapshot are NaN, with a warning naming it, and
    every other measurement is made."""
    run = tmp_path / "run"
    shutil.copytree(linearised_run, run)
    last = max((run / "snapshots").glob("step_*.npz"))
    like = models.create("mlp", input_shape=(8, 8, 1), num_classes=4, seed=0, depth=1, width=16).params
    dead = jax.tree.map(jnp.zeros_like, like)
    train.save_snapshot(last, dead, dead)
    table = ntk.measure_run(run, tiny_data, probe_size=16)
    step = int(last.stem.removeprefix("step_"))
    at_last, before = table[table["step"] == step], table[table["step"] < step]
    undefined = at_last["metric"].isin(["alignment", "specialisation"])
    assert at_last.loc[undefined, "value"].isna().all() and np.isfinite(at_last.loc[~undefined, "value"]).all()
    assert np.isfinite(before["value"]).all()
    assert f"step {step}" in caplog.text and "degenerate kernel" in caplog.text


def test_snapshots_at_and_after_the_divergence_are_not_measured(linearised_run, tiny_data, tmp_path, caplog):
    """A diverged run's snapshots from its first non-finite loss on are not measured (their parameters
    are those of a blown-up run, finite or not); every row says the run diverged, and where."""
    run = tmp_path / "run"
    shutil.copytree(linearised_run, run)
    steps = sorted(int(path.stem.removeprefix("step_")) for path in (run / "snapshots").glob("step_*.npz"))
    diverged_step = steps[2]
    summary = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(summary | {"status": "diverged", "diverged_step": diverged_step}))
    table = ntk.measure_run(run, tiny_data, probe_size=16)
    assert sorted(table["step"].unique()) == steps[:2]
    assert (table["status"] == "diverged").all() and (table["diverged_step"] == diverged_step).all()
    assert f"diverged at step {diverged_step}" in caplog.text
    assert tables.diverged_runs(table)[["K", "diverged_step"]].values.tolist() == [[math.inf, diverged_step]]
    measured = ntk.measure_run(linearised_run, tiny_data, probe_size=16)
    assert (measured["status"] == "ok").all() and measured["diverged_step"].isna().all()
    assert tables.diverged_runs(measured).empty
