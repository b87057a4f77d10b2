"""The perception node under hostile input (issue 13, the node).

Over real DDS, against one live node per transport: every bad frame is refused in the
subscription callback (or, for what only decoding finds, on the inference thread), counted once
under its reason in /diagnostics (``rejected_<reason>``), logged naming the topic and the
problem (the first occurrence of each reason always), never with a traceback; the node keeps
running and answers a good frame right after. Decompression bombs leave the node's peak memory
(VmHWM) within 50 MB. In process, deterministically: a rejected frame never displaces the frame
waiting in the latest-frame slot, and a frame waiting at deactivate is counted as dropped.
"""

from __future__ import annotations

import subprocess
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from conftest import ros_environment
from diagnostic_msgs.msg import DiagnosticArray
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_client import RELIABLE, RosClient
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from test_conversions import (
    IEND,
    JPEG,
    PNG,
    jpeg_declaring,
    pillow_encoded,
    png_bomb,
    png_chunk,
    png_declaring,
)

from mtl_perception.ros.frame_slot import LatestFrameSlot
from mtl_perception.ros.node import REJECTION_LOG_PERIOD, PerceptionNode, ReasonThrottle
from mtl_perception.ros.node_process import NodeProcess, start_node

MAX_PIXELS = 1024 * 1024
NODE_PARAMS = {
    "input_width": 256,
    "input_height": 128,
    "score_threshold": 0.3,
    "max_detections": 10,
    "max_pixels": MAX_PIXELS,
    "diagnostics_period": 0.2,
    "qos_reliability": "reliable",  # every bad frame arrives: counts are exact
}
MEMORY_BOUND_MB = 50
BAD = [pytest.mark.bad_input, pytest.mark.ros]
NOISE = np.random.default_rng(3).integers(0, 256, (32, 64, 3), np.uint8)


# -- the frames -----------------------------------------------------------------------------------


def _raw(height=8, width=16, encoding="rgb8", step=None, data=None, is_bigendian=0) -> Image:
    step = width * 3 if step is None else step
    data = bytes(step * height) if data is None else data
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=is_bigendian,
        step=step,
        data=data,
    )


def _interleaved(cases: list, reason_at: int) -> list:
    """Cases reordered round-robin over their reasons, so two of one reason rarely follow each
    other (a reason's second warning within REJECTION_LOG_PERIOD is held back by design)."""
    by_reason: dict[str, list] = {}
    for case in cases:
        by_reason.setdefault(case.values[reason_at], []).append(case)
    ordered = []
    while any(by_reason.values()):
        for queue in by_reason.values():
            if queue:
                ordered.append(queue.pop(0))
    return ordered


RAW_CASES = _interleaved(
    [
        pytest.param(
            _raw(height=0, data=b""), "zero_size", "zero-size image 16x0", id="zero-height"
        ),
        pytest.param(
            _raw(width=0, step=0, data=b""), "zero_size", "zero-size image 0x8", id="zero-width"
        ),
        pytest.param(
            _raw(height=30000, width=30000, data=bytes(384)),
            "too_large",
            "image 30000x30000 exceeds max_pixels=1048576",
            id="declares-30000x30000",
        ),
        pytest.param(
            _raw(height=2**32 - 1, width=2**32 - 1, step=48, data=bytes(384)),
            "too_large",
            "4294967295x4294967295 exceeds",
            id="declares-uint32-max",
        ),
        pytest.param(
            _raw(height=1000, width=1100),
            "too_large",
            "1100x1000 exceeds",
            id="consistent-but-over-max-pixels",
        ),
        pytest.param(
            _raw(encoding="hsv8"), "encoding", "unsupported encoding 'hsv8'", id="unknown-encoding"
        ),
        pytest.param(_raw(encoding=""), "encoding", "unsupported encoding ''", id="empty-encoding"),
        pytest.param(
            _raw(encoding="\x1b[2J" + "x" * 9996),
            "encoding",
            "(10000 characters)",
            id="10000-character-encoding",
        ),
        pytest.param(_raw(encoding="8UC3"), "encoding", "unsupported encoding '8UC3'", id="8UC3"),
        pytest.param(
            _raw(encoding="32FC1", step=64, data=bytes(512)), "bit_depth", "'32FC1'", id="32FC1"
        ),
        pytest.param(
            _raw(encoding="mono16", step=32, data=bytes(256), is_bigendian=1),
            "bit_depth",
            "'mono16': more than 8 bits",
            id="mono16-big-endian",
        ),
        pytest.param(
            _raw(encoding="rgb16", step=96, data=bytes(768)), "bit_depth", "'rgb16'", id="rgb16"
        ),
        pytest.param(
            _raw(encoding="bayer_rggb16", step=32, data=bytes(256)),
            "bit_depth",
            "'bayer_rggb16'",
            id="bayer16",
        ),
        pytest.param(
            _raw(encoding="16UC1", step=32, data=bytes(256)), "bit_depth", "'16UC1'", id="16UC1"
        ),
        pytest.param(
            _raw(step=45, data=bytes(360)),
            "step",
            "step 45 < width 16 x 3 bytes per pixel",
            id="step-below-row",
        ),
        pytest.param(_raw(step=0, data=b""), "step", "step 0 < width 16", id="step-zero"),
        pytest.param(
            _raw(encoding="rgba8"), "step", "step 48 < width 16 x 4", id="rgba8-with-rgb8-step"
        ),
        pytest.param(
            _raw(data=bytes(383)),
            "data_length",
            "data length 383 != step 48 x height 8",
            id="data-too-short",
        ),
        pytest.param(
            _raw(data=bytes(391)), "data_length", "data length 391 != step 48", id="data-too-long"
        ),
        pytest.param(
            _raw(step=2**32 - 1, data=bytes(384)),
            "data_length",
            "step 4294967295 x height 8",
            id="step-uint32-max",
        ),
        pytest.param(
            _raw(height=2, step=2**31 + 24, data=bytes(48)),
            "data_length",
            "data length 48 != step 2147483672 x height 2",
            id="height-times-step-wraps-32-bits",
        ),
        pytest.param(
            _raw(encoding="mono8", step=16, data=bytes(384)),
            "data_length",
            "data length 384 != step 16 x height 8",
            id="mono8-with-rgb8-data",
        ),
        pytest.param(
            _raw(encoding="yuv422", width=15, step=30),
            "odd_width",
            "yuv422 needs an even width, got 15",
            id="yuv422-odd-width",
        ),
        pytest.param(
            _raw(encoding="yuv422_yuy2", width=15, step=30),
            "odd_width",
            "yuv422_yuy2 needs an even width",
            id="yuy2-odd-width",
        ),
        pytest.param(
            _raw(encoding="uyvy", width=9, step=18),
            "odd_width",
            "uyvy needs an even width",
            id="uyvy-odd-width",
        ),
        pytest.param(
            _raw(encoding="bayer_grbg8", width=15, step=15),
            "odd_size",
            "bayer_grbg8 needs even width and height, got 15x8",
            id="bayer-odd-width",
        ),
        pytest.param(
            _raw(encoding="bayer_rggb8", height=7, step=16),
            "odd_size",
            "got 16x7",
            id="bayer-odd-height",
        ),
    ],
    reason_at=1,
)

_SOS = JPEG.index(b"\xff\xda")
_IDAT = PNG.index(b"IDAT") - 4
_ZTXT = png_chunk(b"zTXt", b"comment\0\0" + zlib.compress(bytes(8 << 20), 9))

COMPRESSED_CASES = _interleaved(
    [
        pytest.param(
            "jpeg",
            jpeg_declaring(30000, 30000),
            "too_large",
            "JPEG header declares 30000x30000, which exceeds max_pixels",
            id="jpeg-bomb",
        ),
        pytest.param(
            "jpeg",
            jpeg_declaring(65535, 65535, progressive=True),
            "too_large",
            "declares 65535x65535",
            id="progressive-jpeg-bomb",
        ),
        pytest.param(
            "png", png_bomb(), "too_large", "PNG header declares 30000x30000", id="png-bomb"
        ),
        pytest.param(
            "png",
            png_declaring(2**31 - 1, 2**31 - 1),
            "too_large",
            "declares 2147483647x2147483647",
            id="png-declaring-2^31",
        ),
        pytest.param(
            "png",
            png_declaring(1100, 1000),
            "too_large",
            "declares 1100x1000",
            id="png-just-over-max-pixels",
        ),
        pytest.param(
            "jpeg", b"", "empty", "empty compressed image (format 'jpeg')", id="empty-data"
        ),
        pytest.param("jpeg", bytes(1000), "format", "unrecognised data", id="zeros"),
        pytest.param(
            "jpeg",
            np.random.default_rng(4).bytes(4096),
            "format",
            "only JPEG and PNG",
            id="random-bytes",
        ),
        pytest.param("jpeg", pillow_encoded(NOISE, "GIF"), "format", "GIF data", id="gif"),
        pytest.param("png", pillow_encoded(NOISE, "BMP"), "format", "BMP data", id="bmp"),
        pytest.param("jpeg", pillow_encoded(NOISE, "WEBP"), "format", "WEBP data", id="webp"),
        pytest.param("png", pillow_encoded(NOISE, "TIFF"), "format", "TIFF data", id="tiff"),
        pytest.param(
            "16UC1; compressedDepth png", PNG, "format", "compressedDepth", id="compressed-depth"
        ),
        pytest.param(
            "png",
            JPEG,
            "format_mismatch",
            "format 'png' says PNG but the data are JPEG",
            id="jpeg-labelled-png",
        ),
        pytest.param(
            "bgr8; jpeg compressed bgr8",
            PNG,
            "format_mismatch",
            "says JPEG but the data are PNG",
            id="png-labelled-jpeg",
        ),
        pytest.param(
            "jpeg", JPEG[: len(JPEG) * 2 // 3], "truncated", "truncated JPEG", id="truncated-jpeg"
        ),
        pytest.param(
            "png", PNG[: len(PNG) * 2 // 3], "truncated", "truncated PNG", id="truncated-png"
        ),
        pytest.param(
            "jpeg",
            b"\xff\xd8\xff" + bytes(300) + b"\xff\xd9",
            "header",
            "unreadable JPEG header",
            id="jpeg-garbage-header",
        ),
        pytest.param(
            "jpeg",
            b"\xff\xd8" + b"\xff" * 100_000,
            "header",
            "within its first 65536 bytes",
            id="jpeg-100k-fill-bytes",
        ),
        pytest.param(
            "jpeg",
            JPEG.replace(b"\xff\xc0\x00\x11\x08", b"\xff\xc0\x00\x11\x0c", 1),
            "header",
            "cannot handle 12-bit layers",
            id="12-bit-jpeg",
        ),
        pytest.param(
            "png",
            PNG[:29] + bytes([PNG[29] ^ 1]) + PNG[30:],
            "header",
            "bad header checksum in b'IHDR'",
            id="png-bad-ihdr-crc",
        ),
        pytest.param(
            "png",
            png_declaring(0, 16),
            "zero_size",
            "zero-size PNG declared in its header: 0x16",
            id="png-zero-width",
        ),
        pytest.param(
            "png",
            PNG[:33] + _ZTXT * 9 + PNG[33:],
            "ancillary",
            "PNG with 9 compressed text/ICC chunks",
            id="png-text-chunk-bomb",
        ),
        pytest.param(
            "png",
            PNG[:_IDAT] + png_chunk(b"IDAT", bytes(100)) + IEND,
            "undecodable",
            "undecodable PNG",
            id="png-corrupt-idat",
        ),
        pytest.param(
            "jpeg",
            JPEG[: _SOS + 5] + b"\x09" + JPEG[_SOS + 6 :],
            "undecodable",
            "undecodable JPEG",
            id="jpeg-scan-of-unknown-component",
        ),
    ],
    reason_at=2,
)


# -- the live nodes -------------------------------------------------------------------------------


@dataclass
class LiveNode:
    name: str
    topic: str
    started: NodeProcess
    log: Path
    publisher: object = None
    stamp: int = 0

    @property
    def process(self) -> subprocess.Popen:
        return self.started.process

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_model(
        tmp_path_factory.mktemp("inputs") / "model.pt", calibrated_small_model(config=SMALL_NAMED)
    )


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return ros_environment()


@pytest.fixture(scope="module")
def client(env):
    ros = RosClient(int(env["ROS_DOMAIN_ID"]))
    ros.subscribe("/diagnostics", DiagnosticArray, RELIABLE)
    yield ros
    ros.close()


@pytest.fixture(scope="module")
def live_nodes(checkpoint, env, client, tmp_path_factory):
    """Both nodes, started together (their start-up overlaps)."""
    logs = tmp_path_factory.mktemp("logs")
    nodes = {}
    for name, transport, topic, kind in (
        ("raw_inputs", "raw", "/image", Image),
        ("compressed_inputs", "compressed", "/image/compressed", CompressedImage),
    ):
        params = {"checkpoint": checkpoint, **NODE_PARAMS, "input_transport": transport}
        started = start_node(name, parameters=params, env=env, log=logs / f"{name}.log")
        nodes[name] = LiveNode(name, topic, started, logs / f"{name}.log")
        nodes[name].publisher = client.publisher(topic, kind, RELIABLE)
        client.subscribe(f"/{name}/semantic", Image, RELIABLE)
    for node in nodes.values():

        def ready(node=node) -> bool:
            if node.process.poll() is not None:
                raise AssertionError(f"{node.name} exited:\n{node.text()}")
            return bool(_diagnostics(client, node.name)) and node.publisher.get_subscription_count()

        assert client.wait_for(ready, timeout=90), node.text()
    yield nodes
    for node in nodes.values():
        assert node.started.stop() == 0, node.text()[-3000:]


@pytest.fixture(scope="module")
def raw_node(live_nodes) -> LiveNode:
    return live_nodes["raw_inputs"]


@pytest.fixture(scope="module")
def compressed_node(live_nodes) -> LiveNode:
    return live_nodes["compressed_inputs"]


def _diagnostics(client: RosClient, node: str) -> dict[str, str]:
    for msg in reversed(client.messages("/diagnostics")):
        if msg.status and msg.status[0].name.startswith(f"{node}:"):
            return {kv.key: kv.value for kv in msg.status[0].values}
    return {}


def _good_frame(node: LiveNode, stamp: int) -> Image | CompressedImage:
    header = Header(frame_id="camera")
    header.stamp.sec = stamp
    if node.topic.endswith("compressed"):
        data = cv2.imencode(".jpg", NOISE)[1].tobytes()
        return CompressedImage(header=header, format="jpeg", data=data)
    return Image(
        header=header, height=32, width=64, encoding="rgb8", step=192, data=NOISE.tobytes()
    )


def _answers_a_good_frame(client: RosClient, node: LiveNode) -> None:
    """The node publishes a mask for a good frame (sent again every 2 s: a subscription just
    re-created at activate may not be matched yet)."""
    node.stamp += 1
    stamp = 10_000 + node.stamp

    def answered() -> bool:
        return any(m.header.stamp.sec == stamp for m in client.messages(f"/{node.name}/semantic"))

    for _ in range(10):
        node.publisher.publish(_good_frame(node, stamp))
        if client.wait_for(answered, timeout=2):
            return
    raise AssertionError(f"no answer to a good frame:\n{node.text()[-3000:]}")


def _new_warning(node: LiveNode, offset: int, reason: str) -> str | None:
    prefix = f"rejected frame on {node.topic} ({reason}): "
    lines = [line for line in node.text()[offset:].splitlines() if prefix in line]
    return lines[0] if lines else None


def _assert_refused(
    client: RosClient, node: LiveNode, msg, reason: str, problem: str, answer: bool = True
) -> None:
    """Sends the bad frame, again each time the node has counted it, until the node warns: each
    one counted as exactly one rejection under ``reason``, and a warning naming the topic and
    ``problem`` (an earlier case's warning for ``reason`` holds this reason's next ones back for
    REJECTION_LOG_PERIOD, by design); no traceback; a good frame answered after it."""
    counts = client.wait_for(lambda: _diagnostics(client, node.name), timeout=10)
    rejected, by_reason = int(counts["rejected"]), int(counts[f"rejected_{reason}"])
    offset = len(node.text())
    deadline = time.monotonic() + REJECTION_LOG_PERIOD + 30
    sent, line = 0, None
    while line is None and time.monotonic() < deadline:
        node.publisher.publish(msg)
        sent += 1

        def counted(sent=sent) -> bool:
            return int(_diagnostics(client, node.name)["rejected"]) >= rejected + sent

        assert client.wait_for(counted, timeout=15), _diagnostics(client, node.name)
        now = _diagnostics(client, node.name)
        assert (int(now["rejected"]), int(now[f"rejected_{reason}"])) == (
            rejected + sent,
            by_reason + sent,
        ), (sent, now)
        # No warning yet: held back by the throttle (or not written yet); send the next one.
        line = _new_warning(node, offset, reason)
    assert line, f"no '{reason}' warning for {node.topic}:\n{node.text()[offset:][-3000:]}"
    assert problem in line, line
    if answer:
        _answers_a_good_frame(client, node)
    now = _diagnostics(client, node.name)
    assert (int(now["rejected"]), int(now[f"rejected_{reason}"])) == (
        rejected + sent,
        by_reason + sent,
    )
    assert "Traceback" not in node.text(), node.text()[-3000:]
    assert node.process.poll() is None


# -- every bad frame, one at a time ---------------------------------------------------------------


@pytest.mark.parametrize(("msg", "reason", "problem"), RAW_CASES)
@pytest.mark.bad_input
@pytest.mark.ros
def test_a_malformed_raw_frame_is_refused_counted_and_logged(
    client, raw_node, msg, reason, problem
):
    _assert_refused(client, raw_node, msg, reason, problem)


@pytest.mark.parametrize(("fmt", "data", "reason", "problem"), COMPRESSED_CASES)
@pytest.mark.bad_input
@pytest.mark.ros
def test_a_hostile_compressed_frame_is_refused_counted_and_logged(
    client, compressed_node, fmt, data, reason, problem
):
    msg = CompressedImage(format=fmt, data=data)
    _assert_refused(client, compressed_node, msg, reason, problem)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


@pytest.mark.bad_input
@pytest.mark.ros
def test_decompression_bombs_leave_the_node_peak_memory_within_50_mb(client, compressed_node):
    _answers_a_good_frame(client, compressed_node)  # the model's own allocations are done
    _answers_a_good_frame(client, compressed_node)
    before = _peak_rss_mb(compressed_node.process.pid)
    for fmt, bomb in (("jpeg", jpeg_declaring(30000, 30000)), ("png", png_bomb())):
        msg = CompressedImage(format=fmt, data=bomb)
        _assert_refused(client, compressed_node, msg, "too_large", "declares 30000x30000", False)
    _answers_a_good_frame(client, compressed_node)
    growth = _peak_rss_mb(compressed_node.process.pid) - before
    assert growth < MEMORY_BOUND_MB, f"peak RSS grew by {growth:.1f} MB"


# -- per-reason logging: a burst of different problems --------------------------------------------


BURST = {
    "raw_inputs": [
        (_raw(height=0, data=b""), "zero_size"),
        (_raw(height=4000, width=4000), "too_large"),
        (_raw(encoding="bgr"), "encoding"),
        (_raw(encoding="bgr16", step=96, data=bytes(768)), "bit_depth"),
        (_raw(step=47, data=bytes(376)), "step"),
        (_raw(data=bytes(100)), "data_length"),
        (_raw(encoding="uyvy", width=5, step=10), "odd_width"),
        (_raw(encoding="bayer_bggr8", width=3, step=3), "odd_size"),
    ],
    "compressed_inputs": [
        (CompressedImage(format="jpeg", data=b""), "empty"),
        (CompressedImage(format="jpeg", data=pillow_encoded(NOISE, "GIF")), "format"),
        (CompressedImage(format="png", data=JPEG), "format_mismatch"),
        (CompressedImage(format="jpeg", data=JPEG[:-300]), "truncated"),
        (CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0\x00"), "header"),
        (CompressedImage(format="png", data=png_declaring(5, 0)), "zero_size"),
        (CompressedImage(format="jpeg", data=jpeg_declaring(20000, 20000)), "too_large"),
    ],
}


@pytest.mark.bad_input
@pytest.mark.ros
@pytest.mark.parametrize("kind", BURST)
def test_a_burst_of_different_problems_logs_each_problem_the_first_time(local_node, capfd, kind):
    """Different bad frames one straight after another, into a node that has warned about
    nothing yet: every one of them is logged, where one throttle for all reasons logged only the
    first. (In process, through the frame callback: the live nodes warned about these reasons in
    the cases above, and only their clock could say when each is due again.)"""
    capfd.readouterr()
    frames = BURST[kind]
    for msg, _ in frames:
        local_node._on_frame(msg)
    log = capfd.readouterr().err
    for _, reason in frames:
        lines = [line for line in log.splitlines() if f"({reason}): " in line]
        assert len(lines) == 1 and "rejected frame on " in lines[0], (reason, log)
    counters = local_node.counters
    assert counters.rejected == len(frames) == len({reason for _, reason in frames})
    assert counters.rejected_by_reason == {reason: 1 for _, reason in frames}


# -- frame accounting at deactivate, over the lifecycle services ----------------------------------


@pytest.mark.bad_input
@pytest.mark.ros
def test_frames_waiting_at_deactivate_keep_received_equal_to_processed_dropped_rejected(
    client, raw_node
):
    def change(transition: int) -> None:
        request = ChangeState.Request(transition=Transition(id=transition))
        assert client.call(ChangeState, f"/{raw_node.name}/change_state", request).success

    def state() -> str:
        response = client.call(GetState, f"/{raw_node.name}/get_state", GetState.Request())
        return response.current_state.label

    before = int(client.wait_for(lambda: _diagnostics(client, raw_node.name))["received"])
    big = np.random.default_rng(5).integers(0, 256, (1024, 1024, 3), np.uint8).tobytes()
    for sec in range(3):  # the model busy with one, the next waiting in the slot
        frame = _raw(height=1024, width=1024, data=big)
        frame.header.stamp.sec = 20_000 + sec
        raw_node.publisher.publish(frame)
    # Deactivate only once the node has taken frames in: under load DDS may deliver them after
    # the subscription is gone, and then nothing is received at all (it failed that way).
    assert client.wait_for(
        lambda: int(_diagnostics(client, raw_node.name).get("received", 0)) > before, timeout=30
    ), _diagnostics(client, raw_node.name)
    change(Transition.TRANSITION_DEACTIVATE)
    assert state() == "inactive"
    change(Transition.TRANSITION_ACTIVATE)
    assert state() == "active"

    def balanced() -> bool:
        now = _diagnostics(client, raw_node.name)
        received = int(now["received"])
        accounted = int(now["processed"]) + int(now["dropped"]) + int(now["rejected"])
        return received > before and received == accounted

    assert client.wait_for(balanced, timeout=20), _diagnostics(client, raw_node.name)
    _answers_a_good_frame(client, raw_node)


# -- in process, deterministic: the callback path and the slot at deactivate ----------------------


@pytest.fixture
def local_node(ros_env, checkpoint):
    """A configured PerceptionNode in this process, not spun: the test drives its callback."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    overrides = [
        Parameter(key, value=str(value) if isinstance(value, Path) else value)
        for key, value in {"checkpoint": checkpoint, **NODE_PARAMS}.items()
    ]
    node = PerceptionNode("local_node", context=context, parameter_overrides=overrides)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    yield node
    node._release_io()
    node.destroy_node()
    rclpy.try_shutdown(context=context)


@pytest.mark.bad_input
@pytest.mark.ros
def test_a_rejected_frame_never_displaces_the_frame_waiting_in_the_slot(local_node):
    good = _raw(height=32, width=64, data=NOISE.tobytes())
    bad = [case.values[0] for case in RAW_CASES] + [
        CompressedImage(format=case.values[0], data=case.values[1])
        for case in COMPRESSED_CASES
        if case.values[2] not in ("ancillary", "undecodable")  # found only by decoding
    ]
    local_node._on_frame(good)  # configured, not active: nothing takes it from the slot
    for msg in bad:
        local_node._on_frame(msg)
    counters = local_node.counters
    assert (counters.received, counters.rejected, counters.dropped) == (1 + len(bad), len(bad), 0)
    assert sum(counters.rejected_by_reason.values()) == len(bad)
    waiting = local_node._slot.take(timeout=0)
    assert waiting is not None and waiting[0] is good


@pytest.mark.bad_input
@pytest.mark.ros
def test_a_frame_waiting_at_deactivate_is_counted_as_dropped(local_node):
    entered, release = threading.Event(), threading.Event()
    submit = local_node.predictor.submit

    def held_in_the_model(images, **options):
        entered.set()
        release.wait(30)
        return submit(images, **options)

    local_node.predictor.submit = held_in_the_model
    assert local_node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    frame = _raw(height=32, width=64, data=NOISE.tobytes())
    local_node._on_frame(frame)
    assert entered.wait(30)  # the first frame is in the model
    local_node._on_frame(frame)  # the second waits in the slot
    slot = local_node._slot
    deactivate = threading.Thread(target=local_node.trigger_deactivate)
    deactivate.start()
    with slot._condition:  # close() notifies it: woken when the slot is closed
        assert slot._condition.wait_for(lambda: slot.closed, timeout=30)
    release.set()  # the model finishes the first frame after the slot closed
    deactivate.join(30)
    counters = local_node.counters
    assert (counters.received, counters.processed, counters.dropped) == (2, 1, 1)
    assert counters.received == counters.processed + counters.dropped + counters.rejected


# -- units: the slot and the per-reason throttle --------------------------------------------------


def test_the_slot_never_loses_a_frame_without_saying_so():
    slot = LatestFrameSlot()
    assert slot.put("a") is False
    assert slot.put("b") is True  # "a" replaced: dropped
    assert slot.close() is True  # "b" discarded at close: dropped
    assert slot.take(timeout=0) is None
    assert slot.put("c") is True  # refused while closed: dropped
    assert slot.clear() is False
    slot.reopen()
    assert slot.take(timeout=0) is None  # nothing stale left over
    assert slot.put("d") is False and slot.take(timeout=0) == "d"


def test_a_take_blocked_at_close_returns_none_and_leaves_the_frame_to_close():
    slot = LatestFrameSlot()
    taken, waiting = [], threading.Event()
    wait = slot._condition.wait

    def wait_and_say_so(*args, **kwargs):  # called with the lock held; wait() releases it
        waiting.set()
        return wait(*args, **kwargs)

    slot._condition.wait = wait_and_say_so
    worker = threading.Thread(target=lambda: taken.append(slot.take()))
    worker.start()
    assert waiting.wait(30)
    assert slot.close() is False  # takes the lock: only once the worker is blocked in wait()
    worker.join(5)
    assert taken == [None]
    slot.reopen()
    slot.put("e")
    with slot._condition:  # close racing a take that has already woken: the frame is reported
        slot._closed = True
    assert slot.take(timeout=0) is None and slot.clear() is True


def test_rejections_are_throttled_per_reason_and_each_reason_is_logged_the_first_time():
    now = [0.0]
    throttle = ReasonThrottle(1.0, clock=lambda: now[0])
    for i in range(14):  # 14 different problems 0.3 s apart: all logged
        assert throttle.admit(f"reason_{i}") == 0
        now[0] += 0.3
    assert throttle.admit("step") == 0
    now[0] += 0.3
    assert throttle.admit("step") is None
    now[0] += 0.3
    assert throttle.admit("step") is None
    assert throttle.admit("encoding") == 0  # another reason is not held back by "step"
    now[0] += 0.5
    assert throttle.admit("step") == 2  # the next one reports the two held back
    assert throttle.admit("step") is None
