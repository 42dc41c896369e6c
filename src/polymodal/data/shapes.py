"""ShapesWorld: the built-in synthetic image-text benchmark.

Every image shows 1 to 3 coloured shapes on a plain or textured grey background, one object
per cell of a 3x3 grid. Each row of the JSONL manifests carries captions (several templates),
the object list, QA pairs, true/false statements (false ones are minimal edits of true ones,
so a classifier must look at both modalities) and a label for zero-shot classification.

``test_novel`` holds colour-shape combinations (:data:`HELD_OUT`) that never occur in train,
val or test -- neither in the images nor in any text -- to measure compositional
generalisation.

With ``sound=True`` every scene is also heard (``audio``: each object a sound event, see
:mod:`polymodal.data.shapes_audio`); with ``speech=True`` one caption per image is read aloud
(``speech_{split}.jsonl``) and a spoken-sentiment sentence is made per index
(``sentiment_{split}.jsonl``).

Reproducibility: image ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` alone (its sound,
speech and sentence from ``[seed, i, stream]``), so the same seed gives the same bytes whatever the
number of workers or the audio options, and generation is embarrassingly parallel. Nothing
time-dependent is written to disk.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import struct
import time
import zlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageDraw

from polymodal.fsutil import write_atomic
from polymodal.progress import ProgressReporter

T = TypeVar("T")

GENERATOR_VERSION = 1
MANIFEST_NAME = "shapesworld.json"  # written last: its presence marks a complete dataset
SPLITS = ("train", "val", "test", "test_novel")

SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon", "cross", "heart")
PLURALS = {s: ("crosses" if s == "cross" else s + "s") for s in SHAPES}
# Saturated hues, far apart, on a neutral grey background: each is nameable at a glance.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 145, 20),
    "yellow": (240, 225, 40),
    "green": (40, 175, 70),
    "cyan": (40, 205, 225),
    "blue": (45, 85, 235),
    "purple": (150, 65, 215),
    "pink": (250, 120, 190),
}
# Radius as a fraction of a grid cell; large + rotation + jitter stays inside its cell.
SIZES = {"small": 0.24, "large": 0.38}
_SIZE_NAMES = tuple(SIZES)
# Index = row * 3 + col.
POSITIONS = (
    "top left",
    "top middle",
    "top right",
    "middle left",
    "center",
    "middle right",
    "bottom left",
    "bottom middle",
    "bottom right",
)
# 6 of 64 colour-shape combinations (~9%). Fixed, not seeded, so results compare across
# datasets; each colour and each shape is held out at most once, so every colour and every
# shape is still seen in training (only the combination is new).
Combo = tuple[str, str]  # (colour, shape)
HELD_OUT: tuple[Combo, ...] = (
    ("yellow", "circle"),
    ("blue", "square"),
    ("red", "triangle"),
    ("green", "diamond"),
    ("purple", "star"),
    ("orange", "hexagon"),
)
ALL_COMBOS: tuple[Combo, ...] = tuple((c, s) for s in SHAPES for c in COLORS)
SEEN_COMBOS: tuple[Combo, ...] = tuple(x for x in ALL_COMBOS if x not in HELD_OUT)
_ALL_SET, _SEEN_SET = frozenset(ALL_COMBOS), frozenset(SEEN_COMBOS)

CAPTION_TEMPLATES = {
    "attributes": "{a large red circle} and {a small blue square} on a {plain|textured} background",
    "count": "{two} objects: {a red circle} and {a blue square}",
    "positions": "{a red circle} in the {top left} and {a blue square} in the {center}",
    "relation": "{a red circle} {left of|right of|above|below} {a blue square} (one object: "
    "{a red circle} alone in the {top left})",
    "shapes": "a picture with {a circle} and {a square}",
    "colors": "{red} and {blue} shapes",
    "main": "{a large red circle} in the {top left} with {one} other object(s)",
}
QA_TYPES = ("color", "shape", "count", "exists", "position", "relation")

_SUPERSAMPLE = 4  # draw at 4x and box-downsample: anti-aliased edges
_MAX_ROTATION = 15.0  # degrees; small enough that a square never looks like a diamond
_JITTER = 0.05  # centre jitter as a fraction of a cell
_NUMBERS = ("zero", "one", "two", "three")


def _regular(n_vertices: int, radius: float = 1.0, phase_deg: float = -90.0) -> np.ndarray:
    angles = np.deg2rad(phase_deg + 360.0 * np.arange(n_vertices) / n_vertices)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (V, 2), y down


def _star() -> np.ndarray:
    outer, inner = _regular(5, 1.0), _regular(5, 0.45, -90.0 + 36.0)
    return np.stack([outer, inner], axis=1).reshape(10, 2)  # alternate outer/inner tips


def _cross(half_width: float = 0.33) -> np.ndarray:
    w = half_width
    return np.array(
        [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)],
        dtype=np.float64,
    )


def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1)
    pts -= (pts.max(0) + pts.min(0)) / 2  # centre the bounding box
    return pts / np.abs(pts).max()


# Unit outlines (extent about [-1, 1]); vertices are rotated and scaled per object.
_OUTLINES: dict[str, np.ndarray] = {
    "circle": _regular(48, 0.95),
    "square": np.array([(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]),
    "triangle": _regular(3, 1.0) + np.array([0.0, 0.2]),  # centre the bounding box
    "diamond": np.array([(0.0, -1.0), (0.68, 0.0), (0.0, 1.0), (-0.68, 0.0)]),
    "star": _star(),
    "hexagon": _regular(6, 1.0),
    "cross": _cross(),
    "heart": _heart(),
}


@dataclass(frozen=True, slots=True)
class ShapeObject:
    shape: str
    color: str
    size: str
    cell: int  # 0..8, row * 3 + col

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def to_dict(self) -> dict[str, str]:
        return {"shape": self.shape, "color": self.color, "size": self.size, "position": self.position}


# --------------------------------------------------------------------------- scene sampling


def sample_objects(rng: np.random.Generator, novel: bool) -> list[ShapeObject]:
    """1-3 objects in distinct cells with distinct colour-shape combinations.

    Ordinary images draw from :data:`SEEN_COMBOS`; a novel image's first (main) object is a
    held-out combination and the others may be anything.
    """
    k = int(rng.integers(1, 4))
    cells = rng.choice(9, size=k, replace=False)
    sizes = [int(rng.integers(0, 2)) for _ in range(k)]  # scalar draws: the values of size=k, less overhead
    if novel:
        first = _pick(rng, HELD_OUT)
        rest = [c for c in ALL_COMBOS if c != first]
        combos = [first] + [rest[i] for i in rng.choice(len(rest), size=k - 1, replace=False).tolist()]
    else:
        combos = [SEEN_COMBOS[i] for i in rng.choice(len(SEEN_COMBOS), size=k, replace=False).tolist()]
    return [
        ShapeObject(shape=s, color=c, size=_SIZE_NAMES[z], cell=cell)
        for (c, s), z, cell in zip(combos, sizes, cells.tolist())
    ]


# --------------------------------------------------------------------------------- rendering


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)  # (H, W) each
    return yy, xx


@lru_cache(maxsize=64)
def _checks(size: int, period: int) -> np.ndarray:
    """(H, W) float32 checkerboard of +-1 in squares of ``period`` pixels (cached: float floor division is slow)."""
    squares = np.arange(size) // period
    return ((squares[:, None] + squares[None, :]) % 2 * 2 - 1).astype(np.float32)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """``rng.uniform(low, high)`` for scalars: the same draw and the same value (numpy computes
    ``low + (high - low) * next_double``), at a fraction of the call's overhead."""
    return low + (high - low) * rng.random()


def _background(rng: np.random.Generator, size: int, textured: bool) -> Image.Image:
    """A neutral grey RGB canvas; textured = low-contrast noise, stripes or checks."""
    grey = int(rng.integers(50, 101))
    if not textured:
        return Image.new("RGB", (size, size), (grey, grey, grey))
    kind = int(rng.integers(3))
    amp = _uniform(rng, 8.0, 16.0)
    if kind == 0:
        texture = rng.normal(0.0, amp / 2, size=(size, size))
    elif kind == 1:
        angle = _uniform(rng, 0.0, np.pi)
        period = _uniform(rng, 5.0, 12.0) * size / 64
        yy, xx = _grid(size)
        texture = xx * np.cos(angle)
        texture += yy * np.sin(angle)
        texture *= 2 * np.pi / period
        np.sin(texture, out=texture)
        texture *= amp
    else:
        period = int(rng.integers(4, 9)) * max(1, size // 64)
        texture = amp * _checks(size, period)
    texture += grey  # in place from here on: the planes are fresh arrays
    np.clip(np.rint(texture, out=texture), 0, 255, out=texture)
    return Image.fromarray(texture.astype(np.uint8), "L").convert("RGB")


def _draw_object(canvas: Image.Image, obj: ShapeObject, rng: np.random.Generator) -> None:
    """Blend one anti-aliased object into ``canvas`` in place.

    Only the object's bounding box is drawn, at 4x, into a mask that is box-downsampled and
    used as the alpha of a solid-colour paste: all per-pixel work stays in Pillow's C code.
    """
    size = canvas.width
    cell = size / 3
    row, col = divmod(obj.cell, 3)
    cx = (col + 0.5 + _uniform(rng, -_JITTER, _JITTER)) * cell
    cy = (row + 0.5 + _uniform(rng, -_JITTER, _JITTER)) * cell
    radius = SIZES[obj.size] * cell
    theta = math.radians(_uniform(rng, -_MAX_ROTATION, _MAX_ROTATION))
    jitter = [int(rng.integers(-10, 11)) for _ in range(3)]  # the values of one size=3 draw, less overhead
    color = tuple(min(255, max(0, c + d)) for c, d in zip(COLORS[obj.color], jitter))
    draw_shape(canvas, obj.shape, color, cx, cy, radius, theta)  # type: ignore[arg-type]


def draw_shape(
    canvas: Image.Image,
    shape: str,
    color: tuple[int, int, int],
    cx: float,
    cy: float,
    radius: float,
    theta: float,
) -> None:
    """Blend ``shape`` centred at (``cx``, ``cy``) pixels, rotated by ``theta`` radians, into ``canvas``."""
    size = canvas.width
    cos, sin = math.cos(theta), math.sin(theta)
    pts = _OUTLINES[shape] @ np.array(((cos, sin), (-sin, cos))) * radius + (cx, cy)  # (V, 2) in output pixels
    (left, top), (right, bottom) = np.minimum.reduce(pts).tolist(), np.maximum.reduce(pts).tolist()
    x0, y0 = max(0, math.floor(left) - 1), max(0, math.floor(top) - 1)
    x1, y1 = min(size, math.ceil(right) + 1), min(size, math.ceil(bottom) + 1)
    mask = Image.new("L", ((x1 - x0) * _SUPERSAMPLE, (y1 - y0) * _SUPERSAMPLE), 0)
    local = (pts - (x0, y0)) * _SUPERSAMPLE
    ImageDraw.Draw(mask).polygon(local.ravel().tolist(), fill=255)
    canvas.paste(color, (x0, y0, x1, y1), mask.reduce(_SUPERSAMPLE))


def render(objects: Sequence[ShapeObject], rng: np.random.Generator, image_size: int) -> tuple[Image.Image, str]:
    """Draw ``objects``; returns the RGB image and the background kind."""
    textured = bool(rng.integers(2))
    canvas = _background(rng, image_size, textured)
    for obj in objects:
        _draw_object(canvas, obj, rng)
    return canvas, "textured" if textured else "plain"


# ------------------------------------------------------------------------------------- text


def _pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _counted(shapes: Sequence[str]) -> list[str]:
    """``["circle", "star", "circle"]`` -> ``["two circles", "a star"]`` (first-seen order)."""
    counts = dict.fromkeys(shapes, 0)
    for shape in shapes:
        counts[shape] += 1
    return [_a(s) if c == 1 else f"{_NUMBERS[c]} {PLURALS[s]}" for s, c in counts.items()]


def relation(a: ShapeObject, b: ShapeObject) -> str:
    """Where ``a`` is relative to ``b``: horizontal if the columns differ, else vertical."""
    (ra, ca), (rb, cb) = divmod(a.cell, 3), divmod(b.cell, 3)
    if ca != cb:
        return "left of" if ca < cb else "right of"
    return "above" if ra < rb else "below"


_OTHER_POSITIONS = tuple(POSITIONS[:cell] + POSITIONS[cell + 1 :] for cell in range(len(POSITIONS)))
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def positions_caption(objs: Sequence[ShapeObject]) -> str:
    """Every object with its colour, shape and cell, in the given order: "a red circle in the top left and a blue
    square in the center" (the ``positions`` template; a text-to-image prompt that pins the whole scene down)."""
    return _join([f"{_a(o.name)} in the {o.position}" for o in objs])


def make_captions(objs: Sequence[ShapeObject], background: str, rng: np.random.Generator) -> list[str]:
    """One caption per template in :data:`CAPTION_TEMPLATES`, all distinct."""

    def shuffled() -> list[ShapeObject]:
        return [objs[i] for i in rng.permutation(len(objs)).tolist()]

    main, k = objs[0], len(objs)
    if k == 1:
        rel = f"{_a(main.name)} alone in the {main.position}"
    else:
        rel = f"{_a(main.name)} {relation(main, objs[1])} {_a(objs[1].name)}"
        if k == 3:
            rel += f" and {relation(main, objs[2])} {_a(objs[2].name)}"
    others = "" if k == 1 else f" with {_NUMBERS[k - 1]} other object" + ("s" if k > 2 else "")
    captions = [
        _join([_a(f"{o.size} {o.name}") for o in shuffled()]) + f" on a {background} background",
        f"{_NUMBERS[k]} object{'s' if k > 1 else ''}: " + _join([_a(o.name) for o in shuffled()]),
        positions_caption(shuffled()),
        rel,
        "a picture with " + _join(_counted([o.shape for o in shuffled()])),
        _join(list(dict.fromkeys(o.color for o in shuffled()))) + (" shapes" if k > 1 else " shape"),
        f"{_a(main.size + ' ' + main.name)} in the {main.position}{others}",
    ]
    return list(dict.fromkeys(captions))  # drop exact duplicates, keep order


# Each combination's one-word edits: (other colours, same shape) and (same colour, other shapes).
_EDITS: dict[Combo, tuple[list[Combo], list[Combo]]] = {
    (color, shape): ([(c, shape) for c in COLORS if c != color], [(color, s) for s in SHAPES if s != shape])
    for color, shape in ALL_COMBOS
}


def _edit_combo(
    obj: ShapeObject, objs: Sequence[ShapeObject], allowed: Collection[Combo], rng: np.random.Generator
) -> Combo:
    """A minimal edit of ``obj``'s colour or shape that names no object in the image."""
    present = {(o.color, o.shape) for o in objs}
    by_color, by_shape = _EDITS[obj.color, obj.shape]
    edits = by_color if rng.integers(2) == 0 else by_shape
    options = [x for x in edits if x not in present and x in allowed]
    if not options:  # fall back to the other kind of edit; always non-empty for <= 3 objects
        options = [x for x in by_color + by_shape if x not in present and x in allowed]
    return _pick(rng, options)


def _count_phrase(k: int) -> str:
    return f"there {'is' if k == 1 else 'are'} {k} object{'s' if k != 1 else ''}"


def make_statements(
    objs: Sequence[ShapeObject], allowed: Collection[Combo], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """True claims and one minimal false edit of each, so labels are exactly 50/50."""
    pairs: list[tuple[str, str, str]] = []  # (type, true text, false text)
    for o in objs:
        c, s = _edit_combo(o, objs, allowed, rng)
        pairs.append(("exists", f"there is {_a(o.name)}", f"there is {_a(c + ' ' + s)}"))
        p = _pick(rng, _OTHER_POSITIONS[o.cell])
        pairs.append(("position", f"the {o.name} is in the {o.position}", f"the {o.name} is in the {p}"))
    k = len(objs)
    wrong_k = [x for x in (1, 2, 3) if x != k]
    pairs.append(("count", _count_phrase(k), _count_phrase(_pick(rng, wrong_k))))
    if k >= 2:
        i, j = rng.choice(k, size=2, replace=False).tolist()
        a, b = objs[i], objs[j]
        rel = relation(a, b)
        pairs.append(
            ("relation", f"the {a.name} is {rel} the {b.name}", f"the {a.name} is {_OPPOSITE[rel]} the {b.name}")
        )
    statements = [{"text": t, "label": True, "type": kind} for kind, t, _ in pairs]
    statements += [{"text": f, "label": False, "type": kind} for kind, _, f in pairs]
    return [statements[i] for i in rng.permutation(len(statements)).tolist()]


def make_qa(objs: Sequence[ShapeObject], allowed: Collection[Combo], rng: np.random.Generator) -> list[dict[str, str]]:
    """Questions of every type in :data:`QA_TYPES` (relation only with 2+ objects)."""
    qa: list[dict[str, str]] = []

    def ask(question: str, answer: str, kind: str) -> None:
        qa.append({"question": question, "answer": answer, "type": kind})

    for o in objs:
        ask(f"what color is the {o.shape} in the {o.position}?", o.color, "color")
        ask(f"what shape is in the {o.position}?", o.shape, "shape")
        ask(f"where is the {o.name}?", o.position, "position")
    ask("how many objects are there?", str(len(objs)), "count")
    # Half the time about a shape/colour in the image, half about any (often absent: "0").
    shape = _pick(rng, objs).shape if rng.integers(2) else _pick(rng, SHAPES)
    ask(f"how many {PLURALS[shape]} are there?", str(sum(o.shape == shape for o in objs)), "count")
    color = _pick(rng, objs).color if rng.integers(2) else _pick(rng, tuple(COLORS))
    ask(f"how many {color} objects are there?", str(sum(o.color == color for o in objs)), "count")
    present = _pick(rng, objs)
    c, s = _edit_combo(present, objs, allowed, rng)
    ask(f"is there {_a(present.name)}?", "yes", "exists")
    ask(f"is there {_a(c + ' ' + s)}?", "no", "exists")
    if len(objs) >= 2:
        i, j = rng.choice(len(objs), size=2, replace=False).tolist()
        a, b = objs[i], objs[j]
        rel = relation(a, b)
        ask(f"is the {a.name} {rel} the {b.name}?", "yes", "relation")
        ask(f"is the {a.name} {_OPPOSITE[rel]} the {b.name}?", "no", "relation")
    return qa


# --------------------------------------------------------------------------------- examples


def split_sizes(n: int) -> dict[str, int]:
    """train/val/test partition ``n`` (80/10/10, val and test rounded down); test_novel adds
    ``max(1, n // 10)`` more images."""
    val = test = n // 10
    return {"train": n - val - test, "val": val, "test": test, "test_novel": max(1, n // 10)}


def _split_of(index: int, sizes: dict[str, int]) -> str:
    end = 0
    for split in SPLITS:
        end += sizes[split]
        if index < end:
            return split
    raise IndexError(index)


def image_id(index: int) -> str:
    return f"{index:06d}"


def make_example(seed: int, index: int, image_size: int, novel: bool) -> tuple[Image.Image, dict[str, Any]]:
    """Image ``index`` of the dataset with ``seed``: the image and its manifest row (no split)."""
    rng = np.random.default_rng([seed, index])
    objs = sample_objects(rng, novel)
    image, background = render(objs, rng, image_size)
    allowed = _ALL_SET if novel else _SEEN_SET
    main = objs[0]
    row = {
        "id": image_id(index),
        "image": f"images/{image_id(index)}.png",
        "captions": make_captions(objs, background, rng),
        "objects": [o.to_dict() for o in objs],
        "qa": make_qa(objs, allowed, rng),
        "statements": make_statements(objs, allowed, rng),
        "label": {
            "shape": main.shape,
            "color": main.color,
            "color_shape": main.name,
            "size": main.size,
            "position": main.position,
            "count": len(objs),
        },
        "background": background,
    }
    return image, row


def objects_of(row: dict[str, Any]) -> list[ShapeObject]:
    """The scene objects of a manifest row, main object first."""
    return [ShapeObject(o["shape"], o["color"], o["size"], POSITIONS.index(o["position"])) for o in row["objects"]]


# Random streams beside the image's: audio never changes an image.
_SOUND_STREAM, _SPEECH_STREAM, _SENTIMENT_STREAM = 1, 2, 3
AUDIO_DIRS = {"sound": "sounds", "speech": "speech", "sentiment": "sentiment"}


def add_sound(row: dict[str, Any], seed: int, index: int, out_dir: Path) -> None:
    """Write the scene's sound next to its image; the row gains ``audio``."""
    from polymodal.data.shapes_audio import encode_flac, render_scene_sound

    rng = np.random.default_rng([seed, index, _SOUND_STREAM])
    row["audio"] = f"{AUDIO_DIRS['sound']}/{row['id']}.flac"
    wave = render_scene_sound(objects_of(row), row["background"], rng)
    (out_dir / row["audio"]).write_bytes(encode_flac(wave))


def spoken_rows(row: dict[str, Any], seed: int, index: int, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write one of the row's captions read aloud and a spoken-sentiment sentence about its scene; return
    their ``speech_*.jsonl`` and ``sentiment_*.jsonl`` rows."""
    from polymodal.data.shapes_audio import draw_voice, encode_flac, make_sentiment, speak

    rng = np.random.default_rng([seed, index, _SPEECH_STREAM])
    which = int(rng.integers(len(row["captions"])))
    voice = draw_voice(rng)
    speech = {
        "id": f"{row['id']}-{which}",
        "audio": f"{AUDIO_DIRS['speech']}/{row['id']}-{which}.flac",
        "text": row["captions"][which],
        "image": row["image"],
        "label": voice.name,  # the speaker, for speaker identification
        **voice.to_dict(),
    }
    (out_dir / speech["audio"]).write_bytes(encode_flac(speak(speech["text"], voice)))
    sentence, wave = make_sentiment(objects_of(row), np.random.default_rng([seed, index, _SENTIMENT_STREAM]))
    sentiment = {"id": row["id"], "audio": f"{AUDIO_DIRS['sentiment']}/{row['id']}.flac", **sentence}
    (out_dir / sentiment["audio"]).write_bytes(encode_flac(wave))
    return speech, sentiment


_PNG_COLOR_TYPES = {"L": 0, "RGB": 2, "RGBA": 6}  # 8-bit modes written directly


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes; no timestamp or other metadata, so equal pixels give equal bytes.

    8-bit L, RGB and RGBA images are written directly: unfiltered rows at zlib level 2, much faster than Pillow's
    encoder (which tries every filter on every row) and no larger on flat synthetic images, though larger on
    photographs. Other modes go through Pillow."""
    color_type = _PNG_COLOR_TYPES.get(image.mode)
    if color_type is None:
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=3)
        return buf.getvalue()
    width, height = image.size
    stride = width * len(image.mode)
    rows = np.zeros((height, 1 + stride), np.uint8)  # each row: filter type 0 (none), then its pixels
    rows[:, 1:] = np.frombuffer(image.tobytes(), np.uint8).reshape(height, stride)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows, 2)),
            _png_chunk(b"IEND", b""),
        )
    )


def _write_file(path: str, data: bytes) -> None:
    """``Path.write_bytes`` without its buffered file object, which costs more than the write for small files."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _write_example(
    index: int, *, out_dir: Path, seed: int, image_size: int, sizes: dict[str, int], sound: bool, speech: bool
) -> tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """(split, row, speech row, sentiment row) of image ``index``, its files written."""
    split = _split_of(index, sizes)
    image, row = make_example(seed, index, image_size, novel=split == "test_novel")
    _write_file(os.path.join(out_dir, row["image"]), encode_png(image))
    if sound:
        add_sound(row, seed, index, out_dir)
    spoken, sentiment = spoken_rows(row, seed, index, out_dir) if speech else (None, None)
    return split, row, spoken, sentiment


def _one_thread() -> None:
    """A pool worker computes with one thread: the pool has a process per core already."""
    import torch

    torch.set_num_threads(1)


def _rows(indices: range, worker: partial, workers: int, fork: bool = True) -> Iterator[Any]:
    """``worker`` over ``indices`` in order; ``fork=False`` starts clean processes (a forked copy of a process
    whose torch or eSpeak NG threads have run can hang)."""
    if workers == 1:
        yield from map(worker, indices)
        return
    context = multiprocessing.get_context("fork" if fork else "spawn")
    with context.Pool(workers, initializer=None if fork else _one_thread) as pool:
        # imap keeps index order, so the manifests do not depend on scheduling.
        yield from pool.imap(worker, indices, chunksize=64)


# --------------------------------------------------------------------------- dataset on disk


def generate_shapesworld(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    image_size: int = 64,
    workers: int = 1,
    progress: bool = True,
    sound: bool = False,
    speech: bool = False,
) -> dict[str, Any]:
    """Write ShapesWorld to ``out_dir`` and return a summary.

    ``n`` images go to train/val/test (80/10/10) and ``max(1, n // 10)`` more to test_novel.
    Writes ``images/*.png``, ``{split}.jsonl``, ``datasheet.md`` and, last, the manifest
    ``shapesworld.json`` whose presence marks the dataset as complete. ``sound`` adds
    ``sounds/*.flac``; ``speech`` adds ``speech/*.flac``, ``sentiment/*.flac`` and their
    ``speech_{split}.jsonl`` / ``sentiment_{split}.jsonl`` (it needs ``polymodal[speech]``).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if speech:
        from polymodal.data.shapes_audio import require_speech

        require_speech()  # fail before writing anything
    out = Path(out_dir)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # incomplete until rewritten at the end
    sizes = split_sizes(n)
    total = sum(sizes.values())
    media = {"images": ".png", AUDIO_DIRS["sound"]: ".flac"} if sound else {"images": ".png"}
    if speech:
        media.update({AUDIO_DIRS["speech"]: ".flac", AUDIO_DIRS["sentiment"]: ".flac"})
    for folder in (*AUDIO_DIRS.values(), "images"):
        if folder in media:
            (out / folder).mkdir(parents=True, exist_ok=True)
        _remove_stale_files(out / folder, media.get(folder), total)
    views = {"": True, "speech_": speech, "sentiment_": speech}  # manifest prefix -> written

    start = time.perf_counter()
    worker = partial(
        _write_example, out_dir=out, seed=seed, image_size=image_size, sizes=sizes, sound=sound, speech=speech
    )
    row_encoder = json.JSONEncoder(ensure_ascii=False, check_circular=False)  # rows are trees
    files = {
        (prefix, split): (out / f"{prefix}{split}.jsonl").open("w", encoding="utf-8")
        for prefix, on in views.items()
        if on
        for split in SPLITS
    }
    try:
        with ProgressReporter("ShapesWorld", total, enabled=progress) as reporter:
            rows_made = _rows(range(total), worker, workers, fork=not (sound or speech))
            for done, (split, *rows) in enumerate(rows_made, 1):
                for prefix, row in zip(views, rows):
                    if row is not None:
                        files[prefix, split].write(row_encoder.encode(row) + "\n")
                reporter.update(done)
    finally:
        for f in files.values():
            f.close()
    elapsed = time.perf_counter() - start

    manifest = {
        "generator": "shapesworld",
        "version": GENERATOR_VERSION,
        "params": _params(n, seed, image_size, sound, speech),
        "counts": sizes,
        "shapes": list(SHAPES),
        "colors": list(COLORS),
        "held_out": [f"{c} {s}" for c, s in HELD_OUT],
    }
    (out / "datasheet.md").write_text(datasheet(manifest), encoding="utf-8")
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return {
        **manifest,
        "out_dir": str(out),
        "total": total,
        "elapsed_seconds": round(elapsed, 3),
        "images_per_second": round(total / elapsed, 1) if elapsed > 0 else None,
    }


def _params(n: int, seed: int, image_size: int, sound: bool, speech: bool) -> dict[str, Any]:
    """The manifest's parameters; the audio options appear only when on, so image-only datasets keep theirs."""
    params: dict[str, Any] = {"n": n, "seed": seed, "image_size": image_size}
    return {**params, **({"sound": True} if sound else {}), **({"speech": True} if speech else {})}


def _remove_stale_files(folder: Path, suffix: str | None, total: int) -> None:
    """Delete media left by an earlier, larger run (or all of it when ``suffix`` is None, the kind no longer
    made) so the folder matches the manifests. Media names start with the image id."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        index = path.name[:6]
        if path.is_file() and (suffix is None or not index.isdigit() or int(index) >= total or path.suffix != suffix):
            path.unlink()


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete dataset in ``out_dir``, or None."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(
    out_dir: str | Path, n: int, seed: int, image_size: int, sound: bool = False, speech: bool = False
) -> bool:
    """True when ``out_dir`` holds a finished dataset made with exactly these parameters."""
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("version") != GENERATOR_VERSION:
        return False
    if manifest.get("params") != _params(n, seed, image_size, sound, speech):
        return False
    out = Path(out_dir)
    total = sum(split_sizes(n).values())
    prefixes = ["", "speech_", "sentiment_"] if speech else [""]
    return all((out / f"{p}{s}.jsonl").is_file() for p in prefixes for s in SPLITS) and all(
        (out / "images" / f"{image_id(i)}.png").is_file() for i in range(total)
    )


def load_split(out_dir: str | Path, split: str, view: str = "") -> list[dict[str, Any]]:
    """The rows of ``OUT/{view}{split}.jsonl`` (view ``""``, ``speech_``, ``sentiment_`` or ``prompts_``); media paths
    stay relative to ``out_dir``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    path = Path(out_dir) / f"{view}{split}.jsonl"
    if not path.is_file():
        flag = " --speech" if view else ""
        raise FileNotFoundError(f"{path}: no such file (generate ShapesWorld first: polymodal data shapes{flag})")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


PROMPTS_VIEW = "prompts_"  # one full-spec caption per image: text-to-image training and its prompts


def write_prompt_manifests(out_dir: str | Path) -> dict[str, Path]:
    """``OUT/prompts_{split}.jsonl``: each image with the one caption that names every object's colour, shape and
    cell (:func:`positions_caption`, objects in the row's order), for training and prompting text-to-image models."""
    written = {}
    for split in SPLITS:
        lines = []
        for row in load_split(out_dir, split):
            caption = positions_caption(objects_of(row))
            lines.append(
                json.dumps({"id": row["id"], "image": row["image"], "captions": [caption], "objects": row["objects"]})
            )
        path = Path(out_dir) / f"{PROMPTS_VIEW}{split}.jsonl"
        write_atomic(path, "\n".join(lines) + "\n")
        written[split] = path
    return written


def _audio_datasheet(params: dict[str, Any]) -> str:
    """The datasheet's section on sounds and speech, empty for an image-only dataset."""
    if not (params.get("sound") or params.get("speech")):
        return ""
    from polymodal.data.shapes_audio import SAMPLE_RATE, SCENE_SECONDS, VOICES, color_pitch

    pitches = ", ".join(f"{c} {color_pitch(c):.0f} Hz" for c in COLORS)
    parts = ["## Sound and speech\n"]
    if params.get("sound"):
        parts.append(
            f"- `audio` (`sounds/ID.flac`, {SAMPLE_RATE} Hz mono, {SCENE_SECONDS:.0f} s): one sound event per "
            "object, left to right (top first within a column); timbre = shape (circle sine, square odd "
            "harmonics, triangle all harmonics, diamond bell, star tremolo, hexagon organ, cross pluck, heart "
            f"double beat); pitch = colour, +-30 cents ({pitches}); length = size. Drawn from "
            "`default_rng([seed, i, 1])`.\n"
        )
    if params.get("speech"):
        parts.append(
            "- `speech_{split}.jsonl`: one caption per image read aloud by eSpeak NG (`speech/ID-K.flac`, K = "
            f"the caption's index) in one of {len(VOICES)} voices ({', '.join(VOICES)}) at 140-190 words per "
            "minute and pitch 35-70; the row names text, image, voice (also its `label`, for speaker "
            "identification), rate and pitch.\n"
            "- `sentiment_{split}.jsonl`: a sentence about a shape with a positive or negative verb, said "
            "sincerely (fast, higher, lively) or sarcastically (slow, low, flat); `label` is the meant sentiment, "
            "the words' polarity flipped by sarcasm, so neither the text nor the delivery alone decides it.\n"
        )
    return "\n".join(parts) + "\n"


def datasheet(manifest: dict[str, Any]) -> str:
    """The Markdown datasheet: how the data was made, what it holds, how it may be used."""
    p, counts = manifest["params"], manifest["counts"]
    split_rows = "\n".join(f"| {s} | {counts[s]} |" for s in SPLITS)
    templates = "\n".join(f"- `{name}`: {t}" for name, t in CAPTION_TEMPLATES.items())
    colors = ", ".join(f"{name} {rgb}" for name, rgb in COLORS.items())
    sizes = ", ".join(f"{name} ({frac:.2f} of a cell)" for name, frac in SIZES.items())
    return f"""# ShapesWorld datasheet

Synthetic image-text benchmark generated by polymodal's ShapesWorld generator (version
{manifest["version"]}).

## How it was made

- Command: `polymodal data shapes OUT --n {p["n"]} --seed {p["seed"]} --image-size {p["image_size"]}`
  (Python: `polymodal.data.shapes.generate_shapesworld(OUT, n={p["n"]}, seed={p["seed"]},
  image_size={p["image_size"]})`).
- Image `i` is drawn from `numpy.random.default_rng([seed, i])` only: the same seed gives the same
  bytes, whatever the number of workers.
- Each image is a {p["image_size"]}x{p["image_size"]} RGB PNG: 1 to 3 objects (uniform), each in its own
  cell of a 3x3 grid, with centre jitter of +-{_JITTER:.2f} cell and rotation of
  +-{_MAX_ROTATION:.0f} degrees, drawn at {_SUPERSAMPLE}x and box-downsampled (anti-aliased).
- Background: neutral grey (50-100), plain or textured (noise, stripes or checks of low
  contrast), 50/50. Colours jitter by +-10 per channel.
- Shapes: {", ".join(SHAPES)}.
- Colours (RGB): {colors}.
- Sizes: {sizes}. Positions: {", ".join(POSITIONS)}.
- Objects in an image have distinct colour-shape combinations.

## Splits

`n` = {p["n"]} images split 80/10/10 (val = test = n // 10, train = the rest); test_novel adds
max(1, n // 10) images. Image indices run train, val, test, test_novel in that order.

| split | images |
|---|---|
{split_rows}

## Held-out combinations

These colour-shape combinations never appear in train, val or test, neither in an image nor in
any caption, question or statement; the first (main) object of every test_novel image is one
of them: {", ".join(manifest["held_out"])}.

## Rows

`id`, `image` (relative to the JSONL file), `captions`, `objects` (`shape`, `color`, `size`,
`position`; the first is the main object), `qa` (`question`, `answer`, `type` in
{", ".join(QA_TYPES)}; relation only with 2+ objects), `statements` (`text`, `label`, `type`:
each true claim has one false minimal edit -- colour or shape swapped, position moved, count
changed, relation reversed -- so labels are exactly 50/50), `label` (main object: `shape`,
`color`, `color_shape`, `size`, `position`, plus the object `count`) and `background`.

Caption templates (one caption each, object order shuffled):

{templates}

{_audio_datasheet(p)}## Licence

Synthetic: every image and text is generated procedurally. No third-party content, no personal
data.
"""
