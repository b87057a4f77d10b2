"""Efficient atrous spatial pyramid pooling (eASPP), the AdapNet++ bottleneck.

Five parallel branches on the block-4 features (shared/design/architecture.md):

* A: 1x1 -> 256;
* B, C, D: 1x1 -> 64, 3x3 dilated r -> 64, 3x3 dilated r -> 64, 1x1 -> 256, r = 3, 6, 12
  (cascaded atrous convolutions, the reason eASPP needs ~87% fewer weights than ASPP);
* E: global average pool -> 1x1 -> 256, broadcast back to the feature size;

concatenated (1280) and fused by 1x1 -> 256 + BN. Every conv but the last is followed by BN-ReLU,
except branch E's, which has a bias and ReLU instead: batch norm over a 1x1 map of a batch of one
has no variance to normalise, and training with batch 1 must work. About 2.04M weights at width 1.0.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bn_act, scaled

EASPP_RATES = (3, 6, 12)
EASPP_CHANNELS = 256
EASPP_REDUCED_CHANNELS = 64


class EASPP(nn.Module):
    """(B, in_chs, h, w) -> (B, out_chs, h, w) multi-scale context features.

    Args:
        in_chs: channels of the encoder output.
        width_multiplier: scales the branch widths (256 and 64 at 1.0).
        rates: dilation rates of the three cascaded branches.
    """

    def __init__(
        self, in_chs: int, *, width_multiplier: float = 1.0, rates: tuple[int, ...] = EASPP_RATES
    ) -> None:
        super().__init__()
        out_chs = scaled(EASPP_CHANNELS, width_multiplier)
        mid_chs = scaled(EASPP_REDUCED_CHANNELS, width_multiplier)
        self.out_channels = out_chs
        self.pointwise = conv_bn_act(in_chs, out_chs, 1)
        self.cascades = nn.ModuleList(
            nn.Sequential(
                conv_bn_act(in_chs, mid_chs, 1),
                conv_bn_act(mid_chs, mid_chs, 3, dilation=rate),
                conv_bn_act(mid_chs, mid_chs, 3, dilation=rate),
                conv_bn_act(mid_chs, out_chs, 1),
            )
            for rate in rates
        )
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_chs, out_chs, 1), nn.ReLU(inplace=True)
        )
        self.fuse = conv_bn_act(out_chs * (2 + len(rates)), out_chs, 1, act="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, x.shape[2], x.shape[3])  # (B, C, h, w)
        branches = [self.pointwise(x), *(cascade(x) for cascade in self.cascades), pooled]
        return self.fuse(torch.cat(branches, dim=1))
