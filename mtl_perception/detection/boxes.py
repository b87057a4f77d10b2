"""Box helpers. Boxes are (x0, y0, x1, y1) in pixels, pixel-edge coordinates: a box covering
pixel columns 3..5 is x0 = 3, x1 = 6."""

from __future__ import annotations

import numpy as np
import torch


def tight_boxes(instance_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tight box of every distinct value >= 1000 of a Cityscapes instance map.

    Args:
        instance_ids: (H, W) integer instance map.

    Returns:
        values (N,) the instance ids, sorted; boxes (N, 4) float32 in pixel edges.
    """
    ys, xs = np.nonzero(instance_ids >= 1000)
    if ys.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    ids = instance_ids[ys, xs].astype(np.int64)
    order = np.argsort(ids, kind="stable")
    ids, xs, ys = ids[order], xs[order], ys[order]
    values, starts = np.unique(ids, return_index=True)
    boxes = np.stack(
        [
            np.minimum.reduceat(xs, starts),
            np.minimum.reduceat(ys, starts),
            np.maximum.reduceat(xs, starts) + 1,
            np.maximum.reduceat(ys, starts) + 1,
        ],
        axis=1,
    ).astype(np.float32)
    return values, boxes


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (..., N, 4) and (..., M, 4) xyxy boxes -> (..., N, M)."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    top_left = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    bottom_right = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return inter / union.clamp(min=1e-9)


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise GIoU (Rezatofighi et al. 2019) of aligned (..., 4) xyxy boxes -> (...,).

    IoU minus the share of the enclosing box covered by neither; in [-1, 1], 1 for equal boxes.
    Unlike IoU it still has a gradient when the boxes do not overlap.
    """
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    top_left = torch.maximum(a[..., :2], b[..., :2])
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (area_a + area_b - inter).clamp(min=1e-9)
    hull = torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])
    hull_area = (hull[..., 0] * hull[..., 1]).clamp(min=1e-9)
    return inter / union - (hull_area - union) / hull_area


def shape_iou(wh_a: torch.Tensor, wh_b: torch.Tensor) -> torch.Tensor:
    """IoU of (N, 2) and (M, 2) (width, height) pairs aligned at a common centre -> (N, M)."""
    inter = torch.minimum(wh_a[:, None, 0], wh_b[None, :, 0]) * torch.minimum(
        wh_a[:, None, 1], wh_b[None, :, 1]
    )
    area_a = wh_a[:, 0] * wh_a[:, 1]
    area_b = wh_b[:, 0] * wh_b[:, 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)
