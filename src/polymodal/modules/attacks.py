"""Adversarial examples: images moved, within a small budget of pixel change, in the direction that most raises a
loss (projected gradient descent on the L-inf ball, Madry et al. 2018), for adversarial training and for measuring
robustness."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

DEFAULT_STEP_SHARE = 2.5  # step size = this * epsilon / steps: the ball's edge is reachable from any start


def pgd_images(
    loss_of: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    epsilon: float,
    steps: int,
    mean: Sequence[float],
    std: Sequence[float],
    step_size: float | None = None,
    random_start: bool = True,
    rows: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``images`` (B, C, H, W) or (B, T, C, H, W), normalised as ``(pixel - mean) / std`` with pixels in [0, 1],
    moved by ``steps`` signed-gradient steps of ``loss_of(images)`` (a scalar), each pixel at most ``epsilon``
    from where it was and inside [0, 1]. ``rows`` (B,) bool: only these rows move (the others are absent images).
    Returns the moved images, detached; gradients reach only them (no parameter's ``.grad`` changes)."""
    if not epsilon > 0 or steps < 1:
        raise ValueError(f"an attack needs epsilon > 0 and steps >= 1, got epsilon {epsilon}, steps {steps}")
    shape = (1,) * (images.dim() - 3) + (-1, 1, 1)  # the channel axis is the third from the end
    scale = 1 / torch.tensor(std, dtype=torch.float32, device=images.device).view(shape)
    centre = torch.tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    low, high = (0 - centre) * scale, (1 - centre) * scale  # the pixel range [0, 1], normalised
    radius = epsilon * scale
    step = (step_size if step_size is not None else DEFAULT_STEP_SHARE * epsilon / steps) * scale
    start = images.detach().float()
    keep = None if rows is None else rows.view((-1,) + (1,) * (images.dim() - 1)).to(start.dtype)
    if random_start:
        noise = torch.rand(start.shape, generator=generator, device=start.device if generator is None else "cpu")
        delta = (noise.to(start.device) * 2 - 1) * radius
    else:
        delta = torch.zeros_like(start)
    delta = _project(start, delta, radius, low, high, keep)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_of((start + delta).to(images.dtype))
        (grad,) = torch.autograd.grad(loss, [delta], allow_unused=True)
        if grad is None:
            raise ValueError(
                "the loss does not depend on the images (nothing in the model reads them): there is nothing to attack"
            )
        delta = _project(start, delta.detach() + step * grad.sign(), radius, low, high, keep)
    return (start + delta).to(images.dtype).detach()


def _project(start: Tensor, delta: Tensor, radius: Tensor, low: Tensor, high: Tensor, keep: Tensor | None) -> Tensor:
    """``delta`` back inside the ball of ``radius`` and the pixel range; zero on rows not kept."""
    delta = torch.maximum(torch.minimum(delta, radius), -radius)
    delta = torch.maximum(torch.minimum(start + delta, high), low) - start
    return delta if keep is None else delta * keep
