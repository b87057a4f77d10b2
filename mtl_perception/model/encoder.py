"""AdapNet++ encoder: full pre-activation ResNet-50 with multiscale residual units, stride 16.

Layer facts (shared/design/architecture.md, from the public AdapNet++ code):

* stem: 7x7/2 conv 64, BN, ReLU, 3x3/2 max-pool;
* blocks of [3, 4, 6, 3] pre-activation bottleneck units, outputs [256, 512, 1024, 2048] channels,
  strides [1, 2, 2, 1]; block 4 is dilated instead of strided, so the output stride is 16
  (24 x 48 at 768 x 384, the paper's bottleneck resolution);
* multiscale units: the 3x3 conv's output channels are split in two halves computed at two
  dilation rates and concatenated: block 2 unit 4 (rates 1, 2), block 3 units 3-6 (rates 1, 2),
  block 4 units 1-3 (the public code uses rate 2 for both halves; configurable);
* a final BN-ReLU after block 4 (pre-activation networks leave the last sum un-normalised),
  then dropout (paper section 4.2: dropout 0.5 in block 4).

Module names follow timm's ``resnetv2_50`` (``stem.conv``, ``stages.S.blocks.U.norm1`` ...),
so ImageNet weights map almost one to one (see ``pretrained.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import scaled

STAGE_DEPTHS = (3, 4, 6, 3)
STAGE_CHANNELS = (256, 512, 1024, 2048)
STAGE_STRIDES = (1, 2, 2, 1)
STEM_CHANNELS = 64
BOTTLENECK_RATIO = 0.25


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and reduction (input pixels per feature pixel) of a named encoder feature."""

    channels: int
    reduction: int


class MultiscaleConv(nn.Module):
    """3x3 conv whose output channels are split into halves at two dilation rates.

    Args:
        in_chs: input channels.
        out_chs: output channels (even); each half gets ``out_chs // 2``.
        dilations: the two rates. Equal rates give a plain dilated 3x3 conv in two pieces.
    """

    def __init__(self, in_chs: int, out_chs: int, dilations: tuple[int, int]) -> None:
        super().__init__()
        if out_chs % 2:
            raise ValueError(f"a multiscale conv needs an even channel count, got {out_chs}")
        self.dilations = tuple(dilations)
        self.halves = nn.ModuleList(
            nn.Conv2d(in_chs, out_chs // 2, 3, padding=d, dilation=d, bias=False)
            for d in self.dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chs, H, W) -> (B, out_chs, H, W)."""
        return torch.cat([conv(x) for conv in self.halves], dim=1)


class PreActBottleneck(nn.Module):
    """Pre-activation unit: BN-ReLU -> 1x1 -> BN-ReLU -> 3x3 -> BN-ReLU -> 1x1, plus shortcut.

    The projection shortcut (1x1, strided) takes the pre-activated input, as in ResNet v2.

    Args:
        in_chs, out_chs: channels in and out.
        stride: stride of the 3x3 conv and of the projection shortcut.
        dilation: dilation of the 3x3 conv (ignored when ``multiscale`` is given).
        multiscale: dilation rates of the two halves of a multiscale 3x3 conv, or None.
        mid_chs: bottleneck width (``out_chs / 4`` in ResNet-50).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        mid_chs: int,
        stride: int = 1,
        dilation: int = 1,
        multiscale: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.downsample = (
            None if stride == 1 and in_chs == out_chs else _Projection(in_chs, out_chs, stride)
        )
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid_chs)
        if multiscale is not None:
            if stride != 1:
                raise ValueError("multiscale units are never strided in AdapNet++")
            self.conv2: nn.Module = MultiscaleConv(mid_chs, mid_chs, multiscale)
        else:
            self.conv2 = nn.Conv2d(
                mid_chs, mid_chs, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
            )
        self.norm3 = nn.BatchNorm2d(mid_chs)
        self.conv3 = nn.Conv2d(mid_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = F.relu(self.norm1(x))
        shortcut = x if self.downsample is None else self.downsample(preact)
        out = self.conv1(preact)
        out = self.conv2(F.relu(self.norm2(out)))
        out = self.conv3(F.relu(self.norm3(out)))
        return out + shortcut


class _Projection(nn.Module):
    """1x1 strided projection shortcut (named ``downsample.conv`` as in timm)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Stage(nn.Module):
    """A block of bottleneck units (named ``blocks.U`` as in timm)."""

    def __init__(self, units: list[PreActBottleneck]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Stem(nn.Module):
    """7x7/2 conv -> BN -> ReLU -> 3x3/2 max-pool: (B, 3, H, W) -> (B, C, H/4, W/4)."""

    def __init__(self, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, out_chs, 7, stride=2, padding=3, bias=False)
        self.norm = nn.BatchNorm2d(out_chs)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


def _multiscale_rates(
    stage: int, unit: int, block4_dilations: tuple[int, int]
) -> tuple[int, int] | None:
    """Which units are multiscale (AdapNet++): block 2 unit 4, block 3 units 3-6, block 4 1-3."""
    if stage == 1 and unit == 3:
        return (1, 2)
    if stage == 2 and unit >= 2:
        return (1, 2)
    if stage == 3:
        return block4_dilations
    return None


class AdapNetEncoder(nn.Module):
    """Pre-activation ResNet-50 with multiscale residual units and output stride 16.

    Args:
        width_multiplier: scales every channel count (1.0: the paper's encoder).
        block4_dilations: rates of the two halves of block 4's multiscale units.
        dropout: dropout probability applied to the block-4 output.

    ``forward`` returns named features, described by :attr:`feature_info`:
    ``block1`` (B, 256, H/4, W/4), ``block2`` (B, 512, H/8, W/8), ``block4`` (B, 2048, H/16, W/16)
    (channel counts at width 1.0).
    """

    def __init__(
        self,
        *,
        width_multiplier: float = 1.0,
        block4_dilations: tuple[int, int] = (2, 2),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        stem_chs = scaled(STEM_CHANNELS, width_multiplier)
        self.stem = Stem(stem_chs)
        stages = []
        in_chs, reduction = stem_chs, 4
        self.feature_info: dict[str, FeatureInfo] = {}
        for index, (depth, channels, stride) in enumerate(
            zip(STAGE_DEPTHS, STAGE_CHANNELS, STAGE_STRIDES, strict=True)
        ):
            out_chs = scaled(channels, width_multiplier)
            mid_chs = scaled(channels * BOTTLENECK_RATIO, width_multiplier)
            dilation = 2 if index == 3 else 1  # block 4: dilation instead of stride (OS 16)
            units = []
            for unit in range(depth):
                units.append(
                    PreActBottleneck(
                        in_chs,
                        out_chs,
                        mid_chs=mid_chs,
                        stride=stride if unit == 0 else 1,
                        dilation=dilation,
                        multiscale=_multiscale_rates(index, unit, block4_dilations),
                    )
                )
                in_chs = out_chs
            stages.append(Stage(units))
            reduction *= stride
            self.feature_info[f"block{index + 1}"] = FeatureInfo(out_chs, reduction)
        self.stages = nn.ModuleList(stages)
        self.norm = nn.BatchNorm2d(in_chs)
        self.dropout = nn.Dropout(dropout)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) normalised images -> named features (see class docstring)."""
        x = self.stem(images)
        features = {}
        for index, stage in enumerate(self.stages):
            x = stage(x)
            features[f"block{index + 1}"] = x
        features["block4"] = self.dropout(F.relu(self.norm(x)))
        return features
