"""Resemblyzer's speaker encoder: the same embeddings as resemblyzer itself, voices told apart, a speaker
classifier trained from a recipe on its features. Tests needing the weights skip without the resemblyzer package;
the comparison with resemblyzer's own code also needs librosa (which resemblyzer imports)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from polymodal.data.audio import AudioFeatures
from polymodal.data.processors import AudioProcessor
from polymodal.pretrained import locate
from polymodal.pretrained.speaker import RESEMBLYZER_FEATURES, SpeakerLSTM, load_speaker_lstm

RATE = 16_000
FORMANTS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240), "e": (530, 1840, 2480)}
VOICES = [(110.0, 1.0), (220.0, 1.18), (160.0, 1.08), (300.0, 1.25)]  # pitch (Hz), vocal-tract scale of formants


@pytest.fixture(scope="module")
def speaker() -> SpeakerLSTM:
    if importlib.util.find_spec(locate.RESEMBLYZER_PACKAGE) is None:
        pytest.skip(f"resemblyzer is not installed ({locate.install_hint(locate.RESEMBLYZER_PACKAGE)})")
    return load_speaker_lstm()


def features(seconds: float) -> AudioProcessor:
    return AudioProcessor(RESEMBLYZER_FEATURES.model_copy(update={"clip_seconds": seconds}))


def embed(encoder: SpeakerLSTM, waves: list[np.ndarray], seconds: float) -> torch.Tensor:
    processor = features(seconds)
    batch = processor.collate([processor.prepare(torch.from_numpy(w)) for w in waves])  # leveled, as loaded models do
    with torch.no_grad():
        return encoder(batch.x, batch.mask).pooled


def voiced(f0: float, formant_scale: float, vowels: str, rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A synthetic voice: a glottal pulse train with vibrato through three formant resonators per vowel. Pitch and
    formant scale make the speaker; the vowel order makes what is said."""
    from scipy.signal import lfilter

    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    phase = np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / RATE
    pulses = np.diff(np.floor(phase), prepend=0.0)
    out = np.zeros(n)
    seg = n // len(vowels)
    for k, vowel in enumerate(vowels):
        part = slice(k * seg, (k + 1) * seg)
        for freq, bandwidth in zip(FORMANTS[vowel], (60, 90, 120)):
            r, theta = np.exp(-np.pi * bandwidth / RATE), 2 * np.pi * freq * formant_scale / RATE
            out[part] += lfilter([1.0], [1.0, -2 * r * np.cos(theta), r * r], pulses[part]) * np.hanning(seg) ** 0.3
    out += 0.005 * np.abs(out).max() * rng.standard_normal(n)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def test_embeddings_equal_resemblyzers_embed_utterance(speaker):
    pytest.importorskip("librosa")
    resemblyzer = pytest.importorskip("resemblyzer")
    reference = resemblyzer.VoiceEncoder(device="cpu", verbose=False)
    rng = np.random.default_rng(0)
    # 4 s, odd lengths, shorter than one window, whole hops: one batch, so the mask decides each clip's partials.
    waves = [voiced(f0, scale, "aieu", rng, seconds) for (f0, scale), seconds in zip(VOICES, (4.0, 3.0048, 0.5, 2.4))]
    processor = features(4.0)
    batch = processor.collate([torch.from_numpy(w) for w in waves])
    with torch.no_grad():
        out = speaker(batch.x, batch.mask)
    for i, wave in enumerate(waves):
        embedding, partials, _ = reference.embed_utterance(wave, return_partials=True)
        assert int(out.mask[i].sum()) == len(partials)
        np.testing.assert_allclose(out.tokens[i, : len(partials)].numpy(), partials, atol=1e-4)
        assert float(out.pooled[i] @ torch.from_numpy(embedding)) >= 0.99


def test_features_equal_resemblyzers_mel_spectrogram():
    """exp of the log-mel of RESEMBLYZER_FEATURES is librosa's power mel spectrogram, frame for frame."""
    pytest.importorskip("librosa")
    audio = pytest.importorskip("resemblyzer.audio")
    wave = voiced(140.0, 1.1, "ua", np.random.default_rng(1), 1.23)
    ours = RESEMBLYZER_FEATURES(torch.from_numpy(wave)[None])[0].exp().T.numpy()  # (frames, 40)
    reference = audio.wav_to_mel_spectrogram(wave)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6 * reference.max())


def test_partial_windows_are_resemblyzers_slices():
    encoder = SpeakerLSTM()
    assert encoder.partial_starts(500) == [0, 77, 154, 231, 308]  # 5 s: a sixth window would be 72% sound
    assert encoder.partial_starts(10) == [0]  # shorter than a window: one, padded with silence
    pytest.importorskip("librosa")
    resemblyzer = pytest.importorskip("resemblyzer")
    for frames in range(1, 1200, 7):
        _, slices = resemblyzer.VoiceEncoder.compute_partial_slices(frames * 160, rate=1.3, min_coverage=0.75)
        assert encoder.partial_starts(frames) == [s.start for s in slices], frames


def test_a_clip_embeds_alike_alone_and_in_a_padded_batch_and_gradients_flow():
    torch.manual_seed(0)
    encoder = SpeakerLSTM(width=32, layers=2)
    rng = np.random.default_rng(2)
    waves = [voiced(f0, scale, "ie", rng, s) for (f0, scale), s in zip(VOICES, (3.0, 1.0, 2.2))]
    processor = features(3.0)
    batch = processor.collate([torch.from_numpy(w) for w in waves])
    out = encoder(batch.x, batch.mask)
    assert out.tokens.shape == (3, 3, 32) and out.mask.sum(1).tolist() == [3, 1, 2]
    assert (out.tokens[~out.mask] == 0).all()
    torch.testing.assert_close(out.pooled.norm(dim=-1), torch.ones(3))
    for i, wave in enumerate(waves):
        alone = processor.collate([torch.from_numpy(wave)])
        torch.testing.assert_close(encoder(alone.x, alone.mask).pooled[0], out.pooled[i], atol=1e-5, rtol=1e-5)
    (out.pooled * torch.randn_like(out.pooled)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.lstm.parameters())


def test_each_synthetic_voice_is_nearest_to_itself(speaker):
    """Zero-shot: clips of one voice saying other things lie closer together than clips of different voices."""
    rng = np.random.default_rng(3)
    phrases = ["aieu", "ueia", "eiau"]
    waves = [voiced(f0, scale, phrase, rng, 3.0) for f0, scale in VOICES for phrase in phrases]
    embeddings = embed(speaker, waves, 3.0)
    similarity = embeddings @ embeddings.T
    voice = torch.arange(len(VOICES)).repeat_interleave(len(phrases))
    same = (voice[:, None] == voice[None]) & ~torch.eye(len(voice), dtype=torch.bool)
    nearest = similarity.masked_fill(torch.eye(len(voice), dtype=torch.bool), -2).argmax(1)
    assert torch.equal(voice[nearest], voice)
    assert similarity[same].mean() > similarity[voice[:, None] != voice[None]].mean() + 0.1


def test_a_voice_is_the_same_voice_whatever_its_recording_level(speaker):
    """Clips are brought to -30 dBFS before the features, as resemblyzer's preprocess_wav does: a recording 12 dB
    quieter or 6 dB louder embeds as the original (without it: cosine 0.83 at -12 dB, and a fitted speaker classifier
    fell from 0.90 to 0.22 accuracy). Silence stays silence."""
    rng = np.random.default_rng(3)
    wave = voiced(*VOICES[0], "aieu", rng, 2.0)
    original, quieter, louder = embed(speaker, [wave, wave * 10 ** (-12 / 20), wave * 10 ** (6 / 20)], 2.0)
    assert float(original @ quieter) > 0.9999 and float(original @ louder) > 0.9999
    level = RESEMBLYZER_FEATURES.leveled(torch.from_numpy(wave * 0.01))
    assert 20 * np.log10(float(level.square().mean().sqrt())) == pytest.approx(-30.0, abs=1e-3)
    silence = torch.zeros(RATE)
    assert torch.equal(RESEMBLYZER_FEATURES.leveled(silence), silence)
    assert AudioFeatures().level_dbfs is None  # other towers' features are as they were


def test_a_speaker_classifier_trains_from_a_recipe_on_the_frozen_tower(speaker, tmp_path: Path):
    from polymodal.models import SavedModel
    from polymodal.train.recipe import Recipe
    from polymodal.train.run import run_recipe

    rng = np.random.default_rng(4)
    clips = tmp_path / "clips"
    clips.mkdir()
    for split, phrases in (("train", ["aieu", "ueia", "eiau", "iuae"]), ("val", ["auie", "eaui"])):
        rows = []
        for v, (f0, scale) in enumerate(VOICES):
            for k, phrase in enumerate(phrases):
                sf.write(
                    clips / f"{split}{v}{k}.flac", voiced(f0 * rng.uniform(0.95, 1.05), scale, phrase, rng, 2.0), RATE
                )
                rows.append({"id": f"{split}{v}{k}", "audio": f"clips/{split}{v}{k}.flac", "label": f"voice{v}"})
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {**RESEMBLYZER_FEATURES.model_dump(mode="json"), "clip_seconds": 2.0}
    recipe = Recipe.model_validate(
        {
            "name": "speakers",
            "model": {
                "config": {
                    "kind": "fusion_classifier",
                    "encoders": {"audio": {"name": "resemblyzer_speaker"}},
                    "fusion": {"name": "concat", "params": {"hidden_dim": 32}},
                    "fusion_dim": 32,
                    "num_classes": len(VOICES),
                },
                "freeze": {"encoders.audio": 0},
            },
            "data": {"path": str(tmp_path), "view": "labels", "processors": {"audio": settings}},
            "objective": {"kind": "classification"},
            "train": {
                "steps": 60,
                "batch_size": 8,
                "lr": 3e-3,
                "warmup_steps": 5,
                "metric": "accuracy",
                "precision": "fp32",
            },
        }
    )
    run_recipe(recipe, tmp_path / "run", progress=False)
    saved = SavedModel.load(tmp_path / "run" / "model")
    assert json.loads((saved.path / "processors.json").read_text())["audio"]["mel_scale"] == "slaney"
    rows = [json.loads(line) for line in (tmp_path / "val.jsonl").read_text().splitlines()]
    with torch.no_grad():
        logits = saved.model({"audio": saved.inputs("audio", [tmp_path / r["audio"] for r in rows])})
    predicted = [saved.answers[i] for i in logits.argmax(-1).tolist()]
    assert predicted == [r["label"] for r in rows]
    # The classifier over one tower also embeds with it: voices it was never trained on are told apart by cosine
    # (verification), with the tower's own features.
    import polymodal
    from polymodal.backends import TaskNotSupported

    loaded = polymodal.load(tmp_path / "run" / "model", precision="fp32")
    assert "embed" in loaded.capabilities and loaded.embed_dim == 256
    new_voices = [(130.0, 1.12), (260.0, 0.95)]
    waves = [voiced(f0, scale, phrase, rng, 2.0) for f0, scale in new_voices for phrase in ("aieu", "ueia")]
    vectors = torch.from_numpy(loaded.embed_audio([(w, RATE) for w in waves]))
    np.testing.assert_allclose(vectors, embed(speaker, waves, 2.0), atol=1e-4)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2:].max() and similarity[2, 3] > similarity[2, :2].max()
    with pytest.raises(TaskNotSupported, match="without a text tower"):
        loaded.classify([(waves[0], RATE)], ["voice0", "voice1"])


def test_wrong_features_and_bad_checkpoints_are_clear_errors(tmp_path: Path, monkeypatch):
    expected = (
        r"resemblyzer_speaker: expected log-mel features \(batch, 40 mel bands, frames\).*got shape \(1, 64, 50\)"
    )
    with pytest.raises(ValueError, match=expected + ".*RESEMBLYZER_FEATURES"):
        SpeakerLSTM()(torch.zeros(1, 64, 50))
    bad = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match=r"other\.pt: not a resemblyzer checkpoint"):
        load_speaker_lstm(bad)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        locate.importlib.util, "find_spec", lambda name, *a: None if name == "resemblyzer" else real(name, *a)
    )
    with pytest.raises(locate.PretrainedNotInstalled, match="pip install --no-deps resemblyzer"):
        load_speaker_lstm()
