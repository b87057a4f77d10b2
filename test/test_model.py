"""The multi-task network: shapes, parameter count, shared Trident weights, gradients, freezing."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtl_perception.model import (
    ModelConfig,
    MultiTaskNet,
    freeze_detector,
    freeze_segmentation,
    unfreeze_all,
)
from mtl_perception.model.summary import PAPER_TOTAL_PARAMS

REPO = Path(__file__).resolve().parent.parent
SMALL = ModelConfig(width_multiplier=0.125)


def small_model(seed: int = 0) -> MultiTaskNet:
    torch.manual_seed(seed)
    return MultiTaskNet(SMALL)


def random_weighted_loss(outputs, generator: torch.Generator) -> torch.Tensor:
    """A loss touching every output with random weights (a plain sum has zero gradient
    through batch norm, which would hide missing gradients)."""
    tensors = [outputs.seg_logits, outputs.aux1_logits, outputs.aux2_logits, *outputs.detections]
    return sum((t * torch.randn(t.shape, generator=generator)).mean() for t in tensors)  # type: ignore[return-value]


def test_default_network_matches_paper_parameter_count_and_shapes():
    torch.manual_seed(0)
    model = MultiTaskNet(ModelConfig()).eval()
    total = sum(p.numel() for p in model.parameters())
    assert abs(total - PAPER_TOTAL_PARAMS) / PAPER_TOTAL_PARAMS <= 0.03, total
    with torch.no_grad():
        out = model(torch.randn(1, 3, 384, 768))
    assert out.seg_logits.shape == (1, 12, 384, 768)
    assert out.aux1_logits.shape == (1, 12, 96, 192)
    assert out.aux2_logits.shape == (1, 12, 48, 96)
    assert len(out.detections) == 3
    for branch in out.detections:
        assert branch.shape == (1, 3, 5 + 3, 24, 48)  # the paper's 24 x 48 x [3 * (4 + 1 + 3)]


@pytest.mark.parametrize(("height", "width", "batch"), [(64, 128, 2), (96, 160, 1)])
def test_small_variant_shapes(height, width, batch):
    model = small_model().eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 3, height, width))
    assert out.seg_logits.shape == (batch, 12, height, width)
    assert out.aux1_logits.shape == (batch, 12, height // 4, width // 4)
    assert out.aux2_logits.shape == (batch, 12, height // 8, width // 8)
    for branch in out.detections:
        assert branch.shape == (batch, 3, 8, height // 16, width // 16)


@pytest.mark.parametrize("size", [(100, 128), (64, 120), (0, 64)])
def test_input_sides_must_be_multiples_of_16(size):
    with pytest.raises(ValueError, match="multiples of 16"):
        small_model()(torch.randn(1, 3, *size))


def test_trident_branches_share_one_set_of_weights():
    model = small_model().eval()
    trident = model.detector.trident
    x = torch.randn(1, trident.blocks[0].conv1.in_channels, 6, 10)
    with torch.no_grad():
        before = trident(x)
        # Branches see the same weights at different dilations, so their outputs differ...
        assert not torch.allclose(before[0], before[1])
        assert not torch.allclose(before[1], before[2])
        # ...and changing the one tensor changes every branch.
        trident.blocks[0].conv2.weight.add_(0.5)
        after = trident(x)
    for old, new in zip(before, after, strict=True):
        assert not torch.allclose(old, new)
    # One set of tensors: the block holds exactly one branch's worth of parameters.
    ids = {id(p) for p in trident.parameters()}
    assert len(ids) == sum(1 for _ in trident.parameters())
    assert len(trident.blocks) == SMALL.trident_blocks


def test_backward_reaches_every_trainable_parameter():
    model = small_model().train()
    outputs = model(torch.randn(2, 3, 64, 128))
    random_weighted_loss(outputs, torch.Generator().manual_seed(1)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    zero_grad = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
    assert not no_grad, no_grad
    assert not zero_grad, zero_grad


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


def _train_steps(model: MultiTaskNet, steps: int = 2) -> None:
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    generator = torch.Generator().manual_seed(2)
    for _ in range(steps):
        optimizer.zero_grad()
        random_weighted_loss(model(torch.randn(2, 3, 64, 128)), generator).backward()
        optimizer.step()


@pytest.mark.parametrize(
    ("freeze", "frozen", "trained"),
    [
        (freeze_segmentation, ("encoder", "easpp", "decoder"), ("detector",)),
        (freeze_detector, ("detector",), ("encoder", "easpp", "decoder")),
    ],
)
def test_freezing_keeps_weights_and_batchnorm_statistics(freeze, frozen, trained):
    model = small_model()
    freeze(model)
    model.train()  # a frozen part stays in eval mode even when the model trains
    assert all(not getattr(model, name).training for name in frozen)
    before = {name: _snapshot(getattr(model, name)) for name in (*frozen, *trained)}
    _train_steps(model)
    for name in frozen:
        assert _changed(before[name], getattr(model, name)) == [], name
    for name in trained:
        changed = _changed(before[name], getattr(model, name))
        assert any(k.endswith("running_mean") for k in changed), name  # BN statistics moved
        assert any(k.endswith("weight") for k in changed), name

    unfreeze_all(model)
    assert all(p.requires_grad for p in model.parameters())
    assert all(getattr(model, name).training for name in frozen)


def test_config_round_trips_through_yaml(tmp_path):
    config = ModelConfig(width_multiplier=0.5, trident_blocks=2, det_class_names=("a", "b", "c"))
    path = tmp_path / "model.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"model": config.to_dict()}))
    assert ModelConfig.from_yaml(path) == config
    for name in ("model_default.yaml", "model_small.yaml"):
        loaded = ModelConfig.from_yaml(REPO / "config" / name)
        assert loaded.num_seg_classes == 12 and loaded.num_det_classes == 3


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"anchors": [[[1, 2]] * 3] * 2}, "anchors must be 3 branches"),
        ({"anchors": [[[1, -2]] * 3] * 3}, "positive"),
        ({"input_height": 100}, "multiple of 16"),
        ({"colour": "red"}, r"unknown keys \['colour'\]"),
        ({"seg_class_names": ["a"]}, "seg_class_names has 1 names for 12 classes"),
    ],
)
def test_config_rejects_bad_values_with_clear_messages(tmp_path, values, message):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model": values}))
    with pytest.raises(ValueError, match=message) as error:
        ModelConfig.from_yaml(path)
    assert str(path) in str(error.value)


def test_summary_cli_reports_parts_outputs_and_json():
    result = subprocess.run(
        [sys.executable, "-m", "mtl_perception.model.summary", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(result.stdout)
    assert set(summary["parts"]) == {"encoder", "easpp", "decoder", "detector"}
    assert summary["total_params"] == sum(summary["parts"].values())
    assert summary["outputs"]["detections_dilation1"] == [1, 3, 8, 24, 48]
    assert summary["outputs"]["seg_logits"] == [1, 12, 384, 768]
    table = subprocess.run(
        [sys.executable, "-m", "mtl_perception.model.summary"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "paper: 37.9M" in table and "detector" in table


def test_deepcopy_keeps_frozen_state():
    model = small_model()
    freeze_detector(model)
    clone = copy.deepcopy(model).train()
    assert not clone.detector.training and clone.encoder.training
