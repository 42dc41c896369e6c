"""ShapesWorld moves: clips whose events happen in order, told by their captions, questions and statements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from polymodal.data.shapes import COLORS, SPLITS
from polymodal.data.shapes_video import (
    HELD_OUT_EVENTS,
    MOVES,
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
    images, again = make_clip(3, 0, 16, 64, novel=False)
    assert again == row and len(frames) == 16 and frames[0].shape == (64, 64, 3)
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
