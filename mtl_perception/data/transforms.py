"""The paper's augmentation (section 4.1) and the validation resize.

Training: resize to 768x384, random scale in [1, 1.5], random 768x384 crop, random horizontal
flip; bilinear interpolation for images, nearest for labels. Boxes move with the image, are
clipped to the crop, and are dropped when their centre falls outside it. The two scalings are
applied as one resize (their product), so the image is interpolated once; the geometry is the
same as resizing twice.

Validation: resize to 768x384 only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from .sample import Sample

# Paper section 4.1.
TRAIN_HEIGHT = 384
TRAIN_WIDTH = 768
SCALE_RANGE = (1.0, 1.5)
FLIP_PROBABILITY = 0.5


def _resize(sample: Sample, width: int, height: int) -> Sample:
    """Resizes image (bilinear) and labels (nearest, pixel-centre aligned); scales the boxes."""
    old_h, old_w = sample.segmentation.shape
    scale = np.array([width / old_w, height / old_h] * 2, np.float32)
    return replace(
        sample,
        image=cv2.resize(sample.image, (width, height), interpolation=cv2.INTER_LINEAR),
        segmentation=cv2.resize(
            sample.segmentation, (width, height), interpolation=cv2.INTER_NEAREST_EXACT
        ),
        instances=cv2.resize(
            sample.instances, (width, height), interpolation=cv2.INTER_NEAREST_EXACT
        ),
        boxes=sample.boxes * scale,
    )


def _filter_boxes(sample: Sample, keep: np.ndarray) -> Sample:
    return replace(
        sample,
        boxes=sample.boxes[keep],
        classes=sample.classes[keep],
        instance_values=sample.instance_values[keep],
    )


def _drop_small(sample: Sample, min_size: float) -> Sample:
    wh = sample.boxes[:, 2:] - sample.boxes[:, :2]
    return _filter_boxes(sample, (wh >= min_size).all(axis=1))


@dataclass(frozen=True)
class ValidationResize:
    """Resize to the network input; boxes scaled; boxes smaller than ``min_box_size`` dropped."""

    height: int = TRAIN_HEIGHT
    width: int = TRAIN_WIDTH
    min_box_size: float = 0.0

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        return _drop_small(_resize(sample, self.width, self.height), self.min_box_size)


@dataclass(frozen=True)
class TrainAugmentation:
    """Random scale, crop and flip (paper section 4.1). Called with a seeded generator."""

    height: int = TRAIN_HEIGHT
    width: int = TRAIN_WIDTH
    scale_range: tuple[float, float] = SCALE_RANGE
    flip_probability: float = FLIP_PROBABILITY
    min_box_size: float = 0.0

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        scale = rng.uniform(*self.scale_range)
        scaled_w = max(self.width, round(self.width * scale))
        scaled_h = max(self.height, round(self.height * scale))
        sample = _resize(sample, scaled_w, scaled_h)

        x0 = int(rng.integers(0, scaled_w - self.width + 1))
        y0 = int(rng.integers(0, scaled_h - self.height + 1))
        window = (slice(y0, y0 + self.height), slice(x0, x0 + self.width))
        boxes = sample.boxes - np.array([x0, y0, x0, y0], np.float32)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (
            (centres[:, 0] >= 0)
            & (centres[:, 0] < self.width)
            & (centres[:, 1] >= 0)
            & (centres[:, 1] < self.height)
        )
        boxes = boxes.clip(0, np.array([self.width, self.height] * 2, np.float32))
        sample = replace(
            sample,
            image=sample.image[window],
            segmentation=sample.segmentation[window],
            instances=sample.instances[window],
            boxes=boxes,
        )
        sample = _filter_boxes(sample, inside)

        if rng.random() < self.flip_probability:
            flipped = sample.boxes.copy()
            flipped[:, 0] = self.width - sample.boxes[:, 2]
            flipped[:, 2] = self.width - sample.boxes[:, 0]
            sample = replace(
                sample,
                image=sample.image[:, ::-1],
                segmentation=sample.segmentation[:, ::-1],
                instances=sample.instances[:, ::-1],
                boxes=flipped,
            )
        sample = replace(
            sample,
            image=np.ascontiguousarray(sample.image),
            segmentation=np.ascontiguousarray(sample.segmentation),
            instances=np.ascontiguousarray(sample.instances),
        )
        return _drop_small(sample, self.min_box_size)
