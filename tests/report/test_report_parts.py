"""The report's pieces: escaping, thumbnails, run discovery, asset files."""

from __future__ import annotations

import copy
import html
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from polymodal.report import ReportError, load_runs, write_report
from polymodal.report.blocks import Document, ExampleCard, ExampleGrid, Paragraph, Table
from polymodal.report.html import render_html
from polymodal.report.markdown import md_escape, render_markdown
from polymodal.report.runs import load_run
from polymodal.report.thumbnails import Thumbnails
from tests.report.conftest import result_document, write_result, write_training


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("cross_attention", "cross_attention"),  # intraword underscore: no emphasis, left alone
        ("_x_", r"\_x\_"),
        ("a | b", r"a \| b"),
        ("[click](javascript:alert(1))", r"\[click\](javascript:alert(1))"),
        ("<img src=x onerror=alert(1)>", r"\<img src=x onerror=alert(1)\>"),
        ("line\nbreak", "line break"),
        ("**bold** `code` &amp;", r"\*\*bold\*\* \`code\` \&amp;"),
    ],
)
def test_md_escape(text: str, escaped: str) -> None:
    assert md_escape(text) == escaped


def test_renderers_escape_every_text_field() -> None:
    evil = '<b onclick="x">"quoted"</b>'
    doc = Document(
        title=evil,
        blocks=[
            Paragraph(evil),
            Table([evil, evil], [[evil, evil]], caption=evil),
            ExampleGrid(evil, [ExampleCard(None, evil, [(evil, evil)], correct=True)]),
        ],
    )
    page = render_html(doc)
    assert "<b " not in page and 'onclick="' not in page
    assert page.count(html.escape(evil)) >= 8
    markdown = render_markdown(doc)
    assert not re.search(r"(?<!\\)<b ", markdown)  # every < is backslash-escaped
    assert markdown.count(r"\<b onclick") >= 7


def test_thumbnails_shrink_keep_aspect_and_cache(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGBA", (400, 100), (10, 20, 30, 128)).save(path)
    thumbs = Thumbnails()
    asset, note = thumbs.get(str(path))
    assert note is None and asset is not None
    assert (asset.width, asset.height) == (128, 32)
    assert thumbs.get(str(path))[0] is asset  # decoded once
    (tmp_path / "text.png").write_text("not an image")
    asset, note = thumbs.get(str(tmp_path / "text.png"))
    assert asset is None and note


def test_colliding_names_get_their_parent(tmp_path: Path) -> None:
    write_training(tmp_path / "a" / "run")
    write_training(tmp_path / "b" / "run")
    runs = load_runs([tmp_path / "a" / "run", tmp_path / "b" / "run"])
    assert [r.name for r in runs] == ["a/run", "b/run"]


def test_later_result_file_wins_a_duplicate(tmp_path: Path, images: dict[str, Path]) -> None:
    old = result_document(images, 0.5)
    new = copy.deepcopy(result_document(images, 0.9))
    new["provenance"]["created"] = "2026-11-23T00:00:00Z"
    write_result(tmp_path / "run", new, name="a.json")  # sorts first by name, but is newer
    write_result(tmp_path / "run", old, name="b.json")
    (tmp_path / "run" / "train_summary.json").write_text("{}")  # other JSON in a run dir is ignored
    run = load_run(tmp_path / "run")
    assert len(run.eval_files) == 2
    assert run.results()[("shapes-classify", "test")].metrics["accuracy"] == 0.9


def test_result_files_in_eval_subfolder(tmp_path: Path, images: dict[str, Path]) -> None:
    write_result(tmp_path / "run" / "eval", result_document(images))
    assert len(load_run(tmp_path / "run").eval_files) == 1


def test_training_only_report_and_stale_assets(tmp_path: Path) -> None:
    run = write_training(tmp_path / "run")
    stale = run / "report_assets" / "plot-99-old.png"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    mine = run / "report_assets" / "keep-me.png"
    mine.write_bytes(b"user file")
    written = write_report([run])
    assert written.markdown == run / "report.md"
    md = written.markdown.read_text()
    assert "## Training" in md and "training-loss" in md
    assert "Metrics by run" not in md  # one run: nothing to compare
    assert not stale.exists() and mine.exists()
    assert written.assets == 2


def test_no_inputs() -> None:
    with pytest.raises(ReportError, match="at least one"):
        write_report([])


def test_reads_what_the_eval_writer_writes(tmp_path: Path, images: dict[str, Path]) -> None:
    """Contract with ``polymodal eval``: a file written by its own models and writer reports."""
    results = pytest.importorskip("polymodal.evaluate.results")
    doc = result_document(images)
    doc.pop("future_key")
    doc["provenance"]["versions"]["transformers"] = None  # the writer records "not installed" as null
    path = results.dump_results(results.ResultFile.model_validate(doc), tmp_path / "run" / "eval.json")
    run = load_run(path)
    assert run.results()[("shapes-vqa", "test_novel")].details.per_question_type == {
        "color": 0.7,
        "shape": 0.5,
        "count": 0.3,
    }
    assert run.eval_files[0][1].provenance.versions["transformers"] is None


def test_runs_without_a_benchmark_get_no_column(tmp_path: Path, images: dict[str, Path]) -> None:
    full = result_document(images)
    vqa_only = result_document(images)
    vqa_only["results"] = vqa_only["results"][2:]
    write_result(tmp_path / "full", full)
    write_result(tmp_path / "vqa", vqa_only)
    from polymodal.report.build import build_document

    tables = [
        b
        for b in build_document(load_runs([tmp_path / "full", tmp_path / "vqa"]), max_examples=0).blocks
        if isinstance(b, Table) and b.columns[0] == "metric"
    ]
    assert [t.columns[1:] for t in tables] == [["full"], ["full"], ["full", "vqa"]]


def test_plots_are_deterministic_and_take_any_name() -> None:
    from polymodal.report import plots

    # A pair of "$" starts matplotlib mathtext; "$^$" is invalid math and unescaped fails savefig.
    groups = [("run $_$ 2", 0, [0.5, None]), ("a$\\frac$b", 1, [0.25, 0.75])]
    first = plots.grouped_bars("per $^$ class", ["x$^$", "y"], groups, errors=[[(0.4, 0.6), None], [None, None]])
    assert first == plots.grouped_bars(
        "per $^$ class", ["x$^$", "y"], groups, errors=[[(0.4, 0.6), None], [None, None]]
    )
    with Image.open(io.BytesIO(first)) as im:
        assert im.format == "PNG" and im.size == (round(plots.WIDTH * plots.DPI), round(plots.HEIGHT * plots.DPI))
    heatmap = plots.confusion_heatmap("c", ["a", "b"], [[3, 0], [1, 2]])
    assert heatmap.startswith(b"\x89PNG")


def test_metric_tables_say_how_many_items_the_headline_averages(tmp_path: Path, images: dict[str, Path]) -> None:
    from polymodal.report.build import build_document

    counted = result_document(images)
    counted["results"][0].update(n=4, unit="images")
    counted["results"][1].update(n=1, unit="captions")
    write_result(tmp_path / "counted", counted)
    write_result(tmp_path / "old", result_document(images))  # written before results recorded n
    blocks = build_document(load_runs([tmp_path / "counted", tmp_path / "old"]), max_examples=0).blocks
    classify, retrieval, vqa = [b for b in blocks if isinstance(b, Table) and b.columns[0] == "metric"]
    # Right under the headline: an accuracy of 0.75 on 4 images reads as one.
    assert classify.rows[1] == ["n", "4 images", "—"] and "n: the items" in (classify.caption or "")
    assert retrieval.rows[1] == ["n", "1 caption", "—"]
    assert [row[0] for row in vqa.rows] == ["vqa_accuracy"]  # no file gives n: no row


def test_skipped_benchmarks_are_listed_with_their_reason(tmp_path: Path, images: dict[str, Path]) -> None:
    reason = "benchmark shapes-caption needs a model that can caption; runs/clip can: embed"
    doc = result_document(images)
    doc["skipped"] = [
        {"benchmark": "shapes-caption", "split": "test", "reason": reason},
        {"benchmark": "shapes-vqa", "split": "test_novel", "reason": "superseded by the result beside it"},
    ]
    write_result(tmp_path / "run", doc)
    md = write_report([tmp_path / "run"]).markdown.read_text()
    section = md.split("## Not run\n", 1)[1]
    assert f"| shapes-caption | test | run | {md_escape(reason)} |" in section
    assert "superseded" not in section  # the same file holds a result for shapes-vqa · test_novel


def test_asset_names_keep_the_whole_benchmark_split_and_run(tmp_path: Path, images: dict[str, Path]) -> None:
    doc = result_document(images)
    doc["results"][0].update(benchmark="shapes-audio-zeroshot", split="test_novel")  # with a confusion matrix
    doc["results"][1].update(benchmark="shapes-speech-retrieval", split="test_novel")  # with recall at K
    run = "clap-with-a-rather-long-descriptive-run-name"
    write_result(tmp_path / run, doc)
    md = write_report([tmp_path / run]).markdown.read_text()
    names = [name.split("-", 2)[2] for name in re.findall(r"report_assets/(plot-[^)]+)\.png", md)]  # no plot-NN-
    assert f"shapes-audio-zeroshot-test-novel-confusion-{run}" in names, names
    assert "shapes-speech-retrieval-test-novel-recall" in names, names


def test_a_slug_too_long_for_a_file_name_ends_in_a_hash_of_the_whole() -> None:
    from polymodal.report.build import MAX_SLUG, _slugify

    first, second = _slugify("x" * 300 + "-a"), _slugify("x" * 300 + "-b")
    assert len(first) == len(second) == MAX_SLUG and first != second
