"""The trainer of iterative linearisation: the train step, its blocks, and evaluation.

The hot path is a block of ``scan_steps`` steps of the linearised model, run as one jitted
``jax.lax.scan`` on accelerators and as the jitted step dispatched ``scan_steps`` times on the CPU
(``block_runner``; either on request); the schedule (K, switch step), the seed and the
optimiser-reset flag are traced values, so one compiled program serves every schedule of a model.
K = 1 blocks (also a switch run's blocks that end by its switch step), where every step
re-linearises, run a second program that takes f's own gradient, equal to f_lin's at θ = θ_lin but
at the cost of a standard step. A training job (``itlin.train_job``) runs every seed as a lane of
these programs (``jax.vmap``) and intervenes only between blocks.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from itlin import data, models
from itlin.record import RunConfig
from itlin.linearise import linearise, relinearise_now, relinearises_throughout, schedule_arrays

EVAL_CHUNK = 500  # examples per evaluation chunk: bounds evaluation memory on large test sets


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _squared_error(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """½‖f(x) − onehot(y)‖² per example (the loss under which K = ∞ is kernel regression)."""
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return 0.5 * jnp.sum((logits - targets) ** 2, axis=-1)


LOSSES = {"cross_entropy": _cross_entropy, "mse": _squared_error}


def make_optimizer(config: RunConfig) -> optax.GradientTransformation:
    """Adam or SGD (with optional momentum) under a constant or cosine learning-rate schedule, after
    clipping the gradient to ``gradient_clip_norm`` where that is set."""
    options = config.optimizer
    rate = options["learning_rate"]
    if options.get("schedule", "constant") == "cosine":
        rate = optax.cosine_decay_schedule(rate, config.steps)
    if options["name"] == "adam":
        optimizer = optax.adam(rate)
    else:
        optimizer = optax.sgd(rate, momentum=options.get("momentum") or None)
    if config.gradient_clip_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(config.gradient_clip_norm), optimizer)


class TrainState(NamedTuple):
    """Everything that evolves during training; a pytree of arrays, checkpointed as is."""

    step: jax.Array
    params: Any
    params_lin: Any
    opt_state: Any
    feature_updates: jax.Array
    diverged_at: jax.Array  # first step with a non-finite loss, -1 while finite


class Schedule(NamedTuple):
    """The traced run settings: changing them never recompiles."""

    period: jax.Array
    switch_step: jax.Array
    reset_optimizer: jax.Array
    proximal_damping: jax.Array
    seed: jax.Array


class TrainData(NamedTuple):
    """The training examples a run samples its batches from, on the device."""

    x: jax.Array
    y: jax.Array

    @classmethod
    def of(cls, x, y) -> "TrainData":
        """Images ``x`` and labels ``y`` as the trainer takes them: device arrays, the labels int32."""
        return cls(jnp.asarray(x), jnp.asarray(y, jnp.int32))


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Whole batches in an epoch of ``n`` examples (the last partial batch is dropped), at least one."""
    return max(n // batch_size, 1)


FEISTEL_ROUNDS = 6
"""Rounds of the Feistel network behind ``epoch_position``: with a keyed round function, four already make a
pseudorandom permutation (Luby and Rackoff 1988); two more cost nothing here."""


def _hash32(x: jax.Array) -> jax.Array:
    """A well-mixing bijection of uint32 (the "lowbias32" integer hash: every output bit depends on every input bit)."""
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def epoch_position(seed: jax.Array, epoch: jax.Array, positions: jax.Array, n: int) -> jax.Array:
    """The examples at ``positions`` of an epoch's order: a seeded permutation of ``range(n)`` per (seed, epoch).

    The order is a keyed Feistel network on the smallest even number of bits that covers ``n``, walked
    until it lands inside ``range(n)`` ("cycle walking", which keeps it a bijection of ``range(n)``). Only
    the positions asked for are computed: no permutation of the training set is drawn (a sort of n keys,
    which XLA:CPU runs at about 1 ms for n = 4000: more than the step of a small model)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), epoch)
    round_keys = jax.random.bits(key, (FEISTEL_ROUNDS,), jnp.uint32)
    half = (max((n - 1).bit_length(), 2) + 1) // 2
    mask = jnp.uint32((1 << half) - 1)

    def network(v):
        left, right = v >> half, v & mask
        for round_key in round_keys:
            left, right = right, left ^ (_hash32(right ^ round_key) & mask)
        return (left << half) | right

    def walk(v):
        return jnp.where(v < n, v, network(v))

    first = network(positions.astype(jnp.uint32))
    return jax.lax.while_loop(lambda v: jnp.any(v >= n), walk, first).astype(jnp.int32)


def sample_batch(train_data: TrainData, step: jax.Array, seed: jax.Array, batch_size: int, augment: bool):
    """The batch of ``step``: the next ``batch_size`` examples of the epoch's seeded order (``epoch_position``;
    the last partial batch dropped), optionally augmented.

    A pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.
    """
    n = train_data.x.shape[0]
    per_epoch = batches_per_epoch(n, batch_size)
    epoch, position = step // per_epoch, step % per_epoch
    index = epoch_position(seed, epoch, position * batch_size + jnp.arange(batch_size), n)
    x, y = train_data.x[index], train_data.y[index]
    if augment:
        key = jax.random.key(seed)
        x = data.augment(jax.random.fold_in(jax.random.fold_in(key, 2), step), x)
    return x, y


BLOCK_MODES = ("scan", "dispatch")


def default_block_mode(model: models.Model | None = None) -> str:
    """The block program of the default backend: ``scan`` on accelerators, and on the CPU unless ``model``
    computes an XLA convolution (``lax.conv``), which XLA:CPU runs far slower inside a loop body than the
    same step on its own (jax 0.10.2: 8.2 s against 1.0 s per step for the CNN at 32x32): ``dispatch``."""
    if jax.default_backend() != "cpu":
        return "scan"
    if model is None:
        return "dispatch"
    example = jnp.zeros((1, *model.input_shape), jnp.float32)
    return "dispatch" if "conv_general_dilated" in str(jax.make_jaxpr(model.apply)(model.params, example)) else "scan"


def block_runner(step: Callable, length: int, mode: str | None = None, *,
                 vectorise: Callable[[Callable], Callable] | None = None) -> Callable:
    """``run(carry, *args)``: ``length`` applications of ``step(carry, *args) -> carry``, without host sync.

    ``mode`` ``scan`` is one jitted ``jax.lax.scan`` (one program launch per block); ``dispatch`` dispatches
    the jitted step ``length`` times (asynchronously, still one compilation). Both end in the same state to
    float rounding. ``None`` takes ``default_block_mode()``. ``vectorise`` (e.g. a ``jax.vmap``)
    transforms the block (or the dispatched step) before it is compiled: lanes of one program.
    """
    mode = mode or default_block_mode()
    if mode not in BLOCK_MODES:
        raise ValueError(f"block mode: must be one of {BLOCK_MODES}, got {mode!r}")
    vectorise = vectorise or (lambda function: function)

    if mode == "dispatch":
        single = jax.jit(vectorise(step), donate_argnums=(0,))

        def run(carry, *args):
            for _ in range(length):
                carry = single(carry, *args)
            return carry

        return run

    def scanned(carry, *args):
        return jax.lax.scan(lambda c, _: (step(c, *args), None), carry, length=length)[0]

    return jax.jit(vectorise(scanned), donate_argnums=(0,))


class Trainer:
    """A run's model, optimiser and compiled programs, and what its callers (``run``, C5, C6) do with them:
    ``init_state``, ``train_steps`` (under the run's schedule or another period K), ``evaluate`` (per
    example, f_lin and f), ``linear_outputs`` (f_lin's outputs) and ``batch`` (the batch of a step).

    With ``seeds``, the trainer runs lanes: one per seed, all under the config's other settings, each lane
    with its own period K where ``periods`` gives them (the width sweep trains every K of a model as lanes:
    K is traced, so one program serves them all). The state, the schedule and ``evaluate``'s parameters and
    outputs then carry a leading lane axis and every program is vmapped over it; ``init_state`` takes the
    lanes' initial parameters stacked. Without, one run of ``config.seed`` (C5, C6 and the benchmarks).

    The programs, for benchmarks: the blocks of ``scan_steps`` steps, ``linearised_block`` (every
    schedule) and ``relinearising_block`` (blocks that re-linearise at every step), each run as
    ``block_mode`` says (``block_runner``; None: the backend's default), ``block_for`` choosing one,
    and the steps they repeat (``train_step``, ``relinearising_step``).
    """

    def __init__(self, config: RunConfig, model: models.Model, block_mode: str | None = None, *,
                 seeds: list[int] | None = None, periods: list[float] | None = None):
        if periods is not None and (seeds is None or len(periods) != len(seeds)):
            raise ValueError("periods: one period K per lane, and lanes need seeds")
        self.config = config
        self.model = model
        self.seeds = seeds
        self.periods = periods or [config.K]
        self.optimizer = make_optimizer(config)
        self.f_lin = linearise(model.apply)
        self.loss = LOSSES[config.loss]
        self.relinearising_step = functools.partial(self.train_step, relinearise_every_step=True)
        self.block_mode = block_mode or default_block_mode(model)
        evaluate, vectorise = self._evaluate, None
        if seeds is not None:  # lanes: the state and schedule are vmapped, the data shared
            evaluate = jax.vmap(evaluate, in_axes=(0, 0, None, None))
            vectorise = functools.partial(jax.vmap, in_axes=(0, None, 0))
        block = functools.partial(block_runner, length=config.scan_steps, mode=self.block_mode, vectorise=vectorise)
        self.linearised_block = block(self.train_step)
        self.relinearising_block = block(self.relinearising_step)
        self.evaluate = jax.jit(evaluate)
        self._linear_outputs = jax.jit(self.f_lin)
        self._batch = jax.jit(functools.partial(sample_batch, batch_size=config.batch_size, augment=config.augment))
        self._schedule = self._lane_schedule(self.periods, config.switch_step)

    def block_for(self, step: int) -> Callable:
        """The block program for the ``scan_steps`` steps from ``step``: ``relinearising_block``
        where every lane's schedule re-linearises at every one of them, else ``linearised_block``."""
        every_step = all(relinearises_throughout(K, self.config.switch_step, step, self.config.scan_steps)
                         for K in self.periods)
        return self.relinearising_block if every_step else self.linearised_block

    def train_steps(self, state: TrainState, train_data: TrainData, count: int, *, K: float | None = None,
                    start: int | None = None, progress: tqdm | None = None) -> TrainState:
        """``count`` steps from ``state`` (which is donated), a block of ``scan_steps`` steps at a time.

        ``K`` None: under the run's schedule, each block by the program ``block_for`` picks (as ``run``
        trains), ``start`` being the step ``state`` is at (None: read from it, waiting for it). A period
        ``K``: under the run's schedule with that period, every block by ``linearised_block`` with K traced,
        so that a sweep over K compiles one program. ``progress`` (a tqdm bar) advances block by block.
        """
        length = self.config.scan_steps
        if count % length:
            raise ValueError(f"count: {count} steps are not a whole number of blocks of {length} steps")
        schedule = self.schedule(K)
        if K is None and start is None:
            start = int(np.ravel(state.step)[0])
        for block in range(count // length):
            program = self.linearised_block if K is not None else self.block_for(start + block * length)
            state = program(state, train_data, schedule)
            if progress is not None:
                progress.update(length)
        return state

    def linear_outputs(self, state: TrainState, x: jax.Array) -> np.ndarray:
        """f_lin(x; θ) around θ_lin of ``state``, in chunks of ``EVAL_CHUNK`` examples (``in_chunks``)."""
        return in_chunks(lambda chunk: self._linear_outputs(state.params, state.params_lin, chunk), x)

    def batch(self, train_data: TrainData, step: int) -> tuple[jax.Array, jax.Array]:
        """The batch the run trains on at ``step`` (``sample_batch`` with its seed, batch size and augmentation)."""
        return self._batch(train_data, jnp.int32(step), self._schedule.seed)

    def init_state(self, params=None) -> TrainState:
        """The state at step 0 from ``params`` (lanes: every lane's, stacked; None: the model's)."""
        params = self.model.params if params is None else params
        fresh = functools.partial(TrainState, step=jnp.asarray(0, jnp.int32), feature_updates=jnp.asarray(0, jnp.int32),
                                  diverged_at=jnp.asarray(-1, jnp.int32))

        def state(params):  # fresh buffers: the state is donated to each step, the given params are kept
            return fresh(params=jax.tree.map(jnp.copy, params), params_lin=jax.tree.map(jnp.copy, params),
                         opt_state=self.optimizer.init(params))

        return state(params) if self.seeds is None else jax.vmap(state)(params)

    def schedule(self, K: float | None = None, switch_step: int | None = None) -> Schedule:
        """The run's traced schedule (lanes: each lane's period), or its settings with period ``K`` (and
        ``switch_step``) in every lane instead: the same shapes and dtypes, so the same compiled programs.
        Lanes: one row per seed."""
        return self._schedule if K is None else self._lane_schedule([K], switch_step)

    def _lane_schedule(self, periods: list[float], switch_step: int | None) -> Schedule:
        """The traced schedule with the given periods (one, or one per lane)."""
        arrays = [schedule_arrays(period, switch_step, self.config.steps) for period in periods]
        seeds = self.config.seed if self.seeds is None else self.seeds
        schedule = Schedule(jnp.stack([period for period, _ in arrays]), arrays[0][1],
                            jnp.asarray(self.config.reset_optimizer),
                            jnp.asarray(self.config.proximal_damping, jnp.float32), jnp.asarray(seeds, jnp.int32))
        if self.seeds is None:
            return schedule._replace(period=schedule.period[0])
        return jax.tree.map(lambda value: jnp.broadcast_to(value, (len(self.seeds),)), schedule)

    def train_step(self, state: TrainState, train_data: TrainData, schedule: Schedule,
                   *, relinearise_every_step: bool = False) -> TrainState:
        """One step of the algorithm in docs/science.md: maybe re-linearise, then an optimiser step on f_lin.

        With ``proximal_damping`` λ > 0 the objective of each round is the linearised loss plus
        (λ/2)‖θ − θ_lin‖²: run to convergence, a round is one damped Gauss-Newton step (C5).
        ``relinearise_every_step`` (static) re-linearises whatever the schedule says; θ = θ_lin
        then, where f_lin and its gradient equal f's, so the step differentiates f itself: a
        standard training step, without the jvp (about 3/5 of the linearised step's FLOPs). The
        caller (``block_for``) uses it only where the schedule re-linearises at every step.
        """
        t = state.step
        if relinearise_every_step:
            relinearise, network = jnp.asarray(True), lambda params, params_lin, x: self.model.apply(params, x)
        else:
            relinearise, network = relinearise_now(t, schedule.period, schedule.switch_step), self.f_lin
        params_lin = jax.tree.map(lambda p, q: jnp.where(relinearise, p, q), state.params, state.params_lin)
        reset = relinearise & schedule.reset_optimizer
        opt_state = jax.tree.map(lambda fresh, old: jnp.where(reset, fresh, old),
                                 self.optimizer.init(state.params), state.opt_state)
        x, y = sample_batch(train_data, t, schedule.seed, self.config.batch_size, self.config.augment)

        def batch_loss(params):
            proximal = sum(jnp.sum((p - q) ** 2) for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(params_lin)))
            return self.loss(network(params, params_lin, x), y).mean() + 0.5 * schedule.proximal_damping * proximal

        loss, grads = jax.value_and_grad(batch_loss)(state.params)
        updates, opt_state = self.optimizer.update(grads, opt_state, state.params)
        diverged_at = jnp.where((state.diverged_at < 0) & ~jnp.isfinite(loss), t, state.diverged_at)
        stepped = TrainState(
            step=t + 1,
            params=optax.apply_updates(state.params, updates),
            params_lin=params_lin,
            opt_state=opt_state,
            feature_updates=state.feature_updates + (relinearise & (t > 0)).astype(jnp.int32),
            diverged_at=diverged_at,
        )
        frozen = state._replace(step=t + 1, diverged_at=diverged_at)
        return jax.tree.map(lambda old, new: jnp.where(diverged_at >= 0, old, new), frozen, stepped)

    def _evaluate(self, params, params_lin, x: jax.Array, y: jax.Array) -> jax.Array:
        """Per-example (loss, correct, predicted class) of f_lin and f at the same θ: shape (2 evaluators,
        3, n), in chunks of at most ``EVAL_CHUNK`` examples (a smaller set is one chunk, never padded to it)."""
        n = x.shape[0]
        size = min(n, EVAL_CHUNK)
        padded = -(-n // size) * size
        x = jnp.pad(x, [(0, padded - n)] + [(0, 0)] * (x.ndim - 1)).reshape(-1, size, *x.shape[1:])
        y = jnp.pad(y, (0, padded - n)).reshape(-1, size)

        def chunk(batch):
            xb, yb = batch
            out = []
            for logits in (self.f_lin(params, params_lin, xb), self.model.apply(params, xb)):
                predicted = logits.argmax(-1)
                out.append(jnp.stack([self.loss(logits, yb), (predicted == yb).astype(jnp.float32),
                                      predicted.astype(jnp.float32)]))
            return jnp.stack(out)

        per_example = jax.lax.map(chunk, (x, y))  # (chunks, 2, 3, size)
        return jnp.moveaxis(per_example, 0, 2).reshape(2, 3, padded)[..., :n]


def in_chunks(function: Callable[[jax.Array], jax.Array], x: jax.Array) -> np.ndarray:
    """``function`` of chunks of ``EVAL_CHUNK`` examples of ``x``, concatenated on the host: bounds the memory
    of outputs on large test sets."""
    return np.concatenate([np.asarray(function(x[i:i + EVAL_CHUNK])) for i in range(0, len(x), EVAL_CHUNK)])


def gradient_descent_config(*, data: str, dataset: str, model: dict, K, seed: int, variant: str, steps: int,
                            batch_size: int, learning_rate: float, loss: str, eval_train_size: int,
                            scan_steps: int) -> RunConfig:
    """A run of plain gradient descent (SGD at a constant rate, no momentum or augmentation), evaluated and
    checkpointed at its end only, without snapshots: the iterative linearisation of C5 and C6."""
    return RunConfig.from_dict(dict(
        data=str(data), dataset=dataset, model=model, K=K, switch_step=None, seed=seed, variant=variant, steps=steps,
        batch_size=batch_size,
        optimizer={"name": "sgd", "learning_rate": float(learning_rate), "momentum": 0.0, "schedule": "constant"},
        loss=loss, augment=False, reset_optimizer=False, proximal_damping=0.0, eval_every=steps,
        eval_train_size=eval_train_size, scan_steps=scan_steps, num_snapshots=0, velocity_interval=scan_steps,
        checkpoint_every=steps))
