"""Task heads: heads on pooled features, and the autoregressive text decoder.
``HEADS`` maps a recipe name to the head class;
``HEADS.build("classification", in_dim=512, num_classes=10)``."""

from torch import nn

from polymodal.modules.heads.classification import ClassificationHead, ItmHead, MLPHead, RegressionHead
from polymodal.modules.heads.decoder import TransformerDecoder
from polymodal.modules.heads.generation import generate, score_sequences
from polymodal.modules.heads.projection import ProjectionHead
from polymodal.registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head")
HEADS.register("classification")(ClassificationHead)
HEADS.register("regression")(RegressionHead)
HEADS.register("projection")(ProjectionHead)
HEADS.register("itm")(ItmHead)
HEADS.register("text_decoder")(TransformerDecoder)

__all__ = [
    "HEADS",
    "ClassificationHead",
    "ItmHead",
    "MLPHead",
    "ProjectionHead",
    "RegressionHead",
    "TransformerDecoder",
    "generate",
    "score_sequences",
]
