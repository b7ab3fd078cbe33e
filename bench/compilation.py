"""Compilation and the hot path, per model, each measured in fresh processes as a pipeline job is.

A first process, with an empty persistent compilation cache set as the pipeline sets it
(``JAX_COMPILATION_CACHE_DIR``), builds the two block programs of a model (the linearised block
every schedule runs; the block that re-linearises at every step, which K = 1 runs use) and times
their compilation. It then runs one block under every schedule of the config (each period K, a
switch run, the optimiser reset, another seed), with the program ``Trainer.block_for`` picks, and
counts the XLA compilations they trigger (the hot path's promise: none, the two programs serve
every K), under ``jax.transfer_guard("disallow")`` (no host transfer inside a block), checking
that each block donated the parameter and optimiser buffers it was given (so the state is
updated in place, not copied).
A second process, another run (K = ∞, seed 1) sharing the cache like the next job of a pipeline,
must load the block from the cache instead of compiling it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp

from bench.common import REPOSITORY, CompileLog, ModelSpec, paper_config, run_config, synthetic_data
from itlin import train
from itlin.linearise import relinearises_throughout

TABLE = [("model", "model", ""), ("programs", "block programs", "d"),
         ("first_block_s", "first blocks s (empty cache)", ".1f"), ("first_compile_s", "of which XLA compile s", ".1f"),
         ("second_block_s", "first blocks s (next job)", ".1f"), ("second_compile_s", "of which cache load s", ".1f"),
         ("second_cache_hits", "cache hits (next job)", "d"), ("schedules", "schedules run", "d"),
         ("sweep_compilations", "compilations across them", "d"), ("host_transfers", "host transfers", ""),
         ("state_donated", "state donated", "")]


def schedules(trainer: train.Trainer, config: dict) -> dict[str, tuple[Callable, train.Schedule]]:
    """One schedule per period K of ``config``, a switch run, an optimiser reset and another seed,
    each with the block program the pipeline runs its first block with (the sweep counts
    compilations; which steps the blocks happen to run does not matter)."""

    def run_of(K: float, switch_step: int | None = None, **changes) -> tuple[Callable, train.Schedule]:
        every_step = relinearises_throughout(K, switch_step, 0, trainer.config.scan_steps)
        block = trainer.relinearising_block if every_step else trainer.linearised_block
        return block, trainer.schedule(K, switch_step)._replace(**changes)

    found = {f"K={k}": run_of(float(k)) for k in config["K"]}
    found["switch at step 1"] = run_of(1, switch_step=1)
    found["optimiser reset"] = run_of(10, reset_optimizer=jnp.asarray(True))
    found["seed 1"] = run_of(10, seed=jnp.asarray(1, jnp.int32))
    return found


def probe(spec: ModelSpec, *, batch_size: int, block: int, K: float, seed: int, config: dict) -> dict:
    """In this process: compile and run one block of each program of a run of ``spec``, then one
    block under every schedule of ``schedules``; what it compiled, whether it transferred or kept
    donated buffers."""
    trainer = train.Trainer(run_config(spec, batch_size=batch_size, scan_steps=block, config=config, K=K, seed=seed),
                            spec.create(seed))
    data = synthetic_data(spec.input_shape, 4 * batch_size)
    state, schedule = jax.block_until_ready((trainer.init_state(), trainer.schedule()))
    with CompileLog() as first:
        started = time.perf_counter()
        for block in (trainer.relinearising_block, trainer.linearised_block):
            state = jax.block_until_ready(block(state, data, schedule))
        first_block_s = time.perf_counter() - started
    swept, donated = schedules(trainer, config), True
    with CompileLog() as sweep, jax.transfer_guard("disallow"):
        for block, schedule in swept.values():
            given = state
            state = block(given, data, schedule)
            large = (given.params, given.params_lin, given.opt_state)
            donated &= all(leaf.is_deleted() for leaf in jax.tree.leaves(large))
        jax.block_until_ready(state)
    return dict(compile_s=first.seconds, compilations=[name for name, _ in first.compilations],
                cache_hits=first.cache_hits, first_block_s=first_block_s, schedules=list(swept),
                sweep_compilations=len(sweep.compilations), state_donated=donated, host_transfers="none")


def measure(spec: ModelSpec, *, batch_size: int, block: int, config_path: Path) -> dict:
    """Two fresh processes sharing one empty compilation cache: a K = 1 run, then a K = ∞ run of seed 1."""
    with tempfile.TemporaryDirectory(prefix="itlin_jax_cache_") as cache:
        # the cache as the pipeline's rules set it; no preallocation, as this process may hold the GPU too
        environment = os.environ | {"JAX_COMPILATION_CACHE_DIR": cache, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        first, second = (_probe_in_new_process(spec, batch_size, block, K, seed, config_path, environment)
                         for K, seed in ((1, 0), (math.inf, 1)))
        cache_entries = sum(1 for _ in Path(cache).iterdir())
    return dict(model=spec.label, architecture=spec.name, kwargs=spec.kwargs, input_shape=list(spec.input_shape),
                batch=batch_size, block=block, programs=len(first["compilations"]), first_compile_s=first["compile_s"],
                first_compilations=first["compilations"], first_block_s=first["first_block_s"],
                second_compile_s=second["compile_s"], second_cache_hits=second["cache_hits"],
                second_block_s=second["first_block_s"], cache_entries=cache_entries,
                schedules=len(first["schedules"]), schedule_names=first["schedules"],
                sweep_compilations=first["sweep_compilations"] + second["sweep_compilations"],
                host_transfers="none", state_donated=first["state_donated"] and second["state_donated"])


def _probe_in_new_process(spec: ModelSpec, batch_size: int, block: int, K: float, seed: int, config_path: Path,
                          environment: dict) -> dict:
    command = [sys.executable, "-m", "bench.compilation", "--spec", json.dumps(spec.__dict__),
               "--batch", str(batch_size), "--block", str(block), "--K", str(K), "--seed", str(seed),
               "--config", str(config_path)]
    done = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"compilation probe of {spec.label} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """The probe as a command (what ``measure`` runs in each fresh process); prints one JSON line."""
    parser = argparse.ArgumentParser(description=probe.__doc__)
    parser.add_argument("--spec", required=True, help="ModelSpec fields as JSON")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--block", type=int, required=True)
    parser.add_argument("--K", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    fields = json.loads(args.spec)
    spec = ModelSpec(**{**fields, "input_shape": tuple(fields["input_shape"])})
    result = probe(spec, batch_size=args.batch, block=args.block, K=args.K, seed=args.seed,
                   config=paper_config(args.config))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
