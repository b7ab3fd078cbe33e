"""What the benchmarks share: the paper's run settings, synthetic data, one timing helper, a
compilation counter, the machine's matmul rates and the results file ``bench/results/<device>.json``."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import yaml
from flax import nnx
from jax import lax

from itlin import models, record, train

REPOSITORY = Path(__file__).resolve().parent.parent
PAPER_CONFIG = REPOSITORY / "config" / "paper.yaml"
DEFAULT_CONFIG = REPOSITORY / "config" / "config.yaml"  # MNIST-1D
DIGITS_CONFIG = REPOSITORY / "config" / "digits.yaml"
RESULTS = Path(__file__).resolve().parent / "results"
NUM_CLASSES = 10
CIFAR_SHAPE = (32, 32, 3)
DIGITS_SHAPE = (8, 8, 1)
MNIST1D_SHAPE = (40, 1)
DATASET_SHAPES = {"cifar10": CIFAR_SHAPE, "digits": DIGITS_SHAPE, "mnist1d": MNIST1D_SHAPE}
"""The input shape of each dataset's examples (the benchmarks build models without the data)."""
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # one per XLA executable built or loaded
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"  # loaded from the persistent cache instead of compiled


@dataclass(frozen=True)
class ModelSpec:
    """A model of the registry at one size and input shape; ``label`` names it in tables."""

    label: str
    name: str
    kwargs: dict = field(hash=False)
    input_shape: tuple[int, ...] = CIFAR_SHAPE

    def create(self, seed: int = 0) -> models.Model:
        """The network as the pipeline builds it: a pure ``apply`` and its parameters."""
        return models.create(self.name, input_shape=self.input_shape, num_classes=NUM_CLASSES, seed=seed,
                             **self.kwargs)

    def module(self, seed: int = 0) -> nnx.Module:
        """The same network as ``create`` builds, as a plain Flax NNX module (for the plain baseline)."""
        return models.MODELS[self.name](self.input_shape, NUM_CLASSES, rngs=nnx.Rngs(seed), **self.kwargs)


def paper_config(path: Path = PAPER_CONFIG) -> dict:
    """The pipeline config the benchmarks size themselves on (``config/paper.yaml``)."""
    return yaml.safe_load(Path(path).read_text())


def config_models(config: dict) -> list[ModelSpec]:
    """A pipeline config's models as they are, on its dataset's inputs, labelled ``<dataset>-<label>``."""
    dataset = config["dataset"]["name"]
    return [ModelSpec(f"{dataset}-{label}", entry["name"], dict(entry["kwargs"]), DATASET_SHAPES[dataset])
            for label, entry in config["models"].items()]


def paper_models(config: dict, *, resnet_width: int | None = None, compute_dtype: str = "float32") -> list[ModelSpec]:
    """The paper config's models on CIFAR-shaped input; ``resnet_width`` shrinks resnet18 for a CPU."""
    specs = []
    for label, entry in config["models"].items():
        kwargs = dict(entry["kwargs"])
        if entry["name"] == "resnet18" and resnet_width is not None:
            kwargs["width"] = resnet_width
        if compute_dtype != "float32":
            kwargs["compute_dtype"] = compute_dtype
        label += f"-w{kwargs['width']}" if kwargs.get("width") != entry["kwargs"].get("width") else ""
        label += "-bf16" if compute_dtype == "bfloat16" else ""
        specs.append(ModelSpec(label, entry["name"], kwargs))
    return specs


def run_config(spec: ModelSpec, *, batch_size: int, scan_steps: int, config: dict, K: float = math.inf,
               switch_step: int | None = None, seed: int = 0) -> record.RunConfig:
    """A run of ``spec`` with the config's training settings (as the pipeline writes them), on
    in-memory synthetic data; evaluation and checkpoints fall outside the benchmarked blocks."""
    training = dict(config["training"])
    steps = scan_steps * math.ceil(training["steps"] / scan_steps)
    training.update(batch_size=batch_size, scan_steps=scan_steps, steps=steps, eval_every=steps,
                    checkpoint_every=steps, velocity_interval=scan_steps)
    name = spec.name if spec.name in models.MODELS else "cnn"  # a benchmark-only model: the Trainer runs it as given
    return record.RunConfig.from_dict(dict(
        data="synthetic (in memory)", dataset="synthetic", model={"name": name, "label": spec.label, **spec.kwargs}, K=K,
        switch_step=switch_step, seed=seed, variant="base", augment=False, **training))


def synthetic_data(shape: tuple[int, ...], size: int, seed: int = 0) -> train.TrainData:
    """``size`` Gaussian images with uniform labels, resident on the default device (as ``train.run`` holds data)."""
    key_x, key_y = jax.random.split(jax.random.key(seed))
    return train.TrainData(jax.random.normal(key_x, (size, *shape)),
                           jax.random.randint(key_y, (size,), 0, NUM_CLASSES, dtype=jnp.int32))


def alternating_times(runners: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict]:
    """Seconds per call of each runner: the first call (with the XLA compilations it triggered)
    and the median of ``repeats`` further calls. The runners alternate within every repeat, so a
    noisy, shared machine loads them alike; each call is waited for (``jax.block_until_ready``)."""
    found = {name: {"times_s": []} for name in runners}
    for name, run in runners.items():
        with CompileLog() as compiled:
            started = time.perf_counter()
            jax.block_until_ready(run())
            found[name]["first_call_s"] = time.perf_counter() - started
        found[name]["first_call_compilations"] = len(compiled.compilations)
    for _ in range(repeats):
        for name, run in runners.items():
            started = time.perf_counter()
            jax.block_until_ready(run())
            found[name]["times_s"].append(time.perf_counter() - started)
    for timing in found.values():
        timing["median_s"] = statistics.median(timing["times_s"])
    return found


class CompileLog:
    """Counts, while active, the XLA executables built (``compilations``, with their names and
    seconds) and those loaded from the persistent compilation cache (``cache_hits``)."""

    def __init__(self):
        self.compilations: list[tuple[str, float]] = []
        self.cache_hits = 0

    def _on_duration(self, event: str, duration: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.compilations.append((str(kwargs.get("fun_name", "?")), duration))

    def _on_event(self, event: str, **kwargs) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1

    def __enter__(self) -> "CompileLog":
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        jax.monitoring.unregister_event_listener(self._on_event)

    @property
    def seconds(self) -> float:
        return sum(seconds for _, seconds in self.compilations)


def lowered_flops(function: Callable, *args) -> float:
    """XLA's FLOP count of one call of ``function`` (HLO cost analysis of the lowered program; a
    loop body counts once)."""
    return float(jax.jit(function).lower(*args).cost_analysis()["flops"])


def step_flops(trainer: train.Trainer, state: train.TrainState, data: train.TrainData) -> dict[str, float]:
    """XLA's FLOP counts of the trainer's two steps: ``standard`` (re-linearising, f's gradient) and
    ``linearised`` (f_lin's gradient); the schedule's values do not change them."""
    schedule = trainer.schedule()
    return {"standard": lowered_flops(trainer.relinearising_step, state, data, schedule),
            "linearised": lowered_flops(trainer.train_step, state, data, schedule)}


def matmul_rate(m: int, k: int, n: int, *, flops: float = 1e9, repeats: int = 3) -> float:
    """FLOP/s of float32 (m, k) x (k, n) products run back to back in one program (a loop of about
    ``flops`` FLOP, so no dispatch per product; the fastest of ``repeats`` runs after a warm-up: a
    ceiling, which load from other jobs on a shared machine only lowers). An optimisation barrier keeps
    XLA from hoisting the loop-invariant product out of the loop."""
    count = max(1, round(flops / (2 * m * k * n)))

    @jax.jit
    def products(a, b):
        def body(_, carry):
            a, total = carry
            a = lax.optimization_barrier(a)
            return a, total + a @ b

        return lax.fori_loop(0, count, body, (a, jnp.zeros((m, n), a.dtype)))[1]

    a, b = (jax.random.normal(jax.random.key(index), shape) for index, shape in enumerate([(m, k), (k, n)]))
    jax.block_until_ready(products(a, b))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(products(a, b))
        times.append(time.perf_counter() - started)
    return 2 * m * k * n * count / min(times)


PEAK_PRODUCT = (2048, 2048, 2048)
"""The large product whose rate stands for the machine's float32 matmul peak."""


def layer_products(model: models.Model, input_shape: tuple[int, ...], batch: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of each dense layer and convolution of ``model``'s forward pass at ``batch``: batch x
    fan_in x fan_out, and a convolution's im2col product (batch·positions x k·…·c_in x c_out), read from
    the traced program (so the same whichever form computes a convolution)."""
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    found = []

    def walk(jaxpr):
        for equation in jaxpr.eqns:
            if equation.primitive.name == "conv_general_dilated":
                out, kernel = equation.outvars[0].aval.shape, equation.invars[1].aval.shape
                found.append((math.prod(out[:-1]), math.prod(kernel[:-1]), kernel[-1]))
            elif equation.primitive.name == "dot_general":
                (contract, _), _ = equation.params["dimension_numbers"]
                lhs, rhs = equation.invars[0].aval.shape, equation.invars[1].aval.shape
                inner = math.prod(lhs[axis] for axis in contract)
                found.append((math.prod(lhs) // inner, inner, math.prod(rhs) // inner))
            for param in equation.params.values():
                inner_jaxpr = getattr(param, "jaxpr", param)
                if hasattr(inner_jaxpr, "eqns"):
                    walk(inner_jaxpr)

    walk(jax.make_jaxpr(model.apply)(model.params, x).jaxpr)
    return found


def attainable_rate(products: list[tuple[int, int, int]], rates: dict | None = None) -> float:
    """The FLOP/s at which this machine runs a step's products: per layer the forward (M, K) x (K, N),
    the input gradient (M, N) x (N, K) and the weight gradient (K, M) x (M, N), each at its measured
    ``matmul_rate``; their FLOPs over the sum of their times. ``rates`` caches rates by shape."""
    rates = {} if rates is None else rates
    flops = seconds = 0.0
    for m, k, n in products:
        for shape in ((m, k, n), (m, n, k), (k, m, n)):
            if shape not in rates:
                rates[shape] = matmul_rate(*shape)
            flops += 2 * m * k * n
            seconds += 2 * m * k * n / rates[shape]
    return flops / seconds


def device_label() -> str:
    """The default device as the results file names it: ``cpu``, ``nvidia-h100-80gb-hbm3``, ..."""
    device = jax.devices()[0]
    kind = device.device_kind if device.platform != "cpu" else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


def results_path(device: str | None = None) -> Path:
    """``bench/results/<device>.json``, for the default device unless one is named."""
    return RESULTS / f"{device or device_label()}.json"


def store(section: str, result: dict, path: Path | None = None) -> Path:
    """Write ``result`` as ``section`` of the device's results file, keeping the other sections,
    with the device, library versions and date of this measurement."""
    path = path or results_path()
    stored = json.loads(path.read_text()) if path.exists() else {"sections": {}}
    environment = record.environment()
    stored.update(device=environment["device"] | {"cpu": cpu_model(), "cpu_count": os.cpu_count()},
                  versions=environment["versions"])
    stored["sections"][section] = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                                   **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2) + "\n")
    return path


def cpu_model() -> str:
    """The host CPU's model name (Linux ``/proc/cpuinfo``), else the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def format_table(rows: list[dict], columns: list[tuple[str, str, str]], markdown: bool = False) -> str:
    """``rows`` as a text (or Markdown) table; ``columns`` are (key, header, format spec) and a
    missing or None value prints as ``-``."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(key) is None else format(row[key], spec) for key, _, spec in columns])
    if markdown:
        lines = ["| " + " | ".join(line) + " |" for line in cells]
        return "\n".join([lines[0], "|" + "---|" * len(columns), *lines[1:]])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells)
