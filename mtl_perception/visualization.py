"""Pictures people look at: palette masks and overlays (mask blended + boxes + labels + scores)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# Colours (RGB) of the paper's 11 segmentation classes + void, from the Cityscapes palette of
# each class's main label; void is black.
SEGMENTATION_PALETTE = np.array(
    [
        (0, 0, 0),  # void
        (70, 130, 180),  # sky
        (70, 70, 70),  # building
        (128, 64, 128),  # road
        (244, 35, 232),  # sidewalk
        (190, 153, 153),  # fence
        (107, 142, 35),  # vegetation
        (153, 153, 153),  # pole
        (0, 0, 142),  # car/truck/bus
        (220, 220, 0),  # traffic sign
        (220, 20, 60),  # pedestrian
        (255, 0, 0),  # rider/bicycle/motorcycle
    ],
    np.uint8,
)
DETECTION_COLOURS = np.array([(0, 255, 255), (255, 128, 0), (255, 0, 255), (0, 255, 0)], np.uint8)


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB colours; the paper's classes first, then generated ones."""
    if num_classes <= len(SEGMENTATION_PALETTE):
        return SEGMENTATION_PALETTE[:num_classes]
    rng = np.random.default_rng(0)
    extra = rng.integers(0, 256, (num_classes - len(SEGMENTATION_PALETTE), 3), dtype=np.uint8)
    return np.concatenate([SEGMENTATION_PALETTE, extra])


def colorize(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB palette image (ids beyond the palette: black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:num_classes] = palette(num_classes)
    return lut[mask]


def draw_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    num_seg_classes: int,
    alpha: float = 0.45,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB image with the mask blended in and labelled boxes drawn (RGB out)."""
    blended = cv2.addWeighted(image, 1 - alpha, colorize(mask, num_seg_classes), alpha, 0)
    thickness = max(1, round(image.shape[0] / 400))
    font_scale = max(0.4, image.shape[0] / 1400)
    for box, cls, score in zip(
        np.asarray(boxes), np.asarray(classes), np.asarray(scores), strict=True
    ):
        colour = tuple(int(c) for c in DETECTION_COLOURS[int(cls) % len(DETECTION_COLOURS)])
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        cv2.rectangle(blended, (x0, y0), (x1, y1), colour, thickness)
        name = class_names[int(cls)] if int(cls) < len(class_names) else str(int(cls))
        label = f"{name} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = max(0, y0 - th - base - 2)
        cv2.rectangle(blended, (x0, top), (x0 + tw + 2, top + th + base + 2), colour, -1)
        cv2.putText(
            blended,
            label,
            (x0 + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            thickness,
            cv2.LINE_AA,
        )
    return blended
