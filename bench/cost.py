"""The paper's GPU cost: the H100-hours that a pipeline config (``config/paper.yaml``) needs, per
stage and in total, and what changes would bring it under a budget.

Until the suite has run on a GPU this is an estimate from FLOP counts: XLA's count of each program
the pipeline runs (the training step, standard and linearised; the evaluation; the NTK cost model
of ``itlin.ntk``), at the config's models, batch and CIFAR input size, divided by an assumed
sustained throughput, a named fraction of the H100 SXM's dense peak (``Assumptions``). Where a
results file from a GPU (``python -m bench gpu``, or ``--full``) holds step times measured for the
config's models at its batch, lane-steps/s at several lane counts, and NTK times, those replace the
FLOP estimates and the assumed lane model.

Jobs are those the pipeline runs (``itlin.workflow.run_grid``: a training or NTK job per model × schedule
× variant, every seed a lane of it; the Gauss-Newton and kernel-regression runs), checked against the
job counts of ``snakemake -n`` where the results file holds them (``python -m bench dag``). Each model's
training jobs are packed onto devices as gives the most lane-steps/s within the memory of an H100
(``best_packing``: how many jobs share a device).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bench.common import ModelSpec, run_config, step_flops
from bench.packing import H100_MEMORY_BYTES, MARGIN, LaneCurve, Packing, best_packing, packings
from itlin import ntk, record, train, workflow
from itlin.linearise import relinearises_throughout

H100_DENSE_PEAK = {"tf32": 494.7e12, "bf16": 989.4e12, "fp32": 66.9e12, "fp64": 66.9e12}
"""FLOP/s of an H100 SXM5 without sparsity (NVIDIA datasheet): tensor cores in TF32, BF16 and FP64, CUDA cores
in FP32."""
CG_ITERATIONS_PER_SQRT_K = 2.0
"""CG iterations of one damped solve at λ = 1/(ηK), about 2√K where η ≈ 1/σ_max (the system's condition
number is 1 + ησ_max·K): measured on the digits config's C5 runs (mean 7, 12, 20, 32, 47 at K = 6 … 600)."""
NEWTON_STEPS = {"mse": 1, "cross_entropy": 3}
"""Newton steps of one proximal round: exactly one on MSE; on cross-entropy the digits config's C5 runs
took 1.6 to 5.3 on average per K (more at smaller λ)."""
CIFAR_TRAIN_SIZE, CIFAR_TEST_SIZE = 50_000, 10_000
BUDGET_HOURS = 12.0

STAGES_TABLE = [("stage", "stage", ""), ("jobs", "jobs", "d"), ("hours", "H100-hours", ",.1f"),
                ("packing", "packing", ""), ("basis", "basis", "")]
PACKING_TABLE = [("model", "model", ""), ("jobs", "jobs a device", "d"), ("lanes", "lanes a device", "d"),
                 ("lane_steps_per_s", "lane-steps/s (linearised)", ",.0f"), ("device_gb", "device GB", ".1f"),
                 ("fits", f"<= {MARGIN:.0%} of 80 GB", ""), ("chosen", "chosen", ""), ("basis", "basis", "")]
COSTS_TABLE = [("model", "model", ""), ("standard_gflop", "standard step GFLOP", ",.1f"),
               ("linearised_gflop", "linearised step GFLOP", ",.1f"), ("standard_ms", "standard step ms", ".2f"),
               ("linearised_ms", "linearised step ms", ".2f"), ("ntk_s", "NTK on the probe set s", ".2f"),
               ("basis", "basis", "")]
LEVERS_TABLE = [("change", "change", ""), ("hours", "H100-hours", ",.1f"), ("saved", "saved", ",.1f")]


@dataclass(frozen=True)
class Assumptions:
    """What the FLOP estimate assumes of the GPU; a GPU results file's step and NTK times replace the first two."""

    training_fraction: float = 0.15
    """Sustained share of the TF32 tensor-core peak in training and evaluation steps (XLA runs float32
    matmuls and convolutions in TF32 on an H100 by default). A judgement, not a measurement: the
    convolutions of 32x32 images at batch 128 are too small to keep an H100's tensor cores busy."""
    ntk_fraction: float = 0.5
    """Sustained share of the FP32 peak in NTK computations (precision "highest", i.e. true float32),
    dominated by large Jacobian contractions that run near peak."""
    step_floor_ms: float = 0.5
    """No training step is faster: a step launches about a hundred kernels of a few µs each."""
    job_overhead_s: float = 30.0
    """Per pipeline job: interpreter and JAX start, loading the data, compiling or loading from the
    compilation cache, snapshots and checkpoints."""
    bf16_speedup: float = 2.0
    """Training throughput of ``compute_dtype: bfloat16`` over float32 (the BF16 peak is twice TF32's)."""
    lane_fraction_ceiling: float = 0.30
    """The share of the TF32 peak that many lanes approach: a job's seeds run as lanes of one program, so a
    step does L times the work in about as many kernels, and each lane beyond the first is assumed to add
    its FLOPs at this share (the first costs as at ``training_fraction``). A judgement, twice the one-lane
    share, until ``python -m bench gpu`` measures lane-steps/s at 1, 4, 16 and 64 lanes."""
    shared_device_efficiency: float = 0.8
    """Several training jobs on one device (``ITLIN_JOBS_PER_GPU``) are assumed to reach this share of the
    throughput of their lanes in one program: their kernels interleave (CUDA MPS) but do not fuse. Without
    MPS, processes take turns on the device and sharing gains little; 0 never shares."""
    max_lanes: int = 64
    """The most lanes a device is priced at: the largest lane count ``python -m bench gpu`` measures."""
    max_jobs_per_device: int = 4
    """The most training jobs sharing a device: each takes the config's 4 threads and about 10 GB of host
    memory (``mem_mb``), and an 8-GPU H100 node has some 12 to 28 cores and 250 GB per GPU."""

    @property
    def training_flops_per_s(self) -> float:
        return self.training_fraction * H100_DENSE_PEAK["tf32"]

    @property
    def ntk_flops_per_s(self) -> float:
        return self.ntk_fraction * H100_DENSE_PEAK["fp32"]

    @property
    def float64_slowdown(self) -> float:
        """How much longer the same work takes in float64 (the C6 jobs): at the same share of the FP64
        tensor-core peak instead of TF32's."""
        return H100_DENSE_PEAK["tf32"] / H100_DENSE_PEAK["fp64"]


class ModelWork(NamedTuple):
    """The work the pipeline does with one model, in FLOPs (XLA's counts and ``itlin.ntk``'s cost
    model), and what a GPU results file measured of it (None where nothing was)."""

    standard_step: float  # a step that re-linearises (f's gradient; K = 1), at the config's batch
    linearised_step: float  # a step with f_lin's gradient (every other schedule), at the config's batch
    eval_example: float  # evaluating f_lin and f on one example
    ntk_kernel: float  # one per-class NTK on the probe set
    regression_kernels: float  # the full NTK of the C6 training subset (train × train)
    measured_steps: dict | None  # a ``steps`` row of a GPU results file
    measured_ntk_s: float | None  # seconds of one NTK on the probe set, from a GPU results file
    measured_lanes: LaneCurve | None  # the lanes of a GPU results file's ``gpu`` section that fit the device
    lane_bytes: tuple[float, float] | None  # a training job's planned device bytes: (shared by its lanes, per lane)


class ModelCosts(NamedTuple):
    """Seconds on the GPU of each piece of work the pipeline does with one model (steps: of one lane)."""

    standard_step: float
    linearised_step: float
    eval_example: float
    ntk_kernel: float
    regression_kernels: float
    basis: str
    lanes: LaneCurve


def model_work(spec: ModelSpec, config: dict, results: dict | None, planned: dict | None = None) -> ModelWork:
    """``ModelWork`` of ``spec`` under ``config``, from abstract shapes (nothing large is allocated); measured
    times from the GPU ``results`` file, the training job's device bytes from its lanes there, else from a
    ``memory`` section (``planned``, ``python -m bench memory``: a job's lanes, on whichever backend planned it)."""
    batch = config["training"]["batch_size"]
    settings = run_config(spec, batch_size=batch, scan_steps=1, config=config)
    model = spec.create()
    pipeline = train.Trainer(settings, model)
    state = jax.eval_shape(pipeline.init_state)
    data = train.TrainData(jax.ShapeDtypeStruct((CIFAR_TRAIN_SIZE, *spec.input_shape), jnp.float32),
                           jax.ShapeDtypeStruct((CIFAR_TRAIN_SIZE,), jnp.int32))
    chunk = jax.ShapeDtypeStruct((train.EVAL_CHUNK, *spec.input_shape), jnp.float32)
    labels = jax.ShapeDtypeStruct((train.EVAL_CHUNK,), jnp.int32)
    evaluation = pipeline.evaluate.lower(state.params, state.params_lin, chunk, labels).cost_analysis()["flops"]
    probe_size = config["ntk"]["probe_size"]
    regression_size = config.get("kernel_regression", {}).get("train_size")
    regression = ntk_kernel_flops(model, spec, regression_size, kind="full") if regression_size else 0.0
    flops = step_flops(pipeline, state, data)
    return ModelWork(standard_step=flops["standard"], linearised_step=flops["linearised"],
                     eval_example=float(evaluation) / train.EVAL_CHUNK,
                     ntk_kernel=ntk_kernel_flops(model, spec, probe_size), regression_kernels=regression,
                     measured_steps=measured_steps(results, spec, batch),
                     measured_ntk_s=measured_ntk_seconds(results, spec, probe_size),
                     measured_lanes=measured_lanes(results, spec, config), lane_bytes=planned_lane_bytes(planned, spec, config))


def eval_set_bytes(spec: ModelSpec, config: dict) -> float:
    """The evaluation set a training job holds on the device (float32 images, int32 labels)."""
    return (4 * math.prod(spec.input_shape) + 4) * (config["training"]["eval_train_size"] + CIFAR_TEST_SIZE)


def held_bytes(spec: ModelSpec, config: dict) -> float:
    """What a training job holds on the device for all its lanes: its training set and the evaluation set."""
    trained = config["training"].get("train_size") or CIFAR_TRAIN_SIZE
    return (4 * math.prod(spec.input_shape) + 4) * trained + eval_set_bytes(spec, config)


COMPANION_JOBS = " (companion)"
"""Suffix of the companion's jobs (its models' and deep linear twins') in a ``memory`` section's stages."""


def planned_lane_bytes(planned: dict | None, spec: ModelSpec, config: dict) -> tuple[float, float] | None:
    """(shared, per lane) device bytes of a training job of ``spec``, from the planned peak of its ``lanes`` in a
    ``memory`` section: the data are shared, the rest (state, activations) grows with the lanes."""
    job = next((job for job in (planned or {}).get("jobs", [])
                if job["stage"] in ("train", "train" + COMPANION_JOBS) and job["model"] == spec.label), None)
    if job is None:
        return None
    shared = held_bytes(spec, config)
    return shared, max(job["peak_gb"] * 1e9 - shared, 0.0) / job.get("lanes", 1)


class NtkPlan(NamedTuple):
    """How ``itlin.ntk.empirical_ntk`` computes one kernel on an H100: strategy, chunk size, FLOPs."""

    strategy: str
    chunk_size: int
    flops: float


def ntk_plan(model, spec: ModelSpec, n: int, *, kind: str = "per_class", strategy: str = "auto",
             chunk_size: int | None = None) -> NtkPlan:
    """One NTK of ``kind`` on n probes as ``empirical_ntk`` plans it under the H100's memory budget: the given strategy and chunk size, else (``auto``, None) the cheaper strategy by
    ``itlin.ntk``'s cost model, at its automatic chunk size."""
    profile = ntk.profile_model(model.apply, model.params, jnp.zeros((1, *spec.input_shape)))
    budget = ntk.JACOBIAN_MEMORY_FRACTION * H100_MEMORY_BYTES
    plans = []
    for candidate in ntk.STRATEGIES if strategy == "auto" else [strategy]:
        chunk = chunk_size or ntk.auto_chunk_size(profile, candidate, n=n, budget_bytes=budget)
        flops = ntk.estimate_costs(profile, n1=n, n2=n, kind=kind, symmetric=True, chunk_size=chunk)[candidate].flops
        plans.append(NtkPlan(candidate, chunk, flops))
    return min(plans, key=lambda plan: plan.flops)


def ntk_kernel_flops(model, spec: ModelSpec, n: int, *, kind: str = "per_class") -> float:
    """FLOPs of one NTK of ``kind`` on n probes by ``itlin.ntk``'s cost model, with the cheaper strategy
    at its chunk size under the H100's memory budget."""
    return ntk_plan(model, spec, n, kind=kind).flops


def gpu_rows(results: dict | None) -> list[dict]:
    """The per-model rows of a results file's ``gpu`` section (``python -m bench gpu``), measured on an
    accelerator at full size (none from a CPU or from ``--smoke``)."""
    if not results or results.get("device", {}).get("platform") == "cpu":
        return []
    section = results.get("sections", {}).get("gpu", {})
    return [] if section.get("smoke", True) else section.get("rows", [])


def _matches(row: dict, spec: ModelSpec) -> bool:
    return (row["architecture"], row["kwargs"], tuple(row["input_shape"])) == (spec.name, spec.kwargs, spec.input_shape)


def measured_steps(results: dict | None, spec: ModelSpec, batch: int) -> dict | None:
    """The step times of ``spec`` at ``batch`` in a results file from a GPU, if there are some: the
    ``gpu`` section's (the block programs as the pipeline runs them), else the ``steps`` section's."""
    if not results or results.get("device", {}).get("platform") == "cpu":
        return None
    rows = gpu_rows(results) + results.get("sections", {}).get("steps", {}).get("rows", [])
    return next((row for row in rows if _matches(row, spec) and row.get("batch") == batch), None)


def measured_lanes(results: dict | None, spec: ModelSpec, config: dict) -> LaneCurve | None:
    """The lanes of ``spec`` at the config's batch that fit the device (``python -m bench gpu``, on a GPU): step
    seconds, and the job's device bytes (its larger block program as XLA planned it there, and the evaluation set)."""
    row = next((row for row in gpu_rows(results) if _matches(row, spec)), None)
    batch = config["training"]["batch_size"]
    rows = sorted((lane for lane in (row or {}).get("lanes", []) if lane["fits"] and lane["batch"] == batch),
                  key=lambda lane: lane["lanes"])
    if not rows:
        return None
    planned = [1e9 * max(lane["standard_planned_gb"], lane["linearised_planned_gb"]) + eval_set_bytes(spec, config)
               for lane in rows]
    return LaneCurve(tuple(lane["lanes"] for lane in rows), tuple(lane["standard_ms"] / 1e3 for lane in rows),
                     tuple(lane["linearised_ms"] / 1e3 for lane in rows), tuple(planned), "measured lane-steps/s")


def measured_ntk_seconds(results: dict | None, spec: ModelSpec, n: int) -> float | None:
    """Seconds of one NTK of ``spec`` on n probes on a GPU, scaled by n² from the ``gpu`` section's
    per-class kernel, else from the largest size of the ``ntk`` section."""
    if not results or results.get("device", {}).get("platform") == "cpu":
        return None
    row = next((row for row in gpu_rows(results) if _matches(row, spec)), None)
    if row:
        return row["ntk_s"] * (n / row["ntk_n"]) ** 2
    section = results.get("sections", {}).get("ntk", {})
    if section.get("kwargs") != spec.kwargs or tuple(section.get("input_shape", ())) != spec.input_shape:
        return None
    largest = max(section["rows"], key=lambda row: (row["n"], -row["seconds"]))
    return largest["seconds"] * (n / largest["n"]) ** 2


def assumed_lanes(work: ModelWork, standard: float, linearised: float, assumptions: Assumptions) -> LaneCurve:
    """One lane's ``standard`` and ``linearised`` step seconds scaled to 1 to ``max_lanes`` lanes by the assumed
    lane model (the first lane at its time, each further lane its FLOPs at ``lane_fraction_ceiling``, no step
    under the floor); device bytes from ``work.lane_bytes``."""
    ceiling = max(assumptions.lane_fraction_ceiling, assumptions.training_fraction)
    fixed = ceiling / assumptions.training_fraction - 1  # the first lane's extra cost, in lanes at the ceiling
    lanes = tuple(range(1, assumptions.max_lanes + 1))
    floor = assumptions.step_floor_ms / 1e3

    def scaled(one: float) -> tuple[float, ...]:
        return tuple(max(floor, one * (count + fixed) / (1 + fixed)) for count in lanes)

    memory = None
    if work.lane_bytes:
        shared, per_lane = work.lane_bytes
        memory = tuple(shared + count * per_lane for count in lanes)
    return LaneCurve(lanes, scaled(standard), scaled(linearised), memory,
                     f"lanes assumed (+{ceiling:.0%} of TF32 peak a lane)")


def model_costs(work: ModelWork, assumptions: Assumptions, *, bfloat16: bool = False) -> ModelCosts:
    """Seconds of each piece of ``work``: measured where a GPU measured it, else FLOPs over the assumed
    throughput (``bfloat16``: training at the assumed bfloat16 speed-up, never a measured float32 time)."""
    rate, floor = assumptions.training_flops_per_s, assumptions.step_floor_ms / 1e3
    if bfloat16:
        rate *= assumptions.bf16_speedup
    ntk_seconds = work.measured_ntk_s or work.ntk_kernel / assumptions.ntk_flops_per_s
    regression = work.regression_kernels / assumptions.ntk_flops_per_s
    if work.measured_steps and not bfloat16:
        one_lane = [work.measured_steps[f"{name}_ms"] / 1e3 for name in ("standard", "linearised")]
        basis = "measured step times"
    else:
        one_lane = [flops / rate for flops in (work.standard_step, work.linearised_step)]
        basis = "FLOPs"
    standard, linearised = (max(floor, seconds) for seconds in one_lane)
    lanes = work.measured_lanes if work.measured_lanes and not bfloat16 else assumed_lanes(
        work, *one_lane, assumptions)
    return ModelCosts(standard, linearised, work.eval_example / rate, ntk_seconds, regression,
                      f"{basis}; {lanes.basis}", lanes)


def relinearising_block_steps(K: float, switch_step: int | None, steps: int, scan_steps: int) -> int:
    """Steps in blocks that re-linearise at every step (all of a K = 1 run; a switch run's blocks
    that end by its switch step), which ``train.Trainer.block_for`` runs as standard steps."""
    return sum(scan_steps for start in range(0, steps, scan_steps)
               if relinearises_throughout(K, switch_step, start, scan_steps))


def distinct_kernels(K: float, training: dict, velocity_interval: int) -> int:
    """NTKs the NTK stage computes for one sweep run: one per distinct parameter vector among θ_lin at its
    snapshots and θ at its last (``measure_ntk.measure_runs`` computes identical snapshots once; of a K = 1
    run, whose θ_lin is θ one step earlier, θ_lin's alone)."""
    steps = training["steps"]
    snapshots = record.snapshot_steps(steps, training["scan_steps"], training["num_snapshots"], velocity_interval)
    period = steps if math.isinf(K) else int(K)
    points = {((step - 1) // period) * period if step > 0 else 0 for step in snapshots}  # θ_lin: the last update
    if K != 1:
        points.add(steps)  # θ at the end
    return len(points)


def runs(config: dict) -> dict[str, list[dict]]:
    """Every job of the config's compute stages, by rule, as its wildcards (``itlin.workflow.run_grid``): a
    training job is one (model, schedule, variant) with every seed as a lane, so without a seed; an NTK job one
    (model, variant), measuring every schedule, so without either; the companion's runs among them (variant
    ``companion``). The width sweep's runs are left out (``config/paper.yaml`` has none)."""
    grid = workflow.run_grid(config)
    jobs = {"train": grid.sweep + grid.switch + grid.companion, "measure_ntk": grid.sweep,
            "measure_ntk_k1": grid.companion, "gauss_newton": grid.gauss_newton,
            "kernel_regression_run": grid.kernel_regression}
    found = {rule: [workflow.run_wildcards(path) for path in paths] for rule, paths in jobs.items() if paths}
    for rule, per_job in (("train", ("seed",)), ("measure_ntk", ("seed", "schedule")),
                          ("measure_ntk_k1", ("seed", "schedule"))):
        kept = {tuple((key, value) for key, value in run.items() if key not in per_job): None
                for run in found.get(rule, [])}
        if kept:
            found[rule] = [dict(job) for job in kept]
    return found


AUTO_RATE_PRODUCTS = 60
"""Kernel-vector products of one ``learning_rate: auto`` (Lanczos for λ_max, ``itlin.ntk.largest_eigenvalues``),
a vjp and a jvp on the training subset each, about two standard steps: a judgement (ARPACK's default of 20
Lanczos vectors, restarted two or three times)."""


def companion_specs(config: dict) -> list[ModelSpec]:
    """The companion's models and their deep linear twins, on CIFAR-shaped input."""
    return [ModelSpec(label, entry["name"], entry["kwargs"])
            for label in [*config["companion"]["models"], *workflow.twins(config)]
            for entry in [workflow.model_entry(config, label)]]


def priced_work(config: dict, specs: list[ModelSpec], results: dict | None, planned: dict | None = None
                ) -> dict[str, ModelWork]:
    """``ModelWork`` of each of ``specs`` (the config's models, ``model_work``), and of the companion's models and
    twins at its full batch."""
    work = {spec.label: model_work(spec, config, results, planned) for spec in specs}
    return work | {spec.label: model_work(spec, companion_regime(config), results, planned)
                   for spec in companion_specs(config)}


def companion_regime(config: dict) -> dict:
    """``config`` with the companion's training as its ``training``, to price its runs with ``model_work``: the
    step a stand-in where it is ``auto`` (a step's FLOPs do not depend on it), no kernel-regression subset."""
    training = workflow.companion_training(config)
    training["optimizer"] = {**training["optimizer"], "learning_rate": 0.01}
    return {**config, "training": training, "kernel_regression": {}}


def chosen_packings(config: dict, costs: dict[str, ModelCosts], assumptions: Assumptions) -> dict[str, Packing]:
    """Per priced model, the packing of its training jobs (``best_packing``) among as many jobs as it has."""
    priced = [job["model"] for job in runs(config)["train"]]
    return {label: best_packing(costs[label].lanes, len(config["seeds"]), priced.count(label),
                                **sharing(assumptions)) for label in dict.fromkeys(priced)}


def sharing(assumptions: Assumptions) -> dict:
    """The assumptions on device sharing, as ``packings`` takes them."""
    return dict(max_jobs=assumptions.max_jobs_per_device, sharing_efficiency=assumptions.shared_device_efficiency)


def estimate(config: dict, costs: dict[str, ModelCosts], assumptions: Assumptions) -> list[dict]:
    """H100-hours per stage of ``config`` from per-model ``costs``, and their total (last row): a training
    job's seeds as lanes, its model's jobs sharing devices as ``chosen_packings`` says; blocks that
    re-linearise at every step at the standard step's cost, all others linearised."""
    training, floor = config["training"], assumptions.step_floor_ms / 1e3
    steps, batch, seeds = training["steps"], training["batch_size"], len(config["seeds"])
    jobs = runs(config)
    packing = chosen_packings(config, costs, assumptions)
    evaluations = steps // training["eval_every"] + 1
    eval_examples = training["eval_train_size"] + CIFAR_TEST_SIZE
    stages: dict[str, dict] = {}

    def add(stage: str, seconds: float, basis: str, packed: str = "") -> None:
        row = stages.setdefault(stage, dict(stage=stage, jobs=0, hours=0.0, packing=packed, basis=basis))
        row["jobs"] += 1
        row["hours"] += seconds / 3600

    companion = workflow.companion_training(config)
    for job in jobs["train"]:
        label, (K, switch_step) = job["model"], record.parse_schedule(job["schedule"])
        cost, packed = costs[label], packing[label]
        if job["variant"] == workflow.COMPANION:  # K = 1, full batches: the standard step at its batch
            auto = workflow.companion_learning_rate(config, label) == record.AUTO_RATE
            add("companion: train (full-batch gradient descent)", companion["steps"] * packed.standard_step
                / (packed.jobs * packed.efficiency) + auto * seeds * AUTO_RATE_PRODUCTS * cost.standard_step
                + seeds * (companion["steps"] // companion["eval_every"] + 1)
                * (companion["eval_train_size"] + CIFAR_TEST_SIZE) * cost.eval_example,
                f"{cost.basis}; evaluation and the auto step's λ_max by FLOPs", packed.describe())
            continue
        standard = relinearising_block_steps(K, switch_step, steps, training["scan_steps"])
        device_share = packed.jobs * packed.efficiency  # the device's time goes to `jobs` jobs at once
        add(f"train {label}", (standard * packed.standard_step + (steps - standard) * packed.linearised_step)
            / device_share, cost.basis, packed.describe())
        lane_gain = cost.lanes.at(seeds)[1] / (seeds * cost.lanes.at(1)[1])  # the job's lanes evaluate together
        add(f"evaluate {label} (in the train jobs)", seeds * evaluations * eval_examples * cost.eval_example * lane_gain,
            "FLOPs, lanes as the job's linearised steps", f"{seeds} lanes a job")
    for job in jobs["measure_ntk"]:
        kernels = sum(distinct_kernels(record.parse_schedule(schedule)[0], training, config["ntk"]["velocity_interval"])
                      for schedule in workflow.ntk_schedules(config, job["variant"]))
        add("NTK", seeds * kernels * costs[job["model"]].ntk_kernel, "FLOPs or measured NTK times",
            "every K and seed of a model a job, in turn")
    for job in jobs.get("measure_ntk_k1", []):
        kernels = distinct_kernels(1, companion, config["ntk"]["velocity_interval"])
        add("companion: NTK", seeds * kernels * costs[job["model"]].ntk_kernel, "FLOPs or measured NTK times",
            "every seed of a model a job, in turn")

    def linearised_step_at(label: str, batch_size: int | None) -> float:
        """A linearised step at another batch size (None: full batch, the CIFAR-10 training set)."""
        return max(floor, costs[label].linearised_step * (batch_size or CIFAR_TRAIN_SIZE) / batch)

    for run in jobs.get("gauss_newton", []):
        label, loss = run["model"], run["loss"]
        options, cost = config["gauss_newton"], costs[label]
        train_size = options["train_size"] or CIFAR_TRAIN_SIZE
        step = linearised_step_at(label, options["batch_size"] or train_size)
        T, periods = options["steps"], options["K"]
        solves = sum(T // K * NEWTON_STEPS[loss] * (min(options["cg_max_iterations"],
                                                        CG_ITERATIONS_PER_SQRT_K * math.sqrt(K)) + 2)
                     for K in periods)  # each Newton step: its CG matvecs, the gradient and J·p, a step's cost each
        evaluations = 2 * len(periods) * (train_size + CIFAR_TEST_SIZE) * cost.eval_example
        kernels = (4 * len(periods) + 1) * cost.ntk_kernel
        add("C5: iterative linearisation and damped Gauss-Newton", len(periods) * T * step + solves * step
            + evaluations + kernels, "FLOPs; CG iterations ≈ 2√K, Newton steps per round as on digits")
    for run in jobs.get("kernel_regression_run", []):
        label, options = run["model"], config["kernel_regression"]
        cost = costs[label]
        compared = len(options["compare_steps"]) + 2  # and the last step, and t → ∞
        add("C6: kernel regression (float64)", assumptions.float64_slowdown * (
            options["steps"] * linearised_step_at(label, options["train_size"])
            + compared * 2 * CIFAR_TEST_SIZE * cost.eval_example)
            + cost.regression_kernels * H100_DENSE_PEAK["fp32"] / H100_DENSE_PEAK["fp64"],
            "FLOPs, float64 at the FP64 tensor-core peak's share")
    rows = list(stages.values())
    job_count = sum(len(listed) for listed in jobs.values())
    rows.append(dict(stage="job overhead", jobs=job_count, hours=job_count * assumptions.job_overhead_s / 3600,
                     packing="", basis=f"assumed {assumptions.job_overhead_s:g} s a job"))
    rows.append(dict(stage="total", jobs=job_count, hours=sum(row["hours"] for row in rows), packing="", basis=""))
    return rows


def without_resnet18(config: dict) -> dict:
    """``config`` without its resnet18 models (and their switch runs)."""
    changed = copy.deepcopy(config)
    changed["models"] = {label: entry for label, entry in config["models"].items() if entry["name"] != "resnet18"}
    changed["switch"]["models"] = [label for label in config["switch"]["models"] if label in changed["models"]]
    return changed


def levers(config: dict, work: dict[str, ModelWork], assumptions: Assumptions) -> list[dict]:
    """The total H100-hours under single changes to the config or the code, and what each saves."""
    costs = {label: model_costs(done, assumptions) for label, done in work.items()}
    total = estimate(config, costs, assumptions)[-1]["hours"]
    fewer_seeds, no_augmentation, fewer_evaluations = (copy.deepcopy(config) for _ in range(3))
    fewer_seeds["seeds"] = config["seeds"][:2]
    fewer_evaluations["training"]["eval_every"] = 5 * config["training"]["eval_every"]
    no_augmentation["variants"] = {name: value for name, value in config["variants"].items() if not value["augment"]}
    no_lane_gain = dataclasses.replace(assumptions, lane_fraction_ceiling=assumptions.training_fraction)
    scenarios = {
        f"compute_dtype: bfloat16 (assumed {assumptions.bf16_speedup:g}x the float32 throughput)":
            estimate(config, {label: model_costs(done, assumptions, bfloat16=True) for label, done in work.items()},
                     assumptions),
        "2 seeds instead of 3": estimate(fewer_seeds, costs, assumptions),
        f"evaluate every {fewer_evaluations['training']['eval_every']} steps": estimate(
            fewer_evaluations, costs, assumptions),
        "base variant only (no augmentation)": estimate(no_augmentation, costs, assumptions),
        "without resnet18": estimate(without_resnet18(config), costs, assumptions),
        "one training job a device (no sharing)": estimate(
            config, costs, dataclasses.replace(assumptions, shared_device_efficiency=0.0)),
        f"lanes gain nothing (every lane at {assumptions.training_fraction:.0%} of the TF32 peak)": estimate(
            config, {label: model_costs(done, no_lane_gain) for label, done in work.items()}, no_lane_gain),
    }
    return [dict(change=change, hours=stages[-1]["hours"], saved=total - stages[-1]["hours"])
            for change, stages in scenarios.items()]


def break_even_fraction(config: dict, work: dict[str, ModelWork], assumptions: Assumptions,
                        budget: float = BUDGET_HOURS, share: str = "training_fraction") -> float | None:
    """The least share of the TF32 peak for the FLOP estimate to fit ``budget`` hours (measured times
    ignored): of one lane's training (``share`` ``training_fraction``) or of each further lane's
    (``lane_fraction_ceiling``), the other assumptions as given; None if even the full peak does not."""
    estimated = {label: done._replace(measured_steps=None, measured_lanes=None) for label, done in work.items()}

    def total(fraction: float) -> float:
        changed = dataclasses.replace(assumptions, **{share: fraction})
        return estimate(config, {label: model_costs(done, changed) for label, done in estimated.items()},
                        changed)[-1]["hours"]

    low, high = 1e-3, 1.0
    if total(high) > budget:
        return None
    for _ in range(40):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if total(middle) > budget else (low, middle)
    return high


def packing_rows(config: dict, costs: dict[str, ModelCosts], assumptions: Assumptions) -> list[dict]:
    """Per priced model, the packings of its training jobs (1, 2, 4, ... jobs a device, and the chosen one)."""
    chosen, rows = chosen_packings(config, costs, assumptions), []
    priced = [job["model"] for job in runs(config)["train"]]
    for label, best in chosen.items():
        for option in packings(costs[label].lanes, len(config["seeds"]), priced.count(label), **sharing(assumptions)):
            if option == best or option.jobs & (option.jobs - 1) == 0:  # powers of two, and the chosen one
                rows.append(dict(model=label, jobs=option.jobs, lanes=option.lanes,
                                 lane_steps_per_s=option.lane_steps_per_s,
                                 device_gb=None if option.device_bytes is None else option.device_bytes / 1e9,
                                 fits="yes" if option.fits else "no", chosen="<-" if option == best else "",
                                 basis=costs[label].lanes.basis))
    return rows


def check_job_counts(config: dict, results: dict | None) -> str:
    """Whether the counted runs match ``snakemake -n``'s job counts in the results file (``dag`` section)."""
    dry_run = (results or {}).get("sections", {}).get("dag", {}).get("jobs")
    if not dry_run:
        return "job counts not checked: no `dag` section in the results file (python -m bench dag)"
    counted = {rule: len(listed) for rule, listed in runs(config).items()}
    differing = {rule: (count, dry_run.get(rule)) for rule, count in counted.items() if dry_run.get(rule) != count}
    if differing:
        return f"WARNING: counted runs differ from snakemake -n (counted, dry run): {differing}"
    return "counted runs match snakemake -n: " + ", ".join(f"{rule} {count}" for rule, count in counted.items())
