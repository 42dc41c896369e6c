"""Video towers: padding frames never count, a locked frame tower computes each distinct frame once, and the
temporal models learn frame order where the mean of frames cannot."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from polymodal.models.base import ComposedModel, build_model
from polymodal.models.config import EmbeddingConfig
from polymodal.models.transfer import cache_towers, freeze_towers
from polymodal.modules.encoders import ENCODERS, Encoder, FrameEncoder, VideoViT, ViTImageEncoder
from polymodal.modules.encoders.cache import CachedEncoder
from polymodal.pretrained import load_efficientnet_lite0  # also registers efficientnet_lite0_imagenet

SIZE = 8  # frame side in pixels
VIT_FRAMES = {"name": "vit", "params": {"image_size": SIZE, "patch_size": 4, "width": 16, "depth": 1, "heads": 2}}
KINDS = ["mean", "transformer", "lstm", "space_time", "video_vit"]


def build(kind: str, frames: int = 8) -> Encoder:
    """A small video tower: a ViT frame tower under one of the temporal models, or a VideoViT."""
    if kind == "video_vit":
        return VideoViT(frames=frames, image_size=SIZE, patch_size=4, tubelet=2, width=16, depth=2, heads=2)
    grid = {"spatial_grid": 2, "cell_width": 8} if kind == "space_time" else {}  # the ViT's 2x2 patches as cells
    return ENCODERS.build("video_frames", frame_encoder=VIT_FRAMES, temporal=kind, depth=2, heads=2, width=24, **grid)


def clips(batch: int = 2, frames: int = 4, real: tuple[int, ...] = (4, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """Random clips (B, T, 3, SIZE, SIZE), row i with ``real[i]`` frames and zeros after them."""
    mask = torch.arange(frames)[None, :] < torch.tensor(real)[:, None]  # (B, T)
    return torch.randn(batch, frames, 3, SIZE, SIZE) * mask[:, :, None, None, None], mask


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_of_a_padded_batch(kind):
    torch.manual_seed(0)
    enc = build(kind).eval()
    x, mask = clips()
    out = enc(x, mask)
    assert out.pooled.shape == (2, enc.output_dim)
    if kind == "video_vit":  # CLS, then 2 tubelets of 2 x 2 patches; the second clip's 2 frames fill the first
        assert out.tokens.shape == (2, 1 + 2 * 4, 16)
        assert out.mask[1].tolist() == [True] * 5 + [False] * 4
    elif kind == "space_time":  # one token per frame and cell, time-major, zeros at padding frames
        assert out.tokens.shape == (2, 4 * 4, 24) and torch.equal(out.mask, mask.repeat_interleave(4, dim=1))
        assert (out.tokens[~out.mask] == 0).all()
    else:  # one token per frame, zeros at padding
        assert out.tokens.shape == (2, 4, 24) and torch.equal(out.mask, mask)
        assert (out.tokens[~mask] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_padding_frames_never_change_a_clip(kind):
    torch.manual_seed(0)
    enc = build(kind).eval()
    x, mask = clips(real=(4, 3))  # 3 frames: VideoViT's second tubelet holds a real frame and a padding one
    with torch.no_grad():
        ref = enc(x, mask)
        # Noise in the padding frame and three more padding frames: whatever padding holds, it is not seen.
        noisy = torch.cat(
            [x + torch.randn_like(x) * ~mask[:, :, None, None, None], torch.randn(2, 3, 3, SIZE, SIZE)], 1
        )
        padded = enc(noisy, torch.cat([mask, torch.zeros(2, 3).bool()], 1))
        alone = enc(x[1:, :3], mask[1:, :3])  # the short clip without its padding, in a batch of its own
    torch.testing.assert_close(padded.pooled, ref.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone.pooled, ref.pooled[1:], atol=1e-5, rtol=1e-5)
    real = ref.mask
    torch.testing.assert_close(padded.tokens[:, : real.shape[1]][real], ref.tokens[real], atol=1e-5, rtol=1e-5)


def test_frame_tower_runs_on_real_frames_only():
    enc = build("mean").eval()
    rows = []
    enc.frames.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    x, mask = clips(frames=5, real=(5, 1))
    enc(x, mask)
    assert rows == [6]  # B * T = 10 slots, 6 of them real frames


def test_a_locked_cached_frame_tower_computes_each_distinct_frame_once():
    torch.manual_seed(123)  # weights of their own: the store is shared by every tower with the same weights
    model = ComposedModel({"video": build("transformer")})
    reference = copy.deepcopy(model)
    freeze_towers(model, {"encoders.video.frames": 0})
    cache_towers(model, {"encoders.video.frames": 100})
    tower = model.encoders.video.frames
    assert isinstance(tower, CachedEncoder) and len(tower.store) == 0
    assert model.state_dict().keys() == reference.state_dict().keys()
    rows = []
    tower.inner.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    a, b, c = torch.randn(3, 3, SIZE, SIZE)
    x = torch.stack([torch.stack([a, b, a, c]), torch.stack([c, b, torch.zeros_like(a), torch.zeros_like(a)])])
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    model.train()  # the temporal head trains; the locked frame tower stays in eval mode
    assert not tower.inner.training and model.encoders.video.temporal.training
    out = model.encoders.video(x, mask)
    assert sum(rows) == 3  # a, b and c (in the store's call sizes); the repeats and the padding never reach the tower
    model.encoders.video(x.flip(0), mask.flip(0))
    assert sum(rows) == 3 and tower.store.misses == 3 and tower.store.hits == 9
    out.pooled.sum().backward()
    assert all(p.grad is not None for p in model.encoders.video.temporal.parameters())
    reference.eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encoders.video(x, mask).pooled, reference.encoders.video(x, mask).pooled)


def test_a_model_config_locks_and_caches_the_imagenet_efficientnet_per_frame():
    video = {"frame_encoder": {"name": "efficientnet_lite0_imagenet"}, "temporal": "lstm", "width": 32}
    text = {"vocab_size": 50, "width": 32, "depth": 1, "heads": 2}
    config = EmbeddingConfig(
        encoders={
            "video": {"name": "video_frames", "params": video},
            "text": {"name": "transformer_text", "params": text},
        },
        embed_dim=16,
    )
    model = build_model(config)
    packaged = load_efficientnet_lite0().state_dict()
    assert all(torch.equal(t, packaged[k]) for k, t in model.encoders.video.frames.state_dict().items())
    freeze_towers(model, {"encoders.video.frames": 0})
    cache_towers(model, {"encoders.video.frames": 100})
    rows = []
    model.encoders.video.frames.inner.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    x, mask = clips(frames=3, real=(3, 2))
    x = torch.rand(2, 3, 3, 32, 32) * mask[:, :, None, None, None]  # 32 px frames: any size works
    for _ in range(2):
        out = model.encoders.video(x, mask)
    assert sum(rows) == 5 and out.pooled.shape == (2, 32)  # 5 real frames, computed once over two steps
    assert all(p.requires_grad for p in model.encoders.video.temporal.parameters())


# ---- a toy task that needs frame order -------------------------------------------------------

RED, BLUE = torch.tensor([1.0, -1.0, -1.0]), torch.tensor([-1.0, -1.0, 1.0])


def colour_order_task() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clips of n = 4 to 6 solid-colour frames (padded to 6), the first k (1 .. n - 1) one colour and the rest the
    other: label 1 when red comes first. Each red-first clip (n, k) has a blue-first twin (n, n - k) with the same
    frames in another order and the other label."""
    xs, masks, labels = [], [], []
    for red_first in (True, False):
        first, then = (RED, BLUE) if red_first else (BLUE, RED)
        for n in (4, 5, 6):
            for k in range(1, n):
                colours = [first] * k + [then] * (n - k) + [torch.zeros(3)] * (6 - n)
                xs.append(torch.stack(colours)[:, :, None, None].expand(-1, -1, SIZE, SIZE))  # (6, 3, SIZE, SIZE)
                masks.append(torch.arange(6) < n)
                labels.append(int(red_first))
    return torch.stack(xs), torch.stack(masks), torch.tensor(labels)


def train_on_order(kind: str, steps: int = 120) -> float:
    """Train tower + linear classifier on the colour-order clips; accuracy on them afterwards."""
    torch.manual_seed(0)
    enc = build(kind, frames=6)
    head = nn.Linear(enc.output_dim, 2)
    x, mask, y = colour_order_task()
    params = [*enc.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(head(enc(x, mask).pooled), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    with torch.no_grad():
        return (head(enc(x, mask).pooled).argmax(-1) == y).float().mean().item()


@pytest.mark.parametrize("kind", ["transformer", "lstm", "space_time", "video_vit"])
def test_temporal_models_learn_which_colour_comes_first(kind):
    assert train_on_order(kind) == 1.0


def test_the_mean_of_frames_cannot_tell_the_order():
    enc = build("mean").eval()
    x, mask, y = colour_order_task()
    with torch.no_grad():
        pooled = enc(x, mask).pooled  # (24, D): 12 red-first clips, then their 12 blue-first twins
    starts = {4: 0, 5: 3, 6: 7}  # where each length's clips begin among the 12
    twins = torch.tensor([starts[n] + (n - k) - 1 for n in (4, 5, 6) for k in range(1, n)])  # (n, k) -> (n, n - k)
    torch.testing.assert_close(pooled[:12], pooled[12:][twins])  # same input to any head, opposite labels
    assert train_on_order("mean") == 0.5


# ---- building and checkpointing -----------------------------------------------------------------


def test_nested_frame_encoder_by_name_or_built():
    enc = ENCODERS.build("video_frames", frame_encoder={"name": "efficientnet_lite0"}, temporal="lstm", width=32)
    assert type(enc.frames).__name__ == "EfficientNetLite0" and enc.output_dim == 32
    built = ViTImageEncoder(image_size=SIZE, patch_size=4, width=16, depth=1, heads=2)
    assert ENCODERS.build("video_frames", frame_encoder=built).frames is built
    with pytest.raises(ValueError, match="frame_encoder must be"):
        ENCODERS.build("video_frames", frame_encoder={"encoder": "vit"})
    with pytest.raises(ValueError, match="must be an image encoder"):
        ENCODERS.build("video_frames", frame_encoder={"name": "audio_lstm"})
    with pytest.raises(ValueError, match="temporal='gru' is not one of"):
        ENCODERS.build("video_frames", temporal="gru")
    with pytest.raises(ValueError, match="exceed max_frames 2"):
        FrameEncoder(built, temporal="transformer", heads=2, max_frames=2)(*clips())
    with pytest.raises(ValueError, match="exceed frames=2"):
        VideoViT(frames=2, image_size=SIZE, patch_size=4, width=16, depth=1, heads=2)(*clips())


def test_checkpointing_covers_the_temporal_blocks_with_the_same_grads():
    torch.manual_seed(0)
    enc = build("transformer").train()
    x, mask = clips()
    calls = []
    enc.temporal.layers[0].attn.register_forward_pre_hook(lambda *_: calls.append(1))
    grads = []
    for enabled in (False, True):
        enc.set_grad_checkpointing(enabled)
        enc.zero_grad(set_to_none=True)
        calls.clear()
        (enc(x, mask).pooled * torch.linspace(-1, 1, enc.output_dim)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
        assert len(calls) == (2 if enabled else 1)  # recomputed in backward
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-5, msg=name)


def test_a_spatial_grid_tells_where_a_shape_is_when_the_pooled_vector_cannot():
    """A dot on the left and the same dot on the right: a CNN's global mean sees the same features (the tower is
    translation-equivariant away from the border); its feature map averaged to 2 x 2 cells does not."""
    torch.manual_seed(0)
    cnn = {"name": "cnn", "params": {"widths": [8, 8], "depths": [1, 1]}}
    pooled = ENCODERS.build("video_frames", frame_encoder=cnn, temporal="mean").eval()
    gridded = ENCODERS.build("video_frames", frame_encoder=cnn, temporal="mean", spatial_grid=2, cell_width=4).eval()
    assert gridded.output_dim == 2 * 2 * 4
    left = torch.zeros(1, 1, 3, 32, 32)
    left[..., 12:16, 8:12] = 1.0
    right = left.roll(12, -1)  # columns 20:24: the other half of the frame, the same distance from the border
    with torch.no_grad():
        a, b = pooled(left).pooled, pooled(right).pooled
        assert torch.allclose(a, b, atol=1e-6)
        ga, gb = gridded(left).pooled, gridded(right).pooled
        assert (ga - gb).norm() > 0.02 * ga.norm()


def test_cells_without_a_width_keep_the_frame_towers_own_channels():
    torch.manual_seed(0)
    cnn = {"name": "cnn", "params": {"widths": [8, 8], "depths": [1, 1]}}
    cells = ENCODERS.build("video_frames", frame_encoder=cnn, temporal="mean", spatial_grid=2, cell_width=None).eval()
    assert cells.cell_proj is None and cells.output_dim == 2 * 2 * cells.frames.output_dim
    clip = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        feature_map = cells.frames(clip[0])
        h, w = feature_map.grid
        grid = feature_map.tokens[:, -h * w :].transpose(1, 2).unflatten(2, (h, w))
        expected = torch.nn.functional.adaptive_avg_pool2d(grid, 2).flatten(2).transpose(1, 2).flatten(1)
        torch.testing.assert_close(cells(clip).tokens[0], expected)


def test_a_spatial_grid_needs_a_frame_tower_with_a_feature_map():
    vit_frames = ENCODERS.build("video_frames", frame_encoder=VIT_FRAMES, temporal="mean", spatial_grid=2)
    out = vit_frames(torch.randn(1, 2, 3, SIZE, SIZE))  # the ViT reports its patch grid: accepted
    assert out.pooled.shape == (1, 2 * 2 * 32)
    with pytest.raises(ValueError, match="spatial_grid"):
        ENCODERS.build("video_frames", frame_encoder=VIT_FRAMES, spatial_grid=-1)


def test_motion_difference_gives_the_frame_tower_each_frame_and_what_changed():
    torch.manual_seed(0)
    enc = ENCODERS.build(
        "video_frames",
        frame_encoder={"name": "cnn", "params": {"widths": [8], "depths": [1]}},
        motion="pixel_difference",
    ).eval()
    seen: list[torch.Tensor] = []
    enc.frames.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x, mask = clips(real=(4, 2))
    with torch.no_grad():
        enc(x, mask)
    frames = seen[0]  # the 4 + 2 real frames, 6 channels each
    assert frames.shape == (6, 6, SIZE, SIZE)
    assert torch.equal(frames[:, :3], x[mask])
    assert torch.equal(frames[0, 3:], torch.zeros(3, SIZE, SIZE))  # a clip's first frame: nothing changed yet
    assert torch.allclose(frames[1, 3:], x[0, 1] - x[0, 0])
    assert torch.allclose(frames[5, 3:], x[1, 1] - x[1, 0])
    with pytest.raises(ValueError, match="in_channels"):
        ENCODERS.build("video_frames", frame_encoder={"name": "efficientnet_lite0_imagenet"}, motion="pixel_difference")


def test_feature_difference_puts_each_frames_change_beside_its_features():
    torch.manual_seed(0)
    enc = ENCODERS.build("video_frames", frame_encoder=VIT_FRAMES, temporal="mean", motion="feature_difference")
    enc.eval()
    assert enc.proj is None and enc.output_dim == 2 * 16  # the ViT's 16-d pool, then its change
    x, mask = clips(real=(4, 2))
    with torch.no_grad():
        per_frame = enc.frames(x[mask]).pooled
        out = enc(x, mask)
    first = out.tokens[0]  # (4, 32): the clip with 4 real frames
    assert torch.allclose(first[:, :16], per_frame[:4], atol=1e-6)
    assert torch.allclose(first[0, 16:], torch.zeros(16))
    assert torch.allclose(first[2, 16:], per_frame[2] - per_frame[1], atol=1e-6)
