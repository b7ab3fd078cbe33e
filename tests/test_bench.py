"""The hot path's promises, asserted with the benchmark suite's own instruments: two block programs
(linearised; re-linearising at every step), compiled once each, serve every schedule (K, switch
step, optimiser reset, seed), a block makes no host transfer and donates the state it is given;
and the pieces of the paper's cost estimate."""

import dataclasses
import json
import math
import sys
from pathlib import Path

import jax
import pytest
import yaml

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))  # bench/ is a folder of the repository, not part of the installed package

from bench import common, compilation, cost, gpu, memory, packing, pipeline, steps  # noqa: E402
from itlin import record, train, workflow  # noqa: E402

TINY_MLP = common.ModelSpec("mlp", "mlp", {"depth": 1, "width": 16}, common.DIGITS_SHAPE)
PUBLISHED_CNN = next(spec for spec in common.config_models(common.paper_config(common.DEFAULT_CONFIG))
                     if spec.label == "mnist1d-cnn")
"""MNIST-1D's published CNN, as the default config gives it."""


@pytest.fixture(scope="module")
def test_config() -> dict:
    return yaml.safe_load((REPOSITORY / "config" / "test.yaml").read_text())


def test_two_block_programs_serve_every_schedule(test_config):
    """The linearised block and the re-linearising block (K = 1) compile once each; every schedule
    reuses them, with no host transfer (the transfer guard would raise) and the parameter and
    optimiser buffers donated."""
    test_config = {**test_config, "K": [1, 10, 100, "inf"]}
    found = compilation.probe(TINY_MLP, batch_size=8, block=2, K=1, seed=0, config=test_config)
    assert len(found["compilations"]) == 2
    assert all("train_step" in name or "scanned" in name for name in found["compilations"])
    assert found["schedules"] == ["K=1", "K=10", "K=100", "K=inf", "switch at step 1", "optimiser reset", "seed 1"]
    assert found["sweep_compilations"] == 0
    assert found["state_donated"]


def test_the_compilation_counter_sees_a_recompilation(test_config):
    """Control for the test above: data of another shape does make the block compile again."""
    trainer = train.Trainer(common.run_config(TINY_MLP, batch_size=8, scan_steps=2, config=test_config),
                            TINY_MLP.create())
    state, schedule = trainer.init_state(), trainer.schedule()
    data = common.synthetic_data(TINY_MLP.input_shape, 32)
    state = jax.block_until_ready(trainer.linearised_block(state, data, schedule))
    larger = common.synthetic_data(TINY_MLP.input_shape, 48)
    with common.CompileLog() as compiled:
        jax.block_until_ready(trainer.linearised_block(state, larger, schedule))
    assert len(compiled.compilations) == 1


def test_transfer_guard_catches_a_host_transfer(test_config):
    """Control for the transfer guard: handing a block NumPy data (a host-to-device copy) raises."""
    trainer = train.Trainer(common.run_config(TINY_MLP, batch_size=8, scan_steps=2, config=test_config),
                            TINY_MLP.create())
    data = common.synthetic_data(TINY_MLP.input_shape, 32)
    on_host = train.TrainData(*jax.device_get(tuple(data)))
    with pytest.raises(Exception, match="host-to-device"), jax.transfer_guard("disallow"):
        trainer.linearised_block(trainer.init_state(), on_host, trainer.schedule())


@pytest.mark.parametrize("K, switch_step, expected", [(1, None, 100), (10, None, 0), (math.inf, None, 0),
                                                      (1, 25, 20), (1, 29, 30), (1, 100, 100)])
def test_steps_in_blocks_that_relinearise_at_every_step(K, switch_step, expected):
    """Blocks of 10 steps: a switch run at t re-linearises at steps 0..t, so a block counts if it ends by t."""
    assert cost.relinearising_block_steps(K, switch_step, 100, 10) == expected


def test_layer_products_are_read_from_the_traced_model_whichever_conv_form():
    """Dense layers: batch x fan_in x fan_out; convolutions: their im2col product, the same in both forms."""
    assert common.layer_products(TINY_MLP.create(), TINY_MLP.input_shape, 4) == [(4, 64, 16), (4, 16, 10)]
    expected = [(2 * 19, 5 * 1, 25), (2 * 10, 3 * 25, 25), (2 * 5, 3 * 25, 25), (2, 5 * 25, 10)]
    for form in ("conv", "matmul"):
        spec = dataclasses.replace(PUBLISHED_CNN, kwargs=PUBLISHED_CNN.kwargs | {"conv_form": form})
        assert common.layer_products(spec.create(), spec.input_shape, 2) == expected


def test_attainable_rate_times_forward_and_both_gradient_products():
    """Per layer three products (forward, input and weight gradients) at their own rates: FLOPs over time."""
    rates = {(2, 3, 4): 1.0, (2, 4, 3): 2.0, (3, 2, 4): 4.0}
    assert common.attainable_rate([(2, 3, 4)], rates) == pytest.approx(3 / (1 + 1 / 2 + 1 / 4))


def test_the_steps_benchmark_reports_its_ceiling(capsys):
    """A step row holds its FLOP rates as fractions of the attainable and the peak matmul rate, and the
    sampling and dispatch costs; ``show_steps`` prints them. Every config's models are listed, at their
    batch sizes, with ``--conv-form`` reaching every convolutional model."""
    from bench import __main__ as suite

    config = common.paper_config()
    products = common.layer_products(PUBLISHED_CNN.create(), PUBLISHED_CNN.input_shape, 8)
    rates = {shape: 1e10 for m, k, n in products for shape in ((m, k, n), (m, n, k), (k, m, n))}  # not measured
    row = steps.measure(PUBLISHED_CNN, batch_size=8, block=1, repeats=1, data_size=32, config=config,
                        peak_flops_per_s=1e11, rates=rates)
    assert row["attainable_gflops"] == pytest.approx(10)
    for name in ("standard", "linearised"):
        assert row[f"{name}_of_attainable"] == pytest.approx(row[f"{name}_gflops"] / row["attainable_gflops"])
        assert row[f"{name}_of_peak"] == pytest.approx(row[f"{name}_gflops"] / 100)
        assert row[f"{name}_gflops"] == pytest.approx(row[f"{name}_flops"] / row[f"{name}_ms"] / 1e6)
    assert row["largest_product"] == "80x75x25" and row["sampling_ms"] > 0 and row["dispatch_ms"] > 0
    suite.show_steps(dict(rows=[row], peak_gflops=100.0, peak_product=[2048] * 3), markdown=True)
    printed = capsys.readouterr().out
    assert "standard of attainable" in printed and "| mnist1d-cnn | 8 |" in printed
    runs = suite.step_runs(suite.parse(["steps"]), config)
    assert [(spec.label, batches) for spec, batches, _ in runs] == [
        ("mnist1d-mlp", [100]), ("mnist1d-cnn", [100]), ("mnist1d-cnn_deep", [100]), ("digits-mlp", [32]),
        ("digits-cnn", [32]), ("digits-cnn_deep", [32]), ("cnn", [32, 128]), ("resnet18-w16", [32, 128])]
    forced = suite.step_runs(suite.parse(["steps", "--conv-form", "matmul"]), config)
    assert [spec.kwargs.get("conv_form") for spec, _, _ in forced] == [None, "matmul", "matmul"] * 2 + ["matmul"] * 2


def test_distinct_kernels_of_a_run():
    """θ_lin at each snapshot and θ at the last, identical parameter vectors counted once."""
    training = {"steps": 100, "scan_steps": 10, "num_snapshots": 4}
    assert record.snapshot_steps(100, 10, 4, 10) == [0, 10, 20, 30, 50, 60, 100]  # velocity pairs t, t + 10
    assert cost.distinct_kernels(math.inf, training, 10) == 2  # θ_lin is θ₀ throughout; θ at step 100
    assert cost.distinct_kernels(1, training, 10) == 7  # θ_lin alone: θ one step earlier (0, 9, 19, 29, 49, 59, 99)
    assert cost.distinct_kernels(10, training, 10) == 7  # θ_lin at 0, 10, 20, 40, 50, 90 (the update before each); θ at 100


def test_runs_are_counted_as_the_pipeline_lists_them(test_config):
    counted = cost.runs(test_config)
    assert len(counted["train"]) == 2 + 1 + 2  # K in {1, inf}, one switch run, the companion's MLP and twin; one seed
    assert counted["measure_ntk"] == [{"dataset": "digits", "model": "mlp", "variant": "base"}]  # every K: one job
    assert [job["model"] for job in counted["measure_ntk_k1"]] == ["mlp1", "mlp1_linear"]
    assert len(counted["gauss_newton"]) == len(test_config["gauss_newton"]["losses"])  # one job per loss and seed
    three_seeds = cost.runs({**test_config, "seeds": [0, 1, 2]})  # seeds are lanes of a training or NTK job
    assert (len(three_seeds["train"]), len(three_seeds["measure_ntk"]), len(three_seeds["measure_ntk_k1"])) == (5, 1, 2)
    assert len(three_seeds["gauss_newton"]) == 3 * len(test_config["gauss_newton"]["losses"])


def lanes_known(standard: tuple, linearised: tuple, device_gb: tuple | None = None) -> packing.LaneCurve:
    """A lane curve at 1, 4, 16, ... lanes: step seconds of every lane, device GB of a job."""
    lanes = tuple(4**power for power in range(len(standard)))
    return packing.LaneCurve(lanes, standard, linearised, device_gb and tuple(1e9 * gb for gb in device_gb), "test")


def test_job_counts_are_read_from_snakemake_output():
    output = ("Building DAG of jobs...\nJob stats:\njob          count\n---------  -------\n"
              "train            3\nall              1\ntotal            4\n\nReasons:\n")
    assert pipeline.job_counts(output) == {"train": 3, "all": 1, "total": 4}


def test_training_hours_price_relinearising_blocks_as_standard_steps(test_config):
    """K = 1 (100 steps), K = ∞ (100) and a switch at 50 (its 5 blocks up to step 49 re-linearise at
    every step): 150 standard steps, 150 linearised. The companion's runs (100 steps, K = 1) at the standard
    step alone, and the twin's step, ``auto`` in test.yaml, at ``AUTO_RATE_PRODUCTS`` standard steps more."""
    costs = {label: cost.ModelCosts(standard_step=1.0, linearised_step=2.0, eval_example=0.0, ntk_kernel=0.0,
                                    regression_kernels=0.0, basis="test", lanes=lanes_known((1.0,), (2.0,)))
             for label in ("mlp", "mlp1", "mlp1_linear")}
    rows = cost.estimate(test_config, costs, cost.Assumptions(step_floor_ms=0.0))
    train_hours = next(row["hours"] for row in rows if row["stage"] == "train mlp")
    assert train_hours == pytest.approx((150 * 1.0 + 150 * 2.0) / 3600)
    companion = next(row for row in rows if row["stage"].startswith("companion: train"))
    assert companion["jobs"] == 2 and companion["hours"] == pytest.approx((2 * 100 + cost.AUTO_RATE_PRODUCTS) / 3600)


def test_seeds_as_lanes_cost_what_a_step_of_every_lane_costs(test_config):
    """Four seeds as lanes of each job: the same 150 standard and 150 linearised steps, each at the 4-lane
    program's time (2 s and 3 s); a lane curve of more lane-steps/s (1.5 s, 2.5 s) prices fewer hours."""
    def train_hours(standard, linearised):
        costs = {label: cost.ModelCosts(standard_step=1.0, linearised_step=2.0, eval_example=0.0, ntk_kernel=0.0,
                                        regression_kernels=0.0, basis="test",
                                        lanes=lanes_known((1.0, standard), (2.0, linearised)))
                 for label in ("mlp", "mlp1", "mlp1_linear")}
        rows = cost.estimate({**test_config, "seeds": [0, 1, 2, 3]}, costs, cost.Assumptions(step_floor_ms=0.0))
        return next(row for row in rows if row["stage"] == "train mlp")

    slower, faster = train_hours(2.0, 3.0), train_hours(1.5, 2.5)
    assert slower["hours"] == pytest.approx((150 * 2.0 + 150 * 3.0) / 3600)
    assert slower["jobs"] == 3 and slower["packing"] == "4 lanes a job, one job a device"  # bytes unknown: no sharing
    assert faster["hours"] < slower["hours"]


def test_the_packing_of_most_lane_steps_that_fits_is_chosen():
    """Jobs of 4 lanes sharing a device, priced at 80% of one program of all their lanes: with 20 GB a job,
    4 jobs (80 GB) exceed 80% of an H100, so 3 are chosen (more lanes, more lane-steps/s); 1 job where sharing
    gains nothing; never more lanes than were measured to fit."""
    curve = lanes_known((1.0, 1.2, 2.0), (1.0, 1.2, 2.0), (6.0, 20.0, 76.0))
    sharing = cost.sharing(cost.Assumptions())
    assert sharing == dict(max_jobs=4, sharing_efficiency=0.8)
    options = packing.packings(curve, 4, 8, **sharing)
    assert [option.jobs for option in options] == [1, 2, 3, 4]  # max_jobs; 16 lanes known at most
    assert [option.fits for option in options] == [True, True, True, False]
    best = packing.best_packing(curve, 4, 8, **sharing)
    assert (best.jobs, best.lanes, best.fits) == (3, 12, True)
    assert best.lane_steps_per_s == pytest.approx(0.8 * 12 / (1.2 + (2.0 - 1.2) * 8 / 12))
    alone = packing.best_packing(curve, 4, 8, max_jobs=4, sharing_efficiency=0.0)
    assert (alone.jobs, alone.lanes) == (1, 4)
    with pytest.raises(ValueError, match="lanes"):
        packing.best_packing(curve, 32, 1, **sharing)  # 32 lanes: more than the 16 measured to fit


def test_lanes_measured_on_a_gpu_replace_the_assumed_lanes():
    """The ``gpu`` section's lane rows at the config's batch that fit (64 lanes did not) give the lane curve: step
    seconds, and the job's bytes from the larger planned block program and the evaluation set."""
    spec = common.ModelSpec("cnn", "cnn", {"depth": 4, "width": 64})
    config = {"training": {"batch_size": 128, "eval_train_size": 10_000}}
    lanes = [dict(lanes=count, batch=128, fits=True, standard_ms=count * 0.2, linearised_ms=count * 0.3,
                  standard_planned_gb=count * 0.5, linearised_planned_gb=count * 0.6) for count in (1, 4, 16)]
    lanes.append(dict(lanes=64, batch=128, fits=False, reason="RESOURCE_EXHAUSTED"))
    row = dict(model="cnn", architecture="cnn", kwargs={"depth": 4, "width": 64}, input_shape=[32, 32, 3], lanes=lanes)
    results = {"device": {"platform": "gpu"}, "sections": {"gpu": {"smoke": False, "rows": [row]}}}
    curve = cost.measured_lanes(results, spec, config)
    assert curve.lanes == (1, 4, 16)
    assert curve.linearised_step == pytest.approx((0.3e-3, 1.2e-3, 4.8e-3))
    eval_set = (4 * 32 * 32 * 3 + 4) * 20_000
    assert curve.device_bytes == pytest.approx(tuple(1e9 * 0.6 * count + eval_set for count in (1, 4, 16)))
    assert curve.at(10)[1] == pytest.approx(3.0e-3)  # linear between 4 and 16 lanes
    results["sections"]["gpu"]["smoke"] = True
    assert cost.measured_lanes(results, spec, config) is None


def test_measured_step_and_ntk_times_replace_flop_estimates():
    spec = common.ModelSpec("resnet18", "resnet18", {"width": 64})
    row = dict(architecture="resnet18", kwargs={"width": 64}, batch=128, input_shape=[32, 32, 3],
               standard_ms=10.0, linearised_ms=16.0)
    results = {"device": {"platform": "gpu"},
               "sections": {"steps": {"rows": [row]},
                            "ntk": {"kwargs": {"width": 64}, "input_shape": [32, 32, 3],
                                    "rows": [dict(n=100, seconds=1.0), dict(n=1000, seconds=40.0)]}}}
    assert cost.measured_steps(results, spec, 128) == row
    assert cost.measured_steps(results, spec, 256) is None  # another batch size
    assert cost.measured_steps(results | {"device": {"platform": "cpu"}}, spec, 128) is None  # not a GPU
    work = cost.ModelWork(standard_step=1e12, linearised_step=2e12, eval_example=0.0, ntk_kernel=1e12,
                          regression_kernels=0.0, measured_steps=row,
                          measured_ntk_s=cost.measured_ntk_seconds(results, spec, 500), measured_lanes=None,
                          lane_bytes=None)
    assumptions = cost.Assumptions()
    measured = cost.model_costs(work, assumptions)
    assert (measured.standard_step, measured.linearised_step) == (0.010, 0.016)
    assert measured.ntk_kernel == pytest.approx(40.0 * (500 / 1000) ** 2)
    estimated = cost.model_costs(work._replace(measured_steps=None, measured_ntk_s=None), assumptions)
    assert estimated.standard_step == pytest.approx(1e12 / assumptions.training_flops_per_s)
    assert estimated.ntk_kernel == pytest.approx(1e12 / assumptions.ntk_flops_per_s)
    # Lanes as assumed: the first at the one-lane time, each further one its FLOPs at the ceiling share (30%: half).
    assert estimated.lanes.at(3)[1] == pytest.approx(estimated.linearised_step * (1 + 2 * 0.15 / 0.30))


def test_program_bytes_counts_arguments_outputs_temporaries_and_donation():
    """XLA's plan of x ↦ x + 1 on 1M floats: argument and output, 4 MB each; a donated argument is
    the output's buffer (4 MB in all); lowered from abstract shapes, nothing allocated."""
    x = jax.ShapeDtypeStruct((1_000_000,), "float32")
    assert memory.program_bytes(jax.jit(lambda v: v + 1).lower(x)) == 8_000_000
    assert memory.program_bytes(jax.jit(lambda v: v + 1, donate_argnums=0).lower(x)) == 4_000_000


@pytest.mark.slow
def test_every_gpu_job_of_the_paper_fits_an_h100_and_its_mem_mb():
    """Every GPU job of config/paper.yaml (training blocks of every seed as lanes, scanned at batch 128, and
    evaluation, NTK at the configured probe size and chunking, Gauss-Newton at its batch, kernel regression; the
    companion's training at its full batch and NTK, its deep linear twins' too): XLA's planned
    peak within memory.MARGIN of an 80 GB H100; each model's mem_mb at least what its jobs' host arrays
    need."""
    config = common.paper_config()
    planned = memory.plan(config)
    expected = {("train", label) for label in config["models"]} | {("measure_ntk", label) for label in config["models"]}
    expected |= {(stage, label) for stage in ("gauss_newton", "kernel_regression") for label in config[stage]["models"]}
    expected |= {(stage + memory.COMPANION, label) for stage in ("train", "measure_ntk")
                 for label in [*config["companion"]["models"], *workflow.twins(config)]}
    assert {(job["stage"], job["model"]) for job in planned["jobs"]} == expected
    for job in planned["jobs"]:
        assert job["peak_gb"] * 1e9 <= memory.MARGIN * packing.H100_MEMORY_BYTES, job
        assert job["mem_mb"] >= job["mem_mb_needed"], job


def test_the_gpu_script_runs_at_smoke_sizes(tmp_path):
    """``python -m bench gpu --smoke``: every stage of the first GPU run at tiny sizes (the cnn), the
    projected hours and the results file; without ``--smoke`` a CPU is refused."""
    from bench import __main__ as suite

    with pytest.raises(SystemExit):
        suite.parse(["gpu"])
    results = tmp_path / "smoke.json"
    assert suite.main(["gpu", "--smoke", "--results", str(results)]) == 0
    section = json.loads(results.read_text())["sections"]["gpu"]
    assert section["smoke"]
    assert [row["model"] for row in section["rows"]] == list(gpu.SMOKE.models)
    for row in section["rows"]:
        for key in ("standard_ms", "linearised_ms", "ntk_s", "gauss_newton_s", "regression_s", "test_kernel_s"):
            assert row[key] > 0, key
        assert [lane["lanes"] for lane in row["lanes"]] == list(gpu.SMOKE.lanes)
        for lane in row["lanes"]:
            assert lane["fits"] and lane["peak_gb"] is None  # the CPU reports no device peak
            for program in ("standard", "linearised"):
                assert lane[f"{program}_lane_steps_per_s"] == pytest.approx(
                    lane["lanes"] * lane["scan_steps"] / (lane[f"{program}_block_ms"] / 1e3))
                assert lane[f"{program}_compile_s"] > 0 and lane[f"{program}_planned_gb"] > 0
        assert row["lanes"][1]["linearised_planned_gb"] > row["lanes"][0]["linearised_planned_gb"]
    assert section["projection"]["stages"][-1]["stage"] == "total" and section["projection"]["total_hours"] > 0


SMALL = gpu.Sizes(blocks=1, lanes=(1, 2), data_size=32, scan_steps=2, batch_size=8)


def test_lanes_the_device_cannot_hold_do_not_fit(test_config, monkeypatch):
    """A lane count whose planned bytes exceed the device's limit is recorded as not fitting and ends the lanes."""
    monkeypatch.setattr(gpu, "device_bytes_limit", lambda: 1)
    rows = gpu.lane_rows(TINY_MLP, test_config, SMALL, log=lambda line: None)
    assert len(rows) == 1 and not rows[0]["fits"] and "planned" in rows[0]["reason"]


def test_an_out_of_memory_error_is_recorded_as_not_fitting(test_config, monkeypatch):
    """XLA's resource-exhausted error while a block runs: the lane count does not fit, and the lanes end there;
    any other error is raised."""
    class Exhausted(gpu.CarriedBlock):
        def __call__(self):
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1 bytes.")

    monkeypatch.setattr(gpu, "CarriedBlock", Exhausted)
    rows = gpu.lane_rows(TINY_MLP, test_config, SMALL, log=lambda line: None)
    assert len(rows) == 1 and not rows[0]["fits"] and rows[0]["reason"].startswith("RESOURCE_EXHAUSTED")
    assert not gpu.out_of_memory(jax.errors.JaxRuntimeError("INTERNAL: something else"))


def test_the_gpu_sections_times_price_the_paper_unless_smoke():
    """``python -m bench cost`` takes the step and NTK times of a GPU results file's ``gpu`` section
    (``python -m bench gpu``), but never those of its smoke form."""
    spec = common.ModelSpec("cnn", "cnn", {"depth": 4, "width": 64})
    row = dict(model="cnn", architecture="cnn", kwargs={"depth": 4, "width": 64}, input_shape=[32, 32, 3], batch=128,
               standard_ms=1.0, linearised_ms=1.5, ntk_n=100, ntk_s=2.0)
    results = {"device": {"platform": "gpu"}, "sections": {"gpu": {"smoke": False, "rows": [row]}}}
    assert cost.measured_steps(results, spec, 128) == row
    assert cost.measured_ntk_seconds(results, spec, 500) == pytest.approx(2.0 * 25)
    results["sections"]["gpu"]["smoke"] = True
    assert cost.measured_steps(results, spec, 128) is None and cost.measured_ntk_seconds(results, spec, 500) is None
