"""``polymodal classify | caption | ask`` through the real typer app, against the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import polymodal
from polymodal.cli.main import app
from tests.index.fixtures import clip_model, tiny_clip, write_images  # noqa: F401
from tests.tiny_models import ANSWERS, save_tiny_model

runner = CliRunner()


def invoke(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("task-images"), 2)


def test_classify_matches_the_api(images: list[Path], tiny_clip: Path, clip_model) -> None:
    result = invoke("classify", *images, "--labels", "red, blue,green", "--model", tiny_clip, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    expected = clip_model.classify([str(p) for p in images], ["red", "blue", "green"])
    for row, exp in zip(rows, expected):
        assert [p["label"] for p in row["predictions"]] == [lab for lab, _ in exp]
        assert sum(p["score"] for p in row["predictions"]) == pytest.approx(1.0, abs=1e-4)
    top = json.loads(
        invoke("classify", images[0], "-l", "red,blue,green", "--top-k", "1", "-m", tiny_clip, "--json").stdout
    )
    assert len(top[0]["predictions"]) == 1
    # --precision reaches the model (as for eval, index and serve): a bf16 load gives the API's bf16 figures.
    pinned = invoke("classify", *images, "-l", "red,blue,green", "-m", tiny_clip, "--precision", "bf16", "--json")
    assert pinned.exit_code == 0, pinned.output
    bf16 = polymodal.load(tiny_clip, precision="bf16").classify([str(p) for p in images], ["red", "blue", "green"])
    got = [{p["label"]: p["score"] for p in row["predictions"]} for row in json.loads(pinned.stdout)]
    assert got == [pytest.approx(dict(exp), abs=1e-5) for exp in bf16]
    assert got != [pytest.approx(dict(exp), abs=1e-6) for exp in expected]  # not the suite's fp32 figures
    assert invoke("caption", images[0], "-m", tiny_clip, "--precision", "fp64").exit_code != 0


def test_classify_errors(images: list[Path], tiny_clip: Path, tmp_path: Path) -> None:
    result = invoke("classify", images[0], "--labels", "red", "--model", tiny_clip)
    assert result.exit_code == 2 and "at least two" in result.output
    result = invoke("classify", tmp_path / "nope.png", "--labels", "a,b", "--model", tiny_clip)
    assert result.exit_code == 1 and "nope.png: no such file" in result.output
    result = invoke("classify", tmp_path, "--labels", "a,b", "--model", tiny_clip)
    assert result.exit_code == 1 and "a directory; give its files" in result.output
    result = invoke("classify", images[0], "--labels", "a,b", "--model", tmp_path / "none", "--templates", "bogus")
    assert result.exit_code == 2 and "--templates: unknown template set 'bogus'; choose from" in result.output
    deep = tmp_path / ("a-long-folder-name-" * 6)
    deep.mkdir()
    (deep / "x.png").write_bytes(images[0].read_bytes())
    result = invoke("classify", deep / "x.png", "--labels", "a,b", "--model", tiny_clip)
    assert result.exit_code == 0 and "x.png" in result.output.replace("\n", "")  # folded, not cut short
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = invoke("classify", bad, "--labels", "a,b", "--model", tiny_clip)
    assert result.exit_code == 1 and "bad.png" in result.output and "Traceback" not in result.output


def test_caption_and_ask_refuse_a_dual_encoder(images: list[Path], tiny_clip: Path) -> None:
    result = invoke("caption", images[0], "--model", tiny_clip)
    assert result.exit_code == 2 and "cannot caption" in result.output
    result = invoke("ask", images[0], "what color?", "--model", tiny_clip, "--json")
    assert result.exit_code == 2 and "cannot answer" in json.loads(result.stdout)["error"]


def test_caption_and_ask_match_the_api(images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("task-models")
    captioner, vqa = save_tiny_model("captioner", root / "cap"), save_tiny_model("vqa", root / "vqa")
    rows = json.loads(invoke("caption", *images, "--model", captioner, "--max-new-tokens", "5", "--json").stdout)
    assert [r["caption"] for r in rows] == polymodal.load(captioner).caption([str(p) for p in images], max_new_tokens=5)
    rows = json.loads(
        invoke("ask", images[0], "what color is the shape", "is there a circle", "--model", vqa, "--json").stdout
    )
    assert [r["question"] for r in rows] == ["what color is the shape", "is there a circle"]
    assert all(r["answer"] in ANSWERS for r in rows)
    text = invoke("ask", images[0], "what color is the shape", "--model", vqa).stdout
    assert text.strip() == f"what color is the shape -> {rows[0]['answer']}"  # the answer set apart from the question


@pytest.mark.slow
def test_default_model_is_polymodal_base(images: list[Path]) -> None:
    pytest.importorskip("polymodal.backends.conse", reason="polymodal-base needs the 'pretrained' extra")
    result = invoke("classify", images[0], "--labels", "a cat,a dog", "--json")
    assert result.exit_code == 0, result.output
    assert {p["label"] for p in json.loads(result.stdout)[0]["predictions"]} == {"a cat", "a dog"}
