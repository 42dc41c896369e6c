"""ShapesWorld moves: clips whose events happen in order, told by their captions, questions and statements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from polymodal.data.audio import decode_audio
from polymodal.data.shapes import COLORS, SPLITS
from polymodal.data.shapes_audio import SAMPLE_RATE
from polymodal.data.shapes_video import (
    HELD_OUT_EVENTS,
    MOVES,
    Mover,
    generate_shapesworld_video,
    make_clip,
    render_clip,
    sample_clip,
)

av = pytest.importorskip("av")


def _rows(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


def _centroid(frame: np.ndarray, color: str) -> np.ndarray | None:
    """Mean (x, y) of the pixels within 40 of ``color`` (the drawn colour is jittered by at most 10 per channel)."""
    close = np.abs(frame.astype(int) - np.array(COLORS[color])).max(axis=-1) < 40
    ys, xs = np.nonzero(close)
    return np.array([xs.mean(), ys.mean()]) if len(xs) > 20 else None


def test_events_are_drawn_in_order_and_as_named() -> None:
    seen, checked = set(), {"move": 0, "appears": 0, "disappears": 0}
    for index in range(120):
        rng = np.random.default_rng([7, index])
        movers = sample_clip(rng, 16, novel=False)
        frames = [np.asarray(im) for im in render_clip(movers, rng, 16, 64)[0]]
        events = [m for m in movers if m.action is not None]
        assert events and all(a.end <= b.start for a, b in zip(events, events[1:]))  # one after the other
        for m in events:
            seen.add(m.action)
            before, after = _centroid(frames[m.start - 1], m.color), _centroid(frames[m.end], m.color)
            if m.action in MOVES and before is not None and after is not None and len(movers) == 1:
                step = (after - before) @ np.array(MOVES[m.action])
                assert step > 10, (index, m.action, before, after)  # 0.3 of 64 px along the direction
                checked["move"] += 1
            if m.action in ("appears", "disappears") and len(movers) == 1:
                assert (before is None, after is None) == ((True, False) if m.action == "appears" else (False, True))
                checked[m.action] += 1
    assert {"moves left", "grows", "turns", "appears"} <= seen and min(checked.values()) >= 1, checked


def test_dataset_is_byte_identical_over_workers_and_decodes(tmp_path: Path) -> None:
    one = tmp_path / "one"
    summary = generate_shapesworld_video(one, 30, seed=3)
    generate_shapesworld_video(tmp_path / "two", 30, seed=3, workers=2)
    assert summary["total"] == 33 and (one / "shapesworld_video.json").is_file()
    for split in SPLITS:
        rows = _rows(one, split)
        assert rows == _rows(tmp_path / "two", split)
        for row in rows:
            assert (one / row["video"]).read_bytes() == (tmp_path / "two" / row["video"]).read_bytes()
    row = _rows(one, "train")[0]
    with av.open(str(one / row["video"])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    images, again, track = make_clip(3, 0, 16, 64, novel=False)
    assert again == row and track is None and len(frames) == 16 and frames[0].shape == (64, 64, 3)
    # Lossy, but close to what was drawn: the decoded frame is the rendered one within a few levels on average.
    assert np.abs(frames[5].astype(int) - np.asarray(images[5]).astype(int)).mean() < 4


def test_held_out_events_only_in_test_novel_and_texts_follow_the_events(tmp_path: Path) -> None:
    out = tmp_path / "clips"
    generate_shapesworld_video(out, 200, seed=1)
    held = {f"{c} {s}": a for c, s, a in HELD_OUT_EVENTS}
    for split in ("train", "val", "test"):
        for row in _rows(out, split):
            for event in row["events"]:
                assert not event["action"].startswith(held.get(event["object"], "\0")), (split, row["id"])
    novel = _rows(out, "test_novel")
    assert all(r["events"][0]["action"].startswith(held[r["events"][0]["object"]]) for r in novel)
    for row in _rows(out, "train"):
        events = row["events"]
        told = [f"the {e['object']} {e['action']}" for e in events]
        assert row["captions"][0] == ", then ".join(told)
        answers = {q["question"]: q["answer"] for q in row["qa"]}
        assert answers["how many shapes are there"] == str(len(row["objects"]))
        if len(events) == 2:
            assert answers["which shape changed first"] == events[0]["object"].split()[1]
        labels = [s["label"] for s in row["statements"]]
        assert labels.count(True) == labels.count(False) >= 1
        assert {s["text"] for s in row["statements"] if s["label"]} <= {", then ".join(told), *told}


def test_a_bounce_reaches_its_wall_at_the_events_middle_and_comes_back() -> None:
    for wall, axis, edge in (("left", 0, 0), ("right", 0, 63), ("top", 1, 0), ("bottom", 1, 63)):
        x, y = {"left": (0.35, 0.5), "right": (0.65, 0.5), "top": (0.5, 0.35), "bottom": (0.5, 0.65)}[wall]
        m = Mover("circle", "red", "small", x, y, 0.0, "bounces", None, 1, 15, wall)
        frames = [np.asarray(im) for im in render_clip([m], np.random.default_rng(0), 16, 64)[0]]
        start, touch, end = (_centroid(frames[f], "red") for f in (0, int(m.moment), 15))
        assert m.moment == 8 and m.phrase() == f"bounces off the {wall} wall"
        assert np.abs(start - end).max() < 1.5  # back where it started
        assert abs(touch[axis] - edge) == pytest.approx(0.09 * 64, abs=1.5)  # a radius from the wall: touching it
        assert abs(start[axis] - edge) > abs(touch[axis] - edge) + 8
    bounces = 0
    for index in range(300):  # sampled bounces stay inside the frame
        rng = np.random.default_rng([5, index])
        for m in sample_clip(rng, 16, novel=False):
            if m.action == "bounces":
                bounces += 1
                for f in range(16):
                    x, y, radius, _, _ = m.state(f)
                    assert radius - 1e-9 <= x <= 1 - radius + 1e-9 and radius - 1e-9 <= y <= 1 - radius + 1e-9
    assert bounces >= 10


def _track(path: Path) -> np.ndarray:
    return decode_audio(path, SAMPLE_RATE).numpy()


def _onset(wave: np.ndarray, threshold: float = 0.1) -> float:
    return float(np.nonzero(np.abs(wave) > threshold)[0][0]) / SAMPLE_RATE


def test_sound_is_byte_identical_over_workers_keeps_the_frames_and_each_event_sounds_when_it_happens(
    tmp_path: Path,
) -> None:
    plain, one, two = tmp_path / "plain", tmp_path / "one", tmp_path / "two"
    generate_shapesworld_video(plain, 20, seed=4)
    generate_shapesworld_video(one, 20, seed=4, sound=True)
    generate_shapesworld_video(two, 20, seed=4, sound=True, workers=2)
    for prefix in ("", "av_"):
        for split in SPLITS:
            rows = _rows(one, prefix + split)
            assert rows == _rows(two, prefix + split) and len(rows) == len(_rows(plain, split))
            for row in rows:
                assert (one / row["video"]).read_bytes() == (two / row["video"]).read_bytes()
                assert row["audio"] == row["video"]
    for row, silent in zip(_rows(one, "train"), _rows(plain, "train")):
        events = row.pop("events")
        assert row.pop("audio") and [{k: v for k, v in e.items() if k != "sound_at"} for e in events] == silent.pop(
            "events"
        )
        assert row == silent  # the soundtrack changes nothing else
        with av.open(str(one / row["video"])) as a, av.open(str(plain / silent["video"])) as b:
            assert [f.to_ndarray().tobytes() for f in a.decode(video=0)] == [
                f.to_ndarray().tobytes() for f in b.decode(video=0)
            ]
        wave = _track(one / row["video"])
        assert len(wave) == 2 * SAMPLE_RATE  # 16 frames at 8 fps
        assert _onset(wave) == pytest.approx(events[0]["sound_at"], abs=0.03)  # nothing sounds before the first event
        for event in events:  # each event is loud from its moment
            at = int(event["sound_at"] * SAMPLE_RATE)
            assert np.abs(wave[at : at + SAMPLE_RATE // 10]).max() > 0.2


def test_audio_visual_clips_click_once_at_the_event_of_the_shape_the_true_statement_names(tmp_path: Path) -> None:
    out = tmp_path / "av"
    generate_shapesworld_video(out, 60, seed=2, sound=True)
    orders = []
    for split in SPLITS:
        for row in _rows(out, "av_" + split):
            events, statements = row["events"], row["statements"]
            assert len(events) == 2 and events[0]["end"] <= events[1]["start"]
            heard = [e for e in events if "sound_at" in e]
            assert len(heard) == 1 and row["label"]["sounding"] == heard[0]["object"]
            sound = [s for s in statements if s["type"] not in ("acted_first", "sound_time")]
            acted = [s for s in statements if s["type"] == "acted_first"]
            when = [s for s in statements if s["type"] == "sound_time"]
            assert [s["label"] for s in sound] == [e is heard[0] for e in events]
            assert [s["text"] for s in sound] == [f"the {e['object']} made the sound" for e in events]
            assert [(s["text"], s["label"]) for s in acted] == [
                (f"the {e['object']} changed first", e is events[0]) for e in events
            ]
            assert [(s["text"], s["label"]) for s in when] == [
                ("the sound came with the first change", heard[0] is events[0])
            ]
            wave = _track(out / row["audio"])
            assert _onset(wave) == pytest.approx(heard[0]["sound_at"], abs=0.005)  # the click starts at the event
            silent = next(e for e in events if e is not heard[0])
            start, end = (int(silent[k] / 8 * SAMPLE_RATE) for k in ("start", "end"))
            assert np.abs(wave[start:end]).max() < 0.1  # the other event makes no sound
            orders.append(row["label"]["order"])
    # Either event may be the one heard: the statement's shape alone does not tell.
    assert 0.3 < orders.count("first") / len(orders) < 0.7


def test_the_sound_flag_of_the_cli_writes_the_audio_visual_manifests(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from polymodal.cli.data_shapes import shapes_video

    app = typer.Typer()
    app.callback()(lambda: None)  # keeps the command's name: polymodal shapes-video ...
    app.command("shapes-video")(shapes_video)
    result = CliRunner().invoke(app, ["shapes-video", str(tmp_path), "--n", "10", "--sound", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["params"]["sound"] is True
    assert len(_rows(tmp_path, "av_train")) == len(_rows(tmp_path, "train")) == 8


def test_av_alone_writes_the_same_audio_visual_clips_and_silent_ordinary_ones(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from polymodal.cli.data_shapes import shapes_video

    generate_shapesworld_video(tmp_path / "sound", 10, seed=3, sound=True)
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("shapes-video")(shapes_video)
    only = tmp_path / "av"
    result = CliRunner().invoke(app, ["shapes-video", str(only), "--n", "10", "--seed", "3", "--av", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["params"] == {
        "n": 10,
        "seed": 3,
        "size": 64,
        "frames": 16,
        "sound": False,
        "av": True,
    }
    for split in SPLITS:
        rows = _rows(only, "av_" + split)
        assert rows == _rows(tmp_path / "sound", "av_" + split)
        assert all((only / r["video"]).read_bytes() == (tmp_path / "sound" / r["video"]).read_bytes() for r in rows)
        for row in _rows(only, split):
            assert "audio" not in row
            with av.open(str(only / row["video"])) as clip:
                assert not clip.streams.audio
