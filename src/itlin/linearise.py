"""The linearised network and the schedule of feature updates (re-linearisations).

    f_lin(x; θ) = f(x; θ_lin) + J(x; θ_lin) · (θ − θ_lin)

is computed with one forward-mode product (``jax.jvp``); the Jacobian is never materialised.
Its gradient with respect to θ is Jᵀ·∇ℓ, which JAX obtains by transposing the tangent map.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from itlin.models import Params

Apply = Callable[[Params, jax.Array], jax.Array]


def linearise(apply: Apply) -> Callable[[Params, Params, jax.Array], jax.Array]:
    """Return ``f_lin(params, params_lin, x)``: the first-order Taylor model of ``apply`` at ``params_lin``."""

    def f_lin(params: Params, params_lin: Params, x: jax.Array) -> jax.Array:
        delta = jax.tree.map(jnp.subtract, params, params_lin)
        value, tangent = jax.jvp(lambda p: apply(p, x), (params_lin,), (delta,))
        return value + tangent

    return f_lin


def relinearise_now(step: jax.Array, period: jax.Array, switch_step: jax.Array) -> jax.Array:
    """Whether θ_lin ← θ at the start of ``step``: every ``period`` steps, never after ``switch_step``.

    Both arguments are traced integers so that one compilation serves every schedule:
    a period run has ``switch_step`` ≥ T, a switch run has ``period`` = 1.
    """
    return (step % period == 0) & (step <= switch_step)


def relinearises_throughout(K: float, switch_step: int | None, start: int, length: int) -> bool:
    """Whether a block of steps ``start`` … ``start + length − 1`` is a K = 1 block (of a switch
    run: one that ends by its switch step), so that ``relinearise_now`` holds at every step: the
    host's static test, from the run config, for choosing a block's program. (A block of a
    period K > 1 is never one, even where it happens to re-linearise at each of its steps.)"""
    return K == 1 and (switch_step is None or start + length - 1 <= switch_step)


def schedule_arrays(K: float, switch_step: int | None, steps: int) -> tuple[jax.Array, jax.Array]:
    """Encode a schedule (K an integer ≥ 1 or ``inf``; optional switch step) as traced int32 values."""
    period = steps if math.isinf(K) else min(int(K), steps)
    switch = steps if switch_step is None else switch_step
    return jnp.asarray(max(period, 1), jnp.int32), jnp.asarray(switch, jnp.int32)


def expected_feature_updates(K: float, switch_step: int | None, steps: int) -> int:
    """Re-linearisations after initialisation in a run of ``steps`` steps: ⌈T/K⌉ − 1 for a period run."""
    if switch_step is not None:
        return min(switch_step, steps - 1)
    return 0 if math.isinf(K) else math.ceil(steps / K) - 1
