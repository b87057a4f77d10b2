"""Evaluating the live node on a rosbag: replay over DDS, collect, match by stamp, report.

The camera messages are replayed byte for byte (the bag's CDR is what rclpy sends), honouring
the bag's timing scaled by a factor, or paced by the node's outputs. Outputs are matched to the
ground truth by header stamp and scored with the same metric code as ``mtl-eval``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError
from sensor_msgs.msg import Image
from tqdm import tqdm
from vision_msgs.msg import Detection2DArray

from ..evaluation.evaluate import format_table
from ..evaluation.metrics import ConfusionMatrix, DetectionAP
from ..model.checkpoint import read_checkpoint
from ..model.config import ModelConfig
from ..visualization import draw_overlay
from .bag_record import CAMERA_TOPIC, GT_DETECTIONS_TOPIC, GT_SEMANTIC_TOPIC, typestore

NODE_NAME = "perception_node"
# Report overlays draw at most this many detections, from this score up (the node runs at 0.001
# for AP, so its outputs hold many weak boxes a picture should not show).
OVERLAY_SCORE = 0.1
OVERLAY_MAX_BOXES = 20
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class BagFrames:
    """What the bag holds: camera frames in time order and ground truth by stamp (ns)."""

    camera_topic: str
    camera_type: str
    frames: list[tuple[int, bytes]] = field(default_factory=list)  # (stamp ns, CDR)
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    boxes: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _stamp(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def read_bag(
    path: Path,
    camera: str = CAMERA_TOPIC,
    semantic: str = GT_SEMANTIC_TOPIC,
    detections: str = GT_DETECTIONS_TOPIC,
) -> BagFrames:
    """Reads camera frames and ground truth. A missing camera topic is an error listing the
    bag's topics; a bag without ground truth is fine (speed only); undecodable messages are
    counted in ``problems``."""
    if not path.exists():
        raise ValueError(f"bag not found: {path}")
    store = typestore()
    try:
        with Reader(path) as reader:
            available = {c.topic: c.msgtype for c in reader.connections}
            camera_topic = camera if camera in available else f"{camera}/compressed"
            if camera_topic not in available:
                raise ValueError(
                    f"bag {path} has no camera topic {camera} (or {camera}/compressed); "
                    f"its topics: {sorted(available)}"
                )
            result = BagFrames(camera_topic, available[camera_topic])
            wanted = [
                c for c in reader.connections if c.topic in (camera_topic, semantic, detections)
            ]
            for connection, _, raw in reader.messages(connections=wanted):
                try:
                    message = store.deserialize_cdr(raw, connection.msgtype)
                    stamp = _stamp(message.header)
                    if connection.topic == camera_topic:
                        result.frames.append((stamp, bytes(raw)))
                    elif connection.topic == semantic:
                        result.masks[stamp] = np.asarray(message.data, np.uint8).reshape(
                            message.height, message.width
                        )
                    else:
                        result.boxes[stamp] = _gt_boxes(message)
                except Exception as error:  # one bad message: count it, keep going
                    result.problems.append(f"{connection.topic}: undecodable message ({error})")
    except FileNotFoundError as error:
        raise ValueError(f"cannot read bag {path}: not a rosbag2 folder ({error})") from error
    except ReaderError as error:
        raise ValueError(
            f"cannot read bag {path} (truncated, corrupt or unknown storage format): {error}"
        ) from error
    result.frames.sort()
    return result


def _gt_boxes(message) -> tuple[np.ndarray, np.ndarray]:
    boxes, _, classes = _decode_detections(message)
    return boxes, classes


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


@dataclass
class Collected:
    sent: dict[int, float] = field(default_factory=dict)  # stamp -> publish time
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    detections: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    arrived: dict[int, float] = field(default_factory=dict)  # stamp -> time both outputs were in
    raw_outputs: list[tuple[str, int, bytes, str]] = field(default_factory=list)
    node_counters: dict[str, str] = field(default_factory=dict)  # the node's last /diagnostics


def start_node(
    checkpoint: Path,
    camera_topic: str,
    compressed: bool,
    params_file: Path | None,
    log: Path,
    input_size: tuple[int, int],
) -> subprocess.Popen:
    """The perception node in evaluation mode: the checkpoint's input size, scores down to 0.001
    and 100 detections per image (as mtl-eval), unless the given parameter file says otherwise."""
    image_topic = camera_topic.removesuffix("/compressed")
    args = [
        sys.executable,
        "-m",
        "mtl_perception.ros.node",
        "--ros-args",
        "-r",
        f"__node:={NODE_NAME}",
        "-r",
        f"image:={image_topic}",
        "-r",
        f"image/compressed:={image_topic}/compressed",
        "-p",
        f"checkpoint:={checkpoint}",
        "-p",
        "score_threshold:=0.001",
        "-p",
        "max_detections:=100",
        "-p",
        f"input_transport:={'compressed' if compressed else 'raw'}",
        "-p",
        "qos_reliability:=reliable",
        "-p",
        "qos_depth:=1",
        "-p",
        f"input_height:={input_size[0]}",
        "-p",
        f"input_width:={input_size[1]}",
    ]
    if params_file:
        args += ["--params-file", str(params_file)]
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT)


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
    message_type = Image if bag.camera_type == "sensor_msgs/msg/Image" else None
    if message_type is None:
        from sensor_msgs.msg import CompressedImage

        message_type = CompressedImage

    def on_mask(msg: Image) -> None:
        stamp = _stamp(msg.header)
        collected.masks[stamp] = (
            np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width).copy()
        )
        collected.raw_outputs.append(
            (f"/{NODE_NAME}/semantic", stamp, serialize_message(msg), "sensor_msgs/msg/Image")
        )
        if stamp in collected.detections:
            collected.arrived[stamp] = time.monotonic()

    def on_detections(msg: Detection2DArray) -> None:
        stamp = _stamp(msg.header)
        collected.detections[stamp] = _decode_detections(msg)
        collected.raw_outputs.append(
            (
                f"/{NODE_NAME}/detections",
                stamp,
                serialize_message(msg),
                "vision_msgs/msg/Detection2DArray",
            )
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
                raise RuntimeError(
                    f"the node exited ({process.returncode}):\n"
                    + (node_log.read_text()[-3000:] if node_log else "")
                )
            executor.spin_once(timeout_sec=0.01)
        return condition()

    try:
        if not spin_until(
            lambda: (
                publisher.get_subscription_count() > 0
                and node.count_publishers(f"/{NODE_NAME}/detections") > 0
            ),
            120,
        ):
            raise RuntimeError(f"the node did not subscribe to {bag.camera_topic} within 120 s")
        spin_until(lambda: False, 1.0)  # let discovery settle both ways
        start_wall = time.monotonic()
        first_stamp = bag.frames[0][0] if bag.frames else 0
        for stamp, raw in tqdm(bag.frames, desc="replaying", unit="frame", disable=not progress):
            if rate_factor:
                due = start_wall + (stamp - first_stamp) / 1e9 / rate_factor
                spin_until(
                    lambda due=due: time.monotonic() >= due, max(0.0, due - time.monotonic()) + 1
                )
            collected.sent[stamp] = time.monotonic()
            publisher.publish(raw)
            if not rate_factor:  # paced by the node: wait for this frame's outputs
                spin_until(lambda stamp=stamp: stamp in collected.arrived, frame_timeout)
        spin_until(lambda: all(s in collected.arrived for s in collected.sent), 5.0)
        spin_until(lambda: False, 1.2)  # one more /diagnostics with the final counters
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return collected


def score(bag: BagFrames, collected: Collected, model_config: ModelConfig) -> dict[str, Any]:
    """The same metrics as mtl-eval on the frames that have both ground truth and outputs."""
    confusion = ConfusionMatrix(model_config.num_seg_classes, 0)
    average_precision = DetectionAP(model_config.num_det_classes)
    matched = 0
    for stamp, _ in bag.frames:
        if stamp not in collected.arrived:
            continue
        if stamp in bag.masks:
            gt = bag.masks[stamp]
            prediction = collected.masks[stamp]
            if gt.shape != prediction.shape:
                bag.problems.append(
                    f"frame {stamp}: mask {prediction.shape} vs ground truth {gt.shape}"
                )
                continue
            confusion.update(np.where(prediction == 255, 0, prediction), np.where(gt == 255, 0, gt))
        if stamp in bag.boxes:
            boxes, scores, classes = collected.detections[stamp]
            average_precision.update(boxes, scores, classes, *bag.boxes[stamp])
        matched += 1
    names = model_config.seg_class_names or tuple(
        str(i) for i in range(model_config.num_seg_classes)
    )
    det_names = model_config.det_class_names or tuple(
        str(i) for i in range(model_config.num_det_classes)
    )
    iou, ap = confusion.iou(), average_precision.average_precision()
    has_gt = bool(bag.masks or bag.boxes)

    def number(value) -> float | None:
        return float(value) if value is not None and np.isfinite(value) else None

    return {
        "frames_scored": matched if has_gt else 0,
        "iou": {n: number(iou[i]) for i, n in enumerate(names) if i != 0} if bag.masks else {},
        "miou": number(confusion.mean_iou()) if bag.masks else None,
        "ap": {n: number(ap[i]) for i, n in enumerate(det_names)} if bag.boxes else {},
        "map": number(average_precision.mean_ap()) if bag.boxes else None,
    }


def write_report(
    out: Path,
    bag_path: Path,
    bag: BagFrames,
    collected: Collected,
    metrics: dict[str, Any],
    model_config: ModelConfig,
    overlays: int,
    output_bag: bool,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    latencies = np.array(
        [
            (collected.arrived[s] - collected.sent[s]) * 1e3
            for s in collected.sent
            if s in collected.arrived
        ]
    )
    duration = max(collected.arrived.values(), default=0) - min(collected.sent.values(), default=0)
    report = {
        "bag": str(bag_path),
        "camera_topic": bag.camera_topic,
        "frames_sent": len(collected.sent),
        "frames_with_output": len(collected.arrived),
        "frames_without_output": len(collected.sent) - len(collected.arrived),
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
        **metrics,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Evaluation of {bag_path.name}",
        "",
        f"Camera topic `{bag.camera_topic}`; {report['frames_sent']} frames sent, "
        f"{report['frames_with_output']} with outputs.",
        "",
    ]
    if metrics["miou"] is not None or metrics["map"] is not None:
        table = format_table(
            {
                "iou": metrics["iou"],
                "miou": metrics["miou"],
                "ap": metrics["ap"],
                "map": metrics["map"],
            },
            column="bag",
        )
        lines += ["```", table, "```", ""]
    else:
        lines += ["No ground truth in this bag: speed and outputs only.", ""]
    p = report["latency_ms"]
    if p["p50"] is not None:
        lines += [
            f"End-to-end latency (publish -> both outputs received): p50 {p['p50']:.1f} ms, "
            f"p95 {p['p95']:.1f} ms, max {p['max']:.1f} ms; "
            f"throughput {report['throughput_fps']:.2f} fps.",
            "",
        ]
    counters = report["node_counters"]
    lines += [
        f"Node counters: received {counters['received']}, processed {counters['processed']}, "
        f"dropped {counters['dropped']}, rejected {counters['rejected']}, "
        f"failed {counters['failed']}.",
        "",
    ]
    if bag.problems:
        lines += [
            f"{len(bag.problems)} bag messages could not be decoded (first: {bag.problems[0]})",
            "",
        ]
    lines += ["![latency](latency_histogram.png)", ""]
    # Overlays of a sample of frames and the latency histogram.
    store = typestore()
    shown = [s for s, _ in bag.frames if s in collected.arrived][:overlays]
    frames = dict(bag.frames)
    for stamp in shown:
        message = store.deserialize_cdr(frames[stamp], bag.camera_type)
        if bag.camera_type.endswith("CompressedImage"):
            rgb = cv2.cvtColor(
                cv2.imdecode(np.asarray(message.data, np.uint8), cv2.IMREAD_COLOR),
                cv2.COLOR_BGR2RGB,
            )
        else:
            rgb = np.asarray(message.data, np.uint8).reshape(message.height, message.width, 3)
        boxes, scores, classes = collected.detections[stamp]
        keep = np.argsort(-scores)[:OVERLAY_MAX_BOXES]
        keep = keep[scores[keep] >= OVERLAY_SCORE]
        picture = draw_overlay(
            rgb,
            collected.masks[stamp],
            boxes[keep],
            classes[keep],
            scores[keep],
            model_config.det_class_names or [str(i) for i in range(model_config.num_det_classes)],
            model_config.num_seg_classes,
        )
        cv2.imwrite(str(out / f"overlay_{stamp}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        lines.append(f"![overlay](overlay_{stamp}.png)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(latencies, bins=30, color="#4477aa")
    axis.set_xlabel("end-to-end latency (ms)")
    axis.set_ylabel("frames")
    axis.set_title(f"{bag_path.name}: {len(latencies)} frames")
    figure.tight_layout()
    figure.savefig(out / "latency_histogram.png", dpi=100)
    plt.close(figure)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    if output_bag:
        target = out / "outputs_bag"
        if target.exists():
            raise ValueError(f"{target} exists")
        with Writer(target, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            connections = {}
            for topic, stamp, raw, msgtype in sorted(collected.raw_outputs, key=lambda r: r[1]):
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
                writer.write(connections[topic], stamp, raw)
    return report


def evaluate_bag(
    bag_path: Path,
    checkpoint: Path,
    out: Path,
    *,
    rate_factor: float | None = 1.0,
    params_file: Path | None = None,
    overlays: int = 4,
    output_bag: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Starts the node, replays the bag, scores and writes the report; returns the report."""
    bag = read_bag(bag_path)
    if not bag.frames:
        raise ValueError(f"bag {bag_path} has no frames on {bag.camera_topic}")
    model_config = ModelConfig.from_dict(read_checkpoint(checkpoint)["model_config"])
    out.mkdir(parents=True, exist_ok=True)
    log = out / "node.log"
    process = start_node(
        checkpoint,
        bag.camera_topic,
        bag.camera_type.endswith("CompressedImage"),
        params_file,
        log,
        (model_config.input_height, model_config.input_width),
    )
    try:
        collected = replay(
            bag, rate_factor=rate_factor, node_log=log, process=process, progress=progress
        )
    finally:
        if process.poll() is None:
            process.send_signal(subprocess.signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    metrics = score(bag, collected, model_config)
    return write_report(out, bag_path, bag, collected, metrics, model_config, overlays, output_bag)
