"""The demo's ``evaluate_bundle`` and the ``polymodal eval`` ShapesWorld suites report the same numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from polymodal.data.readers import read_manifest
from polymodal.evaluate.bundle import load_bundle
from polymodal.evaluate.runner import run_eval
from polymodal.evaluate.shapes import evaluate_bundle


def test_demo_suite_agrees_with_eval_suites(shapes_dir: Path, models: dict) -> None:
    samples = list(read_manifest(shapes_dir / "test.jsonl"))
    demo = evaluate_bundle(load_bundle(models["clip"]), samples)
    doc = run_eval(str(models["clip"]), "shapes-zeroshot,shapes-retrieval", data=shapes_dir, splits=["test"], n_resamples=10)
    zeroshot, retrieval = doc.results
    assert demo["n_zero_shot"] == sum(map(sum, zeroshot.details.confusion.matrix))
    assert demo["zero_shot_color_shape"] == pytest.approx(zeroshot.metrics["accuracy"])
    for key in ("t2i_R@1", "i2t_R@5", "t2i_mean_rank", "i2t_mAP"):
        assert demo[key] == pytest.approx(retrieval.metrics[key])

    vqa_demo = evaluate_bundle(load_bundle(models["vqa"]), samples)
    (vqa,) = run_eval(str(models["vqa"]), "shapes-vqa", data=shapes_dir, splits=["test"], n_resamples=10).results
    assert vqa_demo["vqa_accuracy"] == pytest.approx(vqa.metrics["vqa_accuracy"])
    for kind, value in vqa.details.per_question_type.items():
        assert vqa_demo[f"vqa_accuracy_{kind}"] == pytest.approx(value)

    fusion_demo = evaluate_bundle(load_bundle(models["fusion"]), samples)
    (st,) = run_eval(str(models["fusion"]), "shapes-statements", data=shapes_dir, splits=["test"], n_resamples=10).results
    assert fusion_demo["statement_accuracy"] == pytest.approx(st.metrics["accuracy"])
