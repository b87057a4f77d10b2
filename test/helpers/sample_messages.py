"""Deterministic ROS messages with every field set, for round-trip tests over DDS.

Both the peer processes and the tests build them from the same seed, so a receiver's copy can be
compared field by field with the original.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseWithCovariance
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
    Point2D,
    Pose2D,
    VisionClass,
)

IMAGE_HEIGHT = 1024
IMAGE_WIDTH = 2048
FRAME_ID = "camera_optical_frame"


def header(frame: int) -> Header:
    msg = Header(frame_id=FRAME_ID)
    msg.stamp.sec = 1_700_000_000 + frame
    msg.stamp.nanosec = 123_456_789
    return msg


def image_pixels(frame: int) -> np.ndarray:
    """(H, W, 3) uint8 pattern unique to ``frame``: seeded noise with the frame number in row 0."""
    pixels = np.random.default_rng(7).integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), np.uint8)
    pixels[0, :4, 0] = np.frombuffer(np.uint32(frame).tobytes(), np.uint8)
    return pixels


def image(frame: int) -> Image:
    pixels = image_pixels(frame)
    return Image(
        header=header(frame),
        height=IMAGE_HEIGHT,
        width=IMAGE_WIDTH,
        encoding="rgb8",
        is_bigendian=0,
        step=IMAGE_WIDTH * 3,
        data=pixels.tobytes(),
    )


def _detection(frame: int, index: int) -> Detection2D:
    pose = PoseWithCovariance()
    pose.pose.position.x = 1.5 + index
    pose.pose.position.y = -2.25
    pose.pose.position.z = 10.0 * (index + 1)
    pose.pose.orientation.w = 1.0
    pose.covariance = [0.01 * (k + 1) + index for k in range(36)]
    return Detection2D(
        header=header(frame),
        results=[
            ObjectHypothesisWithPose(
                hypothesis=ObjectHypothesis(class_id=str(index + 1), score=0.9 - 0.25 * index),
                pose=pose,
            )
        ],
        bbox=BoundingBox2D(
            center=Pose2D(position=Point2D(x=300.5 + 700 * index, y=512.25), theta=0.125),
            size_x=120.0 + index,
            size_y=80.5 - index,
        ),
        id=f"track-{index}",
    )


def detections(frame: int) -> Detection2DArray:
    """Two detections with every field (hypothesis, pose covariance, box, id) set."""
    return Detection2DArray(header=header(frame), detections=[_detection(frame, i) for i in (0, 1)])


def label_info() -> LabelInfo:
    names = ["car_truck_bus", "person_rider", "bicycle_motorcycle"]
    return LabelInfo(
        header=header(0),
        class_map=[VisionClass(class_id=i + 1, class_name=n) for i, n in enumerate(names)],
        threshold=0.25,
    )
