"""ShapesWorld moves: short clips of one to three shapes in which events happen one after another.

A clip has ``frames`` frames (16 by default, 8 per second) of ``size`` pixels. One or two of its objects each do
one event in turn: move left/right/up/down, grow, shrink, turn another colour, appear, disappear or bounce off a
wall (move to it, touch it, come back). Every clip comes with captions that tell the events in order ("the red
circle moves left, then the blue square bounces off the top wall"), its actions, questions about time and
true/false statements whose false half swaps the order or the action.

With ``sound`` a clip carries a soundtrack (AAC in the mp4): each event sounds when it happens (a bounce when it
hits the wall) in the voice of :mod:`shapes_audio` (timbre = shape, pitch = colour), and ``av_{split}.jsonl`` adds
audio-visual clips: two shapes act at different times, only one of them with a sound, the same neutral click for
every shape. "The red circle made the sound" is then true or false, and only the pictures and the sound together
tell which.

``test_novel`` holds colour-shape-action combinations (:data:`HELD_OUT_EVENTS`) that no other split shows. Clip
``i`` is drawn from ``default_rng([seed, i])`` alone and encoded bit-exactly, so the same seed gives the same bytes
whatever the number of workers.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from polymodal.data.shapes import (
    COLORS,
    SHAPES,
    SPLITS,
    _background,
    _pick,
    _rows,
    _split_of,
    draw_shape,
    split_sizes,
)
from polymodal.data.shapes_audio import SAMPLE_RATE, click, mix_sounds, object_sound
from polymodal.fsutil import write_atomic
from polymodal.progress import ProgressReporter

VIDEO_GENERATOR_VERSION = 3  # 2: bounces, soundtracks and the audio-visual clips; 3: their training aids
VIDEO_MANIFEST_NAME = "shapesworld_video.json"  # written last: its presence marks a complete dataset

FPS = 8
MOVES = {"moves left": (-1, 0), "moves right": (1, 0), "moves up": (0, -1), "moves down": (0, 1)}
WALLS = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}
# "turns" takes a colour ("turns green"), "bounces" a wall ("bounces off the left wall").
ACTIONS = (*MOVES, "grows", "shrinks", "turns", "appears", "disappears", "bounces")
# Seen (and heard) at the middle of the event; the other actions from its start.
INSTANT = ("turns", "appears", "disappears", "bounces")
# (colour, shape, action) never seen outside test_novel; each action, colour and shape is held out at most once.
HELD_OUT_EVENTS: tuple[tuple[str, str, str], ...] = (
    ("red", "circle", "moves left"),
    ("blue", "square", "grows"),
    ("green", "triangle", "turns"),
    ("yellow", "star", "disappears"),
    ("purple", "heart", "moves up"),
    ("orange", "diamond", "appears"),
)
_RADIUS = {"small": 0.09, "large": 0.14}  # of the frame side
_MOVE = 0.3  # a move covers this share of the frame side
_SCALE = 1.6  # grow / shrink factor
_BOUNCE = (0.12, 0.3)  # how far from the wall a bounce starts, as a share of the frame side
# Streams of random numbers beside a clip's own: a soundtrack never changes the frames.
_SOUND_STREAM, _AV_STREAM = 1, 2


@dataclass(frozen=True)
class Mover:
    """An object of a clip: where it starts (centre, fraction of the frame), its look, and its event, if any."""

    shape: str
    color: str
    size: str
    x: float
    y: float
    theta: float
    action: str | None = None
    new_color: str | None = None  # for "turns"
    start: int = 0  # the frames over which the event happens: [start, end)
    end: int = 0
    wall: str | None = None  # for "bounces"

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def phrase(self) -> str:
        """The event in words: "moves left", "turns green"."""
        if self.action == "turns":
            return f"turns {self.new_color}"
        return f"bounces off the {self.wall} wall" if self.action == "bounces" else str(self.action)

    @property
    def moment(self) -> float:
        """The frame (fractional) at which the event is seen and heard: an instant change or a bounce's touch at
        the event's middle, a gradual one from its start."""
        return self.start + (self.end - self.start) / 2 if self.action in INSTANT else float(self.start)

    def state(self, frame: int) -> tuple[float, float, float, str, bool]:
        """(x, y, radius fraction, colour, visible) at ``frame``."""
        t = 0.0 if self.action is None else min(1.0, max(0.0, (frame - self.start) / max(1, self.end - self.start)))
        x, y, radius, color, visible = self.x, self.y, _RADIUS[self.size], self.color, True
        if self.action in MOVES:
            dx, dy = MOVES[self.action]
            x, y = x + dx * _MOVE * t, y + dy * _MOVE * t
        elif self.action == "bounces":
            dx, dy = WALLS[self.wall]  # type: ignore[index]
            # to the wall (touching it at t = 0.5) and back: the gap between shape and wall closes and reopens
            gap = (x - radius if dx < 0 else 1 - radius - x) if dx else (y - radius if dy < 0 else 1 - radius - y)
            x, y = x + dx * gap * (1 - abs(1 - 2 * t)), y + dy * gap * (1 - abs(1 - 2 * t))
        elif self.action == "grows":
            radius *= _SCALE**t
        elif self.action == "shrinks":
            radius /= _SCALE**t
        elif self.action == "turns":
            color = self.new_color if t >= 0.5 else self.color  # type: ignore[assignment]
        elif self.action == "appears":
            visible = t >= 0.5
        elif self.action == "disappears":
            visible = t < 0.5
        return x, y, radius, color, visible


def _allowed(color: str, shape: str, action: str, novel: bool) -> bool:
    return novel or (color, shape, action) not in HELD_OUT_EVENTS


def _place(
    rng: np.random.Generator, action: str | None, size: str, taken: list[tuple[float, float]], wall: str | None = None
) -> tuple[float, float]:
    """A start centre that keeps the whole event inside the frame and away from the other objects' starts (a
    bounce's within reach of its wall)."""
    margin = _RADIUS[size] * (_SCALE if action == "grows" else 1.0) + 0.02
    low_x = low_y = margin
    high_x = high_y = 1 - margin
    if action in MOVES:
        dx, dy = MOVES[action]
        low_x, high_x = (low_x - min(dx, 0) * _MOVE, high_x - max(dx, 0) * _MOVE)
        low_y, high_y = (low_y - min(dy, 0) * _MOVE, high_y - max(dy, 0) * _MOVE)
    elif action == "bounces":
        dx, dy = WALLS[wall]  # type: ignore[index]
        near, far = margin - 0.02 + _BOUNCE[0], margin - 0.02 + _BOUNCE[1]  # centre to wall
        if dx:
            low_x, high_x = (near, far) if dx < 0 else (1 - far, 1 - near)
        else:
            low_y, high_y = (near, far) if dy < 0 else (1 - far, 1 - near)
    for _ in range(50):
        x, y = rng.uniform(low_x, high_x), rng.uniform(low_y, high_y)
        if all(math.hypot(x - a, y - b) > 0.3 for a, b in taken):
            return x, y
    return x, y


def sample_clip(rng: np.random.Generator, frames: int, novel: bool, two_events: bool = False) -> list[Mover]:
    """1-3 objects with distinct colour-shape pairs; one or two of them (``two_events``: two) do an event each, in
    the order returned, one after the other. A novel clip's first event is a held-out combination."""
    k = int(rng.integers(2 if two_events else 1, 4))
    n_events = 2 if two_events else 1 if k == 1 else int(rng.integers(1, 3))
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    chosen = [pairs[int(i)] for i in rng.choice(len(pairs), size=k, replace=False)]
    events: list[tuple[str, str | None]] = []  # (action, its colour or wall)
    for j in range(n_events):
        color, shape = chosen[j]
        if novel and j == 0:
            color, shape, action = _pick(rng, HELD_OUT_EVENTS)
            chosen[0] = (color, shape)
            if len(set(chosen)) < len(chosen):  # the held-out pair was drawn for another object: replace that one
                chosen = [chosen[0]] + [p for p in pairs if p not in chosen][: k - 1]
        else:
            action = _pick(rng, [a for a in ACTIONS if _allowed(color, shape, a, novel)])
        if action == "turns":
            events.append((action, _pick(rng, [c for c in COLORS if c != color])))
        else:
            events.append((action, _pick(rng, list(WALLS)) if action == "bounces" else None))
    span = frames // n_events
    movers: list[Mover] = []
    taken: list[tuple[float, float]] = []
    for j, (color, shape) in enumerate(chosen):
        action, detail = events[j] if j < n_events else (None, None)
        new_color, wall = (detail, None) if action == "turns" else (None, detail)
        size = "large" if rng.random() < 0.5 else "small"
        x, y = _place(rng, action, size, taken, wall)
        taken.append((x, y))
        theta = math.radians(rng.uniform(-15, 15))
        start, end = (j * span + 1, (j + 1) * span - 1) if action is not None else (0, 0)
        movers.append(Mover(shape, color, size, x, y, theta, action, new_color, start, end, wall))
    return movers


def render_clip(
    movers: Sequence[Mover], rng: np.random.Generator, frames: int, size: int
) -> tuple[list[Image.Image], str]:
    """The clip's frames over one background (plain or textured), and the background kind."""
    textured = bool(rng.integers(2))
    background = _background(rng, size, textured)
    out = []
    for f in range(frames):
        canvas = background.copy()
        for m in movers:
            x, y, radius, color, visible = m.state(f)
            if visible:
                draw_shape(canvas, m.shape, COLORS[color], x * size, y * size, radius * size, m.theta)
        out.append(canvas)
    return out, "textured" if textured else "plain"


def encode_mp4(frames: Sequence[Image.Image], fps: int = FPS, sound: np.ndarray | None = None) -> bytes:
    """MPEG-4 Part 2 video in MP4 (FFmpeg's own encoder, one thread, bitexact): equal frames give equal bytes.
    libx264's output depended on what the process had encoded before, so a dataset would differ by --workers.
    ``sound`` (mono float at :data:`shapes_audio.SAMPLE_RATE`) becomes an AAC track (FFmpeg's own encoder, also
    bit-exact)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.options = {"qscale": "3", "flags": "+bitexact"}
        track = None  # every stream is added before the first packet (the header) is written
        if sound is not None:
            track = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
            track.codec_context.thread_count = 1
            track.bit_rate = 32_000  # plenty for 16 kHz mono: half the default's bytes
            track.codec_context.options = {"flags": "+bitexact", "aac_coder": "fast"}  # 4x the default coder's speed
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if track is not None:
            frame = av.AudioFrame.from_ndarray(sound[None, :].astype(np.float32), format="fltp", layout="mono")  # type: ignore[index]
            frame.sample_rate, frame.pts = SAMPLE_RATE, 0
            for packet in [*track.encode(frame), *track.encode()]:
                container.mux(packet)
    return buf.getvalue()


def soundtrack(events: Sequence[Mover], frames: int, background: str, rng: np.random.Generator) -> np.ndarray:
    """The clip's sound: each event's sound (timbre = shape, pitch = colour) from its :attr:`Mover.moment`."""
    sounds = [(m.moment / FPS, object_sound(m.shape, m.color, m.size, rng)) for m in events]
    return mix_sounds(sounds, frames / FPS, background == "textured", rng)


def _events_text(events: Sequence[Mover], rng: np.random.Generator) -> list[str]:
    said = [f"the {m.name} {m.phrase()}" for m in events]
    if len(said) == 1:
        return [said[0], f"a {events[0].name} {events[0].phrase()}"]
    return [f"{said[0]}, then {said[1]}", f"first {said[0]}, then {said[1]}", f"{said[1]} after {said[0]}"]


def make_qa(events: Sequence[Mover], movers: Sequence[Mover]) -> list[dict[str, str]]:
    qa = [{"question": f"what did the {m.name} do", "answer": m.phrase(), "type": "action"} for m in events]
    if len(events) == 2:
        qa.append({"question": "which shape changed first", "answer": events[0].shape, "type": "order"})
        qa.append({"question": "which shape changed last", "answer": events[1].shape, "type": "order"})
    qa.append({"question": "how many shapes are there", "answer": str(len(movers)), "type": "count"})
    return qa


def make_statements(events: Sequence[Mover], rng: np.random.Generator, novel: bool) -> list[dict[str, Any]]:
    """Each true claim beside a false one: the order reversed, or another action."""
    out: list[dict[str, Any]] = []
    truth = _events_text(events, rng)[0]
    if len(events) == 2:
        out += [
            {"text": truth, "label": True, "type": "order"},
            {
                "text": f"the {events[1].name} {events[1].phrase()}, then the {events[0].name} {events[0].phrase()}",
                "label": False,
                "type": "order",
            },
        ]
    m = events[0]
    others = [a for a in ACTIONS if a not in (m.action, "turns") and _allowed(m.color, m.shape, a, novel)]
    wrong = _pick(rng, others)
    wrong = f"bounces off the {_pick(rng, list(WALLS))} wall" if wrong == "bounces" else wrong
    out += [
        {"text": f"the {m.name} {m.phrase()}", "label": True, "type": "action"},
        {"text": f"the {m.name} {wrong}", "label": False, "type": "action"},
    ]
    return out


def _event_rows(events: Sequence[Mover]) -> list[dict[str, Any]]:
    return [{"object": m.name, "action": m.phrase(), "start": m.start, "end": m.end} for m in events]


def make_clip(
    seed: int, index: int, frames: int, size: int, novel: bool, sound: bool = False
) -> tuple[list[Image.Image], dict[str, Any], np.ndarray | None]:
    """Clip ``index`` of the dataset with ``seed``: its frames, its manifest row (no split) and, with ``sound``, its
    soundtrack (each event's ``sound_at`` second in the row)."""
    rng = np.random.default_rng([seed, index])
    movers = sample_clip(rng, frames, novel)
    images, background = render_clip(movers, rng, frames, size)
    events = [m for m in movers if m.action is not None]
    row = {
        "id": f"{index:06d}",
        "video": f"videos/{index:06d}.mp4",
        "captions": _events_text(events, rng),
        "objects": [
            {"shape": m.shape, "color": m.color, "size": m.size, "action": m.phrase() if m.action else None}
            for m in movers
        ],
        "events": _event_rows(events),
        "qa": make_qa(events, movers),
        "statements": make_statements(events, rng, novel),
        "label": {"action": events[0].action, "object": events[0].name, "actions": [m.action for m in events]},
        "background": background,
    }
    if not sound:
        return images, row, None
    row["audio"] = row["video"]
    for told, m in zip(row["events"], events):
        told["sound_at"] = m.moment / FPS
    return images, row, soundtrack(events, frames, background, np.random.default_rng([seed, index, _SOUND_STREAM]))


# Types of an audio-visual clip's statements that teach one half of the answer each, and are not scored: who acted
# first (the pictures' half) and which event the sound came with (the sound's half).
ACTED_FIRST = "acted_first"
SOUND_TIME = "sound_time"
AV_TRAINING_AIDS = (ACTED_FIRST, SOUND_TIME)


def make_av_clip(
    seed: int, index: int, frames: int, size: int, novel: bool
) -> tuple[list[Image.Image], dict[str, Any], np.ndarray]:
    """Audio-visual clip ``index``: two shapes act one after the other and only one event clicks (the same click
    for every shape). Its statements say which shape made the sound, one true, one false; their ``type`` says
    whether the first or the second event sounded. Two more (``type`` ``acted_first``) say which shape acted first,
    the pictures' half of the answer, and one (``sound_time``) whether the sound came with the first event, the
    sound's half: the sound statements alone teach neither (docs/video.md). It is one statement, true or false, not
    a true and a false one as the others: "first" and "second" against early and late sound is an XOR of a word and
    the sound, which a model starts learning only by chance (an audio and text model stayed at 0.5 on it)."""
    rng = np.random.default_rng([seed, index, _AV_STREAM])
    movers = sample_clip(rng, frames, novel, two_events=True)
    images, background = render_clip(movers, rng, frames, size)
    events = [m for m in movers if m.action is not None]
    heard = int(rng.integers(2))
    order = ("first", "second")[heard]
    track = mix_sounds([(events[heard].moment / FPS, click())], frames / FPS, background == "textured", rng)
    told = _event_rows(events)
    told[heard]["sound_at"] = events[heard].moment / FPS
    row = {
        "id": f"av{index:06d}",
        "video": f"videos/av{index:06d}.mp4",
        "audio": f"videos/av{index:06d}.mp4",
        "captions": _events_text(events, rng),
        "objects": [{"shape": m.shape, "color": m.color, "size": m.size} for m in movers],
        "events": told,
        "statements": [
            *({"text": f"the {m.name} made the sound", "label": m is events[heard], "type": order} for m in events),
            *({"text": f"the {m.name} changed first", "label": m is events[0], "type": ACTED_FIRST} for m in events),
            {"text": "the sound came with the first change", "label": heard == 0, "type": SOUND_TIME},
        ],
        "label": {"sounding": events[heard].name, "order": order},
        "background": background,
    }
    return images, row, track


def _write_clip(
    index: int, *, out_dir: Path, seed: int, frames: int, size: int, sizes: dict[str, int], sound: bool, av: bool
) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """Clip ``index`` (with a soundtrack when ``sound``) and, with ``av``, audio-visual clip ``index`` written; its
    split and rows."""
    split = _split_of(index, sizes)
    novel = split == "test_novel"
    images, row, track = make_clip(seed, index, frames, size, novel, sound)
    (out_dir / row["video"]).write_bytes(encode_mp4(images, sound=track))
    if not av:
        return split, row, None
    images, av_row, track = make_av_clip(seed, index, frames, size, novel)
    (out_dir / av_row["video"]).write_bytes(encode_mp4(images, sound=track))
    return split, row, av_row


def generate_shapesworld_video(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: int = 64,
    frames: int = 16,
    workers: int = 1,
    sound: bool = False,
    av: bool | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``n`` clips (80/10/10 train/val/test, and ``max(1, n // 10)`` more for test_novel) to ``out_dir``:
    ``videos/*.mp4``, ``{split}.jsonl`` and, last, ``shapesworld_video.json``; returns a summary. ``sound`` gives
    every clip a soundtrack; ``av`` (default: as ``sound``) adds as many audio-visual clips (``videos/av*.mp4``,
    ``av_{split}.jsonl``), which always have theirs. ``progress``: a bar in a terminal, a line every 5% elsewhere."""
    av = sound if av is None else av
    if n < 1 or size < 32 or frames < 4:
        raise ValueError(f"need n >= 1, size >= 32 and frames >= 4; got n={n}, size={size}, frames={frames}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / VIDEO_MANIFEST_NAME).unlink(missing_ok=True)
    sizes = split_sizes(n)
    total = sum(sizes.values())
    started = time.perf_counter()
    worker = partial(_write_clip, out_dir=out, seed=seed, frames=frames, size=size, sizes=sizes, sound=sound, av=av)
    prefixes = ("", "av_") if av else ("",)
    files = {(p, split): (out / f"{p}{split}.jsonl").open("w", encoding="utf-8") for p in prefixes for split in SPLITS}
    try:
        with ProgressReporter("ShapesWorld moves", total, enabled=progress) as reporter:
            rows = _rows(range(total), worker, workers, fork=False)
            for done, (split, row, av_row) in enumerate(rows, 1):
                files["", split].write(json.dumps(row, ensure_ascii=False) + "\n")
                if av_row is not None:
                    files["av_", split].write(json.dumps(av_row, ensure_ascii=False) + "\n")
                reporter.update(done)
    finally:
        for f in files.values():
            f.close()
    elapsed = time.perf_counter() - started
    manifest = {
        "generator": "shapesworld-video",
        "version": VIDEO_GENERATOR_VERSION,
        "params": {"n": n, "seed": seed, "size": size, "frames": frames, "sound": sound, "av": av},
        "counts": sizes,
        "actions": list(ACTIONS),
        "held_out": [f"{c} {s} {a}" for c, s, a in HELD_OUT_EVENTS],
    }
    write_atomic(out / VIDEO_MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return {
        **manifest,
        "out_dir": str(out),
        "total": total,
        "elapsed_seconds": round(elapsed, 3),
        "clips_per_second": round(len(prefixes) * total / elapsed, 1) if elapsed > 0 else None,  # av clips too
    }
