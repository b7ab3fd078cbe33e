"""Models: shapes, the registry, per-example independence (GroupNorm in resnet18), compute dtypes."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from itlin import models, ntk
from itlin.linearise import linearise

SMALL = {"mlp": {"depth": 2, "width": 16}, "cnn": {"depth": 2, "width": 8}, "resnet18": {"width": 4}}


@pytest.fixture(scope="module", params=sorted(SMALL))
def small_model(request):
    """One small model of each architecture and its jitted apply, shared by the tests below."""
    model = models.create(request.param, input_shape=(8, 8, 3), num_classes=5, seed=0, **SMALL[request.param])
    return model, jax.jit(model.apply)


def test_apply_is_pure_and_shaped(small_model):
    model, apply = small_model
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    logits = apply(model.params, x)
    assert logits.shape == (4, 5)
    np.testing.assert_array_equal(logits, apply(model.params, x))  # no hidden state
    shifted = jax.tree.map(lambda p: p + 0.1, model.params)
    assert not np.allclose(apply(shifted, x), logits, atol=1e-4)  # the output depends on the params given


def test_each_example_is_independent_of_the_batch(small_model):
    """An example's output, and so its NTK row, must not depend on the rest of the batch."""
    model, apply = small_model
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    alone = apply(model.params, jnp.concatenate([x[:1], jnp.zeros_like(x[1:])]))
    np.testing.assert_allclose(apply(model.params, x)[0], alone[0], rtol=1e-5, atol=1e-6)


def test_seed_controls_initialisation():
    a, b, c = (models.create("cnn", input_shape=(8, 8, 1), num_classes=3, seed=s) for s in (0, 0, 1))
    assert all(jax.tree.leaves(jax.tree.map(jnp.array_equal, a.params, b.params)))
    assert not all(jax.tree.leaves(jax.tree.map(jnp.array_equal, a.params, c.params)))


def test_resnet18_has_the_standard_size():
    """The CIFAR ResNet-18 has 11.17M parameters (counted from shapes, without initialising)."""
    abstract = nnx.eval_shape(lambda: models.ResNet18((32, 32, 3), 10, rngs=nnx.Rngs(0)))
    count = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(abstract)))
    assert 11.1e6 < count < 11.2e6


def test_unknown_model_names_the_key():
    with pytest.raises(ValueError, match="model.name"):
        models.create("vgg", input_shape=(8, 8, 1), num_classes=3, seed=0)


def _dtype_case(name: str, compute_dtype: str):
    """A small model in ``compute_dtype``, a batch, labels and a linearisation point ≠ initialisation."""
    size = 16 if name == "resnet18" else 8  # resnet18's last stage needs at least a 2x2 map
    model = models.create(name, input_shape=(size, size, 3), num_classes=5, seed=0, compute_dtype=compute_dtype,
                          **SMALL[name])
    x = jax.random.normal(jax.random.key(1), (4, size, size, 3))
    theta_lin = jax.tree.map(lambda p: p + 0.05, model.params)
    return model, x, jnp.arange(4) % 5, theta_lin


def _identities(model, x, y, theta_lin) -> dict:
    """At θ_lin: the logits of f and of f_lin, and the loss and gradient of each (one compilation)."""
    f_lin = linearise(model.apply)

    def measure(theta_lin):
        def loss(f):
            return jax.value_and_grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(f(p), y).mean())

        value, grads = loss(lambda p: model.apply(p, x))(theta_lin)
        value_lin, grads_lin = loss(lambda p: f_lin(p, theta_lin, x))(theta_lin)
        flat, flat_lin = (jnp.concatenate([g.ravel() for g in jax.tree.leaves(tree)]) for tree in (grads, grads_lin))
        return dict(logits=model.apply(theta_lin, x), logits_lin=f_lin(theta_lin, theta_lin, x), value=value,
                    value_lin=value_lin, grads=flat, grads_lin=flat_lin)

    return jax.jit(measure)(theta_lin)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_float32_compute_keeps_the_linearisation_identities_exact(name):
    """compute_dtype=float32 is the default model bit for bit, f_lin = f exactly at θ_lin, and the
    gradients of f_lin and f there agree to float32 rounding."""
    model, x, y, theta_lin = _dtype_case(name, "float32")
    default = models.create(name, input_shape=x.shape[1:], num_classes=5, seed=0, **SMALL[name])
    found = _identities(model, x, y, theta_lin)
    np.testing.assert_array_equal(found["logits"], jax.jit(default.apply)(theta_lin, x))
    np.testing.assert_array_equal(found["logits_lin"], found["logits"])
    np.testing.assert_allclose(found["value_lin"], found["value"], rtol=1e-6)
    np.testing.assert_allclose(found["grads_lin"], found["grads"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bfloat16_compute_runs_close_to_float32(name):
    """bfloat16 matmuls: parameters and logits stay float32, the outputs are within bfloat16
    rounding of float32 ones, and f_lin still equals f (and has its gradient) at θ_lin."""
    model, x, y, theta_lin = _dtype_case(name, "bfloat16")
    reference, *_ = _dtype_case(name, "float32")
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(model.params))
    found = _identities(model, x, y, theta_lin)
    expected = jax.jit(reference.apply)(theta_lin, x)
    assert found["logits"].dtype == jnp.float32
    assert not np.array_equal(found["logits"], expected)  # the matmuls did run in bfloat16
    assert float(jnp.linalg.norm(found["logits"] - expected) / jnp.linalg.norm(expected)) < 2e-2
    np.testing.assert_array_equal(found["logits_lin"], found["logits"])
    np.testing.assert_allclose(found["value_lin"], found["value"], rtol=1e-3)
    difference = jnp.linalg.norm(found["grads_lin"] - found["grads"]) / jnp.linalg.norm(found["grads"])
    assert float(difference) < 1e-2


def test_a_config_model_spec_builds_its_model():
    """A config's model mapping: ``label`` names it, every other key but ``name`` is an argument;
    overrides replace arguments."""
    spec = {"name": "mlp", "label": "mlp_small", "depth": 1, "width": 8}
    built = models.from_spec(spec, input_shape=(4, 4, 1), num_classes=3, seed=0)
    direct = models.create("mlp", input_shape=(4, 4, 1), num_classes=3, seed=0, depth=1, width=8)
    assert built.kwargs == {"depth": 1, "width": 8}
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, built.params, direct.params)))
    assert models.from_spec(spec, input_shape=(4, 4, 1), num_classes=3, seed=0, width=4).kwargs["width"] == 4


def test_unknown_compute_dtype_names_the_key():
    with pytest.raises(ValueError, match="model.compute_dtype"):
        models.create("mlp", input_shape=(8, 8, 1), num_classes=3, seed=0, compute_dtype="float16")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_linear_activation_makes_a_network_exactly_affine_in_its_input(name):
    """A deep linear network (S2's control): f(αx + (1 − α)y) = αf(x) + (1 − α)f(y), in float64."""
    with jax.enable_x64(True):
        model = models.create(name, input_shape=(8, 8, 1), num_classes=3, seed=0, depth=3, width=6,
                              activation="linear")
        params = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), model.params)
        x, y = jax.random.normal(jax.random.key(0), (2, 4, 8, 8, 1), jnp.float64)
        mixed = model.apply(params, 0.3 * x + 0.7 * y)
        np.testing.assert_allclose(mixed, 0.3 * model.apply(params, x) + 0.7 * model.apply(params, y), rtol=1e-12,
                                   atol=1e-12)
        relu = models.create(name, input_shape=(8, 8, 1), num_classes=3, seed=0, depth=3, width=6)
        relu_params = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), relu.params)
        assert not np.allclose(relu.apply(relu_params, 0.3 * x + 0.7 * y),
                               0.3 * relu.apply(relu_params, x) + 0.7 * relu.apply(relu_params, y))


def test_unknown_activation_names_the_key():
    with pytest.raises(ValueError, match="model.activation"):
        models.create("mlp", input_shape=(8, 8, 1), num_classes=3, seed=0, activation="tanh")


def test_below_readout_selects_every_parameter_but_the_head():
    model = models.create("cnn", input_shape=(8, 8, 1), num_classes=3, seed=0, depth=2, width=4)
    paths = models.parameter_paths(model.params)
    assert paths == ["convs/0/bias", "convs/0/kernel", "convs/1/bias", "convs/1/kernel", "head/bias", "head/kernel"]
    assert [path for path in paths if models.below_readout(path)] == paths[:4]


PUBLISHED_CNN = {"depth": 3, "width": 25, "kernel_size": [5, 3, 3], "stride": 2, "padding": 1, "pool": "none",
                 "head": "flatten"}
"""MNIST-1D's published CNN (Greydanus 2020, ``ConvBase``): conv1d(1→25, 5, stride 2, padding 1), two
conv1d(25→25, 3, stride 2, padding 1), ReLU after each, flatten (25 × 5), linear to 10."""


@pytest.mark.parametrize(("name", "kwargs", "count", "shapes"), [
    ("mlp", {"depth": 0, "width": 100}, 410, {"head/kernel": (40, 10)}),  # logistic regression
    ("mlp", {"depth": 2, "width": 100}, 15_210, {"hidden/0/kernel": (40, 100), "hidden/1/kernel": (100, 100)}),
    ("cnn", PUBLISHED_CNN, 5_210, {"convs/0/kernel": (5, 1, 25), "convs/2/kernel": (3, 25, 25),
                                   "head/kernel": (125, 10)}),
])
def test_mnist1d_published_models_have_the_published_shapes(name, kwargs, count, shapes):
    """Logistic regression, the MLP and the CNN of MNIST-1D's table on its (40, 1) signals: the parameter counts
    its models print (410, 15210, 5210) and the layer shapes."""
    model = models.create(name, input_shape=(40, 1), num_classes=10, seed=0, **kwargs)
    found = dict(zip(models.parameter_paths(model.params), (leaf.shape for leaf in jax.tree.leaves(model.params))))
    assert model.num_params == count
    assert {path: found[path] for path in shapes} == shapes
    assert model.apply(model.params, jnp.ones((3, 40, 1))).shape == (3, 10)


def test_cnn_on_signals_strides_where_the_length_allows():
    """A deeper 1D CNN: stride 2 while the signal is long, then stride 1, flattened; its feature map is the
    length the layers give (40 → 20 → 10 → 5 → 5 → 5 → 5); without padding (40 → 19 → 9 → 4 → 2 → 0) the
    layer that leaves no position is refused, naming the key."""
    deep = dict(depth=6, width=8, kernel_size=3, stride=[2, 2, 2, 1, 1, 1], padding=1, pool="none", head="flatten")
    model = models.create("cnn", input_shape=(40, 1), num_classes=10, seed=0, **deep)
    assert model.params["head"]["kernel"].shape == (8 * 5, 10)
    assert model.apply(model.params, jnp.ones((2, 40, 1))).shape == (2, 10)
    with pytest.raises(ValueError, match="model.kernel_size: layer 4"):
        models.create("cnn", input_shape=(40, 1), num_classes=10, seed=0, **deep | {"padding": "VALID"})


def test_cnn_on_signals_is_a_convolution_over_positions():
    """The 1D CNN computes what its definition says: one layer, kernel 5, stride 2, padding 1, against a loop."""
    model = models.create("cnn", input_shape=(40, 1), num_classes=3, seed=0, depth=1, width=4, kernel_size=5,
                          stride=2, padding=1, pool="none", head="flatten")
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 40, 1)))
    conv, head = model.params["convs"][0], model.params["head"]
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    features = np.stack([np.einsum("nkc,kcd->nd", padded[:, 2 * i:2 * i + 5], conv["kernel"]) for i in range(19)], 1)
    expected = np.maximum(features + conv["bias"], 0).reshape(2, -1) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(model.apply(model.params, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"kernel_size": [3, 3, 3]}, "model.kernel_size"), ({"stride": 0}, "model.stride"),
    ({"padding": "FULL"}, "model.padding"), ({"pool": "max"}, "model.pool"), ({"head": "attention"}, "model.head"),
    ({"depth": 0}, "model.depth"),
])
def test_invalid_cnn_kwargs_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        models.create("cnn", input_shape=(40, 1), num_classes=3, seed=0, **{"depth": 2, "width": 4} | kwargs)


def test_mlp_depth_must_be_a_count():
    with pytest.raises(ValueError, match="model.depth"):
        models.create("mlp", input_shape=(40, 1), num_classes=3, seed=0, depth=-1)
CONV_CASES = {  # input shape (batch, *spatial, channels), output channels, nnx.Conv settings
    "1d, MNIST-1D's first layer": ((3, 40, 1), 5, dict(kernel_size=(5,), strides=(2,), padding=1)),
    "1d, stride 2, SAME": ((3, 19, 4), 6, dict(kernel_size=(3,), strides=(2,), padding="SAME")),
    "1d, VALID, no bias": ((3, 10, 4), 3, dict(kernel_size=(3,), padding="VALID", use_bias=False)),
    "2d, SAME": ((2, 8, 8, 3), 4, dict(kernel_size=(3, 3))),
    "2d, stride 2, uneven padding": ((2, 9, 7, 3), 4, dict(kernel_size=(3, 2), strides=(2, 1),
                                                            padding=((1, 2), (0, 1)))),
    "2d, 1x1, stride 2": ((2, 8, 8, 3), 5, dict(kernel_size=(1, 1), strides=(2, 2), use_bias=False)),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_every_conv_form_computes_the_same_convolution(case):
    """``conv``, ``matmul`` and ``auto``: the same parameters as nnx.Conv (tree and initialisation),
    and outputs and gradients (parameters and input) equal to float32 rounding."""
    shape, features, settings = CONV_CASES[case]
    x = jax.random.normal(jax.random.key(1), shape)
    reference = nnx.Conv(shape[-1], features, rngs=nnx.Rngs(0), **settings)
    found = {}
    for form in models.CONV_FORMS:
        layer = models.conv(shape[-1], features, form=form, rngs=nnx.Rngs(0), **settings)
        graphdef, params = nnx.split(layer)
        assert jax.tree.all(jax.tree.map(jnp.array_equal, nnx.to_pure_dict(params),
                                         nnx.to_pure_dict(nnx.state(reference))))

        def loss(params, x, graphdef=graphdef):
            y = nnx.merge(graphdef, params)(x)
            return jnp.sum(jnp.sin(y)), y

        (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
        found[form] = (y, *jax.tree.leaves(grads))
    np.testing.assert_array_equal(found["conv"][0], reference(x))
    for form in ("matmul", "auto"):
        for value, expected in zip(found[form], found["conv"], strict=True):
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)


def test_auto_conv_form_follows_its_rule():
    """On the CPU a convolution of few output channels becomes patches x matmul and a wider one stays
    lax.conv; elsewhere lax.conv (``models.auto_conv_form``); a model's ``auto`` layers run what the rule picks."""
    assert models.auto_conv_form("cpu", (5, 1, 25)) == "matmul"
    assert models.auto_conv_form("cpu", (3, 3, 1, 16)) == "matmul"
    assert models.auto_conv_form("cpu", (3, 3, 16, 64)) == "conv"
    assert models.auto_conv_form("gpu", (5, 1, 25)) == "conv"
    assert models.auto_conv_form("tpu", (3, 3, 1, 16)) == "conv"

    for x, kernel_size, width in [(jnp.ones((2, 10, 3)), (3,), 4), (jnp.ones((2, 6, 6, 3)), (3, 3), 4),
                                  (jnp.ones((2, 6, 6, 3)), (3, 3), 64)]:
        layer = models.conv(3, width, kernel_size=kernel_size, rngs=nnx.Rngs(0))
        ran = {equation.primitive.name for equation in jax.make_jaxpr(layer)(x).jaxpr.eqns}
        picked = models.auto_conv_form(jax.default_backend(), (*kernel_size, 3, width))
        assert ("conv_general_dilated" in ran) == (picked == "conv")


def test_every_conv_form_of_a_cnn_has_the_same_parameters_and_outputs():
    """``conv``, ``matmul`` and ``auto`` build the same parameters, and compute the same outputs to float32
    rounding: the form is how the convolution runs, not what it is."""
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    built = {form: models.create("cnn", input_shape=(8, 8, 1), num_classes=3, seed=0, depth=2, width=16,
                                 conv_form=form) for form in models.CONV_FORMS}
    for form in ("conv", "matmul"):
        assert jax.tree.all(jax.tree.map(jnp.array_equal, built[form].params, built["auto"].params))
        np.testing.assert_allclose(built[form].apply(built[form].params, x),
                                   built["auto"].apply(built["auto"].params, x), rtol=1e-5, atol=1e-6)


def test_unknown_conv_form_names_the_key():
    with pytest.raises(ValueError, match="model.conv_form"):
        models.create("cnn", input_shape=(8, 8, 1), num_classes=3, seed=0, conv_form="im2col")
    with pytest.raises(ValueError, match="model.conv_form"):
        models.conv(2, 2, form="matmul", kernel_size=(3,), kernel_dilation=2, rngs=nnx.Rngs(0))(jnp.ones((1, 9, 2)))


@pytest.mark.parametrize(("name", "kwargs"), [
    ("mlp", {"depth": 2, "width": 16}),
    ("cnn", {"depth": 2, "width": 8, "conv_form": "conv"}),
    ("cnn", {"depth": 2, "width": 8, "conv_form": "matmul"}),
])
def test_ntk_parameterisation_is_the_standard_function_at_initialisation(name, kwargs):
    """For a seed, ``ntk`` computes the standard model's outputs at initialisation from kernels sqrt(fan_in)
    times larger (fan_in: k…·c_in) and the same (zero) biases; its kernel gradients are 1/sqrt(fan_in) times
    the standard ones, in either conv form."""
    built = {p: models.create(name, input_shape=(8, 8, 3), num_classes=5, seed=0, parameterisation=p, **kwargs)
             for p in models.PARAMETERISATIONS}
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    outputs, grads = {}, {}
    for p, model in built.items():
        outputs[p], pullback = jax.vjp(lambda params, model=model: model.apply(params, x), model.params)
        grads[p], = pullback(jnp.ones_like(outputs[p]))
    np.testing.assert_allclose(outputs["ntk"], outputs["standard"], rtol=1e-5, atol=1e-6)
    paths = models.parameter_paths(built["standard"].params)
    for path, *leaves in zip(paths, *(jax.tree.leaves(tree) for tree in (
            built["standard"].params, built["ntk"].params, grads["standard"], grads["ntk"])), strict=True):
        standard, ntk_param, standard_grad, ntk_grad = map(np.asarray, leaves)
        scale = np.sqrt(np.prod(standard.shape[:-1])) if path.endswith("kernel") else 1.0
        np.testing.assert_allclose(ntk_param, standard * scale, rtol=1e-6, atol=1e-7, err_msg=path)
        np.testing.assert_allclose(ntk_grad, standard_grad / scale, rtol=1e-5, atol=1e-6, err_msg=path)


def _initial_trace_kernels(parameterisation: str, width: int, seeds) -> list[np.ndarray]:
    """The trace NTK at initialisation of a depth-2 MLP (built from a config spec) on 8 fixed inputs of dimension 40."""
    x = jax.random.normal(jax.random.key(0), (8, 40))
    spec = {"name": "mlp", "depth": 2, "width": width, "parameterisation": parameterisation}
    built = [models.from_spec(spec, input_shape=(40,), num_classes=2, seed=seed) for seed in seeds]
    return [ntk.empirical_ntk(model.apply, model.params, x) for model in built]


def test_ntk_parameterisation_kernel_converges_with_width():
    """Under ``ntk`` the initial NTK tends to a deterministic limit of O(1) scale: its spread across seeds falls
    ~1/sqrt(width) (at least 2x for 16x the width) and its trace stays within 2x; under ``standard`` the trace
    grows ~width (more than 4x)."""
    spread, trace = {}, {}
    for width in (64, 1024):
        kernels = _initial_trace_kernels("ntk", width, seeds=(0, 1, 2))
        pairs = zip(kernels, kernels[1:] + kernels[:1])
        spread[width] = np.mean([np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in pairs])
        trace[width] = np.trace(kernels[0])
    assert spread[1024] < spread[64] / 2
    assert 0.5 < trace[1024] / trace[64] < 2
    standard = {width: np.trace(_initial_trace_kernels("standard", width, seeds=(0,))[0]) for width in (64, 1024)}
    assert standard[1024] / standard[64] > 4


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_unknown_parameterisation_names_the_key(name):
    with pytest.raises(ValueError, match="model.parameterisation"):
        models.create(name, input_shape=(8, 8, 1), num_classes=3, seed=0, parameterisation="mup")
