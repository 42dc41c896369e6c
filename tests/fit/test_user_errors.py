"""What ``fit`` and ``predict`` refuse or report rather than quietly train or predict on a table that does not say what
the user meant: columns missing from a table to predict, a column none of whose values can be read, rows left out
for being unreadable or unlabelled, and an existing predictor at ``--out``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import polymodal
from polymodal.cli.main import app
from polymodal.fit import ColumnMismatchError, TablePredictor, read_table, rows_table
from tests.fit.test_fit import FAST, _image_table, _tabular_rows, _write_csv


@pytest.fixture(scope="module")
def fit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A predictor reading x (numeric) and colour (categorical), fit on a table that also has an id."""
    folder = tmp_path_factory.mktemp("fitted")
    rows = [{"id": i, **r} for i, r in enumerate(_tabular_rows(120, 0))]
    predictor = TablePredictor.fit(
        read_table(_write_csv(folder / "t.csv", rows)), "label", time_limit=10, candidates=FAST
    )
    assert predictor.read_columns == ["x", "colour"]
    return predictor.save(folder / "model")


def _predict(fit_dir: Path, table: Path) -> tuple[int, str, Path]:
    out = table.with_name(table.stem + ".predictions.csv")
    result = CliRunner().invoke(app, ["predict", str(fit_dir), str(table), "--out", str(out)])
    return result.exit_code, result.output, out


@pytest.mark.parametrize(
    "rows,expected",
    [
        (
            [{"x": 0.5, "colours": "red"}],
            "no column colour (this predictor reads x, colour); it does not know the table's column colours (renamed?)",
        ),
        (
            [{"a": 1, "b": 2}],
            "no columns x, colour (this predictor reads x, colour); it does not know the table's columns a, b",
        ),
        ([{"id": 1, "x": 0.5, "label": "high"}], "no column colour (this predictor reads x, colour). A column may"),
    ],
    ids=["renamed", "other-columns", "dropped"],
)
def test_predict_refuses_a_table_without_the_predictors_columns(
    fit_dir: Path, tmp_path: Path, rows: list[dict], expected: str
) -> None:
    table = _write_csv(tmp_path / "new.csv", rows)
    code, output, out = _predict(fit_dir, table)
    assert code == 2 and f"new.csv: {expected}" in " ".join(output.split()), output
    assert not out.exists()


def test_predict_takes_extra_columns_and_columns_with_empty_cells(fit_dir: Path, tmp_path: Path) -> None:
    rows = [{"id": 7, "x": 0.5, "colour": "", "label": "high", "comment": "an extra column"}, {"id": 8, "x": -1.0}]
    code, output, out = _predict(fit_dir, _write_csv(tmp_path / "new.csv", rows))
    assert code == 0, output
    assert out.read_text().splitlines()[0].startswith("row,id,prediction")
    jsonl = tmp_path / "new.jsonl"
    jsonl.write_text(json.dumps({"x": 0.5}) + "\n" + json.dumps({"x": 1.5}) + "\n")
    assert _predict(fit_dir, jsonl)[0] == 0  # a JSONL row leaves a key out to say it is missing


def test_the_python_api_checks_a_tables_columns_but_not_rows_as_dicts(fit_dir: Path, tmp_path: Path) -> None:
    renamed = _write_csv(tmp_path / "renamed.csv", [{"x": 0.5, "colours": "red"}])
    model = polymodal.load(fit_dir)
    with pytest.raises(ColumnMismatchError, match="renamed.csv: no column colour"):
        model.predict(str(renamed))
    predictor = TablePredictor.load(fit_dir)
    with pytest.raises(ColumnMismatchError, match="colours"):
        predictor.evaluate(read_table(renamed))
    assert len(model.predict([{"x": 0.5}, {}]).labels) == 2  # a key left out of a dict is a missing cell


def _outside_photos(tmp_path: Path, n: int) -> tuple[Path, list[dict]]:
    """A table folder, and rows whose photos are absolute paths to files outside it."""
    rows = _image_table(tmp_path / "elsewhere", n, 0)
    for row in rows:
        row["photo"] = str(tmp_path / "elsewhere" / row["photo"])
    (tmp_path / "table").mkdir()
    return tmp_path / "table", rows


def test_fit_refuses_an_image_column_no_file_of_which_can_be_read(tmp_path: Path) -> None:
    folder, rows = _outside_photos(tmp_path, 30)
    table = _write_csv(folder / "t.csv", [{**r, "x": i % 3} for i, r in enumerate(rows)])
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["fit", str(table), "--label", "label", "--out", str(out), "--time-limit", "10"])
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and not out.exists(), message
    assert "column 'photo' (image): none of its 30 values can be used, e.g. row " in message
    assert f"escapes the dataset root {folder.resolve()}" in message
    assert f"Media paths must stay inside {folder.resolve()}, the table's folder" in message
    assert "--column photo=ignore" in message
    assert "30 bad cells (photo 30)" in message  # the features line, before the error
    without = TablePredictor.fit(read_table(table), "label", kinds={"photo": "ignore"}, time_limit=5, candidates=FAST)
    assert without.inputs == ["tabular"]  # the escape hatch the error names


def test_fit_refuses_a_numeric_column_without_a_number(tmp_path: Path) -> None:
    rows = _tabular_rows(40, 0)
    with pytest.raises(
        ValueError,
        match=r"column 'colour' \(numeric\): none of its 40 values can be used, e.g. row \d+: '\w+' is not a number",
    ):
        TablePredictor.fit(rows_table(rows, tmp_path), "label", kinds={"colour": "numeric"}, candidates=FAST)


def test_fit_names_the_rows_it_leaves_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    lines = [json.dumps(r) for r in _tabular_rows(60, 0)]
    lines[4] = '{"x": 1.0, "colour": "red", "label"'  # line 5: broken JSON
    lines[9] = "not json"
    lines[11] = json.dumps({"x": 1.0, "colour": "red"})  # line 12: no label
    table = tmp_path / "t.jsonl"
    table.write_text("\n".join(lines) + "\n")
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["fit", str(table), "--label", "label", "--out", str(out), "--time-limit", "10"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "57 labelled rows (left out: 2 unreadable, 1 without a label)" in output
    assert "left out: 2 unreadable, 1 without a label; 0 bad cells: each listed in" in output
    listed = [json.loads(line) for line in (out / "bad_samples.jsonl").read_text().splitlines()]
    assert [(e["row"], e["kind"]) for e in listed] == [(5, "bad_json"), (10, "bad_json"), (12, "missing_label")]
    assert listed[2]["field"] == "label" and "no 'label' value" in listed[2]["reason"]
    fitted = json.loads((out / "fit.json").read_text())
    assert fitted["rows"]["unreadable"] == 2 and fitted["rows"]["unlabelled"] == 1 and fitted["bad_cells"] == 0
    assert fitted["rows"]["train"] + fitted["rows"]["validation"] == 57


def test_fit_says_each_warning_once_as_it_happens_and_logs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A column that is the label recoded: one `warning:` line on stderr (not Python's file:line form), also in the
    predictor's fit.log; a --val class the table lacks is a line of fit's own output, said once (not again as a
    warning)."""
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    rows = [{**r, "code": r["label"].upper()} for r in _tabular_rows(60, 0)]
    table = _write_csv(tmp_path / "t.csv", rows)
    val = _write_csv(tmp_path / "v.csv", [*[{**r, "code": ""} for r in _tabular_rows(20, 1)], {"x": 1, "label": "odd"}])
    out = tmp_path / "model"
    args = ["fit", str(table), "--label", "label", "--val", str(val), "--out", str(out), "--time-limit", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(said) == 1, result.stderr
    assert said[0].startswith("warning: column 'code' gives the label 'label' away: each of its 2 values")
    assert "UserWarning" not in result.stderr
    assert result.stdout.count("--val has classes the training table lacks") == 1  # fit says it, once
    assert "--val has classes" not in result.stderr
    logged = (out / "fit.log").read_text().splitlines()
    assert [line for line in logged if line.startswith("warning:")] == said
    assert sum("--val has classes" in line for line in logged) == 1


def test_a_validation_tables_unlabelled_rows_are_counted_too(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", _tabular_rows(60, 0))
    val = _write_csv(tmp_path / "val.csv", [*_tabular_rows(20, 1), {"x": 1.0, "colour": "red", "label": ""}])
    lines: list[str] = []
    predictor = TablePredictor.fit(
        read_table(train), "label", val=read_table(val), time_limit=5, candidates=FAST, say=lines.append
    )
    assert predictor.summary["rows"] == {"train": 60, "validation": 20, "unreadable": 0, "unlabelled": 1}
    assert lines[0].startswith("80 labelled rows (left out: 0 unreadable, 1 without a label)")
    with pytest.raises(ValueError, match="val.csv: no row has a 'label' value"):
        TablePredictor.fit(read_table(train), "label", val=read_table(_write_csv(val, [{"x": 1.0, "colour": "red"}])))


def test_fit_refuses_an_existing_output_unless_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    table = _write_csv(tmp_path / "t.csv", _tabular_rows(60, 0))
    out = tmp_path / "model"
    runner = CliRunner()

    def fit(*more: str) -> tuple[int, str]:
        result = runner.invoke(app, ["fit", str(table), "-y", "label", "--out", str(out), "--time-limit", "5", *more])
        return result.exit_code, " ".join(result.output.split())

    out.mkdir()  # an empty folder is fine
    assert fit()[0] == 0
    first = (out / "fit.json").read_bytes()
    log = (out / "fit.log").read_text()
    assert not (tmp_path / "model.logs").exists()  # its files were copied into the predictor
    assert fit("--seed", "1") == (
        1,
        f"error: {out}: already holds a fitted predictor (pass overwrite=True / --overwrite to replace it)",
    )
    assert (out / "fit.json").read_bytes() == first and (out / "fit.log").read_text() == log
    assert fit("--seed", "1", "--overwrite")[0] == 0
    assert json.loads((out / "fit.json").read_text())["seed"] == 1
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["fit", str(table), "-y", "label", "--out", str(other), "--json"])
    assert result.exit_code == 1 and "notes: exists and is not an empty directory" in json.loads(result.stdout)["error"]
    result = runner.invoke(app, ["fit", str(table), "-y", "label", "--out", str(other), "--overwrite", "--json"])
    assert result.exit_code == 1 and "or a fitted predictor" in json.loads(result.stdout)["error"]  # never deleted
    assert (other / "keep.txt").read_text() == "mine"


def test_a_label_that_is_no_number_is_named_as_such_not_as_missing(tmp_path: Path) -> None:
    from polymodal.fit.columns import detect_problem
    from polymodal.fit.predictor import labelled_rows

    table = rows_table([{"x": 1, "price": 3.5}, {"x": 2, "price": "12kg"}, {"x": 3, "price": ""}], tmp_path)
    problem = detect_problem("price", [3.5, 4.0], "regression")
    kept, left_out = labelled_rows(table, problem)
    assert len(kept) == 1
    assert [(e.row, e.kind, e.reason) for e in left_out] == [
        (2, "bad_label", "'price' is '12kg', not a number: the row is left out"),
        (3, "missing_label", "no 'price' value: the row is left out"),
    ]
