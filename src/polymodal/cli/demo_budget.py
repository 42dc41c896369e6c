"""The demo's time budget: its steps scaled to this machine's measured speed instead of overrunning.

Each job's cost per step and its evaluation were measured on a reference machine in each precision
(``demo_reference.json``). Before the first job, this machine's matmul rate in the chosen precision against the
reference's gives a first estimate of how much slower (or faster) it is; after each job the measured time
replaces the estimate. Every job gets the steps the remaining budget can hold, at most the demo's own; a job that
judges the others (a scene checker, the CLIP model of the CLIP score) keeps all of its steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFERENCE_FILE = Path(__file__).with_name("demo_reference.json")
# Plan to this share of the budget: start-up, the report and the machine's variance take the rest.
PLAN_SHARE = 0.92
# No job is cut below this share of its steps: a model trained for less says nothing.
MIN_SCALE = 0.2


def load_reference(path: Path = REFERENCE_FILE) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class PlannedJob:
    label: str  # clip, caption, vqa, fusion-gmu, ...
    steps: int  # the demo's own steps for this job
    judge: bool = False  # it scores other jobs' models: never cut, as a judge trained for less would misjudge them

    @property
    def kind(self) -> str:
        return self.label.split("-")[0]


@dataclass
class DemoBudget:
    """``steps_for(job)`` before each job, ``finished(job, steps, seconds)`` after it."""

    seconds: float  # the whole demo's budget, counted from ``started``; 0: no budget (the demo's own steps)
    jobs: list[PlannedJob]
    precision: str  # fp32 or bf16: whose reference costs apply
    reference: dict[str, Any]
    measured_gflops: float  # this machine's matmul rate in ``precision`` now
    started: float = field(default_factory=time.perf_counter)
    clock: Callable[[], float] = time.perf_counter
    done: list[tuple[PlannedJob, int, float]] = field(default_factory=list)  # (job, steps run, seconds taken)
    scales: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        costs = self.reference["precisions"].get(self.precision) or self.reference["precisions"]["fp32"]
        self.costs = costs
        # First estimate: compute-bound work runs at the ratio of matmul rates (none without a budget: not measured).
        self.estimated_slowdown = costs["matmul_gflops"] / self.measured_gflops if self.measured_gflops > 0 else None

    def _predicted(self, job: PlannedJob, steps: int) -> float:
        """Seconds for ``job`` at ``steps`` on the reference machine: training plus evaluation."""
        key = self._key(job)
        return self.costs["seconds_per_step"][key] * steps + self.costs["eval_seconds"][key]

    def _key(self, job: PlannedJob) -> str:
        """The job's own reference entry (caption-lstm, sentiment-text) if it has one, else its kind's."""
        return job.label if job.label in self.costs["seconds_per_step"] else job.kind

    @property
    def slowdown(self) -> float:
        """This machine's time / the reference's: measured over the finished jobs once there are any."""
        if not self.done:
            return self.estimated_slowdown or 1.0
        predicted = sum(self._predicted(job, steps) for job, steps, _ in self.done)
        return sum(seconds for _, _, seconds in self.done) / max(predicted, 1e-9)

    def steps_for(self, job: PlannedJob) -> int:
        """The steps ``job`` gets: its own, scaled down (from here on) when the rest would overrun the budget."""
        if self.seconds <= 0 or job.judge:
            self.scales[job.label] = 1.0
            return job.steps
        remaining = [j for j in self.jobs if j.label not in {d.label for d, _, _ in self.done}]
        left = self.seconds * PLAN_SHARE - (self.clock() - self.started)
        judges = [j for j in remaining if j.judge]
        fixed = (
            sum(self.costs["eval_seconds"][self._key(j)] for j in remaining)
            + sum(self.costs["seconds_per_step"][self._key(j)] * j.steps for j in judges)
        ) * self.slowdown
        scalable = [j for j in remaining if not j.judge]
        per_full_scale = sum(self.costs["seconds_per_step"][self._key(j)] * j.steps for j in scalable) * self.slowdown
        scale = 1.0 if per_full_scale <= 0 else min(1.0, max(MIN_SCALE, (left - fixed) / per_full_scale))
        self.scales[job.label] = scale
        return max(1, round(job.steps * scale))

    def finished(self, job: PlannedJob, steps: int, seconds: float) -> None:
        self.done.append((job, steps, seconds))

    def predicted_total(self) -> float:
        """Seconds the whole demo would take at its own steps on this machine (by the current slowdown)."""
        return sum(self._predicted(j, j.steps) for j in self.jobs) * self.slowdown

    def summary(self) -> dict[str, Any]:
        scaled = {label: round(s, 3) for label, s in self.scales.items() if s < 1.0}
        return {
            "budget_seconds": self.seconds,
            "precision": self.precision,
            "matmul_gflops": round(self.measured_gflops, 1) if self.measured_gflops > 0 else None,
            "reference_machine": self.reference["machine"],
            "estimated_slowdown": None if self.estimated_slowdown is None else round(self.estimated_slowdown, 3),
            "measured_slowdown": round(self.slowdown, 3),
            "scaled_jobs": scaled,
        }
