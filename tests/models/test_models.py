"""Composed models: forward/backward, missing modalities, bitwise save/load, presets."""

from pathlib import Path

import pytest
import torch

from polymodal.config import ConfigError
from polymodal.data.processors import ImageProcessor
from polymodal.data.transforms import ImagePreprocess
from polymodal.models import PRESETS, build_model, build_preset, load_model, parse_model_config, save_model
from polymodal.modules.fusion import FUSIONS

VOCAB, T, B, IMG = 20, 6, 3, 16
VIT = {"name": "vit", "params": {"image_size": IMG, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}}
TEXT = {
    "name": "transformer_text",
    "params": {"vocab_size": VOCAB, "width": 16, "depth": 1, "heads": 2, "max_length": 16},
}
DECODER = {"vocab_size": VOCAB, "max_length": 16, "params": {"width": 16, "depth": 1, "heads": 2}}
LSTM = {"name": "lstm", "vocab_size": VOCAB, "max_length": 16, "params": {"width": 16, "depth": 1}}
TOWERS = {"image": VIT, "text": TEXT}

CONFIGS = {
    "embedding": {"kind": "embedding", "encoders": TOWERS, "embed_dim": 8},
    "fusion_classifier": {
        "kind": "fusion_classifier",
        "encoders": TOWERS,
        "fusion": {"name": "concat"},
        "fusion_dim": 16,
        "num_classes": 3,
    },
    "captioner": {"kind": "captioner", "encoders": TOWERS, "decoder": DECODER, "embed_dim": 8},
    "captioner_lstm": {"kind": "captioner", "encoders": {"image": VIT}, "decoder": LSTM},
    "question_answering": {
        "kind": "question_answering",
        "encoders": TOWERS,
        "fusion": {"name": "cross_attention"},
        "fusion_dim": 16,
        "num_answers": 5,
    },
    "question_answering_generate": {
        "kind": "question_answering",
        "encoders": TOWERS,
        "fusion": {"name": "cross_attention"},
        "fusion_dim": 16,
        "answer_mode": "generate",
        "decoder": LSTM,
    },
}


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(B, 3, IMG, IMG, generator=g)
    ids = torch.randint(4, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 4:] = False  # one padded row
    return images, ids, mask


def run(model, kind: str, present: dict | None = None) -> torch.Tensor:
    images, ids, mask = inputs()
    both = {"image": (images, None), "text": (ids, mask)}
    if kind == "embedding":
        out = model(both)
        return out["image"] @ out["text"].T
    if kind == "fusion_classifier" or kind == "question_answering":
        return model(both, present)
    if kind.startswith("captioner"):
        out = model({"image": (images, None)}, ids, mask, present)
        extra = (out["features"]["image"] @ out["features"]["text"].T).sum() if "features" in out else 0
        return out["logits"].sum() + extra
    return model(both, present, answer_ids=ids, answer_mask=mask)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_forward_backward_and_bitwise_round_trip(kind: str, tmp_path: Path) -> None:
    model = build_model(parse_model_config(CONFIGS[kind]))
    assert isinstance(model.encoders, torch.nn.ModuleDict) and "image" in model.encoders
    out = run(model, kind)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)

    save_model(tmp_path / "m", model, {"image": ImageProcessor(ImagePreprocess(image_size=IMG))})
    loaded = load_model(tmp_path / "m")
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(run(model, kind), run(loaded, kind))


@pytest.mark.parametrize(
    "kind", ["fusion_classifier", "question_answering", "question_answering_generate", "captioner"]
)
def test_a_modality_marked_absent_is_ignored_through_the_models_own_forward(kind: str) -> None:
    """Evaluation drops a modality with the presence mask: what the absent input holds changes nothing."""
    model = build_model(parse_model_config(CONFIGS[kind])).eval()
    images, ids, mask = inputs()
    absent = {"image": torch.tensor([False, True, False])}
    noise = torch.randn_like(images)
    with torch.no_grad():
        if kind == "captioner":
            first = model({"image": (images, None)}, ids, mask, absent)["logits"]
            second = model({"image": (noise, None)}, ids, mask, absent)["logits"]
        else:
            extra = {} if kind != "question_answering_generate" else {"answer_ids": ids, "answer_mask": mask}
            first = model({"image": (images, None), "text": (ids, mask)}, absent, **extra)
            second = model({"image": (noise, None), "text": (ids, mask)}, absent, **extra)
    rows = torch.tensor([True, False, True])
    torch.testing.assert_close(first[rows], second[rows])
    assert not torch.allclose(first[~rows], second[~rows])  # a present image does count


def test_an_embedding_model_binds_three_modalities_into_one_space() -> None:
    cfg = dict(CONFIGS["embedding"], encoders={**TOWERS, "caption": TEXT})
    model = build_model(parse_model_config(cfg))
    images, ids, mask = inputs()
    out = model({"image": (images, None), "text": (ids, mask), "caption": (ids, mask)})
    assert set(out) == {"image", "text", "caption"} and all(v.shape == (B, 8) for v in out.values())
    torch.testing.assert_close(out["text"].norm(dim=-1), torch.ones(B))
    with pytest.raises(KeyError, match="no 'audio' tower"):
        model.embed("audio", images)
    with pytest.raises(ConfigError, match="at least two modalities"):
        parse_model_config({"kind": "embedding", "encoders": {"image": VIT}})


# track follows a clip's space-time cells: test_presets_take_a_video_source builds it on a video tower.
@pytest.mark.parametrize("fusion", [name for name in FUSIONS.names() if name != "track"])
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


def test_a_late_fusion_classifier_averages_each_modalitys_own_classifier() -> None:
    """Late fusion's logits are the mean of head(predictor_m(x_m)) over the modalities a sample has; a hidden layer
    in the head (which would act on the average, not per modality) is refused."""
    cfg = dict(CONFIGS["fusion_classifier"], fusion={"name": "late", "params": {"hidden_dim": 8}})
    model = build_model(parse_model_config(cfg)).eval()
    images, ids, mask = inputs()
    present = {"image": torch.tensor([True, False, True]), "text": torch.ones(B, dtype=torch.bool)}
    with torch.no_grad():
        logits = model({"image": (images, None), "text": (ids, mask)}, present)
        features, _ = model.encode({"image": (images, None), "text": (ids, mask)}, present)
        own = {m: model.head(model.fusion.predictors[m](features[m].pooled)) for m in ("image", "text")}
    torch.testing.assert_close(logits[0], (own["image"][0] + own["text"][0]) / 2)
    torch.testing.assert_close(logits[1], own["text"][1])  # no image: the text classifier alone
    hidden_head = dict(cfg, head={"name": "classification", "params": {"hidden": 8}})
    with pytest.raises(ValueError, match="head must be linear.*fusion.params.hidden_dim"):
        build_model(parse_model_config(hidden_head))


@pytest.mark.parametrize("kind", ["embedding", "fusion_classifier"])
def test_an_input_given_without_its_mask_says_what_a_model_takes(kind: str) -> None:
    model = build_model(parse_model_config(CONFIGS[kind]))
    images, ids, mask = inputs()
    with pytest.raises(TypeError, match=r"inputs\['image'\]: expected the pair \(x, mask\).*shape \(3, 3, 16, 16\)"):
        model({"image": images, "text": (ids, mask)})


def test_generation_from_captioner_and_question_answerer() -> None:
    images, ids, mask = inputs()
    for kind in ("captioner", "captioner_lstm"):
        cap = build_model(parse_model_config(CONFIGS[kind])).eval()
        out = cap.generate({"image": (images, None)}, strategy="greedy", max_new_tokens=5)
        assert out.shape[0] == B and out.shape[1] <= 5 + 1 and out.dtype == torch.long
    qa = build_model(parse_model_config(CONFIGS["question_answering_generate"])).eval()
    both = {"image": (images, None), "text": (ids, mask)}
    assert qa.generate(both, strategy="beam", num_beams=2, max_new_tokens=3).shape[0] == B


def test_config_errors_name_field_and_allowed_values() -> None:
    bad = dict(CONFIGS["embedding"], encoders={"image": {"name": "vitt"}, "text": TEXT})
    with pytest.raises(ConfigError) as e:
        parse_model_config(bad, "model.json")
    assert "encoders" in str(e.value) and "vitt" in str(e.value) and "allowed:" in str(e.value)
    assert "vit" in str(e.value).split("allowed:")[1]
    with pytest.raises(ConfigError, match="needs a 'kind'"):
        parse_model_config({"encoders": TOWERS})
    with pytest.raises(ConfigError, match="unknown decoder 'gru'"):
        parse_model_config(dict(CONFIGS["captioner_lstm"], decoder=dict(LSTM, name="gru")))
    with pytest.raises(ConfigError, match="unknown head"):
        parse_model_config(dict(CONFIGS["fusion_classifier"], head={"name": "nope"}))
    with pytest.raises(ConfigError, match="source 'audio' has no encoder"):
        parse_model_config(dict(CONFIGS["captioner_lstm"], source="audio"))


def test_heads_come_from_the_registry() -> None:
    cfg = dict(CONFIGS["fusion_classifier"], head={"name": "regression", "params": {"hidden": 8}})
    model = build_model(parse_model_config(cfg))
    assert type(model.head).__name__ == "RegressionHead" and model.head.out_dim == 3


def test_load_rejects_mismatched_weights(tmp_path: Path) -> None:
    import json

    model = build_model(parse_model_config(CONFIGS["embedding"]))
    save_model(tmp_path / "m", model, {})
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["config"]["embed_dim"] = 4
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model(tmp_path / "m")


def test_save_model_records_learned_temperatures_and_warns_of_towers_without_processors(tmp_path: Path) -> None:
    """A training loop's contrastive losses hold the temperature zero-shot probabilities need: save_model takes it
    as a number, a tensor or the loss itself. A tower saved without its processor could not be fed after loading."""
    import json

    from polymodal.modules.losses import ClipLoss, SigLipLoss

    model = build_model(parse_model_config(CONFIGS["embedding"]))
    clip, siglip = ClipLoss(init_temperature=0.05), SigLipLoss()
    with pytest.warns(UserWarning, match="saved without a processor for image, text .*cannot prepare its inputs"):
        save_model(tmp_path / "m", model, {}, logit_scales={"image-text": clip, "audio-text": torch.tensor(7.0)})
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["config"]["logit_scales"]
    assert saved == {"image-text": pytest.approx(20.0), "audio-text": 7.0}
    assert load_model(tmp_path / "m").config.logit_scales == saved and model.config.logit_scales == {}
    with pytest.warns(UserWarning):
        save_model(tmp_path / "s", model, {}, logit_scales={"image-text": siglip})
    assert json.loads((tmp_path / "s" / "config.json").read_text())["config"]["logit_scales"]["image-text"] > 0
    for bad, error in [(0.0, "must be > 0"), (torch.nn.Linear(1, 1), "learns no temperature")]:
        with pytest.raises((ValueError, TypeError), match=error), pytest.warns(UserWarning):
            save_model(tmp_path / "x", model, {}, logit_scales={"image-text": bad})


@pytest.mark.parametrize("name", PRESETS.names())
def test_presets_build_and_run(name: str) -> None:
    model = build_preset(name, vocab_size=VOCAB, image_size=32).eval()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(4, VOCAB, (2, 5))
    both = {"image": (images, None), "text": (ids, None)}
    if "audio" in model.encoders:  # 64 log-mel bands, 40 frames
        both["audio"] = (torch.randn(2, 64, 40), None)
    both = {m: x for m, x in both.items() if m in model.encoders}
    with torch.no_grad():
        if name == "shapes-caption":
            out = model(both, ids)["logits"]
        elif "generate" in model.capabilities:  # generators are called with their target, not on it
            out = model.generate({"text": (ids, None)}, steps=2)
        else:
            out = model(both)
    first = out if isinstance(out, torch.Tensor) else next(iter(out.values()))
    assert torch.isfinite(first).all()


@pytest.mark.parametrize("video_encoder", ["mean", "transformer", "lstm", "space_time", "vit"])
def test_presets_take_a_video_source(video_encoder: str) -> None:
    """Each preset with ``source: video``: a clip padded with masked frames embeds, classifies and captions as the
    clip alone does."""
    kw = {"vocab_size": VOCAB, "image_size": 32, "source": "video", "video_encoder": video_encoder, "frames": 8}
    torch.manual_seed(0)
    clip = torch.randn(1, 4, 3, 32, 32)
    padded = torch.cat([clip, torch.randn(1, 2, 3, 32, 32)], dim=1)
    ids = torch.randint(4, VOCAB, (1, 5))
    alone = (clip, torch.ones(1, 4, dtype=torch.bool))
    with_padding = (padded, torch.tensor([[True] * 4 + [False] * 2]))
    clip_model = build_preset("shapes-clip", image_encoder="cnn", **kw).eval()
    fusion_name = "track" if video_encoder == "space_time" else "cross_attention"  # track reads the cells
    fusion = build_preset("shapes-fusion", image_encoder="cnn", fusion=fusion_name, **kw).eval()
    captioner = build_preset("shapes-caption", image_encoder="cnn", **kw).eval()
    assert set(clip_model.encoders) == set(fusion.encoders) == {"video", "text"} and set(captioner.encoders) == {
        "video"
    }
    with torch.no_grad():
        for video in (alone, with_padding):
            outputs = [
                clip_model.embed("video", *video),
                fusion({"video": video, "text": (ids, None)}),
                captioner({"video": video}, ids)["logits"],
            ]
            if video is alone:
                expected = outputs
        for out, ref in zip(outputs, expected):
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="video_encoder must be one of mean, transformer, lstm, space_time, vit"):
        build_preset("shapes-clip", source="video", video_encoder="3d")


def test_a_captioner_trains_on_a_batch_without_its_source() -> None:
    """A batch where no sample has the source: the decoder gets a fully masked memory, not a KeyError."""
    model = build_model(parse_model_config(CONFIGS["captioner"]))
    _, ids, mask = inputs()
    out = model({}, ids, mask)
    assert torch.isfinite(out["logits"]).all() and "features" not in out
    with pytest.raises(ValueError, match="needs the 'image' input"):
        model.generate({})


def test_decoder_params_are_checked_against_the_decoder() -> None:
    with pytest.raises(ConfigError, match=r"captioner\.decoder\.params: missing depth, heads, width; its parameters:"):
        parse_model_config(dict(CONFIGS["captioner"], decoder={"vocab_size": VOCAB}))
    with pytest.raises(ConfigError, match=r"decoder\.params: unknown widht \(did you mean width\?\)"):
        parse_model_config(dict(CONFIGS["captioner_lstm"], decoder=dict(LSTM, params={"widht": 16, "depth": 1})))
    with pytest.raises(ConfigError, match="source cannot be text"):
        parse_model_config(dict(CONFIGS["captioner_lstm"], encoders={"text": TEXT}, source="text"))
