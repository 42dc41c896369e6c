"""Tracking fusion: the text's tokens find what they name in every frame of a clip and read when it changed.

"The red circle made the sound" asks when the red circle acted. Cross-attention from the words to a clip's
space-time cells has to learn that binding of what, where and when from the answers alone, and on ShapesWorld
moves it stays at chance; here the binding is built in, per text token:

1. it attends over every cell of every frame at once for what it names (one softmax over space and time: the named
   thing may be missing from some frames, as a shape that appears or disappears is);
2. its place is that attention summed over time: where the thing was, whenever it was there;
3. each frame is read at that place (the cells' values weighted by the place), and the frames' readings, in time
   order, become the token's track, added to the token.

The tokens then attend to the other modalities (a clip's sound too) as in :class:`CrossAttentionFusion`.

Learning step 1 from the answers alone is a saddle: while every word attends everywhere, every word reads the same
track, and the answer gives the match no gradient to follow. In training the fusion therefore also returns a
grounding loss (FILIP's token-wise contrast, :mod:`polymodal.modules.losses.grounding`) on the same match queries and
keys: each text must pick its own clip among the batch's by its words' best-matching cells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion._common import ModalityFeatures, keep_where, masked_softmax, mlp
from polymodal.modules.fusion.attention import CrossAttentionFusion
from polymodal.modules.fusion.base import FusionOutput
from polymodal.modules.losses.grounding import grounding_loss


class TrackFusion(CrossAttentionFusion):
    """Cross-attention from ``query`` (default: the first modality) to the others, after each query token has read
    its track through the frames of ``track``, a tower whose tokens are space-time cells
    (``EncoderOutput.cells_per_frame``: the video tower with ``temporal: space_time``). A frame's reading is
    ``reading_width`` numbers; the readings of up to ``max_frames`` frames, in order, go through an MLP to ``dim``.
    In training, ``grounding_weight`` times the grounding loss (at ``grounding_temperature``) joins
    ``FusionOutput.losses`` as ``grounding``; 0 turns it off. ``gate_by``: as in :class:`AttentionFusion`.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        query: str | None = None,
        track: str = "video",
        dim: int = 256,
        heads: int = 4,
        layers: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        reading_width: int = 16,
        max_frames: int = 32,
        grounding_weight: float = 1.0,
        grounding_temperature: float = 0.07,
        gate_by: Sequence[str] = (),
    ) -> None:
        super().__init__(input_dims, output_dim, query, dim, heads, layers, mlp_ratio, dropout, gate_by)
        if track not in self.input_dims or track in self.queries:
            others = [m for m in self.modalities if m not in self.queries]
            raise ValueError(
                f"TrackFusion: track must be one of the non-query modalities {others}, got {track!r} (it follows a "
                f"video tower's space-time cells: name it in fusion.params.track)"
            )
        if reading_width < 1 or max_frames < 1:
            raise ValueError(
                f"TrackFusion: need reading_width >= 1 and max_frames >= 1, got {reading_width}, {max_frames}"
            )
        if grounding_weight < 0 or grounding_temperature <= 0:
            raise ValueError(
                "TrackFusion: need grounding_weight >= 0 and grounding_temperature > 0, "
                f"got {grounding_weight}, {grounding_temperature}"
            )
        self.track, self.max_frames, self.reading_width = track, max_frames, reading_width
        self.grounding_weight, self.grounding_temperature = grounding_weight, grounding_temperature
        # Queries and keys layer-normed: match scores start at unit scale whatever the streams' widths and norms.
        self.match_query = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.match_key = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.reading = nn.Linear(dim, reading_width)
        # The track layer-normed: it joins the token at the token's own scale.
        self.track_mlp = nn.Sequential(mlp(max_frames * reading_width, dim, dim, dropout), nn.LayerNorm(dim))

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        inputs = self.gather(features, present)
        streams = self.project(inputs)
        query, clip = self.queries[0], inputs[self.track]
        losses = {}
        if clip.present.any():  # a batch without clips has no tracks to read
            queries, keys = self.match_query(streams[query]), self.match_key(streams[self.track])
            streams[query] = streams[query] + self.read_tracks(queries, keys, streams[self.track], clip)
            if self.training and self.grounding_weight > 0:
                losses["grounding"] = self.grounding_weight * self.grounding(queries, inputs[query], keys, clip)
        out = self.fuse(inputs, streams)
        out.losses.update(losses)
        return out

    def grounding(self, queries: Tensor, text: ModalityFeatures, keys: Tensor, clip: ModalityFeatures) -> Tensor:
        """The grounding loss over the rows that have both a text and a clip; rows whose clips are identical (two
        statements about one clip) are not each other's negatives."""
        rows = text.present & clip.present & text.mask.any(1)
        fingerprint = clip.pooled[rows]
        same_clip = (fingerprint[:, None] == fingerprint[None, :]).all(-1)
        return grounding_loss(
            queries[rows], text.mask[rows], keys[rows], clip.mask[rows], same_clip, self.grounding_temperature
        )

    def read_tracks(self, queries: Tensor, keys: Tensor, cells: Tensor, clip: ModalityFeatures) -> Tensor:
        """(B, L, dim): each of L text tokens' track through the clip's cells (B, T * cells, dim), from the tokens'
        match ``queries`` (B, L, dim) and the cells' match ``keys`` (B, T * cells, dim)."""
        per_frame = clip.cells_per_frame
        if per_frame is None:
            raise ValueError(
                f"TrackFusion: the {self.track!r} tower's tokens are not frames of cells; "
                "give its video tower temporal: space_time (and a spatial_grid)"
            )
        b, n, d = cells.shape
        frames = n // per_frame
        if frames * per_frame != n or frames > self.max_frames:
            raise ValueError(
                f"TrackFusion: {n} tokens are not at most {self.max_frames} frames of {per_frame} cells; "
                "raise max_frames"
            )
        cells = cells.view(b, frames, per_frame, d)
        real = clip.mask.view(b, frames, per_frame)  # padding frames and absent clips: False
        scores = torch.einsum("bld,bnd->bln", queries, keys) / d**0.5
        match = masked_softmax(scores, clip.mask.unsqueeze(1))  # (B, L, T * C): over every frame's cells at once
        place = match.view(b, -1, frames, per_frame).sum(dim=2)  # (B, L, C): where it was, whenever it was there
        readings = torch.einsum("blc,btcr->bltr", place, keep_where(self.reading(cells), real))  # (B, L, T, r)
        readings = nn.functional.pad(readings, (0, 0, 0, self.max_frames - frames))  # later frames: none
        return keep_where(self.track_mlp(readings.flatten(2)), clip.present)  # no clip, no track
