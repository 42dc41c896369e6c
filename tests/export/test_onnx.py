"""ONNX export of image-text embedding model towers: onnxruntime must reproduce PyTorch at any batch size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers as t
from PIL import Image
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.data.text import train_tokenizer
from polymodal.export import ExportError, OnnxDualEncoder, export_onnx
from polymodal.interop import clip_features
from polymodal.models import build_preset, load_model, save_model
from tests.interop.tiny import save_tiny_clip
from tests.tiny_models import save_image_text_model

onnxruntime = pytest.importorskip("onnxruntime")
runner = CliRunner()
TEXTS = ["a red circle", "a small blue square left of a big green triangle", "cat"]


def _save_polymodal_clip(directory: Path) -> Path:
    tokenizer = train_tokenizer(["a small big red blue green circle square triangle left of cat"], vocab_size=32)
    model = build_preset("shapes-clip", vocab_size=32, image_size=32, max_length=16, embed_dim=24)
    return save_image_text_model(model, directory, tokenizer, image_size=32, max_length=16)


def _images(n: int) -> list[Image.Image]:
    rng = np.random.RandomState(n)
    return [Image.fromarray(rng.randint(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def test_cli_exports_a_polymodal_embedding_model(tmp_path: Path) -> None:
    model_dir = _save_polymodal_clip(tmp_path / "model")
    out = tmp_path / "onnx"
    result = runner.invoke(app, ["export", str(model_dir), "--format", "onnx", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sorted(p.name for p in out.iterdir()) == [
        "check.npz",
        "export.json",
        "image_encoder.int8-avx2.onnx",
        "image_encoder.int8-block.onnx",
        "image_encoder.int8-mixed.onnx",
        "image_encoder.int8.onnx",
        "image_encoder.onnx",
        "sample.npz",
        "text_encoder.int8-avx2.onnx",
        "text_encoder.int8-block.onnx",
        "text_encoder.int8-mixed.onnx",
        "text_encoder.int8.onnx",
        "text_encoder.onnx",
        "tokenizer",
    ]
    manifest = json.loads((out / "export.json").read_text())
    assert payload["embed_dim"] == manifest["embed_dim"] == 24
    assert manifest["image_encoder"]["inputs"][0]["shape"] == ["batch", 3, 32, 32]
    assert manifest["image_encoder"]["preprocess"]["image_size"] == 32 and manifest["text_encoder"]["max_length"] == 16
    assert manifest["opset"] >= 17 and manifest["image_encoder"]["max_abs_diff"] < 1e-4
    assert not list(tmp_path.glob(".onnx.*"))  # the atomic write left no temporary sibling

    model = load_model(model_dir).eval()
    onnx = OnnxDualEncoder(out, variant="fp32")  # the exported graph itself
    for batch, length in [(1, 5), (4, 16)]:  # batch and sequence length are both dynamic
        pixels = torch.randn(batch, 3, 32, 32)
        ids = torch.randint(5, 32, (batch, length))
        mask = torch.ones(batch, length, dtype=torch.bool)
        mask[0, length - 2 :] = False
        with torch.inference_mode():
            want_image, want_text = model.embed("image", pixels), model.embed("text", ids, mask)
        np.testing.assert_allclose(onnx.embed_pixels(pixels.numpy()), want_image.numpy(), atol=1e-4)
        np.testing.assert_allclose(onnx.embed_ids(ids.numpy(), mask.numpy()), want_text.numpy(), atol=1e-4)
    # The exported tokenizer and preprocessing reproduce the model's own inputs end to end.
    from polymodal.backends.polymodal_dir import PolymodalBackend

    backend = PolymodalBackend.load(model_dir)
    images = _images(2)
    np.testing.assert_allclose(onnx.embed_text(TEXTS), backend.embed_text(TEXTS).numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx.embed_images(images), backend.embed_images(images).numpy(), atol=1e-4)


def test_hf_clip_export_equals_transformers(tmp_path: Path) -> None:
    clip = save_tiny_clip(tmp_path / "clip")
    manifest = export_onnx(tmp_path / "clip", tmp_path / "onnx")
    assert (
        manifest["source"]["kind"] == "hf-clip" and manifest["image_encoder"]["preprocess"]["crop_offsets"] == "floor"
    )
    onnx = OnnxDualEncoder(tmp_path / "onnx", variant="fp32")
    hf_tok = t.AutoTokenizer.from_pretrained(tmp_path / "clip", local_files_only=True)
    for texts in (TEXTS[:1], TEXTS):
        pixels = torch.randn(len(texts) + 1, 3, 32, 32)
        inputs = hf_tok(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            want_image = F.normalize(clip_features(clip, pixel_values=pixels), dim=-1)
            want_text = F.normalize(clip_features(clip, **inputs), dim=-1)
        np.testing.assert_allclose(onnx.embed_pixels(pixels.numpy()), want_image.numpy(), atol=1e-4)
        np.testing.assert_allclose(onnx.embed_text(texts), want_text.numpy(), atol=1e-4)


def test_cli_refuses_what_it_cannot_export(tmp_path: Path) -> None:
    save_model(tmp_path / "captioner", build_preset("shapes-caption", vocab_size=32, image_size=32), processors={})
    result = runner.invoke(app, ["export", str(tmp_path / "captioner"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert (
        "captioner model over ['image']; ONNX export supports embedding models over any of audio, image, text, video"
        in result.output
    )
    assert "Traceback" not in result.output

    result = runner.invoke(app, ["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 1 and "missing: not a model directory" in json.loads(result.stdout)["error"]
    # The offline default is a name: refused as what it is, without advice to download it from the Hub.
    result = runner.invoke(app, ["export", "polymodal-base", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "polymodal-base (the offline zero-shot model" in result.output
    assert "hf download" not in result.output

    result = runner.invoke(
        app, ["export", str(tmp_path / "captioner"), "--format", "tflite", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "unknown --format 'tflite'; supported: onnx" in result.output

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["export", str(tmp_path / "captioner"), "--out", str(tmp_path / "busy")])
    assert result.exit_code == 1 and "not empty" in result.output and (tmp_path / "busy" / "keep.txt").exists()

    # An opset the dynamo exporter does not write is refused, not quietly raised to 18.
    result = runner.invoke(app, ["export", str(tmp_path / "captioner"), "--out", str(tmp_path / "o"), "--opset", "17"])
    assert result.exit_code == 1 and "opset 17: the dynamo ONNX exporter writes opset 18 or later" in result.output
    assert not (tmp_path / "o").exists()


def test_a_failed_check_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polymodal.export.onnx as onnx_export

    model_dir = _save_polymodal_clip(tmp_path / "model")

    def drifting_export(module, args, names, output, dynamic, path, opset):  # noqa: ANN001, ANN202
        path.write_bytes(b"partial graph")
        return 1.0, 20  # as if onnxruntime disagreed with PyTorch

    monkeypatch.setattr(onnx_export, "_export_one", drifting_export)
    with pytest.raises(ExportError, match="onnxruntime differs from PyTorch by 1.00e\\+00"):
        export_onnx(model_dir, tmp_path / "onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
