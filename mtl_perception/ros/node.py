"""``perception_node``: camera images in; semantic mask, detections and overlays out.

A managed lifecycle node and a thin shell around the Predictor:

* configure: read and validate parameters, load the model (a bad value or checkpoint fails the
  transition with a message);
* activate: publishers, the input subscription, the inference thread, diagnostics;
* deactivate: all of those released, GPU memory freed; cleanup: the model unloaded.

``autostart`` (default true) configures and activates at start, so ``ros2 run`` just works.

Latest frame wins: the subscription callback checks the frame's geometry (raw) or header
(compressed: format and declared size, nothing decoded) and parks a frame that passes in a
one-frame slot (a frame that was still waiting is replaced and counted as dropped); a frame that
fails is counted as rejected there and never displaces a waiting one. The inference thread always
takes the newest, converts or decodes it, and runs the model. Latency therefore never grows with
the input rate.

Every frame is accounted for: once idle, received = processed + dropped + rejected. Rejections
are counted per reason (``rejected_<reason>`` in /diagnostics) and logged per reason: the first
occurrence of each reason always, then at most once per REJECTION_LOG_PERIOD seconds each.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from ..data.labels import class_semantics
from ..inference.fallback import FallbackPredictor
from ..inference.predictor import Prediction, PredictorConfig
from ..inference.standin import STANDIN_WARNING, standin_device, standin_factory
from ..visualization import colorize, draw_overlay
from .conversions import (
    CONVERTER,
    REJECTION_REASONS,
    ImageRejectedError,
    check_compressed,
    check_image,
    compressed_to_rgb,
    encode_image,
    image_to_rgb,
)
from .frame_slot import FrameCounters, LatestFrameSlot
from .messages import detections_message, diagnostics_message, label_info_message
from .parameters import NodeParameters, declare_parameters, read_parameters

LATCHED = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
OUTPUT_QOS = QoSProfile(
    depth=2, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
)
LATENCY_WINDOW = 200
REJECTION_LOG_PERIOD = 1.0  # seconds between two warnings for the same rejection reason
INTERNAL_ERROR = "internal_error"  # a frame check that raised something else (a bug): rejected


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


class PerceptionNode(LifecycleNode):
    """See the module docstring. Topics are relative, so namespaces and remaps apply."""

    def __init__(self, name: str = "perception_node", **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        declare_parameters(self)
        self.declare_parameter("autostart", True)
        self.params: NodeParameters | None = None
        self.predictor: FallbackPredictor | None = None
        self.counters = FrameCounters()
        self._counter_lock = threading.Lock()
        self._slot = LatestFrameSlot()
        self._rejection_log = ReasonThrottle(REJECTION_LOG_PERIOD)
        self._worker: threading.Thread | None = None
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last_diagnostics = (time.monotonic(), 0, 0)
        self._outputs: dict[str, Any] = {}
        self._input = None
        self._diagnostics_timer = None
        self.device = "cpu"

    # -- lifecycle ------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = read_parameters(self)
            params.validate()
            import torch

            device = params.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            standin = standin_device(device)  # benchmarks only: no network runs
            config = PredictorConfig(
                device=standin or device,
                precision=params.precision,
                channels_last=params.channels_last,
                compile=params.compile,
                cuda_graph=params.cuda_graph,
                preallocate=params.preallocate,
                resize=params.resize,
                input_height=params.input_height,
                input_width=params.input_width,
                score_threshold=params.score_threshold,
                nms_iou=params.nms_iou,
                max_detections=params.max_detections,
                backend=params.backend,
            )
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
        model = self.predictor.model_config
        self.get_logger().info(
            f"loaded {params.checkpoint or params.onnx_model} on {device} ({params.precision}, "
            f"{params.backend}), input {params.input_width}x{params.input_height}, "
            f"{model.num_seg_classes} segmentation / {model.num_det_classes} detection classes, "
            f"image conversion via {CONVERTER}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = self.params
        self._outputs = {
            "semantic": self.create_publisher(Image, "~/semantic", OUTPUT_QOS),
            "semantic_color": self.create_publisher(Image, "~/semantic_color", OUTPUT_QOS),
            "detections": self.create_publisher(Detection2DArray, "~/detections", OUTPUT_QOS),
            "label_info": self.create_publisher(LabelInfo, "~/label_info", LATCHED),
            "detection_label_info": self.create_publisher(
                LabelInfo, "~/detection_label_info", LATCHED
            ),
            "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", 10),
        }
        if params.publish_overlay:
            self._outputs["overlay"] = self.create_publisher(Image, "~/overlay", OUTPUT_QOS)
        self._publish_label_info()
        reliability = (
            ReliabilityPolicy.BEST_EFFORT
            if params.qos_reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE
        )
        qos = QoSProfile(
            depth=params.qos_depth, history=HistoryPolicy.KEEP_LAST, reliability=reliability
        )
        if params.input_transport == "compressed":
            self._input = self.create_subscription(
                CompressedImage, "image/compressed", self._on_frame, qos
            )
        else:
            self._input = self.create_subscription(Image, "image", self._on_frame, qos)
        self._slot.reopen()
        self._worker = threading.Thread(target=self._inference_loop, name="inference", daemon=True)
        self._worker.start()
        self._last_diagnostics = (time.monotonic(), self.counters.received, self.counters.processed)
        self._diagnostics_timer = self.create_timer(
            params.diagnostics_period, self._publish_diagnostics
        )
        self.get_logger().info(f"active: listening on {self._input.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_io()
        self.get_logger().info("inactive: subscriptions and publishers released")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_io()
        self.predictor = None
        self._free_gpu_memory()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_io()
        self.predictor = None
        return TransitionCallbackReturn.SUCCESS

    def _release_io(self) -> None:
        if self._input is not None:
            self.destroy_subscription(self._input)
            self._input = None
        if self._slot.close():  # the frame waiting at deactivate: dropped, not lost
            with self._counter_lock:
                self.counters.dropped += 1
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}
        self._free_gpu_memory()

    def _free_gpu_memory(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # -- frames ----------------------------------------------------------------------------

    def _on_frame(self, msg: Image | CompressedImage) -> None:
        """Executor thread: check the frame (O(1): geometry, or the compressed header) and park
        it; a frame that fails the check is rejected here and never displaces a waiting one.
        Never blocks on the model."""
        received_at = time.monotonic()
        try:
            if isinstance(msg, CompressedImage):
                check_compressed(msg, self.params.max_pixels)
            else:
                check_image(msg, self.params.max_pixels)
        except ImageRejectedError as error:
            self._reject(error.reason, str(error), received=True)
            return
        except Exception as error:  # a bug in a check must not take the node down
            self._reject(INTERNAL_ERROR, f"{type(error).__name__}: {error}", received=True)
            return
        dropped = self._slot.put((msg, received_at))
        with self._counter_lock:
            self.counters.received += 1
            if dropped:
                self.counters.dropped += 1

    def _reject(self, reason: str, problem: str, received: bool = False) -> None:
        """Counts a rejected frame (and, from the callback, its arrival) and logs it, throttled
        per reason."""
        with self._counter_lock:
            self.counters.received += received
            self.counters.reject(reason)
        held = self._rejection_log.admit(reason)
        if held is None:
            return
        note = f" ({held} more '{reason}' rejections since the last report)" if held else ""
        line = f"rejected frame on {self._topic()} ({reason}): {problem}{note}"
        if reason == INTERNAL_ERROR:
            self.get_logger().error(line)
        else:
            self.get_logger().warning(line)

    def _inference_loop(self) -> None:
        while True:
            item = self._slot.take(timeout=0.5)
            if item is None:
                if self._slot.closed:
                    return
                continue
            msg, received_at = item
            try:
                self._process(msg, received_at)
            except Exception as error:  # publishing, or a bug: this frame is lost, not the node
                if not self.context.ok():
                    return  # shutting down (Ctrl-C): the context went away while publishing
                with self._counter_lock:
                    self.counters.failed += 1
                    self.counters.dropped += 1
                self.get_logger().error(
                    f"processing failed, frame dropped: {type(error).__name__}: {error}",
                    throttle_duration_sec=1.0,
                )

    def _process(self, msg: Image | CompressedImage, received_at: float) -> None:
        params = self.params
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_to_rgb(msg, params.max_pixels)
            else:
                rgb = image_to_rgb(msg, params.max_pixels)
        except ImageRejectedError as error:  # found only by decoding (e.g. size_mismatch)
            self._reject(error.reason, str(error))
            return
        try:
            prediction = self.predictor.predict(rgb)[0]
        except Exception as error:  # CUDA OOM, NaN, anything: drop this frame, keep running
            with self._counter_lock:
                self.counters.failed += 1
                self.counters.dropped += 1
            self.get_logger().error(
                f"inference failed, frame dropped: {error}", throttle_duration_sec=1.0
            )
            self._free_gpu_memory()
            return
        self._publish(msg.header, rgb, prediction)
        with self._counter_lock:
            self.counters.processed += 1
            self._latencies.append(time.monotonic() - received_at)

    def _topic(self) -> str:
        subscription = self._input
        return subscription.topic_name if subscription is not None else "image"

    def _publish(self, header: Header, rgb: np.ndarray, prediction: Prediction) -> None:
        """Publishes one frame's outputs. The colour mask is computed once, and only when
        ``semantic_color`` or ``overlay`` has subscribers; the overlay goes out as rgb8 (the
        Predictor's colour order: no conversion)."""
        publishers = self._outputs
        if not publishers:
            return  # deactivated while this frame was in the model
        semantics = class_semantics(self.predictor.model_config)
        # The network never predicts void, so the mask needs no void -> UNLABELED pass.
        publishers["semantic"].publish(encode_image(prediction.mask, "mono8", header))
        publishers["detections"].publish(
            detections_message(header, prediction.boxes, prediction.scores, prediction.classes)
        )
        colour_publisher = publishers["semantic_color"]
        overlay = publishers.get("overlay")
        want_colour = colour_publisher.get_subscription_count() > 0
        want_overlay = overlay is not None and overlay.get_subscription_count() > 0
        if not (want_colour or want_overlay):
            return
        colour = colorize(prediction.mask, semantics.seg_colours)
        if want_colour:
            colour_publisher.publish(encode_image(colour, "rgb8", header))
        if want_overlay:
            picture = draw_overlay(
                rgb,
                prediction.mask,
                prediction.boxes,
                prediction.classes,
                prediction.scores,
                semantics.det_names,
                semantics.seg_colours,
                coloured_mask=colour,
            )
            overlay.publish(encode_image(picture, "rgb8", header))

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
        now = time.monotonic()
        with self._counter_lock:
            counters = self.counters.copy()
            latencies = np.array(self._latencies) * 1e3
        then, received_before, processed_before = self._last_diagnostics
        self._last_diagnostics = (now, counters.received, counters.processed)
        elapsed = max(now - then, 1e-6)
        values = {
            "input_fps": f"{(counters.received - received_before) / elapsed:.2f}",
            "processed_fps": f"{(counters.processed - processed_before) / elapsed:.2f}",
            "latency_p50_ms": f"{np.percentile(latencies, 50):.1f}" if latencies.size else "nan",
            "latency_p95_ms": f"{np.percentile(latencies, 95):.1f}" if latencies.size else "nan",
            "received": counters.received,
            "processed": counters.processed,
            "dropped": counters.dropped,
            "rejected": counters.rejected,
            "failed": counters.failed,
            **{
                f"rejected_{reason}": counters.rejected_by_reason.get(reason, 0)
                for reason in (*REJECTION_REASONS, INTERNAL_ERROR, *counters.rejected_by_reason)
            },
            "device": self.device,
            "precision": self.params.precision,
            "backend": self.params.backend,
            "fast_path": self.predictor.active_path if self.predictor else "none",
            "fast_path_requested": self.predictor.requested_path if self.predictor else "none",
            "fast_path_fallbacks": " | ".join(self.predictor.fallbacks) if self.predictor else "",
        }
        level = DiagnosticStatus.WARN if counters.failed else DiagnosticStatus.OK
        message = f"{counters.failed} frames failed in the model" if counters.failed else "running"
        if standin_device(self.device):  # a benchmark's node is never taken for a real one
            level, message = DiagnosticStatus.WARN, STANDIN_WARNING
        header = Header()
        header.stamp = self.get_clock().now().to_msg()
        publisher = self._outputs.get("diagnostics")
        if publisher is not None:
            publisher.publish(
                diagnostics_message(
                    header, f"{self.get_name()}: perception", level, message, values
                )
            )


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = PerceptionNode()
    except (InvalidParameterValueException, InvalidParameterTypeException) as error:
        print(f"[perception_node] invalid parameter: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    code = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("could not configure; exiting (see the error above)")
                return 1
            node.trigger_activate()
        rclpy.spin(node)
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
