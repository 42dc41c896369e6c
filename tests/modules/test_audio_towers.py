"""Audio towers: the AST-style transformer trained from scratch, and Hugging Face audio towers (Wav2Vec2, HuBERT,
Whisper's encoder, AST, CLAP's audio model) built from tiny random configs saved to disk and loaded by path.

Each HF tower is checked for shapes, for a padding mask that leaves the real part's pooled output alone, for its
input scaling against the transformers feature extractor where polymodal's features can equal it, and for a
saved polymodal model that loads to the same outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from polymodal.data.audio import AudioFeatures
from polymodal.data.processors import AudioProcessor
from polymodal.models import SavedModel, build_model, parse_model_config, save_model
from polymodal.modules.encoders import ENCODERS, AudioTransformer, HFAudioEncoder

transformers = pytest.importorskip("transformers")

TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
WAVE_CONVS = {"conv_dim": (8, 8), "conv_stride": (5, 2), "conv_kernel": (10, 3), "num_feat_extract_layers": 2}
WAVE_QUIET = {
    "num_conv_pos_embeddings": 4,
    "num_conv_pos_embedding_groups": 2,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "layerdrop": 0.0,
    "mask_time_prob": 0.0,
}
# The processor settings each tiny tower reads (1 s clips; CLAP at its own 48 kHz).
FEATURES = {
    "wav2vec2": AudioFeatures(sample_rate=8000, clip_seconds=0.25, kind="waveform"),
    "hubert": AudioFeatures(sample_rate=8000, clip_seconds=0.25, kind="waveform"),
    "wav2vec2_group": AudioFeatures(sample_rate=8000, clip_seconds=0.25, kind="waveform"),
    "whisper": AudioFeatures(
        sample_rate=16000, clip_seconds=1.0, n_fft=400, hop_length=160, n_mels=80, mel_scale="slaney"
    ),
    "ast": AudioFeatures(sample_rate=16000, clip_seconds=0.4, n_fft=400, hop_length=160, n_mels=16, f_min=20),
    "clap": AudioFeatures(
        sample_rate=48000, clip_seconds=1.0, n_fft=1024, hop_length=480, n_mels=16, f_min=50, f_max=14000
    ),
}
TOWERS = ["wav2vec2", "hubert", "wav2vec2_group", "whisper", "ast", "clap"]
MASKED = ["wav2vec2", "hubert", "whisper", "ast", "clap"]  # a group-norm wav2vec2 sees its zero padding


def _tiny_models() -> dict[str, tuple[nn.Module, object | None]]:
    """name -> (a tiny random model, its feature extractor or None)."""
    t = transformers
    whisper = t.WhisperConfig(
        vocab_size=50,
        num_mel_bins=80,
        d_model=16,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=50,  # 100 frames: 1 s
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        dropout=0.0,
    )
    clap_audio = {
        "spec_size": 64,
        "num_mel_bins": 16,
        "patch_size": 4,
        "patch_stride": 4,
        "patch_embeds_hidden_size": 8,
        "depths": [1, 1],
        "num_attention_heads": [2, 2],
        "window_size": 4,
        "hidden_size": 16,
        "enable_fusion": False,
        "drop_path_rate": 0.0,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    clap_extractor = t.ClapFeatureExtractor(
        feature_size=16, max_length_s=1, frequency_min=50, frequency_max=14000, truncation="fusion", padding="pad"
    )
    return {
        "wav2vec2": (
            t.Wav2Vec2Model(t.Wav2Vec2Config(**TINY, **WAVE_CONVS, **WAVE_QUIET, feat_extract_norm="layer")),
            None,
        ),
        "hubert": (t.HubertModel(t.HubertConfig(**TINY, **WAVE_CONVS, **WAVE_QUIET, feat_extract_norm="layer")), None),
        "wav2vec2_group": (t.Wav2Vec2Model(t.Wav2Vec2Config(**TINY, **WAVE_CONVS, **WAVE_QUIET)), None),
        "whisper": (t.WhisperModel(whisper), None),
        "ast": (
            t.ASTModel(
                t.ASTConfig(
                    **TINY,
                    **NO_DROPOUT,
                    num_mel_bins=16,
                    max_length=48,
                    patch_size=8,
                    frequency_stride=4,
                    time_stride=6,
                )
            ),
            None,
        ),
        "clap": (
            t.ClapModel(
                t.ClapConfig(text_config={"vocab_size": 50, **TINY}, audio_config=clap_audio, projection_dim=8)
            ),
            clap_extractor,
        ),
    }


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, nn.Module]]:
    """Tiny HF audio models saved with save_pretrained: name -> (directory, the original model)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf_audio")
    out = {}
    for name, (model, extractor) in _tiny_models().items():
        model.save_pretrained(root / name)
        if extractor is not None:
            extractor.save_pretrained(root / name)
        out[name] = (str(root / name), model.eval())
    return out


def tone(freq: float, seconds: float, rate: int, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return (0.5 * torch.sin(2 * torch.pi * freq * t + phase)).float()


def batch(name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A batch of two clips through the audio processor: a full one, and one 40% as long (then padding), with the
    frames (or samples) of the short one that hold sound."""
    features = FEATURES[name]
    rate, seconds = features.sample_rate, features.clip_seconds
    noise = torch.Generator().manual_seed(3)
    waves = [
        tone(440, seconds, rate) + 0.05 * torch.randn(round(seconds * rate), generator=noise),
        tone(1200, 0.4 * seconds, rate, 0.3),
    ]
    out = AudioProcessor(features).collate(waves)
    return out.x, out.mask, int(out.mask[1].sum())


def tower(name: str, hf_dirs: dict) -> HFAudioEncoder:
    return ENCODERS.build("hf_audio", path=hf_dirs[name][0])


# ---- HF audio towers ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOWERS)
def test_each_tower_loads_by_path_and_gives_tokens_pooled_and_a_downsampled_mask(name, hf_dirs):
    enc = tower(name, hf_dirs).train()
    x, mask, real = batch(name)
    out = enc(x, mask)
    b, t, d = out.tokens.shape
    assert (b, d) == (2, enc.output_dim) and out.pooled.shape == (2, enc.output_dim)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    model = enc.model
    if name in ("wav2vec2", "hubert", "wav2vec2_group"):  # one token per conv-encoder step, as the model counts
        lengths = model._get_feat_extract_output_lengths(torch.tensor([x.shape[-1], real]))
        assert t == int(lengths[0]) and out.mask.sum(1).tolist() == lengths.tolist()
    elif name == "whisper":  # one token per two frames of the model's fixed 100
        assert t == 50 and out.mask[0].all() and int(out.mask[1].sum()) == (real + 1) // 2
    elif name == "ast":  # CLS, distillation, then 3 bands x 7 time patches (8 wide, every 6 frames)
        assert t == 2 + 3 * 7 and out.mask[0].all()
        in_time = [6 * i < real for i in range(7)]
        assert out.mask[1, :2].all() and out.mask[1, 2:].tolist() == in_time * 3
    else:  # CLAP folds time into image rows: no time mask
        assert out.mask is None and d == model.audio_encoder.num_features
    loss = (out.pooled * torch.randn_like(out.pooled)).sum()
    loss.backward()
    first = [p for p in enc.blocks()[0].parameters() if p.requires_grad]
    assert first and all(p.grad is not None and p.grad.abs().sum() > 0 for p in first)


@pytest.mark.parametrize("name", MASKED)
def test_padding_leaves_the_pooled_output_of_the_real_part_alone(name, hf_dirs):
    enc = tower(name, hf_dirs).eval()
    x, mask, real = batch(name)
    with torch.no_grad():
        padded = enc(x, mask)
        alone = enc(x[1:, ..., :real], None)  # the short clip without its padding
        garbage = x.clone()
        garbage[1][..., ~mask[1]] = torch.randn_like(garbage[1][..., ~mask[1]]) * 5  # what padding holds is ignored
        noisy = enc(garbage, mask)
    torch.testing.assert_close(alone.pooled, padded.pooled[1:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(noisy.pooled, padded.pooled, atol=1e-5, rtol=1e-4)


def record_calls(enc: HFAudioEncoder) -> dict:
    """The keyword arguments the wrapped model is called with, from now on."""
    seen: dict = {}
    forward = enc.model.forward
    enc.model.forward = lambda **kw: seen.update(kw) or forward(**kw)
    return seen


def test_a_group_norm_wav2vec2_gets_zero_padding_and_no_attention_mask(hf_dirs):
    """As transformers advises for wav2vec2-base: its group-normed conv encoder was trained on zero padding."""
    x, mask, real = batch("wav2vec2_group")
    garbage = x.clone()
    garbage[1, 0, real:] = 1.0
    group, layer = tower("wav2vec2_group", hf_dirs).eval(), tower("wav2vec2", hf_dirs).eval()
    seen_group, seen_layer = record_calls(group), record_calls(layer)
    group(garbage, mask)
    layer(garbage, mask)
    assert seen_group["attention_mask"] is None and (seen_group["input_values"][1, real:] == 0).all()
    assert torch.equal(seen_layer["attention_mask"], mask.long())


def test_waveform_normalisation_equals_wav2vec2_feature_extractor():
    from polymodal.modules.encoders.hf import _zero_mean_unit_var

    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(800, generator=g) * 0.3 + 0.1, torch.randn(300, generator=g) * 2.0 - 0.5]
    ref = extractor([c.numpy() for c in clips], sampling_rate=16000, padding=True, return_tensors="pt")
    waves = torch.zeros(2, 800)
    waves[1, :300] = clips[1]
    waves[0] = clips[0]
    ours = _zero_mean_unit_var(waves, ref.attention_mask.bool())
    torch.testing.assert_close(ours, ref.input_values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seconds", [1.0, 0.6])
def test_whisper_input_equals_whisper_feature_extractor(seconds, hf_dirs):
    """AudioFeatures(n_mels=80, mel_scale=slaney, n_fft=400, hop_length=160 at 16 kHz) scaled by the tower is what
    WhisperFeatureExtractor gives (chunk_length=1 for the tiny model's 100 frames); a full clip drops its extra
    centred frame, as the extractor does."""
    enc = tower("whisper", hf_dirs)
    extractor = transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=1)
    wave = tone(440, seconds, 16000) + 0.1 * tone(3100, seconds, 16000)
    ref = extractor(wave.numpy(), sampling_rate=16000, return_tensors="pt").input_features  # (1, 80, 100)
    x = AudioProcessor(FEATURES["whisper"]).collate([wave]).x  # zero-padded to 1 s: 101 frames
    ours, _ = enc.whisper_features(x)
    assert x.shape[-1] == 101 and ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_clap_input_equals_clap_feature_extractor(hf_dirs):
    """Polymodal's default HTK log-mel in dB is the fusion extractor's (padding='pad') first channel, and the
    tower pads to the extractor's frame count read from the directory."""
    enc = tower("clap", hf_dirs)
    extractor = transformers.ClapFeatureExtractor.from_pretrained(hf_dirs["clap"][0])
    wave = tone(440, 0.7, 48000) + 0.1 * tone(5000, 0.7, 48000)
    ref = extractor(wave.numpy(), sampling_rate=48000, return_tensors="pt").input_features[:, :1]  # (1, 1, 101, 16)
    x = AudioProcessor(FEATURES["clap"]).collate([wave]).x
    ours = enc.clap_features(x)
    assert ours.shape == ref.shape == (1, 1, 101, 16)
    torch.testing.assert_close(ours, ref, atol=0.1, rtol=0)  # dB; float32 STFT leakage 80 dB down differs by < 0.1


def test_clap_tower_keeps_the_checkpoint_weights_and_a_tower_without_them_is_an_error(hf_dirs, tmp_path):
    enc = tower("clap", hf_dirs).eval()
    original = hf_dirs["clap"][1].audio_model
    for name, p in original.state_dict().items():
        assert torch.equal(enc.model.state_dict()[name], p), name
    # A ClapAudioModel directory whose weights carry ClapAudioModelWithProjection's names: nothing would load.
    with_projection = transformers.ClapAudioModelWithProjection(original.config)
    with_projection.save_pretrained(tmp_path / "clap_audio")
    assert type(tower("clap", {"clap": (tmp_path / "clap_audio", None)}).model).__name__ == "ClapAudioModel"
    config = json.loads((tmp_path / "clap_audio" / "config.json").read_text())
    config["architectures"] = ["ClapAudioModel"]
    (tmp_path / "clap_audio" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no weights for .* audio tower"):
        ENCODERS.build("hf_audio", path=str(tmp_path / "clap_audio"))


def test_an_unsupported_model_type_names_the_supported_ones(tmp_path):
    transformers.BertModel(transformers.BertConfig(vocab_size=20, **TINY)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="'bert' is not a supported audio tower; supported: wav2vec2, hubert, whisper"):
        ENCODERS.build("hf_audio", path=str(tmp_path / "bert"))


def test_wrong_input_says_which_audio_features_to_set(hf_dirs):
    x, mask, _ = batch("whisper")
    with pytest.raises(ValueError, match="kind: waveform"):
        tower("hubert", hf_dirs)(x, mask)
    with pytest.raises(ValueError, match="n_mels: 16"):
        tower("ast", hf_dirs)(x, mask)
    with pytest.raises(ValueError, match="at most 100 frames"):
        tower("whisper", hf_dirs)(torch.cat([x, x], dim=-1))


@pytest.mark.parametrize("name", ["wav2vec2", "whisper", "ast"])
def test_hf_grad_checkpointing_gives_the_same_grads(name, hf_dirs):
    enc = tower(name, hf_dirs).train()
    x, mask, _ = batch(name)
    weights, grads = None, []
    for enabled in (False, True):
        enc.set_grad_checkpointing(enabled)
        enc.zero_grad(set_to_none=True)
        out = enc(x, mask)
        weights = torch.randn_like(out.pooled) if weights is None else weights
        (out.pooled * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4, msg=n)


def test_clap_says_it_has_no_grad_checkpointing(hf_dirs):
    with pytest.raises(ValueError, match="ClapAudioModel .* has no gradient checkpointing"):
        tower("clap", hf_dirs).set_grad_checkpointing(True)


def embedding_config(audio: dict) -> dict:
    text = {"name": "transformer_text", "params": {"vocab_size": 20, "width": 16, "depth": 1, "heads": 2}}
    return {"kind": "embedding", "embed_dim": 8, "encoders": {"audio": audio, "text": text}}


@pytest.mark.parametrize("name", TOWERS)
def test_a_model_with_an_hf_audio_tower_saves_and_loads_to_the_same_outputs(name, hf_dirs, tmp_path):
    torch.manual_seed(0)
    model = build_model(
        parse_model_config(embedding_config({"name": "hf_audio", "params": {"path": hf_dirs[name][0]}}))
    )
    with torch.no_grad():  # move the weights off the checkpoint's, so loading them from the HF directory is wrong
        for p in model.encoders["audio"].parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    x, mask, _ = batch(name)
    save_model(tmp_path / "m", model, {"audio": AudioProcessor(FEATURES[name])})
    saved = SavedModel.load(tmp_path / "m")
    assert saved.processors["audio"].features == FEATURES[name]
    with torch.no_grad():
        torch.testing.assert_close(saved.model.embed("audio", x, mask), model.embed("audio", x, mask), atol=0, rtol=0)


# ---- AudioTransformer --------------------------------------------------------------------------


def small_ast(**kwargs) -> AudioTransformer:
    params = {"channels": 32, "frames": 40, "patch_size": 8, "width": 32, "depth": 2, "heads": 2, **kwargs}
    return ENCODERS.build("audio_transformer", **params)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("stride", [None, 6])
def test_audio_transformer_tokens_cover_a_frequency_by_time_patch_grid(pooling, stride):
    enc = small_ast(pooling=pooling, stride=stride).eval()
    x, mask = torch.randn(2, 32, 37), torch.ones(2, 37, dtype=torch.bool)
    mask[1, 20:] = False
    out = enc(x, mask)
    step = stride or 8
    grid = ((32 - 8) // step + 1, -(-(37 - 8) // step) + 1)  # the last time patch padded, spare bands dropped
    extra = pooling == "cls"
    assert out.grid == grid and out.tokens.shape == (2, extra + grid[0] * grid[1], 32)
    in_time = [t * step < 20 for t in range(grid[1])]
    assert out.mask[0].all() and out.mask[1, extra:].tolist() == in_time * grid[0]
    if pooling == "mean":
        torch.testing.assert_close(out.pooled[1], out.tokens[1][out.mask[1]].mean(0))
    else:
        torch.testing.assert_close(out.pooled, out.tokens[:, 0])
    assert enc(x).mask is None


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("training", [False, True])
def test_audio_transformer_ignores_padding_in_attention_pooling_and_band_statistics(pooling, training):
    """Whatever padding holds and however much there is (up to the frames it was built for), the real part
    gives the same output; in training the band statistics come from real frames only."""
    torch.manual_seed(0)
    enc = small_ast(pooling=pooling).train(training)
    x = torch.randn(2, 32, 40)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 13:] = False
    garbage = x.clone()
    garbage[1, :, 13:] = 100.0
    a, b = enc(x, mask), enc(garbage, mask)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-5)
    if not training:  # batch statistics would differ without the other row
        torch.testing.assert_close(enc(x[1:, :, :13]).pooled, a.pooled[1:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(enc(x[1:, :, :24], mask[1:, :24]).pooled, a.pooled[1:], atol=1e-5, rtol=1e-5)


def test_audio_transformer_crops_positions_for_shorter_input_and_stretches_them_for_longer():
    enc = small_ast().eval()
    assert enc.position_embedding.shape == (1, 32, 4, 5)  # 40 frames: 5 time patches of 8
    torch.testing.assert_close(enc._positions(3), enc.position_embedding[..., :3])
    longer = enc._positions(9)
    assert longer.shape == (1, 32, 4, 9)
    torch.testing.assert_close(longer[..., [0, -1]], enc.position_embedding[..., [0, -1]], atol=0.02, rtol=0)
    assert enc(torch.randn(1, 32, 70)).tokens.shape == (1, 1 + 4 * 9, 32)
    with pytest.raises(ValueError, match=r"^audio_transformer: expected .* \(batch, 32 bands, frames\)"):
        enc(torch.randn(1, 16, 40))
    with pytest.raises(ValueError, match="stride=9 must be between 1 and patch_size=8"):
        small_ast(stride=9)


def test_audio_transformer_grad_checkpointing_gives_the_same_grads():
    enc = small_ast().train()
    x, mask = torch.randn(3, 32, 40), torch.ones(3, 40, dtype=torch.bool)
    mask[2, 25:] = False
    weights, grads = torch.randn(3, 32), []
    for enabled in (False, True):
        enc.set_grad_checkpointing(enabled)
        enc.zero_grad(set_to_none=True)
        (enc(x, mask).pooled * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-5, msg=n)


def pitch_batch(n: int, generator: torch.Generator, features: AudioFeatures) -> tuple[torch.Tensor, ...]:
    """Tones at 300 Hz (label 0) or 1200 Hz (label 1) of random length, phase and loudness, in noise."""
    labels = torch.randint(2, (n,), generator=generator)
    waves = []
    for label in labels.tolist():
        seconds = 0.2 + 0.3 * float(torch.rand((), generator=generator))
        phase, gain = (float(v) for v in torch.rand(2, generator=generator))
        wave = tone((300, 1200)[label], seconds, features.sample_rate, 6.28 * phase) * (0.2 + gain)
        waves.append(wave + 0.05 * torch.randn(wave.shape, generator=generator))
    out = AudioProcessor(features).collate(waves)
    return out.x, out.mask, labels


def test_audio_transformer_learns_to_tell_two_pitches_apart():
    torch.manual_seed(0)
    features = AudioFeatures(sample_rate=8000, clip_seconds=0.5, n_fft=256, hop_length=128, n_mels=32)
    enc = small_ast(frames=features.frames(features.clip_samples))
    head = nn.Linear(enc.output_dim, 2)
    optimizer = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(60):
        x, mask, labels = pitch_batch(16, g, features)
        loss = nn.functional.cross_entropy(head(enc(x, mask).pooled), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, mask, labels = pitch_batch(64, torch.Generator().manual_seed(99), features)
    with torch.no_grad():
        accuracy = (head(enc.eval()(x, mask).pooled).argmax(-1) == labels).float().mean().item()
    assert accuracy >= 0.9, accuracy  # chance: 0.5


def test_an_embedding_model_with_an_audio_transformer_tower_saves_and_loads(tmp_path):
    features = AudioFeatures(sample_rate=8000, clip_seconds=0.5, n_fft=256, hop_length=128, n_mels=32)
    params = {"channels": 32, "frames": features.frames(features.clip_samples), "patch_size": 8, "width": 32}
    model = build_model(parse_model_config(embedding_config({"name": "audio_transformer", "params": params})))
    x, mask, _ = pitch_batch(3, torch.Generator().manual_seed(0), features)
    model.train()
    model.embed("audio", x, mask).sum().backward()  # trains like any tower
    model.eval()
    save_model(tmp_path / "m", model, {"audio": AudioProcessor(features)})
    saved = SavedModel.load(tmp_path / "m")
    with torch.no_grad():
        ours = model.embed("audio", x, mask)
        torch.testing.assert_close(saved.model.embed("audio", x, mask), ours, atol=0, rtol=0)
    assert ours.shape == (3, 8) and np.allclose(ours.norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_processor_output_feeds_the_towers_from_a_file(hf_dirs, tmp_path):
    """From a clip on disk to a tower, through the saved processor settings (waveform for HuBERT)."""
    sf = pytest.importorskip("soundfile")
    sf.write(tmp_path / "a.wav", tone(440, 0.1, 8000).numpy(), 8000)
    processor = AudioProcessor.from_settings(json.loads(json.dumps(FEATURES["hubert"].model_dump())), Path(tmp_path))
    x, mask = processor.batch([tmp_path / "a.wav"])
    assert x.shape == (1, 1, 2000) and int(mask.sum()) == 800
    out = tower("hubert", hf_dirs).eval()(x, mask)
    assert out.mask.shape[1] == out.tokens.shape[1] and out.mask.any()


def test_audio_cnn_flatten_keeps_the_band_groups_in_each_token() -> None:
    """``frequency: flatten`` projects every band group's features (a pitch moved by 16 bands changes the token),
    where ``mean`` averages the frequency axis away."""
    from polymodal.modules.encoders import AudioCNN

    torch.manual_seed(0)
    flat = AudioCNN(channels=40, widths=(8, 16), width=32, frequency="flatten").eval()
    assert flat.proj.in_features == 16 * 10  # 40 bands -> 20 -> 10 groups
    x = torch.zeros(2, 40, 24)
    x[0, 4:8], x[1, 20:24] = 5.0, 5.0  # the same tone, 16 bands apart
    out = flat(x, torch.ones(2, 24, dtype=torch.bool))
    assert out.tokens.shape == (2, 6, 32)
    assert not torch.allclose(out.pooled[0], out.pooled[1], atol=1e-3)
    with pytest.raises(ValueError, match="frequency='max' is not one of"):
        AudioCNN(frequency="max")  # type: ignore[arg-type]
