"""perception_node's frame intake over real DDS (issue 23 items 1, 3 and 5): frames taken by the
inference thread when the model is ready, as CDR bytes; superseded frames counted from the
publishers' sequence numbers and never read; outputs built only for subscribers; batches
pipelined with each camera's frames answered in order.

The node runs in this process (spun on its own thread) so that a test can hold its model and
count what it reads and builds; every frame and output goes through Fast DDS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from helpers.in_process_node import InProcessNode
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from ros_client import RELIABLE, RosClient
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from mtl_perception.data.synthetic import generate_scene
from mtl_perception.inference.predictor import Predictor, PredictorConfig, mask_scale
from mtl_perception.ros import node as node_module
from mtl_perception.ros.conversions import encode_image
from mtl_perception.ros.frame_intake import PublisherSequences

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PARAMS = {
    "input_width": 256,
    "input_height": 128,
    "score_threshold": 0.3,
    "max_detections": 10,
    "qos_reliability": "reliable",  # nothing lost on the way: every gap is a replaced frame
    "diagnostics_period": 0.3,
}
# The camera's publisher: reliable, and deep enough that it never blocks on the node.
CAMERA_QOS = QoSProfile(
    depth=200, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("intake")
    return str(save_model(folder / "m.pt", calibrated_small_model(config=SMALL_NAMED)))


@pytest.fixture
def client(ros_env) -> Iterator[RosClient]:
    ros = RosClient(int(ros_env["ROS_DOMAIN_ID"]))
    yield ros
    ros.close()


def _in_namespace(client: RosClient, name: str, params: dict) -> InProcessNode:
    """A PerceptionNode named ``perception`` in namespace ``/<name>``: camera ``c`` reads
    ``/<name>/c/image`` (the unnamed one ``/<name>/image``) and publishes
    ``/<name>/perception/c/detections``, ...."""
    return InProcessNode(client, "perception", params, remaps=[f"__ns:=/{name}"])


@pytest.fixture
def start(client) -> Iterator:
    nodes = []

    def started(name: str, **params) -> InProcessNode:
        nodes.append(_in_namespace(client, name, params))
        return nodes[-1]

    yield started
    for running in nodes:
        running.close()


def _frame(rgb: np.ndarray, sec: int, encoding: str = "rgb8") -> Image:
    header = Header(frame_id="camera")
    header.stamp.sec = sec
    pixels = rgb[..., ::-1] if encoding == "bgr8" else rgb
    return encode_image(pixels, encoding, header)


def _stamps(client: RosClient, topic: str) -> list[int]:
    return [m.header.stamp.sec for m in client.messages(topic)]


def _answered(client: RosClient, topic: str, sec: int) -> bool:
    """Waits (up to 60 s) for an output of ``topic`` with the stamp ``sec``."""
    return client.wait_for(lambda: sec in _stamps(client, topic), timeout=60)


def _camera(client: RosClient, topic: str):
    publisher = client.publisher(topic, Image, CAMERA_QOS)
    assert client.wait_for(lambda: publisher.get_subscription_count() > 0, timeout=30)
    return publisher


def _subscribe(client: RosClient, running: InProcessNode, topic: str, kind: type) -> None:
    """Subscribes to the node's output ``topic`` and waits until the node sees the subscriber
    (it builds an output only for subscribers)."""
    client.subscribe(topic, kind, RELIABLE)
    publisher = next(p for p in running.node.publishers if p.topic_name == topic)
    assert client.wait_for(lambda: publisher.get_subscription_count() > 0, timeout=30)


def _balanced(node) -> bool:
    c = node.counters
    return c.received == c.processed + c.dropped + c.rejected


class HeldModel:
    """Holds the node's model inside ``submit`` until released, and counts the frames it got."""

    def __init__(self, node) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.batches: list[int] = []
        submit = node.predictor.submit

        def held(images, **kwargs):
            self.batches.append(len(images))
            self.entered.set()
            assert self.release.wait(60)
            return submit(images, **kwargs)

        node.predictor.submit = held


def test_frames_superseded_while_the_model_is_busy_are_counted_and_never_read(
    client, start, checkpoint, monkeypatch
):
    """While the model holds one frame, 30 more arrive on a depth-1 input: the middleware keeps
    only the newest, the node reads exactly two frames in all, and the 29 it never took are
    counted as received and dropped from the publisher's sequence numbers."""
    reads = []
    read_image = node_module.read_image
    monkeypatch.setattr(node_module, "read_image", lambda data: reads.append(1) or read_image(data))
    running = start("held_node", checkpoint=checkpoint, **PARAMS)
    held = HeldModel(running.node)
    _subscribe(client, running, "/held_node/perception/detections", Detection2DArray)
    camera = _camera(client, "/held_node/image")
    rgb = generate_scene(320, 240, 1)[0]
    camera.publish(_frame(rgb, 1))
    assert held.entered.wait(30)
    for sec in range(2, 32):
        camera.publish(_frame(rgb, sec))
    time.sleep(1.0)  # all delivered into the node's one-frame reader meanwhile
    held.release.set()
    assert client.wait_for(
        lambda: 31 in _stamps(client, "/held_node/perception/detections"), timeout=60
    )
    assert client.wait_for(lambda: _balanced(running.node), timeout=10)
    counters = running.node.counters
    assert _stamps(client, "/held_node/perception/detections") == [1, 31]
    assert (counters.received, counters.processed, counters.dropped) == (31, 2, 29)
    assert len(reads) == 2  # 29 frames never became Python objects
    assert held.batches == [1, 1]


def test_under_overload_every_frame_is_accounted_for_per_camera_and_answered_in_order(
    client, start, checkpoint
):
    """Two cameras at full speed (about 10x what the CPU model takes), with malformed frames
    mixed in: once idle, each camera's received equals what was published to it and
    received = processed + dropped + rejected; each camera's outputs come in stamp order.
    A malformed frame superseded before it was taken is dropped, not rejected: it is never
    read, so nothing can know it was malformed."""
    cameras = ["front", "rear"]
    running = start("busy_node", checkpoint=checkpoint, cameras=cameras, **PARAMS)
    publishers = {}
    for name in cameras:
        _subscribe(client, running, f"/busy_node/perception/{name}/detections", Detection2DArray)
        publishers[name] = _camera(client, f"/busy_node/{name}/image")
    rgb = generate_scene(160, 96, 2)[0]
    bad = _frame(rgb, 0)
    bad.step = 1  # shorter than a row: rejected ("step")
    # One frame each first, answered: the node has then taken a frame of each publisher, so it
    # can count every later one from their sequence numbers (frame_intake.py: frames a publisher
    # sent before its first taken one cannot be told from frames sent before the node subscribed).
    for name in cameras:
        publishers[name].publish(_frame(rgb, 1))
        assert _answered(client, f"/busy_node/perception/{name}/detections", 1)
    sent = {name: 1 for name in cameras}
    for sec in range(2, 122):  # the last one good
        for name in cameras:
            if sec % 10 == 0:
                publishers[name].publish(bad)
            else:
                publishers[name].publish(_frame(rgb, sec))
            sent[name] += 1
        time.sleep(0.005)

    def idle() -> bool:
        return all(
            c.counters.received == sent[c.name] and _balanced(running.node)
            for c in running.node._cameras
        )

    assert client.wait_for(idle, timeout=60), [c.counters for c in running.node._cameras]
    for state in running.node._cameras:
        counters = state.counters
        assert counters.received == sent[state.name] == 121
        assert counters.received == counters.processed + counters.dropped + counters.rejected
        assert counters.rejected <= 12  # 12 sent, those superseded before taken dropped
        assert counters.rejected_by_reason == (
            {"step": counters.rejected} if counters.rejected else {}
        )
        assert counters.dropped > counters.processed > 0  # it was overloaded
        topic = f"/busy_node/perception/{state.name}/detections"
        processed = counters.processed
        assert client.wait_for(lambda t=topic, n=processed: len(_stamps(client, t)) >= n, 30)
        stamps = _stamps(client, topic)
        assert stamps == sorted(set(stamps)) and len(stamps) == counters.processed
        assert stamps[-1] == 121  # the newest frame is answered once the input stops


def test_a_message_that_is_not_a_valid_image_is_rejected_and_the_node_goes_on(
    client, start, checkpoint
):
    running = start("bytes_node", checkpoint=checkpoint, **PARAMS)
    _subscribe(client, running, "/bytes_node/perception/detections", Detection2DArray)
    camera = _camera(client, "/bytes_node/image")
    frame = serialize_message(_frame(generate_scene(64, 32, 3)[0], 7))
    camera.publish(frame[:100])  # cut inside the pixel data: its length runs past the end
    assert client.wait_for(lambda: running.node.counters.rejected == 1, timeout=30)
    assert running.node.counters.rejected_by_reason == {"serialization": 1}
    camera.publish(frame)
    assert client.wait_for(
        lambda: 7 in _stamps(client, "/bytes_node/perception/detections"), timeout=60
    )


def test_an_output_nobody_subscribes_to_is_not_built(client, start, checkpoint, monkeypatch):
    built = {"mask": 0, "detections": 0}
    image_bytes, detections_bytes = node_module.image_bytes, node_module.detections_bytes

    def counting_image(*args):
        built["mask"] += 1
        return image_bytes(*args)

    def counting_detections(*args):
        built["detections"] += 1
        return detections_bytes(*args)

    monkeypatch.setattr(node_module, "image_bytes", counting_image)
    monkeypatch.setattr(node_module, "detections_bytes", counting_detections)
    running = start("lean_node", checkpoint=checkpoint, **PARAMS)
    _subscribe(client, running, "/lean_node/perception/detections", Detection2DArray)
    camera = _camera(client, "/lean_node/image")
    rgb = generate_scene(320, 240, 4)[0]
    camera.publish(_frame(rgb, 1))
    assert client.wait_for(
        lambda: 1 in _stamps(client, "/lean_node/perception/detections"), timeout=60
    )
    assert built == {"mask": 0, "detections": 1}
    _subscribe(client, running, "/lean_node/perception/semantic", Image)
    camera.publish(_frame(rgb, 2))
    assert client.wait_for(
        lambda: 2 in _stamps(client, "/lean_node/perception/semantic"), timeout=60
    )
    assert built == {"mask": 1, "detections": 2}
    mask = client.messages("/lean_node/perception/semantic")[0]
    expected = running.node.predictor.predict(rgb)[0].mask
    assert (mask.width, mask.height, mask.encoding) == (320, 240, "mono8")
    assert np.array_equal(np.frombuffer(bytes(mask.data), np.uint8).reshape(240, 320), expected)


def test_bgr8_frames_give_the_results_of_the_same_pixels_in_rgb8(client, start, checkpoint):
    """The channel order of a bgr8 frame is swapped on the device, not on the host: the outputs
    equal those of the same pixels sent as rgb8, exactly."""
    running = start("order_node", checkpoint=checkpoint, **PARAMS)
    for topic, kind in (("semantic", Image), ("detections", Detection2DArray)):
        _subscribe(client, running, f"/order_node/perception/{topic}", kind)
    camera = _camera(client, "/order_node/image")
    rgb = generate_scene(320, 240, 5)[0]
    camera.publish(_frame(rgb, 1, "rgb8"))
    assert client.wait_for(
        lambda: 1 in _stamps(client, "/order_node/perception/detections"), timeout=60
    )
    camera.publish(_frame(rgb, 2, "bgr8"))
    assert client.wait_for(
        lambda: 2 in _stamps(client, "/order_node/perception/detections"), timeout=60
    )
    assert client.wait_for(
        lambda: len(client.messages("/order_node/perception/semantic")) == 2, timeout=30
    )
    first, second = client.messages("/order_node/perception/semantic")
    assert bytes(first.data) == bytes(second.data)
    a, b = client.messages("/order_node/perception/detections")
    assert len(a.detections) == len(b.detections)
    for x, y in zip(a.detections, b.detections, strict=True):
        assert x.bbox == y.bbox and x.results == y.results


def test_mask_at_the_network_resolution_maps_back_to_the_frame_by_the_documented_scale(
    client, start, checkpoint
):
    running = start("coarse_node", checkpoint=checkpoint, mask_resolution="network", **PARAMS)
    _subscribe(client, running, "/coarse_node/perception/semantic", Image)
    camera = _camera(client, "/coarse_node/image")
    rgb = generate_scene(320, 240, 6)[0]
    camera.publish(_frame(rgb, 1))
    assert client.wait_for(lambda: client.messages("/coarse_node/perception/semantic"), timeout=60)
    mask = client.messages("/coarse_node/perception/semantic")[0]
    assert (mask.width, mask.height) == (256, 128)
    coarse = np.frombuffer(bytes(mask.data), np.uint8).reshape(128, 256)
    assert np.array_equal(coarse, running.node.predictor.predict(rgb)[0].mask)
    # Frame pixel (x, y) lies in mask pixel ((x + 0.5) / sx, (y + 0.5) / sy) rounded down: the
    # frame-size mask a node with the default mask_resolution publishes, exactly.
    sx, sy = mask_scale((240, 320), (128, 256))
    assert (sx, sy) == (320 / 256, 240 / 128)
    columns = np.floor((np.arange(320) + 0.5) / sx).astype(int)
    rows = np.floor((np.arange(240) + 0.5) / sy).astype(int)
    config = PredictorConfig(input_height=128, input_width=256, score_threshold=0.3)
    full = Predictor.from_checkpoint(checkpoint, config).predict(rgb)[0].mask
    assert np.array_equal(coarse[rows][:, columns], full)


def test_sequence_numbers_count_what_each_publisher_sent_between_two_takes():
    sequences = PublisherSequences()
    a = {"data": b"a" * 16}
    b = {"data": b"b" * 16}

    def info(gid, n):
        return {"publication_sequence_number": n, "publisher_gid": gid}

    assert sequences.skipped(info(a, 5)) == 0  # a publisher's first: nothing known before it
    assert sequences.skipped(info(a, 6)) == 0
    assert sequences.skipped(info(b, 1)) == 0  # another publisher on the same topic
    assert sequences.skipped(info(a, 10)) == 3
    assert sequences.skipped(info(b, 4)) == 2
    assert sequences.skipped(info(a, 2)) == 0  # the same gid starting again: no negative gaps
    assert sequences.skipped(info(a, 4)) == 1
    assert sequences.skipped({"publication_sequence_number": None}) == 0  # middleware says none


def test_without_publisher_ids_only_a_topic_with_one_publisher_is_counted():
    """rclpy 7 (Jazzy) gives sequence numbers but no publisher_gid."""
    publishers = [1]
    sequences = PublisherSequences(lambda: publishers[0])
    assert sequences.skipped({"publication_sequence_number": 3}) == 0
    assert sequences.skipped({"publication_sequence_number": 7}) == 3
    publishers[0] = 2  # a second camera driver on the topic: numbers interleave, none counted
    assert sequences.skipped({"publication_sequence_number": 2}) == 0
    assert sequences.skipped({"publication_sequence_number": 9}) == 0
    publishers[0] = 1
    assert sequences.skipped({"publication_sequence_number": 10}) == 0  # a fresh start
    assert sequences.skipped({"publication_sequence_number": 12}) == 1


@pytest.mark.parametrize(
    ("device", "params", "expected"),
    [
        ("cpu", {}, {"precision": "fp32", "cuda_graph": False, "preallocate": False}),
        ("cuda", {}, {"precision": "fp16", "cuda_graph": True, "preallocate": True}),
        ("cuda:1", {"precision": "bf16"}, {"precision": "bf16", "cuda_graph": True}),
        ("cuda", {"compile": "default"}, {"cuda_graph": False, "compile": "default"}),
        ("cuda", {"backend": "onnxruntime"}, {"cuda_graph": False, "precision": "fp32"}),
        ("cuda", {"cuda_graph": False, "preallocate": False}, {"cuda_graph": False}),
        ("cpu", {"mask_resolution": "network"}, {"mask_resolution": "network"}),
    ],
)
def test_the_node_runs_the_fastest_correct_path_of_its_device_by_default(device, params, expected):
    """Node parameters -> PredictorConfig: cuda_graph + fp16 + preallocate on CUDA (behind the
    fallback), fp32 eager on the CPU; every shared field taken by name."""
    from mtl_perception.ros.parameters import NodeParameters

    values = {"score_threshold": 0.4, "input_width": 320, **params}
    config = node_module.predictor_config(NodeParameters(**values), device)
    assert config.device == device
    assert (config.score_threshold, config.input_width) == (0.4, 320)
    for name, value in expected.items():
        assert getattr(config, name) == value, name
