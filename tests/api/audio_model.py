"""A tiny audio-text (optionally + image) embedding model trained here in seconds to tell a low tone from a high one,
and short synthetic tones written with soundfile. Shared by the api, index and serve tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from polymodal.data.audio import AudioFeatures
from polymodal.data.processors import AudioProcessor, ImageProcessor, TextProcessor
from polymodal.data.text import train_tokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.models import build_model, parse_model_config, save_model

RATE = 8000
FEATURES = {"sample_rate": RATE, "clip_seconds": 0.5, "n_fft": 256, "hop_length": 128, "n_mels": 32}
PITCHES = {"low": 220.0, "high": 1760.0}  # three octaves apart: the words the model learns for them
CAPTIONS = {name: f"a {name} tone" for name in PITCHES}
AUDIO = {"name": "audio_cnn", "params": {"channels": 32, "widths": [8, 16], "width": 32}}
TEXT = {"name": "transformer_text", "params": {"width": 16, "depth": 1, "heads": 2, "max_length": 8}}
IMAGE = {"name": "vit", "params": {"image_size": 32, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}}


def tone(freq: float, seconds: float = 0.4, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A sine over a little white noise (the floor a file's 16-bit samples have anyway, which a model trained on
    pure sines would read as a difference)."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype("float32")


def write_tone(path: Path, freq: float, seconds: float = 0.4, rate: int = RATE) -> Path:
    """A sine tone; the format follows the suffix (.wav, .flac, .ogg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(freq, seconds, rate, seed=int(freq)), rate)
    return path


def save_audio_model(directory: Path, *, image: bool = False, steps: int = 100, seed: int = 0) -> Path:
    """Train audio and text towers for ``steps`` so each tone's nearest caption is its pitch's (CLAP-style, with the
    two captions as classes), save the model and return its directory. ``image`` adds an untrained image tower."""
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(list(CAPTIONS.values()) + ["a red circle"], vocab_size=32, kind="wordlevel")
    text = {**TEXT, "params": {**TEXT["params"], "vocab_size": tokenizer.vocab_size}}
    encoders = {"audio": AUDIO, "text": text, **({"image": IMAGE} if image else {})}
    model = build_model(parse_model_config({"kind": "embedding", "encoders": encoders, "embed_dim": 16}))
    processors = {"audio": AudioProcessor(AudioFeatures(**FEATURES)), "text": TextProcessor(tokenizer, 8)}
    if image:
        processors["image"] = ImageProcessor(ImagePreprocess(image_size=32))
    rng = np.random.default_rng(seed)
    captions = processors["text"].batch(list(CAPTIONS.values()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        labels = torch.arange(8) % len(PITCHES)
        freqs = [list(PITCHES.values())[i] * 2 ** rng.uniform(-0.3, 0.3) for i in labels.tolist()]
        waves = [torch.from_numpy(tone(f, rng.uniform(0.2, 0.5), seed=int(rng.integers(1 << 30)))) for f in freqs]
        sounds = model.embed("audio", *processors["audio"].batch(waves))  # (8, D)
        contrastive_step(optimizer, 20 * sounds @ model.embed("text", *captions).T, labels)  # logits (8, 2)
    return save_model(directory, model.eval(), processors)


def contrastive_step(optimizer: torch.optim.Optimizer, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """One step on (N, C) item-caption logits, both ways as CLIP does: each item finds its caption, and each caption
    its items (search needs this)."""
    positives = F.one_hot(labels, logits.shape[1]).float().T  # (C, N)
    loss = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, positives / positives.sum(1, keepdim=True))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def write_sounds(folder: Path) -> dict[str, list[Path]]:
    """Low and high tones at a few pitches in WAV, FLAC and OGG, some in a subfolder: pitch name -> files."""
    out: dict[str, list[Path]] = {}
    for name, freq in PITCHES.items():
        out[name] = [
            write_tone(folder / f"{name}-a.wav", freq),
            write_tone(folder / f"{name}-b.flac", freq * 1.1, 0.3),
            write_tone(folder / "more" / f"{name}-c.ogg", freq * 0.92, 0.5),
        ]
    return out


@pytest.fixture(scope="session")
def audio_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained audio + text model with an (untrained) image tower: one space for all three."""
    return save_audio_model(tmp_path_factory.mktemp("audio_model") / "model", image=True)
