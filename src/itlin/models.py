"""Flax NNX models, each split once into a pure ``apply(params, x)`` and a parameter pytree.

Training and NTK code see only ``Model.apply`` and ``Model.params``, so every method in the
library is a pure function of a parameter pytree (a nested dict of arrays).

Every model takes ``compute_dtype``: ``float32`` (the default) or ``bfloat16``, the dtype of its
matrix multiplications and convolutions. Parameters stay float32 either way; normalisation
statistics and the returned logits are float32, so only the matmuls run at lower precision.

Convolutional models take ``conv_form``: how each convolution is computed (``conv``), chosen per
backend and shape by default, with the parameters and outputs of ``nnx.Conv`` whichever form runs.
"""

from __future__ import annotations

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


def auto_conv_form(backend: str, kernel_shape) -> str:
    """The faster form on ``backend`` of a convolution with a kernel of shape ``kernel_shape`` (k…, c_in,
    c_out): ``matmul`` for 1D convolutions on the CPU, ``conv`` otherwise.

    Measured on a shared 2-core AMD EPYC CPU, jax 0.10.2, 2026-12-03 (bench/README.md has the tables):
    XLA:CPU's convolution is slow inside a loop body and, in 1D, under vmap over parameters (seeds as
    lanes). MNIST-1D's CNN (three stride-2 conv1d of 25 channels, batch 100), an Adam step: 5.1 ms as
    lax.conv against 2.3 ms as matmul for 3 vmapped lanes, 6-25 ms against 1.1-2.3 ms inside a scan;
    one lane dispatched step by step, neither consistently faster (0.9-1.7 against 1.1-2.0 ms). 2D
    convolutions stay lax.conv: 2.3-4.2x faster on 64-channel CIFAR layers (32x32, 16x16), tied on
    the digits CNNs (8x8) when dispatched (1 or 3 lanes), and the default pipeline's results stay as
    they were (inside a scan the matmul form is 4-10x faster for the digits CNNs too: ``conv_form:
    matmul`` takes it). On accelerators, unmeasured so far, lax.conv (cuDNN).
    """
    return "matmul" if backend == "cpu" and len(kernel_shape) == 3 else "conv"


def auto_convolution(lhs, rhs, window_strides, padding, **kwargs):
    """The convolution in the form ``auto_conv_form`` picks for the default backend and these shapes."""
    form = auto_conv_form(jax.default_backend(), rhs.shape)
    return CONVOLUTIONS[form](lhs, rhs, window_strides, padding, **kwargs)


CONVOLUTIONS = {"auto": auto_convolution, "conv": lax.conv_general_dilated, "matmul": matmul_convolution}


def conv(in_features: int, out_features: int, *, form: str = "auto", **kwargs) -> nnx.Conv:
    """An nnx.Conv (its parameters, initialisation and output) computed in ``form`` (of ``CONV_FORMS``)."""
    if form not in CONV_FORMS:
        raise ValueError(f"model.conv_form: must be one of {CONV_FORMS}, got {form!r}")
    return nnx.Conv(in_features, out_features, conv_general_dilated=CONVOLUTIONS[form], **kwargs)


class MLP(nnx.Module):
    """Fully connected network on the flattened image: ``depth`` hidden layers of ``width``, ReLU
    (or ``activation="linear"``: a deep linear network)."""

    def __init__(self, input_shape, num_classes: int, *, depth: int = 2, width: int = 128,
                 activation: str = "relu", compute_dtype: str = "float32", rngs: nnx.Rngs):
        dtype = _compute_dtype(compute_dtype)
        self.activation = _activation(activation)
        sizes = [math.prod(input_shape)] + [width] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.head = nnx.Linear(sizes[-1], num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = self.activation(layer(x))
        return _full_precision(self.head(x))


class CNN(nnx.Module):
    """``depth`` 3x3 conv + ReLU blocks of ``width`` channels; 2x2 average pooling after each block
    while the feature map is at least 4 pixels wide; global average pooling; a dense head. With
    ``activation="linear"`` every layer is linear: a deep linear network. ``conv_form``: how the
    convolutions are computed (``CONV_FORMS``)."""

    def __init__(self, input_shape, num_classes: int, *, depth: int = 2, width: int = 32,
                 activation: str = "relu", compute_dtype: str = "float32", conv_form: str = "auto", rngs: nnx.Rngs):
        dtype = _compute_dtype(compute_dtype)
        self.activation = _activation(activation)
        channels = [input_shape[-1]] + [width] * depth
        self.convs = nnx.List(
            [conv(a, b, form=conv_form, kernel_size=(3, 3), dtype=dtype, rngs=rngs)
             for a, b in zip(channels[:-1], channels[1:])]
        )
        self.head = nnx.Linear(channels[-1], num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        for conv in self.convs:
            x = self.activation(conv(x))
            if x.shape[1] >= 4:
                x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        return _full_precision(self.head(x.mean(axis=(1, 2))))


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
    """A model reduced to a pure function and its initial parameters."""

    name: str
    apply: Callable[[Params, jax.Array], jax.Array] = field(repr=False)
    params: Params = field(repr=False)
    kwargs: dict = field(default_factory=dict)

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

    return Model(name=name, apply=apply, params=nnx.to_pure_dict(state), kwargs=dict(kwargs))


def from_spec(spec: dict, *, input_shape, num_classes: int, seed: int, **overrides) -> Model:
    """Build the model a config's ``model`` mapping describes: its ``name`` and the model's keyword
    arguments (``label``, the config's name for it, is not one); ``overrides`` replace arguments."""
    kwargs = {key: value for key, value in spec.items() if key not in ("name", "label")} | overrides
    return create(spec["name"], input_shape=input_shape, num_classes=num_classes, seed=seed, **kwargs)
