"""The score stage: a run's outputs against ground truth, per frame and overall; no model, no node.

Ground truth is matched to the frames sent by header stamp: exactly by default, or to the nearest
frame within ``tolerance_ns`` (a ground-truth message nearer to two frames than either, or one of
several claiming the same frame, is ambiguous and left out). Frames whose bag stamp is shared by
several frames (re-stamped for the replay) never get ground truth. Scoring uses the metric code and
the ground-truth rule of ``mtl-eval`` (:func:`...evaluation.evaluate.summarize`,
:func:`...evaluation.ground_truth.counted_boxes` at the node's input width).

Coverage is frames with outputs / frames sent; every frame without outputs has a reason: rejected
(the node's conversions refuse it; known before the replay), dropped (the node's latest-frame-wins
slot replaced it: its /diagnostics counted drops), partial output (one of the two outputs came),
no output, late (outputs later than ``--deadline-ms`` after the frame was sent: a real-time
consumer would have used an older result; their latencies still count in the latency figures).
``--frames`` leaves frames out of everything (positions in receive order, 0-based).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...data.labels import ClassMap
from ...evaluation.evaluate import summarize
from ...evaluation.ground_truth import counted_boxes
from ...evaluation.metrics import (
    SIZES,
    ConfusionMatrix,
    DetectionAP,
    SizedDetectionAP,
    detection_confusion,
    detection_counts,
    missed_ground_truth,
    size_area_bounds,
)
from .read import VOID, GroundTruth, RunOutputs

# TP/FP/FN count detections from this score up (AP uses every detection the node sends).
COUNT_SCORE = 0.5
LEFT_OUT = "left out (--frames)"
DROPPED = "dropped (latest frame wins)"
NO_OUTPUT = "no output"
LATE = "late (outputs after the deadline, --deadline-ms"
WORST_FRAMES = 3  # the report names (and draws) this many worst frames by mIoU and by misses
SIZE_RULE = (
    "COCO's object-size bounds (area 32^2 and 96^2 px^2 in its images, typically 640 px wide) "
    "scaled to each camera image: small below (32 W/640)^2, large from (96 W/640)^2 px^2, "
    "W = the image width in px"
)


def parse_frames(spec: str | None, count: int) -> set[int]:
    """Positions (0-based, receive order) ``--frames`` leaves out, of ``count`` frames.

    ``spec`` is comma-separated tokens: ``first:N`` (the first N), ``last:N`` (the last N),
    ``A-B`` (positions A to B, both included) or ``A`` (one position).

    With ``count`` 0 only the form is checked (before the frames are known).

    Raises:
        ValueError: a token of another form, a position past the last frame, or every frame
            left out; naming the token.
    """
    left_out: set[int] = set()
    if not spec:
        return left_out
    for token in spec.split(","):
        token = token.strip()
        if m := re.fullmatch(r"(first|last):(\d+)", token):
            n = min(int(m[2]), count)
            left_out |= set(range(n)) if m[1] == "first" else set(range(count - n, count))
        elif m := re.fullmatch(r"(\d+)(?:-(\d+))?", token):
            a, b = int(m[1]), int(m[2] or m[1])
            if b < a:
                raise ValueError(f"frame range {token!r} ends before it starts (--frames)")
            if count and b >= count:
                raise ValueError(
                    f"frame range {token!r} goes past the last frame: there are {count} frames, "
                    f"positions 0-{count - 1} (--frames)"
                )
            left_out |= set(range(a, min(b, count - 1) + 1))
        else:
            raise ValueError(
                f"cannot read {token!r} in --frames: expected first:N, last:N, A-B or A "
                "(frame positions from 0), comma-separated (--frames)"
            )
    if count and len(left_out) >= count:
        raise ValueError(
            f"{spec!r} leaves out every one of the {count} frames: nothing would be scored "
            "(--frames)"
        )
    return left_out


@dataclass
class Matching:
    """Ground truth per frame position, and what could not be matched (counts per kind)."""

    masks: dict[int, np.ndarray] = field(default_factory=dict)
    boxes: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    offset_ns: dict[int, int] = field(default_factory=dict)  # frame stamp - ground-truth stamp
    left_out: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def match_ground_truth(
    frames: list[dict[str, Any]], truth: GroundTruth, tolerance_ns: int = 0
) -> Matching:
    """Gives frames (the run's frame records) their ground truth by bag stamp (module doc)."""
    matching = Matching()
    at_stamp = Counter(f["bag_stamp"] for f in frames)
    stamps = sorted(at_stamp)
    position = {f["bag_stamp"]: i for i, f in enumerate(frames) if at_stamp[f["bag_stamp"]] == 1}
    kinds = (
        ("semantic", truth.semantic_topic, truth.masks, matching.masks),
        ("detections", truth.detections_topic, truth.boxes, matching.boxes),
    )
    for kind, topic, messages, target in kinds:
        if topic is None:
            continue
        left_out = unmatched = 0
        claims: dict[int, list[tuple[int, int]]] = {}  # frame position -> (distance, gt stamp)
        for stamp, values in messages.items():
            j = bisect.bisect_left(stamps, stamp)
            near = [s for s in stamps[max(0, j - 1) : j + 1] if abs(s - stamp) <= tolerance_ns]
            if not near:
                unmatched += len(values)
                continue
            best = min(abs(s - stamp) for s in near)
            nearest = [s for s in near if abs(s - stamp) == best]
            if len(nearest) > 1 or at_stamp[nearest[0]] > 1 or len(values) > 1:
                left_out += len(values)
                continue
            claims.setdefault(position[nearest[0]], []).append((best, stamp))
        for frame, claimed in claims.items():
            claimed.sort()
            if len(claimed) > 1 and claimed[0][0] == claimed[1][0]:
                left_out += len(claimed)
                continue
            left_out += len(claimed) - 1
            _, stamp = claimed[0]
            target[frame] = messages[stamp][0]
            matching.offset_ns[frame] = frames[frame]["bag_stamp"] - stamp
        matching.left_out[kind] = left_out
        matching.unmatched[kind] = unmatched
        if left_out:
            matching.warnings.append(
                f"{left_out} ground-truth messages on {topic} cannot be matched to one camera "
                "frame (their stamp is shared by several frames or messages, or they are as near "
                "to two frames): left out of the scoring"
            )
        if unmatched:
            within = f" within {tolerance_ns / 1e6:g} ms" if tolerance_ns else ""
            matching.warnings.append(
                f"{unmatched} ground-truth messages on {topic} have a stamp no camera frame "
                f"has{within}: left out of the scoring"
            )
    return matching


def check_ground_truth(
    frames: list[dict[str, Any]], matching: Matching, truth: GroundTruth, class_map: ClassMap
) -> None:
    """Refuses ground truth that cannot be scored with ``class_map``: a mask of another size
    than its frame, mask values or box classes the class map does not have."""
    num_seg, num_det = class_map.num_seg_classes, class_map.num_det_classes
    for position, mask in matching.masks.items():
        frame = frames[position]
        where = f"ground-truth mask at stamp {frame['bag_stamp'] - matching.offset_ns[position]}"
        size = frame["size"]
        if size is not None and list(mask.shape) != list(size):
            raise ValueError(
                f"{where} is {mask.shape[1]}x{mask.shape[0]} but its camera frame is "
                f"{size[1]}x{size[0]} ({truth.semantic_topic})"
            )
        values = np.unique(mask)
        bad = values[(values >= num_seg) & (values != VOID)]
        if bad.size:
            raise ValueError(
                f"{where} holds class id {int(bad[0])}, but the class map has {num_seg} "
                f"segmentation classes (0-{num_seg - 1}, {VOID} = void) ({truth.semantic_topic})"
            )
    for position, (_, classes) in matching.boxes.items():
        bad = classes[(classes < 0) | (classes >= num_det)]
        if bad.size:
            stamp = frames[position]["bag_stamp"] - matching.offset_ns[position]
            raise ValueError(
                f"ground-truth detection at stamp {stamp} has class id {int(bad[0])}, but the "
                f"class map has {num_det} detection classes (0-{num_det - 1}) "
                f"({truth.detections_topic})"
            )


def _number(value: float | None) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _latency_summary(latencies: np.ndarray) -> dict[str, float | None]:
    """mean, p50, p95, max, std of (N,) latencies in ms (None without frames)."""
    if not latencies.size:
        return dict.fromkeys(("mean", "p50", "p95", "max", "std"))
    return {
        "mean": float(latencies.mean()),
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "max": float(latencies.max()),
        "std": float(latencies.std()),
    }


def _without_output_reasons(run: RunOutputs, frames: list[dict[str, Any]]) -> dict[int, str | None]:
    """Position -> why a sent frame has no outputs (None when it has them)."""
    reasons: dict[int, str | None] = {}
    silent = []
    for i, frame in enumerate(frames):
        stamp = frame["stamp"]
        if frame["sent"] is None:
            reasons[i] = "not sent"
        elif run.arrived(stamp) is not None:
            reasons[i] = None
        elif frame["rejected"] is not None:
            reasons[i] = f"rejected: {frame['rejected']}"
        elif stamp in run.masks or stamp in run.detections:
            reasons[i] = "partial output (" + (
                "mask only)" if stamp in run.masks else "detections only)"
            )
        else:
            silent.append(i)
    try:
        dropped = int(run.node_counters.get("dropped", 0))
    except ValueError:
        dropped = 0
    reason = (
        DROPPED
        if silent and dropped >= len(silent)
        else NO_OUTPUT
        if dropped == 0
        else f"{DROPPED} or {NO_OUTPUT}"
    )
    reasons.update(dict.fromkeys(silent, reason))
    return reasons


@dataclass
class Tally:
    """What scoring adds up over frames, of one run or (:meth:`add`) of several: the pixel
    confusion matrix, AP overall and by size, the detection confusion matrix and TP/FP/FN
    counts (detections scored >= :data:`COUNT_SCORE`), latencies and frame counts."""

    confusion: ConfusionMatrix
    average_precision: DetectionAP
    by_size: SizedDetectionAP
    detection_confusion: np.ndarray  # (K + 1, K + 1), rows ground truth, last = background
    counts: np.ndarray  # (K, 3) TP, FP, FN per detection class
    latencies: list[float] = field(default_factory=list)  # ms, frames with outputs
    frames_sent: int = 0
    frames_with_output: int = 0
    frames_scored: int = 0
    frames_left_out: int = 0
    duration_s: float = 0.0  # first send to last output, summed over runs
    image_widths: set[int] = field(default_factory=set)  # of frames with scored boxes
    has_masks: bool = False
    has_boxes: bool = False

    @classmethod
    def empty(cls, class_map: ClassMap) -> Tally:
        k = class_map.num_det_classes
        return cls(
            ConfusionMatrix(class_map.num_seg_classes, class_map.void_id),
            DetectionAP(k),
            SizedDetectionAP(k),
            np.zeros((k + 1, k + 1), np.int64),
            np.zeros((k, 3), np.int64),
        )

    def add(self, other: Tally) -> None:
        """Adds another tally (another bag's): the figures become those of all frames."""
        self.confusion.counts += other.confusion.counts
        for mine, theirs in [(self.average_precision, other.average_precision)] + [
            (self.by_size.by_size[s], other.by_size.by_size[s]) for s in SIZES
        ]:
            for record, added in zip(mine.records, theirs.records, strict=True):
                record.scores += added.scores
                record.true_positive += added.true_positive
                record.num_ground_truth += added.num_ground_truth
        self.detection_confusion += other.detection_confusion
        self.counts += other.counts
        self.latencies += other.latencies
        for name in (
            "frames_sent",
            "frames_with_output",
            "frames_scored",
            "frames_left_out",
            "duration_s",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.image_widths |= other.image_widths
        self.has_masks |= other.has_masks
        self.has_boxes |= other.has_boxes

    def figures(self, class_map: ClassMap) -> dict[str, Any]:
        """The report's figures of everything added (see :func:`score_run`)."""
        summary = summarize(self.confusion, self.average_precision, class_map)
        sent, with_output = self.frames_sent, self.frames_with_output
        boxes = self.has_boxes
        return {
            "frames_left_out": self.frames_left_out,
            "frames_sent": sent,
            "frames_with_output": with_output,
            "frames_without_output": sent - with_output,
            "coverage": with_output / sent if sent else None,
            "latency_ms": _latency_summary(np.array(self.latencies)),
            "throughput_fps": with_output / self.duration_s if self.duration_s > 0 else None,
            "frames_scored": self.frames_scored,
            "iou": summary["iou"] if self.has_masks else {},
            "miou": summary["miou"] if self.has_masks else None,
            "ap": summary["ap"] if boxes else {},
            "map": summary["map"] if boxes else None,
            "ap_by_size": self._by_size(class_map) if boxes else {},
            "size_rule": {
                "rule": SIZE_RULE,
                "bounds_px2": {
                    str(w): [round(b, 3) for b in size_area_bounds(w)]
                    for w in sorted(self.image_widths)
                },
            }
            if boxes
            else None,
            "detection_counts": _counts_by_name(self.counts, class_map) if boxes else {},
            "detection_count_score": COUNT_SCORE,
            "detection_confusion": {
                "labels": [*class_map.det_names, "background"],
                "counts": self.detection_confusion.tolist(),
            }
            if boxes
            else None,
            "segmentation_confusion": {
                "labels": list(class_map.seg_names),
                "counts": self.confusion.counts.tolist(),
            }
            if self.has_masks
            else None,
        }

    def _by_size(self, class_map: ClassMap) -> dict[str, Any]:
        """size -> AP per class, their mean and the ground-truth objects of that size."""
        ground_truth = self.by_size.ground_truth_counts()
        result = {}
        for size, metric in self.by_size.by_size.items():
            values = metric.average_precision()
            finite = values[np.isfinite(values)]
            result[size] = {
                "ap": {n: _number(v) for n, v in zip(class_map.det_names, values, strict=True)},
                "map": float(finite.mean()) if finite.size else None,
                "ground_truth": ground_truth[size],
            }
        return result


@dataclass
class Scoring:
    """A scored run: the report's figures, one record per frame, the tally behind them, and the
    ground truth of the worst frames (position -> ``mask`` (H, W) class ids or None, ``missed``
    (F, 4) xyxy boxes nothing found, image pixels) for their pictures."""

    figures: dict[str, Any]
    records: list[dict[str, Any]]
    tally: Tally
    worst_truth: dict[int, dict[str, Any]] = field(default_factory=dict)


def worst_frames(records: list[dict[str, Any]], count: int = WORST_FRAMES) -> dict[str, Any]:
    """The ``count`` scored frames of lowest mIoU and of most missed objects (false negatives
    at :data:`COUNT_SCORE`; frames that missed none are not listed), ties by position."""
    scored = [r for r in records if r["status"] == "scored"]
    by_miou = sorted(
        (r for r in scored if r.get("miou") is not None), key=lambda r: (r["miou"], r["position"])
    )
    missed = [
        (sum(c["fn"] for c in r["detections"].values()), r) for r in scored if r.get("detections")
    ]
    by_missed = sorted((m for m in missed if m[0] > 0), key=lambda m: (-m[0], m[1]["position"]))
    return {
        "by_miou": [
            {"position": r["position"], "stamp": r["stamp"], "miou": r["miou"]}
            for r in by_miou[:count]
        ],
        "by_missed": [
            {"position": r["position"], "stamp": r["stamp"], "missed": n}
            for n, r in by_missed[:count]
        ],
    }


def score_run(
    run: RunOutputs,
    truth: GroundTruth | None,
    class_map: ClassMap,
    *,
    frames_spec: str | None = None,
    tolerance_ns: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Scores a run; returns (the report's figures, one record per frame for frames.jsonl).

    Raises:
        ValueError: a bad ``frames_spec`` or ground truth the class map cannot score.
    """
    scoring = score_frames(
        run, truth, class_map, frames_spec=frames_spec, tolerance_ns=tolerance_ns
    )
    return scoring.figures, scoring.records


def score_frames(
    run: RunOutputs,
    truth: GroundTruth | None,
    class_map: ClassMap,
    *,
    frames_spec: str | None = None,
    tolerance_ns: int = 0,
    deadline_ns: int | None = None,
) -> Scoring:
    """:func:`score_run` with the tally behind the figures (for pictures and for adding up
    several runs). With ``deadline_ns``, a frame whose outputs came later than that after it was
    sent is late: counted in the latencies, but without outputs for coverage and scoring."""
    frames = run.info["frames"]
    input_width = run.info["node"]["parameters"]["input_width"]
    left_out = parse_frames(frames_spec, len(frames))
    matching = match_ground_truth(frames, truth, tolerance_ns) if truth is not None else Matching()
    if truth is not None:
        check_ground_truth(frames, matching, truth, class_map)
    tally = Tally.empty(class_map)
    tally.has_masks = truth is not None and truth.semantic_topic is not None
    tally.has_boxes = truth is not None and truth.detections_topic is not None
    num_det = class_map.num_det_classes
    reasons = _without_output_reasons(run, frames)
    records, problems = [], []
    scored_truth: dict[int, tuple[Any, ...]] = {}  # position -> (mask, detections, boxes)
    first_sent, last_arrival = None, None
    for i, frame in enumerate(frames):
        stamp = frame["stamp"]
        record: dict[str, Any] = {"position": i, "index": frame["index"], "stamp": stamp}
        record["bag_stamp"] = frame["bag_stamp"]
        if i in left_out:
            records.append({**record, "status": "left out", "skip_reason": LEFT_OUT})
            continue
        arrived = run.arrived(stamp)
        tally.frames_sent += frame["sent"] is not None
        if frame["sent"] is not None:
            first_sent = min(first_sent or frame["sent"], frame["sent"])
        record["latency_ms"] = (arrived - frame["sent"]) / 1e6 if arrived is not None else None
        if arrived is None:
            records.append({**record, "status": "skipped", "skip_reason": reasons[i]})
            continue
        tally.latencies.append(record["latency_ms"])
        last_arrival = max(last_arrival or arrived, arrived)
        if deadline_ns is not None and arrived - frame["sent"] > deadline_ns:
            reason = f"{LATE} {deadline_ns / 1e6:g} ms)"
            records.append({**record, "status": "skipped", "skip_reason": reason})
            continue
        tally.frames_with_output += 1
        mask, boxes = matching.masks.get(i), matching.boxes.get(i)
        if mask is None and boxes is None:
            records.append({**record, "status": "no ground truth", "skip_reason": None})
            continue
        if i in matching.offset_ns:
            record["ground_truth_offset_ms"] = matching.offset_ns[i] / 1e6
        prediction = run.masks[stamp]
        if mask is not None:
            if prediction.shape != mask.shape:
                problems.append(
                    f"frame {stamp}: the node's mask is {prediction.shape}, the ground truth "
                    f"{mask.shape}"
                )
                records.append({**record, "status": "skipped", "skip_reason": problems[-1]})
                continue
            single = ConfusionMatrix(class_map.num_seg_classes, class_map.void_id)
            pair = (
                np.where(prediction == VOID, class_map.void_id, prediction),
                np.where(mask == VOID, class_map.void_id, mask),
            )
            single.update(*pair)
            tally.confusion.counts += single.counts
            iou = single.iou()
            record["iou"] = {
                n: _number(iou[c])
                for c, n in enumerate(class_map.seg_names)
                if c != class_map.void_id
            }
            record["miou"] = _number(single.mean_iou())
        truth_pair = None
        if boxes is not None:
            width = prediction.shape[1]
            detections = run.detections[stamp]
            gt_boxes, gt_classes = counted_boxes(*boxes, width, input_width, class_map.min_box_size)
            truth_pair = (gt_boxes, gt_classes)
            tally.average_precision.update(*detections, *truth_pair)
            tally.by_size.update(*detections, *truth_pair, image_width=width)
            tally.image_widths.add(int(width))
            tally.detection_confusion += detection_confusion(
                *detections, *truth_pair, num_det, COUNT_SCORE
            )
            frame_counts = detection_counts(*detections, *truth_pair, num_det, COUNT_SCORE)
            tally.counts += frame_counts
            record["detections"] = _counts_by_name(frame_counts, class_map)
        scored_truth[i] = (mask, detections if boxes is not None else None, truth_pair)
        tally.frames_scored += 1
        records.append({**record, "status": "scored", "skip_reason": None})
    tally.frames_left_out = len(left_out & set(range(len(frames))))
    tally.duration_s = (last_arrival - first_sent) / 1e9 if last_arrival and first_sent else 0.0
    skipped = [r for r in records if r["status"] in ("skipped",)]
    figures = tally.figures(class_map)
    figures.update(
        skipped=dict(sorted(Counter(r["skip_reason"] for r in skipped).items())),
        skipped_frames=[
            {"position": r["position"], "stamp": r["stamp"], "reason": r["skip_reason"]}
            for r in skipped
        ],
        ground_truth_left_out=matching.left_out,
        ground_truth_unmatched=matching.unmatched,
        ground_truth_warnings=matching.warnings,
        match_tolerance_ms=tolerance_ns / 1e6,
        scoring_problems=problems,
        worst_frames=worst_frames(records),
    )
    worst = figures["worst_frames"]
    worst_truth = {}
    for entry in worst["by_miou"] + worst["by_missed"]:
        mask, detections, truth_pair = scored_truth[entry["position"]]
        missed = np.zeros((0, 4))
        if truth_pair is not None:
            gone = missed_ground_truth(*detections, *truth_pair, COUNT_SCORE)
            missed = truth_pair[0][gone]
        worst_truth[entry["position"]] = {"mask": mask, "missed": missed}
    return Scoring(figures, records, tally, worst_truth)


def _counts_by_name(counts: np.ndarray, class_map: ClassMap) -> dict[str, dict[str, int]]:
    return {
        name: {"tp": int(tp), "fp": int(fp), "fn": int(fn)}
        for name, (tp, fp, fn) in zip(class_map.det_names, counts, strict=True)
    }
