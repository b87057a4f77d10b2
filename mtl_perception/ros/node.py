"""``perception_node``: camera images in; semantic mask and detections out.

A managed lifecycle node and a thin shell around the Predictor:

* configure: read and validate parameters, load the model (a bad value or checkpoint fails the
  transition with a message);
* activate: publishers, the input subscriptions, the inference thread, diagnostics;
* deactivate: all of those released, GPU memory freed; cleanup: the model unloaded.

``autostart`` (default true) configures and activates at start, so ``ros2 run`` just works. A
transition that raises (rclpy would swallow the exception and fall back to unconfigured without
a word) is logged in one line with its reason (the traceback at DEBUG), everything it had set up
is released, and a plain run exits non-zero: 2 when configure refuses a parameter or checkpoint,
3 for any exception in any transition.

Several cameras, one network (``cameras``; topics in ros/cameras.py): each camera has its own
input, outputs, latest-frame slot and counters; LabelInfo is the node's.

Latest frame wins: a camera's subscription callback checks the frame's geometry (raw) or header
(compressed: format and declared size, nothing decoded) and parks a frame that passes in the
camera's one-frame slot (a frame that was still waiting is replaced and counted as dropped); a
frame that fails is counted as rejected there and never displaces a waiting one. The inference
thread takes the waiting frames of up to ``max_batch`` cameras, those that have waited longest
first (no camera starves), converts or decodes each, runs the model once over all of them (any
mix of sizes) and publishes each result with its own frame's header. Latency therefore never
grows with the input rate.

Every frame is accounted for, per camera: once idle, received = processed + dropped + rejected;
frames still in a subscription's reader queue at deactivate are taken and checked as on arrival:
rejected (with their reason) if they fail, else counted as dropped.
A camera with no frame for ``stale_timeout_s`` goes WARN in /diagnostics, saying for how long.
Rejections
are counted per reason (``rejected_<reason>`` in /diagnostics) and logged per reason: the first
occurrence of each reason always, then at most once per REJECTION_LOG_PERIOD seconds each.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    NameValidationException,
)
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from ..data.labels import class_semantics
from ..inference.device_names import standin_device
from ..inference.fallback import FallbackPredictor
from ..inference.predictor import Prediction, PredictorConfig, default_fast_path
from ..inference.standin import STANDIN_WARNING, standin_factory
from .cameras import PERCEPTION_OUTPUTS, Camera, check_topic_names, input_topic, output_topic
from .conversions import (
    CONVERTER,
    REJECTION_REASONS,
    ImageRejectedError,
    check_compressed,
    check_image,
    compressed_to_rgb,
    image_to_rgb,
)
from .frame_intake import FrameIntake, RawSubscription, TakenFrame
from .frame_slot import CameraSlots, FrameCounters, LatestFrameSlot
from .messages import (
    diagnostic_status,
    diagnostics_message,
    frame_statistics,
    label_info_message,
)
from .parameter_files import override_sources
from .parameters import (
    PARAMETER_DESCRIPTIONS,
    NodeParameters,
    check_camera_names,
    check_no_unknown_parameters,
    declare_parameters,
    read_cameras,
    read_parameters,
)
from .raw_messages import (
    RawCompressedImage,
    RawHeader,
    RawImage,
    detections_bytes,
    image_bytes,
    read_compressed_image,
    read_image,
)
from .ros_start import help_requested, init_ros, node_command_line, rcl_reason, usage

LATCHED = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
OUTPUT_QOS = QoSProfile(
    depth=2, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
)
REJECTION_LOG_PERIOD = 1.0  # seconds between two warnings for the same rejection reason
INTERNAL_ERROR = "internal_error"  # a frame check that raised something else (a bug): rejected
EXIT_BAD_INPUT = 2  # a refused parameter, parameter file or checkpoint
EXIT_UNEXPECTED = 3  # an exception in a lifecycle transition
TAKE_WAIT_S = 0.5  # the inference thread's longest wait for a frame before it looks again

# A camera frame: read from its CDR bytes (the node's own path), or an rclpy message (in-process)
Frame = RawImage | RawCompressedImage | Image | CompressedImage


@dataclass
class InFlight:
    """A batch submitted to the model whose results are not collected yet: each frame's camera,
    message and ``time.monotonic()`` of its arrival, and the Predictor's pending result."""

    frames: list[tuple[Camera, Frame, float]]
    pending: Any


def predictor_config(params: NodeParameters, device: str) -> PredictorConfig:
    """The Predictor's config for the node's parameters on ``device`` ("cpu" or "cuda[:N]"):
    every field the two share by name is taken from the parameters (one default for each, the
    node's), then the device decides what ``auto`` and the CUDA-only options mean:

    - ``precision: auto``: the fastest path measured on that device (fp16 on CUDA, fp32 on
      the CPU; :func:`default_fast_path`), fp32 (no autocast) for an ONNX model;
    - ``cuda_graph`` applies on CUDA with the torch backend and compile none, and is ignored
      elsewhere (compile reduce-overhead is the compiler's own CUDA-graph path);
    - ``preallocate`` (pinned staging buffers) applies on CUDA: on the CPU the buffer only adds a
      copy of each frame.
    """
    shared = {spec.name for spec in fields(PredictorConfig)} & {
        spec.name for spec in fields(NodeParameters)
    }
    values: dict[str, Any] = {name: getattr(params, name) for name in shared - {"device"}}
    cuda = device.startswith("cuda")
    if params.precision == "auto":  # an ONNX model runs in the precision it was exported in
        onnx = params.backend == "onnxruntime"
        values["precision"] = "fp32" if onnx else default_fast_path(device)["precision"]
    values["cuda_graph"] = (
        params.cuda_graph and cuda and params.backend == "torch" and params.compile == "none"
    )
    values["preallocate"] = params.preallocate and cuda
    return PredictorConfig(device=device, **values)


def raw_header(header: Header | RawHeader) -> RawHeader:
    """A frame's header as the output serialisers take it."""
    return header if isinstance(header, RawHeader) else RawHeader.from_msg(header)


OK, WARN = DiagnosticStatus.OK, DiagnosticStatus.WARN


def silence_message(topic: str, seconds: float) -> str:
    """The WARN message of a camera silent for ``seconds`` (diagnostic_updater's frequency status
    says the same of a topic with no events)."""
    return f"no frame on {topic} for {seconds:.1f} s"


def rejections_by_reason(counters: FrameCounters) -> dict[str, int]:
    """``rejected_<reason>`` for every reason the node knows (0 if none) and any other seen."""
    reasons = (*REJECTION_REASONS, INTERNAL_ERROR, *counters.rejected_by_reason)
    return {f"rejected_{r}": counters.rejected_by_reason.get(r, 0) for r in reasons}


class ReasonThrottle:
    """Log throttling per reason: the first occurrence of a reason always passes, later ones at
    most once per ``period`` seconds, each reporting how many were held back since the last.

    Thread-safe (the executor and the inference thread both reject frames).
    """

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, reason: str) -> int | None:
        """None if this occurrence is held back; else how many of ``reason`` were held back
        since the last one admitted."""
        now = self._clock()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and now - last < self.period:
                self._held[reason] = self._held.get(reason, 0) + 1
                return None
            self._last[reason] = now
            return self._held.pop(reason, 0)


def logged_transition(method: Callable) -> Callable:
    """Wraps a lifecycle callback so that an exception in it is not swallowed by rclpy: it is
    logged in one line with its type and reason (the traceback at DEBUG), handed to
    :meth:`PerceptionNode._transition_raised`, and the transition returns ERROR (rclpy then calls
    ``on_error``)."""

    @functools.wraps(method)
    def run(self: PerceptionNode, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return method(self, state)
        except Exception as error:
            transition = method.__name__.removeprefix("on_")
            reason = " ".join(str(error).split()) or "(no message)"
            self.get_logger().debug(traceback.format_exc())
            self._transition_raised(f"{transition} failed: {type(error).__name__}: {reason}")
            return TransitionCallbackReturn.ERROR

    return run


class PerceptionNode(LifecycleNode):
    """See the module docstring. Topics are relative, so namespaces and remaps apply.

    Args:
        name: the node's name (``__node:=`` remaps it).
        arguments: the command line the node's context was initialised with (default
            ``sys.argv``): its ``--params-file`` sections tell the keys meant for every node
            (``/**``) from those addressed to this one.
        kwargs: passed to :class:`LifecycleNode` (``context``, ``parameter_overrides``, ...).
    """

    def __init__(
        self,
        name: str = "perception_node",
        arguments: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self._command_line = node_command_line(arguments, kwargs)
        self._shared_keys_reported = False
        # Set (to the logged line) by the first transition that raises; a plain run exits on it.
        self.transition_error: Future = Future()
        declare_parameters(self)
        self.declare_parameter("autostart", True)
        self.params: NodeParameters | None = None
        self.predictor: FallbackPredictor | None = None
        self._counter_lock = threading.Lock()  # every camera's counters, latencies, batch sizes
        self._cameras: list[Camera] = []  # from the cameras parameter, at configure
        self._slots = CameraSlots(0)
        self.max_batch = 1
        self._batch_sizes: dict[int, int] = {}  # frames per forward pass -> passes
        self._rejection_log = ReasonThrottle(REJECTION_LOG_PERIOD)
        self._worker: threading.Thread | None = None
        self._intake: FrameIntake | None = None
        self._last_diagnostics = (time.monotonic(), 0, 0)
        self._outputs: dict[str, Any] = {}  # the node's own: label infos, diagnostics
        self._diagnostics_timer = None
        self.device = "cpu"

    @property
    def counters(self) -> FrameCounters:
        """The node's totals over all cameras (a snapshot)."""
        total = FrameCounters()
        with self._counter_lock:
            for camera in self._cameras:
                total.add(camera.counters)
        return total

    @property
    def _slot(self) -> LatestFrameSlot:
        """The first camera's slot (the only one with the default single camera)."""
        return self._slots[0]

    # -- lifecycle ------------------------------------------------------------------------

    def _transition_raised(self, line: str) -> None:
        """Logs a transition's exception (one line) and records the first one."""
        self.get_logger().error(line)
        if not self.transition_error.done():
            self.transition_error.set_result(line)

    def _report_shared_keys(self, cameras: tuple[str, ...]) -> None:
        """Refuses unknown parameters addressed to this node; names, once, at WARN, those it got
        only from wildcard sections (``/**``) of a parameter file shared with other nodes."""
        sources = override_sources(self._command_line, self.get_fully_qualified_name())
        ignored = check_no_unknown_parameters(self, cameras, sources.shared)
        if ignored and not self._shared_keys_reported:
            self._shared_keys_reported = True
            self.get_logger().warning(
                f"ignoring {len(ignored)} parameter(s) of a shared section (/**) that this node "
                f"does not have: {', '.join(ignored)}"
            )

    @logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = read_parameters(self)
            check_camera_names(params.cameras)  # before their parameters are declared
            cameras = read_cameras(self, params)
            self._report_shared_keys(params.cameras)
            params.validate()
            check_topic_names(cameras, self.resolve_topic_name)
            import torch

            device = params.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            standin = standin_device(device)  # benchmarks only: no network runs
            config = predictor_config(params, standin or device)
            # A fast path that fails to set up or on its first frame falls back to a simpler
            # one (logged, and named in the diagnostics) instead of failing the node.
            log = self.get_logger().warning
            if standin:
                log(STANDIN_WARNING)
                self.predictor = FallbackPredictor(config, standin_factory(params.checkpoint), log)
            elif params.backend == "onnxruntime":
                self.predictor = FallbackPredictor.from_onnx(params.onnx_model, config, log)
            else:
                self.predictor = FallbackPredictor.from_checkpoint(params.checkpoint, config, log)
        except (ValueError, FileNotFoundError, RuntimeError) as error:
            self.get_logger().error(f"configure failed: {error}")
            self.predictor = None
            return TransitionCallbackReturn.FAILURE
        self.params, self.device = params, device
        self._cameras = [Camera(camera) for camera in cameras]
        self._slots = CameraSlots(len(cameras))
        self._batch_sizes = {}
        # Batching pays on a GPU; on the CPU batches measured no faster per image and every
        # camera waited for the whole batch (docs/benchmarks.md, multi-camera).
        automatic = len(cameras) if device.startswith("cuda") else 1
        self.max_batch = min(params.max_batch or automatic, len(cameras))
        model = self.predictor.model_config
        self.get_logger().info(
            f"loaded {params.checkpoint or params.onnx_model} on {device} "
            f"({self.predictor.active_path}), input {params.input_width}x{params.input_height}, "
            f"{model.num_seg_classes} segmentation / {model.num_det_classes} detection classes, "
            f"image conversion via {CONVERTER}; {len(cameras)} camera(s), batches of up to "
            f"{self.max_batch}"
        )
        return TransitionCallbackReturn.SUCCESS

    @logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = self.params
        self._outputs = {
            "label_info": self.create_publisher(LabelInfo, "~/label_info", LATCHED),
            "detection_label_info": self.create_publisher(
                LabelInfo, "~/detection_label_info", LATCHED
            ),
            "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", 10),
        }
        kinds = {"detections": Detection2DArray}
        for camera in self._cameras:
            camera.outputs = {
                output: self.create_publisher(
                    kinds.get(output, Image), output_topic(camera.name, output), OUTPUT_QOS
                )
                for output in PERCEPTION_OUTPUTS
            }
        self._publish_label_info()
        reliability = (
            ReliabilityPolicy.BEST_EFFORT
            if params.qos_reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE
        )
        qos = QoSProfile(
            depth=params.qos_depth, history=HistoryPolicy.KEEP_LAST, reliability=reliability
        )
        for camera in self._cameras:
            transport = camera.config.input_transport
            camera.subscription = RawSubscription(
                self,
                CompressedImage if transport == "compressed" else Image,
                input_topic(camera.name, transport),
                qos,
            )
        self._intake = FrameIntake(self, [camera.subscription for camera in self._cameras])
        self._slots.reopen()
        self._worker = threading.Thread(target=self._inference_loop, name="inference", daemon=True)
        self._worker.start()
        now = time.monotonic()
        totals = self.counters
        self._last_diagnostics = (now, totals.received, totals.processed)
        with self._counter_lock:
            for camera in self._cameras:
                camera.last_diagnostics = (now, camera.counters.received, camera.counters.processed)
                camera.last_frame_at = now  # silent since activation until its first frame
        self._diagnostics_timer = self.create_timer(
            params.diagnostics_period, self._publish_diagnostics
        )
        topics = ", ".join(camera.topic for camera in self._cameras)
        self.get_logger().info(f"active: listening on {topics}")
        return super().on_activate(state)

    @logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_io()
        self.get_logger().info("inactive: subscriptions and publishers released")
        return super().on_deactivate(state)

    @logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_io()
        self.predictor = None
        self._free_gpu_memory()
        return TransitionCallbackReturn.SUCCESS

    @logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_io()
        self.predictor = None
        return TransitionCallbackReturn.SUCCESS

    @logged_transition
    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """After a transition raised: release whatever it had set up and unload the model, so the
        node is back to unconfigured with nothing half-built."""
        self._release_io()
        self.predictor = None
        self.params = None
        self._free_gpu_memory()
        self.get_logger().info("recovered from the error: unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def _release_io(self) -> None:
        """Every camera's subscription and publishers, the inference thread, the timer and the
        node's publishers. Frames waiting in the slots, or still in a subscription's reader (a
        deep reliable queue), are counted as dropped (or rejected, if they fail the arrival
        checks), not lost; a batch already in the model is finished and published first."""
        discarded = self._slots.close()  # the inference thread takes no new batch from here on
        with self._counter_lock:
            for camera, dropped in zip(self._cameras, discarded, strict=True):
                camera.counters.dropped += dropped
        if self._intake is not None:
            self._intake.wake()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        if self._intake is not None:
            for index, camera in enumerate(self._cameras):
                self._take_queued(camera, index)
                camera.subscription = None
            self._intake.destroy()
            self._intake = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        for camera in self._cameras:
            outputs, camera.outputs = camera.outputs, {}  # a frame still publishing sees none
            for publisher in outputs.values():
                self.destroy_publisher(publisher)
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}
        self._free_gpu_memory()

    def _take_queued(self, camera: Camera, index: int) -> None:
        """Takes every frame the middleware still holds for camera ``index`` (the inference
        thread has stopped) and checks each as on arrival: one that fails is counted received and
        rejected (with its reason), one that passes received and dropped (never processed now).
        Nothing once the context is gone (Ctrl-C): nothing can be taken then."""
        if not self.context.ok():
            return
        for frame in self._intake.take_all(index):
            msg = self._read_taken(camera, frame)
            if msg is not None and self._admit(camera, msg):
                with self._counter_lock:
                    camera.counters.received += 1
                    camera.counters.dropped += 1

    def _free_gpu_memory(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # -- frames ----------------------------------------------------------------------------

    def _read_taken(self, camera: Camera, frame: TakenFrame) -> Frame | None:
        """A taken frame's message read from its CDR bytes (a view of its pixels, nothing
        copied); the frames its publisher sent that were replaced before this one was taken are
        counted received and dropped. None (counted received and rejected, reason
        ``serialization``) when the bytes are not a readable message."""
        if frame.skipped:
            with self._counter_lock:
                camera.counters.received += frame.skipped
                camera.counters.dropped += frame.skipped
        compressed = camera.config.input_transport == "compressed"
        try:
            return read_compressed_image(frame.data) if compressed else read_image(frame.data)
        except ImageRejectedError as error:
            self._reject(camera, error.reason, str(error), received=True)
            return None

    def _on_taken(self, frame: TakenFrame) -> None:
        """Inference thread: a frame taken from camera ``frame.camera``'s subscription is read
        and handed to :meth:`_on_frame`, with the time the middleware received it."""
        camera = self._cameras[frame.camera]
        msg = self._read_taken(camera, frame)
        if msg is None:
            camera.last_frame_at = time.monotonic()
            return
        received_at = time.monotonic()
        if frame.received_ns:  # the reader's wait counts in the latency
            waited = max(0.0, (time.time_ns() - frame.received_ns) / 1e9)
            received_at -= min(waited, 60.0)  # a peer with a wrong clock cannot skew it much
        self._on_frame(msg, frame.camera, received_at)

    def _on_frame(self, msg: Frame, camera: int = 0, received_at: float | None = None) -> None:
        """Checks a frame of camera number ``camera`` (O(1): geometry, or the compressed header)
        and parks it in that camera's slot (a frame still waiting there is replaced and counted
        as dropped); a frame that fails the check is rejected here and never displaces a waiting
        one. ``msg`` is read from CDR bytes (raw_messages) or an rclpy message (in-process use)."""
        now = time.monotonic()
        state = self._cameras[camera]
        state.last_frame_at = now  # read by the diagnostics timer (one float store)
        if not self._admit(state, msg):
            return
        dropped = self._slots[camera].put((msg, now if received_at is None else received_at))
        with self._counter_lock:
            state.counters.received += 1
            if dropped:
                state.counters.dropped += 1
        if self._intake is not None and threading.current_thread() is not self._worker:
            self._intake.wake()  # a frame handed in from another thread: take it now

    def _admit(self, camera: Camera, msg: Frame) -> bool:
        """The arrival checks (O(1): geometry, or the compressed header): True if ``msg`` passes;
        else it is counted as received and rejected (with its reason) and logged."""
        try:
            if isinstance(msg, (CompressedImage, RawCompressedImage)):
                check_compressed(msg, self.params.max_pixels)
            else:
                check_image(msg, self.params.max_pixels)
        except ImageRejectedError as error:
            self._reject(camera, error.reason, str(error), received=True)
            return False
        except Exception as error:  # a bug in a check must not take the node down
            problem = f"{type(error).__name__}: {error}"
            self._reject(camera, INTERNAL_ERROR, problem, received=True)
            return False
        return True

    def _reject(self, camera: Camera, reason: str, problem: str, received: bool = False) -> None:
        """Counts a rejected frame of ``camera`` (and, from the callback, its arrival) and logs
        it, throttled per reason."""
        with self._counter_lock:
            camera.counters.received += received
            camera.counters.reject(reason)
        held = self._rejection_log.admit(reason)
        if held is None:
            return
        note = f" ({held} more '{reason}' rejections since the last report)" if held else ""
        line = f"rejected frame on {camera.topic} ({reason}): {problem}{note}"
        if reason == INTERNAL_ERROR:
            self.get_logger().error(line)
        else:
            self.get_logger().warning(line)

    def _inference_loop(self) -> None:
        """Takes the newest frame of every camera that has one when the model can use it, runs
        the waiting frames of up to ``max_batch`` cameras (longest-waiting first) through the
        network in one forward pass and publishes each camera's results.

        Pipelined on CUDA: batch k+1 is submitted to the device before batch k's results are
        collected and published, so the host's publishing overlaps the device's work. With a
        batch in flight the loop does not wait for frames: it collects that batch at once when
        none is waiting. On the CPU the model runs at submission, so a batch's results are
        published before the next is submitted (else each would wait for the next one's forward
        pass). Each camera's frames are answered in the order they were taken."""
        overlap = (standin_device(self.device) or self.device).startswith("cuda")
        in_flight: InFlight | None = None
        while self.context.ok():
            closing = self._slots.closed
            if not closing:
                wait = 0.0 if in_flight is not None else TAKE_WAIT_S
                for frame in self._intake.take_ready(wait):
                    self._on_taken(frame)
            if in_flight is not None and not overlap:
                if not self._collect(in_flight):
                    return  # shutting down (Ctrl-C): the context went away while publishing
                in_flight = None
            batch = self._slots.take_batch(self.max_batch, timeout=0)
            submitted = self._submit(batch) if batch else None
            if in_flight is not None and not self._collect(in_flight):
                return
            in_flight = submitted
            if closing and in_flight is None:
                return

    def _failed(self, camera: Camera, what: str, error: Exception) -> None:
        """One frame of ``camera`` lost to a failure (the model, publishing, a bug): counted as
        failed and dropped, logged; the node and the other cameras go on."""
        with self._counter_lock:
            camera.counters.failed += 1
            camera.counters.dropped += 1
        self.get_logger().error(
            f"{what} failed, frame dropped on {camera.topic}: {type(error).__name__}: {error}",
            throttle_duration_sec=1.0,
        )

    def _model_failed(self, frames: list[tuple[Camera, Frame, float]], error: Exception) -> None:
        """A forward pass that raised (CUDA OOM, NaN, anything): its frames are dropped, the node
        keeps running."""
        with self._counter_lock:
            for camera, *_ in frames:
                camera.counters.failed += 1
                camera.counters.dropped += 1
        self.get_logger().error(
            f"inference failed, frame dropped on "
            f"{', '.join(camera.topic for camera, *_ in frames)}: {error}",
            throttle_duration_sec=1.0,
        )
        self._free_gpu_memory()

    def _network_input(self, camera: Camera, msg: Frame) -> tuple[np.ndarray, bool] | None:
        """A frame as the network's input: (H, W, 3) uint8 and whether its channels are BGR.
        rgb8 and bgr8 rows without padding are a view of the message's pixels (the channel
        order is swapped on the device); other encodings are converted on the host. None (the
        frame counted) when it fails, e.g. a JPEG whose decoded size differs from its header."""
        params = self.params
        try:
            if isinstance(msg, (CompressedImage, RawCompressedImage)):
                return compressed_to_rgb(msg, params.max_pixels), False
            if msg.encoding in ("rgb8", "bgr8") and msg.step == msg.width * 3:
                pixels = np.frombuffer(msg.data, np.uint8, msg.step * msg.height)
                return pixels.reshape(msg.height, msg.width, 3), msg.encoding == "bgr8"
            return image_to_rgb(msg, params.max_pixels), False
        except ImageRejectedError as error:  # found only by decoding (e.g. size_mismatch)
            self._reject(camera, error.reason, str(error))
        except Exception as error:  # a bug in a conversion: this frame only
            self._failed(camera, "processing", error)
        return None

    def _submit(self, batch: list[tuple[int, tuple[Frame, float]]]) -> InFlight | None:
        """Hands each camera's frame to the network in one forward pass, without waiting for
        its results; None when no frame of the batch could be converted or the model raised."""
        frames, images, bgr = [], [], []
        for index, (msg, received_at) in batch:
            camera = self._cameras[index]
            converted = self._network_input(camera, msg)
            if converted is None:
                continue
            frames.append((camera, msg, received_at))
            images.append(converted[0])
            bgr.append(converted[1])
        if not frames:
            return None
        with self._counter_lock:
            self._batch_sizes[len(frames)] = self._batch_sizes.get(len(frames), 0) + 1
        try:
            pending = self.predictor.submit(images, bgr=bgr)
        except Exception as error:
            self._model_failed(frames, error)
            return None
        return InFlight(frames, pending)

    def _collect(self, in_flight: InFlight) -> bool:
        """Waits for a submitted batch's results and publishes each with its own frame's header.
        A frame that fails costs only its own camera that frame. False once the ROS context is
        gone."""
        try:
            predictions = in_flight.pending.result()
        except Exception as error:
            self._model_failed(in_flight.frames, error)
            return True
        for (camera, msg, received_at), prediction in zip(
            in_flight.frames, predictions, strict=True
        ):
            try:
                self._publish(camera, raw_header(msg.header), prediction)
            except Exception as error:  # publishing, or a bug: this frame is lost, not the node
                if not self.context.ok():
                    return False
                self._failed(camera, "processing", error)
                continue
            with self._counter_lock:
                camera.counters.processed += 1
                camera.latencies.append(time.monotonic() - received_at)
        return True

    def _publish(self, camera: Camera, header: RawHeader, prediction: Prediction) -> None:
        """Publishes one frame's mask and detections, each serialised straight from the arrays
        (no message objects) and only while it has subscribers. Overlay and colour images are
        the overlay node's (ros/overlay_node.py): drawing them here cost this node's frame path
        20-40 ms per 2048x1024 frame (docs/benchmarks.md)."""
        publishers = camera.outputs
        if not publishers:
            return  # deactivated while this frame was in the model
        semantic, detections = publishers["semantic"], publishers["detections"]
        if semantic.get_subscription_count():
            # The network never predicts void, so the mask needs no void -> UNLABELED pass.
            semantic.publish(image_bytes(header, prediction.mask, "mono8"))
        if detections.get_subscription_count():
            detections.publish(
                detections_bytes(header, prediction.boxes, prediction.scores, prediction.classes)
            )

    def _publish_label_info(self) -> None:
        semantics = class_semantics(self.predictor.model_config)
        header = Header(frame_id="")
        header.stamp = self.get_clock().now().to_msg()
        self._outputs["label_info"].publish(
            label_info_message(header, semantics.seg_names, skip=semantics.void_id)
        )
        self._outputs["detection_label_info"].publish(
            label_info_message(header, semantics.det_names, threshold=self.params.score_threshold)
        )

    def _publish_diagnostics(self) -> None:
        """One DiagnosticArray: the node's status (totals over all cameras, the batch size
        histogram ``batch_size_<n>`` = forward passes over n frames, device and fast path) first,
        then, with named cameras, one status per camera (``<node>: camera <name>``)."""
        now = time.monotonic()
        with self._counter_lock:
            cameras = [
                (camera, camera.counters.copy(), np.array(camera.latencies) * 1e3)
                for camera in self._cameras
            ]
            batch_sizes = dict(sorted(self._batch_sizes.items()))
        counters = FrameCounters()
        for _, camera_counters, _ in cameras:
            counters.add(camera_counters)
        latencies = np.concatenate([[], *(latency for _, _, latency in cameras)])
        silences = {camera.name: now - camera.last_frame_at for camera, _, _ in cameras}
        stale = {
            camera.topic: silences[camera.name]
            for camera, _, _ in cameras
            if silences[camera.name] > self.params.stale_timeout_s
        }
        statuses = []
        for camera, camera_counters, latency in cameras if self.params.cameras != ("",) else ():
            then, camera.last_diagnostics = (
                camera.last_diagnostics,
                (
                    now,
                    camera_counters.received,
                    camera_counters.processed,
                ),
            )
            silent = camera.topic in stale
            statuses.append(
                diagnostic_status(
                    f"{self.get_name()}: camera {camera.name}",
                    WARN if camera_counters.failed or silent else OK,
                    silence_message(camera.topic, stale[camera.topic]) if silent else camera.topic,
                    {
                        **frame_statistics(camera_counters, latency, then, now),
                        **rejections_by_reason(camera_counters),
                        "seconds_since_last_frame": f"{silences[camera.name]:.3f}",
                        "stale_timeout_s": self.params.stale_timeout_s,
                    },
                )
            )
        then = self._last_diagnostics
        self._last_diagnostics = (now, counters.received, counters.processed)
        values = {
            **frame_statistics(counters, latencies, then, now),
            **rejections_by_reason(counters),
            "cameras": len(cameras),
            "seconds_since_last_frame": f"{min(silences.values(), default=0.0):.3f}",
            "stale_timeout_s": self.params.stale_timeout_s,
            "max_batch": self.max_batch,
            **{f"batch_size_{size}": passes for size, passes in batch_sizes.items()},
            "device": self.device,
            "precision": self.predictor.config.precision if self.predictor else "none",
            "backend": self.params.backend,
            "fast_path": self.predictor.active_path if self.predictor else "none",
            "fast_path_requested": self.predictor.requested_path if self.predictor else "none",
            "fast_path_fallbacks": " | ".join(self.predictor.fallbacks) if self.predictor else "",
        }
        problems = [silence_message(topic, seconds) for topic, seconds in stale.items()]
        if counters.failed:
            problems.insert(0, f"{counters.failed} frames failed in the model")
        level = WARN if problems else OK
        message = "; ".join(problems) or "running"
        if standin_device(self.device):  # a benchmark's node is never taken for a real one
            level, message = WARN, STANDIN_WARNING
        header = Header()
        header.stamp = self.get_clock().now().to_msg()
        publisher = self._outputs.get("diagnostics")
        if publisher is not None:
            node = diagnostic_status(f"{self.get_name()}: perception", level, message, values)
            publisher.publish(diagnostics_message(header, [node, *statuses]))


def main(args: list[str] | None = None) -> int:
    """Runs the node until Ctrl-C. With ``autostart`` it configures and activates itself, and
    exits 2 when configure refuses its parameters or checkpoint, 3 when any transition raises
    (then, or later while it runs); each with the reason logged in one line."""
    arguments = list(sys.argv if args is None else args)
    if help_requested(arguments):
        summary = "Camera images in; semantic mask and detections out (README: The ROS 2 node)."
        print(usage("perception_node", summary, NodeParameters, PARAMETER_DESCRIPTIONS))
        return 0
    problem = init_ros(arguments)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        with warnings.catch_warnings():  # rclpy's note on the half-made node of a refused name
            warnings.filterwarnings("ignore", "Failed to fini rosout publisher", RuntimeWarning)
            node = PerceptionNode(arguments=arguments)
    except (InvalidParameterValueException, InvalidParameterTypeException) as error:
        print(f"[perception_node] invalid parameter: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return EXIT_BAD_INPUT
    except NameValidationException as error:  # __node:= / __ns:= too long for its services
        lines = str(error).splitlines()  # "Invalid <what>: <why>:", "  '<name>'", "  ^"
        name = lines[1].strip().strip("'") if len(lines) > 1 else ""
        shown = f"'{name[:50]}...' ({len(name)} characters)" if len(name) > 60 else f"'{name}'"
        what, _, why = lines[0].removeprefix("Invalid ").partition(": ")
        print(
            f"error: the node's name or namespace makes an invalid {what} {shown}: "
            f"{why.rstrip(':')} (__node:=, __ns:=)",
            file=sys.stderr,
        )
        rclpy.try_shutdown()
        return EXIT_BAD_INPUT
    except _rclpy.RCLError as error:  # __node:= / __ns:= longer than the middleware takes
        reason = rcl_reason(error).removeprefix("error creating node: ")
        print(
            f"error: the node's name or namespace is refused: {reason} (__node:=, __ns:=)",
            file=sys.stderr,
        )
        rclpy.try_shutdown()
        return EXIT_BAD_INPUT
    code = 0
    try:
        if node.get_parameter("autostart").value:
            configured = node.trigger_configure()
            if not node.context.ok():  # SIGINT/SIGTERM while loading the model: a normal stop
                return code
            if configured != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("could not configure; exiting (see the error above)")
                raised = configured == TransitionCallbackReturn.ERROR
                return EXIT_UNEXPECTED if raised else EXIT_BAD_INPUT
            activated = node.trigger_activate()
            if not node.context.ok():
                return code
            if activated != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("could not activate; exiting (see the error above)")
                return EXIT_UNEXPECTED
            rclpy.spin_until_future_complete(node, node.transition_error)
            if node.transition_error.done():
                node.get_logger().fatal("a transition failed; exiting (see the error above)")
                code = EXIT_UNEXPECTED
        else:
            rclpy.spin(node)  # a lifecycle manager decides what a failed transition means
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if node.context.ok():
            raise
        # Ctrl-C shut the context down between two spins: rclpy then fails to build its wait
        # set (RCLError "the given context is not valid") instead of raising
        # ExternalShutdownException. That is a normal shutdown, not an error.
    finally:
        node._release_io()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
