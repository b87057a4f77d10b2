"""The multi-task network: encoder -> eASPP -> segmentation decoder -> Trident detector."""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import nn

from .config import OUTPUT_STRIDE, ModelConfig
from .decoder import SegmentationDecoder
from .detector import TridentDetector
from .easpp import EASPP
from .encoder import AdapNetEncoder
from .init import init_weights

# ImageNet statistics the pretrained encoder expects; inputs are RGB in [0, 1] normalised by them.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)

SEGMENTATION_PARTS = ("encoder", "easpp", "decoder")


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 RGB -> float normalised by PIXEL_MEAN / PIXEL_STD, on its device."""
    mean, std = _pixel_statistics(images.device)
    return (images.float() - mean) / std


@functools.cache
def _pixel_statistics(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, 1) mean and std in uint8 units, made once per device (no per-frame upload, so
    normalisation can sit inside a CUDA graph)."""
    with torch.inference_mode(False):  # usable in and out of inference mode
        mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1) * 255
        std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1) * 255
    return mean, std


DETECTOR_PARTS = ("detector",)


class MultiTaskOutput(NamedTuple):
    """Raw network outputs for (B, 3, H, W) images; C segmentation, K detection classes."""

    # Segmentation or detection fields are None where the forward skipped that head.
    seg_logits: torch.Tensor | None  # (B, C, H, W)
    aux1_logits: torch.Tensor | None  # (B, C, H/4, W/4), stage-2 auxiliary head
    aux2_logits: torch.Tensor | None  # (B, C, H/8, W/8), stage-1 auxiliary head
    # Per Trident branch (dilation 1, 2, 3): (B, 3, 5 + K, H/16, W/16).
    detections: tuple[torch.Tensor, ...] | None


def check_input_size(height: int, width: int) -> None:
    """Raises ValueError unless both sides are positive multiples of the output stride (16).

    The encoder halves the resolution four times and the decoder doubles it back; any other size
    leaves the decoder's maps one pixel off the skip connections'.
    """
    if height <= 0 or width <= 0 or height % OUTPUT_STRIDE or width % OUTPUT_STRIDE:
        raise ValueError(
            f"input height and width must be positive multiples of {OUTPUT_STRIDE} "
            f"(the network's output stride), got {height}x{width}; resize or pad the image"
        )


class MultiTaskNet(nn.Module):
    """AdapNet++ segmentation with an interdependent Trident YOLO detector (paper section 3).

    Args:
        config: the model's hyper-parameters.

    Call with (B, 3, H, W) float images, normalised by :data:`PIXEL_MEAN` / :data:`PIXEL_STD`,
    H and W multiples of 16; returns a :class:`MultiTaskOutput`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width_multiplier
        self.encoder = AdapNetEncoder(
            width_multiplier=width,
            block4_dilations=config.block4_dilations,
            dropout=config.dropout,
        )
        info = self.encoder.feature_info
        self.easpp = EASPP(info["block4"].channels, width_multiplier=width)
        self.decoder = SegmentationDecoder(
            self.easpp.out_channels, info, config.num_seg_classes, width_multiplier=width
        )
        self.detector = TridentDetector(
            self.decoder.level_channels,
            self.easpp.out_channels,
            config.num_det_classes,
            width_multiplier=width,
            trident_blocks=config.trident_blocks,
            dropout=config.dropout,
        )
        self.frozen_parts: set[str] = set()
        init_weights(self)

    def forward(
        self, images: torch.Tensor, segmentation: bool = True, detection: bool = True
    ) -> MultiTaskOutput:
        """``segmentation`` / ``detection`` False skip that task's head (its outputs are None):
        training stages that do not use a task save its compute."""
        check_input_size(images.shape[-2], images.shape[-1])
        features = self.encoder(images)
        bottleneck = self.easpp(features["block4"])  # (B, 256, H/16, W/16)
        decoded = self.decoder(
            bottleneck, features["block1"], features["block2"], segmentation=segmentation
        )
        detections = (
            self.detector(decoded.level4, decoded.level8, bottleneck) if detection else None
        )
        return MultiTaskOutput(decoded.logits, decoded.aux1_logits, decoded.aux2_logits, detections)

    def train(self, mode: bool = True) -> MultiTaskNet:
        """Sets train/eval mode, keeping frozen parts in eval (their BN statistics fixed)."""
        super().train(mode)
        for name in self.frozen_parts:
            getattr(self, name).eval()
        return self

    def parts(self) -> dict[str, nn.Module]:
        """The four parts by name: encoder, easpp, decoder, detector."""
        return {name: getattr(self, name) for name in (*SEGMENTATION_PARTS, *DETECTOR_PARTS)}
