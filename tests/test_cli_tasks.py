"""``polymodal classify | caption | ask`` through the real typer app, against the Python API."""

from __future__ import annotations

import json
import os
import re
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


@pytest.fixture
def mixed(images: list[Path], tmp_path: Path) -> list[Path]:
    """Good, empty, truncated, good, missing, FIFO: the good ones answered, each bad one named with its reason."""
    empty, truncated, fifo = tmp_path / "empty.png", tmp_path / "cut.png", tmp_path / "fifo.png"
    empty.write_bytes(b"")
    truncated.write_bytes(images[1].read_bytes()[:60])
    os.mkfifo(fifo)  # opened, it would block: it must be refused without being read
    return [images[0], empty, truncated, images[1], tmp_path / "missing.png", fifo]


def count_calls(monkeypatch: pytest.MonkeyPatch, method: str) -> list[int]:
    """The number of items of each call of ``Model.<method>``."""
    calls: list[int] = []
    original = getattr(polymodal.Model, method)

    def spy(self, items, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        return original(self, items, *args, **kwargs)

    monkeypatch.setattr(polymodal.Model, method, spy)
    return calls


BAD_REASONS = {
    1: "file is empty (0 bytes)",
    2: "cannot decode image",
    4: "no such file",
    5: "not a regular file",
}


def test_classify_answers_the_good_files_and_names_each_bad_one(
    mixed: list[Path], images: list[Path], tiny_clip: Path, clip_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = clip_model.classify([str(p) for p in images], ["red", "blue"])
    calls = count_calls(monkeypatch, "classify")
    result = invoke("classify", *mixed, "-l", "red,blue", "-m", tiny_clip, "--json")
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)
    assert [r["image"] for r in rows] == [str(p) for p in mixed]  # one entry per file, in order
    for i, row in enumerate(rows):
        if i in BAD_REASONS:
            assert "predictions" not in row and BAD_REASONS[i] in row["error"]
    got = [{p["label"]: p["score"] for p in rows[i]["predictions"]} for i in (0, 3)]
    assert got == [pytest.approx(dict(exp), abs=1e-5) for exp in expected]
    assert calls == [2]  # one model call, on the good files only
    table = invoke("classify", *mixed, "-l", "red,blue", "-m", tiny_clip)
    assert table.exit_code == 1
    assert len(re.findall(r" \d\.\d{3} ", table.stdout)) == 2  # a row per good file (paths folded over lines)
    assert "empty.png" not in table.stdout  # the bad files are on stderr, each with its reason
    for i, reason in BAD_REASONS.items():
        assert f"{mixed[i]}: {reason}" in table.stderr.replace("\n", "")
    assert "4 of 6 files could not be read" in table.stderr
    good = invoke("classify", *images, "-l", "red,blue", "-m", tiny_clip)
    assert good.exit_code == 0 and not good.stderr.count("error")


def test_classify_with_no_usable_file_exits_before_loading_the_model(mixed: list[Path], tmp_path: Path) -> None:
    result = invoke("classify", mixed[4], mixed[5], "-l", "a,b", "-m", tmp_path / "no-model", "--json")
    assert result.exit_code == 1 and "cannot load" not in result.output
    assert json.loads(result.stdout) == [
        {"image": str(mixed[4]), "error": "no such file"},
        {"image": str(mixed[5]), "error": "not a regular file"},
    ]


def test_caption_answers_the_good_files_and_names_each_bad_one(
    mixed: list[Path], images: list[Path], tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    captioner = save_tiny_model("captioner", tmp_path_factory.mktemp("cap-mixed") / "cap")
    expected = polymodal.load(captioner).caption([str(p) for p in images], max_new_tokens=5)
    calls = count_calls(monkeypatch, "caption")
    result = invoke(
        "caption", *mixed, images[0], "-m", captioner, "--max-new-tokens", "5", "--batch-size", "2", "--json"
    )
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)
    assert [r["image"] for r in rows] == [str(p) for p in [*mixed, images[0]]]
    assert [rows[i]["caption"] for i in (0, 3, 6)] == [expected[0], expected[1], expected[0]]
    for i, reason in BAD_REASONS.items():
        assert "caption" not in rows[i] and reason in rows[i]["error"]
    # A batch at a time over the files that passed the path check (0, 2, 3, 6): the batch with the undecodable
    # file 2 in it runs again without it (the model decodes its files).
    assert calls == [2, 1, 2]
    text = invoke("caption", *mixed, "-m", captioner, "--max-new-tokens", "5")
    assert text.exit_code == 1
    assert text.stdout.splitlines() == [f"{images[0]}: {expected[0]}", f"{images[1]}: {expected[1]}"]
    assert f"{mixed[1]}: file is empty (0 bytes)" in text.stderr.replace("\n", "")
