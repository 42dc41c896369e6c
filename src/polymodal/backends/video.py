"""Clips embedded by an image-text model without a video tower: CLIP4Clip's parameter-free meanP, the mean of the
clip's unit frame embeddings by the image tower, re-normalised."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from polymodal.data.video import Clip, VideoSampling, decoded

# How a backend embeds clips (Model.video_embedding, /health): its own tower, or its image tower per frame.
VIDEO_TOWER = "video tower"
IMAGE_FRAMES = "image tower per frame (mean of unit frame embeddings)"


def embed_by_frames(
    embed_images: Callable[[list[Image.Image]], torch.Tensor],
    clips: Sequence[str | bytes | Clip],
    sampling: VideoSampling,
    batch_size: int,
) -> torch.Tensor:
    """(N, D) unit vectors: each clip's sampled frames embedded by ``embed_images`` ((F, D) unit rows), averaged and
    re-normalised (CLIP4Clip's parameter-free meanP). Frames go to the image tower ``batch_size`` at a time."""
    frames = [decoded(clip, sampling).frames for clip in clips]
    flat = [frame for clip_frames in frames for frame in clip_frames]
    if not flat:
        raise ValueError("no frames to embed")
    rows = torch.cat([embed_images(flat[i : i + batch_size]).float() for i in range(0, len(flat), batch_size)])
    owner = torch.repeat_interleave(torch.arange(len(frames)), torch.tensor([len(f) for f in frames]))  # (F,)
    sums = torch.zeros(len(frames), rows.shape[1]).index_add_(0, owner, rows.cpu())  # (N, D)
    return F.normalize(sums, dim=-1)
