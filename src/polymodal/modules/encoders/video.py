"""Video towers over clips ``x`` (B, T, 3, H, W) with a frame mask (B, T), True = a real frame.

:class:`FrameEncoder` runs any image encoder on each real frame and a temporal model over the frames' features
(CLIP4Clip's meanP, seqTransf and seqLSTM, or joint attention over every frame's grid cells); :class:`VideoViT` is
a space-time transformer over tubelets, trained from scratch. They return one token per frame (per frame and cell,
per tubelet) with its mask, so padding frames never change a clip's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.modules.encoders.base import Encoder, EncoderOutput, masked_mean
from polymodal.modules.encoders.pooling import check_choice
from polymodal.modules.encoders.text import RecurrentEncoder
from polymodal.modules.layers import TransformerBlock, init_transformer_weights, maybe_checkpoint

TEMPORAL_KINDS = ("mean", "transformer", "lstm", "space_time")
MOTION_KINDS = ("none", "pixel_difference", "feature_difference")


CLIPS = "the model's video processor makes them (normalised float pixels)"


def _frame_mask(x: Tensor, mask: Tensor | None) -> Tensor:
    """The (B, T) bool mask of clips ``x`` (B, T, C, H, W); every frame is real without one."""
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return mask.bool()


class TemporalMean(Encoder):
    """CLIP4Clip's meanP: the frames' features as they are, pooled by their masked mean (order-invariant)."""

    modality = "video"

    def __init__(self, width: int) -> None:
        super().__init__()
        self.output_dim = width

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        return EncoderOutput(x, masked_mean(x, mask), mask)


class TemporalTransformer(Encoder):
    """CLIP4Clip's seqTransf: pre-norm blocks over the frame features with learned frame positions and padding
    masked out, added back to the frame features (so training starts from meanP), then the masked mean."""

    modality = "video"

    def __init__(self, width: int, depth: int = 2, heads: int = 4, max_frames: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.output_dim, self.max_frames = width, max_frames
        self.position_embedding = nn.Parameter(torch.zeros(1, max_frames, width))
        self.layers = nn.ModuleList(TransformerBlock(width, heads, dropout=dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.apply(init_transformer_weights)
        nn.init.trunc_normal_(self.position_embedding, std=0.02, a=-0.04, b=0.04)

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        if x.shape[1] > self.max_frames:
            raise ValueError(f"{x.shape[1]} frames exceed max_frames {self.max_frames}")
        h = x + self.position_embedding[:, : x.shape[1]]
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.layers:
            h = maybe_checkpoint(block, h, mask, enabled=use_ckpt)
        tokens = self.norm(h) + x
        return EncoderOutput(tokens, masked_mean(tokens, mask), mask)


class SpaceTimeTransformer(Encoder):
    """Joint attention over every frame's grid cells: x (B, T, cells, D) with learned time and cell positions, so an
    event's where, what and when meet in one token (which shape changed first needs all three). Tokens are
    time-major (B, T * cells, D), zeros at padding frames; pooled: their masked mean."""

    modality = "video"

    def __init__(
        self, width: int, cells: int, depth: int = 2, heads: int = 4, max_frames: int = 32, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.output_dim, self.cells, self.max_frames = width, cells, max_frames
        self.time_embedding = nn.Parameter(torch.zeros(1, max_frames, 1, width))
        self.cell_embedding = nn.Parameter(torch.zeros(1, 1, cells, width))
        self.layers = nn.ModuleList(TransformerBlock(width, heads, dropout=dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.apply(init_transformer_weights)
        for p in (self.time_embedding, self.cell_embedding):
            nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """x (B, T, cells, D); ``mask`` (B, T) True for real frames."""
        if x.shape[1] > self.max_frames:
            raise ValueError(f"{x.shape[1]} frames exceed max_frames {self.max_frames}")
        frames = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
        token_mask = frames.repeat_interleave(self.cells, dim=1)  # (B, T * cells)
        h = (x + self.time_embedding[:, : x.shape[1]] + self.cell_embedding).flatten(1, 2)
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.layers:
            h = maybe_checkpoint(block, h, token_mask, enabled=use_ckpt)
        tokens = (self.norm(h) + x.flatten(1, 2)).masked_fill(~token_mask.unsqueeze(-1), 0.0)
        return EncoderOutput(tokens, masked_mean(tokens, token_mask), token_mask, cells_per_frame=self.cells)


class TemporalLSTM(RecurrentEncoder):
    """CLIP4Clip's seqLSTM: a forward LSTM over the real frames (packed: padding skipped), added back to the frame
    features, then the masked mean."""

    modality = "video"

    def __init__(self, width: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.cell, self.pooling = self._check(width, "lstm", False, "mean")
        self.output_dim = width
        self._init_recurrence(width, "lstm", layers, False, dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        frames = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
        tokens = self._encode(x, frames).tokens + x
        return EncoderOutput(tokens, masked_mean(tokens, frames), mask)


class FrameEncoder(Encoder):
    """An image encoder applied to every real frame (a TimeDistributed CNN), then a temporal model.

    ``frames``: the built image tower; padding frames never reach it, and each frame is one of its samples, so a
    frozen tower cached as ``encoders.video.frames`` computes each distinct frame once. A frame's features are the
    tower's pooled vector, or with ``spatial_grid: g`` its feature map averaged to g x g cells, each projected to
    ``cell_width`` (``None``: the tower's own channels, unprojected) and concatenated (where things are: a pooled
    CNN vector barely tells left from right).
    Projected to ``width`` when given, they go through ``temporal``: ``mean`` (meanP), ``transformer`` (seqTransf,
    ``depth`` blocks of ``heads`` heads, at most ``max_frames`` frames) or ``lstm`` (seqLSTM, ``depth`` layers).
    ``tokens`` is one row per frame (zeros at padding) with the frame mask; ``pooled`` their masked mean.
    ``motion`` says what changed since the previous frame: ``pixel_difference`` stacks the frames' difference on
    their channels for the frame tower (TSN's RGB difference; the tower takes 2x the channels);
    ``feature_difference`` puts the change of a frame's features beside them (any tower, cached ones too).
    ``feature_norm: batch`` standardises each channel of the frame tower's features (a BatchNorm): a locked
    ImageNet tower's channels differ widely in offset and scale, and probes on them learn only once standardised.
    """

    modality = "video"
    name = "video_frames"

    def __init__(
        self,
        frames: Encoder,
        temporal: str = "mean",
        width: int | None = None,
        depth: int = 1,
        heads: int = 4,
        max_frames: int = 32,
        dropout: float = 0.0,
        spatial_grid: int = 0,
        cell_width: int | None = 32,
        motion: str = "none",
        feature_norm: str = "none",
    ) -> None:
        super().__init__()
        if frames.modality != "image":
            raise ValueError(f"frame_encoder must be an image encoder, got a {frames.modality} one")
        if spatial_grid < 0 or (cell_width is not None and cell_width < 1):
            raise ValueError(f"need spatial_grid >= 0 and cell_width >= 1, got {spatial_grid} and {cell_width}")
        self.temporal_kind = check_choice("temporal", temporal, TEMPORAL_KINDS)
        self.motion = check_choice("motion", motion, MOTION_KINDS)
        if temporal == "space_time" and not spatial_grid:
            raise ValueError("temporal: space_time attends over grid cells: set spatial_grid")
        self.spatial_grid, self.cell_width = spatial_grid, cell_width or frames.output_dim
        # Each channel of the frame tower's features standardised over the batch (running statistics in eval).
        self.feature_norm = (
            nn.BatchNorm1d(frames.output_dim)
            if check_choice("feature_norm", feature_norm, ("none", "batch")) == "batch"
            else None
        )
        self.cell_proj = nn.Linear(frames.output_dim, cell_width) if spatial_grid and cell_width else None
        frame_dim = spatial_grid * spatial_grid * self.cell_width if spatial_grid else frames.output_dim
        frame_dim *= 2 if motion == "feature_difference" else 1
        if temporal == "space_time":  # one token per cell: its (and its change's) features, projected to width
            frame_dim //= spatial_grid * spatial_grid
        self.output_dim = width or frame_dim
        self.frames = frames
        self.proj = nn.Linear(frame_dim, width) if width and width != frame_dim else None
        self.temporal: Encoder
        if temporal == "space_time":
            self.temporal = SpaceTimeTransformer(self.output_dim, spatial_grid**2, depth, heads, max_frames, dropout)
        elif temporal == "mean":
            self.temporal = TemporalMean(self.output_dim)
        elif temporal == "transformer":
            self.temporal = TemporalTransformer(self.output_dim, depth, heads, max_frames, dropout)
        else:
            self.temporal = TemporalLSTM(self.output_dim, depth, dropout)

    def blocks(self) -> list[nn.Module]:
        return self.frames.blocks() + self.temporal.blocks()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        self.frames.set_grad_checkpointing(enable)
        self.temporal.set_grad_checkpointing(enable)

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        # Channels and frame size are the frame tower's to check (it names itself): it may take any size.
        self.check_input(x, "clips", ("batch", "frames", "channels", "height", "width"), "float", CLIPS)
        self.check_mask(mask, x.shape[:2], "(batch, frames)")

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """x (B, T, C, H, W) clips; ``mask`` (B, T) True for real frames."""
        self.check_inputs(x, mask)
        frames = _frame_mask(x, mask)
        if self.motion == "pixel_difference":
            x = torch.cat([x, frame_differences(x)], dim=2)
        per_frame = self._frame_features(self.frames(x[frames]))  # (real frames, D): B and T folded, no padding
        feats = per_frame.new_zeros(*frames.shape, per_frame.shape[-1]).index_put((frames,), per_frame)  # (B, T, D)
        if self.motion == "feature_difference":
            feats = torch.cat([feats, frame_differences(feats)], dim=-1)
        if self.temporal_kind == "space_time":  # (B, T, cells, k * cell_width): each cell's features, then changes
            cells = self.spatial_grid**2
            feats = feats.unflatten(-1, (-1, cells, self.cell_width)).transpose(2, 3).flatten(3)
        if self.proj is not None:
            feats = self.proj(feats)
        out = self.temporal(feats, frames)
        if self.temporal_kind == "space_time":
            return out
        tokens = out.tokens.masked_fill(~frames.unsqueeze(-1), 0.0)  # (B, T, D)
        return EncoderOutput(tokens, out.pooled, frames)

    def _frame_features(self, out: EncoderOutput) -> Tensor:
        """(N, D) per frame: the pooled vector, or the g x g cells of the feature map, projected and concatenated."""
        if not self.spatial_grid:
            return out.pooled if self.feature_norm is None else self.feature_norm(out.pooled)
        if out.grid is None:
            raise ValueError(
                f"spatial_grid needs a frame encoder with a feature map; {type(self.frames).__name__} has none"
            )
        h, w = out.grid
        feature_map = out.tokens[:, -h * w :].transpose(1, 2).unflatten(2, (h, w))  # (N, C, h, w)
        cells = F.adaptive_avg_pool2d(feature_map, self.spatial_grid).flatten(2).transpose(1, 2)  # (N, g*g, C)
        if self.feature_norm is not None:
            cells = self.feature_norm(cells.flatten(0, 1)).view(cells.shape)
        return (cells if self.cell_proj is None else self.cell_proj(cells)).flatten(1)


def frame_differences(x: Tensor) -> Tensor:
    """Each frame of clips ``x`` (B, T, ...) minus the one before it; zeros for the first."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)


class VideoViT(Encoder):
    """A space-time ViT from scratch (ViViT's tubelet embedding, joint space-time attention).

    Each ``tubelet`` x ``patch_size`` x ``patch_size`` block of the clip is one token (a strided 3D convolution),
    with learned time and space positions added (one table each, so a clip of fewer than ``frames`` frames uses the
    first time rows). Padding frames are zeroed and a tubelet holding no real frame is masked out of attention and
    pooling; a clip whose length is not a multiple of ``tubelet`` is padded with masked frames. Tokens are time-major:
    (t, h, w) flattened, after the CLS token with ``pooling: cls``.
    """

    modality = "video"
    name = "video_vit"

    def __init__(
        self,
        frames: int = 16,
        image_size: int = 32,
        patch_size: int = 8,
        tubelet: int = 2,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        pooling: str = "cls",
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        self.pooling = check_choice("pooling", pooling, ("cls", "mean"))
        self.image_size, self.patch_size, self.tubelet, self.output_dim = image_size, patch_size, tubelet, width
        self.in_channels = in_channels
        self.time_patches = -(-frames // tubelet)
        size = (tubelet, patch_size, patch_size)
        self.patch_embed = nn.Conv3d(in_channels, width, size, stride=size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pooling == "cls" else None
        self.time_position = nn.Parameter(torch.zeros(1, self.time_patches, 1, width))
        self.space_position = nn.Parameter(torch.zeros(1, 1, (image_size // patch_size) ** 2, width))
        self.layers = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.apply(init_transformer_weights)
        nn.init.trunc_normal_(self.patch_embed.weight, std=0.02, a=-0.04, b=0.04)  # as the image ViT's patches
        nn.init.zeros_(self.patch_embed.bias)
        for p in (self.cls_token, self.time_position, self.space_position):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        size = self.image_size
        layout = ("batch", "frames", self.in_channels, size, size)
        self.check_input(x, "clips", layout, self.patch_embed.weight.dtype, CLIPS)
        self.check_mask(mask, x.shape[:2], "(batch, frames)")

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """x (B, T, C, H, W) clips with H = W = image_size; ``mask`` (B, T) True for real frames."""
        self.check_inputs(x, mask)
        frames = _frame_mask(x, mask)
        pad = -x.shape[1] % self.tubelet
        x = F.pad(x * frames[:, :, None, None, None], (0, 0, 0, 0, 0, 0, 0, pad))  # padding frames are zeros
        frames = F.pad(frames, (0, pad), value=False)
        patches = self.patch_embed(x.transpose(1, 2))  # (B, D, t, h, w)
        b, _, t, hp, wp = patches.shape
        if t > self.time_patches:
            raise ValueError(
                f"{self.label}: {t * self.tubelet} frames exceed frames={self.time_patches * self.tubelet}"
            )
        h = patches.flatten(3).permute(0, 2, 3, 1)  # (B, t, h * w, D)
        h = (h + self.time_position[:, :t] + self.space_position).flatten(1, 2)  # (B, t * h * w, D), time-major
        token_mask = frames.view(b, t, self.tubelet).any(-1).repeat_interleave(hp * wp, dim=1)  # (B, t * h * w)
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(b, -1, -1), h], dim=1)  # (B, 1 + t * h * w, D)
            token_mask = F.pad(token_mask, (1, 0), value=True)
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.layers:
            h = maybe_checkpoint(block, h, token_mask, enabled=use_ckpt)
        tokens = self.norm(h)
        pooled = tokens[:, 0] if self.cls_token is not None else masked_mean(tokens, token_mask)
        return EncoderOutput(tokens, pooled, token_mask)
