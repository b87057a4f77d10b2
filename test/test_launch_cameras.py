"""The launch file's camera decisions against real ROS 2 (launch_ros itself has no wheels).

* The cameras the launch reads from a params file are the ones rclpy gives the node.
* A node started with the launch plan's parameters and remappings (what launch_ros passes it)
  reads the planned input topics of two named cameras and publishes on the topics the launch's
  rviz config shows.

A real ``ros2 launch`` of perception.launch.py, with launch and launch_ros from source, is a hand
run (issue 22 section 3's report).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.node import Node
from sensor_msgs.msg import Image

from mtl_perception.ros.launch_support import (
    NODE_NAME,
    OVERLAY_NODE_NAME,
    LaunchArguments,
    node_namespace_prefix,
    params_file_cameras,
    plan_node,
    plan_overlay,
)
from mtl_perception.ros.node_process import start_node
from mtl_perception.ros.rviz_config import rviz_config

sys.path.insert(0, str(Path(__file__).parent))
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from ros_client import RosClient

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parent.parent

SECTIONS = (
    "/*: {ros__parameters: {device: cpu}}",
    "/**: {ros__parameters: {cameras: [wild]}}",
    "perception_node: {ros__parameters: {cameras: [plain]}}",
    "/robot1/perception_node: {ros__parameters: {cameras: [robot1]}}",
    "/**/perception_node: {ros__parameters: {cameras: [anyns]}}",
    "/*/perception_node: {ros__parameters: {cameras: [onens]}}",
)


@pytest.fixture(scope="module")
def context():
    """One rclpy context for every node of the comparison (a node per file is cheap, a context
    per file is not); the nodes talk to nobody, so the default domain is fine."""
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


def _rclpy_cameras(context, params_file: Path, namespace: str) -> tuple[str, ...]:
    """The cameras rclpy gives a node named perception_node in ``namespace`` from the file."""
    node = Node(
        NODE_NAME,
        namespace=namespace or None,
        context=context,
        cli_args=[
            "--ros-args",
            "--params-file",
            str(params_file),
            "-p",
            "start_type_description_service:=false",
        ],
        automatically_declare_parameters_from_overrides=True,
        start_parameter_services=False,
        enable_rosout=False,
    )
    try:
        if not node.has_parameter("cameras"):
            return ("",)
        return tuple(node.get_parameter("cameras").value)
    finally:
        node.destroy_node()


@pytest.mark.slow  # 108 rclpy nodes
def test_the_launch_reads_the_cameras_rclpy_gives_the_node(tmp_path, context):
    """Every ordered pair of sections (which applies to the node in which namespace, and which
    of two applying ones wins) is read by the launch as rclpy reads it."""
    for first, second in itertools.product(range(len(SECTIONS)), repeat=2):
        path = tmp_path / f"params_{first}_{second}.yaml"
        sections = [SECTIONS[first]] if first == second else [SECTIONS[first], SECTIONS[second]]
        path.write_text("\n".join(sections) + "\n")
        for namespace in ("", "robot1", "x/y"):
            expected = _rclpy_cameras(context, path, namespace)
            assert params_file_cameras(str(path), namespace) == expected, (
                namespace,
                path.read_text(),
            )


def _frame(camera: str, width: int, height: int) -> Image:
    rgb = np.random.default_rng(len(camera)).integers(0, 255, (height, width, 3), np.uint8)
    frame = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=rgb.tobytes())
    frame.header.frame_id = f"{camera}_optical_frame"
    return frame


@pytest.mark.slow
def test_a_node_given_the_launch_plan_serves_two_named_cameras_where_rviz_looks(tmp_path, ros_env):
    """The issue's set-up: cameras [front, rear] in the params file, a namespace, the front
    camera's images remapped from the launch and the rear one on its own topic. The node reads
    both and, with the overlay node the launch starts beside it for rviz, every output rviz is
    told to show is published."""
    checkpoint = save_model(tmp_path / "model.pt", calibrated_small_model(0, SMALL_NAMED))
    params = tmp_path / "rig.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    cameras: [front, rear]\n"
        "    input_width: 256\n    input_height: 128\n    device: cpu\n"
    )
    arguments = LaunchArguments(
        str(params),
        checkpoint=str(checkpoint),
        namespace="robot1",
        camera_topics="front:/cams/front/image_raw",
    )
    plan = plan_node(arguments)
    rviz = yaml.safe_load(
        rviz_config((REPO / "config" / "perception.rviz").read_text(), "robot1", plan.cameras)
    )
    shown = [
        display["Topic"]["Value"]
        for group in rviz["Visualization Manager"]["Displays"]
        for display in group["Displays"]
    ]
    inputs = {"front": "/cams/front/image_raw", "rear": "/robot1/rear/image"}
    client = RosClient(int(ros_env["ROS_DOMAIN_ID"]), "launch_cameras_client")
    log = tmp_path / "node.log"
    node = start_node(
        NODE_NAME,
        namespace=node_namespace_prefix(arguments.namespace),  # launch_ros makes it absolute
        remaps=dict(plan.remappings),
        params_file=Path(plan.parameters[0]),
        overrides=plan.parameters[1],  # launch_ros writes these into a parameter file of its own
        env=ros_env,
        log=log,
    )
    drawing = plan_overlay(plan, str(params))
    overlay_log = tmp_path / "overlay.log"
    overlay = start_node(
        OVERLAY_NODE_NAME,
        namespace=drawing.namespace,
        remaps=dict(drawing.remappings),
        overrides=drawing.parameters[0],
        module="mtl_perception.ros.overlay_node",
        env=ros_env,
        log=overlay_log,
    )
    try:
        for topic in shown:
            client.subscribe(topic, Image)

        def all_shown() -> bool:
            assert node.process.poll() is None, log.read_text()
            assert overlay.process.poll() is None, overlay_log.read_text()
            for camera, topic in inputs.items():
                client.publisher(topic, Image).publish(_frame(camera, 160, 96))
            return all(client.messages(topic) for topic in shown)

        assert client.wait_for(all_shown, timeout=90), (
            [topic for topic in shown if not client.messages(topic)],
            log.read_text(),
            overlay_log.read_text(),
        )
        for topic in shown:
            camera = topic.split("/")[3]
            message = client.messages(topic)[0]
            assert message.header.frame_id == f"{camera}_optical_frame", topic
            assert (message.width, message.height, message.encoding) == (160, 96, "rgb8"), topic
    finally:
        client.close()
        assert overlay.stop() == 0, overlay_log.read_text()
        assert node.stop() == 0, log.read_text()
    assert sorted(shown) == [
        "/robot1/perception_node/front/overlay",
        "/robot1/perception_node/front/semantic_color",
        "/robot1/perception_node/rear/overlay",
        "/robot1/perception_node/rear/semantic_color",
    ]
