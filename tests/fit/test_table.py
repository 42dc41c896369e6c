"""Reading a user's table: CSV, JSONL, Parquet and class folders; unreadable rows are kept out and named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polymodal.data.errors import BadSampleError
from polymodal.fit.table import read_table, rows_table


def test_csv_and_jsonl_rows_keep_missing_cells_missing(tmp_path: Path) -> None:
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('a,b,label\n1,x,yes\n,y,no\n"3",,yes\n')
    table = read_table(csv_path)
    assert table.columns == ["a", "b", "label"]
    assert table.values("a") == ["1", None, "3"] and table.row_numbers == [2, 3, 4]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(
        json.dumps({"a": 1, "label": "yes"}) + "\nnot json\n" + json.dumps({"b": "z", "label": "no"}) + "\n"
    )
    table = read_table(jsonl)
    assert len(table) == 2 and table.row_numbers == [1, 3]
    assert len(table.bad) == 1 and table.bad[0].row == 2 and "invalid JSON" in str(table.bad[0])


def test_a_file_keeps_a_column_empty_in_every_row_but_rows_as_dicts_have_no_header(tmp_path: Path) -> None:
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("a,photo,label\n1,,yes\n2,,no\n")
    table = read_table(csv_path)
    assert table.header == ["a", "photo", "label"] and table.columns == ["a", "photo", "label"]
    assert table.subset([1]).columns == ["a", "photo", "label"] and table.values("photo") == [None, None]
    assert rows_table([{"a": 1}, {"b": 2}], tmp_path).header is None


def test_parquet_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1.0, None, 3.0], "label": ["a", "b", "a"]}), path)
    table = read_table(path)
    assert table.values("x") == [1.0, None, 3.0] and table.values("label") == ["a", "b", "a"]
    pq.write_table(pa.table({"x": pa.array([None, None], pa.float64()), "label": ["a", "b"]}), path)
    assert read_table(path).columns == ["x", "label"]  # the schema's column, though every cell is empty
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(path.read_bytes()[:40])
    with pytest.raises(BadSampleError, match="unreadable Parquet"):
        read_table(broken)


def test_class_folders_become_path_and_label(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}1.png").write_bytes(b"x")
    (tmp_path / "dog" / "README.txt").write_text("not media")
    table = read_table(tmp_path)
    assert table.rows == [{"path": "cat/cat1.png", "label": "cat"}, {"path": "dog/dog1.png", "label": "dog"}]


def test_unusable_tables_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(BadSampleError, match="empty.csv"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(BadSampleError, match="not a table"):
        read_table(tmp_path / "t.xlsx")
    with pytest.raises(BadSampleError):
        read_table(tmp_path / "missing.csv")
    assert rows_table([{"a": 1}], tmp_path).row_numbers == [1]
