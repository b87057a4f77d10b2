"""YOLOv2 box coding on the Trident branches' grids (shared/design/architecture.md).

A prediction (tx, ty, tw, th) in cell (cx, cy) with anchor (pw, ph) (pixels) means the box
centre ((cx + sigmoid(tx)) * stride, (cy + sigmoid(ty)) * stride) and size
(pw * exp(tw), ph * exp(th)) in input pixels.
"""

from __future__ import annotations

import torch


def grid_offsets(
    height: int, width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 1, h, w) column and row indices of the cells, float."""
    ys = torch.arange(height, device=device, dtype=torch.float32).view(1, 1, height, 1)
    xs = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, 1, width)
    return xs, ys


def decode_boxes(raw: torch.Tensor, anchors: torch.Tensor, stride: int) -> torch.Tensor:
    """Raw box outputs -> boxes in input pixels.

    Args:
        raw: (B, A, 4, h, w) tx, ty, tw, th (the first four channels of a branch's map).
        anchors: (A, 2) anchor widths and heights of the branch, pixels.
        stride: input pixels per cell (16).

    Returns:
        (B, A, h, w, 4) boxes, xyxy in input pixels.
    """
    _, _, _, height, width = raw.shape
    xs, ys = grid_offsets(height, width, raw.device)
    anchors = anchors.to(raw.dtype).view(1, -1, 2, 1, 1)
    cx = (xs + raw[:, :, 0].sigmoid()) * stride
    cy = (ys + raw[:, :, 1].sigmoid()) * stride
    half_w = anchors[:, :, 0] * raw[:, :, 2].clamp(max=10).exp() / 2
    half_h = anchors[:, :, 1] * raw[:, :, 3].clamp(max=10).exp() / 2
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


def encode_boxes(
    boxes: torch.Tensor, anchors: torch.Tensor, stride: int, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes -> their cell and YOLOv2 targets relative to given anchors.

    Args:
        boxes: (M, 4) xyxy input pixels.
        anchors: (M, 2) the anchor assigned to each box, pixels.
        stride: input pixels per cell.
        grid: (h, w) cells.

    Returns:
        cell_x (M,) and cell_y (M,) long; targets (M, 4): centre offsets in [0, 1) within the
        cell (the sigmoid's target) and log size ratios to the anchor.
    """
    height, width = grid
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / stride
    size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
    gx = centre[:, 0].clamp(0, width - 1e-4)
    gy = centre[:, 1].clamp(0, height - 1e-4)
    cell_x, cell_y = gx.floor(), gy.floor()
    targets = torch.stack(
        [
            gx - cell_x,
            gy - cell_y,
            (size[:, 0] / anchors[:, 0]).log(),
            (size[:, 1] / anchors[:, 1]).log(),
        ],
        dim=1,
    )
    return cell_x.long(), cell_y.long(), targets
