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

Names are checked as the node will check them, before anything starts: ``namespace:=`` must be a
ROS namespace that leaves room for the node's services, and every topic of every camera must
resolve (namespace and remappings applied, :func:`node_topic_resolver`) to a valid name
(:func:`~mtl_perception.ros.cameras.check_topic_names`, the node's own check at configure).

The overlay node (``use_rviz:=true`` or ``overlay:=true``, :func:`plan_overlay`) goes beside the
perception node: same namespace, cameras and camera remappings, and the perception node's camera
parameters from the params file, so it reads each camera as the perception node does and draws
under the perception node's name. Its own names need no check: its topics are the perception
node's (checked above) and its name is shorter than the perception node's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rclpy.exceptions import InvalidNamespaceException, NameValidationException
from rclpy.expand_topic_name import expand_topic_name
from rclpy.validate_full_topic_name import validate_full_topic_name
from rclpy.validate_namespace import validate_namespace
from rclpy.validate_topic_name import validate_topic_name

from ..config_loading import read_yaml
from .cameras import NODE_OUTPUTS, check_topic_names, input_topic
from .parameter_files import flat_parameters, parameter_sections, pattern_matches
from .parameters import TRANSPORTS, CameraParameters, check_camera_names

NODE_NAME = "perception_node"
OVERLAY_NODE_NAME = "overlay_node"
# The perception node's parameters the overlay node reads as it does (with
# <camera>.input_transport): how each camera's frames arrive and which are refused.
OVERLAY_SHARED_PARAMETERS = ("input_transport", "qos_reliability", "max_pixels")
DEFAULT_CAMERA_TOPIC = "/camera/image_raw"
UNNAMED = ("",)  # the node's cameras parameter for its one unnamed camera
# What rclpy's LifecycleNode serves under the node's name (lifecycle, parameters, type
# description) and publishes (transition_event): the namespace must leave room for each.
NODE_SERVICES = (
    "~/change_state",
    "~/get_state",
    "~/get_available_states",
    "~/get_available_transitions",
    "~/get_transition_graph",
    "~/describe_parameters",
    "~/get_parameter_types",
    "~/get_parameters",
    "~/list_parameters",
    "~/set_parameters",
    "~/set_parameters_atomically",
    "~/get_type_description",
)
NODE_TOPICS = ("~/transition_event", *NODE_OUTPUTS)
SHOWN_CHARACTERS = 50  # a longer name is shown cut, with its length


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
    """What the launch file gives the node: its namespace (absolute, ``""`` for the root), its
    cameras ("" for the unnamed one), parameter sources (for launch_ros ``Node(parameters=...)``)
    and remappings (``(from, to)`` pairs)."""

    namespace: str
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
    check_namespace(arguments.namespace)
    given = parse_cameras_argument(arguments.cameras)
    cameras = given or params_file_cameras(arguments.params_file, arguments.namespace)
    topics = camera_input_topics(
        cameras, arguments.camera_topic, arguments.camera_topics, arguments.namespace
    )
    remappings: list[tuple[str, str]] = []
    for camera, topic in topics.items():
        remappings.append((input_topic(camera, "raw"), topic))
        remappings.append((input_topic(camera, "compressed"), f"{topic}/compressed"))
    try:
        check_camera_topics(cameras, arguments.namespace, remappings)
    except ValueError as error:
        if given:
            shown = shown_name(arguments.cameras)
            raise ValueError(f"cameras:={shown}: {_after_parameter_name(error)}") from None
        raise ValueError(f"params_file:={arguments.params_file}: {error}") from None
    return NodeLaunch(
        namespace=node_namespace_prefix(arguments.namespace),
        cameras=cameras,
        parameters=node_parameters(arguments.params_file, arguments.checkpoint, given),
        remappings=remappings,
    )


@dataclass(frozen=True)
class OverlayLaunch:
    """What the launch file gives the overlay node: its namespace (the perception node's), one
    parameter source (a dict) and the perception node's remappings."""

    namespace: str
    parameters: list[dict[str, Any]]
    remappings: list[tuple[str, str]]


def starts_overlay(use_rviz: bool, overlay: bool) -> bool:
    """Whether the launch starts the overlay node: for rviz (which shows its pictures), or when
    asked for (``overlay:=true``: the pictures without rviz)."""
    return use_rviz or overlay


def plan_overlay(node: NodeLaunch, params_file: str) -> OverlayLaunch:
    """The overlay node beside the planned perception node ``node``: the same namespace,
    cameras and remappings, and the perception node's camera parameters
    (:data:`OVERLAY_SHARED_PARAMETERS`, ``<camera>.input_transport``) as ``params_file`` gives
    them to it (any section layout: the values are read for the perception node and passed
    by name).

    Raises:
        ValueError: the params file is not YAML.
    """
    given = params_file_values(params_file, node.namespace)
    parameters: dict[str, Any] = {"perception_node": NODE_NAME, "cameras": list(node.cameras)}
    keys = [*OVERLAY_SHARED_PARAMETERS, *(f"{c}.input_transport" for c in node.cameras if c)]
    parameters.update({key: given[key] for key in keys if key in given})
    return OverlayLaunch(node.namespace, [parameters], list(node.remappings))


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
    cameras = params_file_values(params_file, namespace).get("cameras", list(UNNAMED))
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


def params_file_values(params_file: str, namespace: str) -> dict[str, Any]:
    """Every parameter ``params_file`` gives the node ``<namespace>/perception_node``, by its
    name (nested maps joined with '.': ``front.input_transport``), from every section that
    applies to it (``/**``, ``perception_node``, ``/**/perception_node``, ...; a later section
    wins, as rclpy reads the file).

    Raises:
        ValueError: the file is not YAML.
    """
    content = read_yaml(params_file, "params_file")
    node = f"{node_namespace_prefix(namespace)}/{NODE_NAME}"
    target = [token for token in node.split("/") if token]
    values: dict[str, Any] = {}
    for pattern, parameters in parameter_sections(content):
        if pattern_matches(pattern, target):
            values.update(flat_parameters(parameters))
    return values


def camera_input_topics(
    cameras: tuple[str, ...], camera_topic: str, camera_topics: str, namespace: str = ""
) -> dict[str, str]:
    """Each remapped camera's input topic (its raw image; the compressed one is that
    ``/compressed``), by camera name ("" for the unnamed camera).

    Raises:
        ValueError: ``camera_topic:=`` with named cameras, ``camera_topics:=`` with the unnamed
            camera, an entry that is not ``name:topic``, a camera not in ``cameras``, a camera
            named twice, or a topic that is not a ROS topic name in ``namespace``.
    """
    if cameras == UNNAMED:
        if camera_topics.strip():
            raise ValueError(
                f"camera_topics:={camera_topics} is for named cameras, but the node has one "
                "unnamed camera; give its topic with camera_topic:= (or name the cameras with "
                "cameras:=front,rear)"
            )
        topic = camera_topic or DEFAULT_CAMERA_TOPIC
        check_topic_name(topic, f"camera_topic:={shown_name(camera_topic)}", namespace)
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
        check_topic_name(topic, f"camera_topics:={shown_name(camera_topics)}", namespace)
        topics[name] = topic
    return topics


def check_topic_name(topic: str, argument: str, namespace: str = "") -> None:
    """Raises ValueError in one line, naming ``argument`` (``camera_topic:=...``), unless
    ``topic`` is a ROS topic name (rclpy's rule) and, with its ``/compressed`` (the launch
    remaps both), still is one once expanded in the node's ``namespace`` (not too long)."""
    try:
        validate_topic_name(topic)
    except NameValidationException as error:
        reason = _validation_reason(error)
        raise ValueError(
            f"{argument} names '{shown_name(topic)}', not a topic name ({reason})"
        ) from None
    for name in (topic, f"{topic}/compressed"):
        full = expand_topic_name(name, NODE_NAME, node_namespace_prefix(namespace) or "/")
        try:
            validate_full_topic_name(full)
        except NameValidationException as error:
            raise ValueError(
                f"{argument} makes the node read '{shown_name(full)}', not a topic name "
                f"({_validation_reason(error)})"
            ) from None


def check_namespace(namespace: str) -> None:
    """Raises ValueError in one line naming ``namespace:=`` unless ``namespace`` (``robot1``,
    ``/robot1/``; "" for the root) is a ROS namespace in which every service and topic of the
    node is a valid name (rcl's length limit counts the namespace)."""
    absolute = node_namespace_prefix(namespace) or "/"
    try:
        validate_namespace(absolute)
    except InvalidNamespaceException as error:
        raise ValueError(
            f"namespace:={shown_name(namespace)} is not a ROS namespace "
            f"({_validation_reason(error)})"
        ) from None
    for name, kind in [(s, "service") for s in NODE_SERVICES] + [(t, "topic") for t in NODE_TOPICS]:
        full = expand_topic_name(name, NODE_NAME, absolute)
        try:
            validate_full_topic_name(full, is_service=kind == "service")
        except NameValidationException as error:
            raise ValueError(
                f"namespace:={shown_name(namespace)} is too long for the node: its {kind} "
                f"'{shown_name(full)}' is not a valid name ({_validation_reason(error)})"
            ) from None


def node_topic_resolver(
    namespace: str, remappings: Sequence[tuple[str, str]] = ()
) -> Callable[[str], str]:
    """The node's ``resolve_topic_name`` for the node :data:`NODE_NAME` in ``namespace`` started
    with ``remappings``, as rcl does it: the topic is expanded (``~`` and relative names), the
    first remapping whose expanded ``from`` is that name replaces it with its expanded ``to``,
    and the result must be a valid full topic name.

    Returns:
        A function of a topic name giving its absolute name, raising ValueError (one line: the
        reason) where rcl would refuse it.
    """
    absolute = node_namespace_prefix(namespace) or "/"

    def expand(topic: str) -> str:
        return expand_topic_name(topic, NODE_NAME, absolute)

    def resolve(topic: str) -> str:
        name = expand(topic)
        for source, target in remappings:
            if expand(source) == name:
                name = expand(target)
                break
        try:
            validate_full_topic_name(name)
        except NameValidationException as error:
            raise ValueError(_validation_reason(error)) from None
        return name

    return resolve


def check_camera_topics(
    cameras: tuple[str, ...], namespace: str, remappings: Sequence[tuple[str, str]] = ()
) -> None:
    """The node's own check of its cameras' topics (:func:`check_topic_names`), for the node in
    ``namespace`` started with ``remappings``, with either input transport.

    Raises:
        ValueError: "parameter 'cameras': camera ... makes an invalid topic ...", as the node
            would refuse its configure.
    """
    configs = [CameraParameters(name, transport) for name in cameras for transport in TRANSPORTS]
    check_topic_names(configs, node_topic_resolver(namespace, remappings))


def shown_name(name: str) -> str:
    """``name`` for a message: as it is, or cut with its length where it is long."""
    if len(name) <= SHOWN_CHARACTERS + 10:
        return name
    return f"{name[:SHOWN_CHARACTERS]}... ({len(name)} characters)"


def _validation_reason(error: NameValidationException) -> str:
    """rclpy's "Invalid <what>: <reason>:" first line -> "<reason>"."""
    first = str(error).splitlines()[0]
    return first.partition(": ")[2].rstrip(":") or first


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
