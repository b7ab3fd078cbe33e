"""Models: shapes, the registry, and per-example independence (GroupNorm in resnet18)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from itlin import models

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
