"""Loading ImageNet weights in timm's resnetv2_50 layout into the encoder."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from mtl_perception.model import ModelConfig, MultiTaskNet
from mtl_perception.model.pretrained import load_pretrained_encoder

DEPTHS = (3, 4, 6, 3)
WIDTHS = (256, 512, 1024, 2048)


def _bn(state: dict, prefix: str, channels: int, gen: torch.Generator) -> None:
    state[f"{prefix}.weight"] = torch.rand(channels, generator=gen) + 0.5
    state[f"{prefix}.bias"] = torch.randn(channels, generator=gen)
    state[f"{prefix}.running_mean"] = torch.randn(channels, generator=gen)
    state[f"{prefix}.running_var"] = torch.rand(channels, generator=gen) + 0.5
    state[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)


def timm_resnetv2_50_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with exactly the keys and shapes of timm's resnetv2_50."""
    gen = torch.Generator().manual_seed(seed)
    state = {"stem.conv.weight": torch.randn(64, 3, 7, 7, generator=gen)}
    in_chs = 64
    for s, (depth, out_chs) in enumerate(zip(DEPTHS, WIDTHS, strict=True)):
        mid = out_chs // 4
        for u in range(depth):
            p = f"stages.{s}.blocks.{u}"
            if u == 0:
                state[f"{p}.downsample.conv.weight"] = torch.randn(
                    out_chs, in_chs, 1, 1, generator=gen
                )
            _bn(state, f"{p}.norm1", in_chs, gen)
            state[f"{p}.conv1.weight"] = torch.randn(mid, in_chs, 1, 1, generator=gen)
            _bn(state, f"{p}.norm2", mid, gen)
            state[f"{p}.conv2.weight"] = torch.randn(mid, mid, 3, 3, generator=gen)
            _bn(state, f"{p}.norm3", mid, gen)
            state[f"{p}.conv3.weight"] = torch.randn(out_chs, mid, 1, 1, generator=gen)
            in_chs = out_chs
    _bn(state, "norm", 2048, gen)
    state["head.fc.weight"] = torch.randn(1000, 2048, 1, 1, generator=gen)
    state["head.fc.bias"] = torch.randn(1000, generator=gen)
    return state


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return MultiTaskNet(ModelConfig()).encoder


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_layout_maps_onto_encoder(tmp_path, encoder, suffix):
    state = timm_resnetv2_50_state()
    path = tmp_path / f"resnetv2_50{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)

    report = load_pretrained_encoder(encoder, path)

    loaded = encoder.state_dict()
    assert torch.equal(loaded["stem.conv.weight"], state["stem.conv.weight"])
    assert torch.equal(loaded["norm.running_var"], state["norm.running_var"])
    # A plain unit (block 1 unit 1) takes conv2 as is, with its projection shortcut.
    for key in ("conv2.weight", "downsample.conv.weight", "norm2.running_mean"):
        assert torch.equal(loaded[f"stages.0.blocks.0.{key}"], state[f"stages.0.blocks.0.{key}"])
    # A multiscale unit (block 3 unit 4) splits the 3x3 filters between its two rates.
    pretrained = state["stages.2.blocks.3.conv2.weight"]
    assert torch.equal(loaded["stages.2.blocks.3.conv2.halves.0.weight"], pretrained[:128])
    assert torch.equal(loaded["stages.2.blocks.3.conv2.halves.1.weight"], pretrained[128:])
    assert torch.equal(
        loaded["stages.3.blocks.0.conv2.halves.1.weight"],
        state["stages.3.blocks.0.conv2.weight"][256:],
    )

    assert report.missing == [
        "stem.norm.bias",
        "stem.norm.num_batches_tracked",
        "stem.norm.running_mean",
        "stem.norm.running_var",
        "stem.norm.weight",
    ]
    assert report.unexpected == []
    assert report.ignored == ["head.fc.bias", "head.fc.weight"]
    assert len(report.loaded) == len(loaded) - len(report.missing)
    assert "stem.norm.weight" in report.summary()


def test_unexpected_keys_are_reported(tmp_path, encoder):
    state = timm_resnetv2_50_state()
    state["stages.4.blocks.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    assert load_pretrained_encoder(encoder, path).unexpected == ["stages.4.blocks.0.conv1.weight"]


def test_wrong_shape_is_refused_naming_key_and_shapes(tmp_path, encoder):
    state = timm_resnetv2_50_state()
    state["stages.1.blocks.2.conv1.weight"] = torch.randn(64, 512, 1, 1)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with pytest.raises(ValueError) as error:
        load_pretrained_encoder(encoder, path)
    message = str(error.value)
    assert "stages.1.blocks.2.conv1.weight" in message
    assert "(64, 512, 1, 1)" in message and "(128, 512, 1, 1)" in message
    assert str(path) in message
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # nothing loaded


def test_small_width_encoder_is_refused(tmp_path):
    path = tmp_path / "resnetv2_50.pth"
    torch.save(timm_resnetv2_50_state(), path)
    small = MultiTaskNet(ModelConfig(width_multiplier=0.25)).encoder
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained_encoder(small, path)


class _NotWeights:
    pass


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda: pickle.dumps(_NotWeights()), "not a readable weights file"),
        (lambda: b"\x00garbage", "not a readable weights file"),
        (lambda: None, "not a readable weights file"),  # truncated checkpoint
    ],
)
def test_bad_files_give_clear_errors_and_never_unpickle_code(tmp_path, encoder, content, message):
    path = tmp_path / "bad.pth"
    data = content()
    if data is None:
        torch.save(timm_resnetv2_50_state(), path)
        data = path.read_bytes()[:1000]
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as error:
        load_pretrained_encoder(encoder, path)
    assert str(path) in str(error.value)


def test_missing_file_names_the_path(tmp_path, encoder):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        load_pretrained_encoder(encoder, tmp_path / "nowhere.pth")


def test_file_without_resnet_keys_is_refused(tmp_path, encoder):
    path = tmp_path / "other.pth"
    torch.save({"backbone.layer1.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="no tensor of timm's resnetv2_50 layout"):
        load_pretrained_encoder(encoder, path)
