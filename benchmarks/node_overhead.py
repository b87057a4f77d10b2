"""The node's per-frame cost around the model, as a fraction of model time (2048x1024 input).

    .venv/bin/python benchmarks/node_overhead.py [--checkpoint CKPT | --model-config YAML]
        [--device cpu|cuda] [--repeats 20] [--write]

Times, with the node's own functions and real rclpy publishers (a subscriber in the graph, so
every message is serialised and delivered; inside a loopback-only namespace):
- conversion: sensor_msgs/Image bgr8 2048x1024 (the usual camera driver encoding) -> RGB array
  (``image_to_rgb``);
- resize: upload of the full frame, bilinear resize and normalisation on the device, plus the
  mask's nearest up-sampling back to 2048x1024 (the Predictor's own steps);
- publishing: mask -> mono8 Image, detections -> Detection2DArray, both published;
- model: ``predict`` at the network input size (network and post-processing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import header, median_ms, time_calls, write_section

from mtl_perception.ros.isolation import ensure_private_network

WIDTH, HEIGHT = 2048, 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--model-config", type=Path, default=Path("config/model_default.yaml"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    ensure_private_network()

    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2DArray

    from mtl_perception.data.synthetic import generate_scene
    from mtl_perception.inference.predictor import Predictor, PredictorConfig
    from mtl_perception.model import ModelConfig, MultiTaskNet, normalize_images
    from mtl_perception.ros.conversions import encode_image, image_to_rgb
    from mtl_perception.ros.messages import detections_message
    from mtl_perception.ros.node import OUTPUT_QOS

    config = PredictorConfig(device=args.device, precision=args.precision, score_threshold=0.25)
    if args.checkpoint:
        predictor = Predictor.from_checkpoint(args.checkpoint, config)
        model_name = str(args.checkpoint)
    else:
        torch.manual_seed(0)
        model_config = ModelConfig.from_yaml(args.model_config)
        model = MultiTaskNet(model_config).train()
        with torch.no_grad():
            model(torch.randn(2, 3, model_config.input_height, model_config.input_width))
        predictor = Predictor(model.eval(), model_config, config)
        model_name = f"{args.model_config} (random weights, calibrated batch norm)"
    in_h, in_w = predictor.input_size
    frame = generate_scene(WIDTH, HEIGHT, 7)[0]
    small = generate_scene(in_w, in_h, 7)[0]
    msg = encode_image(frame[..., ::-1], "bgr8", Header(frame_id="camera"))

    rclpy.init()
    node = rclpy.create_node("overhead_benchmark")
    listener = rclpy.create_node("overhead_listener")
    mask_pub = node.create_publisher(Image, "semantic", OUTPUT_QOS)
    det_pub = node.create_publisher(Detection2DArray, "detections", OUTPUT_QOS)
    listener.create_subscription(Image, "semantic", lambda _: None, qos_profile_sensor_data)
    listener.create_subscription(
        Detection2DArray, "detections", lambda _: None, qos_profile_sensor_data
    )
    prediction = predictor.predict(frame)[0]

    def publish() -> None:
        mask_pub.publish(encode_image(prediction.mask, "mono8", msg.header))
        det_pub.publish(
            detections_message(msg.header, prediction.boxes, prediction.scores, prediction.classes)
        )

    logits = torch.randn(1, predictor.model_config.num_seg_classes, in_h, in_w, device=args.device)

    def resize() -> None:
        with torch.inference_mode():
            staged = predictor._upload([frame]).float()
            resized = F.interpolate(staged, size=(in_h, in_w), mode="bilinear", align_corners=False)
            normalize_images(resized)
            predictor._mask(logits, (HEIGHT, WIDTH)).cpu()

    r, d = args.repeats, args.device
    times = {
        "conversion (Image -> RGB)": time_calls(lambda: image_to_rgb(msg, 1 << 31), r, 2, d),
        "resize": time_calls(resize, r, 2, d),
        "model (predict at input size)": time_calls(lambda: predictor.predict(small), r, 2, d),
        "publishing (encode + publish)": time_calls(publish, r, 2, d),
    }
    rclpy.shutdown()
    medians = {name: median_ms(t) for name, t in times.items()}
    model_ms = medians["model (predict at input size)"]
    resize_ms = medians["resize"]
    rows = [
        ("conversion (Image -> RGB)", medians["conversion (Image -> RGB)"]),
        ("resize (upload, resize, mask upsampling)", resize_ms),
        ("publishing (encode + publish)", medians["publishing (encode + publish)"]),
    ]
    overhead = sum(ms for _, ms in rows)
    lines = [f"| {name} | {ms:.2f} | {100 * ms / model_ms:.1f}% |" for name, ms in rows]
    lines.append(
        f"| **node overhead (sum)** | **{overhead:.2f}** | **{100 * overhead / model_ms:.1f}%** |"
    )
    lines.append(f"| model (network + post-processing at {in_w}x{in_h}) | {model_ms:.2f} | 100% |")
    table = "\n".join(
        ["| per-frame step | median ms | share of model time |", "| --- | ---: | ---: |", *lines]
    )
    section = (
        f"### Node overhead, {WIDTH}x{HEIGHT} bgr8 input, {args.device} {args.precision}\n\n"
        f"{header('node_overhead')}\nModel: {model_name}.\n\n{table}\n\n"
        f"Medians of {args.repeats} calls each; {len(prediction.boxes)} detections published.\n"
    )
    print(section)
    if args.write:
        write_section(f"node-overhead-{torch.device(args.device).type}", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
