"""Run the benchmark suite and record it in ``bench/results/<device>.json``.

    python -m bench                      # every benchmark, sized for a CPU (30 to 40 min on 2 cores)
    python -m bench --skip pipeline      # all but the default pipeline's end-to-end run
    python -m bench --full               # sized for a GPU: the paper's models at full width, batch 128
    python -m bench steps ntk --full     # some benchmarks (each rewrites its own section of the file)
    python -m bench cost                 # the paper's H100-hours (uses a GPU results file if there is one)
    python -m bench memory               # the planned device and host memory of every GPU job of the paper
    python -m bench gpu                  # on a GPU: the paper's programs timed, the H100-hours projected
    python -m bench gpu --smoke          # the same at tiny sizes, on any machine
    python -m bench report --markdown    # print the tables of a results file again

Benchmarks: ``steps`` (linearised against standard step, their FLOP rates against the matmul ceiling, K = 1
against a plain Flax step), ``compile``
(compile time, two block programs for every K, no host transfer, donation, the persistent cache across
jobs), ``ntk`` (NTK throughput), ``dag`` (DAG build time of config/paper.yaml), ``pipeline`` (the
default pipeline end to end, in a temporary copy), ``cost`` (the paper's GPU-hours), ``memory`` (the
planned memory of every GPU job of the paper), ``gpu`` (only when named: the first run on a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import jax

from bench import common, compilation, cost, gpu, memory, ntk, pipeline, steps
from itlin import models

BENCHMARKS = ("steps", "compile", "ntk", "dag", "pipeline", "cost", "memory", "gpu")
ON_REQUEST = ("gpu",)
"""Run only when named: ``gpu`` takes the paper's sizes, for an accelerator (``--smoke``: tiny sizes)."""
CPU_SIZES = dict(batch=[32, 128], block=2, repeats=3, data_size=1024, resnet_width=16, compile_batch=16,
                 compile_block=2, ntk_n=[20], ntk_width=16)
GPU_SIZES = dict(batch=[128], block=None, repeats=5, data_size=50_000, resnet_width=None, compile_batch=128,
                 compile_block=None, ntk_n=[100, 500, 1000], ntk_width=64)
"""``--full``: the paper's models on CIFAR-sized data; blocks of the paper's ``scan_steps`` (None)."""
DIGITS_MLP = common.ModelSpec("mlp", "mlp", {"depth": 2, "width": 128}, common.DIGITS_SHAPE)
"""The digits config's MLP on its 8x8 digits: the CPU suite's smallest model."""


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with the sizes of ``--full`` or of a CPU filled in where not given."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                        help=f"what to run, of {', '.join(BENCHMARKS)} (default: all) or report")
    parser.add_argument("--skip", nargs="+", choices=BENCHMARKS, default=[], help="benchmarks to leave out")
    parser.add_argument("--full", action="store_true", help="GPU sizes: paper models at full width (see GPU_SIZES)")
    parser.add_argument("--batch", type=int, nargs="+", help="steps: batch sizes")
    parser.add_argument("--block", type=int, help="steps: steps per timed block (with --full: the paper's scan_steps)")
    parser.add_argument("--repeats", type=int, help="steps: timed blocks per variant")
    parser.add_argument("--data-size", type=int, help="steps: synthetic training examples on the device")
    parser.add_argument("--resnet-width", type=int, help="steps, compile: resnet18 width (paper: 64)")
    parser.add_argument("--compile-batch", type=int, help="compile: batch size of the probed runs")
    parser.add_argument("--compile-block", type=int, help="compile: steps per block (default with --full: the "
                                                          "paper's scan_steps)")
    parser.add_argument("--conv-form", choices=models.CONV_FORMS,
                        help="steps: how every convolution is computed (default: each model's own, auto)")
    parser.add_argument("--bfloat16", action="store_true",
                        help="steps: also time resnet18 with compute_dtype bfloat16 (on by default with --full)")
    parser.add_argument("--ntk-n", type=int, nargs="+", help="ntk: probe-set sizes")
    parser.add_argument("--ntk-width", type=int, help="ntk: resnet18 width")
    parser.add_argument("--ntk-strategies", nargs="+", default=["jacobian", "ntk_vector"],
                        help="ntk: strategies compared at the smallest size")
    parser.add_argument("--cores", default="all", help="pipeline: snakemake --cores")
    parser.add_argument("--config", type=Path, default=common.PAPER_CONFIG, help="the paper config (models, training)")
    parser.add_argument("--results", type=Path, help="results file to write (default bench/results/<device>.json)")
    parser.add_argument("--measured", type=Path,
                        help="cost: a GPU results file whose step times replace FLOP estimates "
                             "(default: bench/results/*h100*.json if there is one)")
    parser.add_argument("--smoke", action="store_true", help="gpu: every stage at tiny sizes (bench.gpu.SMOKE), "
                                                             "to check on any machine that the script runs")
    parser.add_argument("--lanes", type=int, nargs="+",
                        help="gpu: lane counts of the training blocks (default 1 4 16 64; with --smoke 1 2)")
    parser.add_argument("--markdown", action="store_true", help="print tables as Markdown")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.benchmarks) - {*BENCHMARKS, "report"})
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)} or report")
    sizes = GPU_SIZES if args.full else CPU_SIZES
    for key, value in sizes.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.bfloat16 = args.bfloat16 or args.full
    args.benchmarks = [name for name in (args.benchmarks or [name for name in BENCHMARKS if name not in ON_REQUEST])
                       if name not in args.skip]
    if "gpu" in args.benchmarks and not args.smoke and jax.default_backend() == "cpu":
        parser.error("gpu takes the paper's sizes and needs an accelerator; --smoke runs it at tiny sizes on the CPU")
    return args


def step_specs(args, config: dict) -> list[common.ModelSpec]:
    """The models the steps and compile benchmarks run: the paper's (resnet18 at ``--resnet-width``),
    resnet18 in bfloat16 with ``--bfloat16``, and on a CPU also the digits config's MLP."""
    specs = common.paper_models(config, resnet_width=args.resnet_width)
    if args.bfloat16:
        specs += [spec for spec in common.paper_models(config, resnet_width=args.resnet_width,
                                                       compute_dtype="bfloat16") if spec.name == "resnet18"]
    return specs if args.full else [DIGITS_MLP, *specs]


def step_runs(args, config: dict) -> list[tuple[common.ModelSpec, list[int], dict]]:
    """What the steps benchmark times: (model, batch sizes, the config of its training settings). The
    default (MNIST-1D) config's models at its batch size; on a CPU also the digits config's; then the paper's
    models at ``--batch`` (and in bfloat16 with ``--bfloat16``). ``--conv-form`` sets how the convolutional
    models compute their convolutions."""
    small = [common.DEFAULT_CONFIG] + ([] if args.full else [common.DIGITS_CONFIG])
    runs = [(spec, [settings["training"]["batch_size"]], settings)
            for settings in map(common.paper_config, small) for spec in common.config_models(settings)]
    runs += [(spec, args.batch, config) for spec in step_specs(args, config) if spec is not DIGITS_MLP]
    if args.conv_form:
        runs = [(dataclasses.replace(spec, kwargs=spec.kwargs | {"conv_form": args.conv_form})
                 if spec.name != "mlp" else spec, batches, settings) for spec, batches, settings in runs]
    return runs


def show(title: str, rows: list[dict], columns, markdown: bool) -> None:
    """Print a titled table."""
    print(f"\n{title}\n{common.format_table(rows, columns, markdown)}", flush=True)


def run_steps(args, config: dict) -> dict:
    """The ``steps`` section: the machine's peak matmul rate, then one row per model and batch size."""
    peak, rates, rows = common.matmul_rate(*common.PEAK_PRODUCT), {}, []
    print(f"  float32 matmul {'x'.join(map(str, common.PEAK_PRODUCT))}: {peak / 1e9:.1f} GFLOP/s", flush=True)
    for spec, batches, settings in step_runs(args, config):
        for batch in batches:
            rows.append(steps.measure(spec, batch_size=batch, block=args.block or settings["training"]["scan_steps"],
                                      repeats=args.repeats, data_size=args.data_size, config=settings,
                                      peak_flops_per_s=peak, rates=rates))
            row = rows[-1]
            print(f"  {spec.label} batch {batch}: standard (K=1) {row['standard_ms']:.2f} ms, linearised "
                  f"{row['linearised_ms']:.2f} ms, plain {row['plain_ms']:.2f} ms; of attainable "
                  f"{row['standard_of_attainable']:.2f} / {row['linearised_of_attainable']:.2f}", flush=True)
    return dict(rows=rows, peak_gflops=peak / 1e9, peak_product=list(common.PEAK_PRODUCT))


def show_steps(section: dict, markdown: bool) -> None:
    """Print the ``steps`` tables."""
    show("Linearised step against standard step (time ratio within 10% of the FLOP ratio: time/FLOP <= 1.10)",
         section["rows"], steps.LINEAR_TABLE, markdown)
    if "peak_gflops" in section:
        show(f"Achieved FLOP rate of each step as a fraction of the float32 matmul rate of its own layers' products "
             f"(attainable; goal >= 0.5) and of a {'x'.join(map(str, section['peak_product']))} product (peak, "
             f"{section['peak_gflops']:.1f} GFLOP/s)", section["rows"], steps.CEILING_TABLE, markdown)
    show("Standard training (K = 1) against a plain Flax NNX + optax step (ours/plain >= 1)",
         section["rows"], steps.PLAIN_TABLE, markdown)


def run_compile(args, config: dict) -> dict:
    """The ``compile`` section: one row per float32 model."""
    block = args.compile_block or config["training"]["scan_steps"]
    rows = []
    for spec in step_specs(args, config):
        if "compute_dtype" not in spec.kwargs:
            rows.append(compilation.measure(spec, batch_size=args.compile_batch, block=block, config_path=args.config))
    return dict(rows=rows)


def show_compile(section: dict, markdown: bool) -> None:
    """Print the ``compile`` table."""
    show("Compilation: a fresh process per run, sharing one persistent cache; every schedule in one process",
         section["rows"], compilation.TABLE, markdown)


def run_ntk(args, config: dict) -> dict:
    """The ``ntk`` section: the paper's resnet18 at ``--ntk-width``."""
    resnet = next(spec for spec in common.paper_models(config, resnet_width=args.ntk_width) if spec.name == "resnet18")
    return ntk.measure(resnet, sizes=args.ntk_n, strategies=args.ntk_strategies)


def show_ntk(section: dict, markdown: bool) -> None:
    """Print the ``ntk`` table."""
    agreement = section["strategies_agree_to"]
    show(f"Trace NTK of {section['model']} ({section['params']:,} parameters, "
         f"{section['forward_mflop_per_example']:.1f} MFLOP forward per example)"
         + (f"; strategies agree to {agreement:.1e}" if agreement is not None else ""),
         section["rows"], ntk.TABLE, markdown)


def run_dag(args, config: dict) -> dict:
    """The ``dag`` section: ``snakemake -n`` of ``--config``."""
    return pipeline.dag(_relative(args.config))


def show_dag(section: dict, markdown: bool) -> None:
    """Print the ``dag`` result."""
    print(f"\nDAG of `{section['command']}`: {section['seconds']:.1f} s for {section['jobs']['total']} jobs")


def run_pipeline(args, config: dict) -> dict:
    """The ``pipeline`` section: the default pipeline in a temporary copy."""
    return pipeline.default_pipeline(args.cores)


def show_pipeline(section: dict, markdown: bool) -> None:
    """Print the ``pipeline`` result."""
    print(f"\nDefault pipeline `{section['command']}` from a fresh copy: {section['seconds'] / 60:.1f} min "
          f"for {section['jobs']['total']} jobs on {section['cores']} cores")


def run_cost(args, config: dict) -> dict:
    """The ``cost`` section: H100-hours of ``--config`` per stage, the single changes, the break-even throughput."""
    measured_path = args.measured or next(iter(sorted(common.RESULTS.glob("*h100*.json"))), None)
    measured = json.loads(measured_path.read_text()) if measured_path else None
    dry_run = json.loads(args.results.read_text()) if args.results.exists() else None
    assumptions = cost.Assumptions()
    planned = next((found["sections"]["memory"] for found in (measured, dry_run) if found and "memory" in found["sections"]),
                   None)
    work = cost.priced_work(config, common.paper_models(config), measured, planned)
    costs = {label: cost.model_costs(done, assumptions) for label, done in work.items()}
    stages = cost.estimate(config, costs, assumptions)
    fraction = cost.break_even_fraction(config, work, assumptions)
    lane_fraction = cost.break_even_fraction(config, work, assumptions, share="lane_fraction_ceiling")
    return dict(config=_relative(args.config), measured=_relative(measured_path) if measured_path else None,
                assumptions=vars(assumptions) | {"training_tflops": assumptions.training_flops_per_s / 1e12,
                                                 "ntk_tflops": assumptions.ntk_flops_per_s / 1e12},
                models=[dict(model=label, standard_ms=1e3 * c.standard_step, linearised_ms=1e3 * c.linearised_step,
                             ntk_s=c.ntk_kernel, basis=c.basis,
                             standard_gflop=work[label].standard_step / 1e9,
                             linearised_gflop=work[label].linearised_step / 1e9)
                        for label, c in costs.items()],
                packings=cost.packing_rows(config, costs, assumptions), planned_memory=("a job's planned peak from the `memory` section, shared data and the rest per lane" if planned
                                else "unknown: one job a device"),
                stages=stages, levers=cost.levers(config, work, assumptions), budget_hours=cost.BUDGET_HOURS,
                break_even_training_fraction=fraction, break_even_lane_fraction=lane_fraction, job_counts=cost.check_job_counts(config, dry_run))


def show_cost(section: dict, markdown: bool) -> None:
    """Print the ``cost`` tables and the verdict on the budget."""
    assumed = section["assumptions"]
    print(f"\nEstimated H100-hours of {section['config']} (training at {assumed['training_tflops']:.0f} TFLOP/s "
          f"sustained = {assumed['training_fraction']:.0%} of the dense TF32 peak; NTK at {assumed['ntk_tflops']:.0f} "
          f"TFLOP/s; each lane beyond a job's first at {assumed['lane_fraction_ceiling']:.0%} of the TF32 peak; steps at "
          f"least {assumed['step_floor_ms']} ms; {assumed['job_overhead_s']:.0f} s a job"
          + (f"; measured times from {section['measured']}" if section["measured"] else "; no GPU measurement yet")
          + f")\n{section['job_counts']}")
    show("Per-step and per-kernel costs (one lane)", section["models"], cost.COSTS_TABLE, markdown)
    show(f"Packing of the training jobs: each job's seeds as lanes of one program; several jobs on a device priced "
         f"at {assumed['shared_device_efficiency']:.0%} of one program of all their lanes; device bytes as XLA "
         f"planned the lanes measured on a GPU, else {section['planned_memory']}",
         section["packings"], cost.PACKING_TABLE, markdown)
    show("Per stage", section["stages"], cost.STAGES_TABLE, markdown)
    total, budget = section["stages"][-1]["hours"], section["budget_hours"]
    show(f"Single changes (goal: at most {budget:g} H100-hours; estimate as configured: {total:,.1f})",
         section["levers"], cost.LEVERS_TABLE, markdown)
    fraction, lane_fraction = section["break_even_training_fraction"], section["break_even_lane_fraction"]
    peak = cost.H100_DENSE_PEAK["tf32"] / 1e12
    print(f"{budget:g} H100-hours " + ("are met." if total <= budget else "are not met.")
          + (f" The FLOP estimate fits them if one lane sustains {fraction:.1%} of the TF32 peak "
             f"({fraction * peak:.0f} TFLOP/s), lanes as assumed" if fraction else " Not even at the full TF32 peak")
          + (f"; or if each further lane adds its FLOPs at {lane_fraction:.1%} ({lane_fraction * peak:.0f} TFLOP/s), "
             "one lane as assumed." if lane_fraction else "."))


def run_memory(args, config: dict) -> dict:
    """The ``memory`` section: the planned device and host memory of every GPU job of ``--config``."""
    return memory.plan(config) | dict(config=_relative(args.config))


def show_memory(section: dict, markdown: bool) -> None:
    """Print the ``memory`` tables and whether every job fits an H100 with the margin."""
    show(f"Device memory of {section['config']}'s GPU jobs as XLA plans their programs ({section['backend']} "
         "backend)", section["rows"], memory.TABLE, markdown)
    show(f"Per job: planned device peak; host arrays and the mem_mb they need (x{section['host_headroom']:g}, "
         f"with {section['runtime_host_gb']:g} GB for the process itself)", section["jobs"], memory.JOBS_TABLE, markdown)
    fits = all(job["fits"] for job in section["jobs"])
    print(f"Largest planned peak {section['largest_peak_gb']:.1f} GB: "
          + ("every job fits" if fits else "NOT every job fits")
          + f" within {section['margin']:.0%} of an {section['h100_gb']:g} GB H100, and within the "
            f"{section['preallocated_gb']:g} GB JAX reserves by default.")


def run_gpu(args, config: dict) -> dict:
    """The ``gpu`` section: every program of the paper per model, timed, and the projected H100-hours."""
    sizes = gpu.SMOKE if args.smoke else gpu.Sizes()
    if args.lanes:
        sizes = dataclasses.replace(sizes, lanes=tuple(sorted(args.lanes)))
    return gpu.measure(config, sizes, log=lambda line: print(line, flush=True))


def show_gpu(section: dict, markdown: bool) -> None:
    """Print the ``gpu`` tables: per-model times and memory, the projected H100-hours."""
    smoke = " (SMOKE sizes: not a measurement)" if section["smoke"] else ""
    show("Training blocks against lanes (seeds in one program, scanned): lane-steps/s, ms a block (median of the "
         "timed blocks), compile s, XLA's planned GB of the larger program, the device's high-water mark after them "
         "(process-wide; none on a CPU)" + smoke, gpu.lane_table(section["rows"]), gpu.LANES_TABLE, markdown)
    show("Per model: step ms of one lane, NTK, Gauss-Newton and kernel regression s" + smoke, section["rows"],
         gpu.TABLE, markdown)
    show("H100-hours projected from these times (bench.cost)", section["projection"]["stages"], cost.STAGES_TABLE,
         markdown)
    print(f"Took {section['seconds']:.0f} s; maximum resident host memory {section['max_rss_gb']:.1f} GB.")


RUNNERS = {"steps": (run_steps, show_steps), "compile": (run_compile, show_compile), "ntk": (run_ntk, show_ntk),
           "dag": (run_dag, show_dag), "pipeline": (run_pipeline, show_pipeline), "cost": (run_cost, show_cost),
           "memory": (run_memory, show_memory), "gpu": (run_gpu, show_gpu)}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks, recording each section as it finishes (or print a results file)."""
    args = parse(argv)
    args.results = args.results or common.results_path()
    if "report" in args.benchmarks:
        stored = json.loads(args.results.read_text())
        print(f"{args.results}: {stored['device']}, jax {stored['versions']['jax']}")
        for name, section in stored["sections"].items():
            print(f"\n[{name}, measured {section['date']}]")
            RUNNERS[name][1](section, args.markdown)
        return 0
    config = common.paper_config(args.config)
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}; results -> {args.results}")
    for name in args.benchmarks:
        print(f"\n== {name}", flush=True)
        run, display = RUNNERS[name]
        section = run(args, config)
        common.store(name, section | {"arguments": {key: _plain(value) for key, value in vars(args).items()}},
                      args.results)
        display(section, args.markdown)
    return 0


def _relative(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it (results files travel between machines)."""
    path = Path(path).resolve()
    return str(path.relative_to(common.REPOSITORY)) if path.is_relative_to(common.REPOSITORY) else str(path)


def _plain(value):
    """A command-line value as JSON can hold it."""
    if isinstance(value, Path):
        return _relative(value)
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value


if __name__ == "__main__":
    sys.exit(main())
