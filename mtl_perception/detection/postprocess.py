"""From raw Trident maps to detections: decoding, score threshold, per-class NMS, top-k.

Everything runs on the maps' device, batched: one decode for all branches, one NMS call per
batch. The score of a class is sigmoid(objectness) * sigmoid(class logit) (YOLOv2, with the
focal loss's independent sigmoid classes). NMS uses IoU 0.55 (paper section 4.3).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..model.detector import BOX_PARAMS
from .boxes import box_iou
from .coding import decode_boxes

NMS_IOU = 0.55  # paper section 4.3


@dataclass(frozen=True)
class PostprocessConfig:
    """Attributes:
    score_threshold: candidates below this score are dropped before NMS.
    nms_iou: IoU above which a lower-scored box of the same class is suppressed.
    pre_nms_top_k: most candidates per image entering NMS.
    max_detections: most detections per image after NMS.
    """

    score_threshold: float = 0.25
    nms_iou: float = NMS_IOU
    pre_nms_top_k: int = 1000
    max_detections: int = 100


@dataclass
class Detections:
    """Detections of one image: (N, 4) xyxy boxes, (N,) scores, (N,) class ids, by score."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor


def decode_all(
    detections: tuple[torch.Tensor, ...], anchors: torch.Tensor, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw branch maps -> every candidate box and its per-class scores.

    Args:
        detections: per branch (B, A, 5 + K, h, w).
        anchors: (branches, A, 2) pixels.
        stride: input pixels per cell.

    Returns:
        boxes (B, N, 4) xyxy input pixels and scores (B, N, K), N = branches * A * h * w.
    """
    all_boxes, all_scores = [], []
    for raw, branch_anchors in zip(detections, anchors, strict=True):
        raw = raw.float()
        boxes = decode_boxes(raw[:, :, :BOX_PARAMS], branch_anchors, stride)  # (B, A, h, w, 4)
        objectness = raw[:, :, BOX_PARAMS : BOX_PARAMS + 1].sigmoid()
        scores = objectness * raw[:, :, BOX_PARAMS + 1 :].sigmoid()  # (B, A, K, h, w)
        all_boxes.append(boxes.flatten(1, 3))  # (B, A*h*w, 4)
        all_scores.append(scores.permute(0, 1, 3, 4, 2).flatten(1, 3))  # (B, A*h*w, K)
    return torch.cat(all_boxes, dim=1), torch.cat(all_scores, dim=1)


def cluster_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS computed with IoU matrices (Cluster-NMS, Zheng et al. 2021): the same result
    as the sequential algorithm, in a few vectorised iterations instead of one per box.

    Args:
        boxes: (N, 4) xyxy; scores: (N,).

    Returns:
        Indices of the kept boxes, by decreasing score.
    """
    order = scores.argsort(descending=True, stable=True)
    if order.numel() == 0:
        return order
    sorted_boxes = boxes[order]
    iou = box_iou(sorted_boxes, sorted_boxes).triu_(diagonal=1)  # [i, j]: i scores higher
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for _ in range(len(order)):
        suppressed = (iou * keep[:, None]).amax(dim=0) > iou_threshold
        new_keep = ~suppressed
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return order[keep]


@functools.cache
def _torchvision_batched_nms():
    """torchvision.ops.batched_nms if torchvision imports and its ops run, else None."""
    try:
        from torchvision.ops import batched_nms

        batched_nms(torch.zeros(1, 4), torch.ones(1), torch.zeros(1, dtype=torch.long), 0.5)
        return batched_nms
    except Exception:  # any failure means: not usable here
        return None


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    iou_threshold: float,
    backend: str = "auto",
) -> torch.Tensor:
    """NMS within each group (class, or image x class); kept indices by decreasing score.

    ``backend``: "torch" (:func:`cluster_nms`), "torchvision" (fails if unusable) or "auto".
    Both give the same kept set.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    vision = _torchvision_batched_nms() if backend in ("auto", "torchvision") else None
    if backend == "torchvision" and vision is None:
        raise RuntimeError("torchvision's batched_nms is not usable in this environment")
    if vision is not None:
        return vision(boxes.float(), scores.float(), groups, iou_threshold)
    # Offsetting each group far apart makes boxes of different groups never overlap.
    offset = groups.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return cluster_nms(boxes + offset, scores, iou_threshold)


def postprocess(
    detections: tuple[torch.Tensor, ...],
    anchors: torch.Tensor,
    stride: int,
    config: PostprocessConfig,
    backend: str = "auto",
) -> list[Detections]:
    """Raw maps -> per-image detections in input pixels (see module docstring)."""
    boxes, scores = decode_all(detections, anchors.to(detections[0].device), stride)
    batch, _, num_classes = scores.shape
    # Every (box, class) pair is a candidate: (B, N * K).
    flat_scores = scores.flatten(1)
    top_k = min(config.pre_nms_top_k, flat_scores.shape[1])
    top_scores, top_index = flat_scores.topk(top_k, dim=1)  # (B, k)
    box_index, class_index = top_index // num_classes, top_index % num_classes
    top_boxes = boxes.gather(1, box_index[..., None].expand(-1, -1, 4))  # (B, k, 4)
    image_index = torch.arange(batch, device=boxes.device)[:, None].expand(-1, top_k)
    passed = top_scores > config.score_threshold
    flat_boxes, flat_scores_kept = top_boxes[passed], top_scores[passed]
    flat_classes, flat_images = class_index[passed], image_index[passed]
    keep = batched_nms(
        flat_boxes,
        flat_scores_kept,
        flat_images * num_classes + flat_classes,
        config.nms_iou,
        backend,
    )
    results = []
    kept_images = flat_images[keep]
    for image in range(batch):
        mine = keep[kept_images == image][: config.max_detections]  # already by score
        results.append(Detections(flat_boxes[mine], flat_scores_kept[mine], flat_classes[mine]))
    return results


# Cluster-NMS rounds run on the device before the host looks; each round settles at least one
# more box, and scenes need a handful. Unsettled images are finished by :func:`postprocess`.
FIXED_NMS_ROUNDS = 16


@dataclass
class FixedDetections:
    """Detections of a batch in fixed-size tensors (no data-dependent shapes: capturable in a
    CUDA graph, no host sync).

    Attributes:
        table: (B, max_detections, 6) rows x0, y0, x1, y1 (input pixels), score, class; rows past
            ``counts`` are zero.
        counts: (B,) long, detections per image.
        settled: (B,) bool, False where NMS needed more than the fixed rounds.
    """

    table: torch.Tensor
    counts: torch.Tensor
    settled: torch.Tensor


def cluster_nms_fixed(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    valid: torch.Tensor,
    iou_threshold: float,
    rounds: int = FIXED_NMS_ROUNDS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class Cluster-NMS over score-sorted candidates in a fixed number of rounds.

    Args:
        boxes: (B, k, 4) xyxy by decreasing score; classes: (B, k); valid: (B, k) bool, the
            candidates that take part (others neither survive nor suppress).

    Returns:
        keep (B, k) bool and settled (B,) bool: True where the last round changed nothing, so
        ``keep`` is the greedy NMS result.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    same_class = classes[:, :, None] == classes[:, None, :]
    iou = (box_iou(boxes, boxes) * same_class).triu_(diagonal=1)  # [i, j]: i ranks above j
    keep = previous = valid
    for _ in range(rounds):
        previous = keep
        keep = valid & ~((iou * keep[:, :, None]).amax(dim=1) > iou_threshold)
    return keep, (keep == previous).all(dim=1)


def postprocess_fixed(
    detections: tuple[torch.Tensor, ...],
    anchors: torch.Tensor,
    stride: int,
    config: PostprocessConfig,
    rounds: int = FIXED_NMS_ROUNDS,
) -> FixedDetections:
    """:func:`postprocess` with fixed shapes and no host synchronisation.

    The top ``pre_nms_top_k`` (box, class) candidates of each image go through Cluster-NMS in a
    (B, k, k) IoU matrix restricted to same-class pairs; candidates under the score threshold
    neither survive nor suppress. Where ``settled`` is True the result equals
    :func:`postprocess`'s.
    """
    boxes, scores = decode_all(detections, anchors.to(detections[0].device), stride)
    batch, _, num_classes = scores.shape
    flat_scores = scores.flatten(1)
    top_k = min(config.pre_nms_top_k, flat_scores.shape[1])
    top_scores, top_index = flat_scores.topk(top_k, dim=1)  # (B, k), by decreasing score
    box_index, class_index = top_index // num_classes, top_index % num_classes
    top_boxes = boxes.gather(1, box_index[..., None].expand(-1, -1, 4))  # (B, k, 4)
    valid = top_scores > config.score_threshold
    keep, settled = cluster_nms_fixed(top_boxes, class_index, valid, config.nms_iou, rounds)

    rank = keep.long().cumsum(dim=1) - 1  # position among the kept, by score
    wanted = keep & (rank < config.max_detections)
    slot = torch.where(wanted, rank, torch.full_like(rank, config.max_detections))
    rows = torch.cat([top_boxes, top_scores[..., None], class_index[..., None].float()], dim=2)
    table = rows.new_zeros(batch, config.max_detections + 1, 6)
    table.scatter_(1, slot[..., None].expand(-1, -1, 6), rows * wanted[..., None])
    counts = wanted.sum(dim=1)
    return FixedDetections(table[:, : config.max_detections], counts, settled)
