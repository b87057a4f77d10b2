"""The node's per-frame cost around the model, as a fraction of model time (2048x1024 input).

    .venv/bin/python benchmarks/node_overhead.py [--checkpoint CKPT | --model-config YAML]
        [--device cpu|cuda] [--precision node|fp32|fp16|bf16] [--repeats 20]
        [--baseline REF [--rounds 2]] [--write]

Times, with the node's own functions and real rclpy publishers (a subscriber in the graph, so
every message is serialised and delivered; inside a loopback-only namespace), per step of the
frame path of the imported version of the node:

- frame in: a bgr8 2048x1024 camera frame (the usual camera driver encoding) from its CDR bytes
  to what the Predictor gets. Before issue 23: rclpy's deserialisation into a
  sensor_msgs/Image (what the executor did for every frame) and ``image_to_rgb``. After: the
  raw take's copy of the CDR bytes into a Python ``bytes``, ``raw_messages.read_image``,
  ``check_image`` and the bgr8 pixels as a view (reordered on the device);
- device step: the Predictor around the zero-cost stand-in network (``inference/standin.py``)
  on the full frame: upload, resize, normalisation, class ids, mask up-sampling to 2048x1024,
  post-processing;
- publishing: the mask (mono8, 2048x1024) and the detections built and published. Before: as
  messages (``encode_image``, ``detections_message``); after: pre-serialised CDR bytes
  (``raw_messages.image_bytes``, ``detections_bytes``);
- model: ``predict`` at the network input size (network and post-processing).

The Predictor runs the node's defaults of that version (``--precision node``: its
``default_fast_path`` where it has one, else fp32 eager), or the precision given.

``--baseline REF`` (benchmarks/baseline.py) measures REF's steps in a child process importing
REF's package, in ``--rounds`` turns with this checkout's (before, after, before, after...;
``repeats / rounds`` calls per turn), and adds a before/after table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from baseline import Version, add_argument, before_after_table, versions, versions_line
from common import header, median_ms, time_calls, write_section

WIDTH, HEIGHT = 2048, 1024
FRAME_IN, DEVICE_STEP, PUBLISHING, MODEL = "frame in", "device step", "publishing", "model"
OVERHEAD = (FRAME_IN, DEVICE_STEP, PUBLISHING)


class Bench:
    """The steps of the imported node version, set up once, timed in turns."""

    def __init__(self, args: argparse.Namespace) -> None:
        import rclpy
        from frame_path import device_input, node_config
        from rclpy.qos import qos_profile_sensor_data
        from rclpy.serialization import serialize_message
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header
        from vision_msgs.msg import Detection2DArray

        from mtl_perception.data.synthetic import generate_scene
        from mtl_perception.inference.predictor import Predictor
        from mtl_perception.inference.standin import standin_factory
        from mtl_perception.model import ModelConfig, MultiTaskNet
        from mtl_perception.ros.conversions import encode_image
        from mtl_perception.ros.node import OUTPUT_QOS

        device = args.device
        config = node_config(device, args.precision, score_threshold=0.25)
        self.config_text = ", ".join(
            f"{k} {getattr(config, k)}"
            for k in ("precision", "channels_last", "cuda_graph", "preallocate")
            if hasattr(config, k)
        )
        if args.checkpoint:
            predictor = Predictor.from_checkpoint(args.checkpoint, config)
            self.model_name = str(args.checkpoint)
        else:
            torch.manual_seed(0)
            model_config = ModelConfig.from_yaml(args.model_config)
            model = MultiTaskNet(model_config).train()
            with torch.no_grad():
                model(torch.randn(2, 3, model_config.input_height, model_config.input_width))
            predictor = Predictor(model.eval(), model_config, config)
            self.model_name = f"{args.model_config} (random weights, calibrated batch norm)"
        in_h, in_w = predictor.input_size
        self.input_size = (in_w, in_h)
        rgb = generate_scene(WIDTH, HEIGHT, 7)[0]
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        small = np.ascontiguousarray(generate_scene(in_w, in_h, 7)[0][..., ::-1])
        msg = encode_image(bgr, "bgr8", Header(frame_id="camera"))
        cdr = serialize_message(msg)
        standin = standin_factory()(config)
        frame, frame_kwargs = device_input(standin, bgr)
        small_in, small_kwargs = device_input(predictor, small)

        rclpy.init()
        self.node = rclpy.create_node("overhead_benchmark")
        listener = rclpy.create_node("overhead_listener")
        mask_pub = self.node.create_publisher(Image, "semantic", OUTPUT_QOS)
        det_pub = self.node.create_publisher(Detection2DArray, "detections", OUTPUT_QOS)
        listener.create_subscription(Image, "semantic", lambda _: None, qos_profile_sensor_data)
        listener.create_subscription(
            Detection2DArray, "detections", lambda _: None, qos_profile_sensor_data
        )
        model_in, model_kwargs = device_input(predictor, bgr)
        prediction = predictor.predict(model_in, **model_kwargs)[0]
        self.detections = len(prediction.boxes)
        frame_in, publish, self.steps = _version_steps(msg, cdr, prediction, mask_pub, det_pub)
        self.calls = {
            FRAME_IN: frame_in,
            DEVICE_STEP: lambda: standin.predict(frame, **frame_kwargs),
            PUBLISHING: publish,
            MODEL: lambda: predictor.predict(small_in, **small_kwargs),
        }
        self.steps[DEVICE_STEP] = "stand-in Predictor on the full frame" + (
            " (bgr8 as it is)" if frame_kwargs else " (the RGB copy)"
        )
        self.steps[MODEL] = f"predict at {in_w}x{in_h}"
        self.device = device

    def time(self, repeats: int) -> dict[str, list[float]]:
        """Seconds per call of every step, ``repeats`` calls each after 2 untimed."""
        return {
            name: time_calls(call, repeats, 2, self.device) for name, call in self.calls.items()
        }

    def close(self) -> None:
        import rclpy

        rclpy.try_shutdown()


def _version_steps(msg, cdr: bytes, prediction, mask_pub, det_pub):
    """(frame in, publishing, step descriptions) of the imported node version."""
    from mtl_perception.ros.conversions import check_image

    try:
        from mtl_perception.ros.raw_messages import (
            RawHeader,
            detections_bytes,
            image_bytes,
            read_image,
        )
    except ImportError:  # before issue 23: messages in and out
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image

        from mtl_perception.ros.conversions import encode_image, image_to_rgb
        from mtl_perception.ros.messages import detections_message

        def frame_in() -> None:
            image_to_rgb(deserialize_message(cdr, Image), 1 << 31)

        def publish() -> None:
            mask_pub.publish(encode_image(prediction.mask, "mono8", msg.header))
            det_pub.publish(
                detections_message(
                    msg.header, prediction.boxes, prediction.scores, prediction.classes
                )
            )

        return (
            frame_in,
            publish,
            {
                FRAME_IN: "deserialise_message (Image) + image_to_rgb",
                PUBLISHING: "encode_image + detections_message, published as messages",
            },
        )

    view = memoryview(cdr)

    def frame_in() -> None:
        raw = read_image(bytes(view))  # the raw take hands the CDR over as a new bytes
        check_image(raw, 1 << 31)
        rows = np.asarray(raw.data).reshape(raw.height, raw.step)[:, : raw.width * 3]
        rows.reshape(raw.height, raw.width, 3)

    header = RawHeader.from_msg(msg.header)

    def publish() -> None:
        mask_pub.publish(image_bytes(header, prediction.mask, "mono8"))
        det_pub.publish(
            detections_bytes(header, prediction.boxes, prediction.scores, prediction.classes)
        )

    return (
        frame_in,
        publish,
        {
            FRAME_IN: "CDR copied into bytes + read_image + check_image + bgr8 view",
            PUBLISHING: "image_bytes + detections_bytes, published as CDR bytes",
        },
    )


def child(version: Version, args: argparse.Namespace, repeats: int) -> dict:
    """One turn of ``version``'s steps, measured by a process importing its package."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "times.json"
        model = (
            ["--checkpoint", str(args.checkpoint.resolve())]
            if args.checkpoint
            else ["--model-config", str(args.model_config.resolve())]
        )
        command = [
            sys.executable, __file__, "--device", args.device, "--precision", args.precision,
            "--repeats", str(repeats), "--json-out", str(out), *model,
        ]  # fmt: skip
        result = subprocess.run(command, env=version.env(), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{version.label}'s steps failed:\n{result.stderr[-3000:]}")
        return json.loads(out.read_text())


def section_table(found: dict, repeats: int) -> str:
    medians = {name: median_ms(times) for name, times in found["times"].items()}
    model_ms = medians[MODEL]
    lines = [
        f"| {name} ({found['steps'][name]}) | {medians[name]:.2f} | "
        f"{100 * medians[name] / model_ms:.1f}% |"
        for name in OVERHEAD
    ]
    overhead = sum(medians[name] for name in OVERHEAD)
    lines.append(
        f"| **node overhead (sum)** | **{overhead:.2f}** | **{100 * overhead / model_ms:.1f}%** |"
    )
    lines.append(f"| model ({found['steps'][MODEL]}) | {model_ms:.2f} | 100% |")
    return "\n".join(
        [
            "| per-frame step | median ms | share of model time |",
            "| --- | ---: | ---: |",
            *lines,
            "",
            f"Predictor: {found['config']}; medians of {repeats} calls each; "
            f"{found['detections']} detections published.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--model-config", type=Path, default=Path("config/model_default.yaml"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision",
        default="node",
        help="node (each version's node default), fp32, fp16 or bf16",
    )
    parser.add_argument("--repeats", type=int, default=20)
    add_argument(parser)
    parser.add_argument("--rounds", type=int, default=2, help="with --baseline: turns")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)  # a child's results
    args = parser.parse_args()
    from mtl_perception.ros.isolation import ensure_private_network

    ensure_private_network()
    found = versions(None if args.json_out else args.baseline)
    rounds = max(1, args.rounds) if len(found) > 1 else 1
    per_turn = max(1, args.repeats // rounds)
    bench = Bench(args)
    results: dict[str, dict] = {}
    try:
        for _ in range(rounds):
            for version in found:
                if version.is_checkout:
                    turn = {
                        "times": bench.time(per_turn),
                        "steps": bench.steps,
                        "config": bench.config_text,
                        "model": bench.model_name,
                        "detections": bench.detections,
                    }
                else:
                    turn = child(version, args, per_turn)
                kept = results.setdefault(version.label, {**turn, "times": {}})
                for name, times in turn["times"].items():
                    kept["times"].setdefault(name, []).extend(times)
    finally:
        bench.close()
    if args.json_out:
        args.json_out.write_text(json.dumps(results[found[0].label]))
        return 0
    repeats = per_turn * rounds
    in_w, in_h = bench.input_size
    precision = "node defaults" if args.precision == "node" else args.precision
    parts = [
        f"### Node overhead, {WIDTH}x{HEIGHT} bgr8 input, {args.device} {precision}\n\n"
        f"{header('node_overhead')}\nModel: {bench.model_name}; network input {in_w}x{in_h}. "
        f"Versions: {versions_line(found)}"
        + (f"; {rounds} turns each, in turn" if len(found) > 1 else "")
        + ".\n"
    ]
    for version in found:
        if len(found) > 1:
            parts.append(f"\n#### {version.label} ({version.ref})\n")
        parts.append("\n" + section_table(results[version.label], repeats) + "\n")
    if len(found) > 1:
        before, after = (results[v.label] for v in found)
        names = [*OVERHEAD, MODEL]

        def medians(found_times: dict) -> list[float]:
            values = [median_ms(found_times["times"][n]) for n in names]
            return [*values, sum(values[: len(OVERHEAD)])]

        parts.append(
            "\nBefore -> after, median ms (after / before):\n\n"
            + before_after_table(
                ["2048x1024 bgr8"],
                [*names, "node overhead (sum)"],
                [medians(before)],
                [medians(after)],
                digits=2,
            )
            + "\n"
        )
    section = "".join(parts)
    print(section)
    if args.write:
        write_section(f"node-overhead-{torch.device(args.device).type}", section)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
