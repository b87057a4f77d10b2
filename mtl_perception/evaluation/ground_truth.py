"""Which ground-truth boxes an evaluation counts: the one rule for ``mtl-eval`` and bag scoring.

Training drops boxes smaller than the class map's ``min_box_size`` (network-input pixels) after
resizing to the network input; an evaluation must leave out the same boxes, so a box counts when
both its sides, scaled from the image to the network input the model runs at, reach that size.
Bags store every box; the scorer applies this rule with the model it scores.
"""

from __future__ import annotations

import numpy as np


def counted_boxes(
    boxes: np.ndarray,
    classes: np.ndarray,
    image_width: int,
    input_width: int,
    min_box_size: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The ground truth an evaluation scores.

    Args:
        boxes: (N, 4) xyxy boxes in image pixels.
        classes: (N,) detection classes.
        image_width: the image's width, pixels.
        input_width: the network input width the model runs at, pixels.
        min_box_size: smallest side kept, network-input pixels (the class map's).

    Returns:
        The kept boxes (M, 4) and classes (M,).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    if image_width <= 0 or input_width <= 0:
        raise ValueError(
            f"image and input widths must be positive, got {image_width}, {input_width}"
        )
    min_size = min_box_size * image_width / input_width
    keep = ((boxes[:, 2:] - boxes[:, :2]) >= min_size).all(axis=1)
    return boxes[keep], classes[keep]
