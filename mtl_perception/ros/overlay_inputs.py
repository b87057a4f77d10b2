"""What the overlay node (ros/overlay_node.py) draws from: the perception node's outputs decoded
(its mono8 mask, its Detection2DArray, its two LabelInfo messages: the inverses of
ros/messages.py's builders) and matched with the camera's frames by header stamp."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from ..data.labels import (
    NETWORK_VOID_ID,
    UNLABELED,
    ClassSemantics,
    class_names,
    segmentation_colours,
)
from .cameras import PERCEPTION_OUTPUTS
from .conversions import check_image

Stamp = tuple[int, int]  # (sec, nanosec) of a header stamp


@dataclass
class OverlayCounters:
    """One camera's counts since the node started.

    Attributes:
        drawn: matched frames published (overlay and/or semantic_color).
        not_watched: matched frames with no subscriber to either picture: nothing drawn.
        no_label_info: matched frames not drawn because the label infos had not arrived.
        unmatched: outputs (a mask or detections) that aged out of the queue without a camera
            frame of their stamp, or without the other output.
        frames_without_outputs: camera frames that aged out with no output (the perception node
            dropped them).
        bad_outputs: matched frames whose mask or detections could not be drawn (malformed,
            a non-finite box, or a mask of another size than the frame).
        failed: matched frames lost to an unexpected error in drawing or publishing (logged;
            the node goes on).
        rejected: camera frames refused, by reason (ros/conversions.py REJECTION_REASONS).
    """

    drawn: int = 0
    not_watched: int = 0
    no_label_info: int = 0
    unmatched: int = 0
    frames_without_outputs: int = 0
    bad_outputs: int = 0
    failed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass
class Match:
    """A camera frame and the perception node's outputs of the same stamp."""

    frame: Image | CompressedImage
    size: tuple[int, int]  # the frame's (height, width), as its message declares it
    semantic: Image
    detections: Detection2DArray


class StampMatcher:
    """One camera's frames and outputs, waiting to be matched by header stamp.

    A camera frame waits until ``size`` newer frames have arrived; the outputs of a stamp wait
    until outputs of ``size`` newer stamps have arrived. A matched frame and its outputs leave
    at once. What ages out unmatched is counted in ``counters``: outputs as ``unmatched`` (one
    per message), frames as ``frames_without_outputs``.

    Args:
        size: how many newer frames (output stamps) an unmatched one waits for.
        counters: the camera's counters.
    """

    def __init__(self, size: int, counters: OverlayCounters) -> None:
        self.size = size
        self.counters = counters
        # stamp -> (arrival number, frame, declared (height, width)), oldest arrival first
        self._frames: OrderedDict[Stamp, tuple[int, Image | CompressedImage, tuple[int, int]]]
        self._frames = OrderedDict()
        # stamp -> (arrival number of its first output, {"semantic": msg, "detections": msg})
        self._outputs: OrderedDict[Stamp, tuple[int, dict[str, Any]]] = OrderedDict()
        self._frames_seen = 0
        self._output_stamps_seen = 0

    def pending(self) -> tuple[list[Stamp], list[Stamp]]:
        """The stamps of the frames and of the outputs waiting, oldest first."""
        return list(self._frames), list(self._outputs)

    def add_frame(
        self, stamp: Stamp, frame: Image | CompressedImage, size: tuple[int, int]
    ) -> Match | None:
        """A checked camera frame of declared ``size`` (height, width) (one of the same stamp
        waiting is replaced). Returns the match it completes (taken out), if any."""
        self._frames_seen += 1
        self._frames.pop(stamp, None)
        self._frames[stamp] = (self._frames_seen, frame, size)
        oldest = self._frames_seen - self.size
        while self._frames and next(iter(self._frames.values()))[0] <= oldest:
            self._frames.popitem(last=False)
            self.counters.frames_without_outputs += 1
        return self._take(stamp)

    def add_output(self, stamp: Stamp, kind: str, msg: Any) -> tuple[Match | None, int]:
        """An output (``kind``: "semantic" or "detections"). Returns the match it completes, if
        any, and how many output messages aged out unmatched (counted)."""
        if stamp in self._outputs:
            self._outputs[stamp][1][kind] = msg
        else:
            self._output_stamps_seen += 1
            self._outputs[stamp] = (self._output_stamps_seen, {kind: msg})
        oldest = self._output_stamps_seen - self.size
        aged = 0
        while self._outputs and next(iter(self._outputs.values()))[0] <= oldest:
            aged += len(self._outputs.popitem(last=False)[1][1])
        self.counters.unmatched += aged
        return self._take(stamp), aged

    def _take(self, stamp: Stamp) -> Match | None:
        _, outputs = self._outputs.get(stamp, (0, {}))
        if stamp not in self._frames or len(outputs) < len(PERCEPTION_OUTPUTS):
            return None
        _, frame, size = self._frames.pop(stamp)
        del self._outputs[stamp]
        return Match(frame, size, outputs["semantic"], outputs["detections"])


def stamp_of(msg: Any) -> Stamp:
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


def semantics_from_label_info(segmentation: LabelInfo, detection: LabelInfo) -> ClassSemantics:
    """The perception node's class names and colours from its two LabelInfo messages (the
    inverse of its ``label_info_message`` of
    :func:`~mtl_perception.data.labels.class_semantics`).

    The segmentation LabelInfo lists ids 0..N-1 without the network's void id (listed as 255
    "unlabeled" instead); void is named "void" again, as every class map names it. A model
    without names was published with its ids as names ("0", "1", ...): such names give the
    class map's colours by id, as the perception node coloured them; named classes get their
    class map colour by name.

    Raises:
        ValueError: a class id listed twice, or ids that are not 0..N-1 (void and 255 aside).
    """
    seg_ids = [c.class_id for c in segmentation.class_map if c.class_id != UNLABELED]
    det_ids = [c.class_id for c in detection.class_map]
    seg = {c.class_id: c.class_name for c in segmentation.class_map if c.class_id != UNLABELED}
    det = {c.class_id: c.class_name for c in detection.class_map}
    for what, ids, names in (("label_info", seg_ids, seg), ("detection_label_info", det_ids, det)):
        if len(ids) != len(names):
            raise ValueError(f"{what} lists a class id twice: {sorted(ids)}")
    seg.setdefault(NETWORK_VOID_ID, "void")
    count = len(seg)
    if sorted(seg) != list(range(count)) or sorted(det) != list(range(len(det))):
        raise ValueError(
            f"label infos' class ids are not 0..N-1: segmentation {sorted(seg)}, detection "
            f"{sorted(det)}"
        )
    seg_names = tuple(seg[i] for i in range(count))
    unnamed = all(seg_names[i] == str(i) for i in range(count) if i != NETWORK_VOID_ID)
    named = () if unnamed else seg_names
    return ClassSemantics(
        class_names(named, count),
        tuple(det[i] for i in range(len(det))),
        segmentation_colours(count, named),
    )


def mask_array(msg: Image) -> np.ndarray:
    """The perception node's mono8 mask message -> (H, W) uint8 class ids (row padding dropped).

    Raises:
        ValueError: another encoding, or a malformed message (ImageRejectedError's reason).
    """
    if msg.encoding != "mono8":
        raise ValueError(f"mask encoding '{msg.encoding}', expected mono8")
    check_image(msg, 2**62)
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width]


def detection_arrays(msg: Detection2DArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The perception node's detections -> (N, 4) float64 xyxy boxes (image pixels), (N,) int64
    classes and (N,) float64 scores, as its ``detections_message`` built them.

    Raises:
        ValueError: a detection without a hypothesis, with a class_id that is not a number, or
            with a box that is not finite.
    """
    boxes, classes, scores = [], [], []
    for detection in msg.detections:
        if not detection.results:
            raise ValueError("a detection has no class hypothesis")
        hypothesis = detection.results[0].hypothesis
        try:
            classes.append(int(hypothesis.class_id))
        except ValueError:
            raise ValueError(f"class_id {hypothesis.class_id!r} is not a class number") from None
        box = detection.bbox
        cx, cy = box.center.position.x, box.center.position.y
        boxes.append(
            [cx - box.size_x / 2, cy - box.size_y / 2, cx + box.size_x / 2, cy + box.size_y / 2]
        )
        scores.append(hypothesis.score)
    if not np.isfinite(boxes).all():
        raise ValueError("a detection's box is not finite")
    return (
        np.array(boxes, np.float64).reshape(-1, 4),
        np.array(classes, np.int64),
        np.array(scores, np.float64),
    )
