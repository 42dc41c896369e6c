"""ONNX export of audio towers: onnxruntime, fed by the features the manifest describes, reproduces the PyTorch model
on real files (a clip padded, one cropped), beside the text and image towers of the same embedding model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.data.audio import AudioFeatures
from polymodal.data.processors import AudioProcessor, ImageProcessor, TextProcessor
from polymodal.data.text import train_tokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.export import ExportError, OnnxDualEncoder, OnnxEmbedder, export_onnx
from polymodal.models import SavedModel, build_model, parse_model_config, save_model
from tests.api.audio_model import FEATURES, IMAGE, TEXT, write_tone
from tests.export import export_with_cli

pytest.importorskip("onnxruntime")
runner = CliRunner()
TEXTS = ["a low tone", "a high tone", "tone"]
AUDIO_CNN = {"name": "audio_cnn", "params": {"channels": 32, "widths": [8, 16], "width": 32}}


def _save(directory: Path, audio: dict, *, image: bool = False, kind: str = "embedding") -> Path:
    """A tiny untrained model over audio + text (+ image), saved with its processors. The audio tower's band
    normalisation is set from real tones, so its embeddings differ from clip to clip."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer(TEXTS, vocab_size=32, kind="wordlevel")
    text = {**TEXT, "params": {**TEXT["params"], "vocab_size": tokenizer.vocab_size}}
    encoders = {"audio": audio, "text": text, **({"image": IMAGE} if image else {})}
    if kind == "embedding":
        config = {"kind": "embedding", "encoders": encoders, "embed_dim": 16}
    else:
        config = {"kind": kind, "encoders": encoders, "fusion": {"name": "concat"}, "fusion_dim": 16, "num_classes": 2}
    model = build_model(parse_model_config(config)).eval()
    processors = {"audio": AudioProcessor(AudioFeatures(**FEATURES)), "text": TextProcessor(tokenizer, 8)}
    if image:
        processors["image"] = ImageProcessor(ImagePreprocess(image_size=32))
    t = torch.arange(4000) / 8000
    x, _ = processors["audio"].batch([torch.sin(2 * torch.pi * f * t) for f in (220.0, 880.0, 1760.0)])
    norm = model.encoders["audio"].input_norm
    norm.running_mean.copy_(x.mean(dim=(0, 2)))
    norm.running_var.copy_(x.var(dim=(0, 2)) + 1)
    return save_model(directory, model, processors)


def _clips(folder: Path) -> list[Path]:
    """A full-length clip (0.5 s), a shorter one (padded), a longer one (cropped), in WAV and FLAC."""
    return [
        write_tone(folder / "low.wav", 220.0, 0.5),
        write_tone(folder / "short.flac", 1760.0, 0.2),
        write_tone(folder / "long.wav", 880.0, 0.8),
    ]


def _want(saved: SavedModel, modality: str, refs: list) -> np.ndarray:
    with torch.inference_mode():
        return saved.model.embed(modality, *saved.inputs(modality, refs)).numpy()


AUDIO_TRANSFORMER = {
    "name": "audio_transformer",
    "params": {"channels": 32, "patch_size": 8, "width": 32, "depth": 1, "heads": 2},
}
TOWERS = {
    "cnn-mean": {**AUDIO_CNN, "params": {**AUDIO_CNN["params"], "frequency": "mean"}},
    "cnn-flatten": {**AUDIO_CNN, "params": {**AUDIO_CNN["params"], "frequency": "flatten"}},
    "transformer": AUDIO_TRANSFORMER,
}


@pytest.mark.parametrize("tower", TOWERS)
def test_audio_text_export_matches_pytorch(tmp_path: Path, tower: str) -> None:
    audio = TOWERS[tower]
    model_dir = _save(tmp_path / "model", audio)
    out = tmp_path / "onnx"
    assert export_with_cli(model_dir, out) == ["text_encoder.onnx", "audio_encoder.onnx", "export.json"]

    manifest = json.loads((out / "export.json").read_text())
    entry = manifest["audio_encoder"]
    frames = 4000 // 128 + 1  # 0.5 s at 8 kHz, hop 128, centred frames
    assert entry["inputs"] == [
        {"name": "audio_features", "dtype": "float32", "shape": ["batch", 32, frames]},
        {
            "name": "audio_mask",
            "dtype": "int64",
            "shape": ["batch", frames],
            "values": "1 = the frame starts inside the clip, 0 = padding after a shorter clip",
        },
    ]
    assert entry["outputs"] == [
        {"name": "audio_embeds", "dtype": "float32", "shape": ["batch", 16], "l2_normalized": True}
    ]
    assert entry["features"] == AudioFeatures(**FEATURES).model_dump(mode="json") and entry["max_abs_diff"] < 1e-4
    assert "image_encoder" not in manifest

    saved = SavedModel.load(model_dir)
    onnx = OnnxEmbedder(out, variant="fp32")  # the exported graph itself
    assert OnnxDualEncoder is OnnxEmbedder and onnx.modalities == ["audio", "text"]
    clips = _clips(tmp_path / "clips")
    want = _want(saved, "audio", clips)
    assert np.abs(want[0] - want[1]).max() > 1e-3  # distinct clips (10x the tolerance), so the check means something
    got = onnx.embed_audio([*clips[:2], clips[2].read_bytes()])  # paths or encoded bytes
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # The padded clip's mask really is shorter; raw features at batch 1 (batch is dynamic).
    x, mask = saved.inputs("audio", clips[1:2])
    assert mask is not None and 0 < int(mask.sum()) < frames
    np.testing.assert_allclose(onnx.embed_features(x.numpy(), mask.numpy()), want[1:2], atol=1e-4)
    np.testing.assert_allclose(onnx.embed_text(TEXTS), _want(saved, "text", TEXTS), atol=1e-4)

    with pytest.raises(ExportError, match=r"the export has no image tower; it has \['audio', 'text'\]"):
        onnx.embed_images([Image.new("RGB", (32, 32))])


def test_audio_image_text_export_serves_all_three(tmp_path: Path) -> None:
    model_dir = _save(tmp_path / "model", AUDIO_CNN, image=True)
    manifest = export_onnx(model_dir, tmp_path / "onnx")
    assert [k for k in manifest if k.endswith("_encoder")] == ["image_encoder", "text_encoder", "audio_encoder"]
    assert max(manifest[p]["max_abs_diff"] for p in ("image_encoder", "text_encoder", "audio_encoder")) < 1e-4

    saved = SavedModel.load(model_dir)
    onnx = OnnxEmbedder(tmp_path / "onnx", variant="fp32")
    clips = _clips(tmp_path / "clips")
    images = [Image.fromarray(np.random.RandomState(i).randint(0, 256, (40, 48, 3), dtype=np.uint8)) for i in range(2)]
    np.testing.assert_allclose(onnx.embed_audio(clips), _want(saved, "audio", clips), atol=1e-4)
    np.testing.assert_allclose(onnx.embed_images(images), _want(saved, "image", images), atol=1e-4)
    np.testing.assert_allclose(onnx.embed_text(TEXTS), _want(saved, "text", TEXTS), atol=1e-4)


def test_a_model_with_an_audio_export_times_and_checks_its_audio_tower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_fixed_samples: None
) -> None:
    """The audio tower has a fixed sample too (seeded sounds of 0.6-2.3 s): it is checked against the model in fp32
    and timed both ways like the image and text towers, and runs from the export when asked; without soundfile
    (needed to read any sound) it has none and stays in PyTorch."""
    import polymodal
    from polymodal.data import audio as audio_io
    from polymodal.export.onnx import sample_sounds
    from polymodal.export.towers import SAMPLES, ExportTowers, _built_sample, fixed_sample

    sounds = SAMPLES["audio"]()
    assert len(sounds) == 8 and sounds == sample_sounds(8) and len(set(sounds)) == 8  # seeded, all different
    model_dir = _save(tmp_path / "model", AUDIO_CNN)
    export_onnx(model_dir, tmp_path / "onnx", quantize=False)
    model = polymodal.load(model_dir, precision="fp32", export=tmp_path / "onnx", export_towers="all")
    audio = model.tower_runtimes["audio"]
    assert audio.runtime == "onnx" and audio.cosine_min > 0.9999 and audio.onnx_items_per_second > 0
    assert isinstance(model.backend, ExportTowers) and "audio" in model.backend.onnx_modalities
    clips = _clips(tmp_path / "clips")
    plain = polymodal.load(model_dir, precision="fp32")
    np.testing.assert_allclose(model.embed_audio(clips), plain.embed_audio(clips), atol=1e-4)
    # A model in bf16 (the default on CPUs with native bf16) still feeds the export fp32 features, as it checked it.
    in_bf16 = polymodal.load(model_dir, precision="bf16", export=tmp_path / "onnx", export_towers="all")
    assert in_bf16.tower_runtimes["audio"].runtime == "onnx"
    np.testing.assert_allclose(in_bf16.embed_audio(clips), plain.embed_audio(clips), atol=1e-4)

    def no_soundfile() -> None:
        raise ImportError("reading sounds needs soundfile")

    monkeypatch.setattr(audio_io, "_soundfile", no_soundfile)
    assert fixed_sample("audio") is not None  # made once per process: the one made at the load above
    _built_sample.cache_clear()
    assert fixed_sample("audio") is None
    without = polymodal.load(model_dir, precision="fp32", export=tmp_path / "onnx")
    assert without.tower_runtimes["audio"].runtime == "torch"
    assert "no sample" in without.tower_runtimes["audio"].reason


def test_image_text_export_has_no_audio_tower(tmp_path: Path) -> None:
    from tests.export.test_onnx import _save_polymodal_clip

    manifest = export_onnx(_save_polymodal_clip(tmp_path / "model"), tmp_path / "onnx")
    assert list(manifest) == [
        "format",
        "polymodal_version",
        "torch_version",
        "exporter",
        "opset",
        "source",
        "embed_dim",
        "image_encoder",
        "text_encoder",
        "variant_choice",
    ]
    onnx = OnnxDualEncoder(tmp_path / "onnx", variant="fp32")
    with pytest.raises(ExportError, match=r"the export has no audio tower; it has \['image', 'text'\]"):
        onnx.embed_audio([write_tone(tmp_path / "a.wav", 440.0)])
    with pytest.raises(ExportError, match="no audio tower"):
        onnx.embed_features(np.zeros((1, 32, 33), np.float32), np.ones((1, 33), np.int64))
    with pytest.raises(ExportError, match=r"the export has no video tower; it has \['image', 'text'\]"):
        onnx.embed_video([tmp_path / "clip.mp4"])


def test_a_tower_the_exporter_cannot_handle_is_named_and_nothing_written(tmp_path: Path) -> None:
    # The LSTM packs padded sequences by their lengths, which torch.export cannot trace.
    lstm = {"name": "audio_lstm", "params": {"channels": 32, "width": 16, "layers": 1}}
    model_dir = _save(tmp_path / "model", lstm)
    with pytest.raises(ExportError, match=r"cannot export the audio tower \(audio_lstm\): \w+"):
        export_onnx(model_dir, tmp_path / "onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_cli_refuses_an_audio_fusion_classifier(tmp_path: Path) -> None:
    model_dir = _save(tmp_path / "fusion", AUDIO_CNN, kind="fusion_classifier")
    result = runner.invoke(app, ["export", str(model_dir), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "a fusion_classifier model over ['audio', 'text']; ONNX export supports" in result.output
    assert not (tmp_path / "o").exists()
