"""Export a checkpoint's network to ONNX (opset 18 by default; >= 17).

    python -m mtl_perception.inference.export --checkpoint CKPT --out NEW.onnx
        [--height 384 --width 768] [--opset 18] [--debug]      (console script: mtl-export)

The graph takes (B, 3, H, W) float images normalised like training (dynamic batch, fixed
H x W) and returns ``seg_logits`` and ``det_branch1..3``; the model config (classes, names,
anchors) and the input size are stored in the file's metadata, so
``Predictor.from_onnx(path)`` needs nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..cli import ToolParser, multiple_of, positive_int, tool_main
from ..model.checkpoint import load_model
from ..model.network import MultiTaskNet, check_input_size
from ..outputs import check_new_file, write_bytes
from .onnx_backend import CONFIG_KEY, HEIGHT_KEY, INPUT_NAME, OUTPUT_NAMES, WIDTH_KEY

MIN_OPSET = 17


class InferenceGraph(nn.Module):
    """The network without its auxiliary heads' outputs: images -> (seg_logits, *detections)."""

    def __init__(self, model: MultiTaskNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(images)
        return (outputs.seg_logits, *outputs.detections)


# torch.onnx logs "torchvision is not installed. Skipping torchvision::nms" (roi_align, ...) for
# each torchvision operator it would register: the network uses none of them.
_EXPORTER_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"


def _not_a_torchvision_note(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("torchvision is not installed")


@contextlib.contextmanager
def _without_torchvision_notes() -> Iterator[None]:
    """Drops torch.onnx's "torchvision is not installed" warnings while it exports (only
    those: its other log records pass)."""
    logger = logging.getLogger(_EXPORTER_REGISTRY_LOGGER)
    logger.addFilter(_not_a_torchvision_note)
    try:
        yield
    finally:
        logger.removeFilter(_not_a_torchvision_note)


def export_onnx(
    model: MultiTaskNet, out: str | Path, height: int, width: int, opset: int = 18
) -> Path:
    """Writes ``model`` (eval mode) to ``out`` atomically (a temporary file renamed when
    complete), with its config in the metadata."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    check_input_size(height, width)
    out = Path(out)
    graph = InferenceGraph(model.eval()).cpu()
    # Batch 2: torch.export specialises a size-1 dimension, which would pin the graph to batch 1.
    example = torch.zeros(2, 3, height, width)
    with warnings.catch_warnings(), _without_torchvision_notes():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
            verbose=False,
        )
    proto = program.model_proto
    for key, value in {
        CONFIG_KEY: json.dumps(model.config.to_dict()),
        HEIGHT_KEY: str(height),
        WIDTH_KEY: str(width),
    }.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return write_bytes(out, proto.SerializeToString())


def opset_version(text: str) -> int:
    """argparse type: an ONNX opset the exporter supports (>= 17)."""
    value = positive_int(text)
    if value < MIN_OPSET:
        raise argparse.ArgumentTypeError(f"must be >= {MIN_OPSET}, got {value}")
    return value


def build_parser() -> ToolParser:
    parser = ToolParser(prog="mtl-export", description="Export a checkpoint to ONNX.")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="new .onnx file")
    size = multiple_of(16)
    parser.add_argument("--height", type=size, help="input height, pixels (default: the model's)")
    parser.add_argument("--width", type=size, help="input width, pixels (default: the model's)")
    parser.add_argument("--opset", type=opset_version, default=18, help="ONNX opset, >= 17")
    return parser


@tool_main(build_parser)
def main(args: argparse.Namespace) -> int:
    """``mtl-export``: checks ``--out`` before loading and exporting."""
    check_new_file(args.out, "--out")
    model, _ = load_model(args.checkpoint)
    height = args.height or model.config.input_height
    width = args.width or model.config.input_width
    path = export_onnx(model, args.out, height, width, args.opset)
    print(f"wrote {path} ({height}x{width}, opset {args.opset})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
