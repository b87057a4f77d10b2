"""Metrics agree with the reference tools: pycocotools' COCOeval and cityscapes-style counting."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mtl_perception.detection.boxes import box_iou
from mtl_perception.detection.postprocess import _torchvision_batched_nms, batched_nms, cluster_nms
from mtl_perception.evaluation.metrics import (
    SIZES,
    ConfusionMatrix,
    DetectionAP,
    SizedDetectionAP,
    detection_confusion,
    detection_counts,
    size_area_bounds,
)

NUM_CLASSES = 3


def _random_case(seed: int):
    """Images with random ground truth and detections: near-duplicates, misses, false alarms,
    empty images, and (for some seeds) a class with no ground truth at all."""
    rng = np.random.default_rng(seed)
    images = []
    absent_class = seed % 4 == 0
    for _ in range(rng.integers(1, 8)):
        n_gt = 0 if rng.random() < 0.2 else int(rng.integers(1, 8))
        xy = rng.uniform(0, 400, (n_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 120, (n_gt, 2))], axis=1)
        gt_cls = rng.integers(0, NUM_CLASSES - int(absent_class), n_gt)
        dets, det_cls, scores = [], [], []
        for box, cls in zip(gt, gt_cls, strict=True):
            for _ in range(rng.integers(0, 3)):  # 0: missed, 2: a duplicate
                dets.append(box + rng.normal(0, rng.uniform(1, 15), 4))
                det_cls.append(cls if rng.random() < 0.9 else rng.integers(0, NUM_CLASSES))
                scores.append(rng.uniform(0.05, 1))
        for _ in range(rng.integers(0, 5)):  # false alarms, any class
            p = rng.uniform(0, 400, 2)
            dets.append(np.concatenate([p, p + rng.uniform(5, 100, 2)]))
            det_cls.append(rng.integers(0, NUM_CLASSES))
            scores.append(rng.uniform(0.0, 0.8))
        dets_arr = np.array(dets, float).reshape(-1, 4)
        dets_arr[:, 2:] = np.maximum(dets_arr[:, 2:], dets_arr[:, :2] + 1)
        images.append((gt, gt_cls, dets_arr, np.array(det_cls, int), np.array(scores)))
    return images


def _coco_ap(images, area: int = 0) -> np.ndarray:
    """Per-class AP@0.5 of pycocotools; ``area`` 0 all, 1 small, 2 medium, 3 large."""

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    gt = {
        "images": [{"id": i + 1, "width": 600, "height": 600} for i in range(len(images))],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(NUM_CLASSES)],
        "annotations": [],
    }
    dets = []
    for i, (boxes, classes, det_boxes, det_classes, scores) in enumerate(images):
        for b, c in zip(boxes, classes, strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": xywh(b),
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        dets += [
            {"image_id": i + 1, "category_id": int(c) + 1, "bbox": xywh(b), "score": float(s)}
            for b, c, s in zip(det_boxes, det_classes, scores, strict=True)
        ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        results = coco.loadRes(dets) if dets else COCO()
        evaluator = COCOeval(coco, results, "bbox")
        evaluator.params.iouThrs = np.array([0.5])
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][
        0, :, :, area, -1
    ]  # (recall points, classes), one area range, 100 dets
    return np.array([p[p > -1].mean() if (p > -1).any() else np.nan for p in precision.T])


@pytest.mark.parametrize("seed", range(40))
def test_average_precision_equals_pycocotools(seed):
    images = _random_case(seed)
    metric = DetectionAP(NUM_CLASSES, interpolation="coco")
    for gt, gt_cls, dets, det_cls, scores in images:
        metric.update(dets, scores, det_cls, gt, gt_cls)
    ours, reference = metric.average_precision(), _coco_ap(images)
    assert np.array_equal(np.isnan(ours), np.isnan(reference)), (ours, reference)
    assert np.allclose(ours[~np.isnan(ours)], reference[~np.isnan(reference)], atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", range(40))
def test_average_precision_by_size_equals_pycocotools(seed):
    """At 640 px wide the size bounds are COCO's own (32^2, 96^2), so pycocotools' small,
    medium and large area ranges are the reference."""
    assert size_area_bounds(640) == (32.0**2, 96.0**2)
    images = _random_case(seed)
    metric = SizedDetectionAP(NUM_CLASSES)
    for gt, gt_cls, dets, det_cls, scores in images:
        metric.update(dets, scores, det_cls, gt, gt_cls, image_width=640)
    for area, size in enumerate(SIZES, start=1):
        ours, reference = metric.by_size[size].average_precision(), _coco_ap(images, area)
        assert np.array_equal(np.isnan(ours), np.isnan(reference)), (size, ours, reference)
        assert np.allclose(
            ours[~np.isnan(ours)], reference[~np.isnan(reference)], atol=1e-6, rtol=0
        ), size


def test_size_bounds_scale_with_the_image_width():
    small, large = size_area_bounds(2048)  # Cityscapes: 3.2x COCO's 640 px
    assert small == pytest.approx((32 * 3.2) ** 2) and large == pytest.approx((96 * 3.2) ** 2)
    metric = SizedDetectionAP(1)
    box = np.array([[0.0, 0.0, 50.0, 50.0]])  # 2500 px^2: medium at 640 px, small at 2048
    metric.update(box, np.array([0.9]), np.zeros(1, int), box, np.zeros(1, int), 2048)
    assert metric.ground_truth_counts() == {"small": 1, "medium": 0, "large": 0}
    assert metric.by_size["small"].average_precision()[0] == pytest.approx(1.0)


def test_detection_confusion_and_counts_agree():
    """Rows ground truth, columns detections, the last of each background; a detection of the
    wrong class on an object is counted in the object's row, under the class it said."""
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], float)
    gt_cls = np.array([0, 1, 1])
    dets = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [60, 60, 70, 70], [0, 0, 10, 10]], float)
    det_cls, scores = np.array([0, 0, 2, 1]), np.array([0.9, 0.8, 0.7, 0.2])
    matrix = detection_confusion(dets, scores, det_cls, gt, gt_cls, 3, min_score=0.5)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 1  # car found
    expected[1, 0] = 1  # a person called a car
    expected[1, 3] = 1  # a person missed
    expected[3, 2] = 1  # a false alarm; the 0.2 detection is under min_score
    assert np.array_equal(matrix, expected)
    counts = detection_counts(dets, scores, det_cls, gt, gt_cls, 3, min_score=0.5)
    assert counts.tolist() == [[1, 1, 0], [0, 0, 2], [0, 1, 0]]  # TP FP FN per class
    # every ground-truth object is in one row cell, every kept detection in one column cell
    assert matrix[:3].sum() == len(gt) and matrix[:, :3].sum() == 3


def test_precision_recall_curve_is_the_one_ap_integrates():
    metric = DetectionAP(1, interpolation="voc")
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    dets = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], float)
    metric.update(dets, np.array([0.9, 0.8, 0.7]), np.zeros(3, int), gt, np.zeros(2, int))
    recall, precision, scores = metric.precision_recall(0)
    assert recall.tolist() == [0.5, 0.5, 1.0] and scores.tolist() == [0.9, 0.8, 0.7]
    assert precision == pytest.approx([1.0, 0.5, 2 / 3])
    assert metric.average_precision()[0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_duplicates_are_false_positives_and_voc_interpolation():
    metric = DetectionAP(1, interpolation="voc")
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    dets = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    metric.update(dets, np.array([0.9, 0.8, 0.7]), np.zeros(3, int), gt, np.zeros(2, int))
    # precision at the two recall steps: 1/1 at r=0.5, 2/3 at r=1 -> area 0.5 + 0.5 * 2/3
    assert metric.average_precision()[0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def _cityscapes_style_iou(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, void: int
) -> np.ndarray:
    """Per-class IoU counted class by class as cityscapesscripts' getIouScoreForLabel does:
    false positives only where the ground truth is not void."""
    result = np.full(num_classes, np.nan)
    evaluated = gt != void
    for label in range(num_classes):
        if label == void:
            continue
        tp = np.sum((gt == label) & (pred == label))
        fn = np.sum((gt == label) & (pred != label))
        fp = np.sum(evaluated & (gt != label) & (pred == label))
        if tp + fp + fn > 0:
            result[label] = tp / (tp + fp + fn)
    return result


@pytest.mark.parametrize("seed", range(10))
def test_iou_equals_independent_cityscapes_style_counting(seed):
    rng = np.random.default_rng(seed)
    num_classes = 12
    matrix = ConfusionMatrix(num_classes, void_id=0)
    all_gt, all_pred = [], []
    for _ in range(3):  # streamed over several images
        gt = rng.integers(0, num_classes - 2, (40, 60))  # classes 10, 11 never in ground truth
        pred = np.where(rng.random((40, 60)) < 0.6, gt, rng.integers(1, num_classes - 1, (40, 60)))
        matrix.update(pred, gt)
        all_gt.append(gt)
        all_pred.append(pred)
    reference = _cityscapes_style_iou(np.stack(all_gt), np.stack(all_pred), num_classes, 0)
    ours = matrix.iou()
    assert np.array_equal(np.isnan(ours), np.isnan(reference))
    assert np.allclose(ours[~np.isnan(ours)], reference[~np.isnan(reference)], atol=1e-9, rtol=0)
    assert np.isnan(ours[11])  # absent from ground truth and prediction: left out of the mean
    assert matrix.mean_iou() == pytest.approx(np.nanmean(reference), abs=1e-9)


def _brute_force_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float
) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept: list[int] = []
    for i in order:
        if all(
            groups[i] != groups[j]
            or float(box_iou(boxes[i : i + 1], boxes[j : j + 1])[0, 0]) <= threshold
            for j in kept
        ):
            kept.append(i)
    return kept


NMS_BACKENDS = ["torch"] + (["torchvision"] if _torchvision_batched_nms() is not None else [])


@pytest.mark.parametrize("backend", NMS_BACKENDS)
@pytest.mark.parametrize("seed", range(15))
def test_nms_agrees_with_brute_force(seed, backend):
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(0, 200, (), generator=gen))
    xy = torch.rand(n, 2, generator=gen) * 300
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 90 + 1], dim=1)
    scores = torch.rand(n, generator=gen)
    groups = torch.randint(0, 3, (n,), generator=gen)
    kept = batched_nms(boxes, scores, groups, 0.55, backend=backend)
    assert sorted(kept.tolist()) == sorted(_brute_force_nms(boxes, scores, groups, 0.55))
    assert (scores[kept][:-1] >= scores[kept][1:]).all() if len(kept) > 1 else True
    if n:
        assert cluster_nms(boxes, scores, 1.0).numel() == n  # nothing overlaps more than 1
