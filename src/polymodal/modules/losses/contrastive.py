"""Contrastive image-text losses: CLIP's symmetric InfoNCE and SigLIP's pairwise sigmoid loss.

Both take (B, D) image and text features where row i of each is a matching pair, L2-normalise
them inside (``normalize=True``; harmless for features that are already unit length), own their
learnable temperature, and gather features from every rank when ``torch.distributed`` is
initialised with more than one process (see :mod:`.distributed` for the gradient convention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ProcessGroup

from polymodal.modules.losses.distributed import all_gather_with_grad, rank_and_world_size


def _prepare_pair(image_features: Tensor, text_features: Tensor, normalize: bool) -> tuple[Tensor, Tensor]:
    """Check that the two feature matrices pair up row by row, and normalise them if asked."""
    if image_features.dim() != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            "contrastive loss expects image and text features of the same shape (B, D); got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if normalize:
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
    return image_features, text_features


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over image/text pairs, as in CLIP.

    ``forward(image_features, text_features) -> loss``: both (B, D), row i of each a positive
    pair. Logits are ``scale * image @ text.T`` with ``scale = exp(logit_scale)``, a learnable
    log-scale initialised to ``log(1 / init_temperature)`` and clamped in forward to at most
    ``max_scale`` (CLIP's 100). The loss is the mean of image->text and text->image cross
    entropy, with optional label smoothing.

    Across processes (``gather=True`` and world size > 1) features are all-gathered with
    gradient. By default every rank computes the loss over the whole global batch, so the value
    equals the single-process loss on the concatenated batch. With ``local_loss=True`` each rank
    only scores its own B rows against all W*B columns (labels offset by ``rank * B``), which
    saves the (W*B)^2 logits matrix; each rank then holds a different value whose average over
    ranks is the global loss, and the gradients are identical to the default mode.

    Hard negatives (NegCLIP): ``negative_text_features`` (B, D) are extra captions, e.g. each
    caption with one word swapped (:mod:`polymodal.data.hard_negatives`). They join the
    image->text candidates of every image (gathered like the texts); ``negative_present`` (B,)
    marks the rows that hold one, the others are left out. Text->image is unchanged: a
    negative caption has no image to find.
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        max_scale: float = 100.0,
        learn_temperature: bool = True,
        label_smoothing: float = 0.0,
        local_loss: bool = False,
        normalize: bool = True,
        gather: bool = True,
        group: ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        if init_temperature <= 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)), requires_grad=learn_temperature)
        self.max_scale = max_scale
        self.label_smoothing = label_smoothing
        self.local_loss = local_loss
        self.normalize = normalize
        self.gather = gather
        self.group = group

    @property
    def scale(self) -> Tensor:
        """The multiplier applied to cosine similarities, clamped as CLIP does.

        Above ``max_scale`` the clamp passes no gradient to ``logit_scale``, which keeps the
        temperature from collapsing (CLIP clamps the parameter itself after each step).
        """
        return self.logit_scale.exp().clamp(max=self.max_scale)

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        negative_text_features: Tensor | None = None,
        negative_present: Tensor | None = None,
    ) -> Tensor:
        image, text = _prepare_pair(image_features, text_features, self.normalize)
        rank, world_size = rank_and_world_size(self.group) if self.gather else (0, 1)
        all_image = all_gather_with_grad(image, self.group) if world_size > 1 else image  # (N, D)
        all_text = all_gather_with_grad(text, self.group) if world_size > 1 else text  # (N, D)
        scale = self.scale
        if negative_text_features is not None:
            negatives = F.normalize(negative_text_features, dim=-1) if self.normalize else negative_text_features
            present = (
                negative_present.bool()
                if negative_present is not None
                else torch.ones(negatives.size(0), dtype=torch.bool, device=negatives.device)
            )
            if world_size > 1:
                negatives = all_gather_with_grad(negatives, self.group)  # (N, D)
                present = all_gather_with_grad(present.to(torch.uint8), self.group).bool()  # (N,)

        if self.local_loss:
            logits_i2t = scale * image @ all_text.T  # (B, N)
            logits_t2i = scale * text @ all_image.T  # (B, N)
            batch = image.size(0)
            labels = torch.arange(batch, device=image.device) + rank * batch
        else:
            logits_i2t = scale * all_image @ all_text.T  # (N, N)
            logits_t2i = logits_i2t.T
            labels = torch.arange(all_image.size(0), device=image.device)

        if negative_text_features is not None:
            rows = image if self.local_loss else all_image
            # Absent rows are dropped, not masked to -inf, which label smoothing would turn into inf.
            extra = scale * rows @ negatives[present].T  # (B or N, N_neg)
            logits_i2t = torch.cat([logits_i2t, extra], dim=1)
        loss_i2t = F.cross_entropy(logits_i2t, labels, label_smoothing=self.label_smoothing)
        loss_t2i = F.cross_entropy(logits_t2i, labels, label_smoothing=self.label_smoothing)
        return (loss_i2t + loss_t2i) / 2


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss, as in SigLIP.

    ``forward(image_features, text_features) -> loss``: both (B, D), row i of each a positive
    pair. Every image/text pair is an independent binary problem with logit
    ``exp(logit_scale) * <image_i, text_j> + logit_bias`` and label +1 on the diagonal, -1
    elsewhere; the loss is ``-sum(log_sigmoid(label * logit)) / B``. ``logit_scale`` starts at
    ``log(init_scale)`` (10) and ``logit_bias`` at ``init_bias`` (-10), the SigLIP values that
    offset the heavy imbalance of negatives at the start of training.

    Across processes this is the simple all-gather variant (SigLIP's paper and open_clip pass
    text chunks around a ring instead, to save memory): each rank scores its B images against
    the gathered W*B texts, positives at columns ``rank * B + i``. Each rank's value is its share
    of the global loss scaled by W, so the average over ranks equals the single-process loss on
    the concatenated batch, and DDP-averaged gradients equal the single-process gradients.
    """

    def __init__(
        self,
        init_scale: float = 10.0,
        init_bias: float = -10.0,
        learn_temperature: bool = True,
        normalize: bool = True,
        gather: bool = True,
        group: ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)), requires_grad=learn_temperature)
        self.logit_bias = nn.Parameter(torch.tensor(float(init_bias)), requires_grad=learn_temperature)
        self.normalize = normalize
        self.gather = gather
        self.group = group

    def forward(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        image, text = _prepare_pair(image_features, text_features, self.normalize)
        rank, world_size = rank_and_world_size(self.group) if self.gather else (0, 1)
        all_text = all_gather_with_grad(text, self.group) if world_size > 1 else text  # (N, D)

        logits = self.logit_scale.exp() * image @ all_text.T + self.logit_bias  # (B, N)
        batch = image.size(0)
        labels = -torch.ones_like(logits)
        rows = torch.arange(batch, device=image.device)
        labels[rows, rows + rank * batch] = 1.0
        return -F.logsigmoid(labels * logits).sum() / batch


def learned_scale(loss: nn.Module) -> float:
    """The multiplier of cosine similarities a contrastive loss learned (``ClipLoss.scale``, SigLIP's
    ``exp(logit_scale)``): what zero-shot probabilities need as their temperature."""
    scale = getattr(loss, "scale", None)
    if scale is None and hasattr(loss, "logit_scale"):
        scale = loss.logit_scale.exp()
    if not isinstance(scale, Tensor):
        raise TypeError(f"{type(loss).__name__} learns no temperature (no scale or logit_scale)")
    return float(scale.detach())
