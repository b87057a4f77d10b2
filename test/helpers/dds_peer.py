"""A publisher or a subscriber process for the cross-process DDS test.

    python dds_peer.py publish --frames N
    python dds_peer.py subscribe --out DIR

The publisher waits until every topic is matched, then sends N camera frames (1024x2048 rgb8,
sensor-data QoS) with a Detection2DArray each, plus one LabelInfo (reliable, transient local,
published before anyone listens). The subscriber listens with a BEST-EFFORT sensor-data
subscription, as camera pipelines do, and writes every message it receives as CDR bytes into DIR,
so the test can deserialize and compare each field.

Frames go in lock-step: the subscriber acknowledges each image it receives (reliable ``ack``
topic) and the publisher sends the next one only then, or after FRAME_TIMEOUT seconds, when the
frame counts as lost (it is not sent again). One frame in flight at a time cannot overrun the
reader however slow the machine is, so a lost frame means the transport lost it: with Fast DDS's
default transports a 6 MB best-effort image goes out as fragmented UDP and is lost; with the
project's profile (a large shared-memory segment) it arrives. The publisher ends with ``done``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import rclpy
import sample_messages
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Int32
from vision_msgs.msg import Detection2DArray, LabelInfo

LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
FRAME_TIMEOUT = 10.0  # seconds to wait for a frame's acknowledgement before counting it lost
DONE = -1


def _frame_index(msg) -> int:
    return msg.header.stamp.sec - sample_messages.header(0).stamp.sec


def publish(frames: int) -> int:
    node = Node("dds_peer_publisher")
    acknowledged: set[int] = set()
    node.create_subscription(Int32, "ack", lambda m: acknowledged.add(m.data), RELIABLE)
    label_pub = node.create_publisher(LabelInfo, "label_info", LATCHED)
    label_pub.publish(sample_messages.label_info())
    image_pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
    det_pub = node.create_publisher(Detection2DArray, "detections", RELIABLE)
    control_pub = node.create_publisher(Int32, "control", RELIABLE)
    writers = (image_pub, det_pub, control_pub)
    deadline = time.monotonic() + 60
    while any(w.get_subscription_count() == 0 for w in writers) or not node.count_publishers("ack"):
        if time.monotonic() > deadline:
            print("publisher: the subscriber did not match in 60 s", file=sys.stderr)
            return 1
        rclpy.spin_once(node, timeout_sec=0.05)
    # Matched both ways is not yet delivering: repeat frame 0 until its first acknowledgement
    # (the subscriber keeps one file per frame, so repeats are harmless).
    deadline = time.monotonic() + 60
    while 0 not in acknowledged and time.monotonic() < deadline:
        image_pub.publish(sample_messages.image(0))
        end = time.monotonic() + 0.5
        while 0 not in acknowledged and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
    lost = []
    for frame in range(frames):
        det_pub.publish(sample_messages.detections(frame))
        if frame > 0:
            image_pub.publish(sample_messages.image(frame))
        end = time.monotonic() + FRAME_TIMEOUT
        while frame not in acknowledged and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        if frame not in acknowledged:
            lost.append(frame)
    control_pub.publish(Int32(data=DONE))
    if lost:
        print(f"publisher: frames never acknowledged: {lost}", file=sys.stderr)
    end = time.monotonic() + 2.0  # keep the writers alive while the last samples are delivered
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    return 0


def subscribe(out: Path, overall_timeout: float = 300.0) -> int:
    out.mkdir(parents=True, exist_ok=True)
    node = Node("dds_peer_subscriber")
    ack_pub = node.create_publisher(Int32, "ack", RELIABLE)
    done = [False]

    def saver(kind: str):
        def callback(msg) -> None:
            (out / f"{kind}_{msg.header.stamp.sec}.cdr").write_bytes(serialize_message(msg))
            if kind == "image":
                ack_pub.publish(Int32(data=_frame_index(msg)))

        return callback

    def control(msg: Int32) -> None:
        done[0] = msg.data == DONE

    node.create_subscription(Image, "image", saver("image"), qos_profile_sensor_data)
    node.create_subscription(Detection2DArray, "detections", saver("detections"), RELIABLE)
    node.create_subscription(LabelInfo, "label_info", saver("label_info"), LATCHED)
    node.create_subscription(Int32, "control", control, RELIABLE)
    start = time.monotonic()
    while not done[0] and time.monotonic() - start < overall_timeout:
        rclpy.spin_once(node, timeout_sec=0.1)
    end = time.monotonic() + 1.0  # the last detections may trail the control message
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    return 0 if done[0] else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["publish", "subscribe"])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rclpy.init()
    try:
        return publish(args.frames) if args.role == "publish" else subscribe(args.out)
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
