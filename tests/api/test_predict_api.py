"""``polymodal.load`` of a ``polymodal fit`` directory: a Model that predicts table rows, refuses every other task, and
predicts exactly what the fitted predictor does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import polymodal
from polymodal.backends import TaskNotSupported
from polymodal.fit import TablePredictor, rows_table
from tests.api.table_predictor import fit_dir, table_rows  # noqa: F401


@pytest.fixture(scope="module")
def predictor_model(fit_dir: Path) -> polymodal.Model:  # noqa: F811
    return polymodal.load(fit_dir)


def test_load_gives_a_model_that_predicts_like_the_fitted_predictor(
    predictor_model: polymodal.Model,
    fit_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = predictor_model
    assert model.capabilities == {"predict"} and model.embed_dim is None and model.precision == "fp32"
    assert model.source == str(fit_dir.resolve())
    assert model.predictor is not None and model.predictor.problem.kind == "binary"
    assert model.predictor.problem.classes == ("no", "yes")
    assert {c.name: c.kind for c in model.predictor.columns} == {
        "x": "numeric",
        "colour": "categorical",
        "review": "text",
        "photo": "image",
    }
    assert model.media("predict") == {"image", "text"}

    rows = table_rows(40, seed=1)
    monkeypatch.chdir(fit_dir.parent)  # row dicts' relative photo paths start from the working directory
    predictions = model.predict(rows)
    reference = TablePredictor.load(fit_dir).predict(rows_table(rows, fit_dir.parent))
    np.testing.assert_allclose(predictions.values, reference.values, rtol=1e-5, atol=1e-6)
    assert predictions.labels == reference.labels and not predictions.bad
    truth = [r["label"] for r in rows]
    accuracy = np.mean([p == t for p, t in zip(predictions.labels, truth)])
    majority = max(truth.count("yes"), truth.count("no")) / len(truth)
    assert accuracy > majority  # it learned from its columns, not just the commoner class
    table_file = fit_dir.parent / "train.csv"
    assert model.predict(str(table_file)).labels[:5] == TablePredictor.load(fit_dir).predict(table_file).labels[:5]


def test_a_missing_photo_only_removes_that_input(
    predictor_model: polymodal.Model,
    fit_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(fit_dir.parent)
    row = {"x": 0.5, "colour": "green", "review": "the staff were friendly and quick"}
    rows = [row, {**row, "photo": "photos/gone.png"}, {**row, "photo": "../outside.png"}]
    predictions = predictor_model.predict(rows)
    assert len(predictions.labels) == 3
    assert [(e.row, e.field, e.kind) for e in predictions.bad] == [
        (2, "photo", "missing_file"),
        (3, "photo", "missing_file"),  # rows from code may name files outside the working directory
    ]


def test_other_tasks_are_refused_and_other_models_do_not_predict(
    predictor_model: polymodal.Model,
    fit_dir: Path,  # noqa: F811
    tiny_dual_encoder_dir: Path,
) -> None:
    with pytest.raises(TaskNotSupported, match="cannot embed.*it supports predict"):
        predictor_model.embed_text(["a review"])
    with pytest.raises(TaskNotSupported, match="cannot caption"):
        predictor_model.caption(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(TaskNotSupported, match="cannot predict: it supports embed"):
        polymodal.load(tiny_dual_encoder_dir).predict([{"x": 1}])
    with pytest.raises(ValueError, match="runs in fp32 only"):
        polymodal.load(fit_dir, precision="bf16")
    with pytest.raises(ValueError, match="runs on the CPU"):
        polymodal.load(fit_dir, device="cuda")
    assert polymodal.load(fit_dir).identity == predictor_model.identity  # the same files, the same identity
