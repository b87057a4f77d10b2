"""Parameter count per part and output shapes of the multi-task network.

python -m mtl_perception.model.summary [--config FILE] [--height 384 --width 768] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..cli import ToolParser, multiple_of, tool_main
from .config import OUTPUT_STRIDE, ModelConfig
from .network import MultiTaskNet

# Paper, abstract and Table 3: parameters of the whole multi-task network.
PAPER_TOTAL_PARAMS = 37.9e6
# AdapNet++ (Valada et al., IJCV 2019) as reported for 12 classes: the segmentation side alone.
ADAPNET_PP_PARAMS = 30.20e6


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def summarize(config: ModelConfig, height: int, width: int) -> dict[str, Any]:
    """Parameter counts and output shapes for a (1, 3, height, width) input.

    Shapes are computed on the ``meta`` device, so no memory or time is spent on a forward pass.
    """
    with torch.device("meta"):
        model = MultiTaskNet(config).eval()
        outputs = model(torch.empty(1, 3, height, width))
    parts = {name: count_parameters(part) for name, part in model.parts().items()}
    total = count_parameters(model)
    shapes = {
        "seg_logits": list(outputs.seg_logits.shape),
        "aux1_logits": list(outputs.aux1_logits.shape),
        "aux2_logits": list(outputs.aux2_logits.shape),
    }
    for dilation, branch in zip(model.detector.trident.dilations, outputs.detections, strict=True):
        shapes[f"detections_dilation{dilation}"] = list(branch.shape)
    return {
        "total_params": total,
        "parts": parts,
        "outputs": shapes,
        "input": [1, 3, height, width],
        "width_multiplier": config.width_multiplier,
    }


def explain(summary: dict[str, Any]) -> str:
    """Where the count differs from the paper's 37.9M, in words."""
    parts = summary["parts"]
    total = summary["total_params"]
    segmentation = parts["encoder"] + parts["easpp"] + parts["decoder"]
    if summary["width_multiplier"] != 1.0:
        return (
            f"width multiplier {summary['width_multiplier']}: a scaled-down variant, not the "
            f"paper's network ({PAPER_TOTAL_PARAMS / 1e6:.1f}M at width 1.0)."
        )
    return (
        f"paper: {PAPER_TOTAL_PARAMS / 1e6:.1f}M; this network: {total / 1e6:.2f}M "
        f"({(total - PAPER_TOTAL_PARAMS) / PAPER_TOTAL_PARAMS:+.2%}).\n"
        f"  segmentation side (encoder + eASPP + decoder): {segmentation / 1e6:.2f}M vs "
        f"{ADAPNET_PP_PARAMS / 1e6:.2f}M reported for AdapNet++ (the layer facts of its public "
        f"code; the eASPP pooling branch has a bias instead of BN).\n"
        f"  detector: {parts['detector'] / 1e6:.2f}M vs about "
        f"{(PAPER_TOTAL_PARAMS - ADAPNET_PP_PARAMS) / 1e6:.2f}M implied by the paper, whose "
        f"detector widths are not published; ours are chosen in detector.py (1024-wide Trident "
        f"block, weights shared by its three branches, so they count once)."
    )


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"input {summary['input']}", "", f"{'part':<10} {'parameters':>14}"]
    for name, count in summary["parts"].items():
        lines.append(f"{name:<10} {count:>14,}")
    lines.append(f"{'total':<10} {summary['total_params']:>14,}")
    lines += ["", "outputs:"]
    lines += [f"  {name:<22} {tuple(shape)}" for name, shape in summary["outputs"].items()]
    lines += ["", explain(summary)]
    return "\n".join(lines)


def build_parser() -> ToolParser:
    parser = ToolParser(
        prog="python -m mtl_perception.model.summary",
        description=__doc__.strip().splitlines()[0],
    )
    parser.add_argument("--config", type=Path, help="model config YAML (default: the paper's)")
    size = multiple_of(OUTPUT_STRIDE)
    parser.add_argument("--height", type=size, default=None, help="input height in pixels")
    parser.add_argument("--width", type=size, default=None, help="input width in pixels")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


@tool_main(build_parser)
def main(args: argparse.Namespace) -> int:
    config = ModelConfig.from_yaml(args.config) if args.config else ModelConfig()
    height = args.height or config.input_height
    width = args.width or config.input_width
    summary = summarize(config, height, width)
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
