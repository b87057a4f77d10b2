"""Evaluating the live node on a rosbag: replay over DDS, collect, match by stamp, report.

Everything that can be checked is checked BEFORE the node starts: ``--out`` (a new folder),
``--node-params`` (YAML, names and types of the node's parameters), the class map, the
checkpoint (readable, weights fit, classes equal to the class map's), the bag (readable, the
camera topic present with an image type, ground truth decodable, of the frames' size and with
class ids the class map has). Each camera frame is decoded with the node's own conversions
(:mod:`.conversions`), so frames the node will reject are known and counted as rejected rather
than waited for, and the report's overlays show the colours the node saw (any encoding the node
accepts, row padding, JPEG/PNG).

The camera messages are replayed byte for byte (the bag's CDR is what rclpy sends) at the bag's
receive timing scaled by a factor, or paced by the node's outputs. Outputs are matched to the
ground truth by header stamp and scored with the same metric code and the same ground-truth rule
(:func:`..evaluation.ground_truth.counted_boxes` at the node's input width) as ``mtl-eval``.

Frames whose header stamp is not unique (a driver that leaves stamps at zero, or repeats them)
cannot be matched to outputs or ground truth by stamp: they are replayed with a new, unique stamp
(the bag's receive time) so speed is still measured, and the ground truth at those stamps is left
out of the scoring. Warnings and the report say how many frames this concerns.

``--out`` is written atomically: a temporary folder beside it is renamed when the report is
complete. If a run fails after the node started, the node's log is kept beside ``--out`` as
``<out>.failed-node.log`` and the one-line error names it.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from sensor_msgs.msg import CompressedImage, Image
from tqdm import tqdm
from vision_msgs.msg import Detection2DArray

from ..cli import ToolError, one_line
from ..config_loading import read_yaml
from ..data.labels import DEFAULT_CLASSES_FILE, ClassMap
from ..evaluation.evaluate import check_classes, format_table
from ..evaluation.ground_truth import counted_boxes
from ..evaluation.metrics import ConfusionMatrix, DetectionAP
from ..model.checkpoint import load_model
from ..model.config import ModelConfig
from ..outputs import atomic_directory, check_new_directory
from ..visualization import draw_overlay
from .bag_record import CAMERA_TOPIC, GT_DETECTIONS_TOPIC, GT_SEMANTIC_TOPIC, typestore
from .conversions import ImageRejectedError, compressed_to_rgb, image_to_rgb
from .parameters import NodeParameters

NODE_NAME = "perception_node"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
CAMERA_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
MASK_ENCODINGS = ("mono8", "8UC1")
VOID = 255  # the ground-truth masks' and the node's unlabelled value
# Report overlays draw at most this many detections, from this score up (the node runs at 0.001
# for AP, so its outputs hold many weak boxes a picture should not show).
OVERLAY_SCORE = 0.1
OVERLAY_MAX_BOXES = 20
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# What the evaluation sets unless --node-params says otherwise, and what it always sets.
EVALUATION_DEFAULTS = {"score_threshold": 0.001, "max_detections": 100, "diagnostics_period": 0.2}
FORCED = ("checkpoint", "input_transport", "qos_reliability", "qos_depth", "autostart")
# Parameters every rclpy node accepts besides its own.
STANDARD_PARAMETERS = {"use_sim_time": bool, "start_type_description_service": bool}
NODE_PARAMETERS = frozenset(spec.name for spec in fields(NodeParameters))
NODE_PARAMETER_TYPES: dict[str, type] = {
    **{spec.name: type(spec.default) for spec in fields(NodeParameters)},
    "autostart": bool,
    **STANDARD_PARAMETERS,
}
_TOPIC = re.compile(r"(/[A-Za-z_][A-Za-z0-9_]*)+")


@dataclass(frozen=True)
class BagTopics:
    """Topics to read; ``None`` means the default (the camera's ``/compressed`` sibling is
    accepted for a default or given camera topic; a missing default ground-truth topic means
    no ground truth, a missing given one is an error)."""

    camera: str | None = None
    semantic: str | None = None
    detections: str | None = None


@dataclass
class Frame:
    """One camera message of the bag, as it will be replayed."""

    index: int  # position on the camera topic, in receive order
    received: int  # the bag's receive time, ns
    bag_stamp: int  # the header stamp in the bag, ns
    stamp: int  # the stamp it is sent with (unique; the bag's unless re-stamped)
    raw: bytes  # CDR to publish
    size: tuple[int, int] | None  # (H, W) once decoded, None when the node will reject it
    rejected: str | None = None  # why the node will reject it
    mask: np.ndarray | None = None  # ground truth matched unambiguously, else None
    boxes: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class BagFrames:
    """What the bag holds: camera frames in receive order, each with its ground truth."""

    path: Path
    camera_topic: str
    camera_type: str
    semantic_topic: str | None
    detections_topic: str | None
    max_pixels: int
    frames: list[Frame] = field(default_factory=list)
    restamped: int = 0
    ground_truth_left_out: dict[str, int] = field(default_factory=dict)
    ground_truth_unmatched: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # undecodable camera messages
    warnings: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> list[Frame]:
        return [f for f in self.frames if f.rejected is not None]


def _stamp(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def _topic_list(types: dict[str, set[str]]) -> str:
    listed = [f"{topic} ({', '.join(sorted(kinds))})" for topic, kinds in sorted(types.items())]
    return "; ".join(listed) or "none"


# -- the node's parameter file ------------------------------------------------------------


def _applies_to_node(key: str) -> bool:
    """Whether a parameter file's top-level key (``/**``, ``perception_node``, ...) names the
    node the evaluation starts (``/perception_node``)."""
    pattern = re.escape(str(key).strip("/")).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.fullmatch(pattern, NODE_NAME) is not None


def _check_parameter(name: str, value: Any, where: str) -> Any:
    expected = NODE_PARAMETER_TYPES.get(name)
    if expected is None:
        known = ", ".join(sorted(NODE_PARAMETER_TYPES))
        raise ValueError(f"unknown parameter '{name}' for {NODE_NAME} ({where}); known: {known}")
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, float)
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = {bool: "true or false", int: "an integer", float: "a float (e.g. 1.0)"}
        raise ValueError(
            f"parameter '{name}' must be {kind.get(expected, 'a string')}, got "
            f"{type(value).__name__} {value!r} ({where})"
        )
    if expected is float and not math.isfinite(value):
        raise ValueError(f"parameter '{name}' must be finite, got {value!r} ({where})")
    return value


def read_node_params(path: Path | None) -> dict[str, Any]:
    """The parameters a ROS 2 parameter file gives ``perception_node``, checked as the node
    would check them (names, types; ROS refuses an integer for a float parameter).

    Raises:
        ValueError: the file is missing, a folder, not YAML, not in the ROS 2 layout
            (``node: {ros__parameters: {...}}``), or names an unknown parameter or a wrong type.
    """
    if path is None:
        return {}
    where = f"--node-params {path}"
    content = read_yaml(path, "--node-params")
    parameters: dict[str, Any] = {}
    for key, entry in content.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("ros__parameters"), dict):
            raise ValueError(
                f"entry '{key}' has no 'ros__parameters' mapping; a ROS 2 parameter file reads "
                f"'{NODE_NAME}: {{ros__parameters: {{name: value}}}}' ({where})"
            )
        if _applies_to_node(key):
            for name, value in entry["ros__parameters"].items():
                parameters[str(name)] = _check_parameter(str(name), value, where)
    return parameters


# -- reading the bag ------------------------------------------------------------------------


def _camera_topic(path: Path, types: dict[str, set[str]], wanted: str | None) -> tuple[str, str]:
    option = "--camera-topic" if wanted else f"--bag {path}"
    camera = wanted or CAMERA_TOPIC
    candidates = [camera, f"{camera}/compressed"]
    found = next((t for t in candidates if t in types), None)
    if found is None:
        raise ValueError(
            f"no camera topic {camera} (or {camera}/compressed) in the bag; its topics: "
            f"{_topic_list(types)} ({option})"
        )
    kinds = types[found]
    if len(kinds) != 1 or next(iter(kinds)) not in CAMERA_TYPES:
        # A wrong type on the topic itself: its /compressed sibling may still be right.
        sibling = f"{found}/compressed"
        if sibling in types and types[sibling] == {COMPRESSED_TYPE}:
            found, kinds = sibling, types[sibling]
        else:
            raise ValueError(
                f"camera topic {found} carries {', '.join(sorted(kinds))}, expected "
                f"{' or '.join(CAMERA_TYPES)} ({option})"
            )
    if not _TOPIC.fullmatch(found):
        raise ValueError(f"camera topic {found!r} is not a valid ROS 2 topic name ({option})")
    return found, next(iter(kinds))


def _ground_truth_topic(
    types: dict[str, set[str]], wanted: str | None, default: str, expected: str, option: str
) -> str | None:
    topic = wanted or default
    if topic not in types:
        if wanted is None:
            return None  # no ground truth of this kind: fine
        raise ValueError(
            f"no ground-truth topic {topic} in the bag; its topics: {_topic_list(types)} ({option})"
        )
    if types[topic] != {expected}:
        raise ValueError(
            f"ground-truth topic {topic} carries {', '.join(sorted(types[topic]))}, expected "
            f"{expected} ({option} {topic})"
        )
    return topic


def _decode_mask(msg: Image, topic: str) -> np.ndarray:
    """A ground-truth mask message -> (H, W) uint8 class ids (row padding dropped)."""
    stamp = _stamp(msg.header)
    if msg.encoding not in MASK_ENCODINGS:
        raise ValueError(
            f"ground-truth mask at stamp {stamp} has encoding '{msg.encoding}', expected mono8 "
            f"class ids ({topic})"
        )
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0 or step < width or len(msg.data) != step * height:
        raise ValueError(
            f"ground-truth mask at stamp {stamp} is malformed: {width}x{height}, step {step}, "
            f"{len(msg.data)} bytes ({topic})"
        )
    return np.frombuffer(msg.data, np.uint8).reshape(height, step)[:, :width].copy()


def _decode_detections(message) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Detection2DArray (rclpy's or rosbags') -> (N, 4) xyxy boxes, (N,) scores, (N,) classes."""
    boxes, scores, classes = [], [], []
    for detection in message.detections:
        cx, cy = detection.bbox.center.position.x, detection.bbox.center.position.y
        w, h = detection.bbox.size_x, detection.bbox.size_y
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        scores.append(detection.results[0].hypothesis.score)
        classes.append(int(detection.results[0].hypothesis.class_id))
    return np.array(boxes).reshape(-1, 4), np.array(scores), np.array(classes, np.int64)


def _decode_ground_truth_boxes(msg: Detection2DArray, topic: str) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth Detection2DArray -> (N, 4) xyxy boxes and (N,) classes, each checked."""
    stamp = _stamp(msg.header)
    for i, detection in enumerate(msg.detections):
        where = f"ground-truth detection {i} at stamp {stamp}"
        if not detection.results:
            raise ValueError(f"{where} has no class hypothesis ({topic})")
        class_id = detection.results[0].hypothesis.class_id
        try:
            int(class_id)
        except ValueError:
            raise ValueError(
                f"{where} has class_id {class_id!r}, expected a detection class number ({topic})"
            ) from None
        values = (
            detection.bbox.center.position.x,
            detection.bbox.center.position.y,
            detection.bbox.size_x,
            detection.bbox.size_y,
        )
        if not all(math.isfinite(v) for v in values) or min(values[2:]) < 0:
            raise ValueError(f"{where} has a non-finite or negative box {values} ({topic})")
    boxes, _, classes = _decode_detections(msg)
    return boxes, classes


def _read_messages(
    path: Path, topics: BagTopics
) -> tuple[str, str, str | None, str | None, list[tuple[str, int, bytes]]]:
    """Opens the bag, picks the topics, returns them and the raw messages (topic, receive
    time, CDR) in the bag's order."""
    try:
        with Reader(path) as reader:
            types: dict[str, set[str]] = defaultdict(set)
            for connection in reader.connections:
                types[connection.topic].add(connection.msgtype)
            camera, camera_type = _camera_topic(path, types, topics.camera)
            semantic = _ground_truth_topic(
                types, topics.semantic, GT_SEMANTIC_TOPIC, IMAGE_TYPE, "--semantic-topic"
            )
            detections = _ground_truth_topic(
                types, topics.detections, GT_DETECTIONS_TOPIC, DETECTIONS_TYPE, "--detections-topic"
            )
            wanted = {camera, semantic, detections} - {None}
            connections = [c for c in reader.connections if c.topic in wanted]
            raw = [
                (c.topic, int(received), bytes(data))
                for c, received, data in reader.messages(connections=connections)
            ]
    except ValueError:
        raise
    except FileNotFoundError as error:
        reason = "not a rosbag2 folder (no metadata.yaml)" if path.is_dir() else one_line(error)
        raise ValueError(f"cannot read bag: {reason} (--bag {path})") from error
    except Exception as error:  # rosbags' ReaderError, and sqlite/zstd/struct errors of damage
        if path.is_file():
            raise ValueError(
                f"cannot read bag: {path.name} is a file, not a rosbag2 folder nor a readable "
                f".mcap/.db3 file ({one_line(error)}) (--bag {path})"
            ) from error
        raise ValueError(
            "cannot read bag (truncated, corrupt or unknown storage format): "
            f"{one_line(error)} (--bag {path})"
        ) from error
    return camera, camera_type, semantic, detections, raw


def read_bag(
    path: Path, topics: BagTopics = BagTopics(), max_pixels: int = NodeParameters.max_pixels
) -> BagFrames:
    """Reads the camera frames and their ground truth, and decodes each frame as the node will.

    Args:
        path: a rosbag2 folder (or a single .mcap / .db3 file rosbags reads).
        topics: which topics to read (see :class:`BagTopics`).
        max_pixels: the node's limit, to know which frames it will reject.

    Returns:
        The frames in receive order, each with a unique stamp and the ground truth that matches
        it unambiguously; counts and warnings of what was re-stamped or left out.

    Raises:
        ValueError: the bag is missing or unreadable, the camera topic is missing or of another
            type (the message lists the bag's topics and types), a ground-truth message is
            malformed, or the camera topic has no frames.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"bag not found (--bag {path})")
    camera, camera_type, semantic, detections, raw = _read_messages(path, topics)
    bag = BagFrames(path, camera, camera_type, semantic, detections, max_pixels)
    message_type = Image if camera_type == IMAGE_TYPE else CompressedImage
    to_rgb = image_to_rgb if camera_type == IMAGE_TYPE else compressed_to_rgb
    ground_truth: dict[str, dict[int, list]] = {
        "semantic": defaultdict(list),
        "detections": defaultdict(list),
    }
    camera_index = 0
    for topic, received, data in raw:
        if topic == camera:
            index, camera_index = camera_index, camera_index + 1
            try:
                msg = deserialize_message(data, message_type)
            except Exception as error:  # rclpy raises its own RMWError for bad CDR
                bag.problems.append(
                    f"{camera} message {index}: cannot deserialise {camera_type} "
                    f"({one_line(error)})"
                )
                continue
            stamp = _stamp(msg.header)
            try:
                size, rejected = to_rgb(msg, max_pixels).shape[:2], None
            except ImageRejectedError as error:
                size, rejected = None, str(error)
            bag.frames.append(Frame(index, received, stamp, stamp, data, size, rejected))
            continue
        try:
            msg = deserialize_message(data, Image if topic == semantic else Detection2DArray)
        except Exception as error:
            raise ValueError(
                f"cannot deserialise a ground-truth message ({one_line(error)}) ({topic})"
            ) from error
        if topic == semantic:
            ground_truth["semantic"][_stamp(msg.header)].append(_decode_mask(msg, topic))
        else:
            ground_truth["detections"][_stamp(msg.header)].append(
                _decode_ground_truth_boxes(msg, topic)
            )
    if not bag.frames:
        reason = f" ({len(bag.problems)} undecodable)" if bag.problems else ""
        raise ValueError(f"the bag has no frames on {camera}{reason} ({camera_type}, --bag {path})")
    bag.frames.sort(key=lambda f: (f.received, f.index))
    _make_stamps_unique(bag)
    _attach_ground_truth(bag, ground_truth)
    return bag


def _make_stamps_unique(bag: BagFrames) -> None:
    """Frames sharing a header stamp get a new unique one (their receive time, or the next free
    nanosecond), re-serialised into the CDR that is sent."""
    counts = Counter(f.bag_stamp for f in bag.frames)
    used = {stamp for stamp, n in counts.items() if n == 1}
    message_type = Image if bag.camera_type == IMAGE_TYPE else CompressedImage
    for frame in bag.frames:
        if counts[frame.bag_stamp] == 1:
            continue
        stamp = frame.received if frame.received not in used else max(used) + 1
        used.add(stamp)
        msg = deserialize_message(frame.raw, message_type)
        msg.header.stamp = Time(sec=stamp // 10**9, nanosec=stamp % 10**9)
        frame.stamp, frame.raw = stamp, serialize_message(msg)
        bag.restamped += 1
    if bag.restamped:
        repeated = sorted(s for s, n in counts.items() if n > 1)
        bag.warnings.append(
            f"{bag.restamped} of {len(bag.frames)} camera frames on {bag.camera_topic} share "
            f"their header stamp with another frame ({len(repeated)} repeated stamps, e.g. "
            f"{repeated[0]}): replayed with unique stamps (the bag's receive time) so speed is "
            "still measured; ground truth at those stamps is left out of the scoring"
        )


def _attach_ground_truth(bag: BagFrames, ground_truth: dict[str, dict[int, list]]) -> None:
    """Gives each frame the ground truth at its bag stamp when exactly one frame and one message
    per topic have that stamp; counts what is left out (ambiguous) or unmatched."""
    frames_at = Counter(f.bag_stamp for f in bag.frames)
    by_stamp = {f.bag_stamp: f for f in bag.frames if frames_at[f.bag_stamp] == 1}
    for kind, topic in (("semantic", bag.semantic_topic), ("detections", bag.detections_topic)):
        if topic is None:
            continue
        left_out = unmatched = 0
        for stamp, values in ground_truth[kind].items():
            if frames_at.get(stamp, 0) == 0:
                unmatched += len(values)
            elif frames_at[stamp] > 1 or len(values) > 1:
                left_out += len(values)
            elif kind == "semantic":
                by_stamp[stamp].mask = values[0]
            else:
                by_stamp[stamp].boxes = values[0]
        bag.ground_truth_left_out[kind] = left_out
        bag.ground_truth_unmatched[kind] = unmatched
        if left_out:
            bag.warnings.append(
                f"{left_out} ground-truth messages on {topic} cannot be matched to one camera "
                "frame (their stamp is shared by several frames or messages): left out of the "
                "scoring"
            )
        if unmatched:
            bag.warnings.append(
                f"{unmatched} ground-truth messages on {topic} have a stamp no camera frame has: "
                "left out of the scoring"
            )
    if bag.problems:
        bag.warnings.append(
            f"{len(bag.problems)} camera messages cannot be deserialised and are not replayed "
            f"(first: {bag.problems[0]})"
        )
    rejected = bag.rejected
    if rejected:
        bag.warnings.append(
            f"{len(rejected)} of {len(bag.frames)} frames on {bag.camera_topic} will be rejected "
            f"by the node (first: {rejected[0].rejected}); they are sent and reported as rejected"
        )


def check_ground_truth(bag: BagFrames, class_map: ClassMap) -> None:
    """Refuses ground truth that cannot be scored with ``class_map``: a mask of another size
    than its frame, mask values or box classes the class map does not have."""
    num_seg, num_det = class_map.num_seg_classes, class_map.num_det_classes
    for frame in bag.frames:
        if frame.mask is not None:
            where = f"ground-truth mask at stamp {frame.bag_stamp}"
            if frame.size is not None and frame.mask.shape != frame.size:
                raise ValueError(
                    f"{where} is {frame.mask.shape[1]}x{frame.mask.shape[0]} but its camera "
                    f"frame is {frame.size[1]}x{frame.size[0]} ({bag.semantic_topic})"
                )
            values = np.unique(frame.mask)
            bad = values[(values >= num_seg) & (values != VOID)]
            if bad.size:
                raise ValueError(
                    f"{where} holds class id {int(bad[0])}, but the class map has {num_seg} "
                    f"segmentation classes (0-{num_seg - 1}, {VOID} = void) "
                    f"({bag.semantic_topic})"
                )
        if frame.boxes is not None:
            classes = frame.boxes[1]
            bad = classes[(classes < 0) | (classes >= num_det)]
            if bad.size:
                raise ValueError(
                    f"ground-truth detection at stamp {frame.bag_stamp} has class id "
                    f"{int(bad[0])}, but the class map has {num_det} detection classes "
                    f"(0-{num_det - 1}) ({bag.detections_topic})"
                )


# -- running the node -----------------------------------------------------------------------


@dataclass
class Collected:
    sent: dict[int, float] = field(default_factory=dict)  # stamp -> publish time
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    detections: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    arrived: dict[int, float] = field(default_factory=dict)  # stamp -> time both outputs were in
    raw_outputs: list[tuple[str, int, bytes, str]] = field(default_factory=list)
    node_counters: dict[str, str] = field(default_factory=dict)  # the node's last /diagnostics


def _parameter_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def start_node(
    camera_topic: str,
    compressed: bool,
    params_file: Path | None,
    log: Path,
    defaults: dict[str, Any],
    forced: dict[str, Any],
) -> tuple[subprocess.Popen, Any]:
    """The perception node in evaluation mode: ``defaults`` (overridable by ``params_file``),
    then the file, then ``forced`` (the evaluation's checkpoint, transport and QoS). Returns the
    process and its open log file."""
    remap = f"image/compressed:={camera_topic}" if compressed else f"image:={camera_topic}"
    args = [sys.executable, "-m", "mtl_perception.ros.node", "--ros-args"]
    args += ["-r", f"__node:={NODE_NAME}", "-r", remap]
    for name, value in defaults.items():
        args += ["-p", f"{name}:={_parameter_text(value)}"]
    if params_file:
        args += ["--params-file", str(params_file)]
    for name, value in forced.items():
        args += ["-p", f"{name}:={_parameter_text(value)}"]
    stream = log.open("w")
    return subprocess.Popen(args, stdout=stream, stderr=subprocess.STDOUT), stream


def _node_failure(process: subprocess.Popen, log: Path | None) -> str:
    """The node's exit code and the last error line of its log."""
    lines = []
    if log is not None and log.is_file():
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    errors = [line for line in lines if "ERROR" in line or "FATAL" in line or "Error" in line]
    last = (errors or [line for line in lines if line] or ["(no output)"])[-1]
    fatal = [line for line in errors if "configure failed" in line or "invalid parameter" in line]
    return f"the node exited with code {process.returncode}: {(fatal or [last])[-1]}"


def _counts(counters: dict[str, str]) -> dict[str, int] | None:
    try:
        return {k: int(counters[k]) for k in ("received", "processed", "dropped", "rejected")}
    except (KeyError, ValueError):
        return None


def replay(
    bag: BagFrames,
    *,
    rate_factor: float | None,
    frame_timeout: float = 10.0,
    node_log: Path | None = None,
    process: subprocess.Popen | None = None,
    progress: bool = True,
) -> Collected:
    """Publishes the bag's camera frames and collects the node's outputs (see module doc)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("mtl_bag_player", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    collected = Collected()
    message_type = Image if bag.camera_type == IMAGE_TYPE else CompressedImage

    def on_mask(msg: Image) -> None:
        stamp = _stamp(msg.header)
        collected.masks[stamp] = (
            np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width).copy()
        )
        collected.raw_outputs.append(
            (f"/{NODE_NAME}/semantic", stamp, serialize_message(msg), IMAGE_TYPE)
        )
        if stamp in collected.detections:
            collected.arrived[stamp] = time.monotonic()

    def on_detections(msg: Detection2DArray) -> None:
        stamp = _stamp(msg.header)
        collected.detections[stamp] = _decode_detections(msg)
        collected.raw_outputs.append(
            (f"/{NODE_NAME}/detections", stamp, serialize_message(msg), DETECTIONS_TYPE)
        )
        if stamp in collected.masks:
            collected.arrived[stamp] = time.monotonic()

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NODE_NAME}:"):
                collected.node_counters = {kv.key: kv.value for kv in status.values}

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    node.create_subscription(Image, f"/{NODE_NAME}/semantic", on_mask, RELIABLE)
    node.create_subscription(Detection2DArray, f"/{NODE_NAME}/detections", on_detections, RELIABLE)
    publisher = node.create_publisher(message_type, bag.camera_topic, RELIABLE)

    def spin_until(condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if process is not None and process.poll() is not None:
                raise ToolError(_node_failure(process, node_log))
            executor.spin_once(timeout_sec=0.01)
        return condition()

    def node_discarded(before: dict[str, int] | None) -> bool:
        """The node counted one more frame as rejected or dropped (failed) than ``before``."""
        now = _counts(collected.node_counters)
        if now is None or before is None:
            return False
        return now["rejected"] + now["dropped"] > before["rejected"] + before["dropped"]

    def settled() -> bool:
        now = _counts(collected.node_counters)
        sent = len(collected.sent)
        return now is not None and (
            now["received"] >= sent and now["processed"] + now["rejected"] + now["dropped"] >= sent
        )

    try:
        if not spin_until(
            lambda: (
                publisher.get_subscription_count() > 0
                and node.count_publishers(f"/{NODE_NAME}/detections") > 0
            ),
            120,
        ):
            raise ToolError(f"the node did not subscribe to {bag.camera_topic} within 120 s")
        spin_until(lambda: collected.node_counters != {}, 2.0)  # discovery settles both ways
        start_wall = time.monotonic()
        first = bag.frames[0].received
        for frame in tqdm(bag.frames, desc="replaying", unit="frame", disable=not progress):
            if rate_factor:
                due = start_wall + (frame.received - first) / 1e9 / rate_factor
                spin_until(
                    lambda due=due: time.monotonic() >= due, max(0.0, due - time.monotonic()) + 1
                )
            before = _counts(collected.node_counters)
            collected.sent[frame.stamp] = time.monotonic()
            publisher.publish(frame.raw)
            if not rate_factor:  # paced by the node: wait for this frame's outcome
                spin_until(
                    lambda stamp=frame.stamp, before=before: (
                        stamp in collected.arrived or node_discarded(before)
                    ),
                    2.0 if frame.rejected else frame_timeout,
                )
        expected = [f.stamp for f in bag.frames if f.rejected is None]
        spin_until(lambda: all(s in collected.arrived for s in expected), 5.0)
        spin_until(settled, 3.0)  # the node's final counters
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return collected


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- scoring and the report -------------------------------------------------------------------


def score(
    bag: BagFrames, collected: Collected, class_map: ClassMap, input_width: int
) -> dict[str, Any]:
    """The same metrics as mtl-eval on the frames that have both ground truth and outputs: the
    ground-truth boxes counted are those :func:`counted_boxes` keeps at the node's input width
    with the class map's ``min_box_size``."""
    confusion = ConfusionMatrix(class_map.num_seg_classes, class_map.void_id)
    average_precision = DetectionAP(class_map.num_det_classes)
    scored = 0
    for frame in bag.frames:
        if frame.stamp not in collected.arrived or (frame.mask is None and frame.boxes is None):
            continue
        if frame.mask is not None:
            prediction = collected.masks[frame.stamp]
            if prediction.shape != frame.mask.shape:
                bag.problems.append(
                    f"frame {frame.stamp}: the node's mask is {prediction.shape}, the ground "
                    f"truth {frame.mask.shape}"
                )
                continue
            confusion.update(
                np.where(prediction == VOID, 0, prediction),
                np.where(frame.mask == VOID, class_map.void_id, frame.mask),
            )
        if frame.boxes is not None:
            boxes, scores, classes = collected.detections[frame.stamp]
            image_width = collected.masks[frame.stamp].shape[1]  # the frame as the node saw it
            gt_boxes, gt_classes = counted_boxes(
                *frame.boxes, image_width, input_width, class_map.min_box_size
            )
            average_precision.update(boxes, scores, classes, gt_boxes, gt_classes)
        scored += 1
    iou, ap = confusion.iou(), average_precision.average_precision()
    has_masks, has_boxes = bag.semantic_topic is not None, bag.detections_topic is not None

    def number(value) -> float | None:
        return float(value) if value is not None and np.isfinite(value) else None

    return {
        "frames_scored": scored,
        "iou": {
            n: number(iou[i]) for i, n in enumerate(class_map.seg_names) if i != class_map.void_id
        }
        if has_masks
        else {},
        "miou": number(confusion.mean_iou()) if has_masks else None,
        "ap": {n: number(ap[i]) for i, n in enumerate(class_map.det_names)} if has_boxes else {},
        "map": number(average_precision.mean_ap()) if has_boxes else None,
    }


def frame_rgb(bag: BagFrames, frame: Frame) -> np.ndarray:
    """The frame as the node sees it: (H, W, 3) uint8 RGB through the node's conversions."""
    if bag.camera_type == IMAGE_TYPE:
        return image_to_rgb(deserialize_message(frame.raw, Image), bag.max_pixels)
    return compressed_to_rgb(deserialize_message(frame.raw, CompressedImage), bag.max_pixels)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def write_report(
    out: Path,
    bag: BagFrames,
    collected: Collected,
    metrics: dict[str, Any],
    model_config: ModelConfig,
    input_size: tuple[int, int],
    overlays: int,
    output_bag: bool,
) -> dict[str, Any]:
    """Writes report.json, report.md, overlays, the latency histogram (and the outputs bag)
    into ``out`` (the temporary folder :func:`evaluate_bag` renames when complete)."""
    latencies = np.array(
        [
            (collected.arrived[s] - collected.sent[s]) * 1e3
            for s in collected.sent
            if s in collected.arrived
        ]
    )
    duration = max(collected.arrived.values(), default=0) - min(collected.sent.values(), default=0)
    rejected = bag.rejected
    report = {
        "bag": str(bag.path),
        "camera_topic": bag.camera_topic,
        "camera_type": bag.camera_type,
        "input_size": list(input_size),
        "frames_in_bag": len(bag.frames) + len(bag.problems),
        "frames_sent": len(collected.sent),
        "frames_with_output": len(collected.arrived),
        "frames_without_output": len(collected.sent) - len(collected.arrived),
        "frames_rejected": len(rejected),
        "rejections": [{"stamp": f.stamp, "reason": f.rejected} for f in rejected[:20]],
        "frames_restamped": bag.restamped,
        "ground_truth_left_out": bag.ground_truth_left_out,
        "ground_truth_unmatched": bag.ground_truth_unmatched,
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)) if latencies.size else None,
            "p95": float(np.percentile(latencies, 95)) if latencies.size else None,
            "max": float(latencies.max()) if latencies.size else None,
        },
        "throughput_fps": len(collected.arrived) / duration if duration > 0 else None,
        "node_counters": {
            k: collected.node_counters.get(k)
            for k in ("received", "processed", "dropped", "rejected", "failed")
        },
        "bag_problems": bag.problems,
        "warnings": bag.warnings,
        **metrics,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Evaluation of {bag.path.name}",
        "",
        f"Camera topic `{bag.camera_topic}` ({bag.camera_type}); {report['frames_in_bag']} "
        f"frames in the bag, {report['frames_sent']} sent, {report['frames_with_output']} with "
        f"outputs, {len(rejected)} rejected by the node"
        + (f" (first: {rejected[0].rejected})" if rejected else "")
        + f"; node input {input_size[1]}x{input_size[0]}.",
        "",
    ]
    if bag.warnings:
        lines += ["**Warnings**", ""] + [f"* {w}" for w in bag.warnings] + [""]
    if metrics["miou"] is not None or metrics["map"] is not None:
        table = format_table(
            {k: metrics[k] for k in ("iou", "miou", "ap", "map")},
            column="bag",
        )
        lines += [f"Scored on {metrics['frames_scored']} frames:", "", "```", table, "```", ""]
    elif bag.semantic_topic is None and bag.detections_topic is None:
        lines += ["No ground truth in this bag: speed and outputs only.", ""]
    else:
        lines += ["No frame with outputs has ground truth that could be scored.", ""]
    p = report["latency_ms"]
    if p["p50"] is not None:
        throughput = report["throughput_fps"]
        lines += [
            f"End-to-end latency (publish -> both outputs received): p50 {p['p50']:.1f} ms, "
            f"p95 {p['p95']:.1f} ms, max {p['max']:.1f} ms; throughput "
            + (f"{throughput:.2f} fps." if throughput is not None else "n/a."),
            "",
        ]
    counters = report["node_counters"]
    lines += [
        f"Node counters: received {counters['received']}, processed {counters['processed']}, "
        f"dropped {counters['dropped']}, rejected {counters['rejected']}, "
        f"failed {counters['failed']}.",
        "",
        "![latency](latency_histogram.png)",
        "",
    ]
    names = model_config.det_class_names or [str(i) for i in range(model_config.num_det_classes)]
    for frame in [f for f in bag.frames if f.stamp in collected.arrived][:overlays]:
        rgb = frame_rgb(bag, frame)
        mask = collected.masks[frame.stamp]
        if mask.shape != rgb.shape[:2]:
            bag.problems.append(f"frame {frame.stamp}: mask {mask.shape} vs image {rgb.shape}")
            continue
        boxes, scores, classes = collected.detections[frame.stamp]
        keep = np.argsort(-scores)[:OVERLAY_MAX_BOXES]
        keep = keep[scores[keep] >= OVERLAY_SCORE]
        picture = draw_overlay(
            rgb,
            mask,
            boxes[keep],
            classes[keep],
            scores[keep],
            names,
            model_config.num_seg_classes,
        )
        _write_png(out / f"overlay_{frame.stamp}.png", picture)
        lines.append(f"![overlay](overlay_{frame.stamp}.png)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(latencies, bins=30, color="#4477aa")
    axis.set_xlabel("end-to-end latency (ms)")
    axis.set_ylabel("frames")
    axis.set_title(f"{bag.path.name}: {len(latencies)} frames")
    figure.tight_layout()
    figure.savefig(out / "latency_histogram.png", dpi=100)
    plt.close(figure)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    if output_bag:
        store = typestore()
        with Writer(out / "outputs_bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            connections = {}
            for topic, stamp, raw, msgtype in sorted(collected.raw_outputs, key=lambda r: r[1]):
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
                writer.write(connections[topic], stamp, raw)
    return report


def _keep_node_log(log: Path, out: Path) -> Path | None:
    """Moves a failed run's node log beside ``out`` (never over an existing file)."""
    if not log.is_file():
        return None
    target = out.parent / f"{out.name}.failed-node.log"
    number = 1
    while target.exists() or target.is_symlink():
        target = out.parent / f"{out.name}.failed-node.{number}.log"
        number += 1
    log.rename(target)
    return target


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def evaluate_bag(
    bag_path: Path,
    checkpoint: Path,
    out: Path,
    *,
    rate_factor: float | None = 1.0,
    params_file: Path | None = None,
    overlays: int = 4,
    output_bag: bool = False,
    classes_file: Path | None = None,
    topics: BagTopics = BagTopics(),
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Checks every input, starts the node, replays the bag, scores and writes the report into
    the new folder ``out`` (atomically); returns the report.

    Args:
        rate_factor: replay at the bag's timing x this, or None to pace by the node's outputs.
        params_file: a ROS 2 parameter file for the node (it may override the evaluation's
            score threshold, detections and input size, not the checkpoint, transport or QoS).
        classes_file: the class map ground truth is scored with (default: the package's).
        warn: called with each warning about the bag (re-stamped frames, ground truth left
            out, frames the node will reject).

    Raises:
        ValueError, ToolError: a bad input (naming the file, topic or option), or a failed run
            (the node's log is then kept beside ``out``, and the message names it).
    """
    bag_path, checkpoint, out = Path(bag_path), Path(checkpoint), Path(out)
    if rate_factor is not None and not (math.isfinite(rate_factor) and rate_factor > 0):
        raise ValueError(
            f"the rate factor must be positive and finite, got {rate_factor} (--rate-factor)"
        )
    if overlays < 0:
        raise ValueError(f"the number of overlays must be >= 0, got {overlays} (--overlays)")
    out = check_new_directory(out)
    if bag_path.exists() and _inside(out, bag_path):
        raise ValueError(f"the report folder would be inside the bag {bag_path} (--out {out})")
    overrides = read_node_params(params_file)
    class_map = ClassMap.from_yaml(classes_file or DEFAULT_CLASSES_FILE)
    try:
        model, _ = load_model(checkpoint)
    except (OSError, ValueError) as error:
        raise ValueError(f"{one_line(error)} (--checkpoint)") from error
    model_config = model.config
    del model
    try:
        check_classes(model_config, class_map, str(checkpoint))
    except ValueError as error:
        raise ValueError(f"{error} (--classes {classes_file or DEFAULT_CLASSES_FILE})") from error
    defaults = {
        **EVALUATION_DEFAULTS,
        "input_height": model_config.input_height,
        "input_width": model_config.input_width,
    }
    forced = {
        "checkpoint": str(checkpoint),
        "input_transport": "raw",
        "qos_reliability": "reliable",
        "qos_depth": 1,
        "autostart": True,
    }
    effective = {**defaults, **overrides, **forced}
    try:
        params = NodeParameters(**{k: v for k, v in effective.items() if k in NODE_PARAMETERS})
        params.validate()
    except ValueError as error:
        raise ValueError(f"{error} (--node-params {params_file})") from error
    bag = read_bag(bag_path, topics, params.max_pixels)
    check_ground_truth(bag, class_map)
    for message in bag.warnings:
        if warn is not None:
            warn(message)
    compressed = bag.camera_type == COMPRESSED_TYPE
    forced["input_transport"] = "compressed" if compressed else "raw"
    input_size = (params.input_height, params.input_width)
    with atomic_directory(out) as work:
        log = work / "node.log"
        try:
            process, stream = start_node(
                bag.camera_topic, compressed, params_file, log, defaults, forced
            )
            try:
                collected = replay(
                    bag, rate_factor=rate_factor, node_log=log, process=process, progress=progress
                )
            finally:
                _stop(process)
                stream.close()
            metrics = score(bag, collected, class_map, params.input_width)
            report = write_report(
                work, bag, collected, metrics, model_config, input_size, overlays, output_bag
            )
        except BaseException as error:
            kept = _keep_node_log(log, out)
            if kept is not None and isinstance(error, Exception):
                raise ToolError(f"{one_line(error)} (node log kept in {kept})") from error
            raise
    return report
