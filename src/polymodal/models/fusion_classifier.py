"""FusionClassifier: per-modality towers -> a fusion module -> a head, over any subset of its modalities.

A modality missing from the whole batch is simply not passed and its tower does not run (so it gets no
gradient); per-sample absence is a mask the fusion module honours.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.models.base import MODELS, ComposedModel, Inputs, Presence, build_encoders
from polymodal.models.config import ComponentConfig, FusionClassifierConfig
from polymodal.modules.fusion import FUSIONS, Fusion
from polymodal.modules.heads import HEADS


def build_fusion(component: ComponentConfig, encoders: Mapping[str, nn.Module], output_dim: int) -> Fusion:
    dims = {m: e.output_dim for m, e in encoders.items()}  # type: ignore[misc]
    return FUSIONS.build(component.name, input_dims=dims, output_dim=output_dim, **component.params)  # type: ignore[no-any-return]


def build_head(component: ComponentConfig, in_dim: int, outputs: int) -> nn.Module:
    return HEADS.get(component.name)(in_dim, outputs, **component.params)  # type: ignore[no-any-return]


class FusionClassifier(ComposedModel):
    def __init__(self, encoders: Mapping[str, nn.Module], fusion: Fusion, head: nn.Module) -> None:
        super().__init__(encoders)
        self.fusion = fusion
        self.head = head

    @property
    def capabilities(self) -> frozenset[str]:  # type: ignore[override]
        """It classifies; over one tower it also embeds, by that tower's features: a voice or face encoder's
        identities beyond the classes it was trained on (search, verification by cosine)."""
        return frozenset({"classify", "embed"}) if len(self.encoders) == 1 else frozenset({"classify"})

    @property
    def embed_dim(self) -> int:
        """The width of :meth:`embed` (its one tower's features)."""
        (encoder,) = self.encoders.values()
        return int(encoder.output_dim)

    def embed(self, modality: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """One modality's inputs -> (B, D) unit vectors of its tower's pooled features."""
        if "embed" not in self.capabilities or modality not in self.encoders:
            raise KeyError(f"this classifier embeds only when it has one tower; it has {self.modalities}")
        return F.normalize(self.encoders[modality].pooled(x, mask), dim=-1)

    @classmethod
    def from_config(cls, config: FusionClassifierConfig) -> FusionClassifier:
        encoders = build_encoders(config.encoders)
        fusion = build_fusion(config.fusion, encoders, config.fusion_dim)
        if fusion.predictions_only and config.head.params.get("hidden"):
            raise ValueError(
                f"fusion {config.fusion.name!r} averages per-modality predictions, so its head must be linear (a "
                f"hidden layer there would act on the average, no longer late fusion): drop head.params.hidden and "
                f"give the predictors a hidden layer with fusion.params.hidden_dim"
            )
        return cls(encoders, fusion, build_head(config.head, fusion.output_dim, config.num_classes))

    def forward(
        self, inputs: Inputs, present: Presence | None = None, auxiliary: dict[str, Tensor] | None = None
    ) -> Tensor:
        """``inputs``: modality -> (x, mask); ``present``: modality -> (B,) bool. Returns logits. A dict given as
        ``auxiliary`` receives the fusion's auxiliary training losses (``FusionOutput.losses``)."""
        if not inputs:
            raise ValueError("FusionClassifier needs at least one modality input")
        fused = self.fusion(*self.encode(inputs, present))
        if auxiliary is not None:
            auxiliary.update(fused.losses)
        return self.head(fused.pooled)  # type: ignore[no-any-return]


MODELS.register("fusion_classifier")(FusionClassifier.from_config)
