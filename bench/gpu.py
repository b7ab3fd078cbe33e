"""The first thing to run on a GPU: every program of ``config/paper.yaml`` at the paper's sizes, timed,
with its compile time and memory, and the GPU-hours of the paper projected from the measured times.

    python -m bench gpu            # on the GPU: about 10 to 15 minutes on one H100 (estimated)
    python -m bench gpu --lanes 1 4 16   # fewer lane counts, where a command may run 10 minutes at most
    python -m bench gpu --smoke    # the same script at tiny sizes, on any machine (a test runs it)

For each model of the config (32×32×3 inputs, the config's batch, synthetic data resident on the
device as a training job holds it), in one process:

- at 1, 4, 16 and 64 lanes (``Sizes.lanes``: seeds trained as lanes of one program, as a training job
  runs them through ``train.Trainer(..., seeds=...)``), the re-linearising block (K = 1: a standard step)
  and the linearised block (every other K), each ``scan_steps`` steps in one ``jax.lax.scan`` as
  accelerators run them: XLA compile seconds and planned bytes, then milliseconds per block over
  ``blocks`` timed blocks, lane-steps/s and the device's high-water mark; the first lane count the
  device cannot hold (planned beyond its ``bytes_limit``, or XLA's resource-exhausted error) is
  recorded as not fitting and ends the model's lanes;
- the per-class NTK on a probe set of the config's size, strategy and chunk size (``itlin.ntk``);
- one damped proximal round of the C5 sweep at the config's batch and smallest damping (Newton steps,
  each a CG solve, up to the config's caps);
- C6 in float64: the full NTK on the config's training subset and its eigendecomposition, and the
  closed form's outputs on ``--test-slice`` test examples (its cost grows linearly to the test set).

After each, the device's ``peak_bytes_in_use`` (a process-wide high-water mark, so a stage's value
includes every earlier one's), to set beside XLA's plan of the same programs (``python -m bench
memory``, run after it on the same GPU). Finally the paper's H100-hours (``bench.cost``, with these
step and NTK times instead of FLOP estimates) and the process's maximum resident host memory (the
runtime allowance of ``bench.memory.RUNTIME_HOST_BYTES``).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import math
import resource
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bench import cost
from bench.common import NUM_CLASSES, CompileLog, ModelSpec, paper_models, run_config, synthetic_data
from bench.memory import compiled_bytes
from bench.steps import CarriedBlock
from itlin import gauss_newton, kernel_regression, ntk, train


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one measurement takes; ``None`` takes the config's value."""

    blocks: int = 3
    """Timed blocks of each program, after the first (which compiles)."""
    lanes: tuple[int, ...] = (1, 4, 16, 64)
    """Lane counts (seeds trained as lanes of one program) of the training blocks, ascending."""
    data_size: int = cost.CIFAR_TRAIN_SIZE
    scan_steps: int | None = None
    batch_size: int | None = None
    probe_size: int | None = None
    gauss_newton_batch: int | None = None
    cg_max_iterations: int | None = None
    regression_size: int | None = None
    test_slice: int = 256
    widths: dict = dataclasses.field(default_factory=dict)
    """Model widths in place of the config's, by architecture (the smoke test's tiny models)."""
    models: tuple[str, ...] = ()
    """The config's model labels to measure (all if empty); the others are priced from FLOPs."""
    smoke: bool = False
    """Tiny sizes, to check the script (``SMOKE``): not a measurement, never used to price the paper."""


SMOKE = Sizes(smoke=True, blocks=2, lanes=(1, 2), data_size=64, scan_steps=2, batch_size=8, probe_size=10,
              gauss_newton_batch=16, cg_max_iterations=2, regression_size=10, test_slice=10,
              widths={"cnn": 4, "resnet18": 4}, models=("cnn",))
"""``--smoke``: every stage at tiny sizes, for the cnn only (resnet18's programs take a minute to compile
on a CPU and run through the same code), to know on a CPU that the script runs."""

TABLE = [("model", "model", ""), ("params", "params", ",d"), ("standard_ms", "standard ms (1 lane)", ".2f"),
         ("linearised_ms", "linearised ms (1 lane)", ".2f"), ("ntk_s", "NTK s", ".2f"),
         ("ntk_compile_s", "NTK compile s", ".1f"), ("gauss_newton_s", "GN step s", ".2f"),
         ("regression_s", "KR kernel+solve s", ".2f"), ("test_kernel_s", "KR test kernel s", ".2f"),
         ("peak_gb", "device peak GB", ".2f")]
LANES_TABLE = [("model", "model", ""), ("lanes", "lanes", "d"), ("fits", "fits", ""),
               ("standard_lane_steps_per_s", "lane-steps/s (std)", ",.0f"),
               ("linearised_lane_steps_per_s", "lane-steps/s (lin)", ",.0f"),
               ("standard_block_ms", "ms a block (std)", ",.1f"), ("linearised_block_ms", "ms a block (lin)", ",.1f"),
               ("standard_compile_s", "compile s (std)", ".1f"), ("linearised_compile_s", "compile s (lin)", ".1f"),
               ("planned_gb", "planned GB", ".2f"), ("peak_gb", "device peak GB", ".2f")]


def lane_table(rows: list[dict]) -> list[dict]:
    """The lane rows of every model, as ``LANES_TABLE`` prints them (planned: the larger block program)."""
    return [dict(lane, model=row["model"], fits="yes" if lane["fits"] else "does not fit",
                 planned_gb=max(lane.get("standard_planned_gb", 0.0), lane.get("linearised_planned_gb", 0.0)))
            for row in rows for lane in row["lanes"]]


def peak_bytes() -> int | None:
    """The default device's high-water mark of bytes in use, where it reports one (GPUs; not the CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def timed(function: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, XLA compile seconds) of one call, waited for."""
    with CompileLog() as compiled:
        started = time.perf_counter()
        jax.block_until_ready(function())
        seconds = time.perf_counter() - started
    return seconds, compiled.seconds


def device_bytes_limit() -> int | None:
    """Bytes the default device can hold (``bytes_limit``; GPUs report it, the CPU does not)."""
    return (jax.devices()[0].memory_stats() or {}).get("bytes_limit")


def out_of_memory(error: Exception) -> bool:
    """Whether ``error`` is XLA's resource-exhausted error (an allocation the device could not hold)."""
    return isinstance(error, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(error)


def lane_row(spec: ModelSpec, config: dict, sizes: Sizes, lanes: int, data: train.TrainData) -> dict:
    """Both block programs of a training job with ``lanes`` seeds (``train.Trainer(..., seeds=...)``, scanned as
    accelerators run them): compile seconds, XLA's planned bytes, ms per block and per step, lane-steps/s, and the
    device's high-water mark after them; ``fits`` False, and no times, where the device cannot hold them."""
    training = config["training"]
    batch, scan_steps = sizes.batch_size or training["batch_size"], sizes.scan_steps or training["scan_steps"]
    trainer = train.Trainer(run_config(spec, batch_size=batch, scan_steps=scan_steps, config=config, K=1),
                            spec.create(), block_mode="scan", seeds=list(range(lanes)))
    stacked = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (lanes, *leaf.shape)), trainer.model.params)
    row = dict(lanes=lanes, batch=batch, scan_steps=scan_steps, fits=True, params=trainer.model.num_params)
    limit = device_bytes_limit()
    try:
        for name, block, schedule in (("standard", trainer.relinearising_block, trainer.schedule()),
                                      ("linearised", trainer.linearised_block, trainer.schedule(math.inf))):
            state = trainer.init_state(stacked)
            with CompileLog() as compiled:
                executable = block.lower(state, data, schedule).compile()
            planned = compiled_bytes(executable)
            row |= {f"{name}_compile_s": compiled.seconds, f"{name}_planned_gb": planned / 1e9}
            if limit is not None and planned > limit:
                return row | dict(fits=False, reason=f"{name} block: {planned / 1e9:.1f} GB planned, the device "
                                                     f"holds {limit / 1e9:.1f} GB")
            run = CarriedBlock(executable, state, data, schedule)
            first, _ = timed(run)
            block_s = float(np.median([timed(run)[0] for _ in range(sizes.blocks)]))
            row |= {f"{name}_first_block_s": first, f"{name}_block_ms": 1e3 * block_s,
                    f"{name}_ms": 1e3 * block_s / scan_steps, f"{name}_lane_steps_per_s": lanes * scan_steps / block_s}
            del run, state
    except jax.errors.JaxRuntimeError as error:
        if not out_of_memory(error):
            raise
        return row | dict(fits=False, reason=str(error).splitlines()[0][:200])
    peak = peak_bytes()
    return row | dict(peak_gb=peak / 1e9 if peak is not None else None)


def lane_rows(spec: ModelSpec, config: dict, sizes: Sizes, log: Callable[[str], None]) -> list[dict]:
    """``lane_row`` at each of ``sizes.lanes`` in turn, up to the first that does not fit the device."""
    data = synthetic_data(spec.input_shape, sizes.data_size)
    rows = []
    for lanes in sizes.lanes:
        rows.append(lane_row(spec, config, sizes, lanes, data))
        gc.collect()
        found = rows[-1]
        log(f"  {spec.label} {lanes} lanes: " + (
            f"{found['standard_lane_steps_per_s']:,.0f} / {found['linearised_lane_steps_per_s']:,.0f} lane-steps/s "
            "(standard / linearised)" if found["fits"] else f"does not fit ({found['reason']})"))
        if not found["fits"]:
            break
    return rows


def blocks(spec: ModelSpec, config: dict, sizes: Sizes, log: Callable[[str], None]) -> dict:
    """The training job's block programs at each lane count (``lanes``); the step times of one lane beside them."""
    rows = lane_rows(spec, config, sizes, log)
    one = next((row for row in rows if row["lanes"] == 1 and row["fits"]), {})
    keys = ("batch", "scan_steps", "params", "standard_ms", "linearised_ms", "standard_compile_s",
            "linearised_compile_s")
    return {key: one[key] for key in keys if key in one} | dict(lanes=rows)


def ntk_kernel(spec: ModelSpec, config: dict, sizes: Sizes) -> dict:
    """The per-class NTK on the probe set, as ``measure_ntk`` computes it: seconds, compile seconds."""
    options = config["ntk"]
    n = sizes.probe_size or options["probe_size"]
    model = spec.create()
    x = jax.random.normal(jax.random.key(1), (n, *spec.input_shape))

    def kernel():
        return ntk.empirical_ntk(model.apply, model.params, x, kind="per_class", chunk_size=options["chunk_size"],
                                 strategy=options["strategy"])

    first, compile_s = timed(kernel)
    seconds, _ = timed(kernel)
    return dict(ntk_n=n, ntk_s=seconds, ntk_compile_s=compile_s, ntk_first_s=first)


def gauss_newton_step(spec: ModelSpec, config: dict, sizes: Sizes) -> dict:
    """One damped proximal round of the C5 sweep (``gauss_newton.make_round``) at the config's batch and
    its smallest damping (the most Newton and CG work), with the config's Newton and CG caps."""
    options = config["gauss_newton"]
    batch = sizes.gauss_newton_batch or options["batch_size"] or cost.CIFAR_TRAIN_SIZE
    iterations = sizes.cg_max_iterations or options["cg_max_iterations"]
    model = spec.create()
    round_ = gauss_newton.make_round(model.apply, "mse", cg_tolerance=options["cg_tolerance"],
                                     cg_max_iterations=iterations, newton_tolerance=options["newton_tolerance"],
                                     newton_max_steps=options["newton_max_steps"])
    data = synthetic_data(spec.input_shape, batch, seed=2)
    damping = jnp.float32(gauss_newton.effective_damping(options["learning_rate"], max(options["K"])))
    first, compile_s = timed(lambda: round_(model.params, data.x, data.y, damping))
    seconds, _ = timed(lambda: round_(model.params, data.x, data.y, damping))
    return dict(gauss_newton_batch=batch, cg_iterations=iterations, gauss_newton_s=seconds,
                gauss_newton_compile_s=compile_s)


def regression(spec: ModelSpec, config: dict, sizes: Sizes) -> dict:
    """C6 in float64: the full NTK on the training subset and its eigendecomposition
    (``kernel_regression.KernelDynamics``), then the closed form's outputs Θ(x, X)α on a slice of test
    examples (``kernel_regression.kernel_product``), whose time is scaled to the whole test set."""
    options = config["kernel_regression"]
    n = sizes.regression_size or options["train_size"]
    with jax.enable_x64(True):
        model = spec.create()
        params = jax.tree.map(lambda p: p.astype(jnp.float64), model.params)
        data = synthetic_data(spec.input_shape, n + sizes.test_slice, seed=3)
        x_train, x_test = data.x[:n].astype(jnp.float64), data.x[n:].astype(jnp.float64)
        residual = np.eye(NUM_CLASSES)[np.asarray(data.y[:n])] - np.asarray(model.apply(params, x_train))
        product = jax.jit(lambda p, a, b, alpha: kernel_regression.kernel_product(model.apply, p, a, b, alpha))

        def solve():
            kernel = ntk.empirical_ntk(model.apply, params, x_train, kind="full", chunk_size=kernel_regression.KERNEL_CHUNK)
            return kernel_regression.KernelDynamics.of(kernel, residual)

        def test_outputs(dynamics):
            alpha = jnp.asarray(dynamics.coefficients(dynamics.stable_rate() / 2, 1000))
            return product(params, x_train, x_test, alpha).block_until_ready()

        dynamics = solve()  # compiles
        seconds, _ = timed(solve)
        timed(lambda: test_outputs(dynamics))
        test_seconds, _ = timed(lambda: test_outputs(dynamics))
    return dict(regression_size=n, regression_s=seconds, test_slice=sizes.test_slice, test_kernel_s=test_seconds,
                test_kernel_full_s=test_seconds * cost.CIFAR_TEST_SIZE / sizes.test_slice)


def specs(config: dict, sizes: Sizes) -> list[ModelSpec]:
    """The config's models, at ``sizes.widths`` where given."""
    found = []
    for spec in paper_models(config):
        width = sizes.widths.get(spec.name)
        found.append(dataclasses.replace(spec, kwargs={**spec.kwargs, "width": width}) if width else spec)
    return found


def projection(config: dict, rows: list[dict], found: list[ModelSpec], smoke: bool) -> dict:
    """The config's H100-hours per stage (``bench.cost``), from these rows' step and NTK times as a
    results file holding them would give them (FLOP estimates for models not measured, and on a CPU or
    at smoke sizes)."""
    results = {"device": {"platform": jax.devices()[0].platform}, "sections": {"gpu": {"smoke": smoke, "rows": rows}}}
    assumptions = cost.Assumptions()
    costs = {label: cost.model_costs(work, assumptions) for label, work in cost.priced_work(config, found, results).items()}
    stages = cost.estimate(config, costs, assumptions)
    return dict(stages=stages, total_hours=stages[-1]["hours"], basis={label: c.basis for label, c in costs.items()})


def measure(config: dict, sizes: Sizes, log: Callable[[str], None] = print) -> dict:
    """Every stage for every model of ``config``; the projected GPU-hours; the peak host memory."""
    started = time.perf_counter()
    found, rows = specs(config, sizes), []
    for spec in found:
        if sizes.models and spec.label not in sizes.models:
            continue
        row = dict(model=spec.label, architecture=spec.name, kwargs=spec.kwargs, input_shape=list(spec.input_shape))
        peaks = {}
        for stage, measured in (("train", functools.partial(blocks, log=log)), ("measure_ntk", ntk_kernel),
                                ("gauss_newton", gauss_newton_step), ("kernel_regression", regression)):
            row |= measured(spec, config, sizes)
            peaks[stage] = peak_bytes()
            log(f"  {spec.label} {stage}: done after {time.perf_counter() - started:.0f} s; device peak so far "
                + (f"{peaks[stage] / 1e9:.2f} GB" if peaks[stage] is not None else "not reported"))
        row |= dict(peak_bytes=peaks, peak_gb=max(peaks.values()) / 1e9 if None not in peaks.values() else None)
        rows.append(row)
    smoke = sizes.smoke
    return dict(smoke=smoke, sizes=dataclasses.asdict(sizes), rows=rows, projection=projection(config, rows, found, smoke),
                max_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
                seconds=time.perf_counter() - started)
