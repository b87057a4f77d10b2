"""What perception.launch.py decides, as plain functions (no launch import), so tests can check
the decisions without launch_ros, which has no wheels.

The launch arguments name the cameras and where their images come from:

* one unnamed camera (the params file's default ``cameras: [""]``): ``camera_topic:=T`` (default
  :data:`DEFAULT_CAMERA_TOPIC`) is remapped onto the node's ``image`` and ``T/compressed`` onto
  ``image/compressed``;
* named cameras (``cameras:=front,rear``, or ``cameras`` in the params file):
  ``camera_topics:=front:/f/image_raw,rear:/r/image_raw`` remaps each camera's ``<name>/image``
  (and ``<name>/image/compressed`` onto ``T/compressed``); a camera left out reads
  ``<name>/image`` in the node's namespace. ``camera_topic:=`` is refused there: it would be
  silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rclpy.exceptions import InvalidTopicNameException
from rclpy.validate_topic_name import validate_topic_name

from ..config_loading import read_yaml
from .cameras import input_topic
from .parameter_files import parameter_sections, pattern_matches
from .parameters import check_camera_names

NODE_NAME = "perception_node"
DEFAULT_CAMERA_TOPIC = "/camera/image_raw"
UNNAMED = ("",)  # the node's cameras parameter for its one unnamed camera


@dataclass(frozen=True)
class LaunchArguments:
    """The launch arguments' values as ``ros2 launch`` gives them (strings; "" = not given)."""

    params_file: str
    checkpoint: str = ""
    namespace: str = ""
    cameras: str = ""
    camera_topic: str = ""
    camera_topics: str = ""


@dataclass(frozen=True)
class NodeLaunch:
    """What the launch file gives the node: its cameras ("" for the unnamed one), parameter
    sources (for launch_ros ``Node(parameters=...)``) and remappings (``(from, to)`` pairs)."""

    cameras: tuple[str, ...]
    parameters: list[str | dict[str, Any]]
    remappings: list[tuple[str, str]]


def plan_node(arguments: LaunchArguments) -> NodeLaunch:
    """Checks the launch arguments together and decides the node's parameters and remappings.

    Raises:
        FileNotFoundError: ``params_file`` is not a file.
        ValueError: one line naming the launch argument (or the params file) and the problem.
    """
    check_params_file(arguments.params_file)
    given = parse_cameras_argument(arguments.cameras)
    cameras = given or params_file_cameras(arguments.params_file, arguments.namespace)
    topics = camera_input_topics(cameras, arguments.camera_topic, arguments.camera_topics)
    remappings: list[tuple[str, str]] = []
    for camera, topic in topics.items():
        remappings.append((input_topic(camera, "raw"), topic))
        remappings.append((input_topic(camera, "compressed"), f"{topic}/compressed"))
    return NodeLaunch(
        cameras=cameras,
        parameters=node_parameters(arguments.params_file, arguments.checkpoint, given),
        remappings=remappings,
    )


def node_parameters(
    params_file: str, checkpoint: str, cameras: tuple[str, ...] | None = None
) -> list[str | dict[str, Any]]:
    """The node's parameter sources, in order: the params file, then ``checkpoint`` and
    ``cameras`` only when their launch argument was given. A later source wins in ROS 2, so an
    always-present empty ``checkpoint`` would wipe the one in the user's params file."""
    sources: list[str | dict[str, Any]] = [params_file]
    overrides: dict[str, Any] = {}
    if checkpoint:
        overrides["checkpoint"] = checkpoint
    if cameras:
        overrides["cameras"] = list(cameras)
    if overrides:
        sources.append(overrides)
    return sources


def check_params_file(params_file: str) -> None:
    """Refuses a ``params_file`` that is not a file: launch_ros only warns "Parameter file path
    is not a file" and starts the node WITHOUT it, so with ``checkpoint:=`` given every setting
    of the user's file would be silently lost."""
    if not Path(params_file).is_file():
        raise FileNotFoundError(
            f"params_file:={params_file} is not a file; give a node parameters YAML "
            "(start from a copy of the shipped config/perception.yaml)"
        )


def parse_cameras_argument(value: str) -> tuple[str, ...] | None:
    """``cameras:=front,rear`` or ``cameras:=[front, rear]`` -> ("front", "rear"); "" (not
    given) -> None, the params file decides.

    Raises:
        ValueError: not a list of camera names (naming ``cameras:=``).
    """
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            items = yaml.safe_load(text)
        except yaml.YAMLError:
            items = None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError(
                f"cameras:={value} is not a list of camera names (cameras:=front,rear)"
            )
    else:
        items = [item.strip() for item in text.split(",")]
    names = tuple(items)
    try:
        check_camera_names(names)
    except ValueError as error:
        raise ValueError(f"cameras:={value}: {_after_parameter_name(error)}") from None
    if names == UNNAMED:
        raise ValueError(f"cameras:={value} names no camera (cameras:=front,rear)")
    return names


def params_file_cameras(params_file: str, namespace: str) -> tuple[str, ...]:
    """The ``cameras`` the params file gives the node ``<namespace>/perception_node``: from the
    last section that applies to it (``/**``, ``perception_node``, ``/**/perception_node``, ...;
    a later section wins, as rclpy reads the file), ``("",)`` where none sets it.

    Raises:
        ValueError: the file is not YAML, or its ``cameras`` is not a list of camera names.
    """
    content = read_yaml(params_file, "params_file")
    cameras: Any = list(UNNAMED)
    node = f"{node_namespace_prefix(namespace)}/{NODE_NAME}"
    target = [token for token in node.split("/") if token]
    for pattern, parameters in parameter_sections(content):
        if pattern_matches(pattern, target) and "cameras" in parameters:
            cameras = parameters["cameras"]
    if not isinstance(cameras, list) or not all(isinstance(name, str) for name in cameras):
        raise ValueError(
            f"params_file:={params_file}: parameter 'cameras' must be a list of camera names, "
            f"got {cameras!r}"
        )
    try:
        check_camera_names(tuple(cameras))
    except ValueError as error:
        raise ValueError(f"params_file:={params_file}: {error}") from None
    return tuple(cameras)


def camera_input_topics(
    cameras: tuple[str, ...], camera_topic: str, camera_topics: str
) -> dict[str, str]:
    """Each remapped camera's input topic (its raw image; the compressed one is that
    ``/compressed``), by camera name ("" for the unnamed camera).

    Raises:
        ValueError: ``camera_topic:=`` with named cameras, ``camera_topics:=`` with the unnamed
            camera, an entry that is not ``name:topic``, a camera not in ``cameras``, a camera
            named twice, or a topic that is not a ROS topic name.
    """
    if cameras == UNNAMED:
        if camera_topics.strip():
            raise ValueError(
                f"camera_topics:={camera_topics} is for named cameras, but the node has one "
                "unnamed camera; give its topic with camera_topic:= (or name the cameras with "
                "cameras:=front,rear)"
            )
        topic = camera_topic or DEFAULT_CAMERA_TOPIC
        check_topic_name(topic, f"camera_topic:={camera_topic}")
        return {"": topic}
    if camera_topic:
        raise ValueError(
            f"camera_topic:={camera_topic} is for one unnamed camera, but the node has cameras "
            f"{', '.join(cameras)}; give each camera's topic with camera_topics:="
            f"{','.join(f'{name}:/{name}/image_raw' for name in cameras)}"
        )
    topics: dict[str, str] = {}
    for entry in filter(None, (item.strip() for item in camera_topics.split(","))):
        name, separator, topic = entry.partition(":")
        name, topic = name.strip(), topic.strip()
        if not separator:
            raise ValueError(
                f"camera_topics:={camera_topics}: '{entry}' is not camera:topic "
                "(e.g. front:/front/image_raw)"
            )
        if name not in cameras:
            raise ValueError(
                f"camera_topics:={camera_topics}: '{name}' is not one of the node's cameras "
                f"({', '.join(cameras)})"
            )
        if name in topics:
            raise ValueError(f"camera_topics:={camera_topics}: camera '{name}' is named twice")
        check_topic_name(topic, f"camera_topics:={camera_topics}")
        topics[name] = topic
    return topics


def check_topic_name(topic: str, argument: str) -> None:
    """Raises ValueError in one line, naming ``argument`` (``camera_topic:=...``), unless
    ``topic`` is a ROS topic name (rclpy's rule)."""
    try:
        validate_topic_name(topic)
    except InvalidTopicNameException as error:
        reason = str(error).splitlines()[0].removeprefix("Invalid topic name: ").rstrip(":")
        raise ValueError(f"{argument} names '{topic}', not a topic name ({reason})") from None


def _after_parameter_name(error: ValueError) -> str:
    """check_camera_names' message without its "parameter 'cameras'" lead."""
    return str(error).removeprefix("parameter 'cameras'").lstrip(": ")


def node_namespace_prefix(namespace: str) -> str:
    """``robot1`` or ``/robot1/`` -> ``/robot1``; the empty namespace -> ``""``."""
    parts = namespace.strip("/")
    return f"/{parts}" if parts else ""


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
