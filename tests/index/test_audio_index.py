"""Indexes of sounds: folders and manifests of audio (alone and beside images), bad files counted, search by text
and by a clip (library and CLI), and an image index's table taking sounds."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import polymodal
from polymodal.cli.main import app
from polymodal.index import VectorIndex, add_to_index, build_index, open_for_search, search, search_audio, store
from tests.api.audio_model import CAPTIONS, PITCHES, audio_model_dir, save_audio_model, write_sounds, write_tone  # noqa: F401
from tests.data.test_audio_tracks import write_clip
from tests.index.fixtures import clip_model, tiny_clip, write_images, write_manifest  # noqa: F401


@pytest.fixture(scope="module")
def model(audio_model_dir: Path):  # type: ignore[no-untyped-def]  # noqa: F811
    return polymodal.load(audio_model_dir, precision="fp32")


@pytest.fixture
def sounds(tmp_path: Path) -> tuple[Path, dict[str, list[Path]]]:
    """Six tones (WAV, FLAC, OGG; one subfolder), a truncated WAV, an empty FLAC and a README to ignore."""
    folder = tmp_path / "sounds"
    files = write_sounds(folder)
    (folder / "broken.wav").write_bytes(write_tone(tmp_path / "whole.wav", 440.0).read_bytes()[:30])
    (folder / "more" / "empty.flac").write_bytes(b"")
    (folder / "README.txt").write_text("not a sound")
    return folder, files


def names(hits) -> list[str]:  # noqa: ANN001
    return [Path(h.path).name for h in hits]


def test_a_folder_of_sounds_is_indexed_and_searched_by_text_and_by_clip(tmp_path: Path, sounds, model) -> None:  # noqa: ANN001
    folder, files = sounds
    result = build_index(folder, tmp_path / "idx", model, chunk_size=4)
    assert (result.added, result.skipped) == (6, 2)
    assert result.skipped_by_kind == {"decode": 1, "empty_file": 1}
    skipped = [json.loads(line) for line in (tmp_path / "idx" / "skipped.jsonl").read_text().splitlines()]
    assert sorted(Path(s["path"]).name for s in skipped) == ["broken.wav", "empty.flac"]
    assert all(s["reason"].startswith(s["path"]) for s in skipped), "the reason starts with the file"
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["counts"] == {"image": 0, "text": 0, "audio": 6}
    with VectorIndex.open(tmp_path / "idx") as idx:
        ids = store.all_ids(idx.conn)
        items = idx.items(ids)
        assert {it.kind for it in items.values()} == {"audio"}
        assert sorted(it.metadata["id"] for it in items.values())[-2:] == ["more/high-c.ogg", "more/low-c.ogg"]
        # The index holds what the model gives for each file.
        by_path = {items[i].path: v for i, v in zip(ids, idx.vectors(ids))}
        np.testing.assert_allclose(by_path[str(files["low"][0])], model.embed_audio(files["low"][0])[0], atol=1e-5)
    idx, loaded = open_for_search(tmp_path / "idx", model)
    with idx:
        high, low = search(idx, loaded, "text", [CAPTIONS["high"], CAPTIONS["low"]], k=3)
        assert sorted(names(high)) == sorted(p.name for p in files["high"])
        assert sorted(names(low)) == sorted(p.name for p in files["low"])
        clip = files["high"][1]
        (by_clip,) = search_audio(idx, loaded, clip.read_bytes(), k=6)
        assert by_clip[0].path == str(clip) and by_clip[0].score > 0.999
        assert sorted(names(by_clip[:3])) == sorted(p.name for p in files["high"])


def test_an_audio_model_indexes_clips_by_their_sound_and_every_sound_format(tmp_path: Path) -> None:
    """For a model that embeds sound but not video (no image tower to embed frames), a folder's clips are sounds
    (their tracks; a clip without one is a bad sample, not a video left out), and M4A, Opus and AIFF files are
    indexed like WAV."""
    model = polymodal.load(save_audio_model(tmp_path / "model"), precision="fp32")
    assert model.accepts() == {"audio", "text"}
    sf = pytest.importorskip("soundfile")
    folder = tmp_path / "media"
    folder.mkdir()
    rate = 16000
    wave = np.sin(2 * np.pi * PITCHES["high"] * np.arange(rate // 2) / rate).astype(np.float32) * 0.5
    write_clip(folder / "clip.mp4", wave, rate=rate)
    write_clip(folder / "silent.mp4", None)  # no sound track
    write_clip(folder / "sound.m4a", wave, rate=rate)
    for name, kwargs in {"tone.opus": {"format": "OGG", "subtype": "OPUS"}, "tone.aiff": {}}.items():
        sf.write(folder / name, wave, 48000 if name.endswith("opus") else rate, **kwargs)
    result = build_index(folder, tmp_path / "idx", model)
    assert (result.added, result.skipped_by_kind, result.not_embedded) == (4, {"no_audio": 1}, {})
    with VectorIndex.open(tmp_path / "idx") as idx:
        items = idx.items(store.all_ids(idx.conn))
        assert sorted(Path(it.path).name for it in items.values()) == [
            "clip.mp4",
            "sound.m4a",
            "tone.aiff",
            "tone.opus",
        ]
        assert {it.kind for it in items.values()} == {"audio"}
    idx, loaded = open_for_search(tmp_path / "idx", model)
    with idx:
        (hits,) = search(idx, loaded, "text", [CAPTIONS["high"]], k=4)
        assert {h.kind for h in hits} == {"audio"} and len(hits) == 4


def test_images_and_sounds_in_one_folder_are_items_of_their_own_kind(tmp_path: Path, model) -> None:  # noqa: ANN001
    folder = tmp_path / "mixed"
    files = write_sounds(folder)
    images = write_images(folder / "pics", 3)
    result = build_index(folder, tmp_path / "idx", model)
    assert result.added == 9 and result.skipped == 0
    with VectorIndex.open(tmp_path / "idx") as idx:
        assert idx.meta.counts == {"image": 3, "text": 0, "audio": 6}
        clip = files["low"][2]
        (only_images,) = search_audio(idx, model, clip, k=5, kind="image")
        assert len(only_images) == 3 and {h.kind for h in only_images} == {"image"}
        assert sorted(names(only_images)) == sorted(p.name for p in images)
        (first,) = search(idx, model, "image", images[1], k=1)
        assert first[0].path == str(images[1]) and first[0].kind == "image"


def test_a_manifest_with_an_audio_column_and_captions(tmp_path: Path, model) -> None:  # noqa: ANN001
    write_sounds(tmp_path / "clips")
    rows = [
        {"id": "a", "audio": "clips/low-a.wav", "text": ["a low tone"]},
        {"id": "b", "audio": "clips/high-a.wav", "text": ["a high tone"]},
        {"id": "c", "audio": "clips/gone.wav", "text": ["lost"]},
    ]
    manifest = write_manifest(tmp_path / "sounds.jsonl", rows)
    result = build_index(manifest, tmp_path / "idx", model, texts=True)
    assert result.added == 4 and result.skipped == 1 and result.skipped_examples[0]["row"] == 3
    with VectorIndex.open(tmp_path / "idx") as idx:
        assert idx.meta.counts == {"image": 0, "text": 2, "audio": 2}
        (to_text,) = search_audio(idx, model, tmp_path / "clips" / "high-b.flac", k=1, kind="text")
        # The text says what it describes: its sound, which /items/{id}/audio can then play.
        assert to_text[0].text == "a high tone" and to_text[0].path == str(tmp_path / "clips" / "high-a.wav")


def test_models_that_do_not_embed_audio_say_so(tmp_path: Path, sounds, clip_model, model) -> None:  # noqa: ANN001
    folder, _ = sounds
    with pytest.raises(
        ValueError, match=r"no image or video files found; it holds 8 audio files, which .* does not embed"
    ):
        build_index(folder, tmp_path / "idx", clip_model)
    # Sounds added to an index of images only go in when the model embeds them (here it does: one space).
    write_images(tmp_path / "pics", 2)
    build_index(tmp_path / "pics", tmp_path / "idx2", model)
    added = add_to_index(tmp_path / "idx2", folder, model)
    assert added.added == 6 and added.items == 8 and added.skipped == 2


@pytest.mark.parametrize(
    "allowed,new",
    [
        ("'image', 'text'", store.Item("audio", path="/b.wav")),
        ("'image', 'text', 'audio'", store.Item("video", path="/b.mp4", metadata={"start": 2.0, "end": 4.0})),
    ],
    ids=["sounds", "clips"],
)
def test_an_items_table_from_before_a_kind_takes_it_after_a_rebuild(tmp_path: Path, allowed: str, new) -> None:  # noqa: ANN001
    conn = sqlite3.connect(tmp_path / "items.sqlite")
    conn.executescript(
        f"CREATE TABLE items (id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ({allowed})), path TEXT, "
        "text TEXT, metadata TEXT NOT NULL, source TEXT, row INTEGER); CREATE INDEX items_path ON items (path);"
    )
    store.insert(conn, [0], [store.Item("image", path="/a.png")])
    with pytest.raises(sqlite3.IntegrityError):
        store.insert(conn, [1], [new])
    store.allow_all_kinds(conn)
    store.insert(conn, [1], [new])
    assert store.get(conn, [0, 1]) == {0: store.Item("image", path="/a.png"), 1: new}
    assert store.ids_for_paths(conn, [new.path]) == [1]
    assert store.counts(conn) == {"image": 1, "text": 0, new.kind: 1}
    indexes = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
    assert indexes == ["items_path"]


def test_cli_builds_from_sounds_and_searches_by_clip(tmp_path: Path, sounds, audio_model_dir: Path) -> None:  # noqa: F811
    folder, files = sounds
    runner = CliRunner()
    out = tmp_path / "idx"
    built = runner.invoke(app, ["index", "build", str(folder), "--model", str(audio_model_dir), "--out", str(out)])
    assert built.exit_code == 0, built.output
    assert "indexed 6 items" in built.output and "skipped 2" in built.output and "broken.wav" in built.output
    clip = files["low"][0]
    found = runner.invoke(app, ["search", str(out), "--audio", str(clip), "--kind", "audio", "-k", "2", "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["path"] == str(clip) and hits[0]["kind"] == "audio" and len(hits) == 2
    both = runner.invoke(app, ["search", str(out), "a low tone", "--audio", str(clip)])
    assert both.exit_code == 2 and "give one query" in both.output


def test_segmented_sounds_are_found_where_the_sound_is(tmp_path: Path, model) -> None:  # noqa: ANN001
    """With segment_seconds a recording is one item per segment, with its start and end: a tone 2 s into a file is
    found at its segment, where the whole file (read from its start) would not show it."""
    from tests.api.audio_model import RATE, tone

    folder = tmp_path / "long"
    folder.mkdir()
    quiet = np.random.default_rng(1).normal(0, 0.01, 2 * RATE).astype(np.float32)
    sf = pytest.importorskip("soundfile")
    sf.write(folder / "late.wav", np.concatenate([quiet, tone(PITCHES["high"], 0.5)]), RATE)
    sf.write(folder / "quiet.flac", quiet, RATE)
    result = build_index(folder, tmp_path / "idx", model, segment_seconds=0.5)
    assert result.added == 5 + 4
    idx, loaded = open_for_search(tmp_path / "idx", model)
    with idx:
        (hits,) = search(idx, loaded, "text", [CAPTIONS["high"]], k=1, kind="audio")
        assert (Path(hits[0].path).name, hits[0].metadata["start"], hits[0].metadata["end"]) == ("late.wav", 2.0, 2.5)
