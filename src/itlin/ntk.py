"""The empirical neural tangent kernel, and the measures docs/science.md defines on kernels.

    Θ(x, x') = J(x) J(x')ᵀ,   J = ∂f/∂θ  (one row per output class)

``empirical_ntk`` computes Θ in blocks of examples, so that no more than two chunks of Jacobian
rows are alive at any time, by the cheaper of two strategies under a cost model
(``estimate_costs``). The measures (``kernel_distance`` and friends: the kernel distance, the
centred kernel-target alignment, the class-specialisation matrix) are plain NumPy in float64;
``itlin.measure_ntk`` applies both to the snapshots of a training run.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from itlin import models
from itlin.models import Params

Apply = Callable[[Params, jax.Array], jax.Array]

KINDS = ("trace", "full", "per_class")
STRATEGIES = ("jacobian", "ntk_vector")
JACOBIAN_MEMORY_FRACTION = 0.25
"""Share of the accelerator's memory the automatic chunk size gives to the live Jacobian chunks."""
HOST_JACOBIAN_BYTES = 1 << 30
"""Memory for the live Jacobian chunks when the device reports no limit (the CPU backend)."""


ParameterFilter = Callable[[str], bool]
"""A predicate on a parameter's path ('convs/0/kernel', ``models.parameter_paths``): the parameters
whose Jacobian columns a kernel sums over (e.g. ``models.below_readout``: the backbone)."""


def empirical_ntk(apply: Apply, params: Params, x1: jax.Array, x2: jax.Array | None = None, *,
                  kind: str = "trace", chunk_size: int | None = None, strategy: str = "auto",
                  precision: str | None = "highest", parameter_filter: ParameterFilter | None = None) -> np.ndarray:
    """The empirical NTK J(x1) J(x2)ᵀ of ``apply`` at ``params``, computed in chunks of examples.

    ``parameter_filter`` restricts J to the columns of the parameters whose path it accepts (all by
    default): the kernel of those parameters alone, Θ = Σ_{p selected} ∂f/∂p ∂f/∂pᵀ.

    ``kind``: ``trace`` gives Σ_c J_c(x1) J_c(x2)ᵀ, shape (n1, n2); ``full`` every pair of outputs,
    Θ[i, j, c, c'] = J_c(x1_i)·J_c'(x2_j), shape (n1, n2, C, C); ``per_class`` the kernel of each
    output, Θ[c, i, j] = J_c(x1_i)·J_c(x2_j), shape (C, n1, n2). With ``x2`` omitted the kernel of
    ``x1`` with itself is computed once per pair of chunks and mirrored, so it is exactly symmetric.

    Both strategies first take per-example reverse-mode Jacobians of a chunk of b examples (the
    vjps of the b·C one-hot outputs: b·C·P numbers for P parameters, ≈ 2F·C flops per example,
    F = forward flops of one example). They differ in how a pair of chunks is contracted:

    - ``jacobian`` (Jacobian contraction): the Jacobian chunks of x1 and x2 are multiplied,
      2·b²·C·P flops per block (C² instead of C for ``full``). Memory: two Jacobian chunks,
      2·b·C·P floats. The x2 chunks are recomputed for every x1 chunk: ≈ 2F·C·n1·n2/b flops.
    - ``ntk_vector`` (NTK-vector products, jvp of vjp): each of the b·C Jacobian rows of an x2
      chunk (a vjp) is pushed through f(x1) forward (a jvp), ≈ 2F flops per row and x1 example,
      2F·C·b² per block, every output pair included (``full`` costs no more than ``trace``).
      Memory: one Jacobian chunk, b·C·P floats, plus the tangents of b·C pushes through b
      examples. Nothing is recomputed.

    ``strategy="auto"`` picks the one with fewer estimated flops (``estimate_costs``, F from XLA's
    cost analysis of the forward pass): NTK-vector products win when F·(1 − 1/b) < P (``trace``,
    ``per_class``) or < C·P (``full``). So the contraction for convolutional networks, whose
    forward pass costs far more than 2P flops (weights are reused at every pixel), and
    NTK-vector products for full kernels of dense networks with several outputs. ``chunk_size=None`` sizes chunks to the memory budget
    (``auto_chunk_size``). Results agree, to float rounding, for every chunk size and strategy.
    ``precision`` is the matmul/convolution precision while tracing (``"highest"``: true float32
    on GPUs, whose default TF32 would add ~1e-3 relative error to every kernel entry).
    """
    return empirical_ntks(apply, params, x1, x2, groups={"kernel": parameter_filter}, kind=kind,
                          chunk_size=chunk_size, strategy=strategy, precision=precision)["kernel"]


def empirical_ntks(apply: Apply, params: Params, x1: jax.Array, x2: jax.Array | None = None, *,
                   groups: dict[str, ParameterFilter | None], kind: str = "trace", chunk_size: int | None = None,
                   strategy: str = "auto", precision: str | None = "highest") -> dict[str, np.ndarray]:
    """``empirical_ntk`` of several parameter groups (name -> filter, None for all) in one pass: the
    Jacobian chunks are computed once and contracted per group (``jacobian``), or their rows pushed
    once per group with the other parameters' tangents zeroed (``ntk_vector``)."""
    paths = models.parameter_paths(params)
    masks = {}
    for name, keep in groups.items():
        masks[name] = tuple(keep is None or bool(keep(path)) for path in paths)
        if not any(masks[name]):
            raise ValueError(f"parameter_filter of {name!r} selects none of the parameters {paths}")
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {KINDS}, got {kind!r}")
    if strategy not in STRATEGIES + ("auto",):
        raise ValueError(f"strategy: must be one of {STRATEGIES + ('auto',)}, got {strategy!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
    symmetric = x2 is None
    x1 = jnp.asarray(x1)
    x2 = x1 if symmetric else jnp.asarray(x2)
    compiled = _compiled(apply)
    n1, n2 = x1.shape[0], x2.shape[0]
    num_outputs = jax.eval_shape(apply, params, x1[:1]).shape[-1]
    if strategy == "auto" or chunk_size is None:
        profile = compiled.profile(params, x1[:1])
        if strategy == "auto":
            strategy = choose_strategy(profile, n1=n1, n2=n2, kind=kind, symmetric=symmetric, chunk_size=chunk_size)
        chunk_size = chunk_size or auto_chunk_size(profile, strategy, n=max(n1, n2))
    chunks1 = _chunks(x1, chunk_size)
    chunks2 = chunks1 if symmetric else _chunks(x2, chunk_size)
    block_pairs = _jacobian_contraction if strategy == "jacobian" else _ntk_vector_products
    with jax.default_matmul_precision(precision):
        blocks = block_pairs(compiled, params, chunks1, chunks2, symmetric, kind, masks)
    return {name: _assemble(group_blocks, kind, chunk_size, (n1, n2), num_outputs, symmetric)
            for name, group_blocks in blocks.items()}


class _Compiled:
    """The jitted pieces of the NTK of one ``apply``, compiled once per chunk shape and reused."""

    def __init__(self, apply: Apply):
        def one_example(params, x):
            return apply(params, x[None])[0]

        def ntk_vector_block(params, rows, x1):
            """Full Θ block (b1, b2, C, C) from pushing every Jacobian row of the x2 chunk through f(x1).

            Every kind is reduced from it outside (``_reduce_full``), so the model is compiled once.
            """
            C, b2 = jax.tree.leaves(rows)[0].shape[:2]
            tangents = jax.tree.map(lambda row: row.reshape(C * b2, *row.shape[2:]), rows)
            push = jax.vmap(lambda tangent: jax.jvp(lambda p: apply(p, x1), (params,), (tangent,))[1])
            pushed = push(tangents)  # (C'·b2, b1, C): J(x1) J(x2_j, c')ᵀ
            return pushed.reshape(C, b2, x1.shape[0], C).transpose(2, 1, 3, 0)

        def jacobian(params, x):
            """Per-example Jacobians of a chunk, class-major: leaves (C, b, *shape), the vjps of the one-hot
            cotangents. Each class's rows are contiguous, so contractions are batched matmuls without
            transposes, and with the vmap over classes outermost no transpose builds the layout either.
            Against vmap(jacrev) over examples: the same numbers and planned memory; Jacobian and per-class
            contraction of 100 probes 159 → 81 ms (MNIST-1D's MLP), 103 → 48 ms (its deep CNN);
            resnet18's Jacobian of 10 CIFAR-10 probes 12 → 8 s."""
            outputs = jax.eval_shape(one_example, params, x[0])

            def rows_of(cotangent):
                return jax.vmap(lambda example: jax.vjp(lambda p: one_example(p, example), params)[1](cotangent)[0])(x)

            return jax.vmap(rows_of)(jnp.eye(outputs.shape[-1], dtype=outputs.dtype))

        self.apply = apply
        self.jacobian = jax.jit(jacobian)
        self.ntk_vector_block = jax.jit(ntk_vector_block)
        self._profiles: dict = {}

    def profile(self, params: Params, example: jax.Array) -> "ModelProfile":
        """The model's sizes and per-example costs for ``estimate_costs``, from XLA's analyses of
        the compiled forward pass of one example (computed once per input shape).

        Without a cost analysis the forward flops fall back to 2P (a dense network); without a
        memory analysis the activation bytes to 0.
        """
        key = (example.shape, example.dtype)
        if key not in self._profiles:
            compiled = jax.jit(self.apply).lower(params, example).compile()
            num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            memory = compiled.memory_analysis()
            self._profiles[key] = ModelProfile(
                num_params=int(num_params),
                num_outputs=int(jax.eval_shape(self.apply, params, example).shape[-1]),
                forward_flops=float((cost or {}).get("flops", 2 * num_params)),
                activation_bytes=float(getattr(memory, "temp_size_in_bytes", 0) or 0),
            )
        return self._profiles[key]


@functools.lru_cache(maxsize=16)
def _compiled(apply: Apply) -> _Compiled:
    """The compiled NTK pieces of ``apply``, shared by every call (one model, many snapshots)."""
    return _Compiled(apply)


@functools.partial(jax.jit, static_argnames="kind")
def _contract(jacobian1, jacobian2, kind: str) -> jax.Array:
    """Θ block of two Jacobian chunks (leaves (C, b, *shape)), summed over parameter leaves. The trace is the
    per-class block summed over classes: contracting the class axis inside the product would transpose
    both chunks."""
    equation = "cip,djp->ijcd" if kind == "full" else "cip,cjp->cij"

    def leaf(a, b):
        return jnp.einsum(equation, a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1))

    block = sum(jax.tree.leaves(jax.tree.map(leaf, jacobian1, jacobian2)))
    return block.sum(0) if kind == "trace" else block


@functools.partial(jax.jit, static_argnames="kind")
def _reduce_full(full: jax.Array, kind: str) -> jax.Array:
    """A full block (b1, b2, C, C) in the layout of ``kind``."""
    if kind == "trace":
        return jnp.einsum("ijcc->ij", full)
    if kind == "per_class":
        return jnp.einsum("ijcc->cij", full)
    return full


def _chunks(x: jax.Array, size: int) -> list[jax.Array]:
    """``x`` cut into chunks of exactly ``size`` examples (the last padded by repeating the last
    example), so that every chunk reuses one compilation; padded rows are dropped on assembly."""
    padding = -x.shape[0] % size
    padded = jnp.concatenate([x, jnp.repeat(x[-1:], padding, axis=0)]) if padding else x
    return [padded[start:start + size] for start in range(0, padded.shape[0], size)]


def _selected(tree, mask: tuple[bool, ...]) -> list:
    """The leaves of ``tree`` that ``mask`` keeps, in leaf order."""
    return [leaf for leaf, keep in zip(jax.tree.leaves(tree), mask) if keep]


def _jacobian_contraction(compiled: _Compiled, params, chunks1, chunks2, symmetric: bool, kind: str,
                          masks: dict[str, tuple[bool, ...]]) -> dict[str, dict]:
    """Blocks (i, j) of each group by Jacobian contraction: hold chunk i's Jacobian, stream those of
    the x2 chunks, and contract each pair over each group's leaves.

    Each block is waited for and its streamed Jacobian released before the next is computed, so at
    most two Jacobian chunks are alive (asynchronous dispatch would otherwise queue up more).
    """
    cells = _cells(masks)
    blocks = {name: {} for name in masks}
    for i, x1 in enumerate(chunks1):
        jacobian1 = compiled.jacobian(params, x1)
        for j in range(i if symmetric else 0, len(chunks2)):
            jacobian2 = jacobian1 if symmetric and i == j else compiled.jacobian(params, chunks2[j])
            parts = [_contract(_selected(jacobian1, cell), _selected(jacobian2, cell), kind=kind) for cell, _ in cells]
            for name in masks:
                blocks[name][i, j] = sum(part for part, (_, members) in zip(parts, cells) if name in members)
                blocks[name][i, j].block_until_ready()
            del jacobian2
        del jacobian1
    return blocks


def _cells(masks: dict[str, tuple[bool, ...]]) -> list[tuple[tuple[bool, ...], set[str]]]:
    """The leaves partitioned by the groups they belong to: (mask of the cell's leaves, its groups).
    Each cell is contracted once and a group's kernel is the sum of its cells', so overlapping groups
    (every parameter, and the backbone) cost one contraction of each leaf, not one per group."""
    membership: dict[frozenset, list[int]] = {}
    leaves = len(next(iter(masks.values())))
    for leaf in range(leaves):
        groups = frozenset(name for name, mask in masks.items() if mask[leaf])
        if groups:
            membership.setdefault(groups, []).append(leaf)
    return [(tuple(leaf in chosen for leaf in range(leaves)), set(groups)) for groups, chosen in membership.items()]


def _ntk_vector_products(compiled: _Compiled, params, chunks1, chunks2, symmetric: bool, kind: str,
                         masks: dict[str, tuple[bool, ...]]) -> dict[str, dict]:
    """Blocks (i, j) of each group by NTK-vector products: the vjp rows of x2 chunk j, with the leaves
    outside the group zeroed, pushed through each x1 chunk.

    Blocks are waited for and the rows released before the next chunk's, so one chunk of rows is alive.
    """
    blocks = {name: {} for name in masks}
    treedef = jax.tree.structure(params)
    for j, x2 in enumerate(chunks2):
        rows = compiled.jacobian(params, x2)
        for name, mask in masks.items():
            leaves = [leaf if keep else jnp.zeros_like(leaf) for leaf, keep in zip(jax.tree.leaves(rows), mask)]
            group_rows = jax.tree.unflatten(treedef, leaves)
            for i in range(j + 1 if symmetric else len(chunks1)):
                full = compiled.ntk_vector_block(params, group_rows, chunks1[i])
                blocks[name][i, j] = _reduce_full(full, kind=kind).block_until_ready()
        del rows
    return blocks


def _assemble(blocks: dict, kind: str, chunk: int, shape: tuple[int, int], num_outputs: int,
              symmetric: bool) -> np.ndarray:
    """The kernel of ``kind`` from its blocks; mirrored blocks fill the lower half of a symmetric one."""
    rows = max(i for i, _ in blocks) + 1
    columns = max(j for _, j in blocks) + 1
    padded = (rows * chunk, columns * chunk)
    C = num_outputs
    blocks = {position: np.asarray(block) for position, block in blocks.items()}
    dtype = next(iter(blocks.values())).dtype
    out = np.zeros({"trace": padded, "per_class": (C, *padded), "full": (*padded, C, C)}[kind], dtype)
    for (i, j), block in blocks.items():
        if symmetric and i == j:
            block = (block + _mirror(block, kind)) / 2
        out[_where(kind, i, j, chunk)] = block
        if symmetric and i != j:
            out[_where(kind, j, i, chunk)] = _mirror(block, kind)
    n1, n2 = shape
    return out[_where(kind, slice(0, n1), slice(0, n2), None)]


def _mirror(block: np.ndarray, kind: str) -> np.ndarray:
    """Block (j, i) of a symmetric kernel from block (i, j): Θ[j, i, c', c] = Θ[i, j, c, c']."""
    return {"trace": lambda b: b.T, "per_class": lambda b: b.transpose(0, 2, 1),
            "full": lambda b: b.transpose(1, 0, 3, 2)}[kind](block)


def _where(kind: str, i, j, chunk: int | None) -> tuple:
    """Index of block (i, j) (or of slices i, j when ``chunk`` is None) in a kernel of ``kind``."""
    if chunk is not None:
        i, j = slice(i * chunk, (i + 1) * chunk), slice(j * chunk, (j + 1) * chunk)
    return (slice(None), i, j) if kind == "per_class" else (i, j)


class ModelProfile(NamedTuple):
    """What the cost model needs of a network: P, C, forward flops F and live activation bytes of
    one example (``profile_model``)."""

    num_params: int
    num_outputs: int
    forward_flops: float
    activation_bytes: float


def profile_model(apply: Apply, params: Params, example: jax.Array) -> ModelProfile:
    """The ``ModelProfile`` of ``apply`` on inputs shaped like ``example`` (a batch of one)."""
    return _compiled(apply).profile(params, jnp.asarray(example))


def compiled_block_bytes(apply: Apply, params: Params, chunk: jax.Array, strategy: str, kind: str = "trace") -> int:
    """Peak bytes of one block of ``strategy`` on chunks like ``chunk``, as XLA plans the compiled
    pieces (``memory_analysis``: arguments, outputs and temporaries of each, the parameters
    counted once): the live Jacobian chunk(s) plus the larger working set of the next step.
    Compiles the pieces, as ``empirical_ntk`` would, so measuring costs one compilation.
    ``params`` and ``chunk`` may be abstract (``jax.ShapeDtypeStruct``s): nothing of the
    chunk's or the Jacobian's size is allocated to plan them."""
    compiled = _compiled(apply)
    chunk = chunk if isinstance(chunk, jax.ShapeDtypeStruct) else jnp.asarray(chunk)

    def planned(function, *args, **static):
        memory = function.lower(*args, **static).compile().memory_analysis()
        return memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes

    jacobian = jax.eval_shape(compiled.jacobian, params, chunk)
    computing_rows = planned(compiled.jacobian, params, chunk)  # parameters, a chunk, its Jacobian, temporaries
    if strategy == "jacobian":  # the held Jacobian of x1 stays alive through both steps
        held = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(jacobian))
        params_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params))
        return int(max(held + computing_rows, params_bytes + planned(_contract, jacobian, jacobian, kind=kind)))
    return int(max(computing_rows, planned(compiled.ntk_vector_block, params, jacobian, chunk)))


class Cost(NamedTuple):
    """Estimated flops and memory (bytes of the largest live intermediates) of one NTK computation."""

    flops: float
    bytes: float


def estimate_costs(profile: ModelProfile, *, n1: int, n2: int, kind: str, symmetric: bool, chunk_size: int,
                   itemsize: int = 4) -> dict[str, Cost]:
    """Flops and memory of each strategy, by the formulas of ``empirical_ntk``'s docstring.

    A vjp or a jvp of one example costs ≈ 2F flops; a symmetric kernel computes only the blocks on
    and above the diagonal (half the pairs). Memory counts the Jacobian chunks and the activations
    of their vjps and, for NTK-vector products, of the b·C tangents pushed through b examples.
    """
    P, C, F, A, b = (profile.num_params, profile.num_outputs, profile.forward_flops, profile.activation_bytes,
                     chunk_size)
    halve = 2 if symmetric else 1
    pairs = n1 * n2 / halve
    outputs = C * C if kind == "full" else C
    return {
        "jacobian": Cost(2 * F * C * (n1 + n2 * math.ceil(n1 / b) / halve) + 2 * pairs * outputs * P,
                         2 * b * C * P * itemsize + b * C * A),
        "ntk_vector": Cost(2 * F * C * (n2 + pairs), b * C * P * itemsize + b * C * A + b * C * b * A),
    }


def choose_strategy(profile: ModelProfile, *, n1: int, n2: int, kind: str, symmetric: bool,
                    chunk_size: int | None) -> str:
    """The strategy with fewer estimated flops, each at its automatic chunk size unless one is given."""
    flops = {
        strategy: estimate_costs(profile, n1=n1, n2=n2, kind=kind, symmetric=symmetric,
                                 chunk_size=chunk_size or auto_chunk_size(profile, strategy, n=max(n1, n2)))[strategy].flops
        for strategy in STRATEGIES
    }
    return min(flops, key=flops.get)


def auto_chunk_size(profile: ModelProfile, strategy: str, *, n: int, budget_bytes: float | None = None,
                    itemsize: int = 4) -> int:
    """The largest chunk (at most n examples) whose memory in ``estimate_costs`` fits ``budget_bytes``.

    The default budget is ``JACOBIAN_MEMORY_FRACTION`` of the device's memory limit, or
    ``HOST_JACOBIAN_BYTES`` where the device reports none (CPU). Larger chunks mean fewer
    recomputed Jacobians (``jacobian``) and fewer, larger kernel launches.
    """
    budget = _memory_budget() if budget_bytes is None else budget_bytes
    C, A = profile.num_outputs, profile.activation_bytes
    row = C * (profile.num_params * itemsize + A)  # one example's Jacobian rows and their vjp activations
    if strategy == "jacobian":
        chunk = budget / (row + C * profile.num_params * itemsize)
    elif A == 0:
        chunk = budget / row
    else:  # b·row + b²·C·A <= budget
        chunk = (math.sqrt(row**2 + 4 * C * A * budget) - row) / (2 * C * A)
    return int(max(1, min(n, math.floor(chunk))))


def _memory_budget() -> float:
    """Bytes the automatic chunk size may fill (see ``auto_chunk_size``)."""
    stats = jax.devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return JACOBIAN_MEMORY_FRACTION * limit if limit else HOST_JACOBIAN_BYTES


def largest_eigenvalues(apply: Apply, lanes: Sequence[Params], x: jax.Array, *, tolerance: float = 1e-6) -> list[float]:
    """λ_max of Θ(X, X)/n = J Jᵀ/n on the n examples ``x`` for each parameter set of ``lanes`` (networks of one
    ``apply``, a training job's lanes): the largest eigenvalue of the Gauss-Newton matrix JᵀJ/n (the same nonzero
    spectrum), the curvature of the MSE ½‖f − y‖² averaged over ``x``, above which full-batch gradient descent of
    step 2/λ_max diverges. Lanczos (``scipy.sparse.linalg.eigsh``) on the products v ↦ J(Jᵀv)/n, a vjp and a jvp
    each, compiled once for every lane, so neither J nor Θ is formed: a few dozen passes over ``x`` a lane."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    outputs = jax.eval_shape(apply, lanes[0], x)
    shape, size = outputs.shape, math.prod(outputs.shape)

    @jax.jit
    def product(params, x, vector):
        _, pull = jax.vjp(lambda p: apply(p, x), params)
        (tangent,) = pull(vector.reshape(shape))
        return jax.jvp(lambda p: apply(p, x), (params,), (tangent,))[1].reshape(-1) / shape[0]

    def largest(params) -> float:
        operator = LinearOperator((size, size), dtype=np.float64, matvec=lambda v: np.asarray(
            product(params, x, jnp.asarray(v, outputs.dtype)), np.float64))
        (eigenvalue,) = eigsh(operator, k=1, which="LA", tol=tolerance, v0=np.ones(size), return_eigenvectors=False)
        return float(eigenvalue)

    with jax.default_matmul_precision("highest"):
        return [largest(params) for params in lanes]


# ---------------------------------------------------------------- kernel metrics (float64 NumPy)


def kernel_distance(kernel1: np.ndarray, kernel2: np.ndarray) -> float:
    """d(Θ1, Θ2) = 1 − ⟨Θ1, Θ2⟩_F / (‖Θ1‖_F ‖Θ2‖_F) (Fort et al. 2020): 0 for kernels equal up to
    a positive factor, whatever their scale; exactly 0 for identical kernels."""
    return 1.0 - _cosine(kernel1, kernel2)


def relative_change(kernel0: np.ndarray, kernel: np.ndarray) -> float:
    """‖Θ − Θ₀‖_F / ‖Θ₀‖_F (Lee et al. 2019): the change NTK theory predicts to vanish with width;
    scale-aware, unlike ``kernel_distance`` (a kernel grown 100-fold has relative change 99)."""
    kernel0, kernel = np.asarray(kernel0, np.float64), np.asarray(kernel, np.float64)
    return _ratio(np.linalg.norm(kernel - kernel0), np.linalg.norm(kernel0))


def norm_ratio(kernel0: np.ndarray, kernel: np.ndarray) -> float:
    """‖Θ‖_F / ‖Θ₀‖_F: how much the kernel grew (or shrank), beside ``relative_change``."""
    return _ratio(np.linalg.norm(np.asarray(kernel, np.float64)), np.linalg.norm(np.asarray(kernel0, np.float64)))


def centred_distance(kernel1: np.ndarray, kernel2: np.ndarray) -> float:
    """``kernel_distance`` of the centred kernels HΘH (H = I − 11ᵀ/n): blind to the constant mode that
    dominates ‖Θ‖_F for ReLU features (all positive), so it sees changes in how examples are separated."""
    return kernel_distance(centre(kernel1), centre(kernel2))


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN for a zero denominator (a degenerate, all-zero kernel)."""
    return float(numerator / denominator) if denominator > 0 else math.nan


def kernel_velocity(kernel_before: np.ndarray, kernel_after: np.ndarray, steps: int) -> float:
    """Kernel distance between two snapshots per training step between them."""
    if steps <= 0:
        raise ValueError(f"steps between snapshots must be positive, got {steps}")
    return kernel_distance(kernel_before, kernel_after) / steps


def centre(kernel: np.ndarray) -> np.ndarray:
    """H Θ H with H = I − 11ᵀ/n: the kernel of the features with their mean over examples removed."""
    kernel = np.asarray(kernel, np.float64)
    return kernel - kernel.mean(0, keepdims=True) - kernel.mean(1, keepdims=True) + kernel.mean()


def centred_alignment(kernel1: np.ndarray, kernel2: np.ndarray) -> float:
    """⟨HΘ1H, HΘ2H⟩_F / (‖HΘ1H‖_F ‖HΘ2H‖_F): cosine of two centred n×n kernels (Cortes et al. 2012)."""
    return _cosine(centre(kernel1), centre(kernel2))


def target_alignment(kernel: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Centred kernel-target alignment A(Θ, Y) = A(Θ, YYᵀ) with the one-hot label matrix Y (Cortes et al. 2012)."""
    targets = one_hot(labels, num_classes)
    return centred_alignment(kernel, targets @ targets.T)


def uncentred_target_alignment(kernel: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Uncentred kernel-target alignment ⟨Θ, YYᵀ⟩_F / (‖Θ‖_F ‖YYᵀ‖_F) (Cristianini et al. 2002)."""
    targets = one_hot(labels, num_classes)
    return _cosine(kernel, targets @ targets.T)


def target_energy(kernel: np.ndarray, labels: np.ndarray, num_classes: int, top: int) -> np.ndarray:
    """C(k) = Σ_{i≤k} ‖v_iᵀ ỹ‖² / ‖ỹ‖²_F for k = 1 … ``top``: the share of the centred one-hot targets ỹ
    (Y minus its mean over examples) in the span of the kernel's top-k eigenvectors v_i (eigenvalues in
    descending order; the companion's eigenfunction alignment, S4). NaN for a degenerate kernel: one with a
    non-finite entry, or none but a constant part (zero norm once centred, e.g. every ReLU dead)."""
    kernel = np.asarray(kernel, np.float64)
    if not np.isfinite(kernel).all() or not np.linalg.norm(centre(kernel)) > 0:
        return np.full(top, math.nan)
    targets = one_hot(labels, num_classes)
    centred = targets - targets.mean(0)
    _, vectors = np.linalg.eigh(kernel)  # ascending eigenvalues
    energy = np.sum((vectors[:, ::-1][:, :top].T @ centred) ** 2, axis=1)
    return np.cumsum(energy) / np.sum(centred**2)


def specialisation(per_class: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """C×C matrix S[c, c'] = A(Θ_c, y_c' y_c'ᵀ): alignment of output c's kernel with the kernel of
    class c''s one-hot target column. A class-specialised kernel has a dominant diagonal."""
    targets = one_hot(labels, per_class.shape[0])
    outputs = [centre(kernel) for kernel in per_class]
    columns = [centre(np.outer(column, column)) for column in targets.T]
    return np.array([[_cosine(output, column) for column in columns] for output in outputs])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """⟨a, b⟩_F / (‖a‖_F ‖b‖_F) in float64, at most 1; exactly 1 for identical arrays. NaN when either
    has zero norm: a degenerate kernel (e.g. a constant one after centring, every ReLU dead) has no
    direction, so its distances and alignments are undefined."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norms = float(a @ a) * float(b @ b)
    if norms == 0:
        return math.nan
    if np.array_equal(a, b):
        return 1.0
    return min(1.0, float(a @ b) / math.sqrt(norms))


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The n×C one-hot matrix of integer labels, float64."""
    return np.eye(num_classes)[np.asarray(labels)]
