"""A fast path that fails to set up or on its first frame falls back to a simpler one.

The CUDA fast paths cannot run here, so their failures are made on purpose: ``torch.compile``
replaced by one that raises (at set-up) or returns a network that raises when first called (the
first frame, where compiled code is built and graphs are captured). bf16 + channels-last is a
real fast path on CPU and carries the cases that need one to work.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.models import SMALL_SCALED_ANCHORS, calibrated_small_model, save_model

from mtl_perception.inference.fallback import FallbackPredictor, describe, simpler_paths
from mtl_perception.inference.predictor import Predictor, PredictorConfig


@pytest.fixture(scope="module")
def model():
    return calibrated_small_model(config=SMALL_SCALED_ANCHORS)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 256, (128, 256, 3), dtype=np.uint8)


def factory(model):
    return lambda config: Predictor(model, SMALL_SCALED_ANCHORS, config)


def assert_same(first, second):
    for field in ("mask", "boxes", "scores", "classes"):
        assert np.array_equal(getattr(first, field), getattr(second, field)), field


def test_each_simpler_path_drops_one_more_feature_down_to_fp32_eager():
    config = PredictorConfig(
        device="cpu", precision="bf16", channels_last=True, compile="default", preallocate=True
    )
    names = [describe(c) for c in simpler_paths(config)]
    assert names == [
        "compile:default+bf16+channels_last+preallocate",
        "bf16+channels_last+preallocate",
        "bf16+channels_last",
        "fp32 eager",
    ]
    assert [describe(c) for c in simpler_paths(PredictorConfig())] == ["fp32 eager"]
    # Post-processing and size options survive every step.
    tuned = PredictorConfig(compile="default", score_threshold=0.6, input_height=64)
    assert all(c.score_threshold == 0.6 and c.input_height == 64 for c in simpler_paths(tuned))


def test_a_compile_that_fails_at_set_up_falls_back_and_says_why(monkeypatch, model, image):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("injected: no compiler on this machine")

    monkeypatch.setattr(torch, "compile", broken_compile)
    lines = []
    config = PredictorConfig(compile="default", preallocate=True, score_threshold=0.05)
    predictor = FallbackPredictor(config, factory(model), lines.append)
    assert predictor.active_path == "preallocate"
    assert predictor.requested_path == "compile:default+preallocate"
    assert lines == predictor.fallbacks
    assert len(lines) == 1
    assert "compile:default+preallocate failed at set-up" in lines[0]
    assert "injected: no compiler" in lines[0] and "falling back to preallocate" in lines[0]
    reference = Predictor(model, SMALL_SCALED_ANCHORS, PredictorConfig(score_threshold=0.05))
    assert_same(predictor.predict(image)[0], reference.predict(image)[0])


def test_a_network_that_fails_on_its_first_frame_falls_back_on_that_frame(
    monkeypatch, model, image
):
    calls = []

    def compile_that_breaks_when_run(module, **kwargs):
        def network(*args):
            calls.append(1)
            raise RuntimeError("injected: graph capture failed")

        return network

    monkeypatch.setattr(torch, "compile", compile_that_breaks_when_run)
    lines = []
    config = PredictorConfig(compile="max-autotune", score_threshold=0.05)
    predictor = FallbackPredictor(config, factory(model), lines.append)
    assert predictor.active_path == "compile:max-autotune" and not lines  # set-up worked
    result = predictor.predict(image)[0]  # the frame that failed is not lost
    assert calls == [1]
    assert predictor.active_path == "fp32 eager"
    assert len(lines) == 1 and "failed at the first frame" in lines[0]
    assert "injected: graph capture failed" in lines[0]
    reference = Predictor(model, SMALL_SCALED_ANCHORS, PredictorConfig(score_threshold=0.05))
    assert_same(result, reference.predict(image)[0])
    predictor.predict(image)  # later frames go straight to the simpler path
    assert calls == [1] and len(predictor.fallbacks) == 1


def test_a_frame_no_path_can_take_is_its_own_fault_and_keeps_the_fast_path(model, image):
    lines = []
    config = PredictorConfig(precision="bf16", channels_last=True, score_threshold=0.05)
    predictor = FallbackPredictor(config, factory(model), lines.append)
    with pytest.raises(ValueError, match="image"):
        predictor.predict(np.zeros((128, 256), np.uint8))  # no colour channels
    assert predictor.active_path == "bf16+channels_last" and not lines and not predictor.fallbacks
    result = predictor.predict(image)[0]  # the fast path itself works
    assert predictor.active_path == "bf16+channels_last"
    assert result.mask.shape == image.shape[:2]


def test_a_failure_the_simplest_path_shares_is_raised_unchanged(monkeypatch, model):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(torch, "compile", broken_compile)
    config = PredictorConfig(compile="default", input_height=100)  # not a multiple of 16
    with pytest.raises(ValueError, match="16"):
        FallbackPredictor(config, factory(model))


BROKEN_COMPILE_NODE = Path(__file__).resolve().parent / "helpers" / "broken_compile_node.py"


@pytest.mark.ros
@pytest.mark.slow
def test_the_node_falls_back_keeps_running_and_names_its_path(tmp_path, model, image):
    """Over DDS: a node asked for compile + channels-last whose compiler breaks logs why, runs
    on the simpler path, answers frames, and its diagnostics name the path it runs. (It asked
    for compile + preallocation before preallocation became a CUDA-only option.)"""
    from conftest import ros_environment
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_client import RELIABLE, RosClient
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2DArray

    from mtl_perception.ros.conversions import encode_image
    from mtl_perception.ros.node_process import start_node

    checkpoint = save_model(tmp_path / "model.pt", model)
    env = ros_environment()
    log = tmp_path / "node.log"
    params = {
        "checkpoint": checkpoint, "device": "cpu", "compile": "default", "channels_last": "true",
        "input_width": 256, "input_height": 128, "diagnostics_period": 0.3,
    }  # fmt: skip
    client = RosClient(int(env["ROS_DOMAIN_ID"]))
    node = start_node(
        "fallback",
        remaps={"image": "/fallback/image"},
        parameters=params,
        command=[sys.executable, BROKEN_COMPILE_NODE],
        env=env,
        log=log,
    )
    process = node.process
    try:
        client.subscribe("/diagnostics", DiagnosticArray, RELIABLE)
        client.subscribe("/fallback/detections", Detection2DArray, RELIABLE)

        def diagnostics() -> dict[str, str] | None:
            assert process.poll() is None, log.read_text()
            for message in reversed(client.messages("/diagnostics")):
                if message.status and message.status[0].name.startswith("fallback:"):
                    return {kv.key: kv.value for kv in message.status[0].values}
            return None

        values = client.wait_for(diagnostics, timeout=90)
        assert values, log.read_text()
        assert values["fast_path"] == "channels_last"
        assert values["fast_path_requested"] == "compile:default+channels_last"
        assert "injected: the compiler is broken" in values["fast_path_fallbacks"]
        text = log.read_text()
        assert "fast path compile:default+channels_last failed at set-up" in text
        assert "Traceback" not in text

        publisher = client.publisher("/fallback/image", Image)
        header = Header(frame_id="camera")
        header.stamp.sec = 7
        message = encode_image(image, "rgb8", header)

        def answered() -> bool:
            publisher.publish(message)
            return any(m.header.stamp.sec == 7 for m in client.messages("/fallback/detections"))

        assert client.wait_for(answered, timeout=60), log.read_text()
    finally:
        code = node.stop()
        client.close()
    assert code == 0, log.read_text()
