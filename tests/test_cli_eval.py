"""``polymodal eval`` through the real typer app: result file, determinism, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.evaluate.provenance import command_line
from polymodal.evaluate.results import load_results
from tests.evaluate.conftest import models, shapes_dir  # noqa: F401  (session fixtures)

runner = CliRunner()


def _metrics(doc: dict) -> list:
    return [
        (r["benchmark"], r["split"], r["metrics"], r["ci95"], r.get("robustness"), r["examples"])
        for r in doc["results"]
    ]


def test_eval_twice_gives_the_same_numbers_and_a_valid_file(tmp_path: Path, shapes_dir: Path, models: dict) -> None:
    docs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        args = [
            "eval",
            str(models["vqa"]),
            "--benchmark",
            "shapes-vqa",
            "--data",
            str(shapes_dir),
            "--split",
            "test",
            "--robustness",
            "--resamples",
            "100",
            "--out",
            str(out),
            "--json",
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == json.loads(out.read_text())
        docs.append(json.loads(out.read_text()))
        load_results(out)  # valid against the schema
    assert _metrics(docs[0]) == _metrics(docs[1])
    first, second = (dict(d["provenance"], created=None) for d in docs)
    assert first == second  # same model hash, data hash, versions, seed and command
    rob = docs[0]["results"][0]["robustness"]
    assert set(rob["missing_modality"]) == {"none", "image", "text"}


def test_eval_table_output(shapes_dir: Path, models: dict) -> None:
    result = runner.invoke(
        app, ["eval", str(models["clip"]), "-b", "shapes-retrieval", "--data", str(shapes_dir), "--resamples", "20"]
    )
    assert result.exit_code == 0, result.output
    assert "shapes-retrieval" in result.stdout and "t2i_R@1" in result.stdout and "test_novel" in result.stdout


def test_eval_errors_are_clear(tmp_path: Path, shapes_dir: Path, models: dict) -> None:
    bad = runner.invoke(app, ["eval", str(models["clip"]), "--benchmark", "shapes-zeroshot,mnist"])
    assert bad.exit_code == 2 and "unknown benchmark(s) mnist" in bad.output
    tmpl = runner.invoke(app, ["eval", str(models["clip"]), "-b", "cifar10", "--templates", "fancy"])
    assert tmpl.exit_code == 2 and "unknown template set 'fancy'" in tmpl.output
    no_model = runner.invoke(app, ["eval", str(tmp_path / "nope"), "-b", "cifar10", "--data", str(tmp_path), "--json"])
    assert no_model.exit_code == 1 and "nope" in json.loads(no_model.stdout)["error"]
    # A broken manifest row: the error names the file and the row, no traceback.
    broken = tmp_path / "shapes"
    broken.mkdir()
    lines = (shapes_dir / "test.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    row["image"] = "images/missing.png"
    lines[1] = json.dumps(row)
    (broken / "test.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copytree(shapes_dir / "images", broken / "images")
    res = runner.invoke(
        app, ["eval", str(models["clip"]), "-b", "shapes-retrieval", "--data", str(broken), "--split", "test"]
    )
    assert res.exit_code == 1 and "test.jsonl" in res.output and "row 2" in res.output and "Traceback" not in res.output


def test_command_line_is_pasteable() -> None:
    argv = ["/venv/bin/polymodal", "eval", "runs/m", "--data", "my data", "-b", "cifar10"]
    assert command_line(argv) == "polymodal eval runs/m --data 'my data' -b cifar10"
    assert command_line(["/src/polymodal/__main__.py", "eval", "m"]) == "polymodal eval m"
