"""The node's cameras: topic names and per-camera state.

One node serves N cameras through one network. Camera ``name`` reads ``<name>/image`` (or
``<name>/image/compressed``) and publishes ``~/<name>/semantic``, ``~/<name>/detections``,
``~/<name>/semantic_color`` and ``~/<name>/overlay``; the unnamed default camera ("") keeps the
single-camera topics ``image`` and ``~/semantic``, .... LabelInfo (``~/label_info``,
``~/detection_label_info``) is the node's, published once for all cameras.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .frame_slot import FrameCounters
from .parameters import CameraParameters

OUTPUTS = ("semantic", "detections", "semantic_color", "overlay")
LATENCY_WINDOW = 200  # latencies kept per camera for p50/p95


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

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def topic(self) -> str:
        """The input topic, resolved once subscribed (for log lines)."""
        if self.subscription is not None:
            return self.subscription.topic_name
        return input_topic(self.name, self.config.input_transport)
