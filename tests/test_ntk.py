"""Tests of the empirical NTK (itlin.ntk): exact against full Jacobians, independent of chunking and
strategy, and the kernel measurements of a training run (itlin.measure_ntk).

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
from conftest import train_run
from jax.flatten_util import ravel_pytree

from itlin import data, measure_ntk, models, ntk, record, tables

NUM_CLASSES = 3
MODELS = {  # case -> (model name, kwargs, input shape): resnet18 needs 16x16 inputs for a 2x2 last stage
    "mlp": ("mlp", {"depth": 2, "width": 16}, (8, 8, 1)),
    "cnn": ("cnn", {"depth": 2, "width": 8}, (8, 8, 1)),
    "resnet18": ("resnet18", {"width": 4}, (16, 16, 1)),
    "mlp_ntk": ("mlp", {"depth": 2, "width": 16, "parameterisation": "ntk"}, (8, 8, 1)),  # C7's parameterisation
    "cnn_ntk": ("cnn", {"depth": 2, "width": 8, "parameterisation": "ntk"}, (8, 8, 1)),
}
N1, N2, CHUNK = 4, 2, 3  # chunks of 3 pad both sets and give x1 two chunks (mirrored off-diagonal blocks)


def relative_error(result, reference):
    return float(np.abs(result - reference).max() / np.abs(reference).max())


class Case:
    """A model in float64 with two input sets and the brute-force kernels from its full Jacobian."""

    def __init__(self, name):
        architecture, kwargs, shape = MODELS[name]
        model = models.create(architecture, input_shape=shape, num_classes=NUM_CLASSES, seed=0, **kwargs)  # float32
        self.apply = model.apply
        with jax.enable_x64(True):
            self.params = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), model.params)
            inputs = jax.random.normal(jax.random.key(1), (N1 + N2, *shape), jnp.float64)
            flat, unravel = ravel_pytree(self.params)
            jacobian = np.asarray(jax.jit(jax.jacrev(lambda theta: model.apply(unravel(theta), inputs)))(flat))
        self.x1, self.x2 = inputs[:N1], inputs[N1:]  # jacobian: (n, C, P)
        self.jacobian = jacobian
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


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_largest_eigenvalue_is_that_of_the_gauss_newton_matrix_from_the_full_jacobian(cases, x64, name):
    """``learning_rate: auto``'s curvature: λ_max of JᵀJ/n, with J the brute-force Jacobian of all n·C outputs."""
    case = cases(name)
    inputs = jnp.concatenate([case.x1, case.x2])
    jacobian = case.jacobian.reshape(-1, case.jacobian.shape[-1])
    expected = np.linalg.eigvalsh(jacobian.T @ jacobian / len(inputs))[-1]
    assert ntk.largest_eigenvalues(case.apply, [case.params], inputs) == [pytest.approx(expected, rel=1e-6)]


def brute_force_subset_kernel(case, keep, symmetric):
    """The per-class kernel of the parameters whose path ``keep`` accepts, from the Jacobian columns of
    exactly those parameters (ravel_pytree orders the columns leaf by leaf)."""
    sizes = [leaf.size for leaf in jax.tree.leaves(case.params)]
    columns = np.concatenate([np.full(size, keep(path)) for path, size in zip(models.parameter_paths(case.params), sizes)])
    jacobian = case.jacobian[..., columns]
    j1, j2 = jacobian[:N1], jacobian[N1:]
    return np.einsum("icp,jcp->cij", j1, j1 if symmetric else j2)


@pytest.mark.parametrize("strategy", ntk.STRATEGIES)
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_parameter_filtered_kernel_equals_the_jacobian_of_exactly_those_parameters(cases, x64, name, strategy):
    case = cases(name)
    for keep in (models.below_readout, lambda path: path.startswith("head/"), lambda path: path.endswith("bias")):
        for symmetric in (True, False):
            result = case.kernel("per_class", symmetric=symmetric, chunk_size=CHUNK, strategy=strategy,
                                 parameter_filter=keep)
            assert relative_error(result, brute_force_subset_kernel(case, keep, symmetric)) < 1e-5
    groups = ntk.empirical_ntks(case.apply, case.params, case.x1, groups={"all": None, "backbone": models.below_readout},
                                kind="per_class", chunk_size=CHUNK, strategy=strategy)
    assert relative_error(groups["all"], case.reference[True, "per_class"]) < 1e-5
    assert relative_error(groups["backbone"], brute_force_subset_kernel(case, models.below_readout, True)) < 1e-5


def test_a_filter_that_selects_nothing_is_named(cases, x64):
    with pytest.raises(ValueError, match="selects none of the parameters"):
        cases("mlp").kernel("trace", parameter_filter=lambda path: False)


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


def test_target_energy_of_the_target_kernel_is_whole_within_the_classes():
    """The centred targets of C classes span C − 1 directions: a kernel that is their Gram matrix (plus a
    smaller part orthogonal to them) holds all their energy in its top C − 1 eigenvectors, none in the next."""
    labels = np.repeat(np.arange(4), 5)
    centred = np.eye(4)[labels] - 0.25
    rest = np.linalg.qr(np.random.default_rng(0).normal(size=(20, 20)))[0]
    rest -= centred @ np.linalg.lstsq(centred, rest, rcond=None)[0]  # orthogonal to the targets
    kernel = 10 * centred @ centred.T + 0.1 * rest @ rest.T
    energy = ntk.target_energy(kernel, labels, 4, 8)
    np.testing.assert_allclose(energy[2:], 1.0, atol=1e-9)
    assert 0 < energy[0] < energy[1] < 1
    assert np.isnan(ntk.target_energy(np.full((20, 20), np.nan), labels, 4, 8)).all()
    assert np.isnan(ntk.target_energy(np.zeros((20, 20)), labels, 4, 8)).all()  # degenerate: every ReLU dead
    assert np.isnan(ntk.target_energy(np.ones((20, 20)), labels, 4, 8)).all()  # the constant mode alone


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
        num_snapshots=4, velocity_interval=5, checkpoint_every=20,
    )
    assert train_run(config, out) == "ok"
    return out


@pytest.fixture(scope="module")
def measured(linearised_run, tiny_data):
    """The NTK table of the K = ∞ run, and how many kernels were computed for it."""
    calls = []
    original = ntk.empirical_ntks

    def counting(*args, **kwargs):
        calls.append(kwargs["kind"])
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ntk, "empirical_ntks", counting)
        table = measure_ntk.measure_runs([linearised_run], tiny_data, probe_size=16)[0]
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
    assert network.index.tolist() == [steps[-1]] and network.loc[steps[-1], "value"] > 1e-4  # θ at the end only


def test_identical_parameters_share_one_kernel(measured, linearised_run):
    _, calls = measured
    snapshots = len(list((linearised_run / "snapshots").glob("*.npz")))
    assert snapshots >= 4 and calls == ["per_class"] * 2  # θ₀ once (step 0 and every θ_lin), then θ at the end


def test_table_follows_the_ntk_schema_with_the_run_keys(measured, linearised_run):
    table, _ = measured
    assert list(table.columns) == list(tables.NTK_COLUMNS)
    tables.validate("ntk", table, "measured")
    run = {"dataset": "synthetic", "model": "mlp_small", "architecture": "mlp", "depth": 1, "activation": "relu",
           "K": math.inf, "seed": 0, "variant": "base", "probe_size": 16}
    for column, value in run.items():
        assert (table[column] == value).all(), column
    assert table["switch_step"].isna().all()
    per_point_and_step = table.groupby(["step", "point"])["metric"].value_counts().unstack(fill_value=0)
    for metric in ("specialisation", "specialisation_backbone"):
        assert (per_point_and_step[metric] == 4 * 4).all()  # the tiny data has 4 classes
    for metric in ("alignment", "alignment_uncentred", "distance_from_init", "relative_change", "norm_ratio",
                   "centred_distance"):
        assert (per_point_and_step[metric] == 1).all(), metric
    # snapshots 0, 5, 10, 15, 20, 25, 40: the velocity of step t needs the snapshot t + 5
    velocity_steps = per_point_and_step["velocity"].unstack()["linearisation"]
    assert velocity_steps[velocity_steps == 1].index.tolist() == [0, 5, 10, 15, 20]
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
    np.testing.assert_array_equal(measure_ntk.measure_runs([run], tiny_data, probe_size=16)[0]["value"], measured[0]["value"])


def test_missing_run_snapshots_or_initial_snapshot_are_named(linearised_run, tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        measure_ntk.measure_runs([tmp_path], tiny_data, probe_size=8)[0]
    (tmp_path / "run.json").write_text((linearised_run / "run.json").read_text())
    with pytest.raises(FileNotFoundError, match="no snapshots"):
        measure_ntk.measure_runs([tmp_path], tiny_data, probe_size=8)[0]
    (tmp_path / "snapshots").mkdir()
    last = max((linearised_run / "snapshots").glob("step_*.npz"))
    (tmp_path / "snapshots" / last.name).write_bytes(last.read_bytes())
    with pytest.raises(ValueError, match="step_0000000.npz"):
        measure_ntk.measure_runs([tmp_path], tiny_data, probe_size=8)[0]


def small_run(tiny_data, **changes) -> dict:
    """The run config of a small K = 10 MLP run on the tiny data (40 steps, snapshots in pairs 5 apart), with
    ``changes``."""
    return dict(
        data=str(tiny_data), dataset="synthetic", model={"name": "mlp", "depth": 2, "width": 8}, K=10,
        switch_step=None, seed=1, variant="base", steps=40, batch_size=32,
        optimizer={"name": "adam", "learning_rate": 3e-2, "momentum": 0.0, "schedule": "constant"},
        loss="cross_entropy", augment=False, reset_optimizer=False, proximal_damping=0.0, eval_every=20,
        eval_train_size=64, scan_steps=5, num_snapshots=3, velocity_interval=5, checkpoint_every=40) | changes


def test_ntk_table_equals_brute_force_jacobians_of_the_runs_own_snapshots(tiny_data, tmp_path):
    """A K = 10 run (θ and θ_lin differ): every new metric of the table at the last snapshot against
    NumPy formulas on float64 per-class kernels from full Jacobians of the snapshot's parameters."""
    config = small_run(tiny_data)
    run = tmp_path / "run"
    train_run(config, run)
    table = measure_ntk.measure_runs([run], tiny_data, probe_size=12)[0]
    dataset = data.load(tiny_data)
    probe = data.probe_indices(dataset.y_train, 12, seed=0)
    x, labels = dataset.x_train[probe], dataset.y_train[probe]
    model = models.create("mlp", input_shape=dataset.input_shape, num_classes=4, seed=1, depth=2, width=8)
    backbone = np.array([models.below_readout(path) for path, leaf in
                         zip(models.parameter_paths(model.params), jax.tree.leaves(model.params)) for _ in range(leaf.size)])

    def per_class(params, columns=slice(None)):
        with jax.enable_x64(True):
            flat, unravel = ravel_pytree(jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), params))
            jacobian = np.asarray(jax.jacrev(lambda theta: model.apply(unravel(theta), jnp.asarray(x, jnp.float64)))(flat))
        jacobian = jacobian[..., columns]
        return np.einsum("icp,jcp->cij", jacobian, jacobian)

    def cosine(a, b):
        return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    H = np.eye(12) - 1 / 12
    Y = np.eye(4)[labels]
    theta0, _ = record.load_snapshot(run / "snapshots" / "step_0000000.npz", model.params)
    initial = per_class(theta0).sum(0)
    last = 40
    for point, index in (("network", 0), ("linearisation", 1)):
        params = record.load_snapshot(run / "snapshots" / f"step_{last:07d}.npz", model.params)[index]
        kernels = per_class(params)
        trace = kernels.sum(0)
        expected = {
            "distance_from_init": 1 - cosine(initial, trace),
            "relative_change": np.linalg.norm(trace - initial) / np.linalg.norm(initial),
            "norm_ratio": np.linalg.norm(trace) / np.linalg.norm(initial),
            "centred_distance": 1 - cosine(H @ initial @ H, H @ trace @ H),
            "alignment": cosine(H @ trace @ H, H @ Y @ Y.T @ H),
            "alignment_uncentred": cosine(trace, Y @ Y.T),
        }
        eigenvalues, vectors = np.linalg.eigh(trace)
        top = vectors[:, np.argsort(eigenvalues)[::-1]]
        centred = Y - Y.mean(0)
        energy = [np.linalg.norm(top[:, :k] @ top[:, :k].T @ centred) ** 2 / np.linalg.norm(centred) ** 2
                  for k in range(1, 9)]  # k = 1 … 2C, C = 4 classes
        found = table[(table["step"] == last) & (table["point"] == point) & (table["metric"] == "target_energy")]
        assert found["top_k"].tolist() == list(range(1, 9))
        np.testing.assert_allclose(found["value"], energy, rtol=1e-4, atol=1e-6)
        rows = table[(table["step"] == last) & (table["point"] == point)].set_index("metric")
        for metric, value in expected.items():
            assert rows.loc[metric, "value"] == pytest.approx(value, rel=1e-4, abs=1e-6), (point, metric)
        for metric, matrices in (("specialisation", kernels), ("specialisation_backbone", per_class(params, backbone))):
            matrix = np.array([[cosine(H @ k @ H, H @ np.outer(Y[:, t], Y[:, t]) @ H) for t in range(4)] for k in matrices])
            found = table[(table["step"] == last) & (table["point"] == point) & (table["metric"] == metric)]
            np.testing.assert_allclose(found.pivot(index="output_class", columns="target_class", values="value"),
                                       matrix, rtol=1e-4, atol=1e-6)
    steps = record.snapshot_steps(40, 5, 3, 5)
    pairs = [(t, t + 5) for t in steps if t + 5 in steps]
    assert pairs == [(0, 5), (5, 10), (10, 15), (15, 20)]
    velocities = table[(table["point"] == "linearisation") & (table["metric"] == "velocity")].set_index("step")["value"]
    assert velocities.index.tolist() == [t for t, _ in pairs]
    t, later = pairs[2]  # θ_lin is θ₀ at step 10 and θ_10 at step 15 (K = 10): the trained kernel moves
    kernel_t, kernel_later = (per_class(record.load_snapshot(run / "snapshots" / f"step_{step:07d}.npz", model.params)[1]).sum(0)
                              for step in (t, later))
    assert velocities[t] > 0 and velocities[5] == 0.0  # θ_lin is θ₀ at steps 5 and 10
    assert velocities[t] == pytest.approx((1 - cosine(kernel_t, kernel_later)) / 5, rel=1e-3, abs=1e-8)


def _hand_made_kernel(n: int = 6, seed: int = 0) -> np.ndarray:
    features = np.random.default_rng(seed).normal(size=(n, 4))
    return features @ features.T


def test_scaled_kernel_fort_distance_zero_relative_change_99_norm_ratio_100():
    kernel = _hand_made_kernel()
    assert ntk.kernel_distance(kernel, 100 * kernel) == pytest.approx(0.0, abs=1e-12)
    assert ntk.relative_change(kernel, 100 * kernel) == pytest.approx(99.0)
    assert ntk.norm_ratio(kernel, 100 * kernel) == pytest.approx(100.0)
    assert ntk.centred_distance(kernel, 100 * kernel) == pytest.approx(0.0, abs=1e-12)


def test_kernel_shifted_by_a_constant_has_centred_distance_zero_but_moves():
    kernel = _hand_made_kernel()
    shifted = kernel + 5.0
    assert ntk.centred_distance(kernel, shifted) == pytest.approx(0.0, abs=1e-12)
    assert ntk.kernel_distance(kernel, shifted) > 0.05
    assert ntk.relative_change(kernel, shifted) == pytest.approx(5.0 * 6 / np.linalg.norm(kernel))


def test_new_kernel_metrics_against_numpy_formulas():
    a, b = _hand_made_kernel(seed=1), _hand_made_kernel(seed=2)
    norm = np.linalg.norm
    assert ntk.relative_change(a, b) == pytest.approx(norm(b - a) / norm(a))
    assert ntk.norm_ratio(a, b) == pytest.approx(norm(b) / norm(a))
    H = np.eye(6) - np.ones((6, 6)) / 6
    ca, cb = H @ a @ H, H @ b @ H
    assert ntk.centred_distance(a, b) == pytest.approx(1 - np.sum(ca * cb) / (norm(ca) * norm(cb)))
    labels = np.array([0, 1, 2, 0, 1, 2])
    Y = np.eye(3)[labels]
    target = Y @ Y.T
    assert ntk.uncentred_target_alignment(a, labels, 3) == pytest.approx(np.sum(a * target) / (norm(a) * norm(target)))
    ct = H @ target @ H
    assert ntk.target_alignment(a, labels, 3) == pytest.approx(np.sum(ca * ct) / (norm(ca) * norm(ct)))


def test_relative_change_of_a_zero_kernel_is_nan():
    assert math.isnan(ntk.relative_change(np.zeros((3, 3)), np.eye(3)))
    assert math.isnan(ntk.norm_ratio(np.zeros((3, 3)), np.eye(3)))


def test_degenerate_kernel_is_recorded_as_nan_with_a_warning(linearised_run, tiny_data, tmp_path, caplog):
    """Dead ReLUs (here every parameter zero) leave the head bias's constant kernel, whose centred form
    is zero: the centred measures of that snapshot (alignment, centred distance, specialisation, the
    targets' eigen-energy) are NaN, with a warning naming it, and every other measurement is made."""
    run = tmp_path / "run"
    shutil.copytree(linearised_run, run)
    last = max((run / "snapshots").glob("step_*.npz"))
    like = models.create("mlp", input_shape=(8, 8, 1), num_classes=4, seed=0, depth=1, width=16).params
    dead = jax.tree.map(jnp.zeros_like, like)
    record.save_snapshot(last, dead, dead)
    table = measure_ntk.measure_runs([run], tiny_data, probe_size=16)[0]
    step = int(last.stem.removeprefix("step_"))
    at_last, before = table[table["step"] == step], table[table["step"] < step]
    undefined = at_last["metric"].isin(["alignment", "centred_distance", "specialisation", "specialisation_backbone",
                                        "target_energy"])
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
    table = measure_ntk.measure_runs([run], tiny_data, probe_size=16)[0]
    assert sorted(table["step"].unique()) == steps[:2]
    assert (table["status"] == "diverged").all() and (table["diverged_step"] == diverged_step).all()
    assert f"diverged at step {diverged_step}" in caplog.text
    assert tables.diverged_runs(table)[["K", "diverged_step"]].values.tolist() == [[math.inf, diverged_step]]
    measured = measure_ntk.measure_runs([linearised_run], tiny_data, probe_size=16)[0]
    assert (measured["status"] == "ok").all() and measured["diverged_step"].isna().all()
    assert tables.diverged_runs(measured).empty


def test_standard_training_is_measured_at_its_linearisation_point_only(tiny_data, tmp_path):
    """K = 1 re-linearises at every step (θ_lin is θ one step earlier): one kernel per snapshot, θ_lin's."""
    train_run(small_run(tiny_data, K=1, steps=20, num_snapshots=2, eval_every=10, checkpoint_every=20), tmp_path / "run")
    table = measure_ntk.measure_runs([tmp_path / "run"], tiny_data, probe_size=12)[0]
    assert set(table["point"]) == {"linearisation"}
    assert table[table["metric"] == "relative_change"].set_index("step")["value"].iloc[-1] > 0
