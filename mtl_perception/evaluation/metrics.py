"""Metrics of the paper's Table 1: per-class IoU and mIoU, per-class AP@0.5 and mAP.

Segmentation: a streaming confusion matrix over pixels whose ground truth is not void
(predictions on void pixels never count). IoU = TP / (TP + FP + FN); a class absent from both
ground truth and predictions has no IoU and is left out of the mean, as cityscapesscripts does.

Detection: average precision at IoU 0.5 per class. Detections are matched in order of
decreasing score, each to the unmatched ground truth it overlaps most (IoU >= 0.5);
a second detection of a matched object is a false positive. Interpolation is COCO's by default
(precision made monotone, sampled at 101 recall points 0, 0.01, ..., 1; identical to pycocotools'
COCOeval at IoU 0.5), or VOC's all-point interpolation (area under the monotone curve). A class
without ground truth has no AP and is left out of the mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..detection.boxes import box_iou

COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
AP_IOU = 0.5


class ConfusionMatrix:
    """Streaming (num_classes, num_classes) pixel counts, rows = ground truth, cols = prediction.

    Args:
        num_classes: classes including void.
        void_id: ground-truth pixels of this class are skipped.
    """

    def __init__(self, num_classes: int, void_id: int = 0) -> None:
        self.num_classes = num_classes
        self.void_id = void_id
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(
        self, prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray
    ) -> None:
        """Adds one or more (.., H, W) class-id maps (same shape)."""
        prediction = torch.as_tensor(prediction).reshape(-1).long()
        target = torch.as_tensor(target).reshape(-1).long()
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction and target differ in size: {prediction.shape} vs {target.shape}"
            )
        valid = target != self.void_id
        index = target[valid] * self.num_classes + prediction[valid]
        self.counts += torch.bincount(index.cpu(), minlength=self.num_classes**2).view(
            self.num_classes, -1
        )

    def iou(self) -> np.ndarray:
        """(num_classes,) IoU per class; NaN for void and for classes absent from both."""
        counts = self.counts.double()
        tp = counts.diag()
        fp = counts.sum(dim=0) - tp
        fn = counts.sum(dim=1) - tp
        denominator = tp + fp + fn
        iou = torch.where(denominator > 0, tp / denominator.clamp(min=1), torch.nan)
        iou[self.void_id] = torch.nan
        return iou.numpy()

    def mean_iou(self) -> float:
        values = self.iou()
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@dataclass
class _ClassRecord:
    scores: list[np.ndarray] = field(default_factory=list)
    true_positive: list[np.ndarray] = field(default_factory=list)
    num_ground_truth: int = 0


def greedy_match(
    det_boxes: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = AP_IOU
) -> np.ndarray:
    """Greedy matching of one class's detections, (N, 4) xyxy in decreasing score order, to its
    ground truth (M, 4): each takes the unmatched box it overlaps most if IoU >= the threshold.
    Returns (N,) bool true positives."""
    true_positive = np.zeros(len(det_boxes), bool)
    if len(gt_boxes) == 0:
        return true_positive
    iou = box_iou(det_boxes, gt_boxes).numpy()  # (N, M)
    taken = np.zeros(len(gt_boxes), bool)
    for d in range(len(det_boxes)):  # sequential by nature: each match changes the next
        candidates = np.where(taken, -1.0, iou[d])
        best = int(candidates.argmax())
        if candidates[best] >= iou_threshold:
            taken[best] = True
            true_positive[d] = True
    return true_positive


def detection_counts(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    num_classes: int,
    min_score: float,
    iou_threshold: float = AP_IOU,
) -> np.ndarray:
    """True positives, false positives and false negatives per class of one image, counting
    detections scored >= ``min_score`` matched as AP matches them.

    Args:
        boxes, scores, classes: detections (N, 4) xyxy, (N,), (N,).
        gt_boxes, gt_classes: ground truth (M, 4), (M,).

    Returns:
        (num_classes, 3) int64: TP, FP, FN per class.
    """
    keep = np.asarray(scores, np.float64).reshape(-1) >= min_score
    boxes = torch.as_tensor(np.asarray(boxes, np.float64).reshape(-1, 4)[keep])
    scores = np.asarray(scores, np.float64).reshape(-1)[keep]
    classes = np.asarray(classes).reshape(-1)[keep]
    gt_boxes = torch.as_tensor(np.asarray(gt_boxes, np.float64).reshape(-1, 4))
    gt_classes = np.asarray(gt_classes).reshape(-1)
    counts = np.zeros((num_classes, 3), np.int64)
    for c in range(num_classes):
        dets, gts = classes == c, gt_classes == c
        order = np.argsort(-scores[dets], kind="stable")
        matched = greedy_match(boxes[dets][order], gt_boxes[gts], iou_threshold)
        tp = int(matched.sum())
        counts[c] = (tp, len(matched) - tp, int(gts.sum()) - tp)
    return counts


class DetectionAP:
    """Streaming per-class average precision at one IoU threshold.

    Args:
        num_classes: detection classes.
        iou_threshold: match threshold (0.5: the paper's AP@0.5).
        interpolation: "coco" (101-point) or "voc" (all-point).
    """

    def __init__(
        self, num_classes: int, iou_threshold: float = AP_IOU, interpolation: str = "coco"
    ) -> None:
        if interpolation not in ("coco", "voc"):
            raise ValueError(f"interpolation must be 'coco' or 'voc', got {interpolation!r}")
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.interpolation = interpolation
        self.records = [_ClassRecord() for _ in range(num_classes)]

    def update(
        self,
        boxes: torch.Tensor | np.ndarray,
        scores: torch.Tensor | np.ndarray,
        classes: torch.Tensor | np.ndarray,
        gt_boxes: torch.Tensor | np.ndarray,
        gt_classes: torch.Tensor | np.ndarray,
    ) -> None:
        """Adds one image: detections (N, 4) xyxy, (N,), (N,) and ground truth (M, 4), (M,)."""
        boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
        scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
        classes = torch.as_tensor(classes).reshape(-1).long()
        gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float64).reshape(-1, 4)
        gt_classes = torch.as_tensor(gt_classes).reshape(-1).long()
        for c in range(self.num_classes):
            dets, gts = classes == c, gt_classes == c
            record = self.records[c]
            record.num_ground_truth += int(gts.sum())
            if not dets.any():
                continue
            d_scores = scores[dets]
            order = torch.argsort(-d_scores, stable=True)
            d_boxes = boxes[dets][order]
            matched = self._match(d_boxes, gt_boxes[gts])
            record.scores.append(d_scores[order].numpy())
            record.true_positive.append(matched)

    def _match(self, det_boxes: torch.Tensor, gt_boxes: torch.Tensor) -> np.ndarray:
        return greedy_match(det_boxes, gt_boxes, self.iou_threshold)

    def average_precision(self) -> np.ndarray:
        """(num_classes,) AP; NaN for classes without ground truth."""
        return np.array([self._class_ap(record) for record in self.records])

    def _class_ap(self, record: _ClassRecord) -> float:
        if record.num_ground_truth == 0:
            return float("nan")
        if not record.scores:
            return 0.0
        scores = np.concatenate(record.scores)
        true_positive = np.concatenate(record.true_positive)
        order = np.argsort(-scores, kind="mergesort")
        tp = np.cumsum(true_positive[order])
        fp = np.cumsum(~true_positive[order])
        recall = tp / record.num_ground_truth
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        monotone = np.maximum.accumulate(precision[::-1])[::-1]
        if self.interpolation == "voc":
            recall_steps = np.concatenate([[0.0], recall])
            return float(np.sum((recall_steps[1:] - recall_steps[:-1]) * monotone))
        index = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
        sampled = np.where(
            index < len(monotone), monotone[np.minimum(index, len(monotone) - 1)], 0.0
        )
        return float(sampled.mean())

    def mean_ap(self) -> float:
        values = self.average_precision()
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
