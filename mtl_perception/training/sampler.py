"""The training data stream as a pure function of (seed, position), for exact resumption.

Sample positions 0, 1, 2, ... run through one random permutation of the dataset per epoch.
Iteration ``i`` of a run with ``world_size`` processes and per-process batch ``B`` reads
positions ``[i * W * B, (i + 1) * W * B)``; process ``r`` takes its ``B`` of them. Each position
also fixes its augmentation seed. Resuming at iteration ``i`` needs nothing but ``i``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def _mix(*values: int) -> int:
    """A well-spread 63-bit seed from integers (SplitMix64 finaliser)."""
    x = 0
    for value in values:
        x = (x ^ (value + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class IterationSampler(Sampler):
    """Yields, per iteration from ``start_iteration`` on, this process's batch as a list of
    (dataset index, augmentation seed) pairs. Infinite."""

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int,
        start_iteration: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.start_iteration = start_iteration
        self.rank = rank
        self.world_size = world_size
        self._epoch = -1
        self._permutation = torch.arange(0)

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(_mix(self.seed, epoch))
            self._permutation = torch.randperm(self.size, generator=generator)
            self._epoch = epoch
        return int(self._permutation[offset])

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        first = (iteration * self.world_size + self.rank) * self.batch_size
        return [
            (self._index(p), _mix(self.seed, p, 1)) for p in range(first, first + self.batch_size)
        ]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        iteration = self.start_iteration
        while True:
            yield self.batch(iteration)
            iteration += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs it for len(loader)
        raise TypeError("IterationSampler is infinite")
