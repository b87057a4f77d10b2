"""Scale-aware target assignment for the Trident branches (paper section 4.2).

Each ground-truth box goes to the cell of its centre and to the anchor of best shape IoU among
all nine, which fixes its branch: a box trains only the branch that owns its best anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .boxes import shape_iou
from .coding import encode_boxes


@dataclass
class BranchTargets:
    """Training targets of one Trident branch; (B, A, h, w) grids."""

    positive: torch.Tensor  # (B, A, h, w) bool: a box is assigned here
    boxes: torch.Tensor  # (B, A, h, w, 4) YOLOv2 targets (offset x, offset y, log w, log h)
    classes: torch.Tensor  # (B, A, h, w) long, -1 where not positive
    scale_weight: (
        torch.Tensor
    )  # (B, A, h, w) 2 - relative box area (YOLOv2: small boxes weigh more)


@torch.no_grad()
def assign_targets(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    anchors: torch.Tensor,
    grid: tuple[int, int],
    stride: int,
) -> list[BranchTargets]:
    """Assigns padded ground truth to branches, anchors and cells.

    Args:
        boxes: (B, N, 4) xyxy input pixels (padding rows ignored).
        classes: (B, N) class ids, -1 for padding.
        anchors: (branches, A, 2) anchor sizes in pixels, branches ordered small to large.
        grid: (h, w) cells of every branch.
        stride: input pixels per cell.

    Returns:
        One :class:`BranchTargets` per branch. When two boxes claim the same cell and anchor,
        the later one wins.
    """
    num_branches, per_branch, _ = anchors.shape
    batch = boxes.shape[0]
    height, width = grid
    device = boxes.device
    image_area = float(height * width * stride * stride)
    image_index, box_index = torch.nonzero(classes >= 0, as_tuple=True)
    gt = boxes[image_index, box_index].float()  # (M, 4)
    gt_classes = classes[image_index, box_index]
    flat_anchors = anchors.reshape(-1, 2).to(device=device, dtype=torch.float32)
    best = shape_iou(gt[:, 2:] - gt[:, :2], flat_anchors).argmax(dim=1)  # (M,) of all 9
    branch, anchor = best // per_branch, best % per_branch
    cell_x, cell_y, encoded = encode_boxes(gt, flat_anchors[best], stride, grid)
    relative_area = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])) / image_area

    results = []
    for k in range(num_branches):
        shape = (batch, per_branch, height, width)
        target = BranchTargets(
            positive=torch.zeros(shape, dtype=torch.bool, device=device),
            boxes=torch.zeros((*shape, 4), device=device),
            classes=torch.full(shape, -1, dtype=torch.long, device=device),
            scale_weight=torch.zeros(shape, device=device),
        )
        mine = branch == k
        where = (image_index[mine], anchor[mine], cell_y[mine], cell_x[mine])
        target.positive[where] = True
        target.boxes[where] = encoded[mine]
        target.classes[where] = gt_classes[mine]
        target.scale_weight[where] = 2.0 - relative_area[mine]
        results.append(target)
    return results
