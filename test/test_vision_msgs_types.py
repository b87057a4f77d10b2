"""The vision_msgs built from interfaces/ carries upstream vision_msgs 4.1.1's names and fields."""

from __future__ import annotations

import time

import pytest
import rclpy
import vision_msgs.msg

# Field lists of vision_msgs 4.1.1 (ros2 branch), in declaration order: the order fixes the
# wire format, so it is compared too.
UPSTREAM_FIELDS = {
    "Detection2DArray": [
        ("header", "std_msgs/Header"),
        ("detections", "sequence<vision_msgs/Detection2D>"),
    ],
    "Detection2D": [
        ("header", "std_msgs/Header"),
        ("results", "sequence<vision_msgs/ObjectHypothesisWithPose>"),
        ("bbox", "vision_msgs/BoundingBox2D"),
        ("id", "string"),
    ],
    "ObjectHypothesisWithPose": [
        ("hypothesis", "vision_msgs/ObjectHypothesis"),
        ("pose", "geometry_msgs/PoseWithCovariance"),
    ],
    "ObjectHypothesis": [("class_id", "string"), ("score", "double")],
    "BoundingBox2D": [("center", "vision_msgs/Pose2D"), ("size_x", "double"), ("size_y", "double")],
    "Pose2D": [("position", "vision_msgs/Point2D"), ("theta", "double")],
    "Point2D": [("x", "double"), ("y", "double")],
    "LabelInfo": [
        ("header", "std_msgs/Header"),
        ("class_map", "sequence<vision_msgs/VisionClass>"),
        ("threshold", "float"),
    ],
    "VisionClass": [("class_id", "uint16"), ("class_name", "string")],
    "VisionInfo": [
        ("header", "std_msgs/Header"),
        ("method", "string"),
        ("database_location", "string"),
        ("database_version", "int32"),
    ],
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_FIELDS))
def test_type_has_upstream_name_and_fields(name):
    cls = getattr(vision_msgs.msg, name)
    package, subfolder = cls.__module__.split(".")[:2]
    assert f"{package}/{subfolder}/{cls.__name__}" == f"vision_msgs/msg/{name}"
    assert list(cls.get_fields_and_field_types().items()) == UPSTREAM_FIELDS[name]


@pytest.mark.ros
def test_dds_graph_reports_upstream_type_names(ros_env):
    """Another participant sees the topic typed as 'vision_msgs/msg/...', as upstream nodes do."""
    rclpy.init()
    try:
        publisher_node = rclpy.create_node("types_publisher")
        observer = rclpy.create_node("types_observer")
        publisher_node.create_publisher(vision_msgs.msg.Detection2DArray, "detections", 1)
        publisher_node.create_publisher(vision_msgs.msg.LabelInfo, "label_info", 1)
        wanted = {
            ("/detections", "vision_msgs/msg/Detection2DArray"),
            ("/label_info", "vision_msgs/msg/LabelInfo"),
        }
        seen: set[tuple[str, str]] = set()
        deadline = time.monotonic() + 10
        while not wanted <= seen and time.monotonic() < deadline:
            rclpy.spin_once(observer, timeout_sec=0.1)
            seen = {(t, ty) for t, types in observer.get_topic_names_and_types() for ty in types}
        assert wanted <= seen, seen
    finally:
        rclpy.try_shutdown()
