"""Writes a checkpoint of an untrained network for speed benchmarks on machines that have no
trained one (a fresh CUDA machine): weights He-initialised, batch-norm statistics from random
images so activations have a trained network's scale. Never for accuracy.

    python benchmarks/untrained_checkpoint.py OUT.pt [--model-config config/model_default.yaml]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl_perception.model import ModelConfig, MultiTaskNet
from mtl_perception.model.checkpoint import save_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model-config", default="config/model_default.yaml")
    args = parser.parse_args()
    config = ModelConfig.from_yaml(args.model_config)
    torch.manual_seed(0)
    model = MultiTaskNet(config).train()
    with torch.no_grad():
        model(torch.randn(2, 3, config.input_height, config.input_width))
    weights = model.eval().state_dict()
    save_checkpoint(args.out, {"model_config": config.to_dict(), "model": weights})
    print(f"wrote untrained {config.input_width}x{config.input_height} checkpoint {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
