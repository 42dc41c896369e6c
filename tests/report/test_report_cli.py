"""``polymodal report`` end to end on result files and run directories built in tmp_path."""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from polymodal.cli.main import app
from tests.report.conftest import result_document, write_images, write_result, write_training

RUNS = {"concat": 0.75, "gmu": 0.8, "cross_attention": 0.7}
runner = CliRunner()


@dataclass
class Built:
    root: Path
    out: Path
    md: str
    html: str
    payload: dict


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A fusion-type comparison: three run dirs with results and training logs, one report."""
    root = tmp_path_factory.mktemp("fusion")
    images = write_images(root / "images")
    for i, (name, accuracy) in enumerate(RUNS.items()):
        write_result(root / name, result_document(images, accuracy, model=f"runs/{name}/best"))
        write_training(root / name, slope=1.0 + 0.2 * i, preset=f"fusion-{name}")
    out = root / "report"
    result = runner.invoke(app, ["report", *[str(root / n) for n in RUNS], "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return Built(
        root, out, (out / "report.md").read_text(), (out / "report.html").read_text(), json.loads(result.output)
    )


def _md_row(md: str, section: str, first_cell: str) -> list[str]:
    """Cells of the Markdown table row starting with ``first_cell`` in the section ``## section``."""
    body = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0].strip("*") == first_cell:
            return [c.strip("*") for c in cells[1:]]
    raise AssertionError(f"no row {first_cell!r} in section {section!r}")


def test_one_column_per_run_with_values_and_cis(three_runs: Built) -> None:
    header = _md_row(three_runs.md, "shapes-classify · test", "metric")
    assert header == list(RUNS)
    # The slow obvious reference: format each run's numbers from the JSON we wrote.
    expected = [f"{a:.3f} [{a - 0.04:.3f}, {a + 0.03:.3f}]" for a in RUNS.values()]
    assert _md_row(three_runs.md, "shapes-classify · test", "accuracy") == expected
    assert _md_row(three_runs.md, "shapes-classify · test", "macro_f1") == [f"{a - 0.05:.3f}" for a in RUNS.values()]
    assert _md_row(three_runs.md, "shapes-vqa · test_novel", "vqa_accuracy") == [
        f"{a - 0.2:.3f}" for a in RUNS.values()
    ]
    for cell in expected:
        assert cell in three_runs.html
    assert three_runs.payload["runs"] == list(RUNS)


def test_provenance_per_run(three_runs: Built) -> None:
    assert _md_row(three_runs.md, "Provenance", "model hash") == ["abcdef012345"] * 3
    assert _md_row(three_runs.md, "Provenance", "command") == [f"polymodal eval runs/{n}/best" for n in RUNS]
    assert "polymodal 0.1.0, torch 2.13.0" in three_runs.html


def test_training_section(three_runs: Built) -> None:
    assert _md_row(three_runs.md, "Training", "final loss") == ["1.000", "0.800", "0.600"]
    assert _md_row(three_runs.md, "Training", "model.preset") == [f"fusion-{n}" for n in RUNS]
    # The truncated last line of each metrics.jsonl is skipped with a warning naming it.
    assert any("metrics.jsonl, line 13" in w for w in three_runs.payload["warnings"])


def test_training_section_names_the_objective(three_runs: Built) -> None:
    assert _md_row(three_runs.md, "Training", "objective.kind") == ["classification"] * 3


def test_html_is_self_contained(three_runs: Built) -> None:
    html = three_runs.html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html, re.I)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(sources) >= 20
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    # Plots and thumbnails decode; thumbnails (in example cards) are at most 128 px a side.
    thumbs = re.findall(r'<div class="thumb"><img[^>]*src="data:image/png;base64,([^"]*)"', html)
    assert thumbs
    for data in thumbs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert max(im.size) <= 128 and im.size == (128, 64)  # 200x100 source, aspect kept


def test_untrusted_text_is_escaped(three_runs: Built) -> None:
    assert "&lt;script&gt;alert(1)&lt;/script&gt; | pipe" in three_runs.html
    assert r"\<script\>alert(1)\</script\> \| pipe" in three_runs.md
    assert "<script>" not in three_runs.md


def test_markdown_assets_exist(three_runs: Built) -> None:
    refs = re.findall(r"\]\((report_assets/[^)]+\.png)\)", three_runs.md)
    assert len(set(refs)) == three_runs.payload["assets"] == len(list((three_runs.out / "report_assets").glob("*.png")))
    assert three_runs.payload["clips"] == 0  # image runs: no sound clips
    for ref in refs:
        assert (three_runs.out / ref).is_file()
    # Expected plots: metrics comparison, per-class, corruptions, adversarial examples, missing modality, 3 confusion
    # matrices, recall@K, per-question-type, training loss and validation curves.
    names = " ".join(refs)
    for kind in (
        "metrics",
        "per-class",
        "corruptions",
        "adversarial",
        "missing-modality",
        "confusion-gmu",
        "recall",
        "per-question-type",
        "training-loss",
        "training-eval",
    ):
        assert kind in names, kind
    assert "no such file" in three_runs.md  # an example whose image is missing says so


def test_single_file_defaults_out_to_its_folder(tmp_path: Path, images: dict[str, Path]) -> None:
    doc = result_document(images)
    doc["results"] = doc["results"][2:]  # VQA only: quick
    path = write_result(tmp_path / "evals", doc, name="vqa_eval.json")
    result = runner.invoke(app, ["report", str(path)])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "evals" / "report.md").read_text()
    assert _md_row(md, "shapes-vqa · test_novel", "metric") == ["vqa_eval"]
    assert (tmp_path / "evals" / "report.html").is_file()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["results"][0].pop("headline"), "results.0.headline"),
        (lambda d: d["results"][0]["metrics"].update(accuracy="high"), "results.0.metrics.accuracy"),
        (lambda d: d["provenance"].pop("model_hash"), "provenance.model_hash"),
        (lambda d: d["results"][0]["details"]["confusion"]["matrix"].pop(), "results.0.details.confusion"),
        (lambda d: d["results"][1].update(headline="nope"), "results.1"),
        (lambda d: d.update(polymodal_eval=2), "'polymodal_eval'"),
        (
            lambda d: d["results"][0]["robustness"]["corruptions"]["blur"].update(high=0.1),
            "results.0.robustness.corruptions",
        ),
    ],
)
def test_bad_result_file_names_file_and_field(tmp_path: Path, images: dict[str, Path], mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    doc = result_document(images)
    mutate(doc)
    path = write_result(tmp_path / "run", doc)
    result = runner.invoke(app, ["report", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 2
    error = json.loads(result.output)["error"]
    assert str(path) in error and field in error, error


def test_invalid_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    path.write_text('{"polymodal_eval": 1,\n "provenance": }')
    result = runner.invoke(app, ["report", str(path)])
    assert result.exit_code == 2
    assert f"{path}, line 2" in result.output and "invalid JSON" in result.output
    assert "Traceback" not in result.output


def test_nothing_to_report(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "other.json").write_text('{"not": "a result"}')
    result = runner.invoke(app, ["report", str(tmp_path / "empty"), "--json"])
    assert result.exit_code == 2
    assert "nothing to report" in json.loads(result.output)["error"]
    result = runner.invoke(app, ["report", str(tmp_path / "missing"), "--json"])
    assert "no such file or directory" in json.loads(result.output)["error"]


def test_missing_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_training(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = runner.invoke(app, ["report", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 2
    assert "pip install 'polymodal[report]'" in json.loads(result.output)["error"]


@pytest.mark.parametrize(("name", "content"), [("train.jsonl", '{"id": 1}\n{"id": 2}\n'), ("shapes.json", "{}")])
def test_a_file_that_is_not_a_result_file_is_called_one(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    result = runner.invoke(app, ["report", str(path), "--json"])
    assert result.exit_code == 2
    error = json.loads(result.output)["error"]
    assert f"{path}: not a polymodal result file" in error and "polymodal eval --out FILE" in error, error
    assert "'polymodal_eval'" in error


def test_an_unfinished_run_says_how_far_it_got(tmp_path: Path) -> None:
    """A run without train_summary.json (stopped, crashed or still running) is not shown as a finished run."""
    run = write_training(tmp_path / "crashed")
    (run / "train_summary.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()[:6]  # steps 10 to 50 and the eval at 50
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    result = runner.invoke(
        app, ["report", str(run), str(write_training(tmp_path / "done")), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert _md_row(md, "Training", "steps") == ["50 of 100 (unfinished)", "100"]
