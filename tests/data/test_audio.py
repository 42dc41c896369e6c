"""Audio as a modality: safe decoding of every format libsndfile reads, band-limited resampling, log-mel and MFCC
features equal to reference implementations, the audio processor, and an audio-text model trained from a recipe."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from polymodal.data.audio import AudioFeatures, decode_audio, resample
from polymodal.data.errors import BadSampleError
from polymodal.data.processors import AudioAugment, AudioProcessor

sf = pytest.importorskip("soundfile")


def tone(freq: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype("float32")
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def peak_hz(wave: torch.Tensor, rate: int) -> float:
    return float(torch.fft.rfft(wave.double()).abs().argmax()) * rate / wave.shape[-1]


@pytest.mark.parametrize("fmt,suffix", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_every_format_decodes_to_mono_at_the_model_rate_with_its_pitch(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = tmp_path / f"a.{suffix}"
    sf.write(path, tone(440, 1.0, 44100, channels=2), 44100, format=fmt)
    wave = decode_audio(path, 16000)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert abs(wave.shape[0] - 16000) < 1200  # MP3 and OGG pad a little
    assert abs(peak_hz(wave, 16000) - 440) < 2
    assert torch.equal(decode_audio(path.read_bytes(), 16000), wave)  # bytes (a tar shard) decode the same


def test_resampling_keeps_the_pitch_and_removes_what_the_new_rate_cannot_hold() -> None:
    rate = 48000
    mixture = torch.from_numpy(tone(1000, 1.0, rate) + tone(12000, 1.0, rate))
    down = resample(mixture, rate, 16000)  # 12 kHz is above the new Nyquist frequency (8 kHz)
    spectrum = torch.fft.rfft(down.double()).abs()
    assert abs(peak_hz(down, 16000) - 1000) < 1
    assert spectrum[int(4000 * down.shape[0] / 16000) :].max() < 1e-6 * spectrum.max()  # nothing folded back


def test_bad_audio_is_a_counted_bad_sample_naming_file_and_row(tmp_path: Path) -> None:
    good = tmp_path / "good.flac"
    sf.write(good, tone(440, 2.0, 16000), 16000, format="FLAC")
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.wav"
    text.write_text("these are not samples")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    cases = {truncated: "decode", text: "decode", empty: "empty_file", tmp_path / "missing.wav": "missing_file"}
    for path, kind in cases.items():
        with pytest.raises(BadSampleError) as err:
            decode_audio(path, 16000, source="train.jsonl", row=7)
        assert err.value.kind == kind and err.value.row == 7 and str(path) in str(err.value), path
    with pytest.raises(BadSampleError) as err:
        decode_audio(good, 16000, max_seconds=1.0)
    assert err.value.kind == "too_long"
    buffer = io.BytesIO()
    sf.write(buffer, tone(100, 0.5, 2000), 2000, format="WAV")
    raw = bytearray(buffer.getvalue())
    raw[24:28] = (900_000).to_bytes(4, "little")  # a header claiming an absurd sample rate
    with pytest.raises(BadSampleError, match="sample rate 900000"):
        decode_audio(bytes(raw), 16000)
    with pytest.raises(BadSampleError, match="expected a path or bytes"):
        decode_audio(12, 16000)  # type: ignore[arg-type]


def test_log_mel_and_mfcc_equal_reference_implementations() -> None:
    from scipy.fft import dct
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    wave = np.random.default_rng(0).standard_normal(16000).astype("float32") * 0.1
    features = AudioFeatures(sample_rate=16000, n_fft=400, hop_length=160, n_mels=64)
    reference = spectrogram(
        wave,
        window_function(400, "hann"),
        frame_length=400,
        hop_length=160,
        power=2.0,
        mel_filters=mel_filter_bank(201, 64, 0, 8000, 16000, norm=None, mel_scale="htk"),
        log_mel="log",
        mel_floor=1e-10,
    )
    ours = features(torch.from_numpy(wave)[None])[0]
    assert ours.shape == (64, features.frames(16000))
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-4)
    mfcc = AudioFeatures(kind="mfcc", n_mfcc=13)(torch.from_numpy(wave)[None])[0]
    np.testing.assert_allclose(mfcc.numpy(), dct(reference, type=2, norm="ortho", axis=0)[:13], atol=1e-3)


def test_the_processor_crops_pads_masks_and_keeps_its_settings(tmp_path: Path) -> None:
    features = AudioFeatures(sample_rate=8000, clip_seconds=1.0, n_fft=256, hop_length=128, n_mels=32)
    processor = AudioProcessor(features)
    long, short = tmp_path / "long.wav", tmp_path / "short.wav"
    sf.write(long, tone(300, 3.0, 8000), 8000)
    sf.write(short, tone(300, 0.25, 8000), 8000)
    values = [processor.prepare(long), processor.prepare(short), None]
    assert values[0].shape == (8000,) and values[1].shape == (2000,)
    batch = processor.collate(values)
    assert batch.x.shape == (3, 32, features.frames(8000)) and batch.present.tolist() == [True, True, False]
    assert batch.mask[0].all() and batch.mask[1].sum() == 2000 // 128 + 1 and not batch.mask[2].any()
    again = AudioProcessor.from_settings(json.loads(json.dumps(processor.settings())), tmp_path)
    assert torch.equal(again.collate(values).x, batch.x) and processor.deterministic
    training = AudioProcessor(features, AudioAugment(gain_db=6.0))
    a = training.prepare(long, torch.Generator().manual_seed(1))
    b = training.prepare(long, torch.Generator().manual_seed(1))
    assert not training.deterministic and torch.equal(a, b) and a.shape == (8000,)
    assert not torch.equal(a, training.prepare(long, torch.Generator().manual_seed(2)))
    assert training.for_inference().deterministic and training.for_inference().features == features


def test_an_audio_text_model_trains_from_a_recipe_and_matches_sounds_to_words(tmp_path: Path) -> None:
    """CLAP-style: tones whose pitch names a colour, captioned with the colour, trained with random gain; a broken
    file is skipped."""
    from polymodal.models import SavedModel
    from polymodal.train.recipe import Recipe
    from polymodal.train.run import run_recipe

    colours = {"red": 220.0, "green": 440.0, "blue": 880.0, "yellow": 1760.0}
    rng = np.random.default_rng(0)
    for name, freq in colours.items():
        for k in range(4):  # a few takes per colour: other lengths and loudness
            sf.write(tmp_path / f"{name}{k}.wav", tone(freq, 0.3 + 0.1 * k, 8000) * rng.uniform(0.3, 1.0), 8000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    names = list(colours)
    rows = [
        {"id": f"s{i}", "audio": f"{names[i % 4]}{(i // 4) % 4}.wav", "text": f"a {names[i % 4]} sound"}
        for i in range(128)
    ]
    rows.append({"id": "bad", "audio": "broken.wav", "text": "a red sound"})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    features = {"sample_rate": 8000, "clip_seconds": 0.5, "n_fft": 256, "hop_length": 128, "n_mels": 32}
    recipe = Recipe.model_validate(
        {
            "name": "tones",
            "model": {
                "config": {
                    "kind": "embedding",
                    "embed_dim": 16,
                    "encoders": {
                        "audio": {"name": "audio_cnn", "params": {"channels": 32, "widths": [8, 16], "width": 32}},
                        "text": {"name": "rnn_text", "params": {"vocab_size": 32, "width": 16}},
                    },
                }
            },
            "data": {
                "path": str(tmp_path),
                "val": None,
                "vocab_size": 32,
                "max_length": 8,
                "processors": {"audio": {**features, "augment": {"gain_db": 3.0}}},
            },
            "objective": {"kind": "contrastive"},
            "train": {"steps": 150, "batch_size": 16, "lr": 3e-3, "warmup_steps": 10, "precision": "fp32"},
        }
    )
    run_recipe(recipe, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["bad_samples_by_kind"] and set(summary["bad_samples_by_kind"]) <= {"decode"}
    saved = SavedModel.load(tmp_path / "run" / "model")
    saved_settings = json.loads((saved.path / "processors.json").read_text())["audio"]
    assert saved_settings["sample_rate"] == 8000 and "augment" not in saved_settings  # training-time only
    assert saved.processors["audio"].deterministic
    with torch.no_grad():
        sounds = saved.model.embed("audio", *saved.inputs("audio", [tmp_path / f"{n}3.wav" for n in names]))
        words = saved.model.embed("text", *saved.inputs("text", [f"a {n} sound" for n in names]))
    assert (sounds @ words.T).argmax(-1).tolist() == [0, 1, 2, 3]


def test_data_check_decodes_audio_and_reports_bad_files_with_their_row(tmp_path: Path) -> None:
    from polymodal.data.check import check_dataset

    sf.write(tmp_path / "ok.flac", tone(440, 0.5, 16000), 16000, format="FLAC")
    (tmp_path / "bad.wav").write_text("not audio")
    rows = [{"id": "a", "audio": "ok.flac", "text": "a tone"}, {"id": "b", "audio": "bad.wav", "text": "noise"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = check_dataset(tmp_path / "m.jsonl")
    assert report.modalities["audio"] == 1 and report.bad == 1
    assert report.bad_examples[0]["row"] == 2 and report.bad_examples[0]["field"] == "audio"


def test_class_folders_of_sounds_read_as_audio_samples(tmp_path: Path) -> None:
    """UrbanSound8K-style or a plain folder of class folders: each audio file an `audio` sample with its label."""
    from polymodal.data.readers import open_dataset, read_class_folders

    for label in ("dog", "rain"):
        (tmp_path / label).mkdir()
        sf.write(tmp_path / label / "a.flac", tone(300, 0.2, 8000), 8000, format="FLAC")
    (tmp_path / "rain" / "notes.txt").write_text("not a sample")
    samples = list(read_class_folders(tmp_path))
    assert [(s.id, s.label, s.image) for s in samples] == [("dog/a.flac", "dog", None), ("rain/a.flac", "rain", None)]
    assert all(Path(s.audio).is_file() for s in samples)
    assert [s.id for s in open_dataset(tmp_path)] == ["dog/a.flac", "rain/a.flac"]  # detected as class folders


def test_esc50_reads_folds_and_categories_and_counts_bad_rows(tmp_path: Path) -> None:
    from polymodal.data.errors import BadSampleLog
    from polymodal.data.readers import open_dataset, read_esc50

    (tmp_path / "meta").mkdir()
    (tmp_path / "audio").mkdir()
    rows = [
        ("1-100-A-0.wav", 1, 0, "dog", "True"),
        ("2-200-A-10.wav", 2, 10, "rain", "True"),
        ("3-300-A-5.wav", 3, 5, "cat", "False"),
        ("missing.wav", 1, 0, "dog", "True"),
        ("bad.wav", "x", 0, "dog", "True"),
    ]
    for name, *_ in rows[:3]:
        sf.write(tmp_path / "audio" / name, tone(300, 0.2, 8000), 8000)
    header = "filename,fold,target,category,esc10,src_file,take\n"
    (tmp_path / "meta" / "esc50.csv").write_text(
        header + "".join(f"{n},{f},{t},{c},{e},0,A\n" for n, f, t, c, e in rows)
    )
    log = BadSampleLog()
    samples = list(read_esc50(tmp_path, bad_log=log))
    assert [(s.id, s.label, s.metadata["fold"]) for s in samples] == [
        ("1-100-A-0.wav", "dog", 1),
        ("2-200-A-10.wav", "rain", 2),
        ("3-300-A-5.wav", "cat", 3),
    ]
    assert all(Path(s.audio).is_file() for s in samples) and log.total == 2
    assert sorted(e.row for e in log.examples) == [5, 6]  # the header is row 1
    assert [s.id for s in read_esc50(tmp_path, folds=[2, 3], esc10=True)] == ["2-200-A-10.wav"]
    assert len(list(open_dataset(tmp_path))) == 3  # detected as ESC-50


def test_the_waveform_kind_collates_samples_with_a_per_sample_mask(tmp_path: Path) -> None:
    """For towers that read raw audio (Wav2Vec2, HuBERT): (B, 1, samples), one frame per sample."""
    features = AudioFeatures(sample_rate=8000, clip_seconds=0.5, kind="waveform")
    processor = AudioProcessor(features)
    short = torch.from_numpy(tone(300, 0.25, 8000))
    batch = processor.collate([torch.from_numpy(tone(300, 1.0, 8000))[:4000], short, None])
    assert batch.x.shape == (3, 1, 4000) and features.channels == 1 and features.frames(4000) == 4000
    assert batch.mask.sum(1).tolist() == [4000, 2000, 0]
    assert torch.equal(batch.x[1, 0, :2000], short) and not batch.x[1, 0, 2000:].any()
    again = AudioProcessor.from_settings(json.loads(json.dumps(processor.settings())), tmp_path)
    assert again.features.kind == "waveform" and torch.equal(again.collate([short]).x[0, 0, :2000], short)


def test_audio_settings_saved_before_the_newer_fields_load_with_the_old_features(tmp_path: Path) -> None:
    old = {"sample_rate": 8000, "clip_seconds": 0.5, "kind": "log_mel", "n_fft": 256, "hop_length": 128}
    old |= {
        "n_mels": 32,
        "f_min": 0.0,
        "f_max": None,
        "n_mfcc": 20,
    }  # processors.json as the first audio models wrote it
    loaded = AudioProcessor.from_settings(old, tmp_path)
    assert loaded.features.model_dump() == {**AudioFeatures().model_dump(), **old}  # every newer field at its default
    assert loaded.collate([torch.from_numpy(tone(440, 0.5, 8000))]).x.shape == (1, 32, 32)


def test_spec_augment_masks_drawn_spans_of_frames_and_bands_with_the_clip_mean() -> None:
    features = AudioFeatures(sample_rate=16_000, clip_seconds=1.0, n_mels=32, hop_length=160)
    augment = AudioAugment(random_crop=False, gain_db=0, time_masks=2, time_mask_seconds=0.2, freq_masks=1)
    processor = AudioProcessor(features, augment)
    wave = torch.sin(torch.arange(12_000) / 16_000 * 2 * torch.pi * 440)  # 0.75 s: the rest is padding

    def draw(seed: int):  # type: ignore[no-untyped-def]
        return processor.prepare(wave, torch.Generator().manual_seed(seed))

    clip = draw(0)
    again = draw(0)
    assert clip.time_spans == again.time_spans and clip.band_spans == again.band_spans  # seeded: exact resume
    assert {tuple(draw(s).time_spans) for s in range(8)} != {tuple(clip.time_spans)}  # and they vary
    assert all(0 <= a <= b <= 12_000 and b - a <= 3_200 for a, b in clip.time_spans)
    plain = AudioProcessor(features).collate([wave])
    masked = processor.collate([clip, None])
    x, y = plain.x[0], masked.x[0]
    assert torch.equal(masked.mask[0], plain.mask[0]) and masked.present.tolist() == [True, False]
    changed_bands = {int(b) for b in (x != y).any(dim=1).nonzero()}
    low, high = clip.band_spans[0]
    assert set(range(low, high)) <= changed_bands
    fill = x[:, plain.mask[0]].mean()
    assert torch.allclose(y[low:high], fill.expand(high - low, y.shape[1]))
    for start, end in clip.time_spans:  # every frame whose hop overlaps the span
        assert torch.allclose(y[:, start // 160 : -(-end // 160)], fill)
    kept_frames = torch.ones(x.shape[1], dtype=torch.bool)
    for start, end in clip.time_spans:
        kept_frames[start // 160 : -(-end // 160)] = False
    kept_bands = [b for b in range(32) if not low <= b < high]
    assert kept_frames.any() and torch.equal(x[kept_bands][:, kept_frames], y[kept_bands][:, kept_frames])
    with pytest.raises(Exception, match="freq_masks need spectrogram features"):
        AudioProcessor(AudioFeatures(kind="waveform"), AudioAugment(freq_masks=1))
