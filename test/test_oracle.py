"""The near-tie oracle (helpers/oracle.py): float rounding passes, a real difference fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.oracle import (
    BOX_TOLERANCE_FRACTION,
    RELATIVE_ROUNDING,
    SCORE_TOLERANCE,
    assert_detections_match,
    assert_masks_match,
    near_tie_tolerance,
    predict_with_logits,
)

from mtl_perception.inference.predictor import Prediction, Predictor, PredictorConfig
from mtl_perception.model import ModelConfig, MultiTaskNet

SCALE = 17.0  # the largest |logit| of the test models' images (helpers/models.py)
ROUNDING = 2e-5  # what a batch of 4 moved those logits by on an AMD EPYC (2.8e-5 at most)


def _logits(seed: int = 0, shape: tuple[int, int, int] = (12, 48, 64)) -> np.ndarray:
    """(C, h, w) float32 logits in [-SCALE, SCALE], top two classes at least 0.5 apart."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-SCALE, SCALE - 1, shape).astype(np.float32)
    top = rng.integers(1, shape[0], shape[1:])
    np.put_along_axis(logits, top[None], SCALE - 0.5, axis=0)
    logits[0] = SCALE  # void: the largest, never chosen
    return logits


def _mask(logits: np.ndarray) -> np.ndarray:
    """The Predictor's mask: argmax over the classes but void."""
    return (logits[1:].argmax(axis=0) + 1).astype(np.uint8)


def _near_tie(
    logits: np.ndarray, pixels: list[tuple[int, int]], gap: float
) -> tuple[np.ndarray, list[int]]:
    """A copy of ``logits`` whose runner-up at ``pixels`` is ``gap`` below the top class, and
    the runner-up's id there."""
    logits = logits.copy()
    runner_up = []
    for y, x in pixels:
        order = np.argsort(logits[1:, y, x])[::-1] + 1
        logits[order[1], y, x] = logits[order[0], y, x] - gap
        runner_up.append(order[1])
    return logits, runner_up


PIXELS = [(3, 5), (10, 40), (20, 20), (30, 7), (47, 63), (0, 0), (15, 33), (40, 50), (25, 60)]


def test_the_tolerance_is_twice_the_rounding_bound_of_the_largest_logit():
    logits = _logits()
    assert near_tie_tolerance(logits) == pytest.approx(2 * RELATIVE_ROUNDING * SCALE)
    assert near_tie_tolerance(logits, 2 * logits) == pytest.approx(4 * RELATIVE_ROUNDING * SCALE)
    assert near_tie_tolerance(torch.from_numpy(logits)) == near_tie_tolerance(logits)
    # 20 times what a batch of 4 moved the test models' logits by, and far below a real margin
    assert 20 * 2 * ROUNDING < near_tie_tolerance(logits) < 0.01


def test_pixels_that_differ_at_near_ties_pass():
    """Nine pixels (as on the AMD EPYC) take the runner-up class in the other computation,
    their top two logits a few rounding steps apart."""
    logits, runner_up = _near_tie(_logits(), PIXELS, gap=ROUNDING)
    mask = _mask(logits)
    other = mask.copy()
    for (y, x), cls in zip(PIXELS, runner_up, strict=True):
        other[y, x] = cls
    assert_masks_match(mask, other, logits)
    assert_masks_match(other, mask, logits)
    # the other computation's logits, moved by rounding so that the runner-up wins there
    swapped = logits.copy()
    for (y, x), cls in zip(PIXELS, runner_up, strict=True):
        swapped[cls, y, x] += 2 * ROUNDING
    assert (_mask(swapped) == other).all()
    assert_masks_match(mask, other, logits, swapped)
    assert_masks_match(mask, mask, logits)  # equal masks need no logits to agree


def test_a_pixel_far_from_any_tie_fails_and_is_named():
    logits = _logits()
    mask = _mask(logits)
    other = mask.copy()
    other[10, 40] = 1 if mask[10, 40] != 1 else 2  # not its runner-up: 0.5 or more below
    with pytest.raises(AssertionError, match=r"1 of 1 differing pixels .* \(y=10, x=40\)"):
        assert_masks_match(mask, other, logits)
    with pytest.raises(AssertionError, match="not near-ties"):
        assert_masks_match(mask, other, logits, logits)


def test_a_near_tie_only_just_beyond_the_tolerance_fails():
    tolerance = near_tie_tolerance(_logits())
    for gap, passes in ((0.9 * tolerance, True), (1.5 * tolerance, False)):
        logits, runner_up = _near_tie(_logits(), PIXELS[:1], gap=gap)
        mask = _mask(logits)
        other = mask.copy()
        other[PIXELS[0]] = runner_up[0]
        if passes:
            assert_masks_match(mask, other, logits)
        else:
            with pytest.raises(AssertionError, match="not near-ties"):
                assert_masks_match(mask, other, logits)


def test_a_near_tie_of_two_classes_below_the_top_does_not_excuse_a_swap_between_them():
    """Classes 2 and 3 tie, but class 5 is the clear top: a mask saying 2 where the other says
    3 differs by more than rounding."""
    logits = _logits()
    logits[1:, 4, 4] = -SCALE
    logits[5, 4, 4], logits[2, 4, 4], logits[3, 4, 4] = 10.0, 2.0, 2.0
    mask, other = _mask(logits), _mask(logits)
    mask[4, 4], other[4, 4] = 2, 3
    with pytest.raises(AssertionError, match="not near-ties"):
        assert_masks_match(mask, other, logits)


def test_masks_at_the_image_size_read_their_nearest_source_pixel():
    """Masks upsampled (nearest-exact) from 48x64 logits to 480x640: a near-tie source pixel
    excuses its whole 10x10 block; a block whose source is no near-tie does not."""
    logits, runner_up = _near_tie(_logits(), [(20, 30)], gap=ROUNDING)
    mask = np.repeat(np.repeat(_mask(logits), 10, axis=0), 10, axis=1)
    other = mask.copy()
    other[200:210, 300:310] = runner_up[0]
    assert_masks_match(mask, other, logits)
    other[210, 300] = mask[210, 300] % 11 + 1  # another class; its source is (21, 30)
    with pytest.raises(AssertionError, match=r"\(y=210, x=300\)"):
        assert_masks_match(mask, other, logits)
    with pytest.raises(AssertionError, match="shapes"):
        assert_masks_match(mask, other[:-1], logits)


def _prediction(boxes, scores, classes) -> Prediction:
    return Prediction(
        mask=np.zeros((1, 1), np.uint8),
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        scores=np.array(scores, np.float32),
        classes=np.array(classes, np.int64),
    )


CONFIG = PredictorConfig(score_threshold=0.3, max_detections=3, nms_iou=0.55)
IMAGE = (480, 640, 3)  # box tolerance 0.064 px
BOXES = [[10, 10, 50, 60], [100, 100, 200, 180], [300, 50, 400, 300]]


def test_detections_moved_by_rounding_pass_in_any_order():
    a = _prediction(BOXES, [0.9, 0.8, 0.7], [0, 1, 2])
    tolerance = BOX_TOLERANCE_FRACTION * 640
    b = _prediction(
        np.array(BOXES)[[1, 0, 2]] + 0.5 * tolerance,
        np.array([0.8, 0.9, 0.7]) + 0.5 * SCORE_TOLERANCE,
        [1, 0, 2],
    )
    assert_detections_match(a, b, IMAGE, CONFIG)
    assert_detections_match(b, a, IMAGE, CONFIG)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("box", 0.5),  # half a pixel: a real shift
        ("score", 0.01),
        ("class", 1),
        ("extra", 0.6),  # a confident detection only one of them has
    ],
)
def test_a_real_difference_in_detections_fails(change, value):
    a = _prediction(BOXES[:2], [0.9, 0.8], [0, 1])
    boxes, scores, classes = np.array(BOXES[:2], np.float32), np.array([0.9, 0.8]), [0, 1]
    if change == "box":
        boxes[1, 2] += value
    elif change == "score":
        scores[1] += value
    elif change == "class":
        classes = [0, 2]
    else:
        boxes, scores, classes = np.array(BOXES), np.array([0.9, 0.8, value]), [0, 1, 2]
    b = _prediction(boxes, scores, classes)
    for first, second in ((a, b), (b, a)):
        with pytest.raises(AssertionError, match="has no match"):
            assert_detections_match(first, second, IMAGE, CONFIG)


def test_a_detection_at_a_decision_boundary_may_be_in_one_only():
    a = _prediction(BOXES[:2], [0.9, 0.8], [0, 1])
    # at the score threshold
    at_threshold = _prediction(BOXES, [0.9, 0.8, 0.3 + 0.5 * SCORE_TOLERANCE], [0, 1, 2])
    assert_detections_match(a, at_threshold, IMAGE, CONFIG)
    # at the top-k cut: both kept max_detections (3), the last two tied, each kept another
    other_box = [500, 10, 600, 90]
    cut = _prediction(BOXES, [0.9, 0.8, 0.5], [0, 1, 2])
    tied = 0.5 + 0.5 * SCORE_TOLERANCE
    swapped = _prediction([*BOXES[:2], other_box], [0.9, 0.8, tied], [0, 1, 2])
    assert_detections_match(cut, swapped, IMAGE, CONFIG)
    below_the_cut = _prediction([*BOXES[:2], other_box], [0.9, 0.8, 0.4], [0, 1, 2])
    with pytest.raises(AssertionError, match="has no match"):
        assert_detections_match(cut, below_the_cut, IMAGE, CONFIG)
    # at the NMS threshold: IoU 0.55 with a kept box of its class (22 of 40 rows: overlap/union)
    kept = _prediction([[0, 0, 10, 31]], [0.9], [0])
    suppressed_or_not = _prediction([[0, 0, 10, 31], [0, 9, 10, 40]], [0.9, 0.8], [0, 0])
    assert_detections_match(kept, suppressed_or_not, IMAGE, CONFIG)
    clearly_separate = _prediction([[0, 0, 10, 31], [0, 15, 10, 46]], [0.9, 0.8], [0, 0])
    with pytest.raises(AssertionError, match="has no match"):
        assert_detections_match(kept, clearly_separate, IMAGE, CONFIG)


def test_predict_with_logits_returns_the_network_logits_of_that_call():
    torch.manual_seed(0)
    config = ModelConfig(width_multiplier=0.125, input_height=64, input_width=128)
    model = MultiTaskNet(config).eval()
    predictor = Predictor(model, config, PredictorConfig())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in ((90, 150), (50, 70))]
    predictions, logits = predict_with_logits(predictor, images)
    assert logits.shape == (2, 12, 64, 128) and len(predictions) == 2
    assert predictor.network is model  # restored
    for prediction, own, image in zip(predictions, logits, images, strict=True):
        # the Predictor's mask is the argmax (void left out) of exactly these logits, upsampled
        ids = (own[1:].argmax(0) + 1).to(torch.uint8)[None, None]
        expected = F.interpolate(ids, size=image.shape[:2], mode="nearest-exact")[0, 0]
        assert np.array_equal(prediction.mask, expected.numpy())
    with pytest.raises(ValueError, match="mask_mode"):
        predict_with_logits(Predictor(model, config, PredictorConfig(mask_mode="logits")), images)
