"""Building the node's output messages from a Prediction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
    Point2D,
    Pose2D,
    VisionClass,
)

from ..data.labels import UNLABELED
from .frame_slot import FrameCounters


def detections_message(
    header: Header, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray
) -> Detection2DArray:
    """Boxes (N, 4) xyxy image pixels -> Detection2DArray (centre + size), one hypothesis each,
    class_id = the class's numeric id as a string."""
    detections = []
    for (x0, y0, x1, y1), score, cls in zip(
        boxes.tolist(), scores.tolist(), classes.tolist(), strict=True
    ):
        detections.append(
            Detection2D(
                header=header,
                results=[
                    ObjectHypothesisWithPose(
                        hypothesis=ObjectHypothesis(class_id=str(int(cls)), score=float(score))
                    )
                ],
                bbox=BoundingBox2D(
                    center=Pose2D(position=Point2D(x=(x0 + x1) / 2, y=(y0 + y1) / 2), theta=0.0),
                    size_x=x1 - x0,
                    size_y=y1 - y0,
                ),
            )
        )
    return Detection2DArray(header=header, detections=detections)


def label_info_message(
    header: Header, names: Sequence[str], skip: int | None = None, threshold: float = 0.0
) -> LabelInfo:
    """Class ids -> names; the skipped id (void) is listed as 255 'unlabeled'."""
    classes = [VisionClass(class_id=i, class_name=n) for i, n in enumerate(names) if i != skip]
    if skip is not None:
        classes.append(VisionClass(class_id=UNLABELED, class_name="unlabeled"))
    return LabelInfo(header=header, class_map=classes, threshold=float(threshold))


def frame_statistics(
    counters: FrameCounters, latencies_ms: np.ndarray, before: tuple[float, int, int], now: float
) -> dict[str, str | int]:
    """Rates since ``before`` = (time.monotonic() seconds, received, processed), latency
    percentiles (ms) and the frame counts: the values a camera and the node both report."""
    then, received, processed = before
    elapsed = max(now - then, 1e-6)
    return {
        "input_fps": f"{(counters.received - received) / elapsed:.2f}",
        "processed_fps": f"{(counters.processed - processed) / elapsed:.2f}",
        "latency_p50_ms": f"{np.percentile(latencies_ms, 50):.1f}" if latencies_ms.size else "nan",
        "latency_p95_ms": f"{np.percentile(latencies_ms, 95):.1f}" if latencies_ms.size else "nan",
        "received": counters.received,
        "processed": counters.processed,
        "dropped": counters.dropped,
        "rejected": counters.rejected,
        "failed": counters.failed,
    }


def diagnostic_status(name: str, level: bytes, message: str, values: dict) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id="mtl_perception",
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )


def diagnostics_message(header: Header, statuses: Sequence[DiagnosticStatus]) -> DiagnosticArray:
    return DiagnosticArray(header=header, status=list(statuses))
