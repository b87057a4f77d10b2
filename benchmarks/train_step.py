"""Training throughput (images/s) per precision and memory format, on this machine.

    .venv/bin/python benchmarks/train_step.py [--config config/train_synthetic_small.yaml]
        [--batch 8] [--device cpu] [--repeats 10] [--write]

One optimizer step = forward, the multi-task loss, backward, Adam. Prints a Markdown table with
the median and p95 over ``--repeats`` steps (after two warm-up steps) and the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import header, write_section

from mtl_perception.losses import MultiTaskLoss
from mtl_perception.model import MultiTaskNet
from mtl_perception.training.config import TrainConfig


def step_times(
    config, device: str, batch: int, precision: str, channels_last: bool, repeats: int
) -> list[float]:
    torch.manual_seed(0)
    model_config = config.model
    model = MultiTaskNet(model_config).to(device).train()
    height, width = model_config.input_height, model_config.input_width
    images = torch.randn(batch, 3, height, width, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    criterion = MultiTaskLoss(torch.tensor(model_config.anchors)).to(device)
    segmentation = torch.randint(
        0, model_config.num_seg_classes, (batch, height, width), device=device
    )
    boxes = torch.tensor(
        [[[10.0, 10.0, 50.0, 60.0], [100.0, 40.0, 180.0, 120.0]]] * batch, device=device
    )
    classes = torch.zeros(batch, 2, dtype=torch.long, device=device)
    optimizer = torch.optim.Adam(model.parameters(), eps=1e-10)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    times = []
    for index in range(repeats + 2):
        start = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            outputs = model(images)
        loss = criterion(outputs, segmentation, boxes, classes)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if index >= 2:
            times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/train_synthetic_small.yaml"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    config = TrainConfig.from_yaml(args.config)
    precisions = ["fp32", "bf16"] + (["fp16"] if args.device.startswith("cuda") else [])
    lines = [
        f"model: {args.config} ({config.model.width_multiplier}x width, "
        f"{config.model.input_width}x{config.model.input_height}), "
        f"batch {args.batch}, device {args.device}\n",
        "| precision | memory format | step median (s) | step p95 (s) | images/s (median) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    print("\n".join(lines), flush=True)
    for precision in precisions:
        for channels_last in (False, True):
            times = sorted(
                step_times(config, args.device, args.batch, precision, channels_last, args.repeats)
            )
            median = statistics.median(times)
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            layout = "channels_last" if channels_last else "contiguous"
            lines.append(
                f"| {precision} | {layout} | {median:.3f} | {p95:.3f} | {args.batch / median:.1f} |"
            )
            print(lines[-1], flush=True)
    device = torch.device(args.device).type
    section = f"### Training step, {device}\n\n{header('train_step')}\n" + "\n".join(lines) + "\n"
    print(section)
    if args.write:
        write_section(f"train-step-{device}", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
