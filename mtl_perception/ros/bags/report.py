"""The report stage: report.json, frames.jsonl, report.md, overlays and pictures.

Pictures: the latency histogram; with ground truth, the segmentation and detection confusion
matrices, precision-recall curves, and the worst frames by mIoU (prediction beside ground truth)
and by missed objects (missed ground truth boxed in white), drawn from the input bag's camera
frames. Everything comes from the output bag, the ground truth and the scoring options, so
scoring the same output bag again writes the same bytes (PNGs included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...data.labels import NETWORK_VOID_ID, class_names
from ...evaluation.evaluate import format_table
from ...evaluation.plots import confusion_matrix_png, precision_recall_png, save_figure
from ...outputs import write_image
from ...visualization import draw_overlay
from .criteria import Verdict, format_verdicts, verdict_dicts
from .peak import peak_lines
from .read import VOID, GroundTruth, RunOutputs, camera_rgb
from .resources import resources_line
from .score import Scoring, Tally

# Report overlays draw at most this many detections, from this score up (the node runs at 0.001
# for AP, so its outputs hold many weak boxes a picture should not show).
OVERLAY_SCORE = 0.1
OVERLAY_MAX_BOXES = 20


# The figures a summary row (one camera of a rig, one bag of several) shows.
SUMMARY_KEYS = (
    "frames_sent",
    "frames_with_output",
    "coverage",
    "frames_scored",
    "miou",
    "map",
    "latency_ms",
    "throughput_fps",
)


def gate_lines(report: dict[str, Any], verdicts: list[Verdict] | None) -> list[str]:
    """report.md's gate: the verdict and every criterion's row (none without criteria)."""
    if verdicts is None:
        return []
    return [f"Gate: **{report['gate'].upper()}**", "", "```", format_verdicts(verdicts), "```", ""]


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def summary_table(kind: str, rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A markdown table of summary rows (``(name cell, figures)``: cameras of a rig, bags)."""
    lines = [
        f"| {kind} | frames sent | coverage | mIoU | mAP@0.5 | p95 latency (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows:
        p95 = row["latency_ms"]["p95"]
        lines.append(
            f"| {name} | {row['frames_sent']} | "
            + (f"{row['coverage']:.3f}" if row["coverage"] is not None else "n/a")
            + f" | {_percent(row['miou'])} | {_percent(row['map'])} | "
            + (f"{p95:.1f}" if p95 is not None else "n/a")
            + " |"
        )
    return "\n".join(lines)


def write_summary_report(
    work: Path,
    report: dict[str, Any],
    records: list[dict[str, Any]],
    total: Tally,
    verdicts: list[Verdict] | None,
    *,
    title: str,
    intro: list[str],
) -> None:
    """report.json, frames.jsonl, report.md (``intro``, then the total's figures, speed,
    resources, gate and pictures) and the latency histogram of a report that adds up several
    (a rig's cameras, several bags)."""
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    with (work / "frames.jsonl").open("w") as stream:
        for record in records:
            stream.write(json.dumps(record) + "\n")
    lines = list(intro)
    table = metrics_table(report)
    if table is not None:
        lines += ["```", table, "```", ""]
    speed = speed_line(report)
    if speed is not None:
        lines += [f"End-to-end latency: {speed}.", ""]
    resources = resources_line(report.get("resources"))
    if resources is not None:
        lines += [f"Resources of the {resources}.", ""]
    lines += gate_lines(report, verdicts)
    pictures = figure_pictures(work, report, total, title)
    lines += [f"![{Path(p).stem}]({p})" for p in pictures]
    lines += ["![latency](latency_histogram.png)", ""]
    latency_histogram(work, records, title)
    (work / "report.md").write_text("\n".join(lines) + "\n")


def _count(value: str | None) -> int | None:
    """A /diagnostics counter (text) as a number; None when absent or not a count."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def build_report(
    run: RunOutputs,
    truth: GroundTruth | None,
    truth_hash: str | None,
    figures: dict[str, Any],
    verdicts: list[Verdict] | None,
    frames_spec: str | None,
) -> dict[str, Any]:
    """report.json's content: the run's settings and provenance, the figures, the verdicts."""
    info = run.info
    frames = info["frames"]
    figures = dict(figures)
    rejected = [f for f in frames if f["rejected"] is not None]
    parameters = info["node"]["parameters"]
    counters = run.node_counters
    return {
        "bag": info["bag"],
        "camera_topic": info["camera_topic"],
        "camera_type": info["camera_type"],
        "input_size": [parameters["input_height"], parameters["input_width"]],
        "frames_in_bag": info["frames_in_bag"],
        "frames_rejected": len(rejected),
        "rejections": [{"stamp": f["stamp"], "reason": f["rejected"]} for f in rejected[:20]],
        "frames_restamped": info["frames_restamped"],
        "zero_stamps": info["zero_stamps"],
        "frames_spec": frames_spec,
        "ground_truth": {
            "bag": None if truth is None or truth_hash == info["bag_hash"] else str(truth.path),
            "semantic_topic": truth.semantic_topic if truth else None,
            "detections_topic": truth.detections_topic if truth else None,
        },
        "node_counters": {
            k: _count(counters.get(k))
            for k in ("received", "processed", "dropped", "rejected", "failed")
        },
        "bag_problems": info["bag_problems"] + figures.pop("scoring_problems"),
        "warnings": info["warnings"] + figures.pop("ground_truth_warnings"),
        **figures,
        "resources": info.get("resources"),  # the node process's, over the replay
        "peak_rate": info.get("peak_rate"),  # --find-peak-rate's search and trials
        "gate": None
        if verdicts is None
        else ("pass" if all(v.passed for v in verdicts) else "fail"),
        "criteria": verdict_dicts(verdicts or []),
        "reproducibility": {
            "bag_hash": info["bag_hash"],
            "ground_truth_hash": truth_hash,
            "checkpoint": info["checkpoint"],
            "checkpoint_hash": info["checkpoint_hash"],
            "node_parameters": parameters,
            "node_params_file": info["node"]["params_file"],
            "replay": info["replay"],
            **info["provenance"],
        },
    }


def _write_png(path: Path, rgb: np.ndarray) -> None:
    write_image(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _prediction_picture(run: RunOutputs, rgb: np.ndarray, stamp: int) -> np.ndarray:
    """(H, W, 3) RGB: the node's mask and its strongest detections over the camera frame."""
    config = run.info["model_config"]
    names = class_names(config.get("det_class_names") or (), config["num_det_classes"])
    boxes, scores, classes = run.detections[stamp]
    keep = np.argsort(-scores)[:OVERLAY_MAX_BOXES]
    keep = keep[scores[keep] >= OVERLAY_SCORE]
    return draw_overlay(
        rgb,
        run.masks[stamp],
        boxes[keep],
        classes[keep],
        scores[keep],
        names,
        config["num_seg_classes"],
    )


def _pictures(run: RunOutputs, frames: list[dict[str, Any]]) -> dict[int, np.ndarray]:
    """index -> the camera frame (RGB, as the node saw it) of ``frames`` whose mask fits it."""
    info = run.info
    bag = Path(info["bag_absolute"])
    if not frames or not bag.exists():
        return {}
    pictures = camera_rgb(
        bag,
        info["camera_topic"],
        info["camera_type"],
        {f["index"] for f in frames},
        info["node"]["parameters"]["max_pixels"],
    )
    return {
        f["index"]: pictures[f["index"]]
        for f in frames
        if f["index"] in pictures and run.masks[f["stamp"]].shape == pictures[f["index"]].shape[:2]
    }


def _overlays(out: Path, run: RunOutputs, report: dict[str, Any], count: int) -> list[str]:
    """Overlay PNGs of the first ``count`` frames with outputs (from the input bag's camera
    frames, as the node saw them); returns their names."""
    chosen = [f for f in run.info["frames"] if run.arrived(f["stamp"]) is not None][:count]
    pictures = _pictures(run, chosen)
    written = []
    for frame in chosen:
        if frame["index"] in pictures:
            name = f"overlay_{frame['stamp']}.png"
            _write_png(
                out / name, _prediction_picture(run, pictures[frame["index"]], frame["stamp"])
            )
            written.append(name)
    return written


def _worst_overlays(out: Path, run: RunOutputs, report: dict[str, Any], scoring: Scoring):
    """worst_miou_<position>.png (prediction | ground truth) and worst_missed_<position>.png
    (prediction, missed ground truth boxed in white); returns [(caption, name)]."""
    worst = report["worst_frames"]
    frames = run.info["frames"]
    positions = [e["position"] for e in worst["by_miou"] + worst["by_missed"]]
    pictures = _pictures(run, [frames[p] for p in dict.fromkeys(positions)])
    num_seg = run.info["model_config"]["num_seg_classes"]
    written = []
    for kind, entry in [("miou", e) for e in worst["by_miou"]] + [
        ("missed", e) for e in worst["by_missed"]
    ]:
        frame = frames[entry["position"]]
        rgb = pictures.get(frame["index"])
        if rgb is None:
            continue
        picture = _prediction_picture(run, rgb, frame["stamp"])
        truth = scoring.worst_truth[entry["position"]]
        if kind == "miou":
            mask = np.where(truth["mask"] == VOID, NETWORK_VOID_ID, truth["mask"]).astype(np.uint8)
            empty = np.zeros((0, 4))
            truth_picture = draw_overlay(
                rgb, mask, empty, np.zeros(0, int), np.zeros(0), [], num_seg
            )
            picture = np.concatenate([picture, truth_picture], axis=1)
            caption = (
                f"frame {entry['position']}: mIoU {100 * entry['miou']:.1f} "
                "(left: node, right: ground truth)"
            )
        else:
            thickness = max(2, round(rgb.shape[0] / 200))
            for x1, y1, x2, y2 in np.round(truth["missed"]).astype(int):
                cv2.rectangle(picture, (x1, y1), (x2, y2), (255, 255, 255), thickness)
            caption = f"frame {entry['position']}: {entry['missed']} objects missed (white)"
        name = f"worst_{kind}_{entry['position']}.png"
        _write_png(out / name, picture)
        written.append((caption, name))
    return written


def figure_pictures(out: Path, report: dict[str, Any], tally: Tally, title: str) -> list[str]:
    """Confusion matrices and precision-recall curves; returns the names written."""
    written = []
    confusion = report["segmentation_confusion"]
    if confusion is not None:
        counts = np.asarray(confusion["counts"])
        void = [i for i in range(len(counts)) if counts[i].sum() == 0 and counts[:, i].sum() == 0]
        rows = [i for i in range(len(counts)) if i not in void]
        confusion_matrix_png(
            out / "confusion_segmentation.png",
            counts[np.ix_(rows, rows)],
            [confusion["labels"][i] for i in rows],
            [confusion["labels"][i] for i in rows],
            f"{title}: pixels\n(classes present in ground truth or prediction)",
        )
        written.append("confusion_segmentation.png")
    detection = report["detection_confusion"]
    if detection is not None:
        confusion_matrix_png(
            out / "confusion_detection.png",
            np.asarray(detection["counts"]),
            detection["labels"],
            detection["labels"],
            f"{title}: detections scored >= {report['detection_count_score']}\n"
            "(background row: false alarms; background column: missed objects)",
        )
        precision_recall_png(
            out / "precision_recall.png",
            tally.average_precision,
            detection["labels"][:-1],
            f"{title}: precision-recall at IoU 0.5",
        )
        written += ["confusion_detection.png", "precision_recall.png"]
    return written


def latency_histogram(out: Path, records: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = [r["latency_ms"] for r in records if r.get("latency_ms") is not None]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(latencies, bins=30, color="#4477aa")
    axis.set_xlabel("end-to-end latency (ms)")
    axis.set_ylabel("frames")
    axis.set_title(f"{title}: {len(latencies)} frames")
    figure.tight_layout()
    save_figure(figure, out / "latency_histogram.png")


def metrics_table(report: dict[str, Any]) -> str | None:
    if report["miou"] is None and report["map"] is None:
        return None
    return format_table({k: report[k] for k in ("iou", "miou", "ap", "map")}, column="bag")


def speed_line(report: dict[str, Any]) -> str | None:
    p = report["latency_ms"]
    if p["p50"] is None:
        return None
    throughput = report["throughput_fps"]
    return (
        f"latency mean {p['mean']:.1f} ms, p50 {p['p50']:.1f} ms, p95 {p['p95']:.1f} ms, "
        f"max {p['max']:.1f} ms, std {p['std']:.1f} ms; throughput "
        + (f"{throughput:.2f} fps" if throughput is not None else "n/a")
    )


def _by_size_lines(report: dict[str, Any]) -> list[str]:
    """report.md's AP@0.5 by object size table and how the sizes are bounded."""
    by_size = report["ap_by_size"]
    if not by_size:
        return []

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}"

    names = list(report["ap"])
    lines = [
        "AP@0.5 by object size ("
        + report["size_rule"]["rule"]
        + "; bounds here: "
        + "; ".join(
            f"{w} px wide: {a:g} and {b:g} px^2"
            for w, (a, b) in report["size_rule"]["bounds_px2"].items()
        )
        + "):",
        "",
        "| size | objects | mAP@0.5 | " + " | ".join(names) + " |",
        "|---" * (len(names) + 3) + "|",
    ]
    for size, entry in by_size.items():
        lines.append(
            f"| {size} | {entry['ground_truth']} | {percent(entry['map'])} | "
            + " | ".join(percent(entry["ap"][n]) for n in names)
            + " |"
        )
    return [*lines, ""]


def _worst_lines(report: dict[str, Any]) -> list[str]:
    worst = report["worst_frames"]
    lines = []
    if worst["by_miou"]:
        lines.append(
            "Lowest mIoU: "
            + ", ".join(f"frame {e['position']} ({100 * e['miou']:.1f})" for e in worst["by_miou"])
            + "."
        )
    if worst["by_missed"]:
        lines.append(
            "Most missed objects: "
            + ", ".join(f"frame {e['position']} ({e['missed']})" for e in worst["by_missed"])
            + "."
        )
    return [*lines, ""] if lines else []


def write_report(
    out: Path,
    run: RunOutputs,
    report: dict[str, Any],
    records: list[dict[str, Any]],
    verdicts: list[Verdict] | None,
    overlays: int,
    scoring: Scoring,
) -> None:
    """Writes report.json, frames.jsonl, report.md, overlays and the pictures (module doc)
    into ``out`` (an existing folder that becomes the report when complete)."""
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    with (out / "frames.jsonl").open("w") as stream:
        for record in records:
            stream.write(json.dumps(record) + "\n")
    name = Path(report["bag"]).name
    coverage = report["coverage"]
    lines = [
        f"# Evaluation of {name}",
        "",
        f"Camera topic `{report['camera_topic']}` ({report['camera_type']}); "
        f"{report['frames_in_bag']} frames in the bag, {report['frames_sent']} sent"
        + (
            f" and counted ({report['frames_left_out']} more sent but left out by --frames), "
            if report["frames_spec"]
            else ", "
        )
        + f"{report['frames_with_output']} with outputs, {report['frames_rejected']} rejected by "
        "the node"
        + (f" (first: {report['rejections'][0]['reason']})" if report["rejections"] else "")
        + f"; node input {report['input_size'][1]}x{report['input_size'][0]}.",
        "",
        "Coverage (frames with outputs / frames sent): "
        + (f"{coverage:.3f}" if coverage is not None else "n/a")
        + (
            f"; {report['frames_left_out']} frames left out by --frames"
            if report["frames_spec"]
            else ""
        )
        + ".",
        "",
    ]
    if report["skipped"]:
        lines += ["Frames without outputs, by reason:", ""]
        lines += [f"* {reason}: {n}" for reason, n in report["skipped"].items()] + [""]
    if report["warnings"]:
        lines += ["**Warnings**", ""] + [f"* {w}" for w in report["warnings"]] + [""]
    table = metrics_table(report)
    if table is not None:
        lines += [f"Scored on {report['frames_scored']} frames:", "", "```", table, "```", ""]
        if report["detection_counts"]:
            lines += [
                f"Detections scored >= {report['detection_count_score']}: "
                + "; ".join(
                    f"{n} TP {c['tp']} FP {c['fp']} FN {c['fn']}"
                    for n, c in report["detection_counts"].items()
                )
                + ".",
                "",
            ]
            lines += _by_size_lines(report)
        lines += _worst_lines(report)
    elif report["ground_truth"]["semantic_topic"] is None and (
        report["ground_truth"]["detections_topic"] is None
    ):
        lines += ["No ground truth in this bag: speed and outputs only.", ""]
    else:
        lines += ["No frame with outputs has ground truth that could be scored.", ""]
    speed = speed_line(report)
    if speed is not None:
        lines += [f"End-to-end latency (publish -> both outputs received): {speed}.", ""]
    resources = resources_line(report["resources"])
    if resources is not None:
        lines += [f"Resources of the {resources}.", ""]
    lines += peak_lines(report["peak_rate"])
    counters = report["node_counters"]
    lines += [
        f"Node counters: received {counters['received']}, processed {counters['processed']}, "
        f"dropped {counters['dropped']}, rejected {counters['rejected']}, "
        f"failed {counters['failed']}.",
        "",
    ]
    lines += gate_lines(report, verdicts)
    repro = report["reproducibility"]
    lines += [
        f"Reproducibility: bag {repro['bag_hash']}, checkpoint {repro['checkpoint_hash']}, "
        f"mtl_perception {repro['package_version']} ({repro['git_commit']}), ROS "
        f"{repro['ros_distro']}, torch {repro['torch_version']}, {repro['host']['cpu']}"
        + (f", {', '.join(repro['host']['gpus'])}" if repro["host"]["gpus"] else "")
        + ".",
        "",
        "![latency](latency_histogram.png)",
        "",
    ]
    pictures = figure_pictures(out, report, scoring.tally, name)
    if pictures:
        lines += [f"![{Path(p).stem}]({p})" for p in pictures] + [""]
    worst = _worst_overlays(out, run, report, scoring)
    if worst:
        lines += ["Worst frames:", ""]
        lines += [f"![{caption}]({n})" for caption, n in worst] + [""]
    lines += [f"![overlay]({n})" for n in _overlays(out, run, report, overlays)]
    latency_histogram(out, records, name)
    (out / "report.md").write_text("\n".join(lines) + "\n")
