"""Offline evaluation on a Cityscapes-layout split: Table-1 metrics, latency, overlays.

    mtl-eval (--checkpoint CKPT | --onnx MODEL.onnx) --data DIR [--split val] [--out NEW_DIR]
        [--save-overlays N] [--max-images N] [--device cpu] [--precision fp32] [--debug]
    python -m mtl_perception.evaluation ...   (the same)

The output folder, the class map, the dataset's layout, the model and its classes are checked
before the first image is evaluated; a damaged image or label file stops the run naming it.
``--out`` must be new (or empty) and appears only when complete, with ``metrics.json`` and
``overlays/``. A bad input is one line ``error: ...`` and exit 2 (the traceback with --debug).

Images are evaluated at their original resolution, one at a time (the paper's latency is per
image): the Predictor resizes each to the network input and maps masks and boxes back.
Ground-truth boxes smaller than the class map's ``min_box_size`` (network-input pixels, scaled to
the image) are left out, as in training. Detections are kept down to score 0.001 for AP, as
COCO evaluations do; the node publishes with its own, higher threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..cli import ToolParser, non_negative_int, positive_int, tool_main
from ..data.cityscapes import CityscapesDataset
from ..data.labels import DEFAULT_CLASSES_FILE, ClassMap
from ..inference.predictor import Predictor, PredictorConfig
from ..outputs import atomic_directory, check_new_directory, write_image, write_text
from ..visualization import draw_overlay
from .ground_truth import counted_boxes
from .metrics import ConfusionMatrix, DetectionAP

EVAL_SCORE_THRESHOLD = 0.001


def check_classes(model_config, class_map: ClassMap, checkpoint: str) -> None:
    """Refuses a model whose classes differ from the dataset's class map (names both)."""
    problems = []
    if model_config.num_seg_classes != class_map.num_seg_classes:
        problems.append(
            f"{model_config.num_seg_classes} segmentation classes vs {class_map.num_seg_classes}"
        )
    if model_config.num_det_classes != class_map.num_det_classes:
        problems.append(
            f"{model_config.num_det_classes} detection classes vs {class_map.num_det_classes}"
        )
    for what, theirs, ours in (
        ("segmentation", model_config.seg_class_names, class_map.seg_names),
        ("detection", model_config.det_class_names, class_map.det_names),
    ):
        if theirs and tuple(theirs) != tuple(ours):
            problems.append(f"{what} names {list(theirs)} vs {list(ours)}")
    if problems:
        raise ValueError(
            f"checkpoint {checkpoint} does not match the dataset's class map: "
            + "; ".join(problems)
        )


def evaluate(
    predictor: Predictor,
    dataset: CityscapesDataset,
    *,
    interpolation: str = "coco",
    overlay_dir: Path | None = None,
    save_overlays: int = 0,
    max_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs ``predictor`` over ``dataset`` (untransformed) and returns the metrics dict."""
    class_map = dataset.class_map
    confusion = ConfusionMatrix(class_map.num_seg_classes, class_map.void_id)
    average_precision = DetectionAP(class_map.num_det_classes, interpolation=interpolation)
    latencies = []
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    input_width = predictor.input_size[1]
    for index in tqdm(range(count), desc="evaluating", unit="img", disable=not progress):
        sample = dataset.load(index)
        start = time.perf_counter()
        try:
            (prediction,) = predictor.predict(sample.image)
        except FloatingPointError as error:
            raise FloatingPointError(f"{error} on {dataset.images[index]}") from error
        latencies.append(time.perf_counter() - start)
        confusion.update(prediction.mask, sample.segmentation)
        gt_boxes, gt_classes = counted_boxes(
            sample.boxes,
            sample.classes,
            sample.image.shape[1],
            input_width,
            class_map.min_box_size,
        )
        average_precision.update(
            prediction.boxes, prediction.scores, prediction.classes, gt_boxes, gt_classes
        )
        if overlay_dir is not None and index < save_overlays:
            overlay_dir.mkdir(parents=True, exist_ok=True)
            picture = draw_overlay(
                sample.image,
                prediction.mask,
                prediction.boxes,
                prediction.classes,
                prediction.scores,
                class_map.det_names,
                class_map.seg_colours,
            )
            path = overlay_dir / f"{sample.name}_overlay.png"
            write_image(path, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    seconds = np.array(latencies)
    return {
        "images": count,
        **summarize(confusion, average_precision, class_map),
        "ap_iou": average_precision.iou_threshold,
        "interpolation": interpolation,
        "latency_ms": {
            "mean": _number(seconds.mean() * 1e3) if count else None,
            "median": _number(np.median(seconds) * 1e3) if count else None,
        },
    }


def summarize(
    confusion: ConfusionMatrix, average_precision: DetectionAP, class_map: ClassMap
) -> dict[str, Any]:
    """Table 1's figures by class name (fractions; None where a class has none): ``iou`` (void
    left out), ``miou``, ``ap``, ``map``. The one summary for mtl-eval and bag scoring."""
    iou = confusion.iou()
    ap = average_precision.average_precision()
    return {
        "iou": {
            name: _number(iou[i])
            for i, name in enumerate(class_map.seg_names)
            if i != class_map.void_id
        },
        "miou": _number(confusion.mean_iou()),
        "ap": {name: _number(ap[i]) for i, name in enumerate(class_map.det_names)},
        "map": _number(average_precision.mean_ap()),
    }


def _number(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def format_table(metrics: dict[str, Any], column: str = "Validation") -> str:
    """The paper's Table 1 layout: per-class IoU, mIoU, per-class AP, mAP (percent)."""

    def percent(value: float | None) -> str:
        return "   n/a" if value is None else f"{100 * value:6.2f}"

    rows = [(f"{name} IoU", value) for name, value in metrics["iou"].items()]
    rows.append(("Mean IoU (mIoU)", metrics["miou"]))
    rows += [(f"AP {name}", value) for name, value in metrics["ap"].items()]
    rows.append(("Mean AP (mAP)", metrics["map"]))
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{'Metrics':<{width}}{column:>12}", "-" * (width + 12)]
    lines += [f"{name:<{width}}{percent(value):>12}" for name, value in rows]
    lines.append("-" * (width + 12))
    if "params" in metrics:
        lines.append(f"{'Parameters':<{width}}{metrics['params'] / 1e6:>11.2f}M")
    latency = metrics.get("latency_ms", {}).get("mean")
    if latency is not None:
        lines.append(f"{'Latency per image (mean)':<{width}}{latency:>9.1f} ms")
    return "\n".join(lines)


def device_name(text: str) -> str:
    """argparse type: "cpu", "cuda" or "cuda:N"."""
    kind, _, index = text.partition(":")
    if text == "cpu" or (kind == "cuda" and (not index or index.isdigit())):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


def build_parser() -> ToolParser:
    parser = ToolParser(
        prog="mtl-eval", description="Evaluate a checkpoint or an ONNX export on a split."
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help="checkpoint to evaluate (PyTorch)")
    model.add_argument("--onnx", type=Path, help="ONNX export to evaluate (onnxruntime)")
    parser.add_argument("--data", type=Path, required=True, help="dataset root")
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--out", type=Path, help="new folder for metrics.json and overlays (written when complete)"
    )
    parser.add_argument(
        "--classes", type=Path, default=DEFAULT_CLASSES_FILE, help="class mapping YAML"
    )
    parser.add_argument(
        "--save-overlays",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="overlay PNGs of the first N images (needs --out)",
    )
    parser.add_argument("--interpolation", choices=["coco", "voc"], default="coco")
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument(
        "--max-images", type=positive_int, metavar="N", help="evaluate the first N images only"
    )
    return parser


@tool_main(build_parser)
def main(args: argparse.Namespace) -> int:
    """``mtl-eval``: checks every input and the output folder before evaluating; writes
    ``--out`` (metrics.json, overlays/) as a whole when the evaluation is complete."""
    if args.save_overlays and args.out is None:
        raise ValueError("--save-overlays needs --out (the folder to write the overlays to)")
    if args.out is not None:
        check_new_directory(args.out, "--out")
    class_map = ClassMap.from_yaml(args.classes)
    dataset = CityscapesDataset(args.data, args.split, class_map)
    config = PredictorConfig(
        device=args.device, precision=args.precision, score_threshold=EVAL_SCORE_THRESHOLD
    )
    model_path = args.onnx or args.checkpoint
    if args.onnx:
        predictor = Predictor.from_onnx(args.onnx, config)
    else:
        predictor = Predictor.from_checkpoint(args.checkpoint, config)
    check_classes(predictor.model_config, class_map, str(model_path))
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(atomic_directory(args.out, "--out")) if args.out else None
        metrics = evaluate(
            predictor,
            dataset,
            interpolation=args.interpolation,
            overlay_dir=folder / "overlays" if folder and args.save_overlays else None,
            save_overlays=args.save_overlays,
            max_images=args.max_images,
        )
        if predictor.model is not None:
            metrics["params"] = sum(p.numel() for p in predictor.model.parameters())
        metrics.update(
            {"onnx" if args.onnx else "checkpoint": str(model_path)},
            backend=predictor.config.backend,
            data=str(args.data),
            split=args.split,
        )
        if folder is not None:
            write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
    print(format_table(metrics, column=args.split))
    if args.out:
        overlays = args.out / "overlays" if args.save_overlays else None
        print(
            f"wrote {args.out / 'metrics.json'}"
            + (f" and overlays in {overlays}" if overlays else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
