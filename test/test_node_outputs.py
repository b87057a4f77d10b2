"""perception_node's mask and its benchmark stand-in, over real DDS (the node runs in
this process so that the test can count what it computes)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from helpers import in_process_node
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from ros_client import RELIABLE, RosClient
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from mtl_perception.data.synthetic import generate_scene
from mtl_perception.inference.device_names import STANDIN_DEVICE
from mtl_perception.inference.standin import STANDIN_BOXES
from mtl_perception.ros.conversions import encode_image

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PARAMS = {
    "input_width": 256,
    "input_height": 128,
    "score_threshold": 0.3,
    "max_detections": 10,
    "qos_reliability": "reliable",
    "diagnostics_period": 0.3,
}


@pytest.fixture
def client(ros_env) -> Iterator[RosClient]:
    ros = RosClient(int(ros_env["ROS_DOMAIN_ID"]))
    yield ros
    ros.close()


class InProcessNode(in_process_node.InProcessNode):
    """The perception node ``name``, its camera input remapped to ``/<name>/image``."""

    def __init__(self, client: RosClient, name: str, params: dict) -> None:
        super().__init__(client, name, params, remaps=[f"image:=/{name}/image"])


def _frame(rgb: np.ndarray, sec: int) -> Image:
    header = Header(frame_id="camera")
    header.stamp.sec = sec
    return encode_image(rgb, "rgb8", header)


def _with_stamp(client: RosClient, topic: str, sec: int):
    found = [m for m in client.messages(topic) if m.header.stamp.sec == sec]
    return found[0] if found else None


def _send(client: RosClient, name: str, rgb: np.ndarray, sec: int) -> None:
    publisher = client.publisher(f"/{name}/image", Image, RELIABLE)
    assert client.wait_for(lambda: publisher.get_subscription_count() > 0, timeout=30)
    publisher.publish(_frame(rgb, sec))
    topic = f"/{name}/detections"
    assert client.wait_for(lambda: _with_stamp(client, topic, sec), timeout=60), "no output"


def test_mask_in_mono8_equals_the_prediction(client, tmp_path):
    """The mask as the model predicted it. Overlay and colour mask, which this test checked
    here too, are the overlay node's now (test_overlay_node, on the same topics)."""
    checkpoint = save_model(tmp_path / "m.pt", calibrated_small_model(config=SMALL_NAMED))
    name = "outputs_node"
    running = InProcessNode(client, name, {"checkpoint": str(checkpoint), **PARAMS})
    try:
        client.subscribe(f"/{name}/semantic", Image, RELIABLE)
        client.subscribe(f"/{name}/detections", Detection2DArray, RELIABLE)
        rgb = generate_scene(320, 240, 4)[0]
        _send(client, name, rgb, 1)
        semantic = client.wait_for(lambda: _with_stamp(client, f"/{name}/semantic", 1), 30)
        assert semantic is not None
        assert running.node.counters.processed == 1

        prediction = running.node.predictor.predict(rgb)[0]
        mask = np.frombuffer(bytes(semantic.data), np.uint8).reshape(240, 320)
        assert semantic.encoding == "mono8" and np.array_equal(mask, prediction.mask)
        assert 0 not in mask  # void is never predicted, so nothing needs mapping to 255
    finally:
        running.close()


def test_benchmark_standin_is_labelled_everywhere(client):
    name = "standin_node"
    client.subscribe("/diagnostics", DiagnosticArray, RELIABLE)
    client.subscribe(f"/{name}/detections", Detection2DArray, RELIABLE)
    running = InProcessNode(client, name, {"device": STANDIN_DEVICE, **PARAMS})  # no checkpoint
    try:
        _send(client, name, generate_scene(320, 240, 4)[0], 7)
        detections = _with_stamp(client, f"/{name}/detections", 7)
        assert len(detections.detections) == STANDIN_BOXES

        def status():
            for message in reversed(client.messages("/diagnostics")):
                for entry in message.status:
                    if entry.name.startswith(f"{name}:"):
                        return entry
            return None

        entry = client.wait_for(status, timeout=30)
        values = {kv.key: kv.value for kv in entry.values}
        assert values["device"] == STANDIN_DEVICE
        assert entry.level == DiagnosticStatus.WARN and "STAND-IN" in entry.message
    finally:
        running.close()
