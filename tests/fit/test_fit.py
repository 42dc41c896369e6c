"""``TablePredictor`` end to end on small tables the tests make: every problem kind, every column kind but video,
missing values and bad files, saving and loading, the feature store, and the ``fit`` / ``predict`` commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.fit import TablePredictor, read_table, rows_table
from polymodal.fit.network import Candidate
from polymodal.fit.predictor import FORMAT
from polymodal.fit.store import FeatureStore

FAST = (Candidate("concat", {"hidden_dim": 32}, 32), Candidate("gmu", {}, 32))
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _tabular_rows(n: int, seed: int) -> list[dict]:
    """The label is "high" when x plus a bonus for the colour red passes 0.5; colour alone or x alone is not enough."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        x, colour = float(rng.normal()), str(rng.choice(["red", "green", "blue"]))
        score = x + (1.0 if colour == "red" else 0.0)
        rows.append({"x": round(x, 3), "colour": colour, "label": "high" if score > 0.5 else "low"})
    return rows


def test_tabular_classification_learns_both_columns_and_round_trips(tmp_path: Path) -> None:
    table = read_table(_write_csv(tmp_path / "t.csv", _tabular_rows(400, 0)))
    predictor = TablePredictor.fit(table, "label", time_limit=60, candidates=FAST)
    assert predictor.problem.kind == "binary" and predictor.inputs == ["tabular"]
    assert [c.kind for c in predictor.columns] == ["numeric", "categorical"]
    metrics = predictor.summary["validation"]
    assert metrics["accuracy"] > 0.9 and 0.9 < metrics["roc_auc"] <= 1.0
    assert len(predictor.summary["leaderboard"]) == 2 and predictor.summary["baselines"] == []  # one input only
    test = read_table(_write_csv(tmp_path / "test.csv", _tabular_rows(200, 1)))
    assert predictor.evaluate(test)["accuracy"] > 0.9
    predictor.save(tmp_path / "model")
    again = TablePredictor.load(tmp_path / "model")
    np.testing.assert_array_equal(again.predict(test).values, predictor.predict(test).values)
    html = (tmp_path / "model" / "report.html").read_text()
    assert "Confusion matrix" in html and "colour" in html


def test_predictors_saved_in_the_first_format_still_load(tmp_path: Path) -> None:
    """A predictor whose featurizers are all of version 1 is written as format 1 (what older polymodal reads);
    formats up to this one are read; a newer one says to upgrade."""
    table = read_table(_write_csv(tmp_path / "t.csv", _tabular_rows(100, 0)))
    TablePredictor.fit(table, "label", time_limit=10, candidates=FAST[:1]).save(tmp_path / "model")
    fit_file = tmp_path / "model" / "fit.json"
    data = json.loads(fit_file.read_text())
    assert data["format"] == 1  # no featurizer of a later version: older polymodal reads it too
    fit_file.write_text(json.dumps({**data, "format": 2}))
    assert TablePredictor.load(tmp_path / "model").predict(table).labels
    fit_file.write_text(json.dumps({**data, "format": FORMAT + 1}))
    with pytest.raises(ValueError, match="upgrade"):
        TablePredictor.load(tmp_path / "model")


def test_regression_and_multilabel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [
        {"a": float(a), "b": float(b), "y": 3 * a - b + 0.1 * float(rng.normal())} for a, b in rng.normal(size=(300, 2))
    ]
    predictor = TablePredictor.fit(rows_table(rows, tmp_path), "y", time_limit=60, candidates=FAST)
    assert predictor.problem.kind == "regression" and predictor.summary["validation"]["r2"] > 0.9
    predicted = predictor.predict(rows[:50]).values
    assert np.corrcoef(predicted, [r["y"] for r in rows[:50]])[0, 1] > 0.95
    tagged = [
        {"a": r["a"], "b": r["b"], "tags": [t for t, on in (("A", r["a"] > 0), ("B", r["b"] > 0)) if on]} for r in rows
    ]
    multi = TablePredictor.fit(rows_table(tagged, tmp_path), "tags", time_limit=60, candidates=FAST)
    assert multi.problem.kind == "multilabel" and multi.summary["validation"]["f1_micro"] > 0.85
    assert multi.predict([{"a": 2.0, "b": -2.0}]).labels == [["A"]]


def _image_table(folder: Path, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = str(rng.choice(list(COLOURS)))
        pixels = np.full((32, 32, 3), COLOURS[colour], np.uint8) + rng.integers(0, 30, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img" / f"{seed}-{i}.png")
        rows.append({"photo": f"img/{seed}-{i}.png", "note": "a photo", "label": colour})
    return rows


def test_images_with_bad_files_are_counted_and_rows_still_predicted(tmp_path: Path) -> None:
    rows = _image_table(tmp_path, 60, 0)
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a truncated file
    rows += [
        {"photo": "img/broken.png", "note": "a photo", "label": "red"},
        {"photo": "img/missing.png", "note": "a photo", "label": "blue"},
        {"photo": "../outside.png", "note": "a photo", "label": "red"},
        {"note": "no photo", "label": "blue"},
    ]
    table = read_table(_write_csv(tmp_path / "t.csv", rows))
    store = FeatureStore(tmp_path / "cache" / "features.sqlite")
    predictor = TablePredictor.fit(table, "label", time_limit=60, candidates=FAST[:1], store=store)
    assert {c.name: c.kind for c in predictor.columns} == {"photo": "image", "note": "categorical"}
    assert predictor.summary["bad_cells"] == 3
    assert predictor.summary["validation"]["accuracy"] >= 0.9
    result = predictor.predict(table, store=store)
    assert len(result.labels) == len(rows) and len(result.bad) == 3
    assert {e.field for e in result.bad} == {"photo"} and {e.row for e in result.bad} == {62, 63, 64}
    assert any("escapes" in e.reason for e in result.bad)
    assert len(store) == 60  # each good image once (bad files are never stored)
    absolute = predictor.predict([{"photo": str(tmp_path / rows[0]["photo"]), "note": "a photo"}], progress=False)
    assert absolute.labels == [rows[0]["label"]] and not absolute.bad  # rows from code may name files anywhere


def test_the_store_spares_the_towers_a_second_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from polymodal.fit import features

    rows = [{"review": f"I {'loved' if i % 2 else 'hated'} item {i}", "label": i % 2} for i in range(40)]
    store = FeatureStore(tmp_path / "features.sqlite")
    first = TablePredictor.fit(rows_table(rows, tmp_path), "label", time_limit=30, candidates=FAST[:1], store=store)
    assert first.summary["validation"]["accuracy"] == 1.0  # MiniLM separates loved from hated
    computed = first.predict(rows, store=False).values  # without a store: the tower runs
    monkeypatch.setattr(features, "_text_tower", lambda: pytest.fail("the tower ran although every text was stored"))
    np.testing.assert_allclose(first.predict(rows, store=store).values, computed, atol=1e-6)
    with pytest.raises(pytest.fail.Exception, match="the tower ran"):
        first.predict([{"review": "a text never seen"}], store=store)


def test_fit_and_predict_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    table = _write_csv(tmp_path / "t.csv", [{"id": i, **r} for i, r in enumerate(_tabular_rows(300, 0))])
    runner = CliRunner()
    out = tmp_path / "model"
    result = runner.invoke(
        app,
        [
            "fit",
            str(table),
            "--label",
            "label",
            "--out",
            str(out),
            "--time-limit",
            "30",
            "--column",
            "colour=text",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    kinds = {c["name"]: c["kind"] for c in payload["columns"]}
    assert kinds == {"id": "ignore", "x": "numeric", "colour": "text"}
    predictor_columns = TablePredictor.load(out).columns
    assert payload["validation"]["accuracy"] > 0.8
    assert {"fit.json", "model.safetensors", "report.html", "fit.log"} <= {p.name for p in out.iterdir()}
    assert (tmp_path / "cache" / "features.sqlite").is_file()  # the text column's features, for the next run
    preds = tmp_path / "preds.csv"
    result = runner.invoke(app, ["predict", str(out), str(table), "--out", str(preds)])
    assert result.exit_code == 0, result.output
    with open(preds) as f:
        written = list(csv.DictReader(f))
    assert len(written) == 300 and list(written[0]) == [
        "row",
        "id",
        "prediction",
        "probability_high",
        "probability_low",
    ]
    assert [r["id"] for r in written[:3]] == ["0", "1", "2"]  # the table's id column, to join the predictions back
    bad = runner.invoke(app, ["fit", str(table), "--label", "nope", "--out", str(out), "--overwrite"])
    assert bad.exit_code == 1 and "no label column 'nope'" in bad.output
    bad = runner.invoke(
        app, ["fit", str(table), "-y", "label", "--out", str(out), "--overwrite", "--column", "x=picture"]
    )
    assert bad.exit_code == 1 and "NAME=KIND" in bad.output
    assert TablePredictor.load(out).columns == predictor_columns  # a failed fit leaves the predictor there as it was


def test_video_clips_with_a_truncated_one(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from tests.api.video_model import write_clip

    rows = []
    for i in range(24):
        colour = ["red", "blue"][i % 2]
        write_clip(tmp_path / "clips" / f"{i}.mp4", [colour], seconds_each=0.5)
        rows.append({"clip": f"clips/{i}.mp4", "label": colour})
    whole = (tmp_path / "clips" / "0.mp4").read_bytes()
    (tmp_path / "clips" / "cut.mp4").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "clips" / "empty.mp4").write_bytes(b"")
    rows += [{"clip": "clips/cut.mp4", "label": "red"}, {"clip": "clips/empty.mp4", "label": "blue"}]
    predictor = TablePredictor.fit(rows_table(rows, tmp_path), "label", time_limit=60, candidates=FAST[:1])
    assert predictor.columns[0].kind == "video"
    assert predictor.summary["validation"]["accuracy"] == 1.0
    result = predictor.predict(rows_table(rows, tmp_path))
    assert result.labels[:24] == [r["label"] for r in rows[:24]]
    assert {e.row for e in result.bad} >= {26}  # the empty file; a truncated MP4 may still hold decodable frames


def test_a_folder_of_class_folders_needs_no_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    for row in _image_table(tmp_path / "src", 24, 0):
        folder = tmp_path / "photos" / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / row["photo"]).rename(folder / Path(row["photo"]).name)
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["fit", str(tmp_path / "photos"), "--out", str(out), "--time-limit", "30"])
    assert result.exit_code == 0, result.output
    fitted = json.loads((out / "fit.json").read_text())
    assert fitted["problem"]["classes"] == ["blue", "red"] and fitted["columns"][0]["kind"] == "image"
    assert fitted["validation"]["accuracy"] == 1.0
