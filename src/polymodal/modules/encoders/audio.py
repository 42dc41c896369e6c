"""Audio towers over spectrogram frames (B, channels, frames) with a frame mask (B, frames), True = sound."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.modules.encoders.base import Encoder, EncoderOutput, masked_mean
from polymodal.modules.encoders.pooling import check_choice
from polymodal.modules.encoders.text import RecurrentEncoder
from polymodal.modules.layers import TransformerBlock, init_transformer_weights, maybe_checkpoint


def check_audio_inputs(encoder: Encoder, x: Tensor, mask: Tensor | None, bands: int, dtype: torch.dtype) -> None:
    """Frames (B, bands, frames) of the weights' dtype, and a (B, frames) mask (or None)."""
    hint = f"the audio processor makes them with kind: log_mel (or mfcc) and n_mels (or n_mfcc): {bands}"
    encoder.check_input(x, "log-mel (or MFCC) features", ("batch", (bands, "bands"), "frames"), dtype, hint)
    if mask is not None:
        encoder.check_mask(mask, (x.shape[0], x.shape[2]), "(batch, frames)")


class AudioCNN(Encoder):
    """PANNs-style CNN: blocks of two 3x3 convolutions (BatchNorm, ReLU) each halving frequency and time, then the
    frequency axis averaged away (``frequency: mean``, as PANNs) or kept (``flatten``: every band group's features
    into the token, so the token knows where in frequency a sound is: its pitch, which convolutions followed by a
    mean over frequency cannot tell): one token per group of ``2 ** len(widths)`` frames. With gradient
    checkpointing each block runs twice in training, so its BatchNorm statistics update twice (as in ``cnn``)."""

    modality = "audio"
    name = "audio_cnn"

    def __init__(
        self,
        channels: int = 64,
        widths: tuple[int, ...] = (32, 64, 128),
        width: int = 128,
        frequency: Literal["mean", "flatten"] = "mean",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 1
        for w in widths:
            layers.append(
                nn.Sequential(
                    nn.Conv2d(previous, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(),
                    nn.Conv2d(w, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(),
                    nn.AvgPool2d(2, ceil_mode=True),
                )
            )
            previous = w
        self.stages = nn.ModuleList(layers)
        self.input_norm = nn.BatchNorm1d(channels)  # per-band statistics: log-mel bands differ by orders of magnitude
        self.frequency = check_choice("frequency", frequency, ("mean", "flatten"))
        bands = channels
        for _ in widths:
            bands = -(-bands // 2)  # each stage halves the bands, rounding up
        self.proj = nn.Linear(previous * (bands if frequency == "flatten" else 1), width)
        self.output_dim = width
        self.downsample = 2 ** len(widths)

    def blocks(self) -> list[nn.Module]:
        return list(self.stages)

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        check_audio_inputs(self, x, mask, self.input_norm.num_features, self.proj.weight.dtype)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        self.check_inputs(x, mask)
        h = self.input_norm(x).unsqueeze(1)  # (B, 1, channels, frames)
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for stage in self.stages:
            h = maybe_checkpoint(stage, h, enabled=use_ckpt)
        if self.frequency == "mean":
            h = h.mean(dim=2)  # (B, widths[-1], frames / downsample)
        else:
            h = h.flatten(1, 2)  # (B, widths[-1] * bands, frames / downsample)
        tokens = self.proj(h.transpose(1, 2))  # (B, frames / downsample, width)
        token_mask = None
        if mask is not None:  # a token holds sound when any of its frames does
            pooled = F.max_pool1d(mask.float().unsqueeze(1), self.downsample, ceil_mode=True).squeeze(1)
            token_mask = pooled[:, : tokens.shape[1]].bool()
        return EncoderOutput(tokens, masked_mean(tokens, token_mask), token_mask)


class AudioLSTM(RecurrentEncoder):
    """Stacked LSTM/GRU over spectrogram or MFCC frames (the frames' bands normalised, then projected to
    ``width``), one token per frame; padded frames are skipped."""

    modality = "audio"
    name = "audio_lstm"

    def __init__(
        self,
        channels: int = 20,
        width: int = 128,
        cell: str = "lstm",
        layers: int = 2,
        bidirectional: bool = True,
        pooling: str = "mean",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.cell, self.pooling = self._check(width, cell, bidirectional, pooling)
        self.output_dim = width
        self.input_norm = nn.BatchNorm1d(channels)
        self.proj = nn.Linear(channels, width)
        self._init_recurrence(width, cell, layers, bidirectional, dropout)

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        check_audio_inputs(self, x, mask, self.input_norm.num_features, self.proj.weight.dtype)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        self.check_inputs(x, mask)
        h = self.proj(self.input_norm(x).transpose(1, 2))  # (B, frames, width)
        frames = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device) if mask is None else mask.bool()
        return self._encode(h, frames)


def patch_token_mask(frames: Tensor, patch: int, stride: int, freq_patches: int) -> Tensor:
    """(B, frames) real-frame mask -> (B, freq_patches * time patches) mask of a frequency-major patch grid: a
    patch holds sound when any of its frames does."""
    in_time = F.max_pool1d(frames.float().unsqueeze(1), patch, stride).squeeze(1).bool()  # (B, t)
    return in_time[:, None, :].expand(-1, freq_patches, -1).flatten(1)


class AudioTransformer(Encoder):
    """AST-style transformer over patches of the log-mel spectrogram (Gong et al. 2021), the image ViT's blocks.

    Each band is normalised (BatchNorm over the real frames only; padding frames become 0), then square
    ``patch_size`` patches are cut every ``stride`` bins and frames and embedded by one strided convolution. The
    default ``stride = patch_size`` cuts non-overlapping patches: AST's overlap (16 x 16 every 10) gives ~2.6x the
    tokens and ~7x the attention for a small gain in its ablation, too dear on a CPU. The time axis is padded so
    the last frames are covered; frequency bins past the last whole patch are dropped, as AST does.

    Positions: a learned table over the frequency x time patch grid of a ``frames``-frame input. A shorter input
    takes its first columns (cropping), so a patch keeps its position whatever the padding after it; a longer one
    stretches the table over the longer grid (bilinear, as a ViT's positions are adapted to a larger image).
    A patch whose frames are all padding is masked out of attention and pooling. ``pooling``: ``cls`` (a learned
    token first in ``tokens``) or ``mean`` (over real patches). ``tokens`` is the grid in frequency-major order.
    """

    modality = "audio"
    name = "audio_transformer"

    def __init__(
        self,
        channels: int = 64,
        frames: int = 501,
        patch_size: int = 16,
        stride: int | None = None,
        width: int = 192,
        depth: int = 4,
        heads: int = 4,
        pooling: str = "cls",
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.pooling = check_choice("pooling", pooling, ("cls", "mean"))
        self.stride = stride or patch_size
        if not 0 < self.stride <= patch_size:
            raise ValueError(f"stride={stride} must be between 1 and patch_size={patch_size}")
        if channels < patch_size:
            raise ValueError(f"channels={channels} (mel bands) is smaller than patch_size={patch_size}")
        self.channels, self.patch_size, self.output_dim = channels, patch_size, width
        self.input_norm = nn.BatchNorm1d(channels)
        self.patch_embed = nn.Conv2d(1, width, patch_size, stride=self.stride)
        grid = ((channels - patch_size) // self.stride + 1, self._time_patches(frames))
        self.position_embedding = nn.Parameter(torch.zeros(1, width, *grid))  # (1, D, freq patches, time patches)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pooling == "cls" else None
        self.layers = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.apply(init_transformer_weights)
        for p in (self.cls_token, self.position_embedding):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)

    def _time_patches(self, frames: int) -> int:
        """Patches along time covering ``frames`` frames (the last one padded)."""
        return math.ceil(max(frames - self.patch_size, 0) / self.stride) + 1

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        check_audio_inputs(self, x, mask, self.channels, self.patch_embed.weight.dtype)

    def _positions(self, time_patches: int) -> Tensor:
        table = self.position_embedding  # (1, D, f, t)
        if time_patches <= table.shape[-1]:
            return table[..., :time_patches]
        return F.interpolate(table, size=(table.shape[-2], time_patches), mode="bilinear", align_corners=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """x (B, channels, frames) log-mel; ``mask`` (B, frames) True where a frame holds sound."""
        self.check_inputs(x, mask)
        h = x.transpose(1, 2)  # (B, frames, channels)
        if mask is None:
            h = self.input_norm(h.reshape(-1, self.channels)).view_as(h)
        elif self.training:  # batch statistics from real frames only; padding becomes the normalised mean, 0
            mask = mask.bool()
            h = h.new_zeros(h.shape).index_put((mask,), self.input_norm(h[mask]))
        else:  # running statistics: every frame alike, padding zeroed (no data-dependent shape, so it exports)
            mask = mask.bool()
            h = torch.where(mask.unsqueeze(-1), self.input_norm(h.reshape(-1, self.channels)).view_as(h), 0.0)
        time_patches = self._time_patches(h.shape[1])
        pad = self.patch_size + (time_patches - 1) * self.stride - h.shape[1]
        h = F.pad(h.transpose(1, 2), (0, pad)).unsqueeze(1)  # (B, 1, channels, padded frames)
        patches = self.patch_embed(h) + self._positions(time_patches)  # (B, D, f, t)
        grid = (patches.shape[-2], patches.shape[-1])
        h = patches.flatten(2).transpose(1, 2)  # (B, f * t, D), frequency-major
        token_mask = (
            None if mask is None else patch_token_mask(F.pad(mask, (0, pad)), self.patch_size, self.stride, grid[0])
        )
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(h.size(0), -1, -1), h], dim=1)  # (B, 1 + f * t, D)
            if token_mask is not None:
                token_mask = F.pad(token_mask, (1, 0), value=True)
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.layers:
            h = maybe_checkpoint(block, h, token_mask, enabled=use_ckpt)
        tokens = self.norm(h)
        if self.cls_token is not None:
            pooled = tokens[:, 0]
        else:
            pooled = masked_mean(tokens, token_mask)
        return EncoderOutput(tokens, pooled, token_mask, grid)
