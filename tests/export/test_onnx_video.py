"""ONNX export of video towers: onnxruntime, fed by the frames the manifest's sampling and preprocessing make,
reproduces the PyTorch model on real clip files (one longer than T frames, one shorter and padded), beside the text
tower of the same embedding model, for video_frames (a ViT per frame and a temporal transformer; a BatchNorm CNN's
2x2 feature cells per frame and the temporal mean) and for video_vit; a temporal LSTM is refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from polymodal.data.processors import TextProcessor, VideoProcessor
from polymodal.data.text import train_tokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.data.video import VideoSampling, decode_video
from polymodal.export import ExportError, OnnxEmbedder, export_onnx
from polymodal.models import SavedModel, build_model, parse_model_config, save_model
from tests.data.test_video import write_clip
from tests.evaluate.conftest import IMG, VIT, _text
from tests.export import export_with_cli

pytest.importorskip("onnxruntime")
T = 8
TEXTS = ["a red circle moves left", "a square grows", "a star"]
SAMPLING = VideoSampling(frames=T)
PREPROCESS = ImagePreprocess(image_size=IMG)


CNN = {"name": "cnn", "params": {"widths": [8, 16], "depths": [1, 1]}}  # BatchNorm, as EfficientNet-Lite


def _frames(temporal: str, frame_encoder: dict, **extra: int) -> dict:
    """``frame_encoder`` on each frame, then ``temporal``."""
    params = {"frame_encoder": frame_encoder, "temporal": temporal, "width": 16, "depth": 1, "max_frames": T, **extra}
    return {"name": "video_frames", "params": params}


TOWERS = {
    "transformer": _frames("transformer", VIT),
    "mean-cnn-grid": _frames("mean", CNN, spatial_grid=2, cell_width=4),  # each frame's 2x2 cells
    "lstm": _frames("lstm", VIT),
    "vit": {
        "name": "video_vit",
        "params": {"frames": T, "image_size": IMG, "patch_size": 8, "tubelet": 2, "width": 16, "depth": 1, "heads": 2},
    },
}


def _save(directory: Path, tower: str) -> Path:
    """A tiny untrained video + text embedding model with the video tower ``TOWERS[tower]``."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer(TEXTS, vocab_size=32, kind="wordlevel")
    video = TOWERS[tower]
    config = {"kind": "embedding", "encoders": {"video": video, "text": _text(tokenizer.vocab_size)}, "embed_dim": 16}
    model = build_model(parse_model_config(config)).eval()
    processors = {"video": VideoProcessor(SAMPLING, PREPROCESS), "text": TextProcessor(tokenizer, 8)}
    return save_model(directory, model, processors)


def _clips(folder: Path) -> list[Path]:
    """A clip longer than T frames (sampled), and one of 3 frames (padded to T and masked)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_clip(folder / "long.mp4", 30, size=40), write_clip(folder / "short.mp4", 3, size=40)]


def _want(saved: SavedModel, modality: str, refs: list) -> np.ndarray:
    with torch.inference_mode():
        return saved.model.embed(modality, *saved.inputs(modality, refs)).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("tower", ["transformer", "mean-cnn-grid", pytest.param("vit", marks=pytest.mark.slow)])
def test_video_text_export_matches_pytorch(tmp_path: Path, tower: str) -> None:
    model_dir = _save(tmp_path / "model", tower)
    out = tmp_path / "onnx"
    assert export_with_cli(model_dir, out) == ["text_encoder.onnx", "video_encoder.onnx", "export.json"]

    entry = json.loads((out / "export.json").read_text())["video_encoder"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in entry["inputs"]] == [
        ("video_frames", "float32", ["batch", T, 3, IMG, IMG]),
        ("video_mask", "int64", ["batch", T]),
    ]
    assert entry["outputs"] == [
        {"name": "video_embeds", "dtype": "float32", "shape": ["batch", 16], "l2_normalized": True}
    ]
    assert entry["sampling"] == SAMPLING.model_dump(mode="json") and entry["preprocess"] == PREPROCESS.to_dict()
    assert entry["max_abs_diff"] < 1e-4

    saved = SavedModel.load(model_dir)
    onnx = OnnxEmbedder(out, variant="fp32")  # the exported graph itself
    assert onnx.modalities == ["text", "video"]
    clips = _clips(tmp_path / "clips")
    want = _want(saved, "video", clips)
    assert np.abs(want[0] - want[1]).max() > 1e-3  # distinct clips, so the comparison means something
    got = onnx.embed_video([*clips, clips[1].read_bytes()])  # paths or encoded bytes
    assert _cosines(got, np.concatenate([want, want[1:]])).min() >= 0.999
    np.testing.assert_allclose(got, np.concatenate([want, want[1:]]), atol=1e-4)
    np.testing.assert_allclose(onnx.embed_text(TEXTS), _want(saved, "text", TEXTS), atol=1e-4)

    # The short clip is padded: 3 real frames of 8. Whatever the padding frames hold, the graph ignores them.
    x, mask = saved.inputs("video", clips[1:])
    assert mask is not None and mask.sum().item() == 3
    x[~mask] = torch.randn_like(x[~mask]) * 5
    np.testing.assert_allclose(onnx.embed_frames(x.numpy(), mask.numpy()), want[1:], atol=1e-4)


def test_a_temporal_lstm_is_refused_with_the_reason(tmp_path: Path) -> None:
    model_dir = _save(tmp_path / "model", "lstm")
    with pytest.raises(ExportError) as error:
        export_onnx(model_dir, tmp_path / "onnx")
    assert str(error.value).startswith(
        "the dynamo ONNX exporter cannot export the video tower (video_frames): its temporal (TemporalLSTM) packs "
        "each sequence's real steps by the lengths in the mask (pack_padded_sequence)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_model_with_a_video_export_times_and_checks_its_video_tower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Video towers have a fixed sample too (seeded ShapesWorld clips, some shorter than T frames and padded, some
    longer and sampled): checked for bf16 under precision auto, and checked and timed against the export like the
    image, text and audio towers."""
    import polymodal
    from polymodal.api import precision as tower_precision
    from polymodal.export.onnx import sample_videos
    from polymodal.export.towers import SAMPLES
    from polymodal.hardware import PrecisionChoice

    clips = SAMPLES["video"]()
    assert len(clips) == 8 and clips == sample_videos(8) and len(set(clips)) == 8  # seeded, all different
    model_dir = _save(tmp_path / "model", "transformer")
    _, mask = SavedModel.load(model_dir).inputs("video", clips)
    assert mask is not None and min(mask.sum(1)) < T == max(mask.sum(1))  # padded clips and sampled ones

    export_onnx(model_dir, tmp_path / "onnx", quantize=False)
    model = polymodal.load(model_dir, precision="fp32", export=tmp_path / "onnx", export_towers="all")
    video = model.tower_runtimes["video"]
    assert video.runtime == "onnx" and video.cosine_min > 0.9999 and video.onnx_items_per_second > 0
    assert "video" in model.backend.onnx_modalities  # type: ignore[attr-defined]
    plain = polymodal.load(model_dir, precision="fp32")
    np.testing.assert_allclose(model.embed_video(clips[:3]), plain.embed_video(clips[:3]), atol=1e-4)
    # Decoded clips (segments) in a bf16 model: their frames are preprocessed in fp32 for the export too.
    decoded = [decode_video(clip, SavedModel.load(model_dir).processors["video"].sampling) for clip in clips[:3]]
    in_bf16 = polymodal.load(model_dir, precision="bf16", export=tmp_path / "onnx", export_towers="all")
    assert in_bf16.tower_runtimes["video"].runtime == "onnx"
    np.testing.assert_allclose(in_bf16.embed_video(decoded), plain.embed_video(decoded), atol=1e-4)

    checked: list[tuple[str, int]] = []

    def worst(backend: object, modality: str, inputs: list, *rest: object) -> float:  # type: ignore[type-arg]
        checked.append((modality, len(inputs)))
        return 0.98 if modality == "video" else 1.0

    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("POLYMODAL_PRECISION", raising=False)
    monkeypatch.setattr(tower_precision, "_worst_cosine", worst)
    auto_bf16 = PrecisionChoice("auto", "bf16", "CPU runs bf16 natively (as if)")
    kept = tower_precision.choose_tower_precisions(plain.backend, auto_bf16, torch.device("cpu"))
    assert sorted(checked) == [("text", 8), ("video", 8)] and set(kept) == {"video"}
