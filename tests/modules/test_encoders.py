"""Every encoder honours the one interface; HF wrappers match transformers called directly.

The cases are driven by the ``ENCODERS`` registry: every builder that needs no files is run
with its defaults (plus a few variants), and the HF builders with tiny models saved to disk.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import polymodal.pretrained  # noqa: F401 - registers the packaged encoders: the same cases whatever ran first
from polymodal.modules.encoders import (
    ENCODERS,
    AudioCNN,
    AudioTransformer,
    ConvImageEncoder,
    Encoder,
    HFAudioEncoder,
    RNNTextEncoder,
    TransformerTextEncoder,
    VideoViT,
    ViTImageEncoder,
)
from polymodal.modules.encoders.pooling import pool_tokens
from polymodal.pretrained.speaker import SpeakerLSTM

transformers = pytest.importorskip("transformers")

# (registry name, builder kwargs); "path" values name a tiny HF model from the hf_dirs fixture.
# Small sizes for the from-scratch encoders (the classes' own defaults are realistic, slower ones).
SMALL = {
    "transformer_text": {"vocab_size": 1000, "width": 128, "depth": 2},
    "rnn_text": {"vocab_size": 1000, "width": 128, "layers": 2},
    "vit": {"width": 128, "depth": 2},
    "audio_cnn": {"channels": 16, "widths": (8, 16), "width": 32},
    "audio_lstm": {"channels": 16, "width": 32},
    "audio_transformer": {"channels": 16, "frames": 24, "patch_size": 8, "width": 32, "depth": 2, "heads": 2},
    "video_frames": {"frame_encoder": {"name": "cnn", "params": {"widths": (8, 16), "depths": (1, 1)}}},
    "video_vit": {"frames": 6, "image_size": 16, "width": 32, "depth": 2, "heads": 2},
}
NEEDS_FILES = {
    row["name"] for row in ENCODERS.describe() if any(p["required"] and p["name"] == "path" for p in row["params"])
}
CASES = [(name, {}) for name in ENCODERS.names() if name not in NEEDS_FILES] + [
    ("transformer_text", {"positions": "rotary", "pooling": "mean"}),
    ("transformer_text", {"pooling": "eos", "causal": True}),
    ("rnn_text", {"cell": "gru", "bidirectional": False, "pooling": "mean"}),
    ("vit", {"pooling": "mean"}),
    ("cnn", {"norm": "group", "widths": (16, 32), "depths": (2, 1)}),
    ("video_frames", {"temporal": "transformer", "width": 32, "depth": 2, "heads": 2}),
    ("video_frames", {"temporal": "lstm", "depth": 2}),
    ("video_vit", {"pooling": "mean", "tubelet": 3}),
    ("hf_text", {"path": "bert", "pooling": "cls"}),
    ("hf_text", {"path": "bert", "pooling": "mean"}),
    ("hf_text", {"path": "gpt2", "pooling": "eos"}),
    ("hf_image", {"path": "vit"}),
    ("hf_image", {"path": "clip"}),
    ("hf_audio", {"path": "hubert"}),
]
IDS = [f"{name}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for name, kw in CASES]
TEXT_CASES = [(c, i) for c, i in zip(CASES, IDS) if "text" in c[0]]

TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}


def _tiny_models() -> dict[str, nn.Module]:
    t = transformers
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return {
        "bert": t.BertModel(t.BertConfig(vocab_size=50, max_position_embeddings=32, **TINY, **no_dropout)),
        "gpt2": t.GPT2Model(
            t.GPT2Config(
                vocab_size=50,
                n_positions=32,
                n_embd=16,
                n_layer=2,
                n_head=2,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                bos_token_id=1,
                eos_token_id=1,
            )
        ),
        "vit": t.ViTModel(t.ViTConfig(image_size=16, patch_size=8, **TINY, **no_dropout)),
        "clip": t.CLIPVisionModel(t.CLIPVisionConfig(image_size=16, patch_size=8, **TINY)),
        "hubert": t.HubertModel(
            t.HubertConfig(
                **TINY,
                conv_dim=(8, 8),
                conv_stride=(5, 2),
                conv_kernel=(10, 3),
                num_feat_extract_layers=2,
                num_conv_pos_embeddings=4,
                num_conv_pos_embedding_groups=2,
                feat_extract_norm="layer",
                layerdrop=0.0,
                mask_time_prob=0.0,
                hidden_dropout=0.0,
                attention_dropout=0.0,
                activation_dropout=0.0,
                feat_proj_dropout=0.0,
            )
        ),
    }


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, nn.Module]]:
    """Tiny HF models saved with save_pretrained: name -> (directory, the original model)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, model in _tiny_models().items():
        model.save_pretrained(root / name)
        out[name] = (str(root / name), model.eval())
    return out


def build(case: tuple[str, dict], hf_dirs: dict) -> Encoder:
    name, kwargs = case
    kwargs = {**SMALL.get(name, {}), **kwargs}
    if "path" in kwargs:
        kwargs["path"] = hf_dirs[kwargs["path"]][0]
    return ENCODERS.build(name, **kwargs)


def example(enc: Encoder, length: int = 6) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch of 2: text with the second row padded after 4 tokens, spectrogram frames with the second row's sound
    ending after 10 frames, 6-frame clips with the second one's frames ending after 3, or random images."""
    if isinstance(enc, HFAudioEncoder):  # a waveform, the second clip's sound ending after 200 samples
        samples = torch.ones(2, 400, dtype=torch.bool)
        samples[1, 200:] = False
        return torch.randn(2, 1, 400), samples
    if enc.modality == "audio":
        frames = torch.ones(2, 24, dtype=torch.bool)
        frames[1, 10:] = False
        channels = enc.channels if isinstance(enc, SpeakerLSTM) else enc.input_norm.num_features
        return torch.randn(2, channels, 24), frames
    if enc.modality == "text":
        ids = torch.randint(2, enc.vocab_size, (2, length))
        mask = torch.ones(2, length, dtype=torch.bool)
        mask[1, 4:] = False
        return ids.masked_fill(~mask, 0), mask
    if enc.modality == "video":  # padding frames are zeros
        size = getattr(enc, "image_size", 16)
        frames = torch.ones(2, 6, dtype=torch.bool)
        frames[1, 3:] = False
        return torch.randn(2, 6, 3, size, size) * frames[:, :, None, None, None], frames
    size = getattr(enc, "image_size", 32)  # a CNN takes any size
    return torch.randn(2, 3, size, size), None


def test_cases_cover_every_registered_encoder():
    assert {name for name, _ in CASES} == set(ENCODERS.names())
    assert set(ENCODERS.names()) >= {"transformer_text", "rnn_text", "hf_text", "vit", "cnn", "hf_image"}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_backward_shapes_and_finite(case, hf_dirs):
    enc = build(case, hf_dirs).train()
    x, mask = example(enc)
    out = enc(x, mask)
    b, t, d = out.tokens.shape
    assert (b, d) == (2, enc.output_dim)
    assert out.pooled.shape == (2, enc.output_dim)
    if enc.modality == "text":
        assert t == x.size(1) and torch.equal(out.mask, mask)
    elif isinstance(enc, AudioCNN):  # a token per 2 ** len(widths) frames, holding sound where any of them does
        assert out.mask.shape == (2, t) and out.mask[0].all() and out.mask[1].tolist() == [True] * 3 + [False] * (t - 3)
    elif isinstance(enc, AudioTransformer):  # CLS, then 2 bands x 3 time patches of 8 frames
        assert t == 1 + 2 * 3 and out.mask[0].all() and out.mask[1].tolist() == [True] + [True, True, False] * 2
    elif isinstance(enc, SpeakerLSTM):  # a token per 1.6 s window: one for 24 frames and one for 10
        assert out.mask.tolist() == [[True], [True]]
    elif isinstance(enc, HFAudioEncoder):  # a token per conv-encoder step of the waveform
        assert out.mask[0].all() and 0 < out.mask[1].sum() < t
    elif enc.modality == "audio":  # a token per frame
        assert t == x.size(2) and torch.equal(out.mask, mask)
    elif isinstance(enc, VideoViT):  # CLS if any, then 2 x 2 patches per tubelet, real when its first frame is
        real = [i * enc.tubelet < 3 for i in range(6 // enc.tubelet)]
        assert out.mask[0].all() and out.mask[1].tolist() == [True] * (t - 4 * len(real)) + [
            r for r in real for _ in "1234"
        ]
    elif enc.modality == "video":  # a token per frame
        assert t == x.size(1) and torch.equal(out.mask, mask)
    else:
        assert out.mask is None
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    # Random weights: a plain sum after LayerNorm would have (almost) zero gradient.
    loss = (out.pooled * torch.randn_like(out.pooled)).sum() + (out.tokens * torch.randn_like(out.tokens)).sum()
    loss.backward()
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    first = list(enc.blocks()[0].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in first), "no gradient reaches the first block"


@pytest.mark.parametrize(
    ("case", "pad"),
    [(c, p) for c, _ in TEXT_CASES for p in (0, 3)],
    ids=[f"{i}-pad{p}" for _, i in TEXT_CASES for p in (0, 3)],
)
def test_text_padding_does_not_change_outputs(case, pad, hf_dirs):
    enc = build(case, hf_dirs).eval()
    x, mask = example(enc)
    ref = enc(x, mask)
    padded_x = torch.cat([x, torch.zeros(2, pad, dtype=x.dtype)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, pad, dtype=torch.bool)], dim=1)
    out = enc(padded_x, padded_mask)
    torch.testing.assert_close(out.pooled, ref.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.tokens[:, : x.size(1)][mask], ref.tokens[mask], atol=1e-5, rtol=1e-5)
    # A row alone gives what it gives inside a padded batch.
    alone = enc(x[1:, :4], mask[1:, :4])
    torch.testing.assert_close(alone.pooled, ref.pooled[1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_freeze_leaves_only_last_block_trainable(case, hf_dirs):
    enc = build(case, hf_dirs)
    enc.freeze(unfreeze_last=1)
    trainable = {id(p) for p in enc.parameters() if p.requires_grad}
    last = {id(p) for p in enc.blocks()[-1].parameters()}
    assert trainable == last and last
    assert len(enc.blocks()) >= 2
    enc.unfreeze()
    assert all(p.requires_grad for p in enc.parameters())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grad_checkpointing_gives_the_same_grads(case, hf_dirs):
    enc = build(case, hf_dirs).train()
    x, mask = example(enc)
    weights = None
    calls = []
    # HF checkpoints a layer's forward, not its __call__, so watch the layer's first child.
    first_block = enc.blocks()[0]
    next(iter(first_block.children()), first_block).register_forward_pre_hook(lambda *_: calls.append(1))
    grads = []
    for enabled in (False, True):
        enc.set_grad_checkpointing(enabled)
        enc.zero_grad(set_to_none=True)
        calls.clear()
        out = enc(x, mask)
        weights = torch.randn_like(out.pooled) if weights is None else weights
        (out.pooled * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None})
        # Checkpointing recomputes the block during backward, so it starts twice (a pre-hook:
        # recomputation may stop early once it has what backward needs).
        assert len(calls) == (2 if enabled else 1)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-5, msg=name)


def test_every_encoder_class_registers_under_its_name():
    """A class's ``name`` is its registry key, so its input errors name it as configs do."""
    classes = {name: ENCODERS.get(name) for name in ENCODERS.names() if isinstance(ENCODERS.get(name), type)}
    assert len(classes) >= 9
    assert {name: cls.name for name, cls in classes.items()} == {name: name for name in classes}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_wrong_input_is_refused_in_the_encoders_own_words(case, hf_dirs):
    """Wrong rank, dtype, type or mask: a ValueError / TypeError that begins with the encoder's registered name, from
    forward and from pooled (which some towers compute without forward), not a raw error from a layer inside."""
    enc = build(case, hf_dirs).eval()
    x, mask = example(enc)
    assert enc.name in ENCODERS
    expected = rf"^{enc.name}: expected "
    for call in (enc, enc.pooled):
        with pytest.raises(ValueError, match=expected + r".*got shape \(1, 2, "):
            call(x.unsqueeze(0), mask)  # one dimension too many
        with pytest.raises(TypeError, match=expected + ".*, not a tensor"):
            call(x.tolist(), mask)
        if mask is not None:
            with pytest.raises(ValueError, match=expected + r"a \(batch, \w+\) mask of shape"):
                call(x, mask[:, :-1])
        if enc.modality == "text":
            with pytest.raises(TypeError, match=expected + r"token ids .* dtype int64 .*got .* dtype float32"):
                call(x.float(), mask)
            vocab = enc.vocab_size
            with pytest.raises(ValueError, match=rf"^{enc.name}: token id {vocab} >= vocab_size {vocab} \(was"):
                call(x.clamp(max=vocab - 1).index_fill(1, torch.tensor([1]), vocab), mask)
        elif not (isinstance(enc, HFAudioEncoder) and enc.spec.input == "waveform"):  # a waveform may be int PCM
            with pytest.raises(TypeError, match=expected + r".*got .* dtype uint8"):
                call(x.clamp(0, 1).mul(255).to(torch.uint8), mask)


# ---- from-scratch encoders: specifics -------------------------------------------------------


def test_transformer_text_mask_defaults_to_pad_id_and_rotary_has_no_length_limit():
    enc = TransformerTextEncoder(vocab_size=30, width=16, depth=1, heads=2, max_length=8, pad_id=3).eval()
    x = torch.tensor([[5, 6, 7, 3, 3]])
    out = enc(x)
    assert out.mask.tolist() == [[True, True, True, False, False]]
    with pytest.raises(ValueError, match="exceeds max_length 8"):
        enc(torch.ones(1, 9, dtype=torch.long))
    rotary = TransformerTextEncoder(vocab_size=30, width=16, depth=1, heads=2, max_length=8, positions="rotary")
    assert rotary(torch.ones(1, 20, dtype=torch.long)).tokens.shape == (1, 20, 16)
    assert not any("position" in n for n, _ in rotary.named_parameters())


def test_rotary_and_learned_positions_make_order_matter():
    for positions in ("learned", "rotary"):
        enc = TransformerTextEncoder(30, width=16, depth=1, heads=2, positions=positions, pooling="mean").eval()
        a = enc(torch.tensor([[4, 5, 6, 7]])).pooled
        b = enc(torch.tensor([[7, 6, 5, 4]])).pooled
        assert not torch.allclose(a, b, atol=1e-4), positions


@pytest.mark.parametrize("field", ["positions", "pooling"])
def test_bad_choice_names_the_field_and_choices(field):
    with pytest.raises(ValueError, match=rf"{field}='nope' is not one of .*"):
        TransformerTextEncoder(30, **{field: "nope"})


def test_transformer_init_is_trunc_normal_002():
    enc = TransformerTextEncoder(1000, width=128, depth=1, heads=4)
    w = enc.layers[0].mlp.fc1.weight
    assert 0.015 < w.std().item() < 0.02 and w.abs().max() <= 0.04
    assert torch.count_nonzero(enc.layers[0].mlp.fc1.bias) == 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_last_pooling_matches_unpacked_runs_one_sequence_at_a_time(cell):
    enc = RNNTextEncoder(30, width=8, cell=cell, layers=2, bidirectional=True).eval()
    x = torch.randint(1, 30, (3, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    out = enc(x, mask)
    for b in range(3):
        h = enc.embedding(x[b : b + 1, : int(mask[b].sum())])
        for rnn in enc.layers:
            h, state = rnn(h)
        h_n = state[0] if cell == "lstm" else state  # (2, 1, 4): forward then backward
        torch.testing.assert_close(out.pooled[b], h_n[:, 0].reshape(-1), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(out.tokens[b, : h.size(1)], h[0], atol=1e-6, rtol=1e-6)
    assert (out.tokens[~mask] == 0).all()


def test_vit_tokens_are_cls_plus_patches_and_size_is_checked():
    enc = ViTImageEncoder(image_size=16, patch_size=4, width=16, depth=1, heads=2)
    out = enc(torch.randn(1, 3, 16, 16))
    assert out.tokens.shape == (1, 1 + 16, 16) and out.grid == (4, 4)  # the grid is the last 16 tokens
    torch.testing.assert_close(out.pooled, out.tokens[:, 0])
    mean = ViTImageEncoder(image_size=16, patch_size=4, width=16, depth=1, heads=2, pooling="mean")
    out = mean(torch.randn(1, 3, 16, 16))
    assert out.tokens.shape == (1, 16, 16)
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))
    with pytest.raises(ValueError, match=r"^vit: expected images \(batch, 3, 16, 16\) .*got shape \(1, 3, 32, 32\)"):
        enc(torch.randn(1, 3, 32, 32))


def test_vit_conv_stem_keeps_the_patch_grid_and_each_token_sees_only_its_patch():
    enc = ViTImageEncoder(
        image_size=16, patch_size=4, width=16, depth=1, heads=2, stem="conv", stem_norm="batch"
    ).eval()  # BatchNorm in eval: per-pixel affine; GroupNorm would mix the whole map
    assert enc(torch.randn(2, 3, 16, 16)).tokens.shape == (2, 1 + 16, 16)
    strides = [m.stride[0] for m in enc.patch_embed.modules() if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2, 2, 1]  # log2(4) stride-2 convs, then the 1x1 projection
    # Locality: changing the top-left corner pixel changes the stem's output only in the first
    # token rows of the 4x4 grid reachable through two 3x3 stride-2 convs (receptive field 7 px).
    x = torch.randn(1, 3, 16, 16)
    y = x.clone()
    y[..., 0, 0] += 10
    a, b = enc.patch_embed(x), enc.patch_embed(y)  # (1, 16, 4, 4)
    changed = (a - b).abs().amax(1)[0] > 1e-6  # (4, 4)
    assert changed[0, 0] and not changed[2:, :].any() and not changed[:, 2:].any()
    with pytest.raises(ValueError, match="power-of-two patch_size"):
        ViTImageEncoder(image_size=18, patch_size=6, width=16, depth=1, heads=2, stem="conv")
    with pytest.raises(ValueError, match="stem"):
        ViTImageEncoder(image_size=16, patch_size=4, width=16, depth=1, heads=2, stem="hybrid")


def test_cnn_tokens_are_the_flattened_final_feature_map():
    enc = ConvImageEncoder(widths=(8, 16, 24), depths=(1, 2, 1), norm="group").eval()
    out = enc(torch.randn(2, 3, 20, 20))
    assert out.tokens.shape == (2, 5 * 5, 24) and enc.output_dim == 24 and out.grid == (5, 5)
    assert len(enc.blocks()) == 4
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))


# ---- HF wrappers against transformers called directly --------------------------------------


def _hand_masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    rows = [torch.stack([h[b, t] for t in range(h.size(1)) if mask[b, t]]).mean(0) for b in range(h.size(0))]
    return torch.stack(rows)


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_hf_text_matches_transformers(name, hf_dirs):
    path, model = hf_dirs[name]
    ids = torch.randint(2, 50, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        outs = {p: ENCODERS.build("hf_text", path=path, pooling=p).eval()(ids, mask) for p in ("cls", "mean", "eos")}
    for out in outs.values():
        real = mask[..., None]  # BERT runs on the real tokens only: its padded positions are zero
        expected = ref.masked_fill(~real, 0) if name == "bert" else ref
        torch.testing.assert_close(out.tokens, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(outs["cls"].pooled, ref[:, 0])
    torch.testing.assert_close(outs["mean"].pooled, _hand_masked_mean(ref, mask), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(outs["eos"].pooled, torch.stack([ref[0, 5], ref[1, 3]]))


def test_packed_bert_equals_transformers_on_real_tokens_with_either_padding_side(hf_dirs):
    path, model = hf_dirs["bert"]
    enc = ENCODERS.build("hf_text", path=path, pooling="mean").eval()
    assert enc.packs and not ENCODERS.build("hf_text", path=hf_dirs["gpt2"][0]).packs
    lengths = torch.tensor([9, 1, 5, 9, 3])
    right = torch.arange(9) < lengths[:, None]  # (5, 9), texts of unequal length padded on the right
    for mask in (right, right.flip(1)):  # and on the left, where BERT's positions still count from the first slot
        ids = torch.randint(2, 50, mask.shape).masked_fill(~mask, 0)
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
            out = enc(ids, mask)
        torch.testing.assert_close(out.tokens[mask], ref[mask], atol=1e-5, rtol=1e-5)
        assert not out.tokens[~mask].any()
        torch.testing.assert_close(out.pooled, _hand_masked_mean(ref, mask), atol=1e-5, rtol=1e-5)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            low = enc(ids, mask).pooled.float()
        assert torch.nn.functional.cosine_similarity(low, out.pooled).min() > 0.99
    with torch.no_grad():  # a row without real tokens (an empty text) pools to zeros, the others are unaffected
        empty = enc(ids[:2], torch.cat([mask[:1], torch.zeros_like(mask[:1])]))
    assert not empty.pooled[1].any() and torch.isfinite(empty.pooled).all()
    torch.testing.assert_close(empty.pooled[0], out.pooled[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="texts of 40 tokens: this model reads at most 32"):
        enc(torch.randint(2, 50, (1, 40)), torch.ones(1, 40, dtype=torch.bool))
    enc.train()  # training runs transformers itself (dropout, checkpointing): its padded positions are not zero
    with torch.no_grad():
        assert enc(ids, mask).tokens[~mask].abs().sum() > 0


def test_exporting_a_bert_tower_traces_transformers_graph_not_the_packing(hf_dirs):
    enc = ENCODERS.build("hf_text", path=hf_dirs["bert"][0], pooling="mean").eval()
    ids = torch.randint(2, 50, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)

    class Pooled(nn.Module):
        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return enc(ids, mask).pooled

    program = torch.export.export(Pooled(), (ids, mask))  # what ONNX export (dynamo) traces
    assert "nonzero" not in str(program.graph)  # packing's data-dependent shapes stay out of exported graphs
    with torch.no_grad():
        torch.testing.assert_close(program.module()(ids, mask), enc(ids, mask).pooled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["vit", "clip"])
def test_hf_image_matches_transformers(name, hf_dirs):
    path, model = hf_dirs[name]
    pixels = torch.randn(2, 3, 16, 16)
    enc = ENCODERS.build("hf_image", path=path).eval()
    with torch.no_grad():
        ref = model(pixel_values=pixels)
        out = enc(pixels)
    torch.testing.assert_close(out.tokens, ref.last_hidden_state, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.pooled, ref.pooler_output, atol=1e-6, rtol=1e-6)
    assert enc.output_dim == 16 and len(enc.blocks()) == 2


@pytest.mark.parametrize("name", ["vit", "clip"])
def test_an_embedding_of_a_clip_image_tower_runs_its_last_layer_for_the_cls_token_only(name, hf_dirs, monkeypatch):
    from polymodal.modules.encoders import hf

    path, model = hf_dirs[name]
    enc = ENCODERS.build("hf_image", path=path).eval()
    assert enc.pools_cls == (name == "clip")
    calls = []
    shortcut = hf.clip_pooled_image
    monkeypatch.setattr(hf, "clip_pooled_image", lambda *a: calls.append(1) or shortcut(*a))
    pixels = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(enc.pooled(pixels), model(pixel_values=pixels).pooler_output, atol=1e-6, rtol=1e-6)
    assert len(calls) == (name == "clip")
    enc.train()  # training keeps transformers' own forward (gradient checkpointing, dropout)
    pooled = enc.pooled(pixels)
    assert len(calls) == (name == "clip") and pooled.requires_grad


def test_hf_towers_of_a_dual_clip_checkpoint(tmp_path):
    t = transformers
    text = {"vocab_size": 50, "max_position_embeddings": 16, "bos_token_id": 1, "eos_token_id": 3, "pad_token_id": 0}
    config = t.CLIPConfig(text_config={**TINY, **text}, vision_config={**TINY, "image_size": 16, "patch_size": 8})
    clip = t.CLIPModel(config).eval()
    clip.save_pretrained(tmp_path)
    image_enc = ENCODERS.build("hf_image", path=str(tmp_path)).eval()
    text_enc = ENCODERS.build("hf_text", path=str(tmp_path), pooling="eos").eval()
    assert type(image_enc.model).__name__ == "CLIPVisionModel" and type(text_enc.model).__name__ == "CLIPTextModel"
    pixels = torch.randn(2, 3, 16, 16)
    ids = torch.tensor([[1, 5, 6, 3, 0], [1, 7, 3, 0, 0]])  # BOS ... EOS, right-padded
    with torch.no_grad():
        torch.testing.assert_close(image_enc(pixels).pooled, clip.vision_model(pixel_values=pixels).pooler_output)
        ref = clip.text_model(input_ids=ids, attention_mask=(ids != 0).long()).pooler_output
        torch.testing.assert_close(text_enc(ids).pooled, ref)


@pytest.mark.parametrize("pooling", ["eos", "mean"])
def test_an_eos_embedding_of_a_clip_text_tower_runs_its_last_layer_for_that_token_only(tmp_path, monkeypatch, pooling):
    from polymodal.modules.encoders import hf

    text = {"vocab_size": 50, "max_position_embeddings": 16, "bos_token_id": 1, "eos_token_id": 3, "pad_token_id": 0}
    config = transformers.CLIPTextConfig(**{**TINY, "num_hidden_layers": 3}, **text)
    torch.manual_seed(0)
    transformers.CLIPTextModel(config).save_pretrained(tmp_path)
    model = transformers.CLIPTextModel.from_pretrained(tmp_path).eval()
    enc = ENCODERS.build("hf_text", path=str(tmp_path), pooling=pooling).eval()
    assert enc.pools_eos == (pooling == "eos")
    calls = []
    shortcut = hf.clip_pooled_text
    monkeypatch.setattr(hf, "clip_pooled_text", lambda *a: calls.append(1) or shortcut(*a))
    # Right-padded rows of 6, 3 and 1 real tokens (the last one EOS alone): the EOS is where each row ends.
    ids = torch.tensor([[1, 5, 6, 7, 8, 3], [1, 9, 3, 0, 0, 0], [3, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        want = pool_tokens(hidden, ids != 0, pooling)
        torch.testing.assert_close(enc.pooled(ids), want, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(enc.pooled(ids, ids != 0), want, atol=1e-6, rtol=1e-6)
    assert len(calls) == 2 * (pooling == "eos")
    if pooling == "eos":  # transformers' own pooler reads the same token
        torch.testing.assert_close(want, model(input_ids=ids, attention_mask=(ids != 0).long()).pooler_output)
    enc.train()  # training keeps transformers' own forward
    assert enc.pooled(ids).requires_grad and len(calls) == 2 * (pooling == "eos")


def test_hf_wrapper_accepts_a_built_model(hf_dirs):
    from polymodal.modules.encoders import HFTextEncoder

    _, model = hf_dirs["bert"]
    enc = HFTextEncoder(model, pooling="mean")
    assert enc.model is model and enc.blocks()[-1] is model.encoder.layer[-1]
    # BERT's pad_token_id is 0: without a mask, zeros are padding.
    out = enc(torch.tensor([[5, 6, 0]]))
    assert out.mask.tolist() == [[True, True, False]]


def test_hf_missing_directory_does_not_download(tmp_path):
    with pytest.raises(OSError):
        ENCODERS.build("hf_text", path=str(tmp_path / "missing"))
