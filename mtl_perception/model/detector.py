"""The object detector: multi-level features, rapid downsampling, Trident block, YOLO heads.

Paper section 3.2 and Figure 2:

* input: the decoder's maps at the auxiliary levels concatenated with the skip-refinement maps
  (``level4`` at 1/4 and ``level8`` at 1/8: the short path from the top layers);
* rapid downsampling to the bottleneck resolution (1/16) with only 3x3/2 and 1x1 convs, no
  max-pool: ``level4`` -3x3/2-> 1/8, concatenated with ``level8`` (PANet-style bottom-up path),
  fused by 1x1, -3x3/2-> 1/16;
* concatenation with the eASPP output (the long path through the whole encoder), 1x1 fusion,
  dropout 0.5 (paper section 4.2: "just before trident block");
* a Trident block: three branches, each a stack of bottleneck residual blocks
  (1x1 -> 3x3 dilated -> 1x1 + identity) with dilations 1, 2, 3, all branches using the SAME
  weight tensors (TridentNet), so the same transformation runs at three receptive fields;
* one YOLO head per branch: 1x1 conv -> anchors x (4 box offsets + 1 objectness + classes).

Leaky ReLU throughout. The paper does not publish the detector's widths; ours (256 at 1/8, 1024
at 1/16, a 1024-wide Trident block with 256-wide bottlenecks, as ResNet's conv4 blocks) bring
the whole network to the paper's 37.9M parameters (see ``summary.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ANCHORS_PER_BRANCH, TRIDENT_DILATIONS
from .layers import LEAKY_SLOPE, conv_bn_act, scaled

DOWNSAMPLE_CHANNELS = 256
BOTTLENECK_LEVEL_CHANNELS = 1024
TRIDENT_CHANNELS = 1024
TRIDENT_BOTTLENECK_RATIO = 0.25
BOX_PARAMS = 4  # tx, ty, tw, th (YOLOv2 coding)
# Focal loss initialisation (Lin et al., RetinaNet section 4.1): objectness and class logits
# start at this probability so the many background cells do not swamp the first updates.
PRIOR_PROBABILITY = 0.01


class SharedDilationBottleneck(nn.Module):
    """Bottleneck residual block whose 3x3 conv runs at a dilation chosen per call.

    One set of weights serves every Trident branch; batch norm layers are shared as well.

    Args:
        channels: input and output channels.
        mid_chs: bottleneck width.
    """

    def __init__(self, channels: int, mid_chs: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, mid_chs, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(mid_chs)
        self.conv2 = nn.Conv2d(mid_chs, mid_chs, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid_chs)
        self.conv3 = nn.Conv2d(mid_chs, channels, 1, bias=False)
        self.norm3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, dilation: int) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w), the 3x3 conv dilated by ``dilation``."""
        out = F.leaky_relu(self.norm1(self.conv1(x)), LEAKY_SLOPE)
        out = F.conv2d(out, self.conv2.weight, padding=dilation, dilation=dilation)
        out = F.leaky_relu(self.norm2(out), LEAKY_SLOPE)
        out = self.norm3(self.conv3(out))
        return F.leaky_relu(out + x, LEAKY_SLOPE)


class TridentBlock(nn.Module):
    """Three weight-shared branches at dilations 1, 2, 3: (B, C, h, w) -> 3 x (B, C, h, w).

    Args:
        channels: width of the block.
        num_blocks: bottleneck residual blocks per branch.
        dilations: one dilation per branch.
    """

    def __init__(
        self, channels: int, num_blocks: int, dilations: tuple[int, ...] = TRIDENT_DILATIONS
    ) -> None:
        super().__init__()
        self.dilations = tuple(dilations)
        mid_chs = max(8, int(channels * TRIDENT_BOTTLENECK_RATIO))
        self.blocks = nn.ModuleList(
            SharedDilationBottleneck(channels, mid_chs) for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        for dilation in self.dilations:
            branch = x
            for block in self.blocks:
                branch = block(branch, dilation)
            outputs.append(branch)
        return tuple(outputs)


class TridentDetector(nn.Module):
    """Multi-level features and bottleneck -> raw YOLO maps, one per Trident branch.

    Args:
        level_chs: channels of the decoder's ``level4`` and ``level8`` maps.
        bottleneck_chs: channels of the eASPP output.
        num_classes: detection classes.
        width_multiplier: scales the detector's widths.
        trident_blocks: bottleneck blocks per Trident branch.
        dropout: dropout probability before the Trident block.

    ``forward`` returns, per branch (dilation 1, 2, 3), a tensor of shape
    (B, ANCHORS_PER_BRANCH, 5 + num_classes, H/16, W/16) holding, along dim 2,
    (tx, ty, tw, th, objectness logit, class logits...).
    """

    def __init__(
        self,
        level_chs: int,
        bottleneck_chs: int,
        num_classes: int,
        *,
        width_multiplier: float = 1.0,
        trident_blocks: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        down_chs = scaled(DOWNSAMPLE_CHANNELS, width_multiplier)
        level_out_chs = scaled(BOTTLENECK_LEVEL_CHANNELS, width_multiplier)
        trident_chs = scaled(TRIDENT_CHANNELS, width_multiplier)
        self.num_classes = num_classes
        self.down4 = conv_bn_act(level_chs, down_chs, 3, stride=2, act="leaky")
        self.merge8 = conv_bn_act(down_chs + level_chs, down_chs, 1, act="leaky")
        self.down8 = conv_bn_act(down_chs, level_out_chs, 3, stride=2, act="leaky")
        self.merge16 = conv_bn_act(level_out_chs + bottleneck_chs, trident_chs, 1, act="leaky")
        self.dropout = nn.Dropout(dropout)
        self.trident = TridentBlock(trident_chs, trident_blocks)
        outputs = ANCHORS_PER_BRANCH * (BOX_PARAMS + 1 + num_classes)
        self.heads = nn.ModuleList(
            nn.Conv2d(trident_chs, outputs, 1) for _ in self.trident.dilations
        )

    def forward(
        self, level4: torch.Tensor, level8: torch.Tensor, bottleneck: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        x = self.down4(level4)  # (B, 256, H/8, W/8)
        x = self.down8(self.merge8(torch.cat([x, level8], dim=1)))  # (B, 1024, H/16, W/16)
        x = self.merge16(torch.cat([x, bottleneck], dim=1))  # (B, 1024, H/16, W/16)
        branches = self.trident(self.dropout(x))
        maps = []
        for head, features in zip(self.heads, branches, strict=True):
            raw = head(features)  # (B, A * (5 + K), h, w)
            maps.append(raw.unflatten(1, (ANCHORS_PER_BRANCH, -1)))  # (B, A, 5 + K, h, w)
        return tuple(maps)

    def reset_head_biases(self) -> None:
        """Box offsets start at 0, objectness and class logits at the focal-loss prior."""
        prior_logit = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        for head in self.heads:
            bias = head.bias.detach().view(ANCHORS_PER_BRANCH, -1)
            bias[:, :BOX_PARAMS] = 0.0
            bias[:, BOX_PARAMS:] = prior_logit
