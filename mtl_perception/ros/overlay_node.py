"""``overlay_node``: the pictures people look at, drawn outside the perception node's frame path.

For the perception node ``perception_node`` (parameter; resolved in this node's namespace) and
each camera ``name`` of ``cameras`` it subscribes to

* the camera's input, ``<name>/image`` (or ``<name>/image/compressed``: ``input_transport``,
  ``<name>.input_transport``; the perception node's parameters, read the same way),
* ``<perception_node>/<name>/semantic`` and ``<perception_node>/<name>/detections``,

matches the three by header stamp (exactly: the perception node copies the camera frame's header
into both outputs) and publishes ``<perception_node>/<name>/semantic_color`` and
``<perception_node>/<name>/overlay`` (both rgb8, with the camera frame's header), each only while
it has subscribers. A camera's three inputs are subscribed to only while either of its pictures
has a subscriber (looked at every WATCH_PERIOD; as image_proc's nodes do): unwatched, the node
receives nothing of that camera and draws nothing; the frame is decoded only for the overlay.
The topic names are those the perception node published until it stopped drawing (issue 23), so
subscribers and the rviz config are unchanged. The unnamed default camera ("") reads ``image``
and draws ``<perception_node>/overlay``, ... (ros/cameras.py names every topic).

Matching (:class:`~mtl_perception.ros.overlay_inputs.StampMatcher`): per camera, the last
``queue_size`` camera frames and the outputs of the last ``queue_size`` stamps wait to be matched
(as message_filters' queue size); outputs arriving out of order or before their frame are matched
when the rest comes. An output that ages out of the queue unmatched (no camera frame with its
stamp: the camera topic is not the perception node's, or the perception node lags the camera by
more than ``queue_size`` frames) is counted as ``unmatched`` and logged (throttled); a camera frame
that ages out without outputs was dropped by the perception node (latest frame wins) and is only
counted.

Class names and colours come from the perception node's latched ``~/label_info`` and
``~/detection_label_info``
(:func:`~mtl_perception.ros.overlay_inputs.semantics_from_label_info`): they carry every name, and
the colours follow from the names as the perception node chose them
(:func:`~mtl_perception.data.labels.segmentation_colours`), so no checkpoint is read and no torch
is imported. Until both have arrived, matched frames are counted as ``no_label_info``.

``scale`` (0 < scale <= 1) draws both pictures at that fraction of the camera's resolution
(0.5: a quarter of the pixels, for rviz over a network): the frame is resized with area
averaging, the mask with nearest neighbour, the boxes scaled.

Bad camera frames are refused as the perception node refuses them (ros/conversions.py, the same
reasons; one throttled warning with the reason) and counted per reason; the node keeps running.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import cv2
import numpy as np
import rclpy
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    NameValidationException,
)
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.validate_topic_name import validate_topic_name
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from ..data.labels import ClassSemantics
from ..visualization import colorize, draw_overlay
from .cameras import (
    DRAWN_OUTPUTS,
    NODE_OUTPUTS,
    camera_topic,
    check_topic_names,
    input_topic,
)
from .conversions import (
    ImageRejectedError,
    check_compressed,
    check_image,
    compressed_to_rgb,
    encode_image,
    image_to_rgb,
)
from .launch_support import NODE_NAME
from .overlay_inputs import (
    Match,
    OverlayCounters,
    StampMatcher,
    detection_arrays,
    mask_array,
    semantics_from_label_info,
    stamp_of,
)
from .parameter_files import override_sources
from .parameters import (
    TRANSPORTS,
    CameraParameters,
    NodeParameters,
    check_camera_names,
    declare_fields,
    read_cameras,
    read_fields,
)
from .ros_start import help_requested, init_ros, node_command_line, rcl_reason, usage

OVERLAY_NODE_NAME = "overlay_node"
EXIT_BAD_INPUT = 2  # a refused parameter or parameter file (as perception_node)
LATCHED = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
PICTURE_QOS = QoSProfile(  # as perception_node published them
    depth=2, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
)
WARNING_PERIOD = 1.0  # seconds between two warnings of one kind
WATCH_PERIOD = 0.2  # seconds between two looks at whether the pictures have subscribers


@dataclass(frozen=True)
class OverlayParameters:
    """The overlay node's parameters (defaults: the perception node's where they share a name)."""

    perception_node: str = NODE_NAME
    cameras: tuple[str, ...] = NodeParameters.cameras
    input_transport: str = NodeParameters.input_transport
    qos_reliability: str = NodeParameters.qos_reliability
    max_pixels: int = NodeParameters.max_pixels
    scale: float = 1.0
    queue_size: int = 10

    def validate(self) -> None:
        """Raises ValueError naming the parameter and the allowed values."""
        try:
            validate_topic_name(self.perception_node)
        except Exception as error:  # rclpy's InvalidTopicNameException
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(
                f"parameter 'perception_node' must be the perception node's name (a topic "
                f"name, relative to this node's namespace), got '{self.perception_node}': "
                f"{reason}"
            ) from None
        if self.input_transport not in TRANSPORTS:
            raise ValueError(
                f"parameter 'input_transport' must be one of {TRANSPORTS}, got "
                f"'{self.input_transport}'"
            )
        if self.qos_reliability not in ("best_effort", "reliable"):
            raise ValueError(
                "parameter 'qos_reliability' must be one of ('best_effort', 'reliable'), got "
                f"'{self.qos_reliability}'"
            )
        check_camera_names(self.cameras)
        if not 0.0 < self.scale <= 1.0:
            raise ValueError(
                f"parameter 'scale' must be more than 0 and at most 1, got {self.scale}"
            )


_DESCRIPTIONS = {
    "perception_node": "the perception node's name (relative to this node's namespace): its "
    "<name>/semantic and <name>/detections are drawn, as <name>/overlay and <name>/semantic_color",
    "cameras": "the perception node's cameras ([''] : one camera on image)",
    "input_transport": "raw (image) or compressed (image/compressed), as the perception node's",
    "qos_reliability": "camera subscription reliability: best_effort or reliable",
    "max_pixels": "camera frames with more pixels are refused",
    "scale": "the pictures' size as a fraction of the camera's (0 < scale <= 1)",
    "queue_size": "camera frames (and output stamps) kept per camera for matching by stamp",
}
_FLOAT_RANGES = {"scale": (0.0, 1.0)}  # 0 is refused by validate
_INT_RANGES = {"queue_size": (1, 1000, 1), "max_pixels": (1, 2**31 - 1, 1)}


def scaled(
    rgb: np.ndarray | None, mask: np.ndarray, boxes: np.ndarray, scale: float
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(H, W, 3) frame (or None), (H, W) mask and (N, 4) xyxy boxes at ``scale`` of their size:
    round(W x scale) x round(H x scale) pixels (at least 1), the frame area-averaged, the mask
    nearest-neighbour, the boxes multiplied by the two axes' ratios."""
    height, width = mask.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2's (w, h)
    if size == (width, height):
        return rgb, mask, boxes
    if rgb is not None:
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    ratios = np.array([size[0] / width, size[1] / height] * 2)
    return rgb, mask, boxes * ratios


@dataclass
class OverlayCamera:
    """One camera's publishers, subscriptions (while watched), queue and counters."""

    config: CameraParameters
    counters: OverlayCounters
    matcher: StampMatcher
    publishers: dict[str, Any] = field(default_factory=dict)  # semantic_color, overlay
    subscriptions: list[Any] = field(default_factory=list)  # frames, semantic, detections
    input: str = ""  # resolved input topic (for log lines)

    @property
    def watched(self) -> bool:
        """Whether either picture has a subscriber."""
        return any(p.get_subscription_count() > 0 for p in self.publishers.values())


class OverlayNode(Node):
    """See the module docstring.

    Args:
        name: the node's name (``__node:=`` remaps it).
        arguments: the node's command line (default ``sys.argv``), for telling parameters
            addressed to it from those of shared (``/**``) parameter file sections.
        kwargs: passed to :class:`rclpy.node.Node` (``context``, ``parameter_overrides``, ...).

    Raises:
        ValueError: a refused parameter (one line naming it).
    """

    def __init__(
        self,
        name: str = OVERLAY_NODE_NAME,
        arguments: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        command_line = node_command_line(arguments, kwargs)
        self._declare()
        self.params = self._read()
        check_camera_names(self.params.cameras)  # before their parameters are declared
        cameras = read_cameras(self, self.params)
        self._refuse_unknown(command_line)
        self.params.validate()
        node = self.params.perception_node

        def under_perception_node(topic: str) -> str:
            return self.resolve_topic_name(
                f"{node}/{topic[2:]}" if topic.startswith("~/") else topic
            )

        check_topic_names(cameras, under_perception_node)
        self.semantics: ClassSemantics | None = None
        self._label_infos: dict[str, LabelInfo] = {}
        for topic in NODE_OUTPUTS:  # ~/label_info, ~/detection_label_info
            kind = topic.removeprefix("~/")
            self.create_subscription(
                LabelInfo,
                f"{node}/{kind}",
                lambda msg, kind=kind: self._on_label_info(kind, msg),
                LATCHED,
            )
        reliability = (
            ReliabilityPolicy.BEST_EFFORT
            if self.params.qos_reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE
        )
        self._frames_qos = QoSProfile(
            depth=self.params.queue_size, history=HistoryPolicy.KEEP_LAST, reliability=reliability
        )
        self._outputs_qos = QoSProfile(
            depth=self.params.queue_size,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE,
        )
        self.cameras: list[OverlayCamera] = []
        for config in cameras:
            counters = OverlayCounters()
            camera = OverlayCamera(config, counters, StampMatcher(self.params.queue_size, counters))
            camera.input = self.resolve_topic_name(input_topic(config.name, config.input_transport))
            camera.publishers = {
                picture: self.create_publisher(
                    Image, f"{node}/{camera_topic(config.name, picture)}", PICTURE_QOS
                )
                for picture in DRAWN_OUTPUTS
            }
            self.cameras.append(camera)
        self._watch_timer = self.create_timer(WATCH_PERIOD, self._follow_watchers)
        drawn = ", ".join(camera.publishers["overlay"].topic_name for camera in self.cameras)
        self.get_logger().info(
            f"drawing {drawn} (and semantic_color) at scale {self.params.scale} while subscribed"
        )

    def _follow_watchers(self) -> None:
        """Timer: subscribes to a camera's frame and outputs while either of its pictures has a
        subscriber, and unsubscribes (forgetting what waited) when neither has: unwatched, the
        node does not even receive the camera's frames (as image_proc's nodes)."""
        for camera in self.cameras:
            watched = camera.watched
            if watched and not camera.subscriptions:
                self._subscribe(camera)
            elif not watched and camera.subscriptions:
                for subscription in camera.subscriptions:
                    self.destroy_subscription(subscription)
                camera.subscriptions = []
                camera.matcher = StampMatcher(self.params.queue_size, camera.counters)

    def _subscribe(self, camera: OverlayCamera) -> None:
        config, node = camera.config, self.params.perception_node
        transport = config.input_transport
        camera.subscriptions.append(
            self.create_subscription(
                CompressedImage if transport == "compressed" else Image,
                input_topic(config.name, transport),
                lambda msg: self._on_frame(camera, msg),
                self._frames_qos,
            )
        )
        for output, kind in (("semantic", Image), ("detections", Detection2DArray)):
            camera.subscriptions.append(
                self.create_subscription(
                    kind,
                    f"{node}/{camera_topic(config.name, output)}",
                    lambda msg, output=output: self._on_output(camera, output, msg),
                    self._outputs_qos,
                )
            )

    # -- parameters ---------------------------------------------------------------------------

    def _declare(self) -> None:
        declare_fields(self, OverlayParameters, _DESCRIPTIONS, _INT_RANGES, _FLOAT_RANGES)

    def _read(self) -> OverlayParameters:
        return read_fields(self, OverlayParameters)

    def _refuse_unknown(self, command_line: list[str]) -> None:
        """Refuses parameters addressed to this node (``-p``, a section naming it) that it does
        not have; those of shared sections (``/**``: the perception node's file) are ignored."""
        given = sorted(getattr(self, "_parameter_overrides", {}))  # no public accessor
        shared = override_sources(command_line, self.get_fully_qualified_name()).shared
        refused = [n for n in given if not self.has_parameter(n) and n not in shared]
        if refused:
            known = ", ".join(spec.name for spec in fields(OverlayParameters))
            raise ValueError(
                f"unknown parameter '{refused[0]}'; this node's parameters: {known} and "
                "<camera>.input_transport"
            )

    # -- callbacks ----------------------------------------------------------------------------

    def _on_label_info(self, kind: str, msg: LabelInfo) -> None:
        self._label_infos[kind] = msg
        if len(self._label_infos) < len(NODE_OUTPUTS):
            return
        try:
            self.semantics = semantics_from_label_info(
                self._label_infos["label_info"], self._label_infos["detection_label_info"]
            )
        except ValueError as error:
            self.semantics = None
            self.get_logger().error(f"cannot draw with the perception node's label infos: {error}")

    def _on_frame(self, camera: OverlayCamera, msg: Image | CompressedImage) -> None:
        """Checks a camera frame (O(1): geometry, or the compressed header) and queues it."""
        try:
            if isinstance(msg, CompressedImage):
                declared = check_compressed(msg, self.params.max_pixels)
                size = (declared.height, declared.width)
            else:
                check_image(msg, self.params.max_pixels)
                size = (msg.height, msg.width)
        except ImageRejectedError as error:
            self._reject(camera, error)
            return
        match = camera.matcher.add_frame(stamp_of(msg), msg, size)
        if match is not None:
            self._draw_safely(camera, match)

    def _on_output(self, camera: OverlayCamera, output: str, msg: Any) -> None:
        match, aged = camera.matcher.add_output(stamp_of(msg), output, msg)
        if aged:
            self.get_logger().warning(
                f"{aged} output(s) of the perception node for {camera.input} had no camera frame "
                f"of their stamp among the last {self.params.queue_size}: not drawn (is "
                f"{camera.input} the perception node's camera? raise queue_size if the "
                "perception node lags the camera by more frames)",
                throttle_duration_sec=WARNING_PERIOD,
            )
        if match is not None:
            self._draw_safely(camera, match)

    def _reject(self, camera: OverlayCamera, error: ImageRejectedError) -> None:
        rejected = camera.counters.rejected
        rejected[error.reason] = rejected.get(error.reason, 0) + 1
        self.get_logger().warning(
            f"rejected frame on {camera.input} ({error.reason}): {error}",
            throttle_duration_sec=WARNING_PERIOD,
        )

    # -- drawing ------------------------------------------------------------------------------

    def _draw_safely(self, camera: OverlayCamera, match: Match) -> None:
        """:meth:`_draw`; an unexpected error (a bug, publishing at shutdown) costs this frame
        only: counted as failed and logged, and the node goes on."""
        try:
            self._draw(camera, match)
        except Exception as error:
            if not self.context.ok():
                return  # shutting down
            camera.counters.failed += 1
            self.get_logger().error(
                f"drawing failed, frame lost on {camera.input}: {type(error).__name__}: {error}",
                throttle_duration_sec=WARNING_PERIOD,
            )

    def _draw(self, camera: OverlayCamera, match: Match) -> None:
        """Publishes the match's colour mask and overlay, each only if subscribed."""
        colour_publisher = camera.publishers["semantic_color"]
        overlay_publisher = camera.publishers["overlay"]
        want_colour = colour_publisher.get_subscription_count() > 0
        want_overlay = overlay_publisher.get_subscription_count() > 0
        if not (want_colour or want_overlay):
            camera.counters.not_watched += 1
            return
        semantics = self.semantics
        if semantics is None:
            camera.counters.no_label_info += 1
            self.get_logger().warning(
                f"no label infos yet from {self.params.perception_node}: frames not drawn",
                throttle_duration_sec=WARNING_PERIOD,
            )
            return
        try:
            mask = mask_array(match.semantic)
            boxes, classes, scores = detection_arrays(match.detections)
            if mask.shape != match.size:
                raise ValueError(
                    f"mask {mask.shape[1]}x{mask.shape[0]} for a frame of "
                    f"{match.size[1]}x{match.size[0]}"
                )
        except ValueError as error:
            camera.counters.bad_outputs += 1
            self.get_logger().warning(
                f"cannot draw the perception node's outputs for {camera.input}: {error}",
                throttle_duration_sec=WARNING_PERIOD,
            )
            return
        rgb = None
        if want_overlay:  # the frame is decoded only for the overlay
            try:
                if isinstance(match.frame, CompressedImage):
                    rgb = compressed_to_rgb(match.frame, self.params.max_pixels)
                else:
                    rgb = image_to_rgb(match.frame, self.params.max_pixels)
            except ImageRejectedError as error:  # found only by decoding (e.g. size_mismatch)
                self._reject(camera, error)
                return
        rgb, mask, boxes = scaled(rgb, mask, boxes, self.params.scale)
        header = match.frame.header
        colour = colorize(mask, semantics.seg_colours)
        if want_colour:
            colour_publisher.publish(encode_image(colour, "rgb8", header))
        if want_overlay:
            picture = draw_overlay(
                rgb,
                mask,
                boxes,
                classes,
                scores,
                semantics.det_names,
                semantics.seg_colours,
                coloured_mask=colour,
            )
            overlay_publisher.publish(encode_image(picture, "rgb8", header))
        camera.counters.drawn += 1


def main(args: list[str] | None = None) -> int:
    """Runs the node until Ctrl-C (exit 0, also while it is starting); exits 2 with one
    ``error:`` line for a refused parameter, parameter file or node name."""
    arguments = list(sys.argv if args is None else args)
    if help_requested(arguments):
        summary = (
            "Draws the perception node's semantic_color and overlay images from the camera, "
            "the mask and the detections (README: The overlay node)."
        )
        print(usage("overlay_node", summary, OverlayParameters, _DESCRIPTIONS))
        return 0
    problem = init_ros(arguments)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    node = None
    try:
        node = _make_node(arguments)
        rclpy.spin(node)
    except _RefusedError as refused:
        print(f"error: {refused}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # Ctrl-C between two spins: rclpy fails to build its wait set instead of raising
        # ExternalShutdownException; a normal shutdown.
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


class _RefusedError(Exception):
    """A parameter or name the node refused: the one line main prints."""


def _make_node(arguments: list[str]) -> OverlayNode:
    """The node of ``arguments``' command line.

    Raises:
        _RefusedError: a parameter or name it refuses (its reason in one line).
    """
    try:
        with warnings.catch_warnings():  # rclpy's note on a half-made node
            warnings.filterwarnings("ignore", "Failed to fini rosout publisher", RuntimeWarning)
            return OverlayNode(arguments=arguments)
    except ValueError as error:  # ours
        raise _RefusedError(" ".join(str(error).split())) from None
    except (
        InvalidParameterValueException,
        InvalidParameterTypeException,
        NameValidationException,
        _rclpy.RCLError,
    ) as error:
        raise _RefusedError(rcl_reason(error)) from None


if __name__ == "__main__":
    sys.exit(main())
