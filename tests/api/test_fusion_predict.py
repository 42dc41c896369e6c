"""``polymodal.load`` of a fusion classifier (towers -> fusion -> head): ``Model.predict`` takes table rows whose
columns are its modalities and predicts what the model itself computes, with a fitted predictor's contract (missing
cells and bad files are absent inputs, counted in ``.bad``; ``Predictions``; the CLI's ``predict``, the server's
``/predict``); a run records whether its head outputs classes, labels (bce) or values (mse), and a model saved without
the record is a classifier."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import polymodal
from polymodal.cli.main import app
from polymodal.data.processors import ImageProcessor, TextProcessor
from polymodal.data.text import train_tokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.fit import ColumnMismatchError
from polymodal.models import SavedModel, build_model, parse_model_config, save_model
from polymodal.train.recipe import load_recipe
from polymodal.train.run import run_recipe
from tests.train.test_pretraining_objectives import _square_rows, _tiny_fusion, tiny_fusion_config

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
TEXTS = ["a red square", "a green square", "a blue square", "there is a square", "no square here"]
LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_models" / "fusion_classifier"


def _save_fusion(directory: Path, outputs: int = 2, **record: object) -> Path:
    """A tiny untrained image + text fusion classifier (16 px CNN, GRU text tower) with its processors."""
    torch.manual_seed(0)
    model = build_model(parse_model_config(tiny_fusion_config(outputs))).eval()
    processors = {
        "image": ImageProcessor(ImagePreprocess(image_size=16)),
        "text": TextProcessor(train_tokenizer(TEXTS, vocab_size=32, kind="wordlevel"), 12),
    }
    return save_model(directory, model, processors, **record)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("squares")
    for name, rgb in COLOURS.items():
        Image.new("RGB", (16, 16), rgb).save(root / f"{name}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_fusion(tmp_path_factory.mktemp("fusion") / "model", answers={"false": 0, "true": 1})


@torch.inference_mode()
def _reference(directory: Path, images: list[str] | None, texts: list[str]) -> torch.Tensor:
    """The saved model's own logits: images (None: no image input) and texts prepared by its processors."""
    saved = SavedModel.load(directory)
    inputs = {"text": saved.inputs("text", texts)}
    if images is not None:
        inputs["image"] = saved.inputs("image", images)
    return saved.model(inputs).float()


def test_predictions_are_the_models_own_softmax(classifier_dir: Path, files: Path) -> None:
    model = polymodal.load(classifier_dir, precision="fp32", batch_size=2)  # 5 rows: three model calls
    assert model.capabilities == {"predict"} and model.media("predict") == {"image", "text"}
    names = ["red", "green", "blue", "red", "blue"]
    rows = [{"id": f"s{i}", "image": str(files / f"{n}.png"), "text": t} for i, (n, t) in enumerate(zip(names, TEXTS))]
    predictions = model.predict(rows)
    probabilities = _reference(classifier_dir, [r["image"] for r in rows], TEXTS).softmax(-1).numpy()
    assert predictions.problem.kind == "binary" and predictions.problem.classes == ("false", "true")
    np.testing.assert_allclose(predictions.values, probabilities, rtol=1e-5, atol=1e-6)
    assert predictions.labels == [("false", "true")[i] for i in probabilities.argmax(1)]
    assert not predictions.bad and predictions.row_numbers == [1, 2, 3, 4, 5]
    first = predictions.to_rows()[0]
    assert list(first) == ["row", "id", "image", "prediction", "probability_false", "probability_true"]
    assert first["id"] == "s0" and first["image"] == rows[0]["image"]


def test_a_missing_or_broken_image_leaves_the_text(classifier_dir: Path, files: Path) -> None:
    model = polymodal.load(classifier_dir, precision="fp32")
    rows = [
        {"image": str(files / "red.png"), "text": TEXTS[0]},
        {"text": TEXTS[1]},  # no image
        {"image": str(files / "broken.png"), "text": TEXTS[2]},
        {"image": "", "text": TEXTS[3]},  # an empty cell is a missing one
        {"image": str(files / "gone.png"), "text": TEXTS[4]},
    ]
    predictions = model.predict(rows)
    text_alone = _reference(classifier_dir, None, TEXTS[1:]).softmax(-1).numpy()
    np.testing.assert_allclose(predictions.values[1:], text_alone, rtol=1e-5, atol=1e-6)
    assert [(e.row, e.field, e.kind) for e in predictions.bad] == [
        (3, "image", "not_an_image"),
        (5, "image", "missing_file"),
    ]
    assert "broken.png" in str(predictions.bad[0])
    # A row with no input at all is what the model predicts from nothing, however the rows are batched.
    nothing = [{"text": None}, {"image": str(files / "broken.png")}, {"text": TEXTS[0]}]
    alone = polymodal.load(classifier_dir, precision="fp32", batch_size=1).predict(nothing).values
    together = model.predict(nothing).values
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alone[0], alone[1], rtol=1e-6)
    with pytest.raises(ValueError, match="no row has an input the model can read"):
        model.predict([{"image": str(files / "broken.png")}])


def test_the_predict_command_writes_the_csv(classifier_dir: Path, files: Path, tmp_path: Path) -> None:
    table = files / "new.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image", "text", "note"])
        writer.writeheader()
        writer.writerow({"id": "a", "image": "red.png", "text": TEXTS[0], "note": "x"})
        writer.writerow({"id": "b", "image": "broken.png", "text": TEXTS[1], "note": ""})
        writer.writerow({"id": "c", "image": "", "text": TEXTS[2], "note": ""})
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(app, ["predict", str(classifier_dir), str(table), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["rows"] == 3 and payload["bad_cells"] == 1
    with open(out) as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ["row", "id", "image", "prediction", "probability_false", "probability_true"]
    assert [r["image"] for r in written] == ["red.png", "broken.png", ""]  # what joins a row back to its file
    assert [r["id"] for r in written] == ["a", "b", "c"]
    expected = polymodal.load(classifier_dir).predict(str(table))
    assert [r["prediction"] for r in written] == expected.labels
    assert "broken.png" in (tmp_path / "preds.csv.bad_samples.jsonl").read_text()
    assert payload["bad_cells_by_column"] == {"image": 1}
    table_run = CliRunner().invoke(app, ["predict", str(classifier_dir), str(table), "--out", str(out)])
    said = "".join(table_run.output.split())  # a long path may wrap anywhere
    assert "".join(f"bad cells (image 1): each listed in {tmp_path / 'preds.csv.bad_samples.jsonl'}".split()) in said

    renamed = files / "renamed.csv"
    renamed.write_text("id,picture,caption\n1,red.png,a red square\n")
    with pytest.raises(ColumnMismatchError, match=r"\(image, text: .*the table's columns: id, picture, caption"):
        polymodal.load(classifier_dir).predict(str(renamed))
    result = CliRunner().invoke(app, ["predict", str(classifier_dir), str(renamed), "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "no column the model reads" in result.output and not (tmp_path / "x.csv").exists()


def test_a_fusion_classifier_is_scored_on_labelled_rows(classifier_dir: Path, files: Path, tmp_path: Path) -> None:
    """Model.evaluate and `predict --evaluate` score a fusion classifier on one's own labelled table, as they score a
    fitted predictor: accuracy over the rows with a known label, an unknown label counted as an error."""
    model = polymodal.load(classifier_dir, precision="fp32")
    names, truths = ["red", "green", "blue", "red"], ["true", "false", "true", "false"]
    rows = [{"image": str(files / f"{n}.png"), "text": t, "label": y} for n, t, y in zip(names, TEXTS, truths)]
    predicted = model.predict(rows).labels
    metrics = model.evaluate(rows)
    assert metrics["accuracy"] == pytest.approx(np.mean([p == y for p, y in zip(predicted, truths)]))
    assert metrics["rows"] == {"scored": 4, "left_out": 0, "unreadable": 0, "unknown": {}}
    with pytest.warns(UserWarning, match="labels the model does not know: 'maybe'"):
        odd = model.evaluate([*rows, {**rows[0], "label": "maybe"}])
    assert odd["accuracy"] == pytest.approx(metrics["accuracy"] * 4 / 5) and odd["rows"]["unknown"] == {"maybe": 1}
    with pytest.raises(ValueError, match="no label column 'label'"):
        model.evaluate([{k: v for k, v in r.items() if k != "label"} for r in rows])
    table = tmp_path / "labelled.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "text", "label"])
        writer.writeheader()
        writer.writerows({**r, "image": Path(r["image"]).name} for r in rows)
    (tmp_path / "red.png").write_bytes((files / "red.png").read_bytes())
    for name in ("green", "blue"):
        (tmp_path / f"{name}.png").write_bytes((files / f"{name}.png").read_bytes())
    command = ["predict", str(classifier_dir), str(table), "--out", str(tmp_path / "p.csv"), "--evaluate", "--json"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["accuracy"] == pytest.approx(
        polymodal.load(classifier_dir).evaluate(str(table))["accuracy"]
    )


@pytest.mark.parametrize(
    ("loss", "outputs", "labels", "metric"),
    [
        ("bce", 3, [["warm", "primary"], ["cool"], ["cool", "primary"], ["warm"]], "exact_match"),
        ("mse", 1, [0.0, 1.0, 2.0, 3.0], "rmse"),
    ],
)
def test_a_run_records_what_its_head_outputs_and_predict_honours_it(
    tmp_path: Path, loss: str, outputs: int, labels: list, metric: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _square_rows(data, labels)
    overrides = ["data.view=labels", f"objective.loss={loss}", f"train.metric={metric}", "train.metric_mode=max"]
    if metric == "rmse":
        overrides[-1] = "train.metric_mode=min"
    recipe = _tiny_fusion(data, outputs, overrides, steps=2)
    run_recipe(recipe, tmp_path / "run", progress=False)
    model_dir = tmp_path / "run" / "model"
    kind = {"bce": "multilabel", "mse": "regression"}[loss]
    assert json.loads((model_dir / "config.json").read_text())["outputs"] == kind
    rows = [{"image": str(data / f"{c}.png"), "text": f"a {c} square"} for c in ("red", "green", "blue")]
    predictions = polymodal.load(model_dir, precision="fp32").predict(rows)
    logits = _reference(model_dir, [r["image"] for r in rows], [r["text"] for r in rows])
    assert predictions.problem.kind == kind
    if loss == "bce":
        assert predictions.problem.classes == ("cool", "primary", "warm")
        np.testing.assert_allclose(predictions.values, logits.sigmoid().numpy(), rtol=1e-5, atol=1e-6)
        on = logits.sigmoid().numpy() > 0.5
        assert predictions.labels == [[c for c, bit in zip(("cool", "primary", "warm"), row) if bit] for row in on]
    else:
        np.testing.assert_allclose(predictions.values, logits.squeeze(-1).numpy(), rtol=1e-5, atol=1e-6)
        assert predictions.labels == [pytest.approx(float(v)) for v in logits.squeeze(-1)]
        assert "probability_0" not in predictions.to_rows()[0]

    # The same directory without the record (as saved before it was kept): a softmax classifier.
    meta = json.loads((model_dir / "config.json").read_text())
    del meta["outputs"]
    (model_dir / "config.json").write_text(json.dumps(meta))
    assert SavedModel.load(model_dir).outputs == "classes"
    if loss == "bce":
        np.testing.assert_allclose(
            polymodal.load(model_dir, precision="fp32").predict(rows).values,
            logits.softmax(-1).numpy(),
            rtol=1e-5,
            atol=1e-6,
        )


def test_models_saved_without_the_record_predict_classes(tmp_path: Path) -> None:
    plain = _save_fusion(tmp_path / "plain", outputs=3)  # no answers, no record
    assert "outputs" not in json.loads((plain / "config.json").read_text())
    predictions = polymodal.load(plain).predict([{"text": "a red square"}])
    assert predictions.problem.kind == "multiclass" and predictions.problem.classes == ("0", "1", "2")
    assert predictions.values.sum() == pytest.approx(1.0)
    legacy = polymodal.load(LEGACY, precision="fp32")  # format 1, before processors.json
    assert legacy.media("predict") == {"image", "text"}
    assert legacy.predict([{"text": "red"}, {"text": "blue"}]).problem.classes == ("0", "1")


def test_a_statement_or_matching_run_names_its_classes() -> None:
    from polymodal.train.prepare import Labels, saved_outputs

    recipe = load_recipe("shapes-fusion", [])
    assert saved_outputs(recipe, "statements", Labels()) == ({"false": 0, "true": 1}, "classes")
    matching = load_recipe("shapes-fusion", ["objective.kind=matching"])
    assert saved_outputs(matching, "captions", Labels()) == ({"mismatch": 0, "match": 1}, "classes")
    regression = load_recipe("shapes-fusion", ["objective.loss=mse", "data.view=labels"])
    assert saved_outputs(regression, "labels", Labels(vocab=None)) == (None, "regression")


def test_the_server_predicts_with_a_fusion_classifier(classifier_dir: Path, files: Path) -> None:
    from fastapi.testclient import TestClient

    from polymodal.serve import create_app

    model = polymodal.load(classifier_dir, precision="fp32")
    rows = [{"image": str(files / "red.png"), "text": TEXTS[0]}, {"text": TEXTS[1]}]
    sent = [
        {"image": base64.b64encode((files / "red.png").read_bytes()).decode(), "text": TEXTS[0]},
        {"text": TEXTS[1]},
    ]
    with TestClient(create_app(model)) as client:
        health = client.get("/health").json()
        assert health["endpoints"]["/predict"] is True
        assert health["predictor"] == {
            "problem": "binary",
            "label": "label",
            "classes": ["false", "true"],
            "columns": [{"name": "image", "kind": "image"}, {"name": "text", "kind": "text"}],
        }
        response = client.post("/predict", json={"rows": sent})
        assert response.status_code == 200, response.text
        expected = model.predict(rows)
        got = [[p["probabilities"]["false"], p["probabilities"]["true"]] for p in response.json()["predictions"]]
        np.testing.assert_allclose(got, expected.values, rtol=1e-5, atol=1e-6)
        refused = client.post("/predict", json={"rows": [{"caption": "a red square"}]})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_column"
        empty = client.post("/predict", json={"rows": [{"image": None}]})
        assert empty.status_code == 422, empty.text


def test_predict_exits_1_when_a_whole_media_column_is_unreadable(
    classifier_dir: Path, files: Path, tmp_path: Path
) -> None:
    """A table moved away from its files: every image path breaks. The predictions (from the text) are written, and
    the command says the column was lost and exits 1, instead of 0 with '3 bad cells'."""
    table = tmp_path / "moved.csv"  # relative paths, but the pictures are in another folder
    table.write_text("image,text\nred.png,a red square\ngreen.png,a green square\n,no square here\n")
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(app, ["predict", str(classifier_dir), str(table), "--out", str(out)])
    assert result.exit_code == 1 and out.is_file() and len(out.read_text().splitlines()) == 4
    said = " ".join(result.output.split())
    assert "every cell of 'image' in" in said and "made without it" in said
    as_json = CliRunner().invoke(app, ["predict", str(classifier_dir), str(table), "--out", str(out), "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["unusable_columns"] == ["image"]
    (tmp_path / "red.png").write_bytes((files / "red.png").read_bytes())  # one of them found: no longer all lost
    assert CliRunner().invoke(app, ["predict", str(classifier_dir), str(table), "--out", str(out)]).exit_code == 0
