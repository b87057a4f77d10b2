"""Launch the perception node (and optionally rviz2).

    ros2 launch mtl_perception perception.launch.py camera_topic:=/camera/image_raw \
        checkpoint:=/path/model.pt [params_file:=...] [namespace:=...] [use_rviz:=true]

Parameters come from ``params_file``; ``checkpoint:=`` overrides the file's checkpoint only when
it is given. ``use_rviz:=true`` needs rviz2 installed (``sudo apt install ros-$ROS_DISTRO-rviz2``);
its config is written at launch time with the node's namespace in the topic names.
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription
from mtl_perception.ros.launch_support import NODE_NAME, node_parameters, write_rviz_config

PACKAGE = "mtl_perception"


def _nodes(context: LaunchContext) -> list[Node]:
    """The node and rviz2, built once the arguments' values are known."""
    share = FindPackageShare(PACKAGE).perform(context)
    namespace = LaunchConfiguration("namespace").perform(context)
    camera_topic = LaunchConfiguration("camera_topic").perform(context)
    nodes = [
        Node(
            package=PACKAGE,
            executable="perception_node",
            name=NODE_NAME,
            namespace=namespace,
            parameters=node_parameters(
                LaunchConfiguration("params_file").perform(context),
                LaunchConfiguration("checkpoint").perform(context),
            ),
            remappings=[
                ("image", camera_topic),
                ("image/compressed", f"{camera_topic}/compressed"),
            ],
            output="screen",
        )
    ]
    use_rviz = IfCondition(LaunchConfiguration("use_rviz"))
    if use_rviz.evaluate(context):
        rviz_config = write_rviz_config(Path(share, "config", "perception.rviz"), namespace)
        nodes.append(Node(package="rviz2", executable="rviz2", arguments=["-d", str(rviz_config)]))
    return nodes


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
            # Large frames with best-effort QoS need a big shared-memory segment (README).
            SetEnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE",
                EnvironmentVariable(
                    "FASTDDS_DEFAULT_PROFILES_FILE",
                    default_value=PathJoinSubstitution(
                        [share, "config", "fastdds_large_images.xml"]
                    ),
                ),
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
