"""ShapesWorld: determinism, held-out combinations, and texts checked against the objects.

Statements and QA answers are re-derived here from ``objects`` by a separate parser with its
own grid geometry, so a bug in the generator's text cannot agree with itself.
"""

from __future__ import annotations

import difflib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from polymodal.data import shapes
from polymodal.data.shapes import (
    COLORS,
    HELD_OUT,
    SHAPES,
    SPLITS,
    generate_shapesworld,
    is_complete,
    load_split,
    split_sizes,
)

N = 40
GRID = {
    f"{r} {c}" if (r, c) != ("middle", "middle") else "center": (i, j)
    for i, r in enumerate(("top", "middle", "bottom"))
    for j, c in enumerate(("left", "middle", "right"))
}
HELD_OUT_NAMES = [f"{c} {s}" for c, s in HELD_OUT]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate_shapesworld(out, N, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def rows(dataset: Path) -> dict[str, list[dict[str, Any]]]:
    return {split: load_split(dataset, split) for split in SPLITS}


def _all_rows(rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for split in SPLITS for r in rows[split]]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------- a reference oracle


def _find(objects: list[dict], name: str) -> dict | None:
    color, shape = name.split(" ")
    hits = [o for o in objects if o["color"] == color and o["shape"] == shape]
    assert len(hits) <= 1, "colour-shape combinations must be unique within an image"
    return hits[0] if hits else None


def _rel_holds(a: dict, rel: str, b: dict) -> bool:
    (ra, ca), (rb, cb) = GRID[a["position"]], GRID[b["position"]]
    return {"left of": ca < cb, "right of": ca > cb, "above": ra < rb, "below": ra > rb}[rel]


NAME = r"(\w+ \w+)"
REL = r"(left of|right of|above|below)"


def _statement_truth(text: str, objects: list[dict]) -> bool:
    if m := re.fullmatch(rf"there is an? {NAME}", text):
        return _find(objects, m[1]) is not None
    if m := re.fullmatch(rf"the {NAME} is in the (.+)", text):
        obj = _find(objects, m[1])
        return obj is not None and obj["position"] == m[2]
    if m := re.fullmatch(r"there (?:is|are) (\d) objects?", text):
        return int(m[1]) == len(objects)
    if m := re.fullmatch(rf"the {NAME} is {REL} the {NAME}", text):
        a, b = _find(objects, m[1]), _find(objects, m[3])
        return a is not None and b is not None and _rel_holds(a, m[2], b)
    raise AssertionError(f"unparsed statement: {text!r}")


def _answer(question: str, objects: list[dict]) -> str:
    at = {o["position"]: o for o in objects}
    if m := re.fullmatch(r"what color is the (\w+) in the (.+)\?", question):
        assert at[m[2]]["shape"] == m[1]
        return at[m[2]]["color"]
    if m := re.fullmatch(r"what shape is in the (.+)\?", question):
        return at[m[1]]["shape"]
    if m := re.fullmatch(rf"where is the {NAME}\?", question):
        return _find(objects, m[1])["position"]
    if question == "how many objects are there?":
        return str(len(objects))
    if m := re.fullmatch(r"how many (\w+) objects are there\?", question):
        return str(sum(o["color"] == m[1] for o in objects))
    if m := re.fullmatch(r"how many (\w+) are there\?", question):
        shape = "cross" if m[1] == "crosses" else m[1][:-1]
        return str(sum(o["shape"] == shape for o in objects))
    if m := re.fullmatch(rf"is there an? {NAME}\?", question):
        return "yes" if _find(objects, m[1]) else "no"
    if m := re.fullmatch(rf"is the {NAME} {REL} the {NAME}\?", question):
        return "yes" if _rel_holds(_find(objects, m[1]), m[2], _find(objects, m[3])) else "no"
    raise AssertionError(f"unparsed question: {question!r}")


def _words_changed(a: str, b: str) -> int:
    ops = difflib.SequenceMatcher(a=a.split(), b=b.split()).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")


# ----------------------------------------------------------------------------------- tests


def test_layout_and_counts(dataset: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    assert split_sizes(N) == {"train": 32, "val": 4, "test": 4, "test_novel": 4}
    assert {s: len(r) for s, r in rows.items()} == split_sizes(N)
    ids = [r["id"] for r in _all_rows(rows)]
    assert len(set(ids)) == len(ids) == 44
    assert len(list((dataset / "images").glob("*.png"))) == 44
    sheet = (dataset / "datasheet.md").read_text()
    for needle in ["--n 40 --seed 0", "| test_novel | 4 |", "Licence", "Synthetic", *HELD_OUT_NAMES]:
        assert needle in sheet
    assert is_complete(dataset, N, 0, 64)
    assert not is_complete(dataset, N, 1, 64)
    assert not is_complete(dataset, N + 1, 0, 64)


def test_images_match_objects(dataset: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    for row in _all_rows(rows):
        with Image.open(dataset / row["image"]) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (64, 64))
            pixels = np.asarray(img, dtype=np.int64)
        assert 1 <= len(row["objects"]) <= 3
        assert len({o["position"] for o in row["objects"]}) == len(row["objects"])
        for obj in row["objects"]:
            assert obj["shape"] in SHAPES and obj["color"] in COLORS and obj["size"] in ("small", "large")
            if obj["size"] != "large":
                continue  # only large objects surely cover their cell's centre despite jitter
            r, c = GRID[obj["position"]]
            pixel = pixels[int((r + 0.5) * 64 / 3), int((c + 0.5) * 64 / 3)]
            nearest = min(COLORS, key=lambda name: np.abs(np.array(COLORS[name]) - pixel).sum())
            assert nearest == obj["color"], (row["id"], obj, pixel)


def test_same_seed_same_bytes_whatever_the_workers(dataset: Path, tmp_path: Path) -> None:
    generate_shapesworld(tmp_path / "again", N, seed=0, workers=2, progress=False)
    assert _files(tmp_path / "again") == _files(dataset)


def test_different_seed_different_data(dataset: Path, tmp_path: Path) -> None:
    generate_shapesworld(tmp_path / "other", N, seed=1, progress=False)
    a, b = _files(dataset), _files(tmp_path / "other")
    assert a.keys() == b.keys()
    assert a["train.jsonl"] != b["train.jsonl"]
    assert sum(a[k] != b[k] for k in a if k.startswith("images")) >= 40


def test_regenerating_smaller_removes_stale_images(tmp_path: Path) -> None:
    generate_shapesworld(tmp_path, 20, seed=3, progress=False)
    generate_shapesworld(tmp_path, 10, seed=3, progress=False)
    assert len(list((tmp_path / "images").glob("*.png"))) == sum(split_sizes(10).values()) == 11


def test_held_out_combinations(rows: dict[str, list[dict[str, Any]]]) -> None:
    for split in ("train", "val", "test"):
        for row in rows[split]:
            combos = {f"{o['color']} {o['shape']}" for o in row["objects"]}
            assert not combos & set(HELD_OUT_NAMES), (split, row["id"])
            # Not even a false statement or a "no" question may name a held-out combination.
            text = json.dumps(row)
            assert not any(name in text for name in HELD_OUT_NAMES), (split, row["id"])
    for row in rows["test_novel"]:
        main = row["objects"][0]
        assert f"{main['color']} {main['shape']}" in HELD_OUT_NAMES
        assert row["label"]["color_shape"] == f"{main['color']} {main['shape']}"


def test_statements_balanced_and_true_to_the_objects(rows: dict[str, list[dict[str, Any]]]) -> None:
    for row in _all_rows(rows):
        statements = row["statements"]
        labels = [s["label"] for s in statements]
        assert labels.count(True) == labels.count(False) >= 3
        for s in statements:
            assert _statement_truth(s["text"], row["objects"]) is s["label"], (row["id"], s)
        # Each false claim is a minimal edit of a true one: same type, at most 3 words changed.
        trues = [s for s in statements if s["label"]]
        for f in (s for s in statements if not s["label"]):
            edits = [_words_changed(t["text"], f["text"]) for t in trues if t["type"] == f["type"]]
            assert min(edits) <= 3, (row["id"], f)


def test_qa_answers_follow_from_the_objects(rows: dict[str, list[dict[str, Any]]]) -> None:
    for row in _all_rows(rows):
        types = {q["type"] for q in row["qa"]}
        expected = {"color", "shape", "count", "exists", "position"}
        if len(row["objects"]) > 1:
            expected.add("relation")
        assert types == expected
        for q in row["qa"]:
            assert q["answer"] == _answer(q["question"], row["objects"]), (row["id"], q)


def test_captions_and_labels(rows: dict[str, list[dict[str, Any]]]) -> None:
    for row in _all_rows(rows):
        assert len(set(row["captions"])) == len(row["captions"]) >= 5
        main = row["objects"][0]
        assert row["label"]["shape"] == main["shape"] and row["label"]["color"] == main["color"]
        # Every caption mentions the main object's shape or colour.
        assert all(main["shape"] in c or main["color"] in c for c in row["captions"])
        assert row["image"] == f"images/{row['id']}.png"


def test_bad_arguments_and_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be at least 1, got 0"):
        generate_shapesworld(tmp_path, 0)
    with pytest.raises(ValueError, match="image_size must be at least 32"):
        generate_shapesworld(tmp_path, 5, image_size=16)
    with pytest.raises(ValueError, match="unknown split 'dev'; expected one of train, val, test, test_novel"):
        load_split(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        load_split(tmp_path, "train")


# ------------------------------------------------------- fast paths against plain references


def _reference_background(rng: np.random.Generator, size: int, textured: bool) -> np.ndarray:
    """The background in the plainest numpy: uniform draws, float floor division, no caching or in-place ops."""
    grey = int(rng.integers(50, 101))
    if not textured:
        return np.full((size, size, 3), grey, np.uint8)
    kind = int(rng.integers(3))
    amp = float(rng.uniform(8.0, 16.0))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:
        texture = rng.normal(0.0, amp / 2, size=(size, size))
    elif kind == 1:
        angle = rng.uniform(0.0, np.pi)
        period = rng.uniform(5.0, 12.0) * size / 64
        texture = amp * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period))
    else:
        period = int(rng.integers(4, 9)) * max(1, size // 64)
        texture = amp * (((xx // period + yy // period) % 2) * 2 - 1)
    plane = np.clip(np.rint(grey + texture), 0, 255).astype(np.uint8)
    return np.repeat(plane[..., None], 3, axis=2)


@pytest.mark.parametrize("size", [64, 96, 128])
def test_backgrounds_match_the_plain_reference(size: int) -> None:
    for seed in range(60):
        textured = seed % 4 != 0
        fast = shapes._background(np.random.default_rng([seed, 1]), size, textured)
        reference = _reference_background(np.random.default_rng([seed, 1]), size, textured)
        assert np.array_equal(np.asarray(fast), reference), (seed, size)


def test_shapes_match_the_plain_reference_drawing() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = tuple(rng.integers(0, 256, size=3).tolist())
        cx, cy = rng.uniform(4.0, 60.0, size=2).tolist()
        radius, theta = float(rng.uniform(3.0, 12.0)), float(rng.uniform(-0.3, 0.3))
        fast, reference = Image.new("RGB", (64, 64), (70, 70, 70)), Image.new("RGB", (64, 64), (70, 70, 70))
        shapes.draw_shape(fast, shape, color, cx, cy, radius, theta)  # type: ignore[arg-type]
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = shapes._OUTLINES[shape] @ rot.T * radius + (cx, cy)
        x0, y0 = (max(0, int(np.floor(v)) - 1) for v in pts.min(0))
        x1, y1 = (min(64, int(np.ceil(v)) + 1) for v in pts.max(0))
        mask = Image.new("L", ((x1 - x0) * 4, (y1 - y0) * 4), 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in ((pts - (x0, y0)) * 4).tolist()], fill=255)
        reference.paste(color, (x0, y0, x1, y1), mask.reduce(4))  # type: ignore[arg-type]
        assert fast.tobytes() == reference.tobytes(), (shape, cx, cy, radius, theta)


def test_fast_uniform_is_numpys_uniform() -> None:
    for low, high in ((-0.05, 0.05), (-15.0, 15.0), (0.0, np.pi), (8.0, 16.0)):
        fast, reference = np.random.default_rng([3, 4]), np.random.default_rng([3, 4])
        assert [shapes._uniform(fast, low, high) for _ in range(300)] == [
            reference.uniform(low, high) for _ in range(300)
        ]
        assert fast.bit_generator.state == reference.bit_generator.state  # the stream goes on in step


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P"])  # the last two through Pillow
def test_png_round_trips_every_mode_with_no_metadata(mode: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(37, 53, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    data = shapes.encode_png(image)
    assert data == shapes.encode_png(image)  # equal pixels, equal bytes
    assert b"tIME" not in data and b"tEXt" not in data
    decoded = Image.open(io.BytesIO(data))
    assert decoded.size == image.size and decoded.mode == image.mode
    assert np.array_equal(np.asarray(decoded), np.asarray(image))
