"""Small networks for tests: calibrated like trained ones, saved as real checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from mtl_perception.model import ModelConfig, MultiTaskNet
from mtl_perception.model.checkpoint import save_checkpoint

SEG_NAMES = (
    "void",
    "Sky",
    "Building",
    "Road",
    "Sidewalk",
    "Fence",
    "Vegetation",
    "Pole",
    "Car/Truck/Bus",
    "Traffic Sign",
    "Pedestrian",
    "Rider/Bicycle/Motorcycle",
)
DET_NAMES = ("Car/Truck/Bus", "Person/Rider", "Bicycle/Motorcycle")
SMALL = ModelConfig(width_multiplier=0.125, input_height=128, input_width=256)
SMALL_NAMED = ModelConfig(
    width_multiplier=0.125,
    input_height=128,
    input_width=256,
    seg_class_names=SEG_NAMES,
    det_class_names=DET_NAMES,
)


def calibrated_small_model(seed: int = 0, config: ModelConfig = SMALL) -> MultiTaskNet:
    """A small network in eval mode whose BN statistics come from data, as a trained one's do
    (raw He-initialised networks in eval mode have activations in the thousands)."""
    torch.manual_seed(seed)
    model = MultiTaskNet(config).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, config.input_height, config.input_width))
    return model.eval()


def save_model(path: Path, model: MultiTaskNet) -> Path:
    save_checkpoint(path, {"model_config": model.config.to_dict(), "model": model.state_dict()})
    return path
