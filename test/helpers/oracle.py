"""The oracle for two differently shaped computations of the same predictions.

Batch vs single image, graph vs eager, channels-last vs contiguous, ONNX Runtime vs PyTorch,
one vs two threads: each runs the same float32 network, but the convolution library (oneDNN,
MKL, ONNX Runtime's kernels) chooses its kernels by batch shape, memory format, thread count and
the CPU's instruction set, so every sum is taken in another order and rounded differently. The
results agree to that rounding, not bit for bit ("masks exactly" held on one CPU and failed on
an AMD EPYC with AVX-512: 9 of 307,200 mask pixels, boxes 1.8e-4 px apart). This module says how
far apart they may be, and why.

**Masks.** A mask pixel is the argmax of the logits of its class channels (void, channel 0, never
chosen; with ``mask_mode="nearest"`` the logits of its nearest-exact source pixel at the network
resolution). If every logit of the two computations differs by at most ``delta``, a pixel can take
class ``a`` in one and ``b`` in the other only where, in BOTH computations, ``a`` and ``b`` are
within ``2 * delta`` of each other and of the largest logit (in the first, ``L_a >= L_b`` and
``L_a`` is the top; in the second, ``L'_b >= L'_a``; so ``0 <= L_a - L_b <= 2 * delta``). So a
differing pixel is accepted only if its two classes are such a near-tie in the logits of either
computation; anywhere else a difference is a real one.

The bound on ``delta``: each logit is the end of a chain of float32 dot products. Two orders of
the same sum of ``K`` products each carry a rounding error of at most ``K * u`` (Higham), in
practice about ``sqrt(K) * u``, times the magnitude of the terms (``u = 2**-24``); through the
layers these errors scale with the activations, so they are stated relative to ``S``, the largest
``|logit|`` of the image. Measured on the test models (:mod:`helpers.models`, AMD EPYC, AVX-512),
as multiples of ``u * S``: batch 4 vs 1, 28; 1 vs 2 threads, 13; oneDNN off (MKL GEMM), 43;
channels-last, 29 to 32; ONNX Runtime vs PyTorch, 51. :data:`RELATIVE_ROUNDING` is ``2**-14``,
1024 ``u * S``, 20 times the largest of these: every x86-64 CPU computes IEEE-754 float32 (SSE,
AVX2 or AVX-512, with or without FMA, which rounds once where mul + add rounds twice), so another
CPU changes only the order of the sums, and a sum's rounding does not grow 20-fold with another
order of it. Mixed precision (bf16, fp16, TF32) is not rounding of float32 and is out of its scope.
A real defect moves logits further: with one 640x480 image of a batch shifted by one pixel
(test_camera_batching.py), 50,191 of the 50,687 pixels that changed fail this bound (the rest were
near-ties of the untrained test network anyway).

**Detections.** A box coordinate is decoded from its raw outputs by sigmoid and exp, then scaled to
the image, so its rounding grows with the image: measured (batch 3 or 4 vs 1) 1.8e-4 px on a 640 px
image, 1.5e-3 px (4.3e-3 px for the trained model) on 512 px and 5.2e-3 px on 1024 px.
:data:`BOX_TOLERANCE_FRACTION` allows 1e-4 of the image's longer side (0.051 px at 512, 0.2 px at
2048), 12 times the largest measured. A score is a product of sigmoids, whose slope is at most 1/4,
so it moves by less than the raw outputs' rounding: measured 2.8e-6; :data:`SCORE_TOLERANCE` is
1e-3. A detection present in only one of the two is accepted only at a decision boundary: its
score within :data:`SCORE_TOLERANCE` of the score threshold, or of the lowest score the other kept
where that one kept ``max_detections``, or its IoU with a same-class detection of the other within
:data:`IOU_TOLERANCE` of the NMS threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mtl_perception.detection.boxes import box_iou
from mtl_perception.inference.predictor import (
    Prediction,
    Predictor,
    PredictorConfig,
    _nearest_exact_indices,
)

RELATIVE_ROUNDING = 2.0**-14  # float32 rounding of a logit, relative to the image's max |logit|
BOX_TOLERANCE_FRACTION = 1e-4  # of the image's longer side, in pixels
SCORE_TOLERANCE = 1e-3
IOU_TOLERANCE = 1e-3
VOID = 0  # the class channel a mask never takes


def near_tie_tolerance(*logits: np.ndarray | torch.Tensor) -> float:
    """``2 * RELATIVE_ROUNDING * S``: how far apart two class logits may be and still swap
    places between two roundings of the same computation (``S``: the largest ``|logit|`` of the
    given (C, h, w) logits, void included)."""
    scale = max(float(np.abs(_numpy(x)).max()) for x in logits)
    return 2.0 * RELATIVE_ROUNDING * scale


def assert_masks_match(
    mask_a: np.ndarray,
    mask_b: np.ndarray,
    logits_a: np.ndarray | torch.Tensor,
    logits_b: np.ndarray | torch.Tensor | None = None,
    *,
    name: str = "mask",
) -> None:
    """Asserts two (H, W) uint8 class masks of one image are equal except at near-ties.

    Args:
        mask_a, mask_b: (H, W) class ids (channel indices of the logits).
        logits_a, logits_b: (C, h, w) segmentation logits of the computations that made
            ``mask_a`` and ``mask_b`` (``logits_b`` may be missing: one computation's suffice),
            at the mask's size or at the network resolution (each mask pixel then reads its
            nearest-exact source pixel, as the Predictor's ``mask_mode="nearest"`` upsamples).
        name: what the failure message calls the mask.

    Raises:
        AssertionError: the shapes differ, or a pixel differs whose two classes are not within
            :func:`near_tie_tolerance` of each other and of the largest logit in either
            computation's logits; the message names the first such pixels.
    """
    assert mask_a.shape == mask_b.shape, f"{name}: shapes {mask_a.shape} and {mask_b.shape}"
    given = [_numpy(x) for x in (logits_a, logits_b) if x is not None]
    tolerance = near_tie_tolerance(*given)
    ys, xs = np.nonzero(mask_a != mask_b)
    if len(ys) == 0:
        return
    height, width = mask_a.shape
    first, second = mask_a[ys, xs].astype(np.int64), mask_b[ys, xs].astype(np.int64)
    gaps = []
    for logits in given:
        rows = _nearest_exact_indices(logits.shape[1], height)[ys]
        columns = _nearest_exact_indices(logits.shape[2], width)[xs]
        at = logits[:, rows, columns]  # (C, n) logits of each differing pixel's source
        top = np.delete(at, VOID, axis=0).max(axis=0)
        chosen = np.minimum(at[first, np.arange(len(ys))], at[second, np.arange(len(ys))])
        gaps.append(top - chosen)  # how far the lower of the two classes is from the top
    gap = np.min(gaps, axis=0)  # a near-tie in either computation's logits will do
    real = np.nonzero(gap > tolerance)[0]
    assert len(real) == 0, (
        f"{name}: {len(real)} of {len(ys)} differing pixels (of {height * width}) are not "
        f"near-ties (tolerance {tolerance:.3g}): "
        + ", ".join(
            f"(y={ys[i]}, x={xs[i]}) class {first[i]} vs {second[i]}, "
            f"{gap[i]:.3g} below the top logit"
            for i in real[:5]
        )
    )


def assert_detections_match(
    a: Prediction,
    b: Prediction,
    image_shape: Sequence[int],
    config: PredictorConfig,
    *,
    name: str = "detections",
) -> None:
    """Asserts two predictions' detections of one image agree to float rounding.

    Every detection of one is matched to one of the other of the same class, with every box
    coordinate within ``BOX_TOLERANCE_FRACTION * max(H, W)`` pixels and the score within
    :data:`SCORE_TOLERANCE`; one left without a match must sit at a decision boundary of
    ``config`` (see the module docstring). Order is not compared: near-equal scores may swap.

    Args:
        a, b: the two predictions (boxes (N, 4) xyxy pixels, scores (N,), classes (N,)).
        image_shape: the image's (H, W, ...) in pixels.
        config: the post-processing options both ran with (threshold, NMS IoU, top-k).
        name: what the failure message calls them.
    """
    box_tolerance = BOX_TOLERANCE_FRACTION * max(image_shape[0], image_shape[1])
    unmatched_b = list(range(len(b.boxes)))
    unmatched_a = []
    for i in np.argsort(-a.scores, kind="stable"):
        candidates = [
            j
            for j in unmatched_b
            if b.classes[j] == a.classes[i]
            and np.abs(b.boxes[j] - a.boxes[i]).max() <= box_tolerance
            and abs(float(b.scores[j]) - float(a.scores[i])) <= SCORE_TOLERANCE
        ]
        if candidates:
            unmatched_b.remove(min(candidates, key=lambda j: np.abs(b.boxes[j] - a.boxes[i]).max()))
        else:
            unmatched_a.append(i)
    for own, other, left in ((a, b, unmatched_a), (b, a, unmatched_b)):
        for i in left:
            assert _at_a_boundary(own, other, i, config), (
                f"{name}: detection class {own.classes[i]} box {own.boxes[i].tolist()} score "
                f"{own.scores[i]:.6f} has no match within {box_tolerance:.3g} px and score "
                f"{SCORE_TOLERANCE} in the other ({len(a.boxes)} vs {len(b.boxes)} detections)"
            )


def predict_with_logits(
    predictor: Predictor, images: Sequence[np.ndarray] | np.ndarray | torch.Tensor
) -> tuple[list[Prediction], torch.Tensor]:
    """``predictor.predict(images)`` and the network's segmentation logits of that call,
    (B, C, h, w) at the network resolution, one per image (torch or onnxruntime backend,
    ``mask_mode="nearest"``, no CUDA graph: those replay without calling the network)."""
    if predictor.config.mask_mode != "nearest":
        raise ValueError("predict_with_logits reads the network's logits: mask_mode 'nearest'")
    recorded: list[torch.Tensor] = []
    if predictor.session is not None:
        owner, attribute = predictor.session, "run"
    else:
        owner, attribute = predictor, "network"
    original = getattr(owner, attribute)

    def recording(*args, **kwargs):
        outputs = original(*args, **kwargs)
        seg_logits = outputs[0] if predictor.session is not None else outputs.seg_logits
        recorded.append(seg_logits.detach().float().cpu())
        return outputs

    setattr(owner, attribute, recording)
    try:
        predictions = predictor.predict(images)
    finally:
        setattr(owner, attribute, original)
    if not recorded:
        raise ValueError("the predictor never called its network (a CUDA graph replay?)")
    return predictions, torch.cat(recorded)


def _at_a_boundary(own: Prediction, other: Prediction, i: int, config: PredictorConfig) -> bool:
    """Whether detection ``i`` of ``own`` may be missing from ``other`` by float rounding."""
    score = float(own.scores[i])
    if abs(score - config.score_threshold) <= SCORE_TOLERANCE:
        return True
    # the top-k cut: ``other`` kept max_detections, its lowest as high as this one
    full = len(other.scores) >= config.max_detections
    if full and abs(score - float(other.scores.min())) <= SCORE_TOLERANCE:
        return True
    same = other.classes == own.classes[i]
    if same.any():
        iou = box_iou(torch.from_numpy(own.boxes[i : i + 1]), torch.from_numpy(other.boxes[same]))
        return bool((iou - config.nms_iou).abs().min() <= IOU_TOLERANCE)
    return False


def _numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values, np.float32)
