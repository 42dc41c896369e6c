"""Deterministic batches, addressable by step.

Batch ``k`` of a run is a pure function of (seed, k): epoch ``k // batches_per_epoch`` uses
a permutation seeded by (seed, epoch). A resumed run therefore continues with exactly the
batch an uninterrupted run would have seen next, with no data-loader state to save. Under
``world_size`` processes each global batch is split round-robin, so every process sees a
disjoint shard and together they see the same global batch as one process would.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        start_batch: int = 0,
        num_batches: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        with_epoch: bool = False,
    ) -> None:
        """``with_epoch``: yield ``(epoch, index)`` pairs, for datasets whose random draws
        (caption choice, augmentation) depend on the epoch; passing the epoch with each index
        stays exact under DataLoader workers' prefetching, unlike a ``set_epoch`` call."""
        if num_samples < batch_size:
            raise ValueError(f"dataset has {num_samples} samples, fewer than one batch of {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start_batch = start_batch
        self.num_batches = num_batches
        self.rank = rank
        self.world_size = world_size
        self.with_epoch = with_epoch
        # The last incomplete batch of each epoch is dropped: every step has a full batch.
        self.batches_per_epoch = num_samples // batch_size
        self._perm_cache: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm_cache = (epoch, torch.randperm(self.num_samples, generator=g))
        return self._perm_cache[1]

    def global_batch(self, k: int) -> list[int]:
        epoch, index = divmod(k, self.batches_per_epoch)
        perm = self._permutation(epoch)
        return perm[index * self.batch_size : (index + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list]:  # list[int] or list[tuple[int, int]]
        k = self.start_batch
        while self.num_batches is None or k < self.start_batch + self.num_batches:
            shard = self.global_batch(k)[self.rank :: self.world_size]
            if self.with_epoch:
                epoch = k // self.batches_per_epoch
                yield [(epoch, i) for i in shard]
            else:
                yield shard
            k += 1

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an endless StepBatchSampler has no length")
        return self.num_batches
