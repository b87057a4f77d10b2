"""perception_node over real DDS (inside the private network namespace): outputs, bad input,
no queue under overload, lifecycle, bad configuration."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ros_environment
from diagnostic_msgs.msg import DiagnosticArray
from helpers.models import DET_NAMES, SEG_NAMES, SMALL_NAMED, calibrated_small_model, save_model
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.duration import Duration
from rclpy.qos import QoSProfile
from ros_client import LATCHED, RELIABLE, RosClient
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from mtl_perception.data.synthetic import generate_scene
from mtl_perception.inference import Predictor, PredictorConfig
from mtl_perception.ros.node_process import start_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE_PARAMS = {
    "input_width": 256,
    "input_height": 128,
    "score_threshold": 0.3,
    "max_detections": 10,
    "max_pixels": 2048 * 1024,
    "diagnostics_period": 0.5,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_model(
        tmp_path_factory.mktemp("node") / "model.pt", calibrated_small_model(config=SMALL_NAMED)
    )


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return ros_environment()


@pytest.fixture(scope="module")
def client(env):
    ros = RosClient(int(env["ROS_DOMAIN_ID"]))
    yield ros
    ros.close()


def _wait_active(client: RosClient, name: str, process, log: Path) -> None:
    def active() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited:\n{log.read_text()}")
        topics = dict(client.node.get_topic_names_and_types())
        return f"/{name}/detections" in topics

    assert client.wait_for(active, timeout=60), log.read_text()


@pytest.fixture(scope="module")
def raw_node(checkpoint, env, client, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "raw_node.log"
    node = start_node(
        "raw_node", parameters={"checkpoint": checkpoint, **NODE_PARAMS}, env=env, log=log
    )
    _wait_active(client, "raw_node", node.process, log)
    for topic, kind in (
        ("/raw_node/semantic", Image),
        ("/raw_node/detections", Detection2DArray),
    ):
        client.subscribe(topic, kind, RELIABLE)
    client.subscribe("/diagnostics", DiagnosticArray, RELIABLE)
    yield node.process, log
    assert node.stop() == 0, log.read_text()


@pytest.fixture(scope="module")
def compressed_node(checkpoint, env, client, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "compressed_node.log"
    params = {"checkpoint": checkpoint, **NODE_PARAMS, "input_transport": "compressed"}
    node = start_node("compressed_node", parameters=params, env=env, log=log)
    _wait_active(client, "compressed_node", node.process, log)
    client.subscribe("/compressed_node/semantic", Image, RELIABLE)
    client.subscribe("/compressed_node/detections", Detection2DArray, RELIABLE)
    yield node.process, log
    assert node.stop() == 0, log.read_text()


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(
        checkpoint,
        PredictorConfig(input_height=128, input_width=256, score_threshold=0.3, max_detections=10),
    )


def _header(sec: int) -> Header:
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec, header.stamp.nanosec = sec, 500
    return header


def _image(rgb: np.ndarray, encoding: str, sec: int) -> Image:
    data = rgb[..., ::-1] if encoding == "bgr8" else rgb
    return Image(
        header=_header(sec),
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding=encoding,
        step=rgb.shape[1] * 3,
        data=np.ascontiguousarray(data).tobytes(),
    )


def _result(client: RosClient, node: str, sec: int, publish) -> tuple[Image, Detection2DArray]:
    """Publishes until the node's outputs for stamp ``sec`` arrive (best effort may lose one)."""

    def found():
        masks = [m for m in client.messages(f"/{node}/semantic") if m.header.stamp.sec == sec]
        dets = [m for m in client.messages(f"/{node}/detections") if m.header.stamp.sec == sec]
        return (masks[0], dets[0]) if masks and dets else None

    for _ in range(5):
        publish()
        result = client.wait_for(found, timeout=6)
        if result:
            return result
    raise AssertionError(f"no output from {node} for stamp {sec}")


def _boxes(detections: Detection2DArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, scores, classes = [], [], []
    for d in detections.detections:
        cx, cy, w, h = (
            d.bbox.center.position.x,
            d.bbox.center.position.y,
            d.bbox.size_x,
            d.bbox.size_y,
        )
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        (result,) = d.results
        scores.append(result.hypothesis.score)
        classes.append(int(result.hypothesis.class_id))
        assert d.header == detections.header
    return np.array(boxes).reshape(-1, 4), np.array(scores), np.array(classes)


def _check_against_predictor(mask_msg, det_msg, rgb, predictor, sec):
    expected = predictor.predict(rgb)[0]
    for msg in (mask_msg, det_msg):
        assert msg.header.stamp.sec == sec and msg.header.stamp.nanosec == 500
        assert msg.header.frame_id == "camera_optical_frame"
    assert (mask_msg.encoding, mask_msg.height, mask_msg.width) == ("mono8", 1024, 2048)
    mask = np.frombuffer(mask_msg.data, np.uint8).reshape(1024, 2048)
    assert (mask == expected.mask).mean() > 0.999
    boxes, scores, classes = _boxes(det_msg)
    assert len(boxes) == len(expected.boxes) > 0
    assert np.allclose(boxes, expected.boxes, atol=0.5) and np.array_equal(
        classes, expected.classes
    )
    assert np.allclose(scores, expected.scores, atol=1e-3) and ((scores >= 0) & (scores <= 1)).all()


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return generate_scene(2048, 1024, seed=21)[0]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_raw_frames_give_mask_and_detections_matching_the_predictor(
    raw_node, client, predictor, scene, encoding
):
    sec = 100 + ["rgb8", "bgr8"].index(encoding)
    publisher = client.publisher("/image", Image)
    mask_msg, det_msg = _result(
        client, "raw_node", sec, lambda: publisher.publish(_image(scene, encoding, sec))
    )
    _check_against_predictor(mask_msg, det_msg, scene, predictor, sec)


def test_compressed_jpeg_gives_mask_and_detections_matching_the_predictor(
    compressed_node, client, predictor, scene
):
    ok, jpeg = cv2.imencode(
        ".jpg", cv2.cvtColor(scene, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    assert ok
    msg = CompressedImage(header=_header(200), format="jpeg", data=jpeg.tobytes())
    publisher = client.publisher("/image/compressed", CompressedImage)
    mask_msg, det_msg = _result(client, "compressed_node", 200, lambda: publisher.publish(msg))
    decoded = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    _check_against_predictor(mask_msg, det_msg, decoded, predictor, 200)


def test_the_node_publishes_no_pictures(raw_node, client):
    """Overlay and colour mask are the overlay node's (issue 23: drawing them cost this node's
    frame path 20-40 ms per 2048x1024 frame); test_overlay_node draws them beside this node."""
    # raw_node is active: its publishers were all made at once, and discovery has seen them
    assert client.wait_for(lambda: client.node.count_publishers("/raw_node/semantic") == 1)
    assert client.node.count_publishers("/raw_node/overlay") == 0
    assert client.node.count_publishers("/raw_node/semantic_color") == 0


def test_late_subscriber_receives_both_label_infos(raw_node, client):
    # The node publishes both at activate, before it starts its diagnostics timer: once its
    # diagnostics have arrived, they were published before these subscriptions exist.
    assert client.wait_for(lambda: _diagnostics(client), timeout=10), raw_node[1].read_text()
    client.subscribe("/raw_node/label_info", LabelInfo, LATCHED)
    client.subscribe("/raw_node/detection_label_info", LabelInfo, LATCHED)
    seg = client.wait_for(lambda: client.messages("/raw_node/label_info"), timeout=10)
    det = client.wait_for(lambda: client.messages("/raw_node/detection_label_info"), timeout=10)
    assert {(c.class_id, c.class_name) for c in seg[0].class_map} == {
        *((i, n) for i, n in enumerate(SEG_NAMES) if i),
        (255, "unlabeled"),
    }
    assert [(c.class_id, c.class_name) for c in det[0].class_map] == list(enumerate(DET_NAMES))
    assert det[0].threshold == pytest.approx(0.3)


def _diagnostics(client: RosClient, node: str = "raw_node") -> dict[str, str]:
    messages = [
        m
        for m in client.messages("/diagnostics")
        if m.status and m.status[0].name.startswith(f"{node}:")
    ]
    return {kv.key: kv.value for kv in messages[-1].status[0].values} if messages else {}


def _count(client: RosClient, key: str, node: str = "raw_node") -> int:
    return int(_diagnostics(client, node).get(key, -1))


def _malformed() -> list[tuple[str, Image]]:
    good = np.zeros((32, 64, 3), np.uint8)
    cases = []

    def case(label: str, **fields):
        msg = _image(good, "rgb8", 300 + len(cases))
        for key, value in fields.items():
            setattr(msg, key, value)
        cases.append((label, msg))

    case("data too short", data=bytes(32 * 64 * 3 - 1))
    case("data too long", data=bytes(32 * 64 * 3 + 7))
    case("step below width x channels", step=64 * 3 - 3, data=bytes((64 * 3 - 3) * 32))
    case("zero height", height=0, data=b"")
    case("zero width", width=0, step=0, data=b"")
    case("unsupported encoding 32FC1", encoding="32FC1", step=64 * 4, data=bytes(64 * 4 * 32))
    case("unknown encoding", encoding="hsv8")
    case(
        "more pixels than max_pixels",
        height=2048,
        width=2048,
        step=2048 * 3,
        data=bytes(2048 * 2048 * 3),
    )
    case("mono8 with rgb8-sized data", encoding="mono8", step=64)
    case("yuv422 with odd width", encoding="yuv422", width=63, step=126, data=bytes(126 * 32))
    case("bayer with odd height", encoding="bayer_rggb8", height=31, step=64, data=bytes(64 * 31))
    case("rgba8 with rgb8 step", encoding="rgba8")
    case("16-bit encoding", encoding="rgb16", step=64 * 6, data=bytes(64 * 6 * 32))
    return cases


def test_malformed_frames_are_counted_and_the_node_keeps_running(
    raw_node, compressed_node, client, scene
):
    client.wait_for(lambda: _diagnostics(client), timeout=10)
    before = _count(client, "rejected")
    publisher = client.publisher("/image", Image, RELIABLE)
    cases = _malformed()
    assert len(cases) >= 12
    for sent, (label, msg) in enumerate(cases, start=1):
        publisher.publish(msg)
        # Each one counted before the next is sent: exactly one more rejection each time.
        assert client.wait_for(lambda sent=sent: _count(client, "rejected") >= before + sent), (
            label,
            _diagnostics(client),
            raw_node[1].read_text()[-3000:],
        )
        assert _count(client, "rejected") == before + sent, (label, _diagnostics(client))
    assert raw_node[0].poll() is None
    log = raw_node[1].read_text()
    for reason in ("data_length", "step", "zero_size", "encoding", "bit_depth", "too_large"):
        assert f"rejected frame on /image ({reason}): " in log  # each reason's first is logged
    assert "rejected frame on /image (data_length): data length" in log
    # Empty and undecodable compressed data on the compressed node.
    client.wait_for(lambda: _diagnostics(client, "compressed_node"), timeout=10)
    before = _count(client, "rejected", "compressed_node")
    compressed = client.publisher("/image/compressed", CompressedImage, RELIABLE)
    for sent, data in enumerate((b"", b"\xff\xd8\xff not a jpeg", bytes(1000)), start=1):
        compressed.publish(CompressedImage(header=_header(400), format="jpeg", data=data))
        assert client.wait_for(
            lambda sent=sent: _count(client, "rejected", "compressed_node") >= before + sent
        ), (data, _diagnostics(client, "compressed_node"))
        assert _count(client, "rejected", "compressed_node") == before + sent, data
    assert compressed_node[0].poll() is None
    assert "rejected frame on /image/compressed" in compressed_node[1].read_text()
    # ...and the next good frame is processed as usual.
    good = client.publisher("/image", Image)
    _result(
        client, "raw_node", 450, lambda: good.publish(_image(scene[:384, :768].copy(), "rgb8", 450))
    )


GATED_NODE = Path(__file__).resolve().parent / "helpers" / "gated_node.py"
_gated_names = itertools.count()
GATED_DEPTH = 500  # input history of the gated node and of the test's publisher (> any burst)
BURSTS = [range(1000, 1050), range(1050, 1100), range(1100, 1150)]  # 150 frames in all


@pytest.fixture
def gated_node(checkpoint, env, client, tmp_path):
    """A perception_node whose model runs only when the test releases it (helpers/gated_node.py),
    on an input topic of its own, subscribed RELIABLE and deeper than any burst of the test: DDS
    delivers every frame, so whatever is dropped is dropped by the node's one-frame slot."""
    name = f"gated_node_{next(_gated_names)}"  # fresh topics and diagnostics for each run
    gate = tmp_path / "gate"
    gate.mkdir()
    log = tmp_path / f"{name}.log"
    params = {
        "checkpoint": checkpoint,
        **NODE_PARAMS,
        "qos_reliability": "reliable",
        "qos_depth": GATED_DEPTH,
    }
    node = start_node(
        name,
        remaps={"image": f"/{name}/image"},
        parameters=params,
        command=[sys.executable, GATED_NODE, gate],
        env=env,
        log=log,
    )
    try:
        _wait_active(client, name, node.process, log)
    except BaseException:
        node.stop()
        raise
    yield name, gate, log, node.process
    (gate / "open").touch()  # a held model call would block the node's shutdown
    assert node.stop() == 0, log.read_text()


def test_no_queue_under_overload(gated_node, client):
    """No queue under overload (latest frame wins), with the overload made certain instead of
    hoped for: each burst of 50 frames is published while the model is held on one frame, and the
    model is let go only once every frame of the burst is in the node's input reader
    (acknowledged). So every expected count is exact, whatever the speed of the publisher, DDS or
    the model: when the model is let go, the node takes the whole burst, the burst's newest frame
    goes into the model and its 49 others are dropped; the model runs once per burst; outputs
    come out in order, one per model run; and every frame is accounted for. No sleep and no
    clock enters an assertion."""
    name, gate, log, _ = gated_node
    frame = generate_scene(256, 128, seed=3)[0]
    client.subscribe(f"/{name}/semantic", Image, RELIABLE)
    client.subscribe("/diagnostics", DiagnosticArray, RELIABLE)
    publisher = client.publisher(
        f"/{name}/image", Image, QoSProfile(depth=GATED_DEPTH, reliability=RELIABLE.reliability)
    )

    def outputs(first: int = 0) -> list[int]:
        stamps = [m.header.stamp.sec for m in client.messages(f"/{name}/semantic")]
        return [sec for sec in stamps if sec >= first]

    def counts(condition) -> dict[str, int]:
        """The first /diagnostics counters of the node that satisfy ``condition``."""

        def matching():
            values = _diagnostics(client, name)
            if not values:
                return None
            found = {key: int(values[key]) for key in ("received", "processed", "dropped")}
            found.update(rejected=int(values["rejected"]), failed=int(values["failed"]))
            return found if condition(found) else None

        found = client.wait_for(matching, timeout=30)
        assert found, (_diagnostics(client, name), log.read_text()[-3000:])
        return found

    def waiting(c: dict[str, int]) -> int:  # received but neither processed, dropped nor rejected
        return c["received"] - c["processed"] - c["dropped"] - c["rejected"]

    def wait_file(path: Path) -> None:
        assert client.wait_for(path.exists, timeout=30), (path, log.read_text()[-3000:])

    # Hand-shake, the model running freely: once the output of the LAST frame sent comes back,
    # the input and the output are matched both ways (every later frame and output is delivered)
    # and nothing sent before is still on its way (a reliable writer delivers in order).
    for sec in range(900, 920):
        publisher.publish(_image(frame, "rgb8", sec))
        if client.wait_for(lambda sec=sec: sec in outputs(), timeout=5):
            break
    else:
        raise AssertionError(f"no output from {name}:\n{log.read_text()}")
    # One rejected frame marks the counters: a snapshot that counts it counts every hand-shake
    # frame; once it also balances, the node is idle and that snapshot is the baseline.
    marker = _image(np.zeros((32, 64, 3), np.uint8), "rgb8", 950)
    marker.data = bytes(len(marker.data) - 1)
    publisher.publish(marker)
    base = counts(lambda c: c["rejected"] == 1 and waiting(c) == 0)

    (gate / "hold").touch()  # from now on each model call waits for release-N
    publisher.publish(_image(frame, "rgb8", 999))
    wait_file(gate / "entered-0")  # frame 999 is in the model, and stays there
    expected = [999]
    for n, burst in enumerate(BURSTS):
        for sec in burst:
            publisher.publish(_image(frame, "rgb8", sec))
        # Every frame of the burst is in the node's reader; none is taken while the model runs.
        assert publisher.wait_for_all_acked(Duration(seconds=30)), log.read_text()[-3000:]
        (gate / f"release-{n}").touch()  # the model finishes; it must take the newest frame
        wait_file(gate / f"entered-{n + 1}")
        expected.append(burst[-1])
        arrived = 1 + sum(len(b) for b in BURSTS[: n + 1])
        now = counts(lambda c, arrived=arrived: c["received"] - base["received"] == arrived)
        # No queue: one frame in the model; all others of the burst dropped.
        assert waiting(now) == 1, now
        assert now["dropped"] - base["dropped"] == (n + 1) * (len(burst) - 1), now
        assert now["processed"] - base["processed"] == n + 1, now
        assert now["rejected"] == base["rejected"], now
        assert client.wait_for(lambda n=n: len(outputs(999)) > n, timeout=30), outputs()
        assert outputs(999) == expected[: n + 1]  # the frame that was in the model
    (gate / f"release-{len(BURSTS)}").touch()
    assert client.wait_for(lambda: len(outputs(999)) == len(expected), timeout=30), outputs()
    final = counts(lambda c: c["processed"] - base["processed"] == len(expected))

    # The newest frame of each burst won, in order, and nothing else reached the outputs.
    assert outputs(999) == expected == [999, 1049, 1099, 1149]
    assert len(list(gate.glob("entered-*"))) == len(expected)  # one model run per burst
    sent = 1 + sum(len(b) for b in BURSTS)
    assert final["received"] - base["received"] == sent, final
    assert final["dropped"] - base["dropped"] == sent - len(expected), final
    assert final["rejected"] == base["rejected"] and final["failed"] == 0, final
    assert final["received"] == final["processed"] + final["dropped"] + final["rejected"], final


def test_ctrl_c_while_a_frame_is_in_the_model_exits_cleanly(gated_node, client):
    """Ctrl-C shuts the ROS context down while the inference thread still holds a frame; its
    outputs can then no longer be published. The node must exit 0 without an error line (it
    logged "processing failed, frame dropped: ... publisher's context is invalid"). The model is
    held until the context is gone, so the order is certain, not a matter of timing."""
    name, gate, log, process = gated_node
    frame = generate_scene(256, 128, seed=3)[0]
    publisher = client.publisher(
        f"/{name}/image", Image, QoSProfile(depth=GATED_DEPTH, reliability=RELIABLE.reliability)
    )
    (gate / "release-after-shutdown").touch()
    (gate / "hold").touch()
    for sec in range(10):
        publisher.publish(_image(frame, "rgb8", sec))
        if client.wait_for((gate / "entered-0").exists, timeout=3):
            break
    else:
        raise AssertionError(f"the model never got a frame:\n{log.read_text()}")
    process.send_signal(subprocess.signal.SIGINT)
    assert process.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    assert "processing failed" not in text and "context is invalid" not in text, text
    assert "Traceback" not in text, text


def test_deactivate_activate_deactivate(raw_node, client, scene):
    def change(transition: int) -> None:
        response = client.call(
            ChangeState,
            "/raw_node/change_state",
            ChangeState.Request(transition=Transition(id=transition)),
        )
        assert response.success

    def state() -> str:
        return client.call(GetState, "/raw_node/get_state", GetState.Request()).current_state.label

    def listening() -> bool:
        topics = client.node.get_subscriber_names_and_types_by_node("raw_node", "/")
        return any(topic == "/image" for topic, _ in topics)

    small = scene[:384, :768].copy()
    publisher = client.publisher("/image", Image)
    assert client.wait_for(listening, timeout=10)
    change(Transition.TRANSITION_DEACTIVATE)
    assert state() == "inactive"
    assert client.wait_for(lambda: not listening(), timeout=10)  # inactive: no input at all
    for sec in range(2000, 2010):
        publisher.publish(_image(small, "rgb8", sec))
    change(Transition.TRANSITION_ACTIVATE)
    assert state() == "active"
    _result(client, "raw_node", 2100, lambda: publisher.publish(_image(small, "rgb8", 2100)))
    # The node publishes in the order it takes frames, and its outputs reach this reliable
    # subscription in order: an output for a frame sent while inactive would have come before
    # 2100's. None did.
    assert not [
        m for m in client.messages("/raw_node/semantic") if 2000 <= m.header.stamp.sec < 2010
    ]
    change(Transition.TRANSITION_DEACTIVATE)
    assert state() == "inactive"
    change(Transition.TRANSITION_ACTIVATE)  # leave it running for the fixture's clean shutdown


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"checkpoint": "/nowhere/model.pt"}, "checkpoint not found: /nowhere/model.pt"),
        ({"checkpoint": "x.pt", "input_width": 100}, "input_width is not a valid step"),
        ({"checkpoint": "x.pt", "precision": "fp8"}, "parameter 'precision' must be one of"),
        ({"checkpoint": "x.pt", "score_threshold": 2.0}, "score_threshold"),
        ({"checkpoint": "x.pt", "compile": "fastest"}, "parameter 'compile' must be one of"),
        # ROS 2 ignores parameters a node does not declare: a misspelt one must not run silently
        # with the default
        ({"checkpoint": "x.pt", "scor_threshold": 0.3}, "unknown parameter 'scor_threshold'"),
    ],
)
def test_bad_configuration_exits_non_zero_with_a_clear_message(params, message, env, tmp_path):
    log = tmp_path / "node.log"
    with start_node("bad_node", parameters=params, env=env, log=log) as node:
        assert node.process.wait(timeout=60) != 0
    assert message in log.read_text(), log.read_text()
    assert "Traceback" not in log.read_text()


def test_incompatible_checkpoint_fails_configure(env, tmp_path):
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    log = tmp_path / "node.log"
    with start_node("bad_ckpt_node", parameters={"checkpoint": bogus}, env=env, log=log) as node:
        assert node.process.wait(timeout=60) != 0
    assert f"{bogus} is not an mtl_perception checkpoint" in log.read_text()


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "perception_node"
    assert script.exists()
    result = subprocess.run(
        [str(script), "--ros-args", "-p", "checkpoint:=/nowhere.pt"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ros_environment(),
    )
    assert result.returncode != 0 and "checkpoint not found" in result.stdout + result.stderr


def test_a_frame_the_model_fails_on_is_dropped_and_the_node_keeps_running(
    env, client, tmp_path, scene
):
    model = calibrated_small_model(config=SMALL_NAMED)
    with torch.no_grad():  # finite weights (checkpoints with NaN are refused at load) whose
        for head in model.detector.heads:  # products overflow: every score non-finite
            head.weight.fill_(3e38)
    checkpoint = save_model(tmp_path / "nan.pt", model)
    log = tmp_path / "nan_node.log"
    params = {"checkpoint": checkpoint, **NODE_PARAMS}
    with start_node("nan_node", parameters=params, env=env, log=log) as node:
        process = node.process
        _wait_active(client, "nan_node", process, log)
        client.subscribe("/nan_node/semantic", Image, RELIABLE)
        client.subscribe("/diagnostics", DiagnosticArray, RELIABLE)
        publisher = client.publisher("/image", Image, RELIABLE)
        frame = scene[:384, :768].copy()
        for sec in range(3000, 3015):  # until two frames have reached the model
            publisher.publish(_image(frame, "rgb8", sec))
            if client.wait_for(lambda: _count(client, "failed", "nan_node") >= 2, timeout=1.0):
                break
        failed = _count(client, "failed", "nan_node")
        assert failed >= 2, log.read_text()
        assert _count(client, "dropped", "nan_node") == failed
        assert _count(client, "processed", "nan_node") == 0
        assert not client.messages("/nan_node/semantic")
        assert process.poll() is None and "inference failed, frame dropped" in log.read_text()
