"""Heads: heads on pooled features, and the autoregressive text decoders.

``HEADS`` maps a recipe name to the head class;
``HEADS.build("classification", in_dim=512, num_classes=10)``.
``DECODERS`` maps a name to a text decoder class (every one a ``TextDecoder``, so ``generate``
drives them all); ``DECODERS.build("lstm", memory_dim=..., vocab_size=..., max_length=...,
pad_id=..., bos_id=..., eos_id=..., width=256, depth=1)``.
"""

from torch import nn

from polymodal.modules.heads.classification import ClassificationHead, MLPHead, RegressionHead
from polymodal.modules.heads.decoder import TransformerDecoder
from polymodal.modules.heads.decoders import TextDecoder
from polymodal.modules.heads.generation import generate, score_sequences
from polymodal.modules.heads.lstm_decoder import LSTMDecoder
from polymodal.modules.heads.projection import ProjectionHead
from polymodal.registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head")
HEADS.register("classification")(ClassificationHead)
HEADS.register("regression")(RegressionHead)
HEADS.register("projection")(ProjectionHead)

DECODERS: Registry[type[TextDecoder]] = Registry("decoder")
DECODERS.register("transformer")(TransformerDecoder)
DECODERS.register("lstm")(LSTMDecoder)

__all__ = [
    "DECODERS",
    "HEADS",
    "ClassificationHead",
    "LSTMDecoder",
    "MLPHead",
    "ProjectionHead",
    "RegressionHead",
    "TextDecoder",
    "TransformerDecoder",
    "generate",
    "score_sequences",
]
