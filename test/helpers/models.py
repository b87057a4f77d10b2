"""Small networks for tests: calibrated like trained ones, saved as real checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from helpers.fast_selection import refuse_in_fast_test
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


def untrained_small_model(
    seed: int = 0, config: ModelConfig = SMALL_SCALED_ANCHORS, head_std: float = 2.0
) -> MultiTaskNet:
    """A small network in eval mode that needs no training (a few seconds), with a trained one's
    spread of outputs: for the fast tests of what holds for any network (batching, post-processing
    paths, option checks), so the fast selection waits for no training run.

    Its BN statistics come from four synthetic scenes (seeds 101..104, not those tests predict);
    then each detection head's raw outputs are scaled to ``head_std`` across those scenes (the
    focal-loss prior biases kept), so scores spread over (0, 1) with tens of overlapping boxes
    per image above 0.05, as a trained network's do (a network calibrated on random images scores
    1.0 almost everywhere on scenes).

    Args:
        seed: the torch seed of the initial weights.
        config: the network (default :data:`SMALL_SCALED_ANCHORS`, boxes sized for 256x128).
        head_std: standard deviation of each raw detection output before its bias.
    """
    from mtl_perception.data.synthetic import generate_scene
    from mtl_perception.model import normalize_images

    scenes = [
        generate_scene(config.input_width, config.input_height, scene_seed)[0]
        for scene_seed in range(101, 105)
    ]
    images = normalize_images(torch.from_numpy(np.stack(scenes)).permute(0, 3, 1, 2))
    torch.manual_seed(seed)
    model = MultiTaskNet(config).train()
    raw: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for _ in range(3):
            model(images)  # BN running statistics from the scenes
        model.eval()
        hooks = [
            head.register_forward_hook(lambda _m, _i, out, k=k: raw.__setitem__(k, out))
            for k, head in enumerate(model.detector.heads)
        ]
        model(images, segmentation=False)
        for hook in hooks:
            hook.remove()
        for k, head in enumerate(model.detector.heads):
            outputs = raw[k] - head.bias.view(1, -1, 1, 1)  # (B, A * (5 + K), h, w)
            spread = outputs.transpose(0, 1).flatten(1).std(dim=1)  # (A * (5 + K),)
            head.weight.mul_((head_std / spread).view(-1, 1, 1, 1))
    return model


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

    refuse_in_fast_test(f"a {max(steps)}-step training run (minutes on the robot's CPU)")
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
