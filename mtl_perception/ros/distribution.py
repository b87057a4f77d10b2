"""Which ROS 2 this Python runs: the pip wheels' (Kilted or Jazzy) or a sourced system one.

No ROS import: the test suite's header, the bag reports' provenance and the Fast DDS profile
choice read it before (or without) starting ROS.
"""

from __future__ import annotations

import os
from importlib import metadata

# The rclpy wheel of each pip ROS 2 distribution (requirements/ros-*.txt).
RCLPY_WHEELS = (("ros-jazzy-rclpy", "jazzy"), ("ros-rclpy", "kilted"))


def ros_distribution() -> tuple[str, str]:
    """(name, where from): ``("kilted", "pip wheels, rclpy 9.x")``, or ``ROS_DISTRO`` and
    ``"system"`` for a sourced ROS 2 (``"unknown"`` when not even that is set). The wheels win
    over ``ROS_DISTRO``: in a venv they are what ``import rclpy`` loads."""
    for distribution, name in RCLPY_WHEELS:
        try:
            return name, f"pip wheels, rclpy {metadata.version(distribution)}"
        except metadata.PackageNotFoundError:
            continue
    return os.environ.get("ROS_DISTRO", "unknown"), "system"
