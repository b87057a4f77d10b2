"""AdapNet++ segmentation decoder with skip refinement and two auxiliary heads.

Layer facts (shared/design/architecture.md):

* skip refinement: block-1 output (1/4) and block-2 output (1/8), each 1x1 conv -> 24 + BN;
* stage 1: 4x4/2 transposed conv -> 256 + BN (1/8); concat skip-2 (280 ch); two 3x3 conv 256
  BN-ReLU;
* stage 2: 4x4/2 transposed conv -> 256 + BN (1/4); concat skip-1 (280 ch); two 3x3 conv 256
  BN-ReLU;
* head: 1x1 -> C, then 8x8/4 transposed conv -> C at full resolution;
* auxiliary heads (1x1 -> C): aux-1 on the stage-2 transposed-conv output (1/4), aux-2 on the
  stage-1 transposed-conv output (1/8). The loss upsamples them bilinearly to the label size
  (paper section 4.2), so they are returned at their own resolution.

The two concatenations (decoder map + skip refinement, 280 channels each at width 1.0) are the
paper's multi-level features for the detector (section 3.2) and are returned as well.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .encoder import FeatureInfo
from .layers import conv_bn_act, scaled

DECODER_CHANNELS = 256
SKIP_CHANNELS = 24


class DecoderOutput(NamedTuple):
    """Decoder results. Shapes for an (B, 3, H, W) input, C segmentation classes."""

    logits: torch.Tensor | None  # (B, C, H, W); None when segmentation was not asked for
    aux1_logits: torch.Tensor | None  # (B, C, H/4, W/4)
    aux2_logits: torch.Tensor | None  # (B, C, H/8, W/8)
    level4: torch.Tensor  # (B, 256 + 24, H/4, W/4) stage-2 map with skip-1
    level8: torch.Tensor  # (B, 256 + 24, H/8, W/8) stage-1 map with skip-2


def _upsample_bn(in_chs: int, out_chs: int) -> nn.Sequential:
    """4x4/2 transposed conv -> BN: exactly doubles height and width."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_chs, out_chs, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_chs),
    )


class SegmentationDecoder(nn.Module):
    """(bottleneck, block1, block2 features) -> :class:`DecoderOutput`.

    Args:
        in_chs: channels of the eASPP output.
        skip_info: encoder feature info for ``block1`` and ``block2``.
        num_classes: segmentation classes including void.
        width_multiplier: scales the 256/24 widths.
    """

    def __init__(
        self,
        in_chs: int,
        skip_info: dict[str, FeatureInfo],
        num_classes: int,
        *,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        chs = scaled(DECODER_CHANNELS, width_multiplier)
        skip_chs = scaled(SKIP_CHANNELS, width_multiplier)
        self.level_channels = chs + skip_chs
        self.skip1 = conv_bn_act(skip_info["block1"].channels, skip_chs, 1, act="none")
        self.skip2 = conv_bn_act(skip_info["block2"].channels, skip_chs, 1, act="none")
        self.up1 = _upsample_bn(in_chs, chs)
        self.fuse1 = nn.Sequential(conv_bn_act(chs + skip_chs, chs, 3), conv_bn_act(chs, chs, 3))
        self.up2 = _upsample_bn(chs, chs)
        self.fuse2 = nn.Sequential(conv_bn_act(chs + skip_chs, chs, 3), conv_bn_act(chs, chs, 3))
        self.classifier = nn.Conv2d(chs, num_classes, 1)
        self.upsample_logits = nn.ConvTranspose2d(
            num_classes, num_classes, 8, stride=4, padding=2, bias=False
        )
        self.aux1 = nn.Conv2d(chs, num_classes, 1)
        self.aux2 = nn.Conv2d(chs, num_classes, 1)

    def forward(
        self,
        bottleneck: torch.Tensor,
        block1: torch.Tensor,
        block2: torch.Tensor,
        segmentation: bool = True,
    ) -> DecoderOutput:
        up1 = self.up1(bottleneck)  # (B, 256, H/8, W/8)
        level8 = torch.cat([up1, self.skip2(block2)], dim=1)
        up2 = self.up2(self.fuse1(level8))  # (B, 256, H/4, W/4)
        level4 = torch.cat([up2, self.skip1(block1)], dim=1)
        if not segmentation:  # the detector's maps only (a detection-only training stage)
            return DecoderOutput(None, None, None, level4, level8)
        logits = self.upsample_logits(self.classifier(self.fuse2(level4)))
        return DecoderOutput(logits, self.aux1(up2), self.aux2(up1), level4, level8)
