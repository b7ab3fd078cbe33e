"""MNIST-1D's published table as an external check of the pipeline: logistic regression, the MLP and the CNN,
trained by the project's trainer (K = 1: standard training) on the published split, reach the published test
accuracies (Greydanus & Kobak 2024, README of github.com/greydanus/mnist1d: 32 %, 68 %, 94 %) within 3 points.

The published recipe (notebooks/mnist1d-classification.ipynb with notebooks/train.py's ``get_model_args``):
Adam, learning rate 1e-2, no weight decay, batches of 100, 6000 steps, cross-entropy, accuracy on the 1000
published test examples at the end. Where this test departs (docs/verification.md): batches are drawn from a
fresh permutation each epoch (the published loop takes them in order), parameters start from Flax's default
initialisation and JAX seed 42 (PyTorch's, seed 42, there), the inputs are the published ones scaled by the
train-split statistics (mean -0.0003, std 0.998), and the MLP has no skip connection (``MLPBase`` adds its second
hidden layer's output to its input: h + relu(W₂h)); 6000 steps, not the loop's 6001.
"""

import jax.numpy as jnp
import pytest

from conftest import MNIST1D_PUBLISHED_SEED
from itlin import data, models, record, train

PUBLISHED = {  # model label: (the model, the published test accuracy in %)
    "logistic": ({"name": "mlp", "depth": 0, "width": 1}, 32),
    "mlp": ({"name": "mlp", "depth": 2, "width": 100}, 68),
    "cnn": ({"name": "cnn", "depth": 3, "width": 25, "kernel_size": [5, 3, 3], "stride": 2, "padding": 1,
             "pool": "none", "head": "flatten"}, 94),
}
STEPS, BATCH_SIZE, LEARNING_RATE = 6000, 100, 1e-2
TOLERANCE_POINTS = 3


@pytest.mark.parametrize("label", sorted(PUBLISHED))
def test_mnist1d_published_table(mnist1d_data, label):
    spec, published = PUBLISHED[label]
    config = record.RunConfig.from_dict(dict(
        data=str(mnist1d_data), dataset="mnist1d", model=spec, K=1, switch_step=None, seed=MNIST1D_PUBLISHED_SEED,
        variant="base", steps=STEPS, batch_size=BATCH_SIZE,
        optimizer={"name": "adam", "learning_rate": LEARNING_RATE, "momentum": 0.0, "schedule": "constant"},
        loss="cross_entropy", augment=False, reset_optimizer=False, proximal_damping=0.0, eval_every=STEPS,
        eval_train_size=1000, scan_steps=100, num_snapshots=1, velocity_interval=100, checkpoint_every=STEPS,
    ))
    dataset = data.load(config.data)
    model = models.from_spec(config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                             seed=config.seed)
    trainer = train.Trainer(config, model)
    state = trainer.train_steps(trainer.init_state(),
                                train.TrainData(jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)), STEPS)
    published_test = slice(0, dataset.meta["published_test_examples"])
    per_example = trainer.evaluate(state.params, state.params_lin, jnp.asarray(dataset.x_test[published_test]),
                                   jnp.asarray(dataset.y_test[published_test]))
    accuracy = 100 * float(per_example[record.EVALUATORS.index("network"), 1].mean())
    assert abs(accuracy - published) <= TOLERANCE_POINTS, f"{label}: {accuracy:.1f} % against the published {published} %"
