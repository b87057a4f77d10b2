"""``mtl-bag``: record a dataset split to a rosbag2, and evaluate the live node on a bag.

mtl-bag record-dataset --data DIR --split val --out BAG [--storage mcap|sqlite3] [--rate HZ]
    [--compressed]
mtl-bag evaluate --bag BAG --checkpoint CKPT --out DIR [--rate-factor F | --as-fast-as-possible]
    [--node-params FILE] [--overlays N] [--output-bag]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..evaluation.evaluate import format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mtl-bag", description=__doc__.strip().splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    record = commands.add_parser(
        "record-dataset", help="write a split with ground truth to a rosbag2"
    )
    record.add_argument("--data", type=Path, required=True)
    record.add_argument("--split", default="val")
    record.add_argument("--out", type=Path, required=True)
    record.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    record.add_argument(
        "--rate", type=float, default=10.0, help="frames per second of the recorded stamps"
    )
    record.add_argument(
        "--compressed", action="store_true", help="JPEG CompressedImage instead of rgb8 Image"
    )
    evaluate = commands.add_parser("evaluate", help="replay a bag through the node and report")
    evaluate.add_argument("--bag", type=Path, required=True)
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("--out", type=Path, required=True)
    pace = evaluate.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate-factor", type=float, default=1.0, help="replay at the bag's timing x F"
    )
    pace.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="send each frame once the last one's outputs arrived",
    )
    evaluate.add_argument("--node-params", type=Path, help="ROS parameter file for the node")
    evaluate.add_argument("--overlays", type=int, default=4)
    evaluate.add_argument(
        "--output-bag",
        action="store_true",
        help="also record the node's outputs to OUT/outputs_bag",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "record-dataset":
            from .bag_record import record_dataset

            count = record_dataset(
                args.data,
                args.split,
                args.out,
                storage=args.storage,
                rate=args.rate,
                compressed=args.compressed,
            )
            print(f"wrote {count} frames to {args.out} ({args.storage})")
            return 0
        from .isolation import ensure_private_network

        ensure_private_network()
        from .bag_evaluate import evaluate_bag

        report = evaluate_bag(
            args.bag,
            args.checkpoint,
            args.out,
            rate_factor=None if args.as_fast_as_possible else args.rate_factor,
            params_file=args.node_params,
            overlays=args.overlays,
            output_bag=args.output_bag,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if report["miou"] is not None or report["map"] is not None:
        print(format_table({k: report[k] for k in ("iou", "miou", "ap", "map")}, column="bag"))
    latency = report["latency_ms"]
    if latency["p50"] is not None:
        print(
            f"latency p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, "
            f"max {latency['max']:.1f} ms; throughput {report['throughput_fps']:.2f} fps; "
            f"node counters {report['node_counters']}"
        )
    print(f"report: {args.out / 'report.md'} (and report.json, overlays, latency_histogram.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
