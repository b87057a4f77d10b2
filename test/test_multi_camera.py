"""One perception_node, several cameras (issue 15, item 1), over real DDS.

Three cameras of different sizes and encodings, one of them compressed, served by one node whose
model runs only when the test lets it (helpers/gated_node.py): while the model is held on one
frame, each camera's next frame waits in its slot, so when the model is let go the three frames
go through ONE forward pass together, by construction and not by timing luck. Every input is
subscribed RELIABLE, so whatever is dropped is dropped by the node. The single-camera node is
checked against the Predictor by test_node.py; here each camera's results are checked against
the same Predictor on that camera's frame alone. The batch order and the one forward pass over
images of different sizes are tested in process, in the fast selection, by
test_camera_batching.py.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import test_node
from diagnostic_msgs.msg import DiagnosticArray
from helpers.oracle import assert_detections_match, assert_masks_match, predict_with_logits
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.duration import Duration
from rclpy.qos import QoSProfile
from ros_client import RELIABLE, RosClient
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from test_conversions import IEND, PNG, png_chunk
from test_node import NODE_PARAMS, _boxes
from vision_msgs.msg import Detection2DArray

from mtl_perception.data.synthetic import generate_scene
from mtl_perception.inference import Prediction
from mtl_perception.ros.cameras import PERCEPTION_OUTPUTS, output_topic
from mtl_perception.ros.node_process import start_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# test_node's module fixtures, reused: the model's checkpoint, the ROS environment, the client
# node and the Predictor the node's results are checked against.
checkpoint, env, client, predictor = (
    test_node.checkpoint,
    test_node.env,
    test_node.client,
    test_node.predictor,
)

GATED_NODE = Path(__file__).resolve().parent / "helpers" / "gated_node.py"
DEPTH = 20  # input history: every frame the test sends is delivered
# name -> (width, height, encoding); "jpeg" is the compressed camera
CAMERAS = {"front": (640, 480, "rgb8"), "left": (960, 540, "bgr8"), "rear": (800, 400, "jpeg")}
_names = itertools.count()


class MultiCameraNode:
    """The running 3-camera node, its gate folder and log, and the test's publishers."""

    def __init__(self, client: RosClient, name: str, gate: Path, log: Path, process) -> None:
        self.client, self.name, self.gate, self.log, self.process = (
            client,
            name,
            gate,
            log,
            process,
        )
        self.held = 0  # model calls held so far (entered-N files)
        qos = QoSProfile(depth=DEPTH, reliability=RELIABLE.reliability)
        self.publishers = {
            camera: client.publisher(
                f"/{camera}/image/compressed" if encoding == "jpeg" else f"/{camera}/image",
                CompressedImage if encoding == "jpeg" else Image,
                qos,
            )
            for camera, (_, _, encoding) in CAMERAS.items()
        }
        for camera in CAMERAS:
            client.subscribe(self.topic(camera, "semantic"), Image, RELIABLE)
            client.subscribe(self.topic(camera, "detections"), Detection2DArray, RELIABLE)
        client.subscribe("/diagnostics", DiagnosticArray, RELIABLE)

    def topic(self, camera: str, output: str) -> str:
        return f"/{self.name}/{output_topic(camera, output)[2:]}"

    def outputs(self, camera: str, sec: int) -> tuple[Image, Detection2DArray] | None:
        masks = [
            m
            for m in self.client.messages(self.topic(camera, "semantic"))
            if m.header.stamp.sec == sec
        ]
        dets = [
            m
            for m in self.client.messages(self.topic(camera, "detections"))
            if m.header.stamp.sec == sec
        ]
        return (masks[0], dets[0]) if masks and dets else None

    def diagnostics(self, since: float = 0.0) -> dict[str, dict[str, str]]:
        """The node's latest /diagnostics (stamped at ``since``, time.time() seconds, or later):
        status name ('node', or the camera) -> values."""
        messages = [
            m
            for m in self.client.messages("/diagnostics")
            if m.status
            and m.status[0].name == f"{self.name}: perception"
            and m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec >= since
        ]
        if not messages:
            return {}
        found = {}
        for status in messages[-1].status:
            key = status.name.removeprefix(f"{self.name}: ").removeprefix("camera ")
            found["node" if key == "perception" else key] = {
                kv.key: kv.value for kv in status.values
            }
        return found

    def counts(
        self, condition, timeout: float = 30.0, since: float = 0.0
    ) -> dict[str, dict[str, int]]:
        """The first diagnostics (stamped at ``since`` or later) whose counters, per camera and
        the node's ('node'), satisfy ``condition``."""

        def matching():
            values = self.diagnostics(since)
            if set(values) != {"node", *CAMERAS}:
                return None
            keys = ("received", "processed", "dropped", "rejected", "failed")
            found = {name: {k: int(v[k]) for k in keys} for name, v in values.items()}
            return found if condition(found) else None

        found = self.client.wait_for(matching, timeout=timeout)
        assert found, (self.diagnostics(), self.text()[-3000:])
        return found

    def settled(self) -> dict[str, dict[str, int]]:
        """The counters once the node is idle: a snapshot taken after this call (so it counts
        every frame sent before it; the test's inputs are reliable and in order) in which every
        camera's frames are all processed, dropped or rejected."""
        return self.counts(balanced, since=time.time())

    def text(self) -> str:
        return self.log.read_text()

    def delivered(self) -> None:
        """Blocks until every frame published so far is in the node's input readers (reliable:
        acknowledged). The node takes, and counts, a frame only when its model can use it, so
        its counters cannot say that a frame has arrived."""
        for publisher in self.publishers.values():
            assert publisher.wait_for_all_acked(Duration(seconds=30)), self.text()[-3000:]

    def hold(self) -> None:
        """From now on each model call waits until :meth:`release`."""
        (self.gate / "hold").touch()

    def wait_entered(self) -> None:
        """Blocks until the next held model call has started (it holds a frame)."""
        entered = self.gate / f"entered-{self.held}"
        assert self.client.wait_for(entered.exists, timeout=60), self.text()[-3000:]

    def release(self) -> None:
        """Lets the held model call finish, and holds none after it."""
        (self.gate / "hold").unlink()
        (self.gate / f"release-{self.held}").touch()
        self.held += 1


def balanced(counts: dict[str, dict[str, int]]) -> bool:
    """received = processed + dropped + rejected, for each camera and the node."""
    return all(
        c["received"] == c["processed"] + c["dropped"] + c["rejected"] for c in counts.values()
    )


def _header(camera: str, sec: int) -> Header:
    header = Header(frame_id=f"{camera}_optical_frame")
    header.stamp.sec, header.stamp.nanosec = sec, 1000 + list(CAMERAS).index(camera)
    return header


def _frame(camera: str, sec: int, seed: int) -> tuple[Image | CompressedImage, np.ndarray]:
    """Camera ``camera``'s message at stamp ``sec`` and the RGB image the node will see."""
    width, height, encoding = CAMERAS[camera]
    rgb = generate_scene(width, height, seed=seed)[0]
    if encoding == "jpeg":
        ok, data = cv2.imencode(
            ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
        )
        assert ok
        seen = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return CompressedImage(
            header=_header(camera, sec), format="jpeg", data=data.tobytes()
        ), seen
    pixels = rgb[..., ::-1] if encoding == "bgr8" else rgb
    msg = Image(
        header=_header(camera, sec),
        height=height,
        width=width,
        encoding=encoding,
        step=width * 3,
        data=np.ascontiguousarray(pixels).tobytes(),
    )
    return msg, rgb


def _check(mask_msg: Image, det_msg: Detection2DArray, camera: str, sec: int, rgb, predictor):
    """The camera's outputs carry its own frame's header and equal the Predictor's on that frame
    alone to float rounding (the node ran it in a batch of up to 3, whose convolutions round
    otherwise: helpers/oracle.py, with the logits of the frame alone)."""
    width, height, _ = CAMERAS[camera]
    for msg in (mask_msg, det_msg):
        assert msg.header == _header(camera, sec), (camera, msg.header)
    assert (mask_msg.encoding, mask_msg.width, mask_msg.height) == ("mono8", width, height)
    (expected,), logits = predict_with_logits(predictor, rgb)
    mask = np.frombuffer(mask_msg.data, np.uint8).reshape(height, width)
    assert_masks_match(mask, expected.mask, logits[0], name=f"{camera} mask")
    boxes, scores, classes = _boxes(det_msg)
    published = Prediction(mask, boxes.astype(np.float32), scores.astype(np.float32), classes)
    assert_detections_match(published, expected, rgb.shape, predictor.config, name=camera)


@pytest.fixture(scope="module")
def node(checkpoint, env, client, tmp_path_factory):
    name = f"multi_camera_{next(_names)}"
    folder = tmp_path_factory.mktemp(name)
    gate = folder / "gate"
    gate.mkdir()
    log = folder / "node.log"
    params = {
        "checkpoint": checkpoint,
        **NODE_PARAMS,
        "cameras": "[" + ",".join(CAMERAS) + "]",
        "rear.input_transport": "compressed",
        "max_batch": 3,  # the CPU default is 1: batching is what is tested here
        "qos_reliability": "reliable",
        "qos_depth": DEPTH,
    }
    started = start_node(
        name, parameters=params, command=[sys.executable, GATED_NODE, gate], env=env, log=log
    )
    process = started.process
    running = MultiCameraNode(client, name, gate, log, process)
    try:
        topics = [running.topic(camera, "detections") for camera in CAMERAS]

        def active() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited:\n{log.read_text()}")
            names = dict(client.node.get_topic_names_and_types())
            return all(topic in names for topic in topics)

        assert client.wait_for(active, timeout=60), log.read_text()
        # Hand-shake, the model running freely: once each camera's output for its LAST frame
        # sent is back, inputs and outputs are matched both ways for every camera.
        for camera in CAMERAS:
            for sec in range(10, 30):
                running.publishers[camera].publish(_frame(camera, sec, seed=1)[0])
                if client.wait_for(lambda c=camera, s=sec: running.outputs(c, s), timeout=5):
                    break
            else:
                raise AssertionError(f"no output on camera {camera}:\n{log.read_text()}")
        yield running
    finally:
        (gate / "open").touch()  # a held model call would block the node's shutdown
        assert started.stop() == 0, log.read_text()


def test_three_cameras_share_one_forward_pass_and_each_gets_its_own_results(node, predictor):
    baseline = node.settled()["node"]
    passes = {k: v for k, v in node.diagnostics()["node"].items() if k.startswith("batch_size_")}
    node.hold()
    warm, _ = _frame("front", 99, seed=2)
    node.publishers["front"].publish(warm)
    node.wait_entered()  # frame 99 is in the model; the next frames wait in their readers
    frames = {camera: _frame(camera, 100 + i, seed=10 + i) for i, camera in enumerate(CAMERAS)}
    for camera, (msg, _) in frames.items():
        node.publishers[camera].publish(msg)
    node.delivered()
    node.release()
    for i, camera in enumerate(CAMERAS):
        result = node.client.wait_for(lambda c=camera, s=100 + i: node.outputs(c, s), timeout=60)
        assert result, (camera, node.text()[-3000:])
        _check(*result, camera, 100 + i, frames[camera][1], predictor)
    after = node.counts(lambda c: c["node"]["processed"] == baseline["processed"] + 4)
    histogram = node.diagnostics()["node"]
    assert int(histogram["batch_size_3"]) == int(passes.get("batch_size_3", 0)) + 1, histogram
    assert histogram["max_batch"] == "3" and histogram["cameras"] == "3"
    for camera in CAMERAS:
        assert after[camera]["dropped"] == 0 and after[camera]["failed"] == 0, after


def test_a_malformed_frame_on_one_camera_never_affects_another(node, predictor):
    """In one batch: a good frame on front, a PNG that only its decoding finds corrupt on rear
    (rejected on the inference thread, inside the batch), and on left a frame refused at once
    by its subscription. Front's result comes out as usual; each rejection is counted on its
    own camera; the next good frame of every camera is processed."""
    before = node.settled()
    node.hold()
    node.publishers["front"].publish(_frame("front", 199, seed=3)[0])
    node.wait_entered()
    good, rgb = _frame("front", 200, seed=4)
    corrupt = PNG[: PNG.index(b"IDAT") - 4] + png_chunk(b"IDAT", bytes(100)) + IEND
    truncated, _ = _frame("left", 201, seed=5)
    truncated.data = bytes(truncated.data)[:-1]
    node.publishers["front"].publish(good)
    node.publishers["rear"].publish(
        CompressedImage(header=_header("rear", 202), format="png", data=corrupt)
    )
    node.publishers["left"].publish(truncated)
    node.delivered()
    node.release()
    result = node.client.wait_for(lambda: node.outputs("front", 200), timeout=60)
    assert result, node.text()[-3000:]
    _check(*result, "front", 200, rgb, predictor)
    now = node.counts(
        lambda c: (
            c["front"]["processed"] == before["front"]["processed"] + 2
            and c["rear"]["rejected"] == before["rear"]["rejected"] + 1
        )
    )
    assert now["left"]["rejected"] == before["left"]["rejected"] + 1, now
    assert now["front"]["rejected"] == before["front"]["rejected"], now
    for camera in CAMERAS:
        assert now[camera]["failed"] == 0 and now[camera]["dropped"] == 0, now
    values = node.diagnostics()
    assert values["rear"]["rejected_undecodable"] == "1", values["rear"]
    assert values["left"]["rejected_data_length"] == "1", values["left"]
    assert "rejected frame on /rear/image/compressed (undecodable)" in node.text()
    assert "rejected frame on /left/image (data_length)" in node.text()
    assert node.process.poll() is None
    for i, camera in enumerate(CAMERAS):
        msg, seen = _frame(camera, 210 + i, seed=6)
        node.publishers[camera].publish(msg)
        result = node.client.wait_for(lambda c=camera, s=210 + i: node.outputs(c, s), timeout=60)
        assert result, (camera, node.text()[-3000:])
        _check(*result, camera, 210 + i, seen, predictor)


def test_every_frame_of_every_camera_is_accounted_for(node):
    """Frames replaced while waiting (dropped), refused (rejected) and processed: once idle,
    received = processed + dropped + rejected for each camera."""
    before = node.settled()
    node.hold()
    node.publishers["front"].publish(_frame("front", 299, seed=7)[0])
    node.wait_entered()
    sent = {camera: 0 for camera in CAMERAS}
    for sec in range(300, 305):  # five each while the model is held: four of each replaced
        for camera in CAMERAS:
            node.publishers[camera].publish(_frame(camera, sec, seed=8)[0])
            sent[camera] += 1
    bad, _ = _frame("left", 305, seed=8)
    bad.step = 1
    node.publishers["left"].publish(bad)
    sent["left"] += 1
    sent["front"] += 1  # frame 299

    def arrived(c) -> bool:
        return all(c[k]["received"] - before[k]["received"] == sent[k] for k in CAMERAS)

    node.delivered()
    node.release()

    now = node.counts(lambda c: arrived(c) and balanced(c))
    for camera in CAMERAS:
        assert now[camera]["dropped"] - before[camera]["dropped"] == 4, now
    assert now["left"]["rejected"] - before["left"]["rejected"] == 1, now
    assert now["front"]["processed"] - before["front"]["processed"] == 2, now  # 299 and 304


def test_deactivate_releases_every_camera_input_and_output(node, client):
    inputs = ["/front/image", "/left/image", "/rear/image/compressed"]
    outputs = [
        node.topic(camera, output)
        for camera in CAMERAS
        for output in PERCEPTION_OUTPUTS  # overlay and semantic_color: overlay_node's
    ]

    def change(transition: int) -> None:
        request = ChangeState.Request(transition=Transition(id=transition))
        assert client.call(ChangeState, f"/{node.name}/change_state", request).success

    def node_io() -> tuple[int, int]:
        subscribers = sum(client.node.count_subscribers(topic) for topic in inputs)
        publishers = sum(client.node.count_publishers(topic) for topic in outputs)
        return subscribers, publishers

    assert client.wait_for(lambda: node_io() == (3, len(outputs)), timeout=30), node_io()
    change(Transition.TRANSITION_DEACTIVATE)
    assert client.wait_for(lambda: node_io() == (0, 0), timeout=30), node_io()
    change(Transition.TRANSITION_ACTIVATE)
    assert client.wait_for(lambda: node_io() == (3, len(outputs)), timeout=30), node_io()
    for i, camera in enumerate(CAMERAS):  # and every camera works again
        for sec in range(400 + 10 * i, 410 + 10 * i):
            node.publishers[camera].publish(_frame(camera, sec, seed=9)[0])
            if client.wait_for(lambda c=camera, s=sec: node.outputs(c, s), timeout=5):
                break
        else:
            raise AssertionError(f"camera {camera} silent after re-activation")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cameras": "[front,front]"}, "parameter 'cameras' names front more than once"),
        ({"cameras": "[front,2nd]"}, "parameter 'cameras': '2nd' is not a camera name"),
        (
            {"cameras": "[front]", "front.input_transport": "udp"},
            "parameter 'front.input_transport' must be one of ('raw', 'compressed')",
        ),
        # ROS 2 cannot type an empty list: the parameter ends up unset, said in one line
        ({"cameras": "[]"}, "parameter 'cameras' has no value: an empty list ([]) has no type"),
        (
            {"cameras": "[left,right]", "front.input_transport": "compressed"},
            "parameter 'front.input_transport' is for camera 'front', which is not in 'cameras'",
        ),
    ],
)
def test_bad_cameras_fail_configure_with_a_clear_message(
    params,
    message,
    checkpoint,
    env,
    tmp_path,
):
    log = tmp_path / "node.log"
    params = {"checkpoint": checkpoint, **params}
    with start_node("bad_cameras", parameters=params, env=env, log=log) as node:
        assert node.process.wait(timeout=60) != 0
    assert message in log.read_text(), log.read_text()
    assert "Traceback" not in log.read_text()
