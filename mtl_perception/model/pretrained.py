"""Loading an ImageNet-pretrained pre-activation ResNet-50 into the encoder from a LOCAL file.

The accepted layout is timm's ``resnetv2_50`` state dict (``.safetensors`` as timm publishes it,
or a ``torch.save`` file, read with ``weights_only=True`` so no code is ever unpickled). Mapping,
timm key -> encoder key:

* ``stem.conv.weight`` -> ``stem.conv.weight``;
* ``stages.S.blocks.U.{norm1,norm2,norm3}.*``, ``...conv1.weight``, ``...conv3.weight``,
  ``...downsample.conv.weight`` -> the same names;
* ``stages.S.blocks.U.conv2.weight`` -> the same name, except in multiscale units, whose 3x3 conv
  is split by output channel: the first half of the pretrained filters goes to the first rate
  (``conv2.halves.0.weight``), the second half to the second (``conv2.halves.1.weight``);
* ``norm.*`` (the final BN) -> ``norm.*``;
* ``head.*`` (ImageNet classifier) -> not used.

timm's pre-activation stem has no BN; ours does (AdapNet++), so ``stem.norm.*`` keeps its
initialisation and is reported missing. Only a width-1.0 encoder matches the file's shapes.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

IGNORED_PREFIXES = ("head.", "fc.")
_MULTISCALE_CONV2 = re.compile(r"^(stages\.\d+\.blocks\.\d+\.conv2)\.weight$")


@dataclass
class PretrainedReport:
    """What a pretrained load did, key by key (encoder key names)."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # encoder keys the file lacks
    unexpected: list[str] = field(default_factory=list)  # file keys the encoder lacks
    ignored: list[str] = field(default_factory=list)  # classifier keys, not used

    def summary(self) -> str:
        lines = [f"pretrained encoder {self.path}: {len(self.loaded)} tensors loaded"]
        if self.missing:
            lines.append(f"  missing (kept at He init): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (not used): {', '.join(self.unexpected)}")
        if self.ignored:
            lines.append(f"  ignored classifier keys: {len(self.ignored)}")
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a state dict of tensors from ``.safetensors`` or a torch file (weights only).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable state dict (names the file and why).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    from safetensors import SafetensorError

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        SafetensorError,
    ) as error:
        raise ValueError(f"{path} is not a readable weights file: {error}") from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path} does not hold a state dict of named tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def map_timm_resnetv2(
    state: dict[str, torch.Tensor], encoder: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Maps timm ``resnetv2_50`` keys to ``encoder``'s; returns (mapped, unexpected, ignored)."""
    targets = encoder.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected, ignored = [], []
    for key, tensor in state.items():
        if key.startswith(IGNORED_PREFIXES):
            ignored.append(key)
            continue
        multiscale = _MULTISCALE_CONV2.match(key)
        if multiscale and f"{multiscale.group(1)}.halves.0.weight" in targets:
            first, second = tensor.chunk(2, dim=0)  # split output channels between the rates
            mapped[f"{multiscale.group(1)}.halves.0.weight"] = first
            mapped[f"{multiscale.group(1)}.halves.1.weight"] = second
        elif key in targets:
            mapped[key] = tensor
        else:
            unexpected.append(key)
    return mapped, unexpected, ignored


def load_pretrained_encoder(encoder: nn.Module, path: str | Path) -> PretrainedReport:
    """Loads timm-layout ImageNet weights into ``encoder`` in place.

    Args:
        encoder: an :class:`~mtl_perception.model.encoder.AdapNetEncoder` (width 1.0).
        path: local ``.safetensors`` or torch file.

    Returns:
        A report of loaded, missing, unexpected and ignored keys.

    Raises:
        ValueError: unreadable file, or any tensor whose shape differs from the encoder's (all
            mismatches are listed, nothing is loaded).
    """
    path = Path(path)
    state = read_state_dict(path)
    mapped, unexpected, ignored = map_timm_resnetv2(state, encoder)
    targets = encoder.state_dict()
    mismatched = [
        f"{key}: file {tuple(value.shape)} vs encoder {tuple(targets[key].shape)}"
        for key, value in mapped.items()
        if value.shape != targets[key].shape
    ]
    if mismatched:
        raise ValueError(
            f"{path} does not fit the encoder ({len(mismatched)} shape mismatches; is it a "
            f"ResNet-50 in timm's resnetv2_50 layout, and the model at width 1.0?):\n  "
            + "\n  ".join(mismatched)
        )
    if not mapped:
        raise ValueError(
            f"{path} holds no tensor of timm's resnetv2_50 layout (first keys: {list(state)[:5]})"
        )
    encoder.load_state_dict(mapped, strict=False)
    missing = sorted(set(targets) - set(mapped))
    return PretrainedReport(path, sorted(mapped), missing, sorted(unexpected), sorted(ignored))
