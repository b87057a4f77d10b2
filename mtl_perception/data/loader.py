"""Batching: a collate for variable box counts and a deterministically seeded DataLoader."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .sample import Sample


@dataclass
class Batch:
    """Samples stacked for the network; boxes padded to the largest count.

    Attributes:
        images: (B, 3, H, W) uint8 RGB (normalised on the device, see model.normalize_images).
        segmentation: (B, H, W) int64 class ids.
        boxes: (B, N, 4) float32 xyxy pixels, zero rows as padding.
        classes: (B, N) int64 detection classes, -1 as padding.
        names: image names.
    """

    images: torch.Tensor
    segmentation: torch.Tensor
    boxes: torch.Tensor
    classes: torch.Tensor
    names: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            move(self.images),
            move(self.segmentation),
            move(self.boxes),
            move(self.classes),
            self.names,
        )

    def pin_memory(self) -> Batch:
        return Batch(
            self.images.pin_memory(),
            self.segmentation.pin_memory(),
            self.boxes.pin_memory(),
            self.classes.pin_memory(),
            self.names,
        )


@dataclass(frozen=True)
class LoadFailure:
    """A sample that could not be read, carried out of a DataLoader worker as a value so the
    main process can report its one-line message (a worker's exception would arrive wrapped
    in the worker's traceback)."""

    message: str


class _Reporting(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        try:
            return self.dataset[key]
        except ValueError as error:  # bad data: the dataset's message names the file
            return LoadFailure(str(error))


def reporting(dataset: Dataset) -> Dataset:
    """``dataset`` whose bad samples come back as :class:`LoadFailure` instead of raising."""
    return _Reporting(dataset)


def collate(samples: list[Sample | LoadFailure]) -> Batch | LoadFailure:
    """Stacks samples of one size; pads boxes with zeros and classes with -1. A batch holding a
    :class:`LoadFailure` is that failure."""
    for sample in samples:
        if isinstance(sample, LoadFailure):
            return sample
    sizes = {s.image.shape for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"samples of one batch must share a size, got {sorted(sizes)}")
    most = max((len(s.boxes) for s in samples), default=0)
    boxes = torch.zeros(len(samples), most, 4)
    classes = torch.full((len(samples), most), -1, dtype=torch.long)
    for i, sample in enumerate(samples):
        boxes[i, : len(sample.boxes)] = torch.from_numpy(sample.boxes)
        classes[i, : len(sample.classes)] = torch.from_numpy(sample.classes)
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)
    segmentation = torch.from_numpy(np.stack([s.segmentation for s in samples])).long()
    return Batch(images.contiguous(), segmentation, boxes, classes, [s.name for s in samples])


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # set per worker by the DataLoader from its generator
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    workers: int = 2,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose order and augmentation depend only on ``seed`` (and the epoch)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )
