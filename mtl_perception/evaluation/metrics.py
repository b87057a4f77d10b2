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


def greedy_assignment(
    det_boxes: torch.Tensor,
    gt_boxes: torch.Tensor,
    iou_threshold: float = AP_IOU,
    preferred: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy matching of detections, (N, 4) xyxy in decreasing score order, to ground truth
    (M, 4): each takes the unmatched box it overlaps most if IoU >= the threshold; with
    ``preferred`` ((M,) bool), it takes the best preferred box when one qualifies (COCO's
    preference for ground truth that is not ignored).
    Returns (N,) int64: the matched ground-truth index, -1 for none."""
    assigned = np.full(len(det_boxes), -1, np.int64)
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return assigned
    iou = box_iou(det_boxes, gt_boxes).numpy()  # (N, M)
    taken = np.zeros(len(gt_boxes), bool)
    tiers = [np.ones(len(gt_boxes), bool)] if preferred is None else [preferred, ~preferred]
    for d in range(len(det_boxes)):  # sequential by nature: each match changes the next
        for tier in tiers:
            candidates = np.where(taken | ~tier, -1.0, iou[d])
            best = int(candidates.argmax())
            if candidates[best] >= iou_threshold:
                taken[best] = True
                assigned[d] = best
                break
    return assigned


def greedy_match(
    det_boxes: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = AP_IOU
) -> np.ndarray:
    """:func:`greedy_assignment` as (N,) bool true positives (one class's boxes)."""
    return greedy_assignment(det_boxes, gt_boxes, iou_threshold) >= 0


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
    scores = np.asarray(scores, np.float64).reshape(-1)
    keep = scores >= min_score
    counts = np.zeros((num_classes, 3), np.int64)
    for c, _, _, assigned, gt in _per_class(
        np.asarray(boxes, np.float64).reshape(-1, 4)[keep],
        scores[keep],
        np.asarray(classes).reshape(-1)[keep],
        gt_boxes,
        gt_classes,
        num_classes,
        iou_threshold,
    ):
        tp = int((assigned >= 0).sum())
        counts[c] = (tp, len(assigned) - tp, len(gt) - tp)
    return counts


def missed_ground_truth(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    min_score: float,
    iou_threshold: float = AP_IOU,
) -> np.ndarray:
    """(M,) bool: the ground-truth objects of one image that :func:`detection_counts` counts as
    false negatives (no detection of their class scored >= ``min_score`` matched them)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    keep = scores >= min_score
    boxes = torch.as_tensor(np.asarray(boxes, np.float64).reshape(-1, 4)[keep])
    scores, classes = scores[keep], np.asarray(classes).reshape(-1)[keep]
    gt = torch.as_tensor(np.asarray(gt_boxes, np.float64).reshape(-1, 4))
    gt_classes = np.asarray(gt_classes).reshape(-1)
    missed = np.ones(len(gt_classes), bool)
    for c in np.unique(gt_classes):
        dets, gts = np.flatnonzero(classes == c), np.flatnonzero(gt_classes == c)
        dets = dets[np.argsort(-scores[dets], kind="stable")]
        assigned = greedy_assignment(boxes[dets], gt[gts], iou_threshold)
        missed[gts[assigned[assigned >= 0]]] = False
    return missed


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
        for c, d_scores, _, assigned, gt in _per_class(
            boxes, scores, classes, gt_boxes, gt_classes, self.num_classes, self.iou_threshold
        ):
            self.add(c, d_scores, assigned >= 0, len(gt))

    def add(self, c: int, scores: np.ndarray, true_positive: np.ndarray, num_gt: int) -> None:
        """Adds class ``c``'s matched detections of one image: (N,) scores, (N,) bool true
        positives, and how many ground-truth objects it has."""
        record = self.records[c]
        record.num_ground_truth += num_gt
        if len(scores):
            record.scores.append(np.asarray(scores, np.float64))
            record.true_positive.append(np.asarray(true_positive, bool))

    def average_precision(self) -> np.ndarray:
        """(num_classes,) AP; NaN for classes without ground truth."""
        return np.array([self._class_ap(c) for c in range(self.num_classes)])

    def precision_recall(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class ``c``'s curve over its detections in decreasing score order: (N,) recall,
        (N,) precision (raw, not made monotone), (N,) scores. Empty without ground truth."""
        record = self.records[c]
        if record.num_ground_truth == 0 or not record.scores:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        scores = np.concatenate(record.scores)
        true_positive = np.concatenate(record.true_positive)
        order = np.argsort(-scores, kind="mergesort")
        tp = np.cumsum(true_positive[order])
        fp = np.cumsum(~true_positive[order])
        recall = tp / record.num_ground_truth
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        return recall, precision, scores[order]

    def _class_ap(self, c: int) -> float:
        record = self.records[c]
        if record.num_ground_truth == 0:
            return float("nan")
        if not record.scores:
            return 0.0
        recall, precision, _ = self.precision_recall(c)
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


def _per_class(boxes, scores, classes, gt_boxes, gt_classes, num_classes, iou_threshold):
    """Per class with detections or ground truth in one image: (class, (N,) scores in
    decreasing order, (N, 4) their boxes, (N,) assigned ground-truth index or -1, (M, 4) the
    class's ground truth), matched by :func:`greedy_assignment`."""
    boxes = torch.as_tensor(np.asarray(boxes, np.float64)).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    gt_boxes = torch.as_tensor(np.asarray(gt_boxes, np.float64)).reshape(-1, 4)
    gt_classes = np.asarray(gt_classes).reshape(-1).astype(np.int64)
    for c in range(num_classes):
        dets, gts = classes == c, gt_classes == c
        if not dets.any() and not gts.any():
            continue
        order = np.argsort(-scores[dets], kind="stable")
        d_boxes = boxes[torch.as_tensor(dets)][torch.as_tensor(order)]
        gt = gt_boxes[torch.as_tensor(gts)]
        yield c, scores[dets][order], d_boxes, greedy_assignment(d_boxes, gt, iou_threshold), gt


# COCO's object-size bounds (areas in pixels of its images, typically 640 px wide).
COCO_SIZE_BOUNDS = (32.0, 96.0)
COCO_IMAGE_WIDTH = 640.0
SIZES = ("small", "medium", "large")


def size_area_bounds(image_width: float) -> tuple[float, float]:
    """COCO's small/medium and medium/large area bounds (32^2, 96^2 px at 640 px wide) scaled
    to an image ``image_width`` pixels wide: ((32 W / 640)^2, (96 W / 640)^2), pixels^2."""
    scale = image_width / COCO_IMAGE_WIDTH
    return tuple((bound * scale) ** 2 for bound in COCO_SIZE_BOUNDS)


def _size_index(boxes: torch.Tensor, bounds: tuple[float, float]) -> np.ndarray:
    """(N,) 0 small, 1 medium, 2 large for (N, 4) xyxy boxes."""
    sides = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).numpy()
    return np.searchsorted(np.asarray(bounds), sides[:, 0] * sides[:, 1], side="right")


class SizedDetectionAP:
    """AP@IoU per class for small, medium and large objects, COCO's way: for one size, ground
    truth of another size is ignored (detections match it only when no ground truth of the size
    qualifies, :func:`greedy_assignment`), and so are the detections matched to it and the
    unmatched detections of another size. Areas are bounded by
    :func:`size_area_bounds` of each image's width.
    """

    def __init__(self, num_classes: int, iou_threshold: float = AP_IOU) -> None:
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.by_size = {size: DetectionAP(num_classes, iou_threshold) for size in SIZES}

    def update(self, boxes, scores, classes, gt_boxes, gt_classes, image_width: float) -> None:
        """Adds one image (as :meth:`DetectionAP.update`) ``image_width`` pixels wide."""
        bounds = size_area_bounds(image_width)
        for c, d_scores, d_boxes, _, gt in _per_class(
            boxes, scores, classes, gt_boxes, gt_classes, self.num_classes, self.iou_threshold
        ):
            gt_size = _size_index(gt, bounds)
            det_size = _size_index(d_boxes, bounds)
            for s, size in enumerate(SIZES):
                counted = gt_size == s
                assigned = greedy_assignment(d_boxes, gt, self.iou_threshold, counted)
                matched = assigned >= 0
                keep = det_size == s
                keep[matched] = counted[assigned[matched]]
                self.by_size[size].add(c, d_scores[keep], matched[keep], int(counted.sum()))

    def ground_truth_counts(self) -> dict[str, int]:
        return {
            size: sum(r.num_ground_truth for r in ap.records) for size, ap in self.by_size.items()
        }


def detection_confusion(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    num_classes: int,
    min_score: float,
    iou_threshold: float = AP_IOU,
) -> np.ndarray:
    """The detection confusion matrix of one image: detections scored >= ``min_score`` matched
    to ground truth of any class (:func:`greedy_assignment` in decreasing score order).

    Returns:
        (K + 1, K + 1) int64, K = ``num_classes``: rows the ground-truth class, columns the
        detected class; row K counts detections that match nothing (false positives), column K
        ground truth nothing matched (missed).
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    keep = np.flatnonzero(scores >= min_score)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    boxes = torch.as_tensor(np.asarray(boxes, np.float64).reshape(-1, 4)[keep])
    classes = np.asarray(classes).reshape(-1).astype(np.int64)[keep]
    gt_classes = np.asarray(gt_classes).reshape(-1).astype(np.int64)
    gt = torch.as_tensor(np.asarray(gt_boxes, np.float64).reshape(-1, 4))
    assigned = greedy_assignment(boxes, gt, iou_threshold)
    counts = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for d, g in enumerate(assigned):
        counts[gt_classes[g] if g >= 0 else num_classes, classes[d]] += 1
    missed = np.ones(len(gt_classes), bool)
    missed[assigned[assigned >= 0]] = False
    np.add.at(counts, (gt_classes[missed], num_classes), 1)
    return counts
