"""FusionClassifier: per-modality encoders -> a fusion module -> a head.

Inputs are given per modality; a modality missing from the whole batch is simply not passed
and its encoder does not run (so it gets no gradient), and per-sample absence is a mask the
fusion module honours.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymodal.models.base import ComposedModel
from polymodal.models.config import FusionClassifierConfig
from polymodal.modules.encoders import ENCODERS
from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion import FUSIONS
from polymodal.modules.fusion.base import Fusion
from polymodal.modules.heads import ClassificationHead

# What a caller passes for one modality: the encoder input and its optional padding mask.
ModalityInput = tuple[Tensor, Tensor | None]


def encode_modalities(
    encoders: nn.ModuleDict, inputs: dict[str, ModalityInput], present: dict[str, Tensor] | None
) -> tuple[dict[str, EncoderOutput], dict[str, Tensor]]:
    """Run the encoder of each given modality; fill in all-True presence where not given."""
    features: dict[str, EncoderOutput] = {}
    masks: dict[str, Tensor] = {}
    for name, (x, mask) in inputs.items():
        if name not in encoders:
            raise KeyError(f"no encoder for modality {name!r}; this model has {sorted(encoders)}")
        features[name] = encoders[name](x, mask)
        given = None if present is None else present.get(name)
        masks[name] = given if given is not None else torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return features, masks


class FusionClassifier(ComposedModel):
    config_class = FusionClassifierConfig

    def __init__(self, encoders: dict[str, nn.Module], fusion: Fusion, head: nn.Module) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.head = head

    @classmethod
    def from_config(cls, config: FusionClassifierConfig) -> FusionClassifier:
        encoders = {m: ENCODERS.build(c.name, **c.params) for m, c in config.encoders.items()}
        fusion = FUSIONS.build(
            config.fusion.name,
            input_dims={m: e.output_dim for m, e in encoders.items()},
            output_dim=config.fusion_dim,
            **config.fusion.params,
        )
        head = ClassificationHead(fusion.output_dim, config.num_classes, hidden=config.head_hidden, dropout=config.dropout)
        model = cls(encoders, fusion, head)
        model.config = config
        return model

    def forward(self, inputs: dict[str, ModalityInput], present: dict[str, Tensor] | None = None) -> Tensor:
        """``inputs``: modality -> (x, mask); ``present``: modality -> (B,) bool. Returns logits."""
        if not inputs:
            raise ValueError("FusionClassifier needs at least one modality input")
        features, masks = encode_modalities(self.encoders, inputs, present)
        return self.head(self.fusion(features, masks).pooled)
