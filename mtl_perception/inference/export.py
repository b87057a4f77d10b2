"""Export a checkpoint's network to ONNX (opset 18 by default; >= 17).

    python -m mtl_perception.inference.export --checkpoint CKPT --out model.onnx
        [--height 384 --width 768] [--opset 18]      (console script: mtl-export)

The graph takes (B, 3, H, W) float images normalised like training (dynamic batch, fixed
H x W) and returns ``seg_logits`` and ``det_branch1..3``; the model config (classes, names,
anchors) and the input size are stored in the file's metadata, so
``Predictor.from_onnx(path)`` needs nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from ..model.checkpoint import load_model
from ..model.network import MultiTaskNet, check_input_size

OUTPUT_NAMES = ["seg_logits", "det_branch1", "det_branch2", "det_branch3"]


class InferenceGraph(nn.Module):
    """The network without its auxiliary heads' outputs: images -> (seg_logits, *detections)."""

    def __init__(self, model: MultiTaskNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(images)
        return (outputs.seg_logits, *outputs.detections)


def export_onnx(
    model: MultiTaskNet, out: str | Path, height: int, width: int, opset: int = 18
) -> Path:
    """Writes ``model`` (eval mode) to ``out`` with its config in the metadata."""
    import onnx

    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    check_input_size(height, width)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = InferenceGraph(model.eval()).cpu()
    # Batch 2: torch.export specialises a size-1 dimension, which would pin the graph to batch 1.
    example = torch.zeros(2, 3, height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["images"],
            output_names=OUTPUT_NAMES,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
            verbose=False,
        )
    proto = program.model_proto
    for key, value in {
        "mtl_perception.model_config": json.dumps(model.config.to_dict()),
        "mtl_perception.input_height": str(height),
        "mtl_perception.input_width": str(width),
    }.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    temporary = out.with_suffix(out.suffix + ".tmp")
    onnx.save(proto, str(temporary))
    temporary.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a checkpoint to ONNX.")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--height", type=int, help="input height, pixels (default: the model's)")
    parser.add_argument("--width", type=int, help="input width, pixels (default: the model's)")
    parser.add_argument("--opset", type=int, default=18)
    args = parser.parse_args(argv)
    try:
        model, _ = load_model(args.checkpoint)
        height = args.height or model.config.input_height
        width = args.width or model.config.input_width
        path = export_onnx(model, args.out, height, width, args.opset)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({height}x{width}, opset {args.opset})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
