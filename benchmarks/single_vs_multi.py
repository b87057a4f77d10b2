"""The paper's claim, side by side in one run: the multi-task network against the pair of
single-task networks it replaces (AdapNet++ alone, and the Trident detector with its own
ResNet-50 encoder; mtl_perception/model/single_task.py), parameters and time.

    .venv/bin/python benchmarks/single_vs_multi.py [--device cpu|cuda] [--batch 1]
        [--precision fp32|fp16|bf16] [--repeats 10] [--write]

Times the networks alone (no pre- or post-processing) at 768x384, eager, interleaved round by
round so that drifting clocks hit all three alike; median per network and the ratio
multi / (segmentation + detection).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import header, synchronize, write_section

from mtl_perception.model import ModelConfig, MultiTaskNet
from mtl_perception.model.single_task import DetectionOnly, SegmentationOnly

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def calibrated(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    with torch.no_grad():
        model.train()(images)
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = ModelConfig()
    images = torch.randn(args.batch, 3, config.input_height, config.input_width)
    networks = {
        "multi-task (ours)": MultiTaskNet(config),
        "segmentation alone (AdapNet++)": SegmentationOnly(config),
        "detection alone (own ResNet-50)": DetectionOnly(config),
    }
    images = images.to(args.device)
    networks = {k: calibrated(n.to(args.device), images[:1]) for k, n in networks.items()}
    dtype = DTYPES[args.precision]
    autocast = (
        torch.autocast(torch.device(args.device).type, dtype=dtype)
        if dtype
        else contextlib.nullcontext()
    )
    times: dict[str, list[float]] = {name: [] for name in networks}
    with torch.inference_mode(), autocast:
        for round_index in range(args.warmup + args.repeats):
            for name, network in networks.items():
                synchronize(args.device)
                start = time.perf_counter()
                network(images)
                synchronize(args.device)
                if round_index >= args.warmup:
                    times[name].append(time.perf_counter() - start)
    median = {name: 1e3 * float(torch.tensor(t).median()) for name, t in times.items()}
    params = {name: sum(p.numel() for p in n.parameters()) for name, n in networks.items()}
    names = list(networks)
    pair_ms = median[names[1]] + median[names[2]]
    pair_params = params[names[1]] + params[names[2]]
    rows = [f"| {name} | {params[name] / 1e6:.2f}M | {median[name]:.1f} |" for name in names]
    rows.append(f"| single-task pair (sum) | {pair_params / 1e6:.2f}M | {pair_ms:.1f} |")
    rows.append(
        f"| **multi-task / pair** | **{params[names[0]] / pair_params:.2f}x** | "
        f"**{median[names[0]] / pair_ms:.2f}x** |"
    )
    table = "\n".join(
        ["| network | parameters | median ms per batch |", "| --- | ---: | ---: |", *rows]
    )
    section = (
        f"### Multi-task vs single-task pair, {args.device}, batch {args.batch}, "
        f"{args.precision}, {config.input_width}x{config.input_height}\n\n"
        f"{header('single_vs_multi')}\n{table}\n\n"
        f"Median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds.\n"
    )
    print(section)
    if args.write:
        write_section(f"single-vs-multi-{torch.device(args.device).type}", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
