"""Starts an installed perception_node, sends it camera frames and waits for its answer.

Used by scripts/check_robot_path.sh (run it inside scripts/netns_run.sh). Prints what the node
published for the frame and exits 0, or names what did not arrive and exits 1.

    python robot_path_one_frame.py --node INSTALL/lib/mtl_perception/perception_node \
        --checkpoint final.pt --image some.png
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from mtl_perception.ros.node_process import start_node

CAMERA_TOPIC = "/camera/image_raw"
NODE_TOPICS = "/perception_node"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", required=True, help="installed perception_node executable")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image", required=True, help="an image file to send (any size)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds")
    args = parser.parse_args()

    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        print(f"error: cannot read image {args.image}", file=sys.stderr)
        return 2
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    node = start_node(
        command=[args.node],
        remaps={"image": CAMERA_TOPIC},
        parameters={"checkpoint": args.checkpoint},
    )
    rclpy.init()
    client = rclpy.create_node("robot_path_client")
    got: dict[str, object] = {}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    client.create_subscription(
        Image, f"{NODE_TOPICS}/semantic", lambda m: got.setdefault("semantic", m), reliable
    )
    client.create_subscription(
        Detection2DArray,
        f"{NODE_TOPICS}/detections",
        lambda m: got.setdefault("detections", m),
        reliable,
    )
    publisher = client.create_publisher(Image, CAMERA_TOPIC, qos_profile_sensor_data)
    frame = Image(
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding="rgb8",
        step=rgb.shape[1] * 3,
        data=rgb.tobytes(),
    )
    frame.header.frame_id = "camera"
    deadline = time.monotonic() + args.timeout
    sent = 0
    try:
        while time.monotonic() < deadline and len(got) < 2 and node.process.poll() is None:
            frame.header.stamp = client.get_clock().now().to_msg()
            publisher.publish(frame)
            sent += 1
            end = time.monotonic() + 1.0
            while time.monotonic() < end and len(got) < 2:
                rclpy.spin_once(client, timeout_sec=0.1)
    finally:
        node.stop(timeout=20)
        client.destroy_node()
        rclpy.shutdown()
    if len(got) < 2:
        missing = sorted({"semantic", "detections"} - set(got))
        print(
            f"error: perception_node did not answer ({', '.join(missing)} missing after "
            f"{sent} frames; node exit code {node.process.returncode})",
            file=sys.stderr,
        )
        return 1
    mask = got["semantic"]
    classes = np.unique(np.frombuffer(bytes(mask.data), dtype=np.uint8))
    detections = got["detections"].detections
    print(
        f"perception_node answered a {frame.width}x{frame.height} rgb8 frame: semantic "
        f"{mask.width}x{mask.height} {mask.encoding} (class ids {classes.tolist()}), "
        f"{len(detections)} detections"
        + "".join(
            f"\n  {d.results[0].hypothesis.class_id} score {d.results[0].hypothesis.score:.2f} "
            f"at ({d.bbox.center.position.x:.0f}, {d.bbox.center.position.y:.0f}) "
            f"{d.bbox.size_x:.0f}x{d.bbox.size_y:.0f}"
            for d in detections[:5]
            if d.results
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
