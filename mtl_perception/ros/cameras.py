"""The node's cameras: topic names and per-camera state.

One node serves N cameras through one network. Camera ``name`` reads ``<name>/image`` (or
``<name>/image/compressed``) and publishes ``~/<name>/semantic`` and ``~/<name>/detections``; the
overlay node draws ``~/<name>/semantic_color`` and ``~/<name>/overlay`` from them, under the same
perception node's name (so drawing costs the perception node nothing). The unnamed default camera
("") keeps the single-camera topics ``image`` and ``~/semantic``, .... LabelInfo
(``~/label_info``, ``~/detection_label_info``) is the node's, published once for all cameras.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .frame_slot import FrameCounters
from .parameters import CameraParameters

PERCEPTION_OUTPUTS = ("semantic", "detections")  # published by the perception node
DRAWN_OUTPUTS = ("semantic_color", "overlay")  # drawn from those by overlay_node.py
OUTPUTS = (*PERCEPTION_OUTPUTS, *DRAWN_OUTPUTS)  # every per-camera topic under the perception node
LATENCY_WINDOW = 200  # latencies kept per camera for p50/p95
NODE_OUTPUTS = ("~/label_info", "~/detection_label_info")  # the node's own, one for all cameras


def camera_topic(camera: str, topic: str) -> str:
    """``topic`` under the camera's name: ("", "image") -> "image"; ("front", "image") ->
    "front/image"."""
    return f"{camera}/{topic}" if camera else topic


def input_topic(camera: str, transport: str) -> str:
    """The camera's input topic, relative to the node's namespace."""
    return camera_topic(camera, "image/compressed" if transport == "compressed" else "image")


def output_topic(camera: str, output: str) -> str:
    """The camera's output ``output`` (one of OUTPUTS), in the node's private namespace."""
    return "~/" + camera_topic(camera, output)


def camera_topics(camera: CameraParameters) -> list[str]:
    """Every topic of ``camera``: its input, then its outputs (relative, as the node uses them)."""
    return [
        input_topic(camera.name, camera.input_transport),
        *(output_topic(camera.name, output) for output in OUTPUTS),
    ]


def check_topic_names(cameras: Sequence[CameraParameters], resolve: Callable[[str], str]) -> None:
    """Checks that every topic of the node resolves to a valid ROS 2 name (a long camera name
    can make ``~/<name>/semantic_color`` longer than the middleware allows).

    Args:
        cameras: the node's cameras.
        resolve: the node's ``resolve_topic_name``: expands and remaps a topic, raising when the
            result is not a valid topic name.

    Raises:
        ValueError: naming the camera, the topic and why it is not valid.
    """
    for topic in NODE_OUTPUTS:
        _resolve(topic, topic, resolve, "the node's name and namespace make")
    for camera in cameras:
        label = camera.name if len(camera.name) <= 40 else f"{camera.name[:40]}..."
        what = f"parameter 'cameras': camera '{label}' ({len(camera.name)} characters) makes"
        for topic in camera_topics(camera):
            _resolve(topic, topic.replace(camera.name, label, 1), resolve, what)


def offline_resolver(node_name: str, namespace: str = "/") -> Callable[[str], str]:
    """A ``resolve`` for :func:`check_topic_names` before the node exists (a tool that will
    start it): expands ``~`` and relative names for the node ``namespace/node_name`` (no
    remapping) and raises as rclpy does when the result is not a valid full topic name."""
    from rclpy.expand_topic_name import expand_topic_name
    from rclpy.validate_full_topic_name import validate_full_topic_name

    def resolve(topic: str) -> str:
        full = expand_topic_name(topic, node_name, namespace)
        validate_full_topic_name(full)
        return full

    return resolve


def _resolve(topic: str, shown: str, resolve: Callable[[str], str], what: str) -> None:
    """Resolves ``topic``; if that fails, raises ValueError "<what> an invalid topic <shown>"."""
    try:
        resolve(topic)
    except Exception as error:  # rclpy raises RCLError or InvalidTopicNameException
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        reason = re.sub(r", at \S+:\d+", "", reason)  # rcl's source locations
        raise ValueError(f"{what} an invalid topic '{shown}': {reason}") from None


@dataclass
class Camera:
    """A camera's runtime state. Counters and latencies are guarded by the node's counter lock;
    ``subscription`` and ``outputs`` (publishers by OUTPUTS name) exist while active."""

    config: CameraParameters
    counters: FrameCounters = field(default_factory=FrameCounters)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    subscription: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    # (time.monotonic(), received, processed) at the last /diagnostics (set at activate)
    last_diagnostics: tuple[float, int, int] = (0.0, 0, 0)
    # time.monotonic() of the last frame received (any, rejected too), or of activation
    last_frame_at: float = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def topic(self) -> str:
        """The input topic, resolved once subscribed (for log lines)."""
        if self.subscription is not None:
            return self.subscription.topic_name
        return input_topic(self.name, self.config.input_transport)
