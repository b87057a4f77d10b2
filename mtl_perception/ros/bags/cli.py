"""``mtl-bag``: record a dataset split to a rosbag2, and evaluate the live node on a bag.

mtl-bag record-dataset --data DIR --split val --out BAG [--storage mcap|sqlite3] [--rate HZ]
    [--compressed] [--classes YAML] [--camera-topic T] [--semantic-topic T] [--detections-topic T]
mtl-bag evaluate --bag BAG --checkpoint CKPT --out DIR [--rate-factor F | --as-fast-as-possible]
    [--classes YAML] [--camera-topic T] [--semantic-topic T] [--detections-topic T]
    [--node-params FILE] [--overlays N] [--output-bag]

Every failure prints one line ``error: <what> (<file, topic or option>)`` and exits 2 (the
traceback only with ``--debug``). Outputs are checked before any work and written atomically:
``--out`` is either complete or absent.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..cli import ToolParser, non_negative_int, positive_float, tool_main
from ..data.labels import DEFAULT_CLASSES_FILE
from ..resources import resolve_config_path

_TOPIC = re.compile(r"(/[A-Za-z_][A-Za-z0-9_]*)+")


def topic_name(text: str) -> str:
    """An absolute ROS 2 topic name (``/a/b_c``), as bags store them."""
    if not _TOPIC.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an absolute ROS 2 topic name (like /camera/image_raw: "
            "'/'-separated tokens of letters, digits and '_', not starting with a digit)"
        )
    return text


def _add_common(parser: ToolParser, *, record: bool) -> None:
    from .bag_record import CAMERA_TOPIC, GT_DETECTIONS_TOPIC, GT_SEMANTIC_TOPIC

    parser.add_argument(
        "--classes",
        type=Path,
        default=DEFAULT_CLASSES_FILE,
        help="class mapping YAML (default: the package's Cityscapes mapping)",
    )
    camera_help = (
        f"camera topic (default {CAMERA_TOPIC}; with --compressed its /compressed sibling)"
        if record
        else f"camera topic to replay (default {CAMERA_TOPIC}, or its /compressed sibling)"
    )
    parser.add_argument("--camera-topic", type=topic_name, default=None, help=camera_help)
    parser.add_argument(
        "--semantic-topic",
        type=topic_name,
        default=None,
        help=f"ground-truth mask topic, mono8 class ids (default {GT_SEMANTIC_TOPIC})",
    )
    parser.add_argument(
        "--detections-topic",
        type=topic_name,
        default=None,
        help=f"ground-truth Detection2DArray topic (default {GT_DETECTIONS_TOPIC})",
    )


def build_parser() -> ToolParser:
    parser = ToolParser(prog="mtl-bag", description=__doc__.strip().splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ToolParser)
    record = commands.add_parser(
        "record-dataset", help="write a split with ground truth to a rosbag2"
    )
    record.add_argument("--data", type=Path, required=True, help="dataset root")
    record.add_argument("--split", default="val")
    record.add_argument("--out", type=Path, required=True, help="new bag folder")
    record.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    record.add_argument(
        "--rate",
        type=positive_float,
        default=10.0,
        help="frames per second of the recorded stamps (positive, finite)",
    )
    record.add_argument(
        "--compressed", action="store_true", help="JPEG CompressedImage instead of rgb8 Image"
    )
    _add_common(record, record=True)
    evaluate = commands.add_parser("evaluate", help="replay a bag through the node and report")
    evaluate.add_argument("--bag", type=Path, required=True)
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("--out", type=Path, required=True, help="new report folder")
    pace = evaluate.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate-factor",
        type=positive_float,
        default=1.0,
        help="replay at the bag's timing x F (positive, finite)",
    )
    pace.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="send each frame once the last one's outputs arrived",
    )
    evaluate.add_argument(
        "--node-params",
        type=resolve_config_path,
        help="ROS parameter file for the node (config/<name>: the packaged one)",
    )
    evaluate.add_argument(
        "--overlays", type=non_negative_int, default=4, help="overlay PNGs of the first N frames"
    )
    evaluate.add_argument(
        "--output-bag",
        action="store_true",
        help="also record the node's outputs to OUT/outputs_bag",
    )
    _add_common(evaluate, record=False)
    for sub in (record, evaluate):
        # `mtl-bag --debug evaluate ...` must survive the subcommand's own --debug default.
        for action in sub._actions:
            if action.dest == "debug":
                action.default = argparse.SUPPRESS
    return parser


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@tool_main(build_parser)
def main(args: argparse.Namespace) -> int:
    if args.command == "record-dataset":
        from .bag_record import Topics, record_dataset

        defaults = Topics()
        count = record_dataset(
            args.data,
            args.split,
            args.out,
            storage=args.storage,
            rate=args.rate,
            compressed=args.compressed,
            classes_file=args.classes,
            topics=Topics(
                camera=args.camera_topic or defaults.camera,
                semantic=args.semantic_topic or defaults.semantic,
                detections=args.detections_topic or defaults.detections,
            ),
        )
        print(f"wrote {count} frames to {args.out} ({args.storage})")
        return 0
    from .isolation import ensure_private_network

    ensure_private_network()
    from ..evaluation.evaluate import format_table
    from .bag_evaluate import BagTopics, evaluate_bag

    report = evaluate_bag(
        args.bag,
        args.checkpoint,
        args.out,
        rate_factor=None if args.as_fast_as_possible else args.rate_factor,
        params_file=args.node_params,
        overlays=args.overlays,
        output_bag=args.output_bag,
        classes_file=args.classes,
        topics=BagTopics(args.camera_topic, args.semantic_topic, args.detections_topic),
        warn=_warn,
    )
    if report["miou"] is not None or report["map"] is not None:
        print(format_table({k: report[k] for k in ("iou", "miou", "ap", "map")}, column="bag"))
    latency = report["latency_ms"]
    if latency["p50"] is not None:
        throughput = report["throughput_fps"]
        print(
            f"latency p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, "
            f"max {latency['max']:.1f} ms; throughput "
            + (f"{throughput:.2f} fps" if throughput is not None else "n/a")
            + f"; node counters {report['node_counters']}"
        )
    print(f"report: {args.out / 'report.md'} (and report.json, overlays, latency_histogram.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
