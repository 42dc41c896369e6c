"""``polymodal eval`` through the real typer app: result file, determinism, clear errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.data.readers import read_manifest
from polymodal.evaluate.prompts import TEMPLATES
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


def _one_line(text: str) -> str:
    """Output with rich's wrapping undone: words joined by single spaces."""
    return " ".join(text.split())


@pytest.mark.parametrize("width", [80, 50])
def test_eval_table_keeps_every_number_whole_at_80_columns(
    shapes_dir: Path, models: dict, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    # 80 columns: a pipe or a CI log. The names fold; the value, its CI and the robustness values never shrink. At
    # 50 even the folded names do not fit: the table is wider than the terminal, and nothing is cut.
    monkeypatch.setattr("polymodal.cli.eval.console", Console(width=width))
    args = ["eval", str(models["fusion"]), "-b", "shapes-statements", "--data", str(shapes_dir), "--split", "test"]
    result = runner.invoke(app, [*args, "--robustness", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "…" not in result.stdout and max(map(len, lines)) <= 80
    assert any("value" in line and "95% CI" in line for line in lines)
    assert any(re.search(r"\d\.\d{4} │ \[\d\.\d{4}, \d\.\d{4}\] │$", line) for line in lines), result.stdout
    # Three corruptions at their severest and the two modalities dropped in turn: a whole value, no interval.
    robustness = [line for line in lines if re.search(r"│ +\d\.\d{4} │ +│$", line)]
    assert len(robustness) == 5, result.stdout
    assert "shapes-" in result.stdout and "statements" in result.stdout  # folded after its hyphen, not cut


def test_eval_records_and_shows_how_many_items_it_scored(
    tmp_path: Path, shapes_dir: Path, models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("polymodal.cli.eval.console", Console(width=120))
    out = tmp_path / "e.json"
    args = ["eval", str(models["clip"]), "-b", "shapes-zeroshot,shapes-retrieval", "--data", str(shapes_dir)]
    result = runner.invoke(app, [*args, "--split", "test", "--resamples", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    samples = list(read_manifest(shapes_dir / "test.jsonl"))
    one_object = sum(len(s.metadata["objects"]) == 1 for s in samples)
    captions = sum(len(s.text) for s in samples)
    zeroshot, retrieval = json.loads(out.read_text())["results"]
    assert (zeroshot["n"], zeroshot["unit"]) == (one_object, "images")
    assert (retrieval["n"], retrieval["unit"]) == (captions, "captions")  # t2i_R@1: one outcome per caption
    assert re.search(rf"│ accuracy +│ +{one_object} │", result.stdout), result.stdout
    assert re.search(rf"│ t2i_R@1 +│ +{captions} │", result.stdout), result.stdout


def test_an_ineligible_benchmark_is_skipped_and_the_others_run(
    tmp_path: Path, shapes_dir: Path, models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("polymodal.cli.eval.console", Console(width=120))
    # test.jsonl without one-object scenes: shapes-zeroshot has nothing to classify, shapes-retrieval runs.
    data = tmp_path / "shapes"
    shutil.copytree(shapes_dir, data)
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if len(r["objects"]) > 1))
    out = tmp_path / "e.json"
    args = ["eval", str(models["clip"]), "-b", "shapes-zeroshot,shapes-caption,shapes-retrieval", "--data", str(data)]
    result = runner.invoke(app, [*args, "--split", "test", "--resamples", "20", "--out", str(out)])
    # What ran is written and shown, but two benchmarks asked for by name did not run: a script must not pass.
    assert result.exit_code == 1, result.output
    assert "asked for but not run: shapes-zeroshot, shapes-caption" in _one_line(result.stderr)
    doc = json.loads(out.read_text())
    assert [(r["benchmark"], r["split"]) for r in doc["results"]] == [("shapes-retrieval", "test")]
    reasons = {s["benchmark"]: s["reason"] for s in doc["skipped"]}
    assert set(reasons) == {"shapes-zeroshot", "shapes-caption"}
    assert "test.jsonl: none of its" in reasons["shapes-zeroshot"] and "one object" in reasons["shapes-zeroshot"]
    assert "needs a model that can caption" in reasons["shapes-caption"]
    assert load_results(out).skipped[0].benchmark == "shapes-zeroshot"
    assert re.search(r"│ shapes-zeroshot +│ test +│ skipped +│", result.stdout), result.stdout
    # The reason under the table (a long path may fold anywhere: compared without whitespace).
    squeezed = "".join(result.stdout.split())
    assert "".join(f"skipped shapes-zeroshot (test): {reasons['shapes-zeroshot']}".split()) in squeezed
    # Only what runs is announced: no "shapes-caption/test" before its skip.
    assert "shapes-retrieval/test" in result.stderr and "shapes-caption/test" not in result.stderr
    # A default split the data has nothing for is skipped without failing: only test_novel was asked for by default.
    default_splits = runner.invoke(app, [*args[:3], "shapes-zeroshot", *args[4:], "--resamples", "20"])
    assert default_splits.exit_code == 0, default_splits.output
    assert re.search(r"│ shapes-zeroshot +│ test +│ skipped +│", default_splits.stdout), default_splits.stdout
    assert re.search(r"│ shapes-zeroshot +│ test_novel +│ accuracy +│", default_splits.stdout)
    # Nothing could run: an error with every reason, and no result file.
    none_run = runner.invoke(app, [*args[:3], "shapes-zeroshot,shapes-caption", *args[4:], "--split", "test"])
    assert none_run.exit_code == 1
    assert "nothing could run" in none_run.output and "one object" in none_run.output and "caption" in none_run.output


def test_an_unknown_split_names_the_splits_there_are(shapes_dir: Path, models: dict) -> None:
    args = ["eval", str(models["clip"]), "-b", "shapes-zeroshot", "--data", str(shapes_dir), "--split", "valx"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "no split 'valx'" in result.output and "has: train, val, test, test_novel" in _one_line(result.output)


def test_help_and_docs_list_every_option_and_template_set() -> None:
    help_text = _one_line(runner.invoke(app, ["eval", "--help"]).output)
    assert all(name in help_text for name in TEMPLATES), help_text
    # docs/evaluation.md's synopsis names every option of the command.
    docs = (Path(__file__).parents[1] / "docs" / "evaluation.md").read_text()
    synopsis = docs.split("```", 2)[1]
    command = typer.main.get_command(app).commands["eval"]  # type: ignore[attr-defined]
    options = [next(o for o in p.opts if o.startswith("--")) for p in command.params if p.param_type_name == "option"]
    assert {"--benchmark", "--precision", "--judge", "--json"} <= set(options)
    documented = {o for o in options if o in synopsis or o == "--meteor" and "--no-meteor" in synopsis}
    assert documented == set(options), set(options) - documented
    assert all(name in synopsis for name in TEMPLATES)
