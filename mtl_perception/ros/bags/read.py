"""The read stage: camera frames and ground truth from an input bag, outputs from a run's bag.

Input bags (any rosbag2 rosbags reads: MCAP, sqlite3): the camera topic (sensor_msgs Image or
CompressedImage) in receive order, each frame decoded with the node's own conversions
(:mod:`..conversions`) so frames the node will reject are known before the node starts, and the
ground truth (mono8 class-id masks, vision_msgs Detection2DArray) by header stamp.

Frames whose header stamp is not unique (a driver that leaves stamps at zero, or repeats them)
cannot be matched to outputs by stamp: they are replayed with a new, unique stamp (the bag's
receive time) so speed is still measured; their ground truth is left out of the scoring. A frame
stamped zero is reported as such even when it is the only one.

Output bags (written by :mod:`.run`): the node's masks and detections logged at their receive
time, the node's /diagnostics, and the run's settings (:data:`RUN_TOPIC`, JSON): everything
scoring needs, without a model or a node.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from vision_msgs.msg import Detection2DArray

from ...cli import one_line
from ...data.labels import UNLABELED
from ..conversions import ImageRejectedError, compressed_to_rgb, image_to_rgb
from ..parameters import NodeParameters
from .record import CAMERA_TOPIC, GT_DETECTIONS_TOPIC, GT_SEMANTIC_TOPIC
from .rig import camera_of_topic

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
STRING_TYPE = "std_msgs/msg/String"
CAMERA_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
MASK_ENCODINGS = ("mono8", "8UC1")
VOID = UNLABELED  # the ground-truth masks' and the node's unlabelled value
RUN_TOPIC = "/mtl_bag/run"  # the run's settings and frames, one std_msgs/String of JSON
DIAGNOSTICS_TOPIC = "/diagnostics"
RUN_FORMAT = 1
_TOPIC = re.compile(r"(/[A-Za-z_][A-Za-z0-9_]*)+")


@dataclass(frozen=True)
class BagTopics:
    """Topics to read; ``None`` means the default (the camera's ``/compressed`` sibling is
    accepted for a default or given camera topic; a missing default ground-truth topic means
    no ground truth, a missing given one is an error)."""

    camera: str | None = None
    semantic: str | None = None
    detections: str | None = None


DEFAULT_TOPICS = BagTopics()


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


@dataclass
class BagFrames:
    """The camera frames of a bag in receive order."""

    path: Path
    camera_topic: str
    camera_type: str
    max_pixels: int
    frames: list[Frame] = field(default_factory=list)
    restamped: int = 0
    zero_stamps: int = 0
    problems: list[str] = field(default_factory=list)  # undecodable camera messages
    warnings: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> list[Frame]:
        return [f for f in self.frames if f.rejected is not None]


@dataclass
class GroundTruth:
    """Ground-truth messages of a bag by header stamp (ns); a stamp may hold several."""

    path: Path
    semantic_topic: str | None
    detections_topic: str | None
    masks: dict[int, list[np.ndarray]] = field(default_factory=dict)  # (H, W) uint8, 255 void
    boxes: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)


@dataclass
class RunOutputs:
    """What a run's bag holds: its settings and the node's outputs by stamp."""

    path: Path
    info: dict[str, Any]  # the run's settings and frames (see run.run_info)
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # stamp -> (H, W) uint8
    detections: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    mask_received: dict[int, int] = field(default_factory=dict)  # stamp -> receive time, ns
    detections_received: dict[int, int] = field(default_factory=dict)
    node_counters: dict[str, str] = field(default_factory=dict)  # over the run (/diagnostics)

    def arrived(self, stamp: int) -> int | None:
        """When both outputs of ``stamp`` were in (ns), None when one is missing."""
        if stamp in self.mask_received and stamp in self.detections_received:
            return max(self.mask_received[stamp], self.detections_received[stamp])
        return None


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def _topic_list(types: dict[str, set[str]]) -> str:
    listed = [f"{topic} ({', '.join(sorted(kinds))})" for topic, kinds in sorted(types.items())]
    return "; ".join(listed) or "none"


def read_messages(
    path: Path, choose, option: str = "--bag"
) -> tuple[Any, list[tuple[str, int, bytes]]]:
    """Opens a bag, lets ``choose(types)`` pick topics (it returns ``(anything, topics)`` and
    raises ValueError naming what is missing), returns that and the raw messages (topic,
    receive time ns, CDR) in the bag's order. Any failure to read is one ValueError naming
    ``option`` and the path."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"bag not found ({option} {path})")
    try:
        with Reader(path) as reader:
            types: dict[str, set[str]] = defaultdict(set)
            for connection in reader.connections:
                types[connection.topic].add(connection.msgtype)
            chosen, wanted = choose(dict(types))
            connections = [c for c in reader.connections if c.topic in wanted]
            # rosbags reads every topic when given no connections
            messages = reader.messages(connections=connections) if connections else []
            raw = [(c.topic, int(received), bytes(data)) for c, received, data in messages]
    except ValueError:
        raise
    except FileNotFoundError as error:
        reason = "not a rosbag2 folder (no metadata.yaml)" if path.is_dir() else one_line(error)
        raise ValueError(f"cannot read bag: {reason} ({option} {path})") from error
    except Exception as error:  # rosbags' ReaderError, and sqlite/zstd/struct errors of damage
        if path.is_file():
            raise ValueError(
                f"cannot read bag: {path.name} is a file, not a rosbag2 folder nor a readable "
                f".mcap/.db3 file ({one_line(error)}) ({option} {path})"
            ) from error
        raise ValueError(
            "cannot read bag (truncated, corrupt or unknown storage format): "
            f"{one_line(error)} ({option} {path})"
        ) from error
    return chosen, raw


# -- input bags: camera and ground truth ---------------------------------------------------


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
    stamp = stamp_ns(msg.header)
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


def decode_detections(message) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    stamp = stamp_ns(msg.header)
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
    boxes, _, classes = decode_detections(msg)
    return boxes, classes


def read_camera(
    path: Path, topics: BagTopics = BagTopics(), max_pixels: int = NodeParameters.max_pixels
) -> BagFrames:
    """Reads the camera frames and decodes each as the node will.

    Args:
        path: a rosbag2 folder (or a single .mcap / .db3 file rosbags reads).
        topics: which camera topic to read (see :class:`BagTopics`).
        max_pixels: the node's limit, to know which frames it will reject.

    Returns:
        The frames in receive order, each with a unique stamp; counts and warnings of what was
        re-stamped, stamped zero, undecodable or will be rejected.

    Raises:
        ValueError: the bag is missing or unreadable, the camera topic is missing or of another
            type (the message lists the bag's topics and types), or it has no frames.
    """
    path = Path(path)
    (camera, camera_type), raw = read_messages(
        path,
        lambda types: (
            (found := _camera_topic(path, types, topics.camera)),
            {found[0]},
        ),
    )
    bag = BagFrames(path, camera, camera_type, max_pixels)
    message_type = Image if camera_type == IMAGE_TYPE else CompressedImage
    to_rgb = image_to_rgb if camera_type == IMAGE_TYPE else compressed_to_rgb
    for index, (_, received, data) in enumerate(raw):
        try:
            msg = deserialize_message(data, message_type)
        except Exception as error:  # rclpy raises its own RMWError for bad CDR
            bag.problems.append(
                f"{camera} message {index}: cannot deserialise {camera_type} ({one_line(error)})"
            )
            continue
        stamp = stamp_ns(msg.header)
        try:
            size, rejected = to_rgb(msg, max_pixels).shape[:2], None
        except ImageRejectedError as error:
            size, rejected = None, str(error)
        bag.frames.append(Frame(index, received, stamp, stamp, data, size, rejected))
    if not bag.frames:
        reason = f" ({len(bag.problems)} undecodable)" if bag.problems else ""
        raise ValueError(f"the bag has no frames on {camera}{reason} ({camera_type}, --bag {path})")
    bag.frames.sort(key=lambda f: (f.received, f.index))
    _make_stamps_unique(bag)
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
    return bag


def _make_stamps_unique(bag: BagFrames) -> None:
    """Frames sharing a header stamp get a new unique one (their receive time, or the next free
    nanosecond), re-serialised into the CDR that is sent; zero stamps are counted."""
    counts = Counter(f.bag_stamp for f in bag.frames)
    used = {stamp for stamp, n in counts.items() if n == 1}
    message_type = Image if bag.camera_type == IMAGE_TYPE else CompressedImage
    bag.zero_stamps = counts.get(0, 0)
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
    if bag.zero_stamps:
        bag.warnings.append(
            f"{bag.zero_stamps} camera frames on {bag.camera_topic} have a zero header stamp "
            "(a driver that does not stamp): check the driver; a bag of such frames can only be "
            "scored if each stamp is unique"
        )


def read_ground_truth(
    path: Path, topics: BagTopics = BagTopics(), option: str = "--bag"
) -> GroundTruth:
    """Reads the ground-truth masks and boxes of a bag by header stamp (each message checked).

    Raises:
        ValueError: the bag is unreadable, a given topic is missing or of another type, or a
            ground-truth message is malformed (naming the topic and stamp).
    """
    path = Path(path)
    # one camera of a rig bag (/c/image): its ground truth is /c/ground_truth/..., not the default
    rig_camera = camera_of_topic(topics.camera)
    default_semantic = rig_camera.semantic if rig_camera else GT_SEMANTIC_TOPIC
    default_detections = rig_camera.detections if rig_camera else GT_DETECTIONS_TOPIC

    def choose(types):
        semantic = _ground_truth_topic(
            types, topics.semantic, default_semantic, IMAGE_TYPE, "--semantic-topic"
        )
        detections = _ground_truth_topic(
            types, topics.detections, default_detections, DETECTIONS_TYPE, "--detections-topic"
        )
        return (semantic, detections), {semantic, detections} - {None}

    (semantic, detections), raw = read_messages(path, choose, option)
    truth = GroundTruth(path, semantic, detections)
    masks: dict[int, list] = defaultdict(list)
    boxes: dict[int, list] = defaultdict(list)
    for topic, _, data in raw:
        try:
            msg = deserialize_message(data, Image if topic == semantic else Detection2DArray)
        except Exception as error:
            raise ValueError(
                f"cannot deserialise a ground-truth message ({one_line(error)}) ({topic})"
            ) from error
        if topic == semantic:
            masks[stamp_ns(msg.header)].append(_decode_mask(msg, topic))
        else:
            boxes[stamp_ns(msg.header)].append(_decode_ground_truth_boxes(msg, topic))
    truth.masks, truth.boxes = dict(masks), dict(boxes)
    return truth


def camera_rgb(path: Path, camera_topic: str, camera_type: str, indices: set[int], max_pixels):
    """Frames ``indices`` (positions on the camera topic) as the node sees them:
    index -> (H, W, 3) uint8 RGB through the node's conversions (rejected ones left out)."""
    _, raw = read_messages(path, lambda types: (None, {camera_topic}))
    message_type = Image if camera_type == IMAGE_TYPE else CompressedImage
    to_rgb = image_to_rgb if camera_type == IMAGE_TYPE else compressed_to_rgb
    pictures = {}
    for index, (_, _, data) in enumerate(raw):
        if index in indices:
            try:
                pictures[index] = to_rgb(deserialize_message(data, message_type), max_pixels)
            except Exception:  # rejected or undecodable: the report already says so
                continue
    return pictures


# -- output bags: what a run recorded ---------------------------------------------------------


def read_run(path: Path, option: str = "--run") -> RunOutputs:
    """Reads a run's output bag (written by ``mtl-bag run``).

    Raises:
        ValueError: the bag is unreadable or not a run's output bag (no :data:`RUN_TOPIC`).
    """
    path = Path(path)

    def choose(types):
        if RUN_TOPIC not in types:
            raise ValueError(
                f"{path} is not an output bag of mtl-bag run (no {RUN_TOPIC} topic; its topics: "
                f"{_topic_list(types)}) ({option})"
            )
        return None, set(types)

    _, raw = read_messages(path, choose, option)
    infos = [m for m in raw if m[0] == RUN_TOPIC]
    try:
        info = json.loads(deserialize_message(infos[-1][2], String).data)
    except Exception as error:
        raise ValueError(f"the run settings in {path} are unreadable ({option})") from error
    if info.get("format") != RUN_FORMAT:
        raise ValueError(
            f"{path} was written by another version of mtl-bag run (format "
            f"{info.get('format')}, this one reads {RUN_FORMAT}) ({option})"
        )
    run = RunOutputs(path, info)
    outputs = info["node"]["outputs"]
    name = info["node"]["name"]
    for topic, received, data in raw:
        if topic == outputs["semantic"]:
            msg = deserialize_message(data, Image)
            stamp = stamp_ns(msg.header)
            run.masks[stamp] = mask_array(msg)
            run.mask_received[stamp] = received
        elif topic == outputs["detections"]:
            msg = deserialize_message(data, Detection2DArray)
            stamp = stamp_ns(msg.header)
            run.detections[stamp] = decode_detections(msg)
            run.detections_received[stamp] = received
        elif topic == DIAGNOSTICS_TOPIC:
            for status in deserialize_message(data, DiagnosticArray).status:
                if is_status_of(status.name, name):
                    run.node_counters = {kv.key: kv.value for kv in status.values}
    # the node's counts since the run began (a node that ran before: other trials, a robot's)
    before = info.get("node_counters_at_start", {})
    run.node_counters = counter_difference(run.node_counters, before)
    return run


def counter_difference(counters: dict[str, str], before: dict[str, str]) -> dict[str, str]:
    """/diagnostics counters less ``before`` where both are whole numbers (the rest as they
    are): the node's counts are cumulative, a run's are those since it began."""
    result = dict(counters)
    for key, value in counters.items():
        try:
            result[key] = str(int(value) - int(before[key]))
        except (KeyError, ValueError):
            continue
    return result


def is_status_of(status: str, name: str) -> bool:
    """Whether the /diagnostics status ``status`` is the node's: ``<name>: ...`` (a node's
    statuses), or exactly ``name`` (one camera's status of a several-camera node, ``<node>:
    camera <camera>``)."""
    return status == name or status.startswith(f"{name}:")


def mask_array(msg: Image) -> np.ndarray:
    """The node's mono8 mask message -> (H, W) uint8 (row padding dropped)."""
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width].copy()
