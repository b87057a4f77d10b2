"""One training or evaluation sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    """An image with its labels, all at the same resolution.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        segmentation: (H, W) uint8 class ids (the class map's; void included).
        instances: (H, W) int32 Cityscapes instance ids (label_id * 1000 + k for objects).
        boxes: (N, 4) float32 xyxy, pixel edges.
        classes: (N,) int64 detection class ids.
        instance_values: (N,) int64 the instance id each box came from.
        name: the image's file stem, e.g. ``aachen_000000_000019``.
    """

    image: np.ndarray
    segmentation: np.ndarray
    instances: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    instance_values: np.ndarray
    name: str = ""
