"""Memory of every GPU job of a pipeline config (``config/paper.yaml``), planned before anything runs.

Device memory: each program a job runs is lowered with abstract shapes (``jax.ShapeDtypeStruct``s,
so no dataset, batch or Jacobian of the planned size is allocated) at the config's sizes and
compiled for this machine's backend; XLA's ``memory_analysis`` of the compiled program gives its
arguments, outputs (less those aliased to donated arguments) and temporaries. A job's planned peak
is, over its programs, the largest of a program's plan plus what the job holds on the device
meanwhile outside that program's arguments (the training set while it evaluates, the kernel blocks
computed so far, ...). On a GPU this is the GPU's own plan. On a CPU it is XLA:CPU's plan of the
same programs: a stand-in until ``python -m bench memory`` runs on a GPU (buffer assignment and
fusion differ between backends, and cuDNN's convolution workspaces are not in it; ``MARGIN``
leaves room for them).

Host memory (a job's ``mem_mb``): the arrays a job holds in host memory (the prepared dataset, the
evaluation set, kernel regression's kernels), counted from their shapes, plus ``RUNTIME_HOST_BYTES``
for the process itself, times ``HOST_HEADROOM``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from bench.common import NUM_CLASSES, ModelSpec, paper_models, run_config
from bench.cost import COMPANION_JOBS as COMPANION
from bench.cost import CIFAR_TEST_SIZE, CIFAR_TRAIN_SIZE, companion_regime, companion_specs, ntk_plan
from bench.packing import H100_MEMORY_BYTES, MARGIN  # a job's planned device peak stays within MARGIN of an H100
from itlin import gauss_newton, kernel_regression, ntk, train, workflow

PREALLOCATED = 0.75
"""Share of a GPU's memory JAX reserves for XLA by default (``XLA_PYTHON_CLIENT_MEM_FRACTION``)."""
RUNTIME_HOST_BYTES = 6e9
"""Host memory of a JAX process on a GPU node beyond its arrays (Python, jaxlib, the CUDA context and
libraries, XLA compiling): assumed, typically 2 to 4 GB; ``python -m bench gpu`` reports the
maximum RSS it measured."""
HOST_HEADROOM = 1.25
"""``mem_mb`` is at least the planned host bytes times this (and a retry asks for more)."""

TABLE = [("stage", "job", ""), ("model", "model", ""), ("program", "program", ""),
         ("program_gb", "program GB", ".2f"), ("held_gb", "held beside it GB", ".2f"),
         ("peak_gb", "planned peak GB", ".2f"), ("share", "of 80 GB", ".1%")]
JOBS_TABLE = [("stage", "job", ""), ("model", "model", ""), ("peak_gb", "device peak GB", ".2f"),
              ("fits", f"<= {MARGIN:.0%} of 80 GB", ""), ("host_gb", "host arrays GB", ".2f"),
              ("mem_mb_needed", "mem_mb needed", ",d"), ("mem_mb", "mem_mb in config", ",d")]


def program_bytes(lowered: jax.stages.Lowered) -> int:
    """Bytes XLA plans for one program, compiled (``compiled_bytes``)."""
    return compiled_bytes(lowered.compile())


def compiled_bytes(compiled: jax.stages.Compiled) -> int:
    """Bytes XLA plans for one compiled program: arguments + outputs − outputs aliased to donated
    arguments + temporaries."""
    memory = compiled.memory_analysis()
    return int(memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
               + memory.temp_size_in_bytes)


def nbytes(tree) -> int:
    """Bytes of the arrays (or abstract arrays) of a pytree."""
    return int(sum(leaf.size * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree)))


def abstract(tree, dtype=None):
    """The pytree's arrays as ``jax.ShapeDtypeStruct``s (in ``dtype``, if given)."""
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, dtype or leaf.dtype), tree)


def images(n: int, spec: ModelSpec, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((n, *spec.input_shape), dtype)


def labels(n: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((n,), jnp.int32)


def dataset_bytes(spec: ModelSpec) -> int:
    """The prepared dataset as every job loads it into host memory (float32 images, int32 labels)."""
    return nbytes([images(CIFAR_TRAIN_SIZE, spec), labels(CIFAR_TRAIN_SIZE), images(CIFAR_TEST_SIZE, spec),
                   labels(CIFAR_TEST_SIZE)])


def _row(stage: str, spec: ModelSpec, program: str, planned: int, held: int) -> dict:
    peak = planned + held
    return dict(stage=stage, model=spec.label, program=program, program_gb=planned / 1e9, held_gb=held / 1e9,
                peak_gb=peak / 1e9, share=peak / H100_MEMORY_BYTES)


def training(spec: ModelSpec, config: dict) -> tuple[list[dict], int]:
    """A ``train`` job, its seeds as lanes: both block programs scanned over ``scan_steps`` steps (as
    accelerators run them) beside the evaluation set, and the evaluation beside the training set; host arrays."""
    options = config["training"]
    batch, scan_steps, lanes = options["batch_size"], options["scan_steps"], len(config["seeds"])
    trainer = train.Trainer(run_config(spec, batch_size=batch, scan_steps=scan_steps, config=config),
                            spec.create(), block_mode="scan", seeds=list(range(lanes)))
    stacked = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct((lanes, *leaf.shape), leaf.dtype), trainer.model.params)
    state, schedule = jax.eval_shape(trainer.init_state, stacked), jax.eval_shape(trainer.schedule)
    trained = options.get("train_size") or CIFAR_TRAIN_SIZE  # the job trains on its subset alone
    data = train.TrainData(images(trained, spec), labels(trained))
    evaluated = options["eval_train_size"] + CIFAR_TEST_SIZE
    eval_set = (images(evaluated, spec), labels(evaluated))
    rows = [_row("train", spec, f"{name} block: {lanes} lanes of {scan_steps} steps at batch {batch}, scanned",
                 program_bytes(block.lower(state, data, schedule)), nbytes(eval_set))
            for name, block in (("linearised", trainer.linearised_block),
                                ("re-linearising", trainer.relinearising_block))]
    rows.append(_row("train", spec, f"evaluation of f_lin and f, {lanes} lanes, on {evaluated:,} examples, chunks of "
                                    f"{min(evaluated, train.EVAL_CHUNK)}",
                     program_bytes(trainer.evaluate.lower(state.params, state.params_lin, *eval_set)),
                     nbytes(data) + nbytes(state) - nbytes((state.params, state.params_lin))))
    return rows, dataset_bytes(spec) + nbytes(eval_set)


def _kernel(stage: str, spec: ModelSpec, model, n: int, *, kind: str, held: int, strategy: str = "auto",
            chunk_size: int | None = None, dtype=jnp.float32) -> dict:
    """The row of one NTK (``ntk.empirical_ntk``) as planned for an H100: one block of its strategy at
    its chunk size (``ntk.compiled_block_bytes``) beside ``held``, and the kernel's blocks, which stay
    on the device until the kernel is assembled; in ``dtype`` (the model's parameters and inputs)."""
    plan = ntk_plan(model, spec, n, kind=kind, strategy=strategy, chunk_size=chunk_size)
    block = ntk.compiled_block_bytes(model.apply, abstract(model.params, dtype), images(plan.chunk_size, spec, dtype),
                                     plan.strategy, kind=kind)
    entries = n * n * (NUM_CLASSES**2 if kind == "full" else NUM_CLASSES if kind == "per_class" else 1)
    return _row(stage, spec, f"NTK ({kind}) on {n:,} examples: {plan.strategy}, chunks of {plan.chunk_size}",
                block, held + jnp.dtype(dtype).itemsize * entries)


def ntk_stage(spec: ModelSpec, config: dict) -> tuple[list[dict], int]:
    """A ``measure_ntk`` job: the per-class kernel on the probe set at the configured strategy and
    chunk size, in float32 whatever the model's compute dtype (as ``measure_ntk.measure_runs``)."""
    options = config["ntk"]
    spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "compute_dtype": "float32"})
    model = spec.create()
    probes = options["probe_size"]
    held = nbytes(model.params) + nbytes(images(probes, spec))  # θ_lin beside θ, the probe set
    row = _kernel("measure_ntk", spec, model, probes, kind="per_class", held=held, strategy=options["strategy"],
                  chunk_size=options["chunk_size"])
    return [row], dataset_bytes(spec)


def gauss_newton_stage(spec: ModelSpec, config: dict) -> tuple[list[dict], int]:
    """A C5 (``gauss_newton``) job: the iterative-linearisation block (plain gradient descent, scanned) and
    one damped proximal round (Newton steps of CG solves up to their caps) at the sweep's batch beside its
    training set; the evaluation of f_lin and f on it and the test set; the NTK on the probe set."""
    options = config["gauss_newton"]
    model = spec.create()
    n_train = options["train_size"] or CIFAR_TRAIN_SIZE
    batch = options["batch_size"] or n_train
    train_set = nbytes([images(n_train, spec), labels(n_train)])
    scan_steps = math.gcd(options["steps"], gauss_newton.SCAN_STEPS)
    settings = dataclasses.replace(
        run_config(spec, batch_size=batch, scan_steps=scan_steps, config=config, K=max(options["K"])), loss="mse",
        optimizer={"name": "sgd", "learning_rate": options["learning_rate"], "momentum": 0.0, "schedule": "constant"})
    trainer = train.Trainer(settings, model, block_mode="scan")
    state, schedule = jax.eval_shape(trainer.init_state), jax.eval_shape(trainer.schedule)
    round_ = gauss_newton.make_round(model.apply, "cross_entropy", cg_tolerance=options["cg_tolerance"],
                                     cg_max_iterations=options["cg_max_iterations"],
                                     newton_tolerance=options["newton_tolerance"],
                                     newton_max_steps=options["newton_max_steps"])
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    evaluated = n_train + CIFAR_TEST_SIZE
    rows = [
        _row("gauss_newton", spec, f"iterative linearisation: {scan_steps} gradient steps at batch {batch:,}, scanned",
             program_bytes(trainer.linearised_block.lower(
                 state, train.TrainData(images(n_train, spec), labels(n_train)), schedule)), 0),
        _row("gauss_newton", spec, f"proximal round at batch {batch:,}: up to {options['newton_max_steps']} Newton "
                                   f"steps of CG up to {options['cg_max_iterations']} iterations",
             program_bytes(round_.lower(abstract(model.params), images(batch, spec), labels(batch), scalar)),
             0 if batch == n_train else train_set),
        _row("gauss_newton", spec, f"evaluation of f_lin and f on {evaluated:,} examples",
             program_bytes(trainer.evaluate.lower(state.params, state.params_lin, images(evaluated, spec),
                                                  labels(evaluated))), train_set),
        _kernel("gauss_newton", spec, model, config["ntk"]["probe_size"], kind="trace",
                held=train_set + 2 * nbytes(model.params)),
    ]
    return rows, dataset_bytes(spec) + nbytes([images(evaluated, spec), labels(evaluated)])


def kernel_regression_stage(spec: ModelSpec, config: dict) -> tuple[list[dict], int]:
    """A C6 (``kernel_regression_run``) job, in float64: the full NTK on the training subset; K = ∞
    gradient descent on it (scanned blocks); f_lin, and the closed form's Θ(x, X)α
    (``kernel_regression.kernel_product``), on chunks of ``train.EVAL_CHUNK`` test examples. On the
    host: the test outputs of each compared step (two float64 arrays of 10,000 × C per step)."""
    options = config["kernel_regression"]
    n = options["train_size"]
    with jax.enable_x64(True):
        model = spec.create()
        float64_model = dataclasses.replace(model, params=jax.tree.map(lambda p: p.astype(jnp.float64), model.params))
        params = abstract(float64_model.params)
        subset = jax.ShapeDtypeStruct((n, *spec.input_shape), jnp.float64)
        chunk = jax.ShapeDtypeStruct((train.EVAL_CHUNK, *spec.input_shape), jnp.float64)
        rows = [_kernel("kernel_regression", spec, model, n, kind="full", held=nbytes(subset), dtype=jnp.float64,
                        strategy="jacobian", chunk_size=kernel_regression.KERNEL_CHUNK)]
        scan_steps = math.gcd(options["steps"], 100, *options["compare_steps"])
        settings = dataclasses.replace(
            run_config(spec, batch_size=n, scan_steps=scan_steps, config=config, K=math.inf), loss="mse",
            optimizer={"name": "sgd", "learning_rate": 1.0, "momentum": 0.0, "schedule": "constant"})
        trainer = train.Trainer(settings, float64_model, block_mode="scan")
        state, schedule = jax.eval_shape(trainer.init_state), jax.eval_shape(trainer.schedule)
        rows.append(_row("kernel_regression", spec, f"K = ∞ gradient descent: {scan_steps} steps at batch {n}, scanned "
                                                    "(float64)",
                         program_bytes(trainer.linearised_block.lower(state, train.TrainData(
                             subset, jax.ShapeDtypeStruct((n,), jnp.int32)), schedule)), 0))
        coefficients = jax.ShapeDtypeStruct((n, NUM_CLASSES), jnp.float64)
        product = jax.jit(lambda p, a, b, alpha: kernel_regression.kernel_product(model.apply, p, a, b, alpha))
        rows.append(_row("kernel_regression", spec, f"f_lin on {train.EVAL_CHUNK} test examples (float64)",
                         program_bytes(jax.jit(trainer.f_lin).lower(state.params, state.params_lin, chunk)), 0))
        rows.append(_row("kernel_regression", spec, f"closed form Θ(x, X)α on {train.EVAL_CHUNK} test examples (float64)",
                         program_bytes(product.lower(params, subset, chunk, coefficients)), 0))
    compared = len(set(options["compare_steps"]) | {options["steps"]}) + 1
    return rows, dataset_bytes(spec) + 2 * 8 * compared * CIFAR_TEST_SIZE * NUM_CLASSES


STAGES = {"train": training, "measure_ntk": ntk_stage, "gauss_newton": gauss_newton_stage,
          "kernel_regression": kernel_regression_stage}


def stage_models(config: dict) -> dict[str, list[str]]:
    """The model labels each GPU stage runs for under ``config`` (the companion's: ``companion_jobs``)."""
    return {"train": list(config["models"]), "measure_ntk": list(config["models"]),
            "gauss_newton": config["gauss_newton"]["models"], "kernel_regression": config["kernel_regression"]["models"]}


def companion_jobs(config: dict) -> list[tuple[str, ModelSpec, dict]]:
    """(stage, spec, config of its settings) of the companion's GPU jobs: each model's and twin's training job
    at its full batch (``companion_regime``) and NTK job."""
    regime = companion_regime(config)
    return [(stage + COMPANION, spec, regime) for spec in companion_specs(config)
            for stage in ("train", "measure_ntk")]


def plan(config: dict) -> dict:
    """Every program's row, and per job (stage × model) its planned device peak, its host arrays,
    the ``mem_mb`` they need and the ``mem_mb`` the config gives the model."""
    specs = {spec.label: spec for spec in paper_models(config)}
    jobs_to_plan = [(stage, specs[label], config) for stage, labels in stage_models(config).items() for label in labels]
    rows, jobs = [], []
    for stage, spec, settings in jobs_to_plan + companion_jobs(config):
        found, host = STAGES[stage.removesuffix(COMPANION)](spec, settings)
        found = [dict(row, stage=stage) for row in found]
        rows += found
        peak = max(row["peak_gb"] for row in found)
        needed = math.ceil(HOST_HEADROOM * (host + RUNTIME_HOST_BYTES) / 1e9) * 1000
        lanes = len(settings["seeds"]) if stage.startswith("train") else 1
        jobs.append(dict(stage=stage, model=spec.label, lanes=lanes, peak_gb=peak, fits=peak * 1e9 <= MARGIN * H100_MEMORY_BYTES,
                         host_gb=host / 1e9, mem_mb_needed=needed,
                         mem_mb=workflow.model_entry(config, spec.label)["mem_mb"]))
    largest = max(job["peak_gb"] for job in jobs)
    return dict(rows=rows, jobs=jobs, margin=MARGIN, h100_gb=H100_MEMORY_BYTES / 1e9, largest_peak_gb=largest,
                preallocated_gb=PREALLOCATED * H100_MEMORY_BYTES / 1e9, runtime_host_gb=RUNTIME_HOST_BYTES / 1e9,
                host_headroom=HOST_HEADROOM, backend=jax.default_backend())
