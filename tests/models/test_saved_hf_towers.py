"""A model whose Hugging Face towers came from local directories is self-contained once saved: the towers' configs go
with it (its weights already do), so it loads, and embeds alike, after those directories are gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")


def test_a_saved_model_needs_not_the_directories_its_hf_towers_came_from(tmp_path: Path) -> None:
    import polymodal
    from polymodal.data.processors import ImageProcessor, TextProcessor
    from polymodal.data.text import train_tokenizer
    from polymodal.data.transforms import ImagePreprocess
    from polymodal.models import build_model, save_model

    hf = tmp_path / "hf"
    tokenizer = train_tokenizer(["a red circle", "a blue square", "two green stars"], vocab_size=40)
    bert = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, pad_token_id=tokenizer.pad_id,
    )  # fmt: skip
    transformers.BertModel(bert).save_pretrained(hf / "bert")
    vit = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    transformers.ViTModel(vit).save_pretrained(hf / "vit")
    torch.manual_seed(0)
    model = build_model(
        {
            "kind": "embedding",
            "encoders": {
                "image": {"name": "hf_image", "params": {"path": str(hf / "vit")}},
                "text": {"name": "hf_text", "params": {"path": str(hf / "bert")}},
            },
            "embed_dim": 8,
        }
    ).eval()
    processors = {"image": ImageProcessor(ImagePreprocess(image_size=32)), "text": TextProcessor(tokenizer, 16)}
    saved = save_model(tmp_path / "model", model, processors)
    config = json.loads((saved / "config.json").read_text())["config"]
    paths = sorted(e["params"]["path"] for e in config["encoders"].values())
    assert paths == ["model:towers/0", "model:towers/1"]
    assert {p.name for p in (saved / "towers").rglob("*")} == {"0", "1", "config.json"}  # configs, no weights
    shutil.rmtree(hf)  # the towers' own directories are gone (a model copied to another machine)

    loaded = polymodal.load(saved, precision="fp32")
    pictures = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    texts = ["a red circle", "two green stars"]
    with torch.no_grad():
        want_images = model.embed("image", processors["image"].batch(list(pictures))[0]).numpy()
        want_texts = model.embed("text", *processors["text"].batch(texts)).numpy()
    np.testing.assert_allclose(loaded.embed_image(list(pictures)), want_images, atol=1e-5)
    np.testing.assert_allclose(loaded.embed_text(texts), want_texts, atol=1e-5)
    # Saved again from the loaded model (its towers now inside the first directory): still self-contained.
    again = save_model(tmp_path / "again", loaded.backend.saved.model, processors)
    shutil.rmtree(saved)
    np.testing.assert_allclose(polymodal.load(again, precision="fp32").embed_text(texts), want_texts, atol=1e-5)
