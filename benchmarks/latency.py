"""Model latency and throughput per Predictor fast path and batch size, at 768x384.

    .venv/bin/python benchmarks/latency.py [--device cpu|cuda] [--batches 1 4 8]
        [--paths eager channels_last ...] [--repeats 10] [--checkpoint CKPT] [--write]

Times ``Predictor.predict`` on B uint8 768x384 images (the network input size, so no resize):
upload, normalisation, network, post-processing, download. Median and p95 over ``--repeats``
calls after warm-up calls (compilation and graph capture happen there); throughput = B / median.
Without ``--checkpoint`` the paper-size network has random weights with data-calibrated batch
norm. ``--write`` puts the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import header, median_ms, p95_ms, time_calls, write_section

from mtl_perception.inference.export import export_onnx
from mtl_perception.inference.predictor import Predictor, PredictorConfig
from mtl_perception.model import ModelConfig, MultiTaskNet
from mtl_perception.model.checkpoint import load_model

PATHS = {
    "eager": {},
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "fp16_channels_last": {"precision": "fp16", "channels_last": True},
    "compile": {"compile": "default"},
    "compile_max_autotune": {"compile": "max-autotune"},
    "compile_reduce_overhead": {"compile": "reduce-overhead", "preallocate": True},
    "cuda_graph": {"cuda_graph": True, "preallocate": True},
    "cuda_graph_fp16": {"cuda_graph": True, "preallocate": True, "precision": "fp16"},
    "cuda_graph_fp16_channels_last": {
        "cuda_graph": True,
        "preallocate": True,
        "precision": "fp16",
        "channels_last": True,
    },
    "onnxruntime": {"backend": "onnxruntime"},
}
CPU_DEFAULT = ["eager", "channels_last", "bf16", "compile", "onnxruntime"]
CUDA_ONLY = {"fp16", "fp16_channels_last", "compile_reduce_overhead"} | {
    p for p in PATHS if p.startswith("cuda_graph")
}


def build_model(checkpoint: Path | None) -> tuple[MultiTaskNet, ModelConfig]:
    if checkpoint:
        model, content = load_model(checkpoint, "cpu")
        return model, ModelConfig.from_dict(content["model_config"])
    torch.manual_seed(0)
    config = ModelConfig()
    model = MultiTaskNet(config).train()
    with torch.no_grad():  # batch-norm statistics from data, as a trained network has
        model(torch.randn(2, 3, config.input_height, config.input_width))
    return model.eval(), config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--paths", nargs="+", choices=sorted(PATHS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    paths = args.paths or (list(PATHS) if cuda else CPU_DEFAULT)
    model, config = build_model(args.checkpoint)
    height, width = config.input_height, config.input_width
    rng = np.random.default_rng(0)
    onnx_path = Path("/tmp/mtl_perception_latency.onnx")
    rows = []
    for name in paths:
        if name in CUDA_ONLY and not cuda:
            rows.append(f"| {name} | - | - | - | - | not available on CPU |")
            continue
        options = dict(PATHS[name])
        try:
            if options.get("backend") == "onnxruntime":
                export_onnx(model, onnx_path, height, width)
                options.pop("backend")
                predictor = Predictor.from_onnx(onnx_path, PredictorConfig(device=args.device))
            else:
                predictor = Predictor(model, config, PredictorConfig(device=args.device, **options))
            for batch in args.batches:
                images = [
                    rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(batch)
                ]
                run = lambda p=predictor, i=images: p.predict(i)  # noqa: E731
                times = time_calls(run, args.repeats, args.warmup, args.device)
                median = median_ms(times)
                rows.append(
                    f"| {name} | {batch} | {median:.1f} | {p95_ms(times):.1f} | "
                    f"{1e3 * batch / median:.1f} | |"
                )
                print(rows[-1], flush=True)
        except Exception as error:  # a path this machine cannot run is reported, not fatal
            rows.append(f"| {name} | - | - | - | - | failed: {type(error).__name__}: {error} |")
            print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| fast path | batch | median (ms) | p95 (ms) | images/s | note |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
            *rows,
        ]
    )
    section = (
        f"### Model latency, {args.device}, {width}x{height}\n\n{header('latency')}\n{table}\n"
    )
    print(section)
    if args.write:
        write_section(f"latency-{'cuda' if cuda else 'cpu'}", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
