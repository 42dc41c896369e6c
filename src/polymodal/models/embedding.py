"""EmbeddingModel: a tower per modality projected into one space (CLIP, SigLIP, LiT; ImageBind with N towers).

The temperature lives in the loss, not here: the model only returns L2-normalised features.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.models.base import MODELS, ComposedModel, Inputs, build_encoders, modality_input
from polymodal.models.config import EmbeddingConfig
from polymodal.modules.encoders import Encoder
from polymodal.modules.heads import ProjectionHead


class EmbeddingModel(ComposedModel):
    capabilities = frozenset({"embed"})

    def __init__(self, encoders: Mapping[str, Encoder], embed_dim: int = 256, projection: str = "linear") -> None:
        super().__init__(encoders)
        if len(self.encoders) < 2:
            raise ValueError(f"an embedding model binds at least two modalities, got {self.modalities}")
        self.projections = nn.ModuleDict(
            {m: ProjectionHead(e.output_dim, embed_dim, kind=projection) for m, e in encoders.items()}  # type: ignore[arg-type]
        )
        self.embed_dim = embed_dim

    @classmethod
    def from_config(cls, config: EmbeddingConfig) -> EmbeddingModel:
        return cls(build_encoders(config.encoders), embed_dim=config.embed_dim, projection=config.projection)

    def embed(self, modality: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """One modality's inputs -> (B, embed_dim) unit vectors."""
        if modality not in self.encoders:
            raise KeyError(f"this embedding model has no {modality!r} tower; it has {self.modalities}")
        return F.normalize(self.projections[modality](self.encoders[modality].pooled(x, mask)), dim=-1)

    def forward(self, inputs: Inputs) -> dict[str, Tensor]:
        """Modality -> (B, embed_dim) unit vectors, for each modality given."""
        return {modality: self.embed(modality, *modality_input(modality, value)) for modality, value in inputs.items()}


MODELS.register("embedding")(EmbeddingModel.from_config)
