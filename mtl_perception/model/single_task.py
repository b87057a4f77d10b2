"""The two single-task networks the multi-task one replaces (paper section 5: "fewer parameters
and less time than single-task networks"), built from the same layers for a fair comparison.

- :class:`SegmentationOnly`: AdapNet++ alone, encoder -> eASPP -> decoder -> logits.
- :class:`DetectionOnly`: the Trident YOLO detector with its own ResNet-50 encoder, eASPP and
  the decoder's up-sampling path that produces the maps the detector reads (no segmentation
  classifier or auxiliary heads).

Used by ``benchmarks/single_vs_multi.py``; not trained by this package.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .network import MultiTaskNet, check_input_size


class SegmentationOnly(nn.Module):
    """(B, 3, H, W) normalised images -> (B, C, H, W) segmentation logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        full = MultiTaskNet(config)
        self.encoder, self.easpp, self.decoder = full.encoder, full.easpp, full.decoder
        # The auxiliary heads serve training only; inference never runs them.
        del self.decoder.aux1, self.decoder.aux2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_input_size(images.shape[-2], images.shape[-1])
        features = self.encoder(images)
        bottleneck = self.easpp(features["block4"])
        decoder = self.decoder
        up1 = decoder.up1(bottleneck)
        level8 = torch.cat([up1, decoder.skip2(features["block2"])], dim=1)
        up2 = decoder.up2(decoder.fuse1(level8))
        level4 = torch.cat([up2, decoder.skip1(features["block1"])], dim=1)
        return decoder.upsample_logits(decoder.classifier(decoder.fuse2(level4)))


class DetectionOnly(nn.Module):
    """(B, 3, H, W) normalised images -> per Trident branch (B, A, 5 + K, H/16, W/16) maps."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        full = MultiTaskNet(config)
        self.encoder, self.easpp, self.detector = full.encoder, full.easpp, full.detector
        decoder = full.decoder
        self.skip1, self.skip2 = decoder.skip1, decoder.skip2
        self.up1, self.fuse1, self.up2 = decoder.up1, decoder.fuse1, decoder.up2

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_input_size(images.shape[-2], images.shape[-1])
        features = self.encoder(images)
        bottleneck = self.easpp(features["block4"])
        up1 = self.up1(bottleneck)
        level8 = torch.cat([up1, self.skip2(features["block2"])], dim=1)
        up2 = self.up2(self.fuse1(level8))
        level4 = torch.cat([up2, self.skip1(features["block1"])], dim=1)
        return self.detector(level4, level8, bottleneck)
