"""Cross-process helpers that contrastive losses use to see the global batch.

Rank and world size are read from ``torch.distributed`` at call time, so one loss object works
unchanged in a single process, under ``torchrun`` or under Accelerate.

Gradient convention: :func:`all_gather_with_grad` sums, in backward, the gradient that every
rank's loss sends to a rank's local slice. When every rank computes a loss whose rank-average is
the global-batch loss, each rank's feature gradient is ``world_size`` times the single-process
gradient of that slice, and DDP's gradient *averaging* then yields exactly the single-process
parameter gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import ProcessGroup


def distributed_rank() -> int | None:
    """This process's rank in the default process group; None when there is none (a single process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return None


def rank_and_world_size(group: ProcessGroup | None = None) -> tuple[int, int]:
    """This process's rank and the world size of ``group``; ``(0, 1)`` when not distributed."""
    if distributed_rank() is None:
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def all_gather_with_grad(x: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping the autograd graph.

    ``x`` is (B, ...) and must have the same shape on every rank (use ``drop_last`` in
    distributed data loaders); the result is (world_size * B, ...) in rank order, so rank r's
    rows start at ``r * B``. Returns ``x`` itself in a single process.
    """
    _, world_size = rank_and_world_size(group)
    if world_size == 1:
        return x
    return _GatherWithGrad.apply(x, group)  # (W * B, ...)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward all-reduces (sums) the gathered gradient and keeps this rank's rows.

    Written on the public collectives because ``torch.distributed.nn.functional.all_gather`` is
    deprecated and, on gloo, emulates its backward with all-to-all. An all-reduce moves ``world_size``
    times more data than a reduce-scatter, which is nothing next to the features' compute and works on
    every backend.
    """

    @staticmethod
    def forward(ctx, x: Tensor, group: ProcessGroup | None) -> Tensor:  # type: ignore[override]
        rank, world_size = rank_and_world_size(group)
        x = x.contiguous()
        # Unequal batches would gather garbage rows and shift every rank's labels: refuse them on every rank.
        sizes = [torch.zeros((), dtype=torch.long, device=x.device) for _ in range(world_size)]
        dist.all_gather(sizes, torch.tensor(x.shape[0], device=x.device), group=group)
        if any(int(s) != x.shape[0] for s in sizes):
            raise ValueError(
                f"all_gather_with_grad: the ranks hold batches of {[int(s) for s in sizes]} rows; every rank "
                "needs the same batch size (drop_last, and no samples dropped as bad in a distributed run)"
            )
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x, group=group)
        ctx.group, ctx.rows = group, slice(rank * x.shape[0], (rank + 1) * x.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd owns ``grad``
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rows], None
