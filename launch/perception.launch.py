"""Launch the perception node (and optionally the overlay node and rviz2).

    ros2 launch mtl_perception perception.launch.py camera_topic:=/camera/image_raw \
        checkpoint:=/path/model.pt [params_file:=...] [namespace:=...] [use_rviz:=true] \
        [overlay:=true]
    ros2 launch mtl_perception perception.launch.py cameras:=front,rear \
        camera_topics:=front:/front/image_raw,rear:/rear/image_raw checkpoint:=/path/model.pt

Parameters come from ``params_file``; ``checkpoint:=`` and ``cameras:=`` override the file's only
when given. One unnamed camera reads ``camera_topic``; named cameras (``cameras:=`` or the file's
``cameras``) read ``camera_topics`` (a camera left out reads ``<name>/image`` in the namespace),
and ``camera_topic:=`` is refused with them (mtl_perception/ros/launch_support.py decides).
A namespace or camera name that makes a topic or service name the node would refuse stops the
launch before any node starts. ``use_rviz:=true`` needs rviz2 installed
(``sudo apt install ros-$ROS_DISTRO-rviz2``); its config is written at launch time with the
node's namespace and cameras in the topic names. ``use_rviz:=true`` or ``overlay:=true`` also
starts the overlay node (ros/overlay_node.py), which draws each camera's ``overlay`` and
``semantic_color`` under the perception node's name (the perception node draws nothing): same
namespace, cameras, camera remappings and transports.
"""

import os
from dataclasses import fields
from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription
from mtl_perception.ros.fastdds import LARGE_IMAGES_PROFILE, profile_environment
from mtl_perception.ros.launch_support import (
    NODE_NAME,
    OVERLAY_NODE_NAME,
    LaunchArguments,
    plan_node,
    plan_overlay,
    require_rviz2,
    starts_overlay,
)
from mtl_perception.ros.rviz_config import write_rviz_config

PACKAGE = "mtl_perception"


def _nodes(context: LaunchContext) -> list[SetEnvironmentVariable | Node]:
    """The node, the overlay node and rviz2, built once the arguments' values are known, after
    the Fast DDS profile variables: large frames with best-effort QoS need the big shared-memory
    segment of the shipped profile (README), unless the user named a profile of their own."""
    share = FindPackageShare(PACKAGE).perform(context)
    profile = profile_environment(os.environ, str(Path(share, "config", LARGE_IMAGES_PROFILE)))
    arguments = LaunchArguments(
        **{f.name: LaunchConfiguration(f.name).perform(context) for f in fields(LaunchArguments)}
    )
    node = plan_node(arguments)  # checks the arguments together, before anything starts
    use_rviz = IfCondition(LaunchConfiguration("use_rviz")).evaluate(context)
    overlay = IfCondition(LaunchConfiguration("overlay")).evaluate(context)
    if use_rviz:
        require_rviz2()  # before any node is started
    drawing = None
    if starts_overlay(use_rviz, overlay):
        drawing = plan_overlay(node, arguments.params_file)
    actions: list[SetEnvironmentVariable | Node] = [
        SetEnvironmentVariable(name, value) for name, value in profile.items()
    ]
    actions.append(
        Node(
            package=PACKAGE,
            executable="perception_node",
            name=NODE_NAME,
            namespace=node.namespace,
            parameters=node.parameters,
            remappings=node.remappings,
            output="screen",
        )
    )
    if drawing is not None:
        actions.append(
            Node(
                package=PACKAGE,
                executable="overlay_node",
                name=OVERLAY_NODE_NAME,
                namespace=drawing.namespace,
                parameters=drawing.parameters,
                remappings=drawing.remappings,
                output="screen",
            )
        )
    if use_rviz:
        rviz_config = write_rviz_config(
            Path(share, "config", "perception.rviz"), node.namespace, node.cameras
        )
        actions.append(
            Node(package="rviz2", executable="rviz2", arguments=["-d", str(rviz_config)])
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "camera_topic",
                default_value="",
                description="the one unnamed camera's sensor_msgs/Image topic (its /compressed "
                "for compressed input); empty: /camera/image_raw. Refused with named cameras",
            ),
            DeclareLaunchArgument(
                "cameras",
                default_value="",
                description="camera names, e.g. front,rear (the node's cameras parameter); "
                "empty: the params file's cameras",
            ),
            DeclareLaunchArgument(
                "camera_topics",
                default_value="",
                description="named cameras' Image topics, e.g. front:/front/image_raw,"
                "rear:/rear/image_raw (each /compressed for compressed input); a camera left "
                "out reads <name>/image in the namespace",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "perception.yaml"]),
                description="node parameters YAML (the shipped config/perception.yaml by default)",
            ),
            DeclareLaunchArgument(
                "checkpoint",
                default_value="",
                description="trained checkpoint (.pt); when given, overrides params_file's",
            ),
            DeclareLaunchArgument(
                "namespace",
                default_value="",
                description="namespace of the node (its topics and rviz2's follow it)",
            ),
            DeclareLaunchArgument(
                "use_rviz",
                default_value="false",
                description="also start rviz2 showing each camera's overlay and colour mask "
                "(needs rviz2), and the overlay node that draws them",
            ),
            DeclareLaunchArgument(
                "overlay",
                default_value="false",
                description="also start the overlay node (overlay and semantic_color topics "
                "under the perception node's name) without rviz; use_rviz:=true starts it too",
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
