"""Evaluation that counts every labelled row, the ways to run it (``predict --evaluate``, ``Model.evaluate``), the
classes a --val table cannot add, Ctrl-C during the search, the columns that join predictions back, the Python API's
feature store, and the messages of ``fit``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import polymodal
from polymodal.cli.main import app
from polymodal.fit import TablePredictor, read_table, rows_table
from polymodal.fit.columns import describe_column
from tests.fit.test_fit import FAST, _image_table, _tabular_rows, _write_csv


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A predictor of high/low from x and colour, fit on a table with identifier-like columns of other names."""
    folder = tmp_path_factory.mktemp("fitted")
    rows = [{"sku": 1000 + i, "ticket": f"T-{i:05d}", **r} for i, r in enumerate(_tabular_rows(120, 0))]
    table = read_table(_write_csv(folder / "t.csv", rows))
    predictor = TablePredictor.fit(table, "label", kinds={"sku": "ignore"}, time_limit=10, candidates=FAST)
    assert {c.name: c.kind for c in predictor.columns}["ticket"] == "ignore"  # detected: every value differs
    return predictor.save(folder / "model")


def _test_rows() -> list[dict]:
    rows = [{"sku": 5000 + i, "ticket": f"X-{i}", **r} for i, r in enumerate(_tabular_rows(40, 1))]
    rows[0]["label"] = "octagon"  # a class the model cannot predict: an error, not a row left out
    rows[1]["label"] = ""
    rows[2]["label"] = "NA"
    return rows


def test_evaluate_counts_unknown_labels_as_errors_and_says_what_it_left_out(fitted: Path) -> None:
    predictor = TablePredictor.load(fitted)
    rows = _test_rows()
    with pytest.warns(UserWarning, match=r"evaluated 38 rows; left out 2 .*'octagon' \(1 rows\)"):
        metrics = predictor.evaluate(rows)
    assert metrics["rows"] == {"scored": 38, "left_out": 2, "unreadable": 0, "unknown": {"octagon": 1}}
    assert sum(c["support"] for c in metrics["per_class"].values()) == 38
    assert metrics["per_class"]["octagon"]["recall"] == 0.0
    correct = sum(a == r["label"] for a, r in zip(predictor.predict(rows).labels, rows))
    assert metrics["accuracy"] == pytest.approx(correct / 38)


def test_predict_evaluate_and_model_evaluate(fitted: Path, tmp_path: Path) -> None:
    table = _write_csv(tmp_path / "test.csv", _test_rows())
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(app, ["predict", str(fitted), str(table), "--out", str(out), "--evaluate", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["rows"]["scored"] == 38 and 0.5 < metrics["accuracy"] < 1.0
    text = CliRunner().invoke(app, ["predict", str(fitted), str(table), "--out", str(out), "--evaluate"])
    output = " ".join(text.output.split())
    assert "evaluated 38 rows: accuracy" in output and "left out: 2 without a usable label" in output
    assert "labels the model does not know: octagon 1" in output
    with pytest.warns(UserWarning, match="left out 2"):
        assert polymodal.load(fitted).evaluate(str(table))["accuracy"] == metrics["accuracy"]
    unlabelled = _write_csv(tmp_path / "new.csv", [{"x": 1.0, "colour": "red"}])
    result = CliRunner().invoke(app, ["predict", str(fitted), str(unlabelled), "--out", str(out), "--evaluate"])
    assert result.exit_code == 1 and "has no label column 'label'" in result.output


def test_predictions_keep_identifier_and_ignored_columns(fitted: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    table = _write_csv(tmp_path / "test.csv", _test_rows())
    assert CliRunner().invoke(app, ["predict", str(fitted), str(table), "--out", str(out)]).exit_code == 0
    with open(out) as f:
        written = list(csv.DictReader(f))
    assert list(written[0])[:4] == ["row", "sku", "ticket", "prediction"]
    assert (written[3]["sku"], written[3]["ticket"]) == ("5003", "X-3")


def test_a_folder_predict_names_each_file(tmp_path: Path) -> None:
    for row in _image_table(tmp_path / "src", 16, 0):
        folder = tmp_path / "photos" / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / row["photo"]).rename(folder / Path(row["photo"]).name)
    predictor = TablePredictor.fit(read_table(tmp_path / "photos"), "label", time_limit=10, candidates=FAST[:1])
    rows = predictor.predict(tmp_path / "photos", progress=False).to_rows()
    assert rows[0]["path"].startswith("blue/") and rows[0]["prediction"] == "blue"


def test_a_class_only_the_validation_table_has_is_no_model_class(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", _tabular_rows(60, 0))
    val = _write_csv(tmp_path / "val.csv", [*_tabular_rows(20, 1), {"x": 1.0, "colour": "red", "label": "octagon"}])
    lines: list[str] = []
    with pytest.warns(UserWarning, match=r"--val has classes the training table lacks.*'octagon' \(1 rows\)"):
        predictor = TablePredictor.fit(
            read_table(train), "label", val=read_table(val), time_limit=5, candidates=FAST, say=lines.append
        )
    assert predictor.problem.classes == ("high", "low")
    assert predictor.summary["rows"]["validation"] == 20 and any("octagon" in line for line in lines)


def test_ctrl_c_during_the_search_saves_the_best_candidate_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from polymodal.fit import search

    trained = search.train_network
    calls = []

    def interrupted_second(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return trained(*args, **kwargs)

    monkeypatch.setattr(search, "train_network", interrupted_second)
    table = _write_csv(tmp_path / "t.csv", _tabular_rows(80, 0))
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["fit", str(table), "-y", "label", "--out", str(out), "--time-limit", "20"])
    assert result.exit_code == 130, result.output
    assert "interrupted: keeping the best of the 1 candidates trained" in result.output
    assert "saved the best candidate trained so far" in " ".join(result.output.split())
    fitted = json.loads((out / "fit.json").read_text())
    assert fitted["interrupted"] and len(fitted["leaderboard"]) == 1
    assert TablePredictor.load(out).predict(read_table(table), progress=False).labels
    assert not (tmp_path / "model.logs").exists()
    calls.clear()
    calls.append(1)  # the first candidate is now the interrupted one: nothing to keep
    again = CliRunner().invoke(app, ["fit", str(table), "-y", "label", "--out", str(tmp_path / "m2")])
    assert again.exit_code == 130 and "nothing written" in again.output
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m2.logs").exists()


def test_the_python_api_uses_the_clis_feature_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from polymodal.fit import features

    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    rows = [{"review": f"I {'loved' if i % 2 else 'hated'} item {i}", "label": i % 2} for i in range(30)]
    predictor = TablePredictor.fit(rows_table(rows, tmp_path), "label", time_limit=20, candidates=FAST[:1])
    assert (tmp_path / "cache" / "features.sqlite").is_file()
    directory = predictor.save(tmp_path / "model")
    monkeypatch.setattr(features, "_text_tower", lambda: pytest.fail("the tower ran although every text was stored"))
    assert len(polymodal.load(directory).predict(rows).labels) == 30
    with pytest.raises(pytest.fail.Exception, match="the tower ran"):
        predictor.predict(rows, store=False)


def test_a_numeric_columns_example_is_a_number() -> None:
    assert describe_column("n", ["three", *map(str, range(40))]).example == "0"  # not the bad cell


def test_features_that_eat_the_time_limit_are_said(tmp_path: Path) -> None:
    lines: list[str] = []
    TablePredictor.fit(rows_table(_tabular_rows(60, 0), tmp_path), "label", time_limit=1e-3, say=lines.append)
    assert any("its first candidate may stop under-trained" in line for line in lines)


def test_a_failed_fit_quotes_spaced_names_and_leaves_no_logs(tmp_path: Path) -> None:
    table = _write_csv(tmp_path / "t.csv", [{"Farbe ": r["colour"], "x": r["x"]} for r in _tabular_rows(20, 0)])
    result = CliRunner().invoke(app, ["fit", str(table), "-y", "Farbe", "--out", str(tmp_path / "m")])
    assert result.exit_code == 1 and "columns: 'Farbe ', x" in " ".join(result.output.split())
    assert not (tmp_path / "m.logs").exists()


def test_the_seed_help_promises_no_same_predictor() -> None:
    import inspect

    from polymodal.cli.fit import fit

    help_text = inspect.signature(fit).parameters["seed"].default.help
    assert "give the same predictor" not in help_text and "depends on the machine" in help_text


def test_ctrl_c_during_fine_tuning_keeps_the_searched_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C while --fine-tune trains the towers keeps what the search chose, as one during the search keeps its
    best (it wrote nothing, saying no candidate had been trained)."""
    from polymodal.fit import predictor as predictor_module

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(predictor_module, "_fine_tune", interrupted)
    table = _write_csv(tmp_path / "t.csv", _tabular_rows(80, 0))
    lines: list[str] = []
    fitted = TablePredictor.fit(
        read_table(table), "label", time_limit=20, candidates=FAST[:1], fine_tune=True, say=lines.append
    )
    assert fitted.summary["interrupted"] and any("interrupted fine-tuning: keeping the searched" in x for x in lines)
    assert fitted.predict(read_table(table), progress=False).labels
