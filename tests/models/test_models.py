"""Composed models: forward/backward, missing modalities, bitwise save/load, presets."""

from pathlib import Path

import pytest
import torch

from polymodal.config import ConfigError
from polymodal.models import PRESETS, build_model, build_preset, load_model, parse_model_config
from polymodal.modules.fusion import FUSIONS

VOCAB, T, B, IMG = 20, 6, 3, 16
VIT = {"name": "vit", "params": {"image_size": IMG, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}}
TEXT = {"name": "transformer_text", "params": {"vocab_size": VOCAB, "width": 16, "depth": 1, "heads": 2, "max_length": 16}}
DECODER = {"vocab_size": VOCAB, "width": 16, "depth": 1, "heads": 2, "max_length": 16}

CONFIGS = {
    "dual_encoder": {"kind": "dual_encoder", "image_encoder": VIT, "text_encoder": TEXT, "embed_dim": 8},
    "fusion_classifier": {
        "kind": "fusion_classifier",
        "encoders": {"image": VIT, "text": TEXT},
        "fusion": {"name": "concat"},
        "fusion_dim": 16,
        "num_classes": 3,
    },
    "captioner": {"kind": "captioner", "image_encoder": VIT, "decoder": DECODER, "contrastive_text_encoder": TEXT, "embed_dim": 8},
    "vqa": {"kind": "vqa", "image_encoder": VIT, "text_encoder": TEXT, "fusion": {"name": "cross_attention"}, "fusion_dim": 16, "num_answers": 5},
    "vqa_generate": {
        "kind": "vqa", "image_encoder": VIT, "text_encoder": TEXT, "fusion": {"name": "cross_attention"},
        "fusion_dim": 16, "answer_mode": "generate", "decoder": DECODER,
    },
}


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(B, 3, IMG, IMG, generator=g)
    ids = torch.randint(4, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 4:] = False  # one padded row
    return images, ids, mask


def run(model, kind: str) -> torch.Tensor:
    images, ids, mask = inputs()
    if kind == "dual_encoder":
        out = model(images, ids, mask)
        return out["image_features"] @ out["text_features"].T
    if kind == "fusion_classifier":
        return model({"image": (images, None), "text": (ids, mask)})
    if kind == "captioner":
        out = model(images, ids, mask)
        return out["logits"].sum() + (out["image_features"] @ out["text_features"].T).sum()
    if kind == "vqa":
        return model(images, ids, mask)
    return model(images, ids, mask, answer_ids=ids, answer_mask=mask)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_forward_backward_and_bitwise_round_trip(kind: str, tmp_path: Path) -> None:
    model = build_model(parse_model_config(CONFIGS[kind]))
    out = run(model, kind)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)

    model.save(tmp_path / "m", preprocess={"image_size": IMG})
    loaded = load_model(tmp_path / "m")
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(run(model, kind), run(loaded, kind))


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_fusion_classifier_every_fusion_and_absent_modality(fusion: str) -> None:
    cfg = dict(CONFIGS["fusion_classifier"], fusion={"name": fusion})
    model = build_model(parse_model_config(cfg))
    images, ids, mask = inputs()
    present = {"image": torch.tensor([True, False, True]), "text": torch.ones(B, dtype=torch.bool)}
    logits = model({"image": (images, None), "text": (ids, mask)}, present)
    assert logits.shape == (B, 3) and torch.isfinite(logits).all()
    model.zero_grad()
    # Text absent from the whole batch: its encoder does not run and gets no gradient.
    logits = model({"image": (images, None)})
    logits.sum().backward()
    assert all(p.grad is None for p in model.encoders["text"].parameters())
    assert any(p.grad is not None for p in model.encoders["image"].parameters())


def test_generation_from_captioner_and_vqa() -> None:
    images, ids, mask = inputs()
    cap = build_model(parse_model_config(CONFIGS["captioner"])).eval()
    out = cap.generate(images, strategy="greedy", max_new_tokens=5)
    assert out.shape[0] == B and out.shape[1] <= 5 + 1 and out.dtype == torch.long
    vqa = build_model(parse_model_config(CONFIGS["vqa_generate"])).eval()
    assert vqa.generate(images, ids, mask, strategy="beam", num_beams=2, max_new_tokens=3).shape[0] == B


def test_config_errors_name_field_and_allowed_values() -> None:
    bad = dict(CONFIGS["dual_encoder"], image_encoder={"name": "vitt"})
    with pytest.raises(ConfigError) as e:
        parse_model_config(bad, "model.json")
    assert "image_encoder" in str(e.value) and "vitt" in str(e.value) and "allowed:" in str(e.value)
    assert "vit" in str(e.value).split("allowed:")[1]
    with pytest.raises(ConfigError, match="needs a 'kind'"):
        parse_model_config({"image_encoder": VIT})


def test_load_rejects_mismatched_weights(tmp_path: Path) -> None:
    model = build_model(parse_model_config(CONFIGS["dual_encoder"]))
    model.save(tmp_path / "m")
    other = build_model(parse_model_config(dict(CONFIGS["dual_encoder"], embed_dim=4)))
    import json

    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["config"]["embed_dim"] = 4
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model(tmp_path / "m")
    assert other is not None


@pytest.mark.parametrize("name", PRESETS.names())
def test_presets_build_and_run(name: str) -> None:
    model = build_preset(name, vocab_size=VOCAB, image_size=32).eval()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(4, VOCAB, (2, 5))
    with torch.no_grad():
        if name == "shapes-fusion":
            out = model({"image": (images, None), "text": (ids, None)})
        else:
            out = model(images, ids)
    first = out if isinstance(out, torch.Tensor) else next(iter(out.values()))
    assert torch.isfinite(first).all()
