"""Training objectives as modules. Models return features/logits; losses own the rest,
including cross-process gathering for the contrastive ones.

``LOSSES`` maps a recipe name to the loss class; ``LOSSES.build("clip", local_loss=True)``.
"""

from torch import nn

from polymodal.modules.losses.adversarial import hinge_discriminator_loss, hinge_generator_loss
from polymodal.modules.losses.basic import BCELoss, CrossEntropyLoss, MSELoss, masked_sample_mean, token_cross_entropy
from polymodal.modules.losses.caption import CaptionLoss
from polymodal.modules.losses.contrastive import ClipLoss, SigLipLoss, learned_scale
from polymodal.modules.losses.distributed import all_gather_with_grad, rank_and_world_size
from polymodal.modules.losses.masked_lm import MaskedLMLoss, mask_tokens
from polymodal.modules.losses.matching import ItmLoss, sample_hard_negatives
from polymodal.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss")
LOSSES.register("clip")(ClipLoss)
LOSSES.register("siglip")(SigLipLoss)
LOSSES.register("itm")(ItmLoss)
LOSSES.register("masked_lm")(MaskedLMLoss)
LOSSES.register("caption")(CaptionLoss)
LOSSES.register("cross_entropy")(CrossEntropyLoss)
LOSSES.register("bce")(BCELoss)
LOSSES.register("mse")(MSELoss)

__all__ = [
    "learned_scale",
    "LOSSES",
    "BCELoss",
    "CaptionLoss",
    "ClipLoss",
    "CrossEntropyLoss",
    "ItmLoss",
    "MSELoss",
    "MaskedLMLoss",
    "SigLipLoss",
    "all_gather_with_grad",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "mask_tokens",
    "masked_sample_mean",
    "rank_and_world_size",
    "sample_hard_negatives",
    "token_cross_entropy",
]
