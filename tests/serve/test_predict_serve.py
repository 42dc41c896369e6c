"""Serving a ``polymodal fit`` predictor: /health describes it, POST /predict answers what the Python API does,
bad cells are 4xx naming the row and column, uploads leave nothing behind, and the other endpoints are refused."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import polymodal
from polymodal.api import Model
from polymodal.cli.main import app as cli
from polymodal.serve import ServeSettings, create_app
from tests.api.table_predictor import fit_dir, table_rows  # noqa: F401


@pytest.fixture(scope="module")
def predictor_model(fit_dir: Path) -> Model:  # noqa: F811
    return polymodal.load(fit_dir)


@pytest.fixture(scope="module")
def predictor_client(predictor_model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(predictor_model)) as client:
        yield client


def as_request(rows: list[dict], folder: Path) -> list[dict]:
    """The rows as a client sends them: photos as base64 files, no label."""
    sent = []
    for row in rows:
        cells = {k: v for k, v in row.items() if k != "label"}
        cells["photo"] = base64.b64encode((folder / row["photo"]).read_bytes()).decode()
        sent.append(cells)
    return sent


def test_health_describes_the_predictor(predictor_client: TestClient) -> None:
    health = predictor_client.get("/health").json()
    assert health["capabilities"] == ["predict"] and health["media"] == {"predict": ["image", "text"]}
    assert health["endpoints"]["/predict"] is True
    assert not any(ok for path, ok in health["endpoints"].items() if path != "/predict")
    assert health["predictor"] == {
        "problem": "binary",
        "label": "label",
        "classes": ["no", "yes"],
        "columns": [
            {"name": "x", "kind": "numeric"},
            {"name": "colour", "kind": "categorical"},
            {"name": "review", "kind": "text"},
            {"name": "photo", "kind": "image"},
        ],
    }
    assert health["runtime"]["precision"] == "fp32" and health["embed_dim"] is None


def test_predict_answers_what_the_python_api_does(
    predictor_client: TestClient,
    predictor_model: Model,
    fit_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = table_rows(6, seed=2)
    sent = as_request(rows, fit_dir.parent)
    sent[0]["photo"] = "data:image/png;base64," + sent[0]["photo"]
    sent[1]["label"] = "yes"  # the label column may come along; it is not read
    response = predictor_client.post("/predict", json={"rows": sent})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["problem"] == "binary" and body["label"] == "label"
    monkeypatch.chdir(fit_dir.parent)
    expected = predictor_model.predict(rows)
    assert [p["row"] for p in body["predictions"]] == list(range(6))
    assert [p["prediction"] for p in body["predictions"]] == expected.labels
    got = np.array([[p["probabilities"]["no"], p["probabilities"]["yes"]] for p in body["predictions"]])
    np.testing.assert_allclose(got, expected.values, rtol=1e-5, atol=1e-6)


def test_missing_cells_are_missing_inputs(predictor_client: TestClient) -> None:
    response = predictor_client.post("/predict", json={"rows": [{"x": "1.5", "photo": None}, {}]})
    assert response.status_code == 200, response.text
    assert [set(p["probabilities"]) for p in response.json()["predictions"]] == [{"no", "yes"}] * 2


@pytest.mark.parametrize(
    "cell,status,code,message",
    [
        ({"colr": "red"}, 422, "unknown_column", "rows[1].colr: no such column; this predictor reads x, colour"),
        ({"x": "tall"}, 422, "invalid_request", "rows[1].x: expected a number, got 'tall'"),
        ({"photo": "photos/red.png"}, 422, "bad_base64", "rows[1].photo: not valid base64"),
        ({"photo": 3}, 422, "bad_image", "rows[1].photo: expected a base64-encoded image file"),
        ({"photo": base64.b64encode(b"not a picture").decode()}, 422, "bad_image", "rows[1].photo:"),
        ({"photo": ""}, 200, None, None),  # an empty cell is a missing one
        ({"x": [1, 2]}, 422, "invalid_request", "rows[1].x: expected str or int or float or bool, got list"),
    ],
)
def test_bad_cells_are_refused_naming_row_and_column(
    predictor_client: TestClient,
    cell: dict,
    status: int,
    code: str | None,
    message: str | None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the request's upload directory goes
    response = predictor_client.post("/predict", json={"rows": [{"x": 1}, {"review": "a quiet room", **cell}]})
    assert response.status_code == status, response.text
    if code is not None:
        error = response.json()["error"]
        assert error["code"] == code and error["message"].startswith(message), error
    assert list(tmp_path.iterdir()) == []  # the upload directory is gone, answered or refused


def test_bad_cells_as_missing_predict_the_row_without_them(
    predictor_client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One unreadable photo in a batch need not cost the other rows: each row says which of its cells it went
    without, and is predicted as if they were empty."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    garbage = base64.b64encode(b"not a picture").decode()
    rows = [{"x": 1}, {"review": "a quiet room", "photo": garbage}, {"x": "tall", "colour": "red"}]
    response = predictor_client.post("/predict", json={"rows": rows, "bad_cells": "as_missing"})
    assert response.status_code == 200, response.text
    unread = [p["unread"] for p in response.json()["predictions"]]
    assert unread[0] == [] and len(unread[1]) == 1 and unread[1][0].startswith("rows[1].photo:")
    assert unread[2] == ["rows[2].x: expected a number, got 'tall'"]
    without = predictor_client.post(
        "/predict", json={"rows": [{"x": 1}, {"review": "a quiet room"}, {"colour": "red"}]}
    )
    assert [p["probabilities"] for p in response.json()["predictions"]] == [
        p["probabilities"] for p in without.json()["predictions"]
    ]
    assert all(p["unread"] == [] for p in without.json()["predictions"])
    refused = predictor_client.post("/predict", json={"rows": rows})  # the default still refuses
    assert refused.status_code == 422 and refused.json()["error"]["message"].startswith("rows[1].photo:")
    unknown = predictor_client.post("/predict", json={"rows": [{"colr": "red"}], "bad_cells": "as_missing"})
    assert unknown.status_code == 422  # a column the predictor lacks is the request's mistake, not a bad cell
    assert list(tmp_path.iterdir()) == []


def test_uploads_are_removed_and_limits_apply(
    predictor_model: Model,
    fit_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sent = as_request(table_rows(2, seed=3), fit_dir.parent)
    with TestClient(create_app(predictor_model, settings=ServeSettings(max_pixels=100))) as client:
        response = client.post("/predict", json={"rows": sent})
        assert response.status_code == 413 and "rows[0].photo" in response.json()["error"]["message"]
        assert client.post("/predict", json={"rows": []}).status_code == 422
        assert client.post("/predict", json={"rows": [{}] * 257}).status_code == 422
        assert client.post("/predict", content=b"x=1", headers={"content-type": "text/plain"}).status_code == 415
    assert list(tmp_path.iterdir()) == []


def test_other_endpoints_are_refused_as_for_any_model(
    predictor_client: TestClient, predictor_model: Model, client: TestClient
) -> None:
    response = predictor_client.post("/embed", json={"texts": ["a quiet room"]})
    assert response.status_code == 400 and "cannot embed: it supports predict" in response.json()["error"]["message"]
    assert predictor_client.post("/search", json={"text": "a"}).status_code == 400
    refused = client.post("/predict", json={"rows": [{"x": 1}]})  # the dual encoder's server
    assert refused.status_code == 400 and "cannot predict: it supports embed" in refused.json()["error"]["message"]
    with TestClient(create_app(predictor_model, settings=ServeSettings(api_key="k"))) as keyed:
        assert keyed.post("/predict", json={"rows": [{"x": 1}]}).status_code == 401
        assert keyed.post("/predict", json={"rows": [{"x": 1}]}, headers={"X-API-Key": "k"}).status_code == 200


def test_the_page_has_the_predict_form(predictor_client: TestClient) -> None:
    page = predictor_client.get("/").text
    assert 'id="predict-section"' in page and 'id="predict-form"' in page


def test_serve_takes_the_predictor_directory(fit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    result = CliRunner().invoke(cli, ["serve", str(fit_dir), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["endpoints"]["/predict"] is True and summary["model"] == f"fit:{fit_dir}"
    result = CliRunner().invoke(cli, ["serve", str(fit_dir), "--model", "polymodal-base", "--json"])
    assert result.exit_code == 2 and "give the model once" in json.loads(result.stdout)["error"]


def test_requests_are_not_kept_in_the_feature_store(fit_dir: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001, F811
    """The feature store is for a user's tables (fit, predict): a server answering uploads writes nothing to it."""
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    model = polymodal.load(fit_dir)
    assert model.backend.store is True  # the Python API's predict on a table keeps its features, as the CLI's
    with TestClient(create_app(model)) as client:
        assert model.backend.store is False
        response = client.post("/predict", json={"rows": as_request(table_rows(2, seed=4), fit_dir.parent)})
        assert response.status_code == 200, response.text
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.sqlite"))
