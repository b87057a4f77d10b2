"""A publisher or a subscriber process for the cross-process DDS test.

    python dds_peer.py publish --frames N
    python dds_peer.py subscribe --out DIR

The publisher waits until all three topics are matched, then sends N camera frames (1024x2048
rgb8, sensor-data QoS) at 10 Hz with a Detection2DArray each, plus one LabelInfo (reliable,
transient local, published before anyone listens). The subscriber listens with a BEST-EFFORT
sensor-data subscription, as camera pipelines do, and writes every message it receives as CDR
bytes into DIR, so the test can deserialize and compare each field.
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
from vision_msgs.msg import Detection2DArray, LabelInfo

LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def publish(frames: int) -> int:
    node = Node("dds_peer_publisher")
    label_pub = node.create_publisher(LabelInfo, "label_info", LATCHED)
    label_pub.publish(sample_messages.label_info())
    image_pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
    det_pub = node.create_publisher(Detection2DArray, "detections", RELIABLE)
    deadline = time.monotonic() + 30
    while image_pub.get_subscription_count() == 0 or det_pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            print("publisher: no subscriber matched in 30 s", file=sys.stderr)
            return 1
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # let the reader finish matching every writer before the first frame
    for frame in range(frames):
        image_pub.publish(sample_messages.image(frame))
        det_pub.publish(sample_messages.detections(frame))
        rclpy.spin_once(node, timeout_sec=0.0)
        time.sleep(0.1)
    time.sleep(1.0)  # keep the writers alive while the last samples are delivered
    node.destroy_node()
    return 0


def subscribe(out: Path, idle_timeout: float = 3.0, overall_timeout: float = 60.0) -> int:
    out.mkdir(parents=True, exist_ok=True)
    node = Node("dds_peer_subscriber")
    last_message = [time.monotonic()]
    started = [False]

    def saver(kind: str):
        def callback(msg) -> None:
            stamp = msg.header.stamp.sec
            (out / f"{kind}_{stamp}.cdr").write_bytes(serialize_message(msg))
            last_message[0] = time.monotonic()
            started[0] = True

        return callback

    node.create_subscription(Image, "image", saver("image"), qos_profile_sensor_data)
    node.create_subscription(Detection2DArray, "detections", saver("detections"), RELIABLE)
    node.create_subscription(LabelInfo, "label_info", saver("label_info"), LATCHED)
    start = time.monotonic()
    while time.monotonic() - start < overall_timeout:
        rclpy.spin_once(node, timeout_sec=0.1)
        if started[0] and time.monotonic() - last_message[0] > idle_timeout:
            break
    node.destroy_node()
    return 0


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
