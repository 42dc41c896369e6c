"""The demo's budget: steps scaled to the measured speed of the machine, never past the budget."""

from __future__ import annotations

import pytest

from polymodal.cli.demo_budget import MIN_SCALE, PLAN_SHARE, DemoBudget, PlannedJob, load_reference

REFERENCE = {
    "machine": "reference CPU",
    "precisions": {
        "bf16": {
            "matmul_gflops": 400.0,
            "seconds_per_step": {"clip": 0.1, "vqa": 0.05},
            "eval_seconds": {"clip": 5.0, "vqa": 5.0},
        },
        "fp32": {
            "matmul_gflops": 160.0,
            "seconds_per_step": {"clip": 0.2, "vqa": 0.1},
            "eval_seconds": {"clip": 6.0, "vqa": 6.0},
        },
    },
}
JOBS = [PlannedJob("clip", 100), PlannedJob("vqa", 600)]  # reference fp32: 20 + 6 + 60 + 6 = 92 s


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def budget(seconds: float, gflops: float, precision: str = "fp32") -> tuple[DemoBudget, Clock]:
    clock = Clock()
    return DemoBudget(seconds, JOBS, precision, REFERENCE, gflops, started=0.0, clock=clock), clock


def test_a_machine_as_fast_as_the_reference_runs_the_demos_own_steps() -> None:
    plan, _ = budget(200, 160.0)
    assert plan.predicted_total() == pytest.approx(92.0)
    assert [plan.steps_for(job) for job in JOBS] == [100, 600]
    assert plan.summary()["scaled_jobs"] == {}


def test_a_slower_machine_gets_fewer_steps_that_fit_the_budget() -> None:
    plan, _ = budget(100, 80.0)  # half the reference's matmul rate: 184 s at the demo's own steps
    assert plan.estimated_slowdown == pytest.approx(2.0)
    steps = plan.steps_for(JOBS[0])
    scale = (100 * PLAN_SHARE - 2 * 12.0) / (2 * 80.0)  # (budget left - evaluations) / training at full steps
    assert steps == round(100 * scale) and steps < 100
    predicted = 2 * (0.2 * steps + 6 + 0.1 * round(600 * scale) + 6)
    assert predicted <= 100 * PLAN_SHARE + 1


def test_the_measured_time_of_finished_jobs_replaces_the_estimate() -> None:
    plan, clock = budget(100, 160.0)  # looks as fast as the reference ...
    assert plan.steps_for(JOBS[0]) == 100
    clock.now = 78.0  # ... but the first job took three times its 26 s
    plan.finished(JOBS[0], 100, 78.0)
    assert plan.slowdown == pytest.approx(3.0)
    steps = plan.steps_for(JOBS[1])
    assert steps == round(600 * max(MIN_SCALE, (100 * PLAN_SHARE - 78.0 - 3 * 6.0) / (3 * 60.0)))
    assert plan.summary()["scaled_jobs"] == {"vqa": pytest.approx(steps / 600, abs=1e-3)}


def test_no_job_is_cut_below_the_floor_and_no_budget_means_no_scaling() -> None:
    plan, _ = budget(10, 1.0)  # hopeless: 160x slower than the reference
    assert plan.steps_for(JOBS[0]) == round(100 * MIN_SCALE)
    unlimited, _ = budget(0, 1.0)
    assert [unlimited.steps_for(job) for job in JOBS] == [100, 600]


def test_a_judge_keeps_its_steps_and_the_other_jobs_pay_for_them() -> None:
    jobs = [PlannedJob("clip", 100, judge=True), PlannedJob("vqa", 600)]
    plan = DemoBudget(100, jobs, "fp32", REFERENCE, 80.0, started=0.0, clock=Clock())  # 2x slower: 184 s
    assert plan.steps_for(jobs[0]) == 100  # the judge: never cut
    fixed = 2 * (0.2 * 100 + 6.0 + 6.0)  # the judge's training and both evaluations
    scale = (100 * PLAN_SHARE - fixed) / (2 * 60.0)
    assert plan.steps_for(jobs[1]) == round(600 * scale) and plan.summary()["scaled_jobs"] == {
        "vqa": pytest.approx(scale, abs=1e-3)
    }
    unjudged = DemoBudget(100, JOBS, "fp32", REFERENCE, 80.0, started=0.0, clock=Clock())
    assert unjudged.steps_for(JOBS[0]) < 100  # the same job, not a judge, is cut with the others


def test_the_generation_demo_plans_its_scene_checker_and_clip_judge_as_judges(tmp_path) -> None:  # noqa: ANN001
    from polymodal.cli.demo import generation_jobs

    jobs = generation_jobs(tmp_path, 350)
    assert {label for job in jobs for label in job.judges.values()} == {"scene-checker", "gen-clip"}


def test_without_a_budget_the_rate_is_not_measured_and_the_summary_says_so() -> None:
    plan, _ = budget(0, 0.0)  # --budget 0: the demo skips the matmul measurement
    assert plan.estimated_slowdown is None and plan.slowdown == 1.0
    summary = plan.summary()
    assert summary["matmul_gflops"] is None and summary["estimated_slowdown"] is None
    plan.finished(JOBS[0], 100, 52.0)  # twice the reference's 26 s: still measured from the jobs
    assert plan.summary()["measured_slowdown"] == pytest.approx(2.0)


def test_bf16_costs_apply_to_a_bf16_demo() -> None:
    plan, _ = budget(200, 400.0, precision="bf16")
    assert plan.predicted_total() == pytest.approx(0.1 * 100 + 5 + 0.05 * 600 + 5)


def test_the_shipped_reference_covers_every_demo_job_in_both_precisions(tmp_path) -> None:
    from polymodal.cli.demo import audio_jobs, generation_jobs, image_jobs, video_jobs

    reference = load_reference()
    jobs = image_jobs(tmp_path, 10, True, "concat,gmu,film") + audio_jobs(10) + video_jobs(tmp_path, 10, True)
    jobs += generation_jobs(tmp_path, 10)
    for precision in ("fp32", "bf16"):
        costs = reference["precisions"][precision]
        assert costs["matmul_gflops"] > 0
        for job in jobs:  # its own entry, else its kind's (fusion-gmu -> fusion), as DemoBudget looks them up
            key = job.label if job.label in costs["seconds_per_step"] else PlannedJob(job.label, 1).kind
            assert costs["seconds_per_step"][key] > 0 and costs["eval_seconds"][key] > 0, (precision, job.label)
