"""Indexes of clips: a folder of videos (beside an image) indexed per clip or per segment with its times, bad clips
counted and named, search by text and by a clip (library and CLI), add keeping the index's segments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import polymodal
from polymodal.cli.main import app
from polymodal.index import VectorIndex, add_to_index, build_index, open_for_search, search_text, search_video, store
from tests.api.video_model import colour_model_dir, picture, write_clip  # noqa: F401
from tests.index.fixtures import write_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def model(colour_model_dir: Path):  # type: ignore[no-untyped-def]  # noqa: F811
    return polymodal.load(colour_model_dir, precision="fp32")


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    """Three clips (red 2 s, blue 1.5 s, red then blue 2 s), a red picture, a cut MP4 and an empty one."""
    folder = tmp_path / "videos"
    write_clip(folder / "red.mp4", ["red"], 2.0)
    write_clip(folder / "blue.mp4", ["blue"], 1.5)
    write_clip(folder / "more" / "red-then-blue.mp4", ["red", "blue"], 1.0)
    picture("red").save(folder / "still.png")
    (folder / "cut.mp4").write_bytes((folder / "red.mp4").read_bytes()[:300])
    (folder / "empty.mp4").write_bytes(b"")
    return folder


def moments(hits) -> list[tuple[str, float | None]]:  # noqa: ANN001
    return [(Path(h.path).name, h.metadata.get("start")) for h in hits]


def test_clips_are_indexed_one_item_each_and_bad_clips_counted(tmp_path: Path, videos: Path, model) -> None:  # noqa: ANN001
    result = build_index(videos, tmp_path / "idx", model, chunk_size=2)
    assert (result.added, result.skipped) == (4, 2)
    skipped = [json.loads(line) for line in (tmp_path / "idx" / "skipped.jsonl").read_text().splitlines()]
    assert sorted(Path(s["path"]).name for s in skipped) == ["cut.mp4", "empty.mp4"]
    assert all(Path(s["path"]).name in s["reason"] for s in skipped), "the reason names the file"
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["counts"] == {"image": 1, "text": 0, "video": 3}
    idx, loaded = open_for_search(tmp_path / "idx", model)
    with idx:
        (hits,) = search_text(idx, loaded, "a blue picture", k=3, kind="video")
        assert moments(hits) == [("blue.mp4", None), ("red-then-blue.mp4", None), ("red.mp4", None)]
        ids = store.all_ids(idx.conn)
        by_path = {it.path: v for it, v in zip(idx.items(ids).values(), idx.vectors(ids))}
        np.testing.assert_allclose(
            by_path[str(videos / "red.mp4")], model.embed_video(videos / "red.mp4")[0], atol=1e-5
        )
        # A clip finds the picture of its colour among the images too.
        (by_clip,) = search_video(idx, loaded, videos / "red.mp4", k=1, kind="image")
        assert Path(by_clip[0].path).name == "still.png"


def test_segments_are_items_with_their_times_and_add_cuts_new_clips_alike(tmp_path: Path, videos: Path, model) -> None:  # noqa: ANN001
    result = build_index(videos, tmp_path / "idx", model, segment_seconds=1.0)
    assert (result.added, result.skipped) == (7, 2)  # 2 + 2 + 2 segments and the picture
    with VectorIndex.open(tmp_path / "idx") as idx:
        assert idx.meta.segment_seconds == 1.0
        items = idx.items(store.all_ids(idx.conn))
        times = sorted(
            (Path(it.path).name, it.metadata["start"], it.metadata["end"])
            for it in items.values()
            if it.kind == "video"
        )
        assert times == [
            ("blue.mp4", 0.0, 1.0),
            ("blue.mp4", 1.0, 1.5),
            ("red-then-blue.mp4", 0.0, 1.0),
            ("red-then-blue.mp4", 1.0, 2.0),
            ("red.mp4", 0.0, 1.0),
            ("red.mp4", 1.0, 2.0),
        ]
        (id_second,) = [i for i, it in items.items() if it.path.endswith("red-then-blue.mp4") and it.metadata["start"]]
        segment = list(model.video_segments(str(videos / "more" / "red-then-blue.mp4"), 1.0))[1]
        np.testing.assert_allclose(idx.vectors([id_second])[0], model.embed_video(segment.clip)[0], atol=1e-5)
    idx, loaded = open_for_search(tmp_path / "idx", model)
    with idx:
        (hits,) = search_text(idx, loaded, "a blue picture", k=3, kind="video")
        assert set(moments(hits)) == {("blue.mp4", 0.0), ("blue.mp4", 1.0), ("red-then-blue.mp4", 1.0)}
    extra = tmp_path / "extra"
    write_clip(extra / "blue-then-red.mp4", ["blue", "red"], 1.0)
    added = add_to_index(tmp_path / "idx", extra, model)
    assert added.added == 2
    with VectorIndex.open(tmp_path / "idx") as idx:
        new = [it for it in idx.items(store.all_ids(idx.conn)).values() if it.path.endswith("blue-then-red.mp4")]
        assert sorted(it.metadata["start"] for it in new) == [0.0, 1.0]


def test_cli_builds_segments_and_searches_by_text_and_by_clip(tmp_path: Path, videos: Path, colour_model_dir) -> None:  # noqa: ANN001, F811
    out = tmp_path / "idx"
    args = ["index", "build", videos, "--model", colour_model_dir, "--out", out, "--segment-seconds", "1"]
    built = runner.invoke(app, [str(a) for a in args])
    assert built.exit_code == 0, built.output
    assert "indexed 7 items" in built.output and "skipped 2" in built.output and "cut.mp4" in built.output
    found = runner.invoke(app, ["search", str(out), "a red picture", "--kind", "video", "-k", "1", "--json"])
    assert found.exit_code == 0, found.output
    (hit,) = json.loads(found.stdout)
    assert (
        Path(hit["path"]).name in ("red.mp4", "red-then-blue.mp4") and hit["metadata"]["end"] > hit["metadata"]["start"]
    )
    # The three all-blue segments (blue.mp4's two, red-then-blue.mp4's second) score alike, in any order.
    table = runner.invoke(app, ["search", str(out), "--video", str(videos / "blue.mp4"), "--kind", "video", "-k", "3"])
    assert table.exit_code == 0, table.output
    assert table.output.split()[:6] == ["rank", "score", "kind", "id", "segment", "path"]
    rows = [line.split() for line in table.output.splitlines()[1:] if line.split()[:1] in (["1"], ["2"], ["3"])]
    assert sorted(row[4] for row in rows) == ["0-1", "1-1.5", "1-2"] and {row[5] for row in rows} == {"s"}, table.output
    paths = "".join(table.output.split())  # a long path folds over lines
    assert paths.count("/blue.mp4") == 2 and paths.count("/red-then-blue.mp4") == 1, table.output
    missing = runner.invoke(app, ["search", str(out), "--video", str(tmp_path / "nope.mp4")])
    assert missing.exit_code != 0 and "nope.mp4" in missing.output


def test_a_manifest_of_clips_with_captions_points_texts_at_their_clip(tmp_path: Path, videos: Path, model) -> None:  # noqa: ANN001
    rows = [
        {"id": "r", "video": "videos/red.mp4", "captions": ["a red picture"]},
        {"id": "b", "video": "videos/blue.mp4", "captions": ["a blue picture"]},
        {"id": "gone", "video": "videos/missing.mp4", "captions": ["nothing"]},
    ]
    manifest = write_manifest(tmp_path / "clips.jsonl", rows)
    result = build_index(manifest, tmp_path / "idx", model, texts=True, segment_seconds=1.0)
    assert result.added == 6 and result.skipped == 1  # 2 + 2 segments, 2 captions; the missing clip's row
    with VectorIndex.open(tmp_path / "idx") as idx:
        assert idx.meta.counts == {"image": 0, "text": 2, "video": 4}
        (by_clip,) = search_video(idx, model, videos / "blue.mp4", k=1, kind="text")
        # The text says what it describes: its clip, which /items/{id}/video can then play.
        assert by_clip[0].text == "a blue picture" and by_clip[0].path == str(videos / "blue.mp4")
