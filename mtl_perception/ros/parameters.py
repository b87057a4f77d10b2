"""The node's parameters: declared once with descriptors and ranges, read into a dataclass."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node

from ..inference.device_names import STANDIN_DEVICE, standin_device


@dataclass(frozen=True)
class NodeParameters:
    """Defaults mirror config/perception.yaml (the file users edit)."""

    checkpoint: str = ""
    onnx_model: str = ""
    device: str = "auto"
    precision: str = "auto"  # fp16 on CUDA, fp32 on the CPU (the fastest path measured there)
    backend: str = "torch"
    channels_last: bool = False
    compile: str = "none"
    cuda_graph: bool = True  # applies on CUDA with the torch backend and compile none
    preallocate: bool = True  # pinned buffers on CUDA
    resize: str = "device"
    mask_resolution: str = "input"  # input: pixel-aligned with the frame; network: input_width x
    # input_height, each mask pixel covering (frame width / input_width) frame pixels across
    input_width: int = 768
    input_height: int = 384
    score_threshold: float = 0.25
    nms_iou: float = 0.55
    max_detections: int = 100
    input_transport: str = "raw"
    cameras: tuple[str, ...] = ("",)  # ("",): one unnamed camera on image, outputs ~/semantic
    max_batch: int = 0  # 0: every camera on CUDA, 1 on the CPU
    qos_reliability: str = "best_effort"
    qos_depth: int = 1
    max_pixels: int = 4096 * 4096
    diagnostics_period: float = 1.0
    stale_timeout_s: float = 3.0  # a camera silent this long is WARN in /diagnostics

    def validate(self) -> None:
        """Raises ValueError naming the parameter and the allowed values."""
        if self.backend == "torch" and not self.checkpoint and not standin_device(self.device):
            raise ValueError(
                "parameter 'checkpoint' is empty: give the path of a trained checkpoint"
            )
        if self.backend == "onnxruntime" and not self.onnx_model:
            raise ValueError("parameter 'onnx_model' is empty but backend is 'onnxruntime'")
        real = re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device)
        if not real and not standin_device(self.device):
            raise ValueError(f"parameter 'device' must be auto, cpu or cuda:N, got '{self.device}'")
        choices = {
            "precision": ("auto", "fp32", "fp16", "bf16"),
            "backend": ("torch", "onnxruntime"),
            "compile": ("none", "default", "max-autotune", "reduce-overhead"),
            "resize": ("device", "host"),
            "mask_resolution": ("input", "network"),
            "input_transport": TRANSPORTS,
            "qos_reliability": ("best_effort", "reliable"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"parameter '{name}' must be one of {allowed}, got '{getattr(self, name)}'"
                )
        check_camera_names(self.cameras)
        if not self.stale_timeout_s > 0:
            raise ValueError(
                "parameter 'stale_timeout_s' must be more than 0 seconds, got "
                f"{self.stale_timeout_s}"
            )
        for name in ("input_width", "input_height"):
            if getattr(self, name) % 16:
                raise ValueError(
                    f"parameter '{name}' must be a multiple of 16, got {getattr(self, name)}"
                )


CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
TRANSPORTS = ("raw", "compressed")


def check_camera_names(cameras: tuple[str, ...]) -> None:
    """Raises ValueError unless ``cameras`` is the one unnamed camera ("") or distinct names,
    each one topic token (a letter, then letters, digits or _)."""
    if tuple(cameras) == ("",):
        return
    if not cameras:
        raise ValueError(
            "parameter 'cameras' is empty: name the cameras, or leave it unset for one camera "
            "on 'image'"
        )
    for name in cameras:
        if not CAMERA_NAME.fullmatch(name):
            raise ValueError(
                f"parameter 'cameras': '{name}' is not a camera name (a letter, then letters, "
                "digits or _; it becomes a topic namespace)"
            )
    repeated = sorted({name for name in cameras if cameras.count(name) > 1})
    if repeated:
        raise ValueError(f"parameter 'cameras' names {', '.join(repeated)} more than once")


@dataclass(frozen=True)
class CameraParameters:
    """One camera of the node: ``name`` ("" for the unnamed default camera) and its input."""

    name: str
    input_transport: str


def read_cameras(node: Node, params: NodeParameters) -> list[CameraParameters]:
    """The node's cameras. A named camera's input transport is the parameter
    ``<name>.input_transport`` (declared here, on first use; default: the node's
    ``input_transport``), so one node can mix raw and compressed cameras.

    Raises:
        ValueError: a transport other than raw or compressed, naming the parameter.
    """
    cameras = []
    for name in params.cameras:
        transport = params.input_transport
        if name:
            key = f"{name}.input_transport"
            if not node.has_parameter(key):
                description = (
                    f"camera {name}: raw ({name}/image) or compressed ({name}/image/compressed)"
                )
                node.declare_parameter(
                    key, params.input_transport, ParameterDescriptor(description=description)
                )
            transport = node.get_parameter(key).value
            if transport not in TRANSPORTS:
                raise ValueError(
                    f"parameter '{key}' must be one of {TRANSPORTS}, got '{transport}'"
                )
        cameras.append(CameraParameters(name, transport))
    return cameras


_INT_RANGES = {
    "input_width": (16, 8192, 16),
    "input_height": (16, 8192, 16),
    "max_detections": (1, 10000, 1),
    "qos_depth": (1, 1000, 1),
    "max_pixels": (1, 2**31 - 1, 1),
    "max_batch": (0, 64, 1),
}
_FLOAT_RANGES = {
    "score_threshold": (0.0, 1.0),
    "nms_iou": (0.0, 1.0),
    "diagnostics_period": (0.1, 60.0),
    "stale_timeout_s": (0.0, 3600.0),  # 0 is refused by NodeParameters.validate
}
PARAMETER_DESCRIPTIONS = {
    "checkpoint": "trained checkpoint (.pt) to load at configure",
    "onnx_model": "exported ONNX model, used when backend is onnxruntime",
    "device": f"auto (cuda if available), cpu or cuda:N ({STANDIN_DEVICE}[:cuda]: benchmarks)",
    "precision": "auto (fp16 on CUDA, fp32 on the CPU), fp32, or fp16 / bf16 autocast (fp16 "
    "needs CUDA)",
    "backend": "torch or onnxruntime",
    "channels_last": "run the network in channels-last memory format",
    "compile": "torch.compile mode: none, default, max-autotune or reduce-overhead",
    "cuda_graph": "capture and replay one CUDA graph per input size (applies on CUDA with the "
    "torch backend and compile none; ignored elsewhere)",
    "preallocate": "reuse input/output buffers across frames (pinned on CUDA)",
    "mask_resolution": "input: the mask has the frame's size; network: input_width x "
    "input_height (frame pixels per mask pixel: width / input_width, height / input_height)",
    "resize": "device or host: where frames are resized to the network input",
    "input_width": "network input width, pixels (multiple of 16)",
    "input_height": "network input height, pixels (multiple of 16)",
    "score_threshold": "detections below this score are not published",
    "nms_iou": "per-class NMS IoU threshold (paper: 0.55)",
    "max_detections": "most detections published per image",
    "input_transport": "raw (image) or compressed (image/compressed)",
    "cameras": "camera names; each reads <name>/image (or <name>/image/compressed, "
    "<name>.input_transport) and publishes ~/<name>/semantic, ... [''] : one camera on image",
    "max_batch": "most cameras' frames in one forward pass; 0: all cameras on CUDA, 1 on the CPU",
    "qos_reliability": "input subscription reliability: best_effort (sensor data) or reliable",
    "qos_depth": "input subscription queue depth (keep last)",
    "max_pixels": "frames with more pixels are rejected",
    "diagnostics_period": "seconds between /diagnostics messages",
    "stale_timeout_s": "seconds without a frame after which a camera's diagnostics go WARN (> 0)",
}


def declare_fields(
    node: Node,
    config: type,
    descriptions: dict[str, str],
    int_ranges: dict[str, tuple[int, int, int]],
    float_ranges: dict[str, tuple[float, float]],
) -> None:
    """Declares one parameter per field of the dataclass ``config`` (its default, a list for a
    tuple), with its description and its (low, high[, step]) range where it has one."""
    for spec in fields(config):
        descriptor = ParameterDescriptor(description=descriptions[spec.name])
        if spec.name in int_ranges:
            low, high, step = int_ranges[spec.name]
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=step)]
        if spec.name in float_ranges:
            low, high = float_ranges[spec.name]
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        node.declare_parameter(spec.name, default, descriptor)


def read_fields(node: Node, config: type, empty_hints: dict[str, str] | None = None) -> Any:
    """The dataclass ``config`` from the node's parameters of its fields' names (lists as
    tuples), unchecked.

    Raises:
        ValueError: a parameter given without a value type (``-p cameras:=[]``: ROS 2 cannot
            type an empty list, so the parameter ends up unset), naming it and what to do
            (``empty_hints`` by name, else "give a value or leave it unset").
    """
    values = {}
    for spec in fields(config):
        try:
            value = node.get_parameter(spec.name).value
        except ParameterUninitializedException:
            hint = (empty_hints or {}).get(spec.name, "give a value or leave it unset")
            raise ValueError(
                f"parameter '{spec.name}' has no value: an empty list ([]) has no type in ROS 2, "
                f"{hint}"
            ) from None
        values[spec.name] = tuple(value) if isinstance(value, list) else value
    return config(**values)


def declare_parameters(node: Node) -> None:
    """Declares every parameter of the perception node with its description and range."""
    declare_fields(node, NodeParameters, PARAMETER_DESCRIPTIONS, _INT_RANGES, _FLOAT_RANGES)


def read_parameters(node: Node) -> NodeParameters:
    """The perception node's parameters, unchecked (:meth:`NodeParameters.validate` checks
    them); raises ValueError as :func:`read_fields`."""
    hints = {"cameras": "so name the cameras, or leave 'cameras' unset for one camera on image"}
    return read_fields(node, NodeParameters, hints)


def check_no_unknown_parameters(
    node: Node, cameras: tuple[str, ...], shared: set[str] = frozenset()
) -> list[str]:
    """Refuses parameters given to the node (``-p``, ``--params-file``) that it does not have:
    ROS 2 silently ignores them, so a misspelt name would run with the default. Names in
    ``shared`` (given only in wildcard sections such as ``/**``, which other nodes read too) are
    not refused: they are returned, sorted, for the caller to report.

    Raises:
        ValueError: naming the first unknown parameter (and, for ``<camera>.input_transport``
            of a camera not in ``cameras``, saying so).
    """
    # rclpy keeps the overrides given on the command line and in parameter files here; it has
    # no public accessor (rclpy 7 and 9 alike).
    given = sorted(getattr(node, "_parameter_overrides", {}))
    unknown = [name for name in given if not node.has_parameter(name)]
    refused = [name for name in unknown if name not in shared]
    if not refused:
        return unknown
    name = refused[0]
    camera, _, rest = name.partition(".")
    if rest == "input_transport" and camera not in cameras:
        raise ValueError(
            f"parameter '{name}' is for camera '{camera}', which is not in 'cameras' "
            f"{list(cameras)}"
        )
    known = ", ".join(spec.name for spec in fields(NodeParameters))
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    raise ValueError(f"unknown parameter '{name}'{more}; this node's parameters: {known}")
