"""The multi-task criterion (paper section 4.2, equations 1-3).

    L_seg = CE(main) + 0.6 CE(aux1) + 0.5 CE(aux2)   void ignored; aux logits upsampled bilinearly
    L_det = focal(objectness) + focal(classes) + box regression   (mse or giou, below)
    L     = W_seg L_seg + W_det L_det                 W_seg = 40, W_det = 1 by default

Detection terms are summed over the three Trident branches and divided by the number of
ground-truth boxes in the batch (RetinaNet's normalisation). A prediction whose decoded box
overlaps any ground truth by more than 0.6 IoU takes no no-object loss (YOLOv2).
The box term is YOLOv2's squared error on (sigmoid offsets, log size ratios), or with
``box_loss="giou"`` 1 - GIoU between the decoded prediction and its ground truth, the IoU-type
regression of YOLOv4/YOLOP/HybridNets (it optimises the overlap that AP@0.5 scores). Either is
weighted by YOLOv2's 2 - relative area. The criterion returns already-weighted named losses;
their sum is ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .detection.boxes import box_iou, generalized_iou
from .detection.coding import decode_boxes
from .detection.targets import assign_targets
from .model.detector import BOX_PARAMS
from .model.network import MultiTaskOutput

# Paper section 4.2, equation 1.
AUX1_WEIGHT = 0.6
AUX2_WEIGHT = 0.5
# Paper section 4.2, equation 3: W_seg = 30-50, W_det = 1.
SEG_WEIGHT = 40.0
DET_WEIGHT = 1.0
# Focal loss (Lin et al.) defaults.
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
# YOLOv2: predictions overlapping a ground truth above this IoU take no no-object loss.
IGNORE_IOU = 0.6
# Weight of the box term within L_det (YOLOv1's lambda_coord is 5; the paper gives none).
BOX_WEIGHT = 1.0
BOX_LOSSES = ("mse", "giou")


@dataclass(frozen=True)
class LossConfig:
    seg_weight: float = SEG_WEIGHT
    det_weight: float = DET_WEIGHT
    aux1_weight: float = AUX1_WEIGHT
    aux2_weight: float = AUX2_WEIGHT
    focal_alpha: float = FOCAL_ALPHA
    focal_gamma: float = FOCAL_GAMMA
    ignore_iou: float = IGNORE_IOU
    box_weight: float = BOX_WEIGHT
    box_loss: str = "mse"
    void_id: int = 0

    def __post_init__(self) -> None:
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {self.box_loss!r}")


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """Element-wise FL = -alpha_t (1 - p_t)^gamma log(p_t), targets in {0, 1}."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t).pow(gamma) * ce


def _cell_boxes(
    cells: torch.Tensor,
    offsets: torch.Tensor,
    log_sizes: torch.Tensor,
    anchors: torch.Tensor,
    stride: int,
) -> torch.Tensor:
    """(P, 4) xyxy input-pixel boxes from (P, 2) cell (x, y), offsets in [0, 1] within the cell
    and log size ratios to (P, 2) anchors in pixels; sizes capped as in :func:`decode_boxes`."""
    centre = (cells + offsets) * stride
    half = anchors * log_sizes.clamp(max=10).exp() / 2
    return torch.cat([centre - half, centre + half], dim=1)


class MultiTaskLoss(nn.Module):
    """Weighted segmentation and detection losses.

    Args:
        anchors: (branches, A, 2) anchor sizes in input pixels.
        stride: input pixels per detection cell (16).
        config: weights and focal-loss parameters.
    """

    def __init__(
        self, anchors: torch.Tensor, stride: int = 16, config: LossConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config or LossConfig()
        self.stride = stride
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32))

    def segmentation(self, outputs: MultiTaskOutput, target: torch.Tensor) -> torch.Tensor:
        """L_seg for (B, H, W) long class ids."""
        size = target.shape[-2:]
        valid = (target != self.config.void_id).sum().clamp(min=1)

        def ce(logits: torch.Tensor) -> torch.Tensor:
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            loss = F.cross_entropy(
                logits.float(), target, ignore_index=self.config.void_id, reduction="sum"
            )
            return loss / valid

        return (
            ce(outputs.seg_logits)
            + self.config.aux1_weight * ce(outputs.aux1_logits)
            + self.config.aux2_weight * ce(outputs.aux2_logits)
        )

    def detection(
        self, outputs: MultiTaskOutput, boxes: torch.Tensor, classes: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Objectness, class and box terms (unweighted), for (B, N, 4) boxes and (B, N) classes."""
        cfg = self.config
        grid = tuple(outputs.detections[0].shape[-2:])
        targets = assign_targets(boxes, classes, self.anchors, grid, self.stride)
        num_boxes = (classes >= 0).sum().clamp(min=1).float()
        valid_gt = classes >= 0  # (B, N)
        obj_loss = cls_loss = box_loss = outputs.detections[0].new_zeros((), dtype=torch.float32)
        for raw, target, anchors in zip(outputs.detections, targets, self.anchors, strict=True):
            raw = raw.float()  # (B, A, 5 + K, h, w)
            with torch.no_grad():
                predicted = decode_boxes(raw[:, :, :BOX_PARAMS], anchors, self.stride)
                batch, per_branch, height, width, _ = predicted.shape
                iou = box_iou(predicted.view(batch, -1, 4), boxes.float())  # (B, A*h*w, N)
                iou = iou.masked_fill(~valid_gt[:, None, :], 0.0)
                best = iou.max(dim=2).values if iou.shape[2] else iou.new_zeros(iou.shape[:2])
                ignore = best.view(batch, per_branch, height, width) > cfg.ignore_iou
            positive = target.positive
            objectness = raw[:, :, BOX_PARAMS]  # (B, A, h, w)
            counted = positive | ~ignore
            obj_terms = sigmoid_focal_loss(
                objectness, positive.float(), cfg.focal_alpha, cfg.focal_gamma
            )
            obj_loss = obj_loss + (obj_terms * counted).sum()

            fields = raw.permute(0, 1, 3, 4, 2)[positive]  # (P, 5 + K)
            if fields.shape[0]:
                labels = F.one_hot(target.classes[positive], fields.shape[1] - BOX_PARAMS - 1)
                cls_loss = (
                    cls_loss
                    + sigmoid_focal_loss(
                        fields[:, BOX_PARAMS + 1 :],
                        labels.float(),
                        cfg.focal_alpha,
                        cfg.focal_gamma,
                    ).sum()
                )
                wanted = target.boxes[positive]
                weight = target.scale_weight[positive]
                if cfg.box_loss == "giou":
                    where = positive.nonzero()  # (P, 4): image, anchor, row, column
                    cells = where[:, [3, 2]].float()
                    sizes = anchors.to(fields.device)[where[:, 1]]
                    found = _cell_boxes(
                        cells, fields[:, :2].sigmoid(), fields[:, 2:4], sizes, self.stride
                    )
                    truth = _cell_boxes(cells, wanted[:, :2], wanted[:, 2:], sizes, self.stride)
                    terms = 1.0 - generalized_iou(found, truth)
                else:
                    offsets = (fields[:, :2].sigmoid() - wanted[:, :2]).pow(2)
                    sizes = (fields[:, 2:4] - wanted[:, 2:]).pow(2)
                    terms = torch.cat([offsets, sizes], dim=1).sum(dim=1)
                box_loss = box_loss + (weight * terms).sum()
        return {
            "obj": obj_loss / num_boxes,
            "cls": cls_loss / num_boxes,
            "box": cfg.box_weight * box_loss / num_boxes,
        }

    def forward(
        self,
        outputs: MultiTaskOutput,
        segmentation: torch.Tensor,
        boxes: torch.Tensor,
        classes: torch.Tensor,
        seg_weight: float | None = None,
        det_weight: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted named losses and their sum.

        Args:
            outputs: the network's outputs.
            segmentation: (B, H, W) long class ids.
            boxes: (B, N, 4) xyxy input pixels, padded.
            classes: (B, N) long detection classes, -1 for padding.
            seg_weight, det_weight: override the configured W_seg / W_det (a training stage's);
                a zero weight skips that task's computation.

        Returns:
            ``loss_seg``, ``loss_obj``, ``loss_cls``, ``loss_box`` (each already weighted) and
            ``loss``, their sum.
        """
        cfg = self.config
        seg_weight = cfg.seg_weight if seg_weight is None else seg_weight
        det_weight = cfg.det_weight if det_weight is None else det_weight
        reference = outputs.seg_logits if outputs.seg_logits is not None else outputs.detections[0]
        zero = reference.new_zeros((), dtype=torch.float32)
        losses = {
            "loss_seg": seg_weight * self.segmentation(outputs, segmentation)
            if seg_weight
            else zero
        }
        if det_weight:
            for name, value in self.detection(outputs, boxes, classes).items():
                losses[f"loss_{name}"] = det_weight * value
        else:
            losses.update(loss_obj=zero, loss_cls=zero, loss_box=zero)
        losses["loss"] = sum(losses.values())
        return losses
