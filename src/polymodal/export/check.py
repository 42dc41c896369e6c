"""The held-out check set the export's variants are judged on: per tower, inputs unlike the calibration sample
(``sample.npz``, which SmoothQuant's scales and the timing use) and never part of it, in runtime-sized batches.

Texts: built-in sentences of every length up to the model's ``max_length`` (one word, numbers, punctuation, code,
other languages, a paragraph cut at ``max_length``) through the model's own tokenizer, plus the user's. Images:
ShapesWorld scenes, noise, flat colours and gradients of several sizes through the export's preprocessing, plus the
user's. Audio: tones, noise, silence, a chirp, clicks and short (padded) clips. Video: moving scenes, flat, noise
and short (padded) clips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from polymodal.data.errors import BadSampleError
from polymodal.data.image import decode_image
from polymodal.data.readers.base import IMAGE_EXTENSIONS
from polymodal.data.shapes import make_example
from polymodal.export.source import ExportError, ExportSource

if TYPE_CHECKING:
    from polymodal.data.audio import AudioFeatures
    from polymodal.data.processors import VideoProcessor
    from polymodal.data.text import TextTokenizer
    from polymodal.data.transforms import ImagePreprocess

SAMPLE_TEXTS = (  # the calibration sample's texts (sample.npz); never in the check set
    "a photo of a cat sitting on a red sofa",
    "two dogs playing in the snow",
    "a bowl of fruit on a wooden table",
    "a city street at night with cars and lights",
    "a small blue square left of a big green triangle",
    "an aerial view of a coastline",
    "a man riding a bicycle",
    "diagram",
)
CHECK_BATCH = 8  # rows per run: per-tensor int8 scales depend on what shares the batch, as at run time
CHECK_SEED = 1  # the calibration sample uses seed 0
CHECK_TEXTS = (
    "ok",
    "A long, winding road through snowy mountains under a grey sky, with a single red car far away in the distance.",
    "What is the capital of Australia?",
    "3.14159",
    "Please find the attached invoice #4821 for March (total: $1,249.99).",
    "sunset",
    "Ich habe heute leider keine Zeit.",
    "SELECT name, email FROM users WHERE id = 42;",
    "yes",
    "The patient reported mild headaches and nausea after 2 days of treatment.",
    "Wait... what?!",
    "a child flying a kite in a green park",
    "El perro duerme en el sofá.",
    "Call +1 (555) 010-9999 before 9:30 pm on 2026-12-04.",
    "!!!",
    "Neural networks learn representations from data; transformers use attention.",
    "thanks!",
    "Water boils at 100 degrees Celsius at sea level, and at lower temperatures higher up.",
    "https://example.com/docs/v2/index.html?q=onnx&lang=en",
    "Where is the nearest train station?",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "x",
    "for i in range(10): print(i ** 2)",
    "The stock market fell sharply after the announcement; analysts expect a rebound by Q3.",
    "一只猫坐在窗台上。",
    "Update the firmware before restarting the router.",
    "no",
    "three red circles, two blue squares and one green triangle on a white background",
    "¿Dónde está la biblioteca?",
    "1 2 3 4 5 6 7 8 9 10",
    "hello world",
    "Mix 200 g flour, 2 eggs and 250 ml milk; rest the batter for 30 minutes, then fry thin pancakes.",
)
# Cut at the model's max_length: the longest input the tower takes.
LONG_TEXT = " ".join(
    [
        "The committee met on Tuesday to review the proposal, which covers the budget, the timeline, and the risks.",
        "After a long discussion (and several coffee breaks), members agreed to revisit items 4, 7 and 12 in May.",
        "Questions? Write to the secretary; answers are due within 14 days, otherwise the default plan applies.",
    ]
    * 12
)


def read_check_texts(path: str | os.PathLike[str]) -> list[str]:
    """One text per non-blank line of a UTF-8 file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ExportError(f"{path}: check texts file not found") from None
    except UnicodeDecodeError as e:
        raise ExportError(
            f"{path}: check texts must be UTF-8 text, one per line ({e.reason} at byte {e.start})"
        ) from None
    except OSError as e:
        raise ExportError(f"{path}: cannot read check texts ({e.strerror})") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise ExportError(f"{path}: no texts (give one per line)")
    return texts


def read_check_images(directory: str | os.PathLike[str]) -> list[Image.Image]:
    """Every image file (by extension) in ``directory``, sorted by name; a file that does not decode is an error
    naming it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportError(f"{directory}: check images must be a directory of image files")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    if not files:
        raise ExportError(f"{directory}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    images = []
    for file in files:
        try:
            images.append(decode_image(file))
        except BadSampleError as e:
            raise ExportError(f"check image {e}") from None
    return images


def _batches(args: tuple[Tensor, ...]) -> list[tuple[Tensor, ...]]:
    return [tuple(a[i : i + CHECK_BATCH] for a in args) for i in range(0, len(args[0]), CHECK_BATCH)]


def text_check_set(
    tokenizer: TextTokenizer | None, max_length: int, user_texts: Sequence[str] = ()
) -> list[tuple[Tensor, Tensor]]:
    """Batches of (input_ids, attention_mask int64), each padded to its longest row as the runtime pads; without a
    tokenizer, seeded ids of lengths from 1 to ``max_length``."""
    if tokenizer is not None:
        texts = [*CHECK_TEXTS, LONG_TEXT, *user_texts]
        batches = []
        for start in range(0, len(texts), CHECK_BATCH):
            ids, mask = tokenizer.encode_batch(texts[start : start + CHECK_BATCH], max_length)
            batches.append((ids, mask.long()))
        return batches
    count = len(CHECK_TEXTS) + 1
    generator = torch.Generator().manual_seed(CHECK_SEED)
    ids = torch.randint(5, 40, (count, max_length), generator=generator)
    lengths = torch.linspace(1, max_length, count).round().long()[torch.randperm(count, generator=generator)]
    return _batches((ids, (torch.arange(max_length) < lengths[:, None]).long()))  # type: ignore[return-value]


def check_images(size: int) -> list[Image.Image]:
    """Built-in pictures unlike the calibration sample's: ShapesWorld scenes, noise, flat colours and gradients, in
    several sizes and aspect ratios; the kinds interleaved so each batch mixes them."""
    rng = np.random.RandomState(CHECK_SEED)
    scenes = [make_example(CHECK_SEED, i, max(64, size), novel=i % 2 == 1)[0] for i in range(8)]
    noise = [
        Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)),
        Image.fromarray(np.clip(rng.normal(128, 20, (size + 40, size, 3)), 0, 255).astype(np.uint8)),
        Image.fromarray((rng.rand(size, size * 2, 1) < 0.5).repeat(3, axis=2).astype(np.uint8) * 255),
        Image.fromarray(rng.randint(100, 140, (size // 2 + 1, size // 2 + 1, 3), dtype=np.uint8)),
    ]
    flat = [Image.new("RGB", (size, size), colour) for colour in ((0, 0, 0), (255, 255, 255), (128, 128, 128))]
    flat.append(Image.new("RGB", (size * 2, size), (220, 30, 30)))
    ramp = np.linspace(0, 255, size)
    gradients = [
        np.stack([ramp[None, :].repeat(size, 0)] * 3, axis=2),  # horizontal grey
        np.stack([ramp[:, None].repeat(size, 1), np.full((size, size), 60.0), 255 - ramp[:, None].repeat(size, 1)], 2),
        np.stack([(ramp[None, :] + ramp[:, None]) / 2] * 3, axis=2),  # diagonal
        np.stack([np.hypot(*np.meshgrid(ramp - 128, ramp - 128)).clip(0, 255)] * 3, axis=2),  # radial
    ]
    gradient_images = [Image.fromarray(g.astype(np.uint8)) for g in gradients]
    draw = ImageDraw.Draw(gradient_images[0])
    draw.text((2, 2), "0123 ABC", fill=(255, 0, 0))
    kinds = [scenes[:4], noise, flat, gradient_images, scenes[4:]]
    return [group[i] for i in range(max(map(len, kinds))) for group in kinds if i < len(group)]


def image_check_set(preprocess: ImagePreprocess, user_images: Sequence[Image.Image] = ()) -> list[tuple[Tensor]]:
    images = [*check_images(preprocess.image_size), *user_images]
    pixels = torch.stack([preprocess.to_tensor(img) for img in images])
    return [(b[0],) for b in _batches((pixels,))]


def _waves(features: AudioFeatures) -> list[Tensor]:
    """Tones, noise, silence, a chirp, clicks, a square wave, clipping, and clips a tenth and half as long."""
    rate, n = features.sample_rate, features.clip_samples
    t = torch.arange(n) / rate
    generator = torch.Generator().manual_seed(CHECK_SEED)
    tone = lambda hz: 0.5 * torch.sin(2 * torch.pi * hz * t)  # noqa: E731
    clicks = torch.zeros(n)
    clicks[:: max(1, rate // 10)] = 0.9
    chirp = 0.4 * torch.sin(2 * torch.pi * (50 + (rate / 5) * t / (2 * max(float(t[-1]), 1e-3))) * t)
    return [
        tone(110),
        0.3 * torch.randn(n, generator=generator),
        torch.zeros(n),
        chirp,
        clicks,
        tone(1000)[: max(1, n // 10)],
        torch.sign(tone(220)) * 0.3,
        (tone(3000) * 4).clamp(-1, 1),
        tone(440) * torch.linspace(0, 1, n),
        0.01 * torch.randn(n, generator=generator),
        (tone(660) + 0.2 * torch.randn(n, generator=generator))[: max(1, n // 2)],
        tone(60) * 0.9,
    ]


def audio_check_set(features: AudioFeatures) -> list[tuple[Tensor, Tensor]]:
    from polymodal.data.processors import AudioProcessor

    processor = AudioProcessor(features)
    waves = _waves(features)
    batches = []
    for start in range(0, len(waves), CHECK_BATCH):
        x, mask = processor.batch(waves[start : start + CHECK_BATCH])
        assert mask is not None  # an audio batch always has a frame mask
        batches.append((x, mask.long()))
    return batches


def video_check_set(processor: VideoProcessor) -> list[tuple[Tensor, Tensor]]:
    """Clips of moving ShapesWorld scenes, flat colour, noise and a sliding gradient; some shorter (padded)."""
    t, size = processor.sampling.frames, processor.preprocess.image_size
    rng = np.random.RandomState(CHECK_SEED)
    ramp = np.linspace(0, 255, size * 2)
    clips: list[list[Image.Image]] = [
        [make_example(CHECK_SEED + c, i, max(64, size), novel=False)[0] for i in range(t)] for c in range(3)
    ]
    clips += [
        [Image.new("RGB", (size, size), (30, 90, 200))] * t,
        [Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(t)],
        [
            Image.fromarray(np.stack([ramp[i : i + size][None].repeat(size, 0)] * 3, 2).astype(np.uint8))
            for i in range(t)
        ],
        [make_example(CHECK_SEED + 9, 0, max(64, size), novel=True)[0]],
        [Image.new("RGB", (size, size), (255, 255, 255))] * max(1, t // 2),
    ]
    tensors = [torch.stack([processor.preprocess.to_tensor(frame) for frame in clip]) for clip in clips]
    batches = []
    for start in range(0, len(tensors), CHECK_BATCH):
        batch = processor.collate(tensors[start : start + CHECK_BATCH])
        assert batch.x is not None and batch.mask is not None  # every clip is present
        batches.append((batch.x, batch.mask.long()))
    return batches


def check_set(
    modality: str, source: ExportSource, user_texts: Sequence[str] = (), user_images: Sequence[Image.Image] = ()
) -> list[tuple[Tensor, ...]]:
    """The tower's held-out check batches, in the order of its graph's inputs."""
    builders: dict[str, Callable[[], list]] = {
        "text": lambda: text_check_set(source.tokenizer, source.max_length, user_texts),  # type: ignore[arg-type]
        "image": lambda: image_check_set(source.preprocess, user_images),  # type: ignore[arg-type]
        "audio": lambda: audio_check_set(source.audio),  # type: ignore[arg-type]
        "video": lambda: video_check_set(source.video),  # type: ignore[arg-type]
    }
    return builders[modality]()
