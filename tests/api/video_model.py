"""Tiny models and clips for the video tests of the api, index and serve: an image-text model trained here in
seconds to tell red pictures from blue ones (zero-shot video goes through its image tower per frame), the same
image tower under a video tower (``video_frames``, temporal mean), and short solid-colour MP4s written with
FFmpeg's MPEG-4 encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.data.processors import ImageProcessor, TextProcessor, VideoProcessor
from polymodal.data.text import train_tokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.data.video import Clip, VideoSampling
from polymodal.models import build_model, build_preset, parse_model_config, save_model
from polymodal.models.config import ComponentConfig
from polymodal.models.presets import PRESETS
from polymodal.modules.losses.caption import CaptionLoss
from tests.api.audio_model import contrastive_step

pytest.importorskip("av")
from polymodal.data.shapes_video import encode_mp4  # noqa: E402  # needs PyAV

SIZE = 32
FPS = 8
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
CAPTIONS = {name: f"a {name} picture" for name in COLOURS}
IMAGE = {"name": "vit", "params": {"image_size": SIZE, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}}
TEXT = {"name": "transformer_text", "params": {"width": 16, "depth": 1, "heads": 2, "max_length": 8}}


def picture(colour: str, seed: int = 0) -> Image.Image:
    """A solid colour with a little noise."""
    rgb = np.array(COLOURS[colour], np.float32) + np.random.default_rng(seed).normal(0, 12, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def write_clip(path: Path, colours: list[str], seconds_each: float = 1.0) -> Path:
    """An MP4 at 8 fps showing each colour in turn for ``seconds_each``."""
    frames = [picture(c, seed=i) for c in colours for i in range(round(seconds_each * FPS))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp4(frames, fps=FPS))
    return path


def write_webm(path: Path, colours: list[str], seconds_each: float = 1.0) -> Path:
    """The same clip as VP8 in WebM (what every browser plays), a keyframe each second so players seek fast."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=FPS, options={"g": str(FPS)})
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i, colour in enumerate(c for c in colours for _ in range(round(seconds_each * FPS))):
            out.mux(stream.encode(av.VideoFrame.from_image(picture(colour, seed=i))))
        out.mux(stream.encode())
    return path


def save_colour_model(directory: Path, *, video_tower: bool = False, steps: int = 60, seed: int = 0) -> Path:
    """Train an image and a text tower so each colour's picture is nearest its caption;
    save them as an image-text model, or with ``video_tower`` the image tower under a ``video_frames`` tower with
    a parameter-free temporal mean, so both paths embed the same frames the same way."""
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(list(CAPTIONS.values()), vocab_size=32, kind="wordlevel")
    text = {**TEXT, "params": {**TEXT["params"], "vocab_size": tokenizer.vocab_size}}
    model = build_model(parse_model_config({"kind": "embedding", "encoders": {"image": IMAGE, "text": text}}))
    image = ImageProcessor(ImagePreprocess(image_size=SIZE))
    captions = TextProcessor(tokenizer, 8)
    targets = captions.batch(list(CAPTIONS.values()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        labels = torch.arange(8) % len(COLOURS)
        names = [list(COLOURS)[i] for i in labels.tolist()]
        pictures = model.embed("image", *image.batch([picture(n, seed=step * 8 + i) for i, n in enumerate(names)]))
        contrastive_step(optimizer, 20 * pictures @ model.embed("text", *targets).T, labels)  # logits (8, 2)
    model.eval()
    if not video_tower:
        return save_model(directory, model, {"image": image, "text": captions})
    video = {"name": "video_frames", "params": {"frame_encoder": IMAGE, "temporal": "mean"}}
    config = {"kind": "embedding", "encoders": {"video": video, "text": text}}
    tower = build_model(parse_model_config({**config, "embed_dim": model.config.embed_dim}))
    tower.encoders.video.frames.load_state_dict(model.encoders.image.state_dict())
    tower.encoders.text.load_state_dict(model.encoders.text.state_dict())
    for name in ("video", "text"):
        source = "image" if name == "video" else name
        tower.projections[name].load_state_dict(model.projections[source].state_dict())
    processors = {"video": VideoProcessor(VideoSampling(frames=8), image.preprocess), "text": captions}
    return save_model(directory, tower.eval(), processors)


def save_video_captioner(directory: Path, steps: int = 0, source: str = "video", frames: int = 8) -> Path:
    """A captioner of clips (a ViT per frame under a temporal transformer, and a text decoder), or with ``source``
    "image" of pictures; with ``steps``, trained that long to say each colour's caption."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer(list(CAPTIONS.values()), vocab_size=32, kind="wordlevel")
    model = build_preset(
        "shapes-caption", source=source, image_size=SIZE, frames=frames, vocab_size=tokenizer.vocab_size, max_length=8
    )
    preprocess = ImagePreprocess(image_size=SIZE)
    processors = {
        source: VideoProcessor(VideoSampling(frames=frames), preprocess)
        if source == "video"
        else ImageProcessor(preprocess),
        "text": TextProcessor(tokenizer, 8),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # at 3e-3 it can say one caption for 200+ steps
    for step in range(steps):
        names = [list(COLOURS)[i % len(COLOURS)] for i in range(8)]
        pictures = [picture(n, seed=step * 8 + i) for i, n in enumerate(names)]
        media = (
            [Clip([p] * frames, [k / frames for k in range(frames)], 1.0, FPS) for p in pictures]
            if source == "video"
            else pictures
        )
        ids, mask = processors["text"].batch([CAPTIONS[n] for n in names])
        logits = model({source: processors[source].batch(media)}, ids, mask)["logits"]
        loss = CaptionLoss()(logits, ids, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_model(directory, model.eval(), processors)


def save_video_question_answerer(directory: Path, with_image: bool = False) -> Path:
    """An untrained question answerer of clips: a ViT per frame under a temporal transformer and a question tower,
    classifying over the two colours; ``with_image``: an image tower beside them, read together with the clip."""
    questions = ["what colour is the shape", "what colour came first"]
    tokenizer = train_tokenizer(questions, vocab_size=32, kind="wordlevel")
    config = PRESETS.build(
        "shapes-vqa", source="video", image_size=SIZE, frames=8, vocab_size=tokenizer.vocab_size, num_answers=2
    )
    image = ImagePreprocess(image_size=SIZE)
    processors = {"video": VideoProcessor(VideoSampling(frames=8), image), "text": TextProcessor(tokenizer, 8)}
    if with_image:
        config = config.model_copy(update={"encoders": {**config.encoders, "image": ComponentConfig(**IMAGE)}})
        processors["image"] = ImageProcessor(image)
    model = build_model(config)
    return save_model(directory, model.eval(), processors, {name: i for i, name in enumerate(COLOURS)})


@pytest.fixture(scope="session")
def video_question_answerer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_video_question_answerer(tmp_path_factory.mktemp("video-qa") / "model")


@pytest.fixture(scope="session")
def video_captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_video_captioner(tmp_path_factory.mktemp("video-captioner") / "model")


@pytest.fixture(scope="session")
def colour_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_colour_model(tmp_path_factory.mktemp("colour") / "model")


@pytest.fixture(scope="session")
def colour_video_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_colour_model(tmp_path_factory.mktemp("colour-video") / "model", video_tower=True)
