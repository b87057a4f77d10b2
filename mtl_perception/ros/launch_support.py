"""What perception.launch.py decides, as plain functions (no launch import), so tests can check
the decisions without launch_ros, which has no wheels."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from ..outputs import write_text

NODE_NAME = "perception_node"
# The rviz config shipped in config/ names the node's topics for the empty namespace.
_RVIZ_TOPIC = re.compile(rf"^(\s*Value:\s*)/{NODE_NAME}/", re.MULTILINE)


def node_parameters(params_file: str, checkpoint: str) -> list[str | dict[str, str]]:
    """The node's parameter sources, in order: the params file, then ``checkpoint`` only when the
    launch argument was given. A later source wins in ROS 2, so an always-present empty
    ``checkpoint`` would wipe the one in the user's params file."""
    sources: list[str | dict[str, str]] = [params_file]
    if checkpoint:
        sources.append({"checkpoint": checkpoint})
    return sources


def node_namespace_prefix(namespace: str) -> str:
    """``robot1`` or ``/robot1/`` -> ``/robot1``; the empty namespace -> ``""``."""
    parts = namespace.strip("/")
    return f"/{parts}" if parts else ""


def rviz_config_for_namespace(text: str, namespace: str) -> str:
    """The shipped rviz config, every ``/perception_node/...`` topic moved under ``namespace``."""
    prefix = node_namespace_prefix(namespace)
    return _RVIZ_TOPIC.sub(lambda m: f"{m.group(1)}{prefix}/{NODE_NAME}/", text)


def write_rviz_config(template: str | Path, namespace: str) -> Path:
    """Writes the namespaced rviz config for rviz to read: one file per namespace in the
    temporary folder, replaced atomically at each launch (so launches leave no pile behind)."""
    text = rviz_config_for_namespace(Path(template).read_text(), namespace)
    tag = node_namespace_prefix(namespace).replace("/", "_")
    return write_text(Path(tempfile.gettempdir()) / f"mtl_perception{tag}.rviz", text)


def check_launch_arguments(params_file: str, camera_topic: str) -> None:
    """Refuses what launch_ros would let through: a ``params_file`` that is not a file (it only
    warns "Parameter file path is not a file" and starts the node WITHOUT it, so with
    ``checkpoint:=`` given every setting of the user's file is silently lost) and an empty
    ``camera_topic`` (an rclpy traceback about a remap rule)."""
    if not Path(params_file).is_file():
        raise FileNotFoundError(
            f"params_file:={params_file} is not a file; give a node parameters YAML "
            "(start from a copy of the shipped config/perception.yaml)"
        )
    if not camera_topic.strip():
        raise ValueError("camera_topic:= must name the camera's sensor_msgs/Image topic")


def require_rviz2() -> None:
    """``use_rviz:=true`` without rviz2: a message that says what to do, raised before any node
    is started (launch's own "package 'rviz2' not found" came after the perception node had been
    scheduled, and left it running as an orphan)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        raise RuntimeError(
            "use_rviz:=true needs rviz2, which is not installed "
            "(sudo apt install ros-$ROS_DISTRO-rviz2); or launch with use_rviz:=false"
        ) from None
