"""overlay_node over real DDS: the test plays the camera and the perception node (no model), the
overlay node runs in this process (so the test can read its counters); one end-to-end test with
the real perception node. Pictures are compared pixel for pixel with visualization's."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.models import DET_NAMES, SMALL, SMALL_NAMED, calibrated_small_model, save_model
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from ros_client import LATCHED, RELIABLE, RosClient
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from test_frame_path import PAPER_PALETTE, _old_colorize
from vision_msgs.msg import Detection2DArray, LabelInfo

from mtl_perception.data.labels import class_semantics
from mtl_perception.data.synthetic import generate_scene
from mtl_perception.ros import overlay_node as overlay_module
from mtl_perception.ros.conversions import encode_image
from mtl_perception.ros.messages import detections_message, label_info_message
from mtl_perception.ros.node_process import start_node
from mtl_perception.ros.overlay_inputs import semantics_from_label_info
from mtl_perception.ros.overlay_node import OverlayNode
from mtl_perception.visualization import colorize, draw_overlay

pytestmark = [pytest.mark.ros]

PERCEPTION = "fake_perception"
SEMANTICS = class_semantics(SMALL_NAMED)
WIDTH, HEIGHT = 64, 48


@pytest.fixture
def client(ros_env) -> Iterator[RosClient]:
    ros = RosClient(int(ros_env["ROS_DOMAIN_ID"]))
    yield ros
    ros.close()


class InProcessOverlay:
    """An OverlayNode in the client's context, spun on its own thread."""

    def __init__(self, client: RosClient, params: dict, remaps: tuple[str, ...] = ()) -> None:
        self.node = OverlayNode(
            context=client.context,
            cli_args=["--ros-args", *(a for remap in remaps for a in ("-r", remap))],
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        )
        self.executor = SingleThreadedExecutor(context=client.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def camera(self, name: str = ""):
        return next(c for c in self.node.cameras if c.config.name == name)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def overlay(client) -> Iterator[InProcessOverlay]:
    running = InProcessOverlay(
        client, {"perception_node": PERCEPTION, "qos_reliability": "reliable"}
    )
    yield running
    running.close()


def _topic(camera: str, topic: str) -> str:
    return f"/{PERCEPTION}/{camera}/{topic}" if camera else f"/{PERCEPTION}/{topic}"


def _header(sec: int) -> Header:
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec, header.stamp.nanosec = sec, 250
    return header


class FakePerception:
    """The camera and the perception node as the overlay node sees them: a camera frame, its
    mask and detections, published by the test; the label infos latched."""

    def __init__(self, client: RosClient, cameras: tuple[str, ...] = ("",)) -> None:
        self.client = client
        for topic, info in (
            ("label_info", label_info_message(Header(), SEMANTICS.seg_names, skip=0)),
            ("detection_label_info", label_info_message(Header(), SEMANTICS.det_names)),
        ):
            client.publisher(f"/{PERCEPTION}/{topic}", LabelInfo, LATCHED).publish(info)
        self.cameras = cameras

    def inputs(self, sec: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A scene, a mask (class ids 1..11 and 255) and boxes (xyxy), different per seed."""
        rng = np.random.default_rng(seed)
        rgb = generate_scene(WIDTH, HEIGHT, seed)[0]
        mask = rng.integers(1, 12, (HEIGHT, WIDTH), dtype=np.uint8)
        mask[:4] = 255
        boxes = np.array([[3.0, 5.0, 30.5, 40.0], [20.0, 10.0, 60.0, 44.0]])
        return rgb, mask, boxes

    def frame(self, camera: str, sec: int, rgb: np.ndarray, transport: str = "raw") -> None:
        name = f"/{camera}/image" if camera else "/image"
        if transport == "compressed":
            ok, png = cv2.imencode(".png", rgb[..., ::-1])
            assert ok
            msg = CompressedImage(header=_header(sec), format="png", data=png.tobytes())
            self._publish(f"{name}/compressed", CompressedImage, msg)
        else:
            self._publish(name, Image, encode_image(rgb, "rgb8", _header(sec)))

    def mask(self, camera: str, sec: int, mask: np.ndarray) -> None:
        self._publish(_topic(camera, "semantic"), Image, encode_image(mask, "mono8", _header(sec)))

    def detections(self, camera: str, sec: int, boxes: np.ndarray) -> None:
        msg = detections_message(_header(sec), boxes, np.array([0.9, 0.4]), np.array([0, 2]))
        self._publish(_topic(camera, "detections"), Detection2DArray, msg)

    def all(self, camera: str, sec: int, seed: int, transport: str = "raw") -> tuple:
        rgb, mask, boxes = self.inputs(sec, seed)
        self.frame(camera, sec, rgb, transport)
        self.mask(camera, sec, mask)
        self.detections(camera, sec, boxes)
        return rgb, mask, boxes

    def _publish(self, topic: str, kind: type, msg) -> None:
        publisher = self.client.publisher(topic, kind, RELIABLE)
        assert self.client.wait_for(lambda: publisher.get_subscription_count() > 0, 30), topic
        publisher.publish(msg)


def _expected(rgb: np.ndarray, mask: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    colour = colorize(mask, SEMANTICS.seg_colours)
    picture = draw_overlay(
        rgb, mask, boxes, np.array([0, 2]), np.array([0.9, 0.4]), DET_NAMES, SEMANTICS.seg_colours
    )
    return colour, picture


def _pixels(msg: Image) -> np.ndarray:
    assert msg.encoding == "rgb8" and msg.step == msg.width * 3
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


def _with_stamp(client: RosClient, topic: str, sec: int):
    found = [m for m in client.messages(topic) if m.header.stamp.sec == sec]
    return found[0] if found else None


def _watch(client: RosClient, overlay: InProcessOverlay, camera: str = "", pictures=None) -> None:
    pictures = pictures or ("overlay", "semantic_color")
    for picture in pictures:
        client.subscribe(_topic(camera, picture), Image, RELIABLE)
    publishers = [overlay.camera(camera).publishers[p] for p in pictures]
    assert client.wait_for(lambda: all(p.get_subscription_count() for p in publishers), 30)
    # watched: the overlay node subscribes to the camera and the outputs (on its timer)
    assert _wait(lambda: len(overlay.camera(camera).subscriptions) == 3)


def _labels_arrived(overlay: InProcessOverlay) -> None:
    assert _wait(lambda: overlay.node.semantics is not None), "no label infos"


def _wait(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


# -- class names and colours from the label infos -------------------------------------------------


@pytest.mark.parametrize("config", [SMALL_NAMED, SMALL], ids=["named", "unnamed"])
def test_label_infos_give_the_perception_nodes_names_and_colours(config):
    semantics = class_semantics(config)
    seg = label_info_message(Header(), semantics.seg_names, skip=semantics.void_id)
    det = label_info_message(Header(), semantics.det_names, threshold=0.3)
    rebuilt = semantics_from_label_info(seg, det)
    assert rebuilt.det_names == semantics.det_names
    assert rebuilt.seg_names[1:] == semantics.seg_names[1:]  # void (never predicted) aside
    assert np.array_equal(rebuilt.seg_colours, semantics.seg_colours)


def test_label_infos_with_a_repeated_or_missing_id_are_refused():
    seg = label_info_message(Header(), SEMANTICS.seg_names, skip=0)
    det = label_info_message(Header(), SEMANTICS.det_names)
    seg.class_map.append(seg.class_map[0])
    with pytest.raises(ValueError, match="label_info lists a class id twice"):
        semantics_from_label_info(seg, det)
    det.class_map.pop(0)
    seg.class_map.pop()
    with pytest.raises(ValueError, match=r"not 0\.\.N-1"):
        semantics_from_label_info(seg, det)


# -- drawing over DDS -----------------------------------------------------------------------------


def test_overlay_and_colour_equal_visualizations_pictures(client, overlay, monkeypatch):
    calls = []

    def counting_colorize(mask, colours):
        calls.append(mask.shape)
        return colorize(mask, colours)

    monkeypatch.setattr(overlay_module, "colorize", counting_colorize)
    fake = FakePerception(client)
    _watch(client, overlay)
    _labels_arrived(overlay)
    rgb, mask, boxes = fake.all("", 1, seed=1)
    picture = client.wait_for(lambda: _with_stamp(client, _topic("", "overlay"), 1), 30)
    colour = client.wait_for(lambda: _with_stamp(client, _topic("", "semantic_color"), 1), 30)
    assert picture is not None and colour is not None
    expected_colour, expected_picture = _expected(rgb, mask, boxes)
    assert np.array_equal(_pixels(colour), expected_colour)
    assert np.array_equal(_pixels(picture), expected_picture)
    for msg in (picture, colour):  # the camera frame's header
        assert msg.header.frame_id == "camera_optical_frame"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1, 250)
    assert overlay.camera().counters.drawn == 1
    assert calls == [(HEIGHT, WIDTH)]  # one colour mask for both pictures


def test_frames_match_by_stamp_when_outputs_come_out_of_order_or_late(client, overlay):
    fake = FakePerception(client)
    _watch(client, overlay, pictures=("overlay",))
    _labels_arrived(overlay)
    inputs = {sec: fake.inputs(sec, seed=sec) for sec in (1, 2, 3, 4)}
    for sec in (1, 2, 3):
        fake.frame("", sec, inputs[sec][0])
    fake.detections("", 3, inputs[3][2])
    fake.mask("", 2, inputs[2][1])
    fake.mask("", 3, inputs[3][1])
    fake.detections("", 2, inputs[2][2])
    fake.mask("", 4, inputs[4][1])  # outputs before their frame
    fake.detections("", 4, inputs[4][2])
    assert _wait(lambda: overlay.camera().matcher.pending()[1] == [(4, 250)])
    fake.frame("", 4, inputs[4][0])
    for sec in (2, 3, 4):
        picture = client.wait_for(lambda sec=sec: _with_stamp(client, _topic("", "overlay"), sec))
        assert picture is not None, f"no overlay of stamp {sec}"
        assert np.array_equal(_pixels(picture), _expected(*inputs[sec])[1]), sec
    assert _with_stamp(client, _topic("", "overlay"), 1) is None  # frame 1 had no outputs
    assert overlay.camera().counters.drawn == 3
    assert overlay.camera().matcher.pending() == ([(1, 250)], [])


def test_outputs_without_a_camera_frame_are_not_drawn_and_counted(client, capfd):
    running = InProcessOverlay(
        client, {"perception_node": PERCEPTION, "qos_reliability": "reliable", "queue_size": 2}
    )
    try:
        fake = FakePerception(client)
        _watch(client, running)
        _labels_arrived(running)
        _, mask, boxes = fake.inputs(10)
        fake.mask("", 10, mask)
        fake.detections("", 10, boxes)  # no frame of stamp 10, ever
        assert _wait(lambda: running.camera().matcher.pending()[1] == [(10, 250)])
        for sec in (11, 12):
            fake.all("", sec, seed=sec)
            assert client.wait_for(lambda sec=sec: _with_stamp(client, _topic("", "overlay"), sec))
        counters = running.camera().counters
        assert _wait(lambda: counters.unmatched == 2)  # aged out after two newer output stamps
        assert counters.drawn == 2 and _with_stamp(client, _topic("", "overlay"), 10) is None
        assert running.camera().matcher.pending() == ([], [])
    finally:
        running.close()
    assert "had no camera frame of their stamp" in capfd.readouterr().err


def test_nothing_is_received_or_drawn_without_subscribers(client, overlay, monkeypatch):
    calls = {"colorize": 0, "decode": 0}

    def counting(name, function):
        def counted(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return counted

    monkeypatch.setattr(overlay_module, "colorize", counting("colorize", colorize))
    decode = overlay_module.image_to_rgb
    monkeypatch.setattr(overlay_module, "image_to_rgb", counting("decode", decode))
    fake = FakePerception(client)
    _labels_arrived(overlay)
    inputs = ["/image", _topic("", "semantic"), _topic("", "detections")]

    def inputs_subscribed() -> list[int]:
        return [client.node.count_subscribers(topic) for topic in inputs]

    # Nobody watches: the camera and the outputs are not even subscribed to.
    assert overlay.camera().subscriptions == [] and inputs_subscribed() == [0, 0, 0]

    # Only the colour mask watched: the frame is not even decoded, and no overlay goes out.
    _watch(client, overlay, pictures=("semantic_color",))
    assert client.wait_for(lambda: inputs_subscribed() == [1, 1, 1], 30)
    fake.all("", 2, seed=2)
    assert client.wait_for(lambda: _with_stamp(client, _topic("", "semantic_color"), 2), 30)
    counters = overlay.camera().counters
    assert calls == {"colorize": 1, "decode": 0} and counters.drawn == 1
    assert overlay.camera().publishers["overlay"].get_subscription_count() == 0

    # The last watcher leaves: the overlay node unsubscribes again.
    for subscription in list(client.node.subscriptions):
        if subscription.topic_name == _topic("", "semantic_color"):
            client.node.destroy_subscription(subscription)
    assert client.wait_for(lambda: inputs_subscribed() == [0, 0, 0], 30), inputs_subscribed()
    assert overlay.camera().subscriptions == [] and calls == {"colorize": 1, "decode": 0}


def test_a_bad_camera_frame_is_refused_with_its_reason_and_the_node_goes_on(client, overlay, capfd):
    fake = FakePerception(client)
    _watch(client, overlay, pictures=("overlay",))
    _labels_arrived(overlay)
    rgb, mask, boxes = fake.inputs(1)
    bad = encode_image(rgb, "rgb8", _header(1))
    bad.encoding = "rgb16"
    fake._publish("/image", Image, bad)
    fake.mask("", 1, mask)
    fake.detections("", 1, boxes)
    counters = overlay.camera().counters
    assert _wait(lambda: counters.rejected == {"bit_depth": 1})
    rgb, mask, boxes = fake.all("", 2, seed=2)
    picture = client.wait_for(lambda: _with_stamp(client, _topic("", "overlay"), 2), 30)
    assert picture is not None and np.array_equal(_pixels(picture), _expected(rgb, mask, boxes)[1])
    assert _with_stamp(client, _topic("", "overlay"), 1) is None and counters.drawn == 1
    assert "rejected frame on /image (bit_depth): unsupported encoding 'rgb16'" in (
        capfd.readouterr().err
    )


def test_outputs_that_cannot_be_drawn_cost_only_their_frame(client, overlay, monkeypatch, capfd):
    fake = FakePerception(client)
    _watch(client, overlay, pictures=("overlay",))
    _labels_arrived(overlay)
    counters = overlay.camera().counters
    rgb, mask, boxes = fake.inputs(1)
    fake.frame("", 1, rgb)
    fake.mask("", 1, mask)
    fake.detections("", 1, np.array([[np.nan, 5.0, 30.0, 40.0], [1.0, 1.0, 2.0, 2.0]]))
    assert _wait(lambda: counters.bad_outputs == 1)
    fake.frame("", 2, rgb)
    fake.mask("", 2, mask[:-2])  # not the frame's size
    fake.detections("", 2, boxes)
    assert _wait(lambda: counters.bad_outputs == 2)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in drawing")

    monkeypatch.setattr(overlay_module, "draw_overlay", broken)
    fake.all("", 3, seed=3)
    assert _wait(lambda: counters.failed == 1)
    monkeypatch.undo()
    rgb, mask, boxes = fake.all("", 4, seed=4)
    picture = client.wait_for(lambda: _with_stamp(client, _topic("", "overlay"), 4), 30)
    assert picture is not None and np.array_equal(_pixels(picture), _expected(rgb, mask, boxes)[1])
    assert counters.drawn == 1 and client.messages(_topic("", "overlay")) == [picture]
    err = capfd.readouterr().err
    assert (
        "cannot draw the perception node's outputs for /image: a detection's box is not finite"
        in err
    )
    # (the mask size warning, a second within the second, is throttled with it)
    assert "drawing failed, frame lost on /image: RuntimeError: a bug in drawing" in err


def test_several_cameras_raw_and_compressed_at_half_scale(client):
    params = {
        "perception_node": PERCEPTION,
        "qos_reliability": "reliable",
        "cameras": ["front", "rear"],
        "rear.input_transport": "compressed",
        "scale": 0.5,
    }
    running = InProcessOverlay(client, params)
    try:
        fake = FakePerception(client, ("front", "rear"))
        for camera in ("front", "rear"):
            _watch(client, running, camera)
        _labels_arrived(running)
        # The same stamp on both cameras: each is drawn from its own frame and outputs.
        sent = {
            "front": fake.all("front", 7, seed=1),
            "rear": fake.all("rear", 7, seed=2, transport="compressed"),
        }
        for camera, (rgb, mask, boxes) in sent.items():
            small = cv2.resize(rgb, (WIDTH // 2, HEIGHT // 2), interpolation=cv2.INTER_AREA)
            small_mask = cv2.resize(
                mask, (WIDTH // 2, HEIGHT // 2), interpolation=cv2.INTER_NEAREST
            )
            colour, picture = _expected(small, small_mask, boxes / 2)
            for name, expected in (("overlay", picture), ("semantic_color", colour)):
                topic = _topic(camera, name)
                msg = client.wait_for(lambda topic=topic: _with_stamp(client, topic, 7), 30)
                assert msg is not None, topic
                assert (msg.width, msg.height) == (WIDTH // 2, HEIGHT // 2)
                assert np.array_equal(_pixels(msg), expected), topic
            assert running.camera(camera).counters.drawn == 1
    finally:
        running.close()


# -- bad parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["-p", "scale:=2.0"], "scale"),
        (["-p", "scale:=0.0"], "parameter 'scale' must be more than 0"),
        (["-p", "cameras:=[front, 2x]"], "'2x' is not a camera name"),
        (["-p", "input_transport:=jpeg"], "parameter 'input_transport' must be one of"),
        (
            ["-p", "cameras:=[front]", "-p", "front.input_transport:=x"],
            "parameter 'front.input_transport' must be one of",
        ),
        (["-p", "publish_overlay:=true"], "unknown parameter 'publish_overlay'"),
        (["-p", "perception_node:=bad name"], "parameter 'perception_node' must be"),
    ],
    ids=["scale-range", "scale-zero", "camera-name", "transport", "camera-transport", "unknown",
         "perception-node"],
)  # fmt: skip
def test_bad_parameters_exit_2_with_one_error_line(ros_env, arguments, expected):
    result = subprocess.run(
        [sys.executable, "-m", "mtl_perception.ros.overlay_node", "--ros-args", *arguments],
        capture_output=True,
        text=True,
        env=ros_env,
        timeout=60,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_the_perception_nodes_shared_params_file_is_taken_and_ctrl_c_exits_0(ros_env, tmp_path):
    """The shipped params file (a /** section of the perception node's keys, read by every node
    of the robot): the overlay node takes its cameras from it, ignores the rest, and runs."""
    params = tmp_path / "robot.yaml"
    shipped = (Path(__file__).parent.parent / "config" / "perception.yaml").read_text()
    params.write_text(shipped.replace('cameras: [""]', "cameras: [front]"))
    log = tmp_path / "overlay.log"
    node = start_node(
        module="mtl_perception.ros.overlay_node", params_file=params, env=ros_env, log=log
    )
    try:
        assert _wait(lambda: "drawing" in log.read_text() or node.process.poll() is not None, 60)
        assert node.process.poll() is None, log.read_text()
        assert "/perception_node/front/overlay" in log.read_text()
    finally:
        assert node.stop() == 0, log.read_text()


# -- with the real perception node ----------------------------------------------------------------


@pytest.mark.slow
def test_the_real_perception_nodes_overlay_on_its_old_topic(client, tmp_path):
    """The perception node no longer draws; with the overlay node beside it, overlay and
    semantic_color appear on the topics the perception node used to publish, drawn as it drew
    them (moved from test_node_outputs)."""
    from test_node_outputs import PARAMS, InProcessNode  # imports the perception node (torch)

    checkpoint = save_model(tmp_path / "m.pt", calibrated_small_model(config=SMALL_NAMED))
    name = "perception_node"
    perception = InProcessNode(client, name, {"checkpoint": str(checkpoint), **PARAMS})
    # the camera input remapped as the perception node's
    drawing = InProcessOverlay(client, {"qos_reliability": "reliable"}, (f"image:=/{name}/image",))
    try:
        assert not [p for p in perception.node.publishers if p.topic_name.endswith("overlay")]
        for picture in ("overlay", "semantic_color"):
            client.subscribe(f"/{name}/{picture}", Image, RELIABLE)
        client.subscribe(f"/{name}/semantic", Image, RELIABLE)
        publishers = drawing.camera().publishers.values()
        assert client.wait_for(lambda: all(p.get_subscription_count() for p in publishers), 30)
        _labels_arrived(drawing)
        rgb = generate_scene(320, 240, 4)[0]
        header = _header(1)
        camera = client.publisher(f"/{name}/image", Image, RELIABLE)
        outputs = {
            p.topic_name: p
            for p in perception.node.publishers
            if p.topic_name in (f"/{name}/semantic", f"/{name}/detections")
        }
        watchers = {f"/{name}/semantic": 2, f"/{name}/detections": 1}  # with this client's

        def everyone_matched() -> bool:
            return camera.get_subscription_count() == 2 and all(
                outputs[topic].get_subscription_count() == count
                for topic, count in watchers.items()
            )

        assert client.wait_for(everyone_matched, 30)  # no frame or output can be missed
        camera.publish(encode_image(rgb, "rgb8", header))
        overlay = client.wait_for(lambda: _with_stamp(client, f"/{name}/overlay", 1), 60)
        colour = client.wait_for(lambda: _with_stamp(client, f"/{name}/semantic_color", 1), 30)
        semantic = _with_stamp(client, f"/{name}/semantic", 1)
        assert overlay is not None and colour is not None and semantic is not None

        prediction = perception.node.predictor.predict(rgb)[0]
        palette = np.array(PAPER_PALETTE, np.uint8)
        assert np.array_equal(_pixels(colour), _old_colorize(prediction.mask, palette))
        expected = draw_overlay(
            rgb,
            prediction.mask,
            prediction.boxes,
            prediction.classes,
            prediction.scores,
            DET_NAMES,
            palette,
        )
        assert (overlay.width, overlay.height) == (320, 240)
        assert np.array_equal(_pixels(overlay), expected)
    finally:
        drawing.close()
        perception.close()
