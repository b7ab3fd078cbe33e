"""Flax NNX models, each split once into a pure ``apply(params, x)`` and a parameter pytree.

Training and NTK code see only ``Model.apply`` and ``Model.params``, so every method in the
library is a pure function of a parameter pytree (a nested dict of arrays).

Every model takes ``compute_dtype``: ``float32`` (the default) or ``bfloat16``, the dtype of its
matrix multiplications and convolutions. Parameters stay float32 either way; normalisation
statistics and the returned logits are float32, so only the matmuls run at lower precision.

Convolutional models take ``conv_form``: how each convolution is computed (``conv``), chosen per
backend and shape by default, with the parameters and outputs of ``nnx.Conv`` whichever form runs.

mlp and cnn take ``parameterisation`` (``PARAMETERISATIONS``): ``standard`` or ``ntk``, the NTK theory's own, under
which the empirical NTK converges to a deterministic limit as width grows and a step size means the same at every width.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

Params = Any  # a nested dict of arrays

COMPUTE_DTYPES = ("float32", "bfloat16")


def _compute_dtype(name: str) -> jnp.dtype | None:
    """The dtype of the matmuls and convolutions: None (Flax's default, the dtype of the inputs and
    parameters: exact float32, or float64 under x64) for ``float32``, else bfloat16."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"model.compute_dtype: must be one of {COMPUTE_DTYPES}, got {name!r}")
    return None if name == "float32" else jnp.dtype(name)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"relu": jax.nn.relu, "linear": lambda x: x}
"""Hidden-layer nonlinearity of mlp and cnn: ``linear`` (the identity) makes a deep linear network,
the companion paper's control for class specialisation (S2)."""

READOUT = "head"
"""Name of every model's readout layer (the last, dense one): the parameters below it are the
'backbone' whose per-head kernel shows class specialisation (``below_readout``)."""


def parameter_paths(tree: Params) -> list[str]:
    """The '/'-joined key path of every leaf of a parameter pytree, in leaf order ('convs/0/kernel')."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return ["/".join(str(getattr(key, "key", getattr(key, "idx", key))) for key in path) for path, _ in leaves]


def below_readout(path: str) -> bool:
    """Whether the parameter at ``path`` ('convs/0/kernel', 'head/bias') lies below the readout layer."""
    return path.split("/")[0] != READOUT


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"model.activation: must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def _full_precision(logits: jax.Array) -> jax.Array:
    """Logits in at least float32 (bfloat16 compute returns float32; float64 under x64 stays float64)."""
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


CONV_FORMS = ("auto", "conv", "matmul")
"""How a convolution is computed: ``conv`` (``lax.conv_general_dilated``, nnx.Conv's own), ``matmul``
(its patches times the kernel, one matrix product) or ``auto`` (``auto_conv_form`` picks per backend and shape)."""


def matmul_convolution(lhs, rhs, window_strides, padding, *, lhs_dilation=None, rhs_dilation=None,
                       dimension_numbers=None, feature_group_count=1, precision=None, preferred_element_type=None,
                       out_sharding=None):
    """``lax.conv_general_dilated`` on nnx.Conv's channels-last layout as one matmul: the input's patches,
    gathered by one strided slice per kernel offset, times the kernel reshaped to (k·…·c_in, c_out)."""
    if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))) or feature_group_count != 1:
        raise ValueError("model.conv_form: matmul computes neither dilated nor grouped convolutions; use conv")
    window, spatial = rhs.shape[:-2], lhs.shape[1:-1]
    pads = lax.padtype_to_pads(spatial, window, window_strides, padding) if isinstance(padding, str) else padding
    x = jnp.pad(lhs, [(0, 0), *pads, (0, 0)])
    out = [(size + low + high - k) // s + 1 for size, (low, high), k, s in zip(spatial, pads, window, window_strides)]
    patches = jnp.concatenate([x[(slice(None), *(slice(o, o + s * (n - 1) + 1, s)
                                                 for o, s, n in zip(offset, window_strides, out)))]
                               for offset in itertools.product(*map(range, window))], axis=-1)
    return jnp.dot(patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision,
                   preferred_element_type=preferred_element_type)


MATMUL_MAX_CHANNELS = 32
"""On the CPU, convolutions with at most this many output channels run as matmuls (``auto_conv_form``)."""


def auto_conv_form(backend: str, kernel_shape) -> str:
    """The faster form on ``backend`` of a convolution with a kernel of shape ``kernel_shape`` (k…, c_in,
    c_out): on the CPU ``matmul`` up to ``MATMUL_MAX_CHANNELS`` output channels, ``conv`` above; ``conv``
    on accelerators. A model whose convolutions are all matmuls also runs its blocks of steps as one scan
    on the CPU (``itlin.train.default_block_mode``), where lax.conv would be slow.

    Measured on a shared 2-core AMD EPYC CPU, jax 0.10.2, 2026-12-03 (bench/README.md has the tables), ms
    per Adam step: XLA:CPU's convolution is slow inside a loop body and under vmap over parameters (seeds
    as lanes). MNIST-1D's CNN (three stride-2 conv1d of 25 channels, batch 100): 5.1 as lax.conv against
    2.3 as matmul for 3 vmapped lanes, 6-25 against 1.1-2.3 inside a scan. The digits CNNs (16 channels,
    8x8): 0.57 dispatched as lax.conv against 0.24 scanned as matmul, 1.47 against 0.72 for 3 lanes.
    64-channel CIFAR layers (32x32, 16x16), dispatched: lax.conv 2.3-4.2x faster. On accelerators,
    unmeasured so far, lax.conv (cuDNN).
    """
    return "matmul" if backend == "cpu" and kernel_shape[-1] <= MATMUL_MAX_CHANNELS else "conv"


def auto_convolution(lhs, rhs, window_strides, padding, **kwargs):
    """The convolution in the form ``auto_conv_form`` picks for the default backend and these shapes."""
    form = auto_conv_form(jax.default_backend(), rhs.shape)
    return CONVOLUTIONS[form](lhs, rhs, window_strides, padding, **kwargs)


CONVOLUTIONS = {"auto": auto_convolution, "conv": lax.conv_general_dilated, "matmul": matmul_convolution}

PARAMETERISATIONS = ("standard", "ntk")
"""How a dense or conv layer scales its kernel W: ``standard`` (Flax's: x·W + b, W lecun-normal) or ``ntk`` (Jacot et
al. 2018; Lee et al. 2019): x·W'/sqrt(fan_in) + b with W' = W·sqrt(fan_in) at unit scale. The same function at
initialisation (for a seed), but gradients, and so the NTK and a step, in the theory's units, the same at every width."""


def _over_sqrt_fan_in(product: Callable, lhs, rhs, *args, **kwargs) -> jax.Array:
    """``product`` (a dot_general or a convolution) of ``lhs`` and the kernel ``rhs`` over sqrt(fan_in): the size
    of the kernel's axes but the last (output) one, k…·c_in for a convolution."""
    return product(lhs, rhs, *args, **kwargs) / math.sqrt(math.prod(rhs.shape[:-1]))


def _unit_scale_init(key, shape, dtype=jnp.float32) -> jax.Array:
    """lecun_normal's kernel (nnx's default) times sqrt(fan_in): the same normals, at unit scale."""
    return nnx.initializers.variance_scaling(math.prod(shape[:-1]), "fan_in", "truncated_normal")(key, shape, dtype)


def _parameterised(parameterisation: str, key: str, product: Callable) -> dict:
    """nnx.Linear's or nnx.Conv's arguments for ``parameterisation``: its product (argument ``key``) and, for
    ``ntk``, the product over sqrt(fan_in) and kernels at unit scale (the bias stays zeros)."""
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(f"model.parameterisation: must be one of {PARAMETERISATIONS}, got {parameterisation!r}")
    if parameterisation == "standard":
        return {key: product}
    return {key: functools.partial(_over_sqrt_fan_in, product), "kernel_init": _unit_scale_init}


def dense(in_features: int, out_features: int, *, parameterisation: str = "standard", **kwargs) -> nnx.Linear:
    """An nnx.Linear in ``parameterisation`` (of ``PARAMETERISATIONS``)."""
    return nnx.Linear(in_features, out_features, **_parameterised(parameterisation, "dot_general", lax.dot_general),
                      **kwargs)


def conv(in_features: int, out_features: int, *, form: str = "auto", parameterisation: str = "standard",
         **kwargs) -> nnx.Conv:
    """An nnx.Conv (its parameters, initialisation and output) computed in ``form`` (of ``CONV_FORMS``), in
    ``parameterisation`` (of ``PARAMETERISATIONS``)."""
    if form not in CONV_FORMS:
        raise ValueError(f"model.conv_form: must be one of {CONV_FORMS}, got {form!r}")
    return nnx.Conv(in_features, out_features,
                    **_parameterised(parameterisation, "conv_general_dilated", CONVOLUTIONS[form]), **kwargs)


class MLP(nnx.Module):
    """Fully connected network on the flattened input: ``depth`` hidden layers of ``width``, ReLU
    (or ``activation="linear"``: a deep linear network); ``depth`` 0 is logistic regression.
    ``parameterisation``: ``standard`` or ``ntk`` (``PARAMETERISATIONS``)."""

    def __init__(self, input_shape, num_classes: int, *, depth: int = 2, width: int = 128,
                 activation: str = "relu", compute_dtype: str = "float32", parameterisation: str = "standard",
                 rngs: nnx.Rngs):
        dtype = _compute_dtype(compute_dtype)
        self.activation = _activation(activation)
        if not _is_int(depth, 0):
            raise ValueError(f"model.depth: must be an integer >= 0, got {depth!r}")
        sizes = [math.prod(input_shape)] + [width] * depth
        settings = dict(parameterisation=parameterisation, dtype=dtype, rngs=rngs)
        self.hidden = nnx.List([dense(a, b, **settings) for a, b in zip(sizes[:-1], sizes[1:])])
        self.head = dense(sizes[-1], num_classes, **settings)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = self.activation(layer(x))
        return _full_precision(self.head(x))


POOLS = ("average", "none")
"""After each conv block of cnn: 2-wide average pooling while the feature map is at least 4 wide, or none."""
HEADS = ("mean", "flatten")
"""cnn's readout input: the mean over the feature map's positions (global average pooling), or all of it."""
PADDINGS = ("SAME", "VALID")


def _per_layer(key: str, value, depth: int, valid: Callable[[Any], bool], expected: str) -> list:
    """``value`` for each of ``depth`` layers: one value for all, or a list of ``depth`` values."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * depth
    if len(values) != depth or not all(valid(v) for v in values):
        raise ValueError(f"model.{key}: must be {expected}, or a list of {depth} (depth) of them, got {value!r}")
    return values


def _is_int(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _conv_size(size: int, kernel: int, stride: int, padding) -> int:
    """The length of one spatial axis after a convolution (Flax's ``SAME``/``VALID``, or zeros on each side)."""
    if padding == "SAME":
        return -(-size // stride)
    low_high = 0 if padding == "VALID" else padding
    return (size + 2 * low_high - kernel) // stride + 1


class CNN(nnx.Module):
    """``depth`` conv + ReLU blocks of ``width`` channels over the input's spatial axes: one for signals
    (L, C), two for images (H, W, C); then a dense head. Per layer (one value, or a list of ``depth``):
    ``kernel_size`` (3), ``stride`` (1), ``padding`` (``SAME``, ``VALID`` or zeros on each side). ``pool``
    (``POOLS``): 2-wide average pooling after each block while the feature map is at least 4 wide (the
    default) or none; ``head`` (``HEADS``): global average pooling (the default) or the flattened feature map.
    With ``activation="linear"`` every layer is linear: a deep linear network. ``conv_form``: how the
    convolutions are computed (``CONV_FORMS``). ``parameterisation``: ``standard`` or ``ntk``
    (``PARAMETERISATIONS``)."""

    def __init__(self, input_shape, num_classes: int, *, depth: int = 2, width: int = 32, kernel_size=3, stride=1,
                 padding="SAME", pool: str = "average", head: str = "mean", activation: str = "relu",
                 compute_dtype: str = "float32", conv_form: str = "auto", parameterisation: str = "standard",
                 rngs: nnx.Rngs):
        dtype = _compute_dtype(compute_dtype)
        self.activation = _activation(activation)
        if pool not in POOLS:
            raise ValueError(f"model.pool: must be one of {POOLS}, got {pool!r}")
        if head not in HEADS:
            raise ValueError(f"model.head: must be one of {HEADS}, got {head!r}")
        if not _is_int(depth, 1):
            raise ValueError(f"model.depth: must be an integer >= 1, got {depth!r}")
        kernels = _per_layer("kernel_size", kernel_size, depth, lambda k: _is_int(k, 1), "an integer >= 1")
        strides = _per_layer("stride", stride, depth, lambda s: _is_int(s, 1), "an integer >= 1")
        paddings = _per_layer("padding", padding, depth, lambda p: p in PADDINGS or _is_int(p, 0),
                              f"one of {PADDINGS} or an integer >= 0")
        self.rank, self.pool, self.flatten = len(input_shape) - 1, pool == "average", head == "flatten"
        channels = [input_shape[-1]] + [width] * depth
        self.convs = nnx.List(
            [conv(a, b, form=conv_form, parameterisation=parameterisation, kernel_size=(k,) * self.rank,
                  strides=(s,) * self.rank, padding=p, dtype=dtype, rngs=rngs)
             for a, b, k, s, p in zip(channels[:-1], channels[1:], kernels, strides, paddings)]
        )
        spatial = list(input_shape[:-1])
        for layer, (k, s, p) in enumerate(zip(kernels, strides, paddings)):
            spatial = [_conv_size(size, k, s, p) for size in spatial]
            if min(spatial) < 1:
                raise ValueError(f"model.kernel_size: layer {layer} (kernel {k}, stride {s}, padding {p!r}) leaves no "
                                 f"position of the {tuple(input_shape[:-1])} input")
            if self.pool and spatial[0] >= 4:
                spatial = [size // 2 for size in spatial]
        features = channels[-1] * (math.prod(spatial) if self.flatten else 1)
        self.head = dense(features, num_classes, parameterisation=parameterisation, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        window = (2,) * self.rank
        for layer in self.convs:
            x = self.activation(layer(x))
            if self.pool and x.shape[1] >= 4:
                x = nnx.avg_pool(x, window_shape=window, strides=window)
        features = x.reshape(x.shape[0], -1) if self.flatten else x.mean(axis=tuple(range(1, 1 + self.rank)))
        return _full_precision(self.head(features))


def _group_norm(channels: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
    """GroupNorm normalises each example on its own, so its output and NTK row ignore the batch.

    32 groups as usual, but at least two channels a group: a one-channel group on a 1x1 feature
    map (narrow models on small images) would normalise every value to zero.
    """
    return nnx.GroupNorm(channels, num_groups=max(1, min(32, channels // 2)), use_fast_variance=False, rngs=rngs)


class BasicBlock(nnx.Module):
    """ResNet basic block (two 3x3 convolutions) with GroupNorm and a projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, dtype: jnp.dtype | None, conv_form: str,
                 rngs: nnx.Rngs):
        settings = dict(form=conv_form, kernel_size=(3, 3), use_bias=False, dtype=dtype, rngs=rngs)
        self.conv1 = conv(in_channels, out_channels, strides=(stride, stride), **settings)
        self.norm1 = _group_norm(out_channels, rngs)
        self.conv2 = conv(out_channels, out_channels, **settings)
        self.norm2 = _group_norm(out_channels, rngs)
        projection = None
        if stride != 1 or in_channels != out_channels:
            projection = nnx.Sequential(
                conv(in_channels, out_channels, form=conv_form, kernel_size=(1, 1), strides=(stride, stride),
                     use_bias=False, dtype=dtype, rngs=rngs),
                _group_norm(out_channels, rngs),
            )
        self.shortcut = nnx.data(projection)

    def __call__(self, x):
        y = jax.nn.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return jax.nn.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nnx.Module):
    """ResNet-18 with the CIFAR stem (3x3 conv, no max-pool) and GroupNorm instead of BatchNorm;
    ``conv_form``: how the convolutions are computed (``CONV_FORMS``)."""

    def __init__(self, input_shape, num_classes: int, *, width: int = 64, compute_dtype: str = "float32",
                 conv_form: str = "auto", rngs: nnx.Rngs):
        dtype = _compute_dtype(compute_dtype)
        self.stem = conv(input_shape[-1], width, form=conv_form, kernel_size=(3, 3), use_bias=False, dtype=dtype,
                         rngs=rngs)
        self.stem_norm = _group_norm(width, rngs)
        blocks, channels = [], width
        for stage, out_channels in enumerate([width, 2 * width, 4 * width, 8 * width]):
            for index in range(2):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride, dtype=dtype, conv_form=conv_form, rngs=rngs))
                channels = out_channels
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(channels, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.stem_norm(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return _full_precision(self.head(x.mean(axis=(1, 2))))


MODELS: dict[str, type[nnx.Module]] = {"mlp": MLP, "cnn": CNN, "resnet18": ResNet18}


@dataclass(frozen=True)
class Model:
    """A model reduced to a pure function and its initial parameters, for inputs of ``input_shape`` (one
    example's)."""

    name: str
    apply: Callable[[Params, jax.Array], jax.Array] = field(repr=False)
    params: Params = field(repr=False)
    kwargs: dict = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()

    @property
    def num_params(self) -> int:
        return sum(leaf.size for leaf in jax.tree.leaves(self.params))


def create(name: str, *, input_shape, num_classes: int, seed: int, **kwargs) -> Model:
    """Build model ``name`` from the registry and split it once into ``(apply, params)``."""
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; choose one of {sorted(MODELS)}")
    module = MODELS[name](tuple(input_shape), num_classes, rngs=nnx.Rngs(seed), **kwargs)
    graphdef, state = nnx.split(module)

    def apply(params: Params, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params)(x)

    return Model(name=name, apply=apply, params=nnx.to_pure_dict(state), kwargs=dict(kwargs),
                 input_shape=tuple(input_shape))


def from_spec(spec: dict, *, input_shape, num_classes: int, seed: int, **overrides) -> Model:
    """Build the model a config's ``model`` mapping describes: its ``name`` and the model's keyword
    arguments (``label``, the config's name for it, is not one); ``overrides`` replace arguments."""
    kwargs = {key: value for key, value in spec.items() if key not in ("name", "label")} | overrides
    return create(spec["name"], input_shape=input_shape, num_classes=num_classes, seed=seed, **kwargs)
