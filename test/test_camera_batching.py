"""Several cameras in one forward pass, in process (no ROS, no training): the order in which
waiting cameras are batched, and images of different sizes sharing one call of the network.
test_multi_camera.py checks the same over DDS with a running node."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.models import SMALL_NAMED, calibrated_small_model
from helpers.oracle import (
    assert_detections_match,
    assert_masks_match,
    near_tie_tolerance,
    predict_with_logits,
)

from mtl_perception.data.synthetic import generate_scene
from mtl_perception.inference import Predictor, PredictorConfig
from mtl_perception.ros.frame_slot import CameraSlots


@pytest.fixture(scope="module")
def model():
    """The network of test_multi_camera's node (test_node's checkpoint): calibrated, untrained,
    so its masks have near-tied logits that any change of rounding can flip."""
    return calibrated_small_model(config=SMALL_NAMED)


# -- the batch order ---------------------------------------------------------------------------


def test_no_camera_starves_when_more_cameras_wait_than_a_batch_holds():
    """Four cameras sending continuously, batches of one. Ordered by their newest frame's age,
    camera 3 (whose frame always arrives first) would win every time and the others starve; the
    camera whose slot has held a frame longest goes first instead, so they are served in turn."""
    now = [0.0]
    slots = CameraSlots(4, clock=lambda: now[0])
    served = []
    for _ in range(12):
        for camera in (3, 2, 1, 0):
            now[0] += 1.0
            slots[camera].put(f"frame of {camera}")
        (taken,) = slots.take_batch(1, timeout=0)
        served.append(taken[0])
    assert served == [3, 2, 1, 0] * 3
    slots[0].put("frame of 0")
    batch = slots.take_batch(3, timeout=0)  # four waiting: the three that waited longest
    assert [index for index, _ in batch] == [3, 2, 1]
    assert slots.close() == [True, False, False, False]  # the one left is reported at close


# -- cameras of different sizes in one forward pass --------------------------------------------


@pytest.mark.parametrize("resize", ["device", "host"])
@pytest.mark.parametrize("preallocate", [False, True])
def test_images_of_different_sizes_share_one_forward_pass_and_match_single_images(
    model, resize, preallocate
):
    """Four images, three sizes (two of one size: staging buffers are per size), in ONE call of
    the network; each result equals that image's result alone to float rounding
    (helpers/oracle.py): a batch of 4 and a batch of 1 run other convolution kernels, so logits
    move by rounding and a mask pixel may flip only where its top two classes are that close
    (9 of 307,200 pixels did on an AMD EPYC with AVX-512)."""
    config = PredictorConfig(
        input_height=128,
        input_width=256,
        score_threshold=0.3,
        max_detections=10,
        resize=resize,
        preallocate=preallocate,
    )
    single = Predictor(model, SMALL_NAMED, config)
    batched = Predictor(model, SMALL_NAMED, config)
    calls = []
    hook = model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    sizes = [(640, 480), (1280, 720), (640, 480), (333, 211)]
    images = [generate_scene(w, h, seed=i)[0] for i, (w, h) in enumerate(sizes)]
    try:
        results, logits = predict_with_logits(batched, images)
    finally:
        hook.remove()
    assert calls == [(4, 3, 128, 256)]
    for index, (image, result) in enumerate(zip(images, results, strict=True)):
        (expected,), alone = predict_with_logits(single, image)
        assert result.mask.shape == image.shape[:2]
        # the network's outputs agree to rounding (half the tolerance of a near-tie) ...
        difference = float((logits[index] - alone[0]).abs().max())
        assert difference <= near_tie_tolerance(alone[0]) / 2, (index, difference)
        # ... and so do the masks and detections made from them
        assert_masks_match(result.mask, expected.mask, logits[index], alone[0], name=f"{index}")
        assert_detections_match(result, expected, image.shape, config, name=f"image {index}")
    assert sum(len(r.boxes) for r in results) > 0  # the detections compared are not none


def test_a_real_difference_in_a_batched_image_is_caught(model):
    """The oracle of the test above is not blind: the same comparison with one image of the
    batch shifted by one pixel (a defect, not rounding) fails on its mask."""
    config = PredictorConfig(input_height=128, input_width=256, score_threshold=0.3)
    predictor = Predictor(model, SMALL_NAMED, config)
    image = generate_scene(640, 480, seed=0)[0]
    shifted = np.roll(image, 1, axis=1)
    other_camera = generate_scene(333, 211, seed=3)[0]
    (result, _), logits = predict_with_logits(predictor, [shifted, other_camera])
    (expected,), alone = predict_with_logits(predictor, image)
    with pytest.raises(AssertionError, match="not near-ties"):
        assert_masks_match(result.mask, expected.mask, logits[0], alone[0])
