"""Launch the perception node (and optionally rviz).

    ros2 launch mtl_perception perception.launch.py camera_topic:=/camera/image_raw \
        checkpoint:=/path/model.pt [params_file:=...] [namespace:=...] [use_rviz:=true]
"""

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = "mtl_perception"


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
            ),
            DeclareLaunchArgument(
                "checkpoint", default_value="", description="trained checkpoint (.pt)"
            ),
            DeclareLaunchArgument("namespace", default_value=""),
            DeclareLaunchArgument("use_rviz", default_value="false"),
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
            Node(
                package=PACKAGE,
                executable="perception_node",
                name="perception_node",
                namespace=LaunchConfiguration("namespace"),
                parameters=[
                    LaunchConfiguration("params_file"),
                    {"checkpoint": LaunchConfiguration("checkpoint")},
                ],
                remappings=[
                    ("image", LaunchConfiguration("camera_topic")),
                    ("image/compressed", [LaunchConfiguration("camera_topic"), "/compressed"]),
                ],
                output="screen",
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", PathJoinSubstitution([share, "config", "perception.rviz"])],
                condition=IfCondition(LaunchConfiguration("use_rviz")),
            ),
        ]
    )
