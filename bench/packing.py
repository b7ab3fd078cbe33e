"""How a model's training jobs share a device: a job trains its seeds as lanes of one program, and several
jobs may run on one device; the step time and memory against lanes (``LaneCurve``, measured by ``python -m
bench gpu`` or assumed by ``bench.cost``) price each way (``Packing``), and the one of most lane-steps/s
within an H100's memory is chosen."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

H100_MEMORY_BYTES = 80e9
MARGIN = 0.8
"""What a device may plan to hold: this share of an 80 GB H100 (the rest for what XLA's plan leaves out)."""


class LaneCurve(NamedTuple):
    """A training job's block programs against the lanes (seeds) in one program: seconds of one step of every
    lane, standard and linearised, and the job's device bytes (None: unknown), at each lane count known."""

    lanes: tuple[int, ...]  # ascending
    standard_step: tuple[float, ...]
    linearised_step: tuple[float, ...]
    device_bytes: tuple[float, ...] | None
    basis: str

    def at(self, lanes: int) -> tuple[float, float, float | None]:
        """(standard, linearised, bytes) at ``lanes``, linear between the lane counts known (step time is
        close to affine in the lanes); a lane count beyond the largest known is an error."""
        if not self.lanes[0] <= lanes <= self.lanes[-1]:
            raise ValueError(f"lanes: {lanes} is outside the lane counts known ({self.lanes[0]} to {self.lanes[-1]})")
        values = [np.interp(lanes, self.lanes, curve) for curve in (self.standard_step, self.linearised_step)]
        memory = float(np.interp(lanes, self.lanes, self.device_bytes)) if self.device_bytes else None
        return float(values[0]), float(values[1]), memory


class Packing(NamedTuple):
    """How a model's training jobs share a device: ``jobs`` jobs (processes) of ``lanes // jobs`` lanes each,
    priced as one program of ``lanes`` lanes at ``efficiency`` of its throughput."""

    jobs: int
    lanes: int
    standard_step: float  # seconds of one step of every lane on the device
    linearised_step: float
    efficiency: float
    device_bytes: float | None  # planned, all the jobs together (None: unknown)

    @property
    def lane_steps_per_s(self) -> float:
        """Lane-steps a second of the linearised program (most of the paper's steps), all jobs together."""
        return self.efficiency * self.lanes / self.linearised_step

    @property
    def fits(self) -> bool:
        """Within ``MARGIN`` of an H100; a single job whose bytes are unknown is taken to fit (``bench memory``)."""
        if self.device_bytes is None:
            return self.jobs == 1
        return self.device_bytes <= MARGIN * H100_MEMORY_BYTES

    def describe(self) -> str:
        lanes = self.lanes // self.jobs
        return f"{lanes} lanes a job, " + (f"{self.jobs} jobs a device" if self.jobs > 1 else "one job a device")


def packings(curve: LaneCurve, seeds: int, jobs: int, *, max_jobs: int, sharing_efficiency: float) -> list[Packing]:
    """Every way of sharing a device among 1 to ``jobs`` (at most ``max_jobs``) training jobs of ``seeds`` lanes,
    up to the lanes ``curve`` knows; several jobs priced at ``sharing_efficiency`` of one program of their lanes."""
    found = []
    _, _, job_bytes = curve.at(seeds)
    for count in range(1, min(jobs, max_jobs) + 1):
        if count * seeds > curve.lanes[-1]:
            break
        standard, linearised, _ = curve.at(count * seeds)
        efficiency = 1.0 if count == 1 else sharing_efficiency
        found.append(Packing(count, count * seeds, standard, linearised, efficiency,
                             None if job_bytes is None else count * job_bytes))
    return found


def best_packing(curve: LaneCurve, seeds: int, jobs: int, *, max_jobs: int, sharing_efficiency: float) -> Packing:
    """The packing of most lane-steps/s that fits (``packings``); one job a device if none is known to fit."""
    options = packings(curve, seeds, jobs, max_jobs=max_jobs, sharing_efficiency=sharing_efficiency)
    if not options:
        raise ValueError(f"{seeds} lanes: more than the {curve.lanes[-1]} a device is known to hold")
    fitting = [option for option in options if option.fits] or options[:1]
    return max(fitting, key=lambda option: option.lane_steps_per_s)
