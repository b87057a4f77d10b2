"""Launch the perception node (and optionally rviz2).

    ros2 launch mtl_perception perception.launch.py camera_topic:=/camera/image_raw \
        checkpoint:=/path/model.pt [params_file:=...] [namespace:=...] [use_rviz:=true]

Parameters come from ``params_file``; ``checkpoint:=`` overrides the file's checkpoint only when
it is given. ``use_rviz:=true`` needs rviz2 installed (``sudo apt install ros-$ROS_DISTRO-rviz2``);
its config is written at launch time with the node's namespace in the topic names.
"""

import os
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
    check_launch_arguments,
    node_parameters,
    require_rviz2,
    write_rviz_config,
)

PACKAGE = "mtl_perception"


def _nodes(context: LaunchContext) -> list[SetEnvironmentVariable | Node]:
    """The node and rviz2, built once the arguments' values are known, after the Fast DDS
    profile variables: large frames with best-effort QoS need the big shared-memory segment of
    the shipped profile (README), unless the user named a profile of their own."""
    share = FindPackageShare(PACKAGE).perform(context)
    profile = profile_environment(os.environ, str(Path(share, "config", LARGE_IMAGES_PROFILE)))
    namespace = LaunchConfiguration("namespace").perform(context)
    camera_topic = LaunchConfiguration("camera_topic").perform(context)
    params_file = LaunchConfiguration("params_file").perform(context)
    check_launch_arguments(params_file, camera_topic)
    use_rviz = IfCondition(LaunchConfiguration("use_rviz")).evaluate(context)
    if use_rviz:
        require_rviz2()  # before any node is started
    actions: list[SetEnvironmentVariable | Node] = [
        SetEnvironmentVariable(name, value) for name, value in profile.items()
    ]
    actions.append(
        Node(
            package=PACKAGE,
            executable="perception_node",
            name=NODE_NAME,
            namespace=namespace,
            parameters=node_parameters(
                params_file, LaunchConfiguration("checkpoint").perform(context)
            ),
            remappings=[
                ("image", camera_topic),
                ("image/compressed", f"{camera_topic}/compressed"),
            ],
            output="screen",
        )
    )
    if use_rviz:
        rviz_config = write_rviz_config(Path(share, "config", "perception.rviz"), namespace)
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
                default_value="/camera/image_raw",
                description="sensor_msgs/Image topic (its /compressed for compressed input)",
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
                description="also start rviz2 showing the overlay and colour mask (needs rviz2)",
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
