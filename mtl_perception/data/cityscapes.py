"""Reader for datasets in the official Cityscapes layout.

    ROOT/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png

Every image must have both label partners of the same size; a dataset with any missing is
refused as a whole (listing what is missing) rather than silently shrunk. labelIds may be 8 or
16 bit but hold ids 0..255; instanceIds are 16 bit (label_id * 1000 + k), and a value of no
known label gives no box. A bad file is refused by name when its sample is read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..detection.boxes import tight_boxes
from .labels import ClassMap
from .quiet_decode import imdecode_quietly
from .sample import Sample

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
PNG_MAGIC = b"\x89PNG"  # the first bytes of every PNG file

Transform = Callable[[Sample, np.random.Generator], Sample]


def read_png(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Reads a PNG file.

    Raises:
        ValueError: the file is missing, a folder, unreadable, not a PNG or not decodable
            (names the file).
    """
    if path.is_dir():
        raise ValueError(f"unreadable image (a folder, not a PNG file): {path}")
    if not path.is_file():
        raise ValueError(f"missing file: {path}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"unreadable image ({error.strerror or error}): {path}") from error
    if not data.startswith(PNG_MAGIC):
        raise ValueError(
            f"unreadable image (not a PNG file; the Cityscapes layout holds PNGs only): {path}"
        )
    array, printed = imdecode_quietly(data, flags)
    if array is None:
        why = f"not a decodable PNG: {printed}" if printed else "not a decodable PNG, truncated?"
        raise ValueError(f"unreadable image ({why}): {path}")
    return array


def read_label_ids(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A labelIds PNG: (H, W) uint8 Cityscapes label ids.

    Args:
        path: the file.
        shape: (H, W) of its image.

    Raises:
        ValueError: not single-channel, another size than the image, or a value outside 0..255
            (names the file and the first such value).
    """
    labels = _read_label_png(path, shape, "label image")
    if labels.dtype != np.uint8:  # a 16-bit PNG
        rows, columns = np.nonzero(labels > 255)
        if rows.size:
            raise ValueError(
                f"label image {path} holds label id {labels[rows[0], columns[0]]} at row "
                f"{rows[0]}, column {columns[0]} (pixels above 255: {rows.size}): Cityscapes "
                "label ids are 0..255 (an instanceIds file in its place?)"
            )
        labels = labels.astype(np.uint8)
    return labels


def read_instance_ids(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """An instanceIds PNG (8 or 16 bit; label_id * 1000 + k): (H, W) int32.

    Raises:
        ValueError: not single-channel or another size than the image (names the file).
    """
    return _read_label_png(path, shape, "instance image").astype(np.int32)


def _read_label_png(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    array = read_png(path)
    if array.ndim != 2:
        raise ValueError(
            f"{what} {path} has {array.shape[2]} channels: labels must be single-channel"
        )
    if array.shape != tuple(shape):
        raise ValueError(
            f"{what} {path} is {array.shape[1]}x{array.shape[0]} but its image is "
            f"{shape[1]}x{shape[0]}: sizes must match"
        )
    return array


def label_paths(image_path: Path, root: Path, split: str) -> tuple[Path, Path]:
    """The labelIds and instanceIds files that belong to an image."""
    stem = image_path.name.removesuffix(IMAGE_SUFFIX)
    folder = root / "gtFine" / split / image_path.parent.name
    return folder / f"{stem}{LABEL_SUFFIX}", folder / f"{stem}{INSTANCE_SUFFIX}"


class CityscapesDataset(Dataset):
    """Images with segmentation masks and detection boxes, in the class map's ids.

    Args:
        root: dataset root (holding ``leftImg8bit/`` and ``gtFine/``).
        split: ``train``, ``val`` or ``test`` (any folder name).
        class_map: Cityscapes label ids -> the network's classes.
        transform: augmentation or resizing, called with a per-sample random generator.

    Raises:
        ValueError: no images found (names the pattern looked for), or images without label
            partners (lists them).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        class_map: ClassMap,
        transform: Transform | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.class_map = class_map
        self.transform = transform
        pattern = self.root / "leftImg8bit" / split / "*" / f"*{IMAGE_SUFFIX}"
        if not self.root.exists():
            raise ValueError(f"dataset root {self.root} does not exist")
        if not self.root.is_dir():
            raise ValueError(f"dataset root {self.root} is a file, not a folder")
        self.images = sorted((self.root / "leftImg8bit" / split).glob(f"*/*{IMAGE_SUFFIX}"))
        if not self.images:
            raise ValueError(
                f"no images in {self.root} for split '{split}': looked for {pattern} "
                "(the Cityscapes layout: leftImg8bit/{split}/{city}/*_leftImg8bit.png)"
            )
        missing = [
            str(path)
            for image in self.images
            for path in label_paths(image, self.root, split)
            if not path.is_file()
        ]
        if missing:
            shown = "\n  ".join(missing[:10])
            more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise ValueError(
                f"{len(missing)} label files missing in {self.root / 'gtFine' / split}:\n"
                f"  {shown}{more}"
            )

    def __len__(self) -> int:
        return len(self.images)

    def names(self) -> list[str]:
        return [p.name.removesuffix(IMAGE_SUFFIX) for p in self.images]

    def load(self, index: int) -> Sample:
        """The sample at its original resolution, without transform.

        Raises:
            ValueError: a file that is missing, unreadable, not a PNG, not single-channel (labels),
                of another size than its image, or a labelIds value above 255 (names the file).
        """
        image_path = self.images[index]
        label_path, instance_path = label_paths(image_path, self.root, self.split)
        image = cv2.cvtColor(read_png(image_path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        label_ids = read_label_ids(label_path, image.shape[:2])
        instances = read_instance_ids(instance_path, image.shape[:2])
        values, boxes = tight_boxes(instances)
        classes = self.class_map.instance_classes(values)
        keep = classes >= 0
        return Sample(
            image=image,
            segmentation=self.class_map.segmentation(label_ids),
            instances=instances,
            boxes=boxes[keep],
            classes=classes[keep],
            instance_values=values[keep],
            name=image_path.name.removesuffix(IMAGE_SUFFIX),
        )

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        """The transformed sample at ``key``: an index, or (index, augmentation seed).

        With a plain index the augmentation seed is drawn from torch's RNG (seeded per
        DataLoader worker); the training sampler passes explicit seeds for exact resumption.
        """
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample = self.load(index)
        if self.transform is not None:
            if seed is None:
                seed = int(torch.randint(0, 2**31 - 1, ()).item())
            sample = self.transform(sample, np.random.default_rng(seed))
        return sample
