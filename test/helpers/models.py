"""Small networks for tests: calibrated like trained ones, saved as real checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from mtl_perception.model import ModelConfig, MultiTaskNet
from mtl_perception.model.checkpoint import save_checkpoint
from mtl_perception.model.config import DEFAULT_ANCHORS

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


# SMALL with anchors for boxes at 256x128 (the defaults are k-means at 768x384, a third).
SMALL_SCALED_ANCHORS = ModelConfig(
    width_multiplier=0.125,
    input_height=128,
    input_width=256,
    anchors=tuple(
        tuple(tuple(v / 3 for v in size) for size in branch) for branch in DEFAULT_ANCHORS
    ),
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


def trained_small_model(data_dir: Path, steps: int = 150) -> MultiTaskNet:
    """SMALL_SCALED_ANCHORS trained briefly on 4 synthetic scenes: confident masks and a few
    real detections with spread-out scores, for comparisons where a random network's near-tied
    logits would flip under any rounding."""
    return trained_small_models(data_dir, (steps,))[0]


def trained_small_models(data_dir: Path, steps: tuple[int, ...]) -> list[MultiTaskNet]:
    """One training run of :func:`trained_small_model`, the network kept (in eval mode) after
    each of ``steps`` Adam steps: checkpoints of one model trained shorter and longer."""
    import copy

    from mtl_perception.data.cityscapes import CityscapesDataset
    from mtl_perception.data.labels import ClassMap
    from mtl_perception.data.loader import collate
    from mtl_perception.data.synthetic import write_dataset
    from mtl_perception.data.transforms import ValidationResize
    from mtl_perception.losses import LossConfig, MultiTaskLoss
    from mtl_perception.model import normalize_images

    write_dataset(data_dir, {"train": 4}, seed=5, width=512, height=256, progress=False)
    dataset = CityscapesDataset(
        data_dir, "train", ClassMap.from_yaml(), ValidationResize(128, 256, min_box_size=2)
    )
    batch = collate([dataset[i] for i in range(len(dataset))])
    torch.manual_seed(0)
    model = MultiTaskNet(SMALL_SCALED_ANCHORS).train()
    anchors = torch.tensor(SMALL_SCALED_ANCHORS.anchors)
    criterion = MultiTaskLoss(anchors, 16, LossConfig(box_loss="giou"))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    images = normalize_images(batch.images)
    kept = {}
    for step in range(1, max(steps) + 1):
        optimizer.zero_grad()
        criterion(model(images), batch.segmentation, batch.boxes, batch.classes)["loss"].backward()
        optimizer.step()
        if step in steps:
            kept[step] = copy.deepcopy(model).eval()
    return [kept[n] for n in steps]
